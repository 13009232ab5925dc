"""Intent and sentiment: the lexicon classifier, the trained n-gram one, and their registry."""

from __future__ import annotations

import pytest

from endcloud.errors import RegistryError
from endcloud.fileio import read_jsonl
from endcloud.tasks.classify import CLASSIFIERS, NgramClassifier, load_classifier

LABELLED = [
    ("推荐一款纯棉的毛巾", "recommend", "neutral"), ("纯棉方巾和长绒棉毛巾有什么区别？", "compare", "neutral"),
    ("等了好几天还没到，太慢了", "complaint", "negative"), ("纯棉方巾多少钱？", "price", "neutral"),
    ("可以开发票吗", "invoice", "neutral"), ("质量不错，物超所值，好评", "other", "positive"),
    ("不推荐，做工粗糙", "recommend", "negative"), ("What would you recommend for a cold winter?", "recommend", "neutral"),
    ("Is the towel in stock?", "stock", "neutral"), ("This is not good at all", "other", "negative"),
    ("hello", "greeting", "neutral"), ("气死了，物流一直不更新", "complaint", "negative"),
    ("你好呀，首单能减多少？", "coupon", "neutral"), ("Love it, works perfectly", "other", "positive"),
]


@pytest.mark.parametrize("text, intent, sentiment", LABELLED)
def test_lexicon(text, intent, sentiment):
    a = load_classifier("lexicon").analyse(text)
    assert (a.intent, a.sentiment) == (intent, sentiment)
    assert -1.0 <= a.sentiment_score <= 1.0 and 0.0 <= a.intent_score <= 1.0


def test_lexicon_reads_another_generators_chat_intents(zh_shop):
    """The synthetic shop's chats carry intents written by `corpus.shopworld`, not by this lexicon."""
    from endcloud.tasks.generate import log_intents

    logs = log_intents(read_jsonl(zh_shop / "chats" / "chats.jsonl"))
    clf = load_classifier()
    right = sum(clf.analyse(t).intent == i for t, i in logs)
    assert len(logs) >= 50 and right / len(logs) >= 0.8


def test_ngram_fits_saves_and_loads(tmp_path, zh_shop):
    from endcloud.tasks.generate import log_intents

    logs = log_intents(read_jsonl(zh_shop / "chats" / "chats.jsonl"))
    texts, intents = [t for t, _ in logs], [i for _, i in logs]
    half = len(texts) // 2
    reviews = ["质量很好，很喜欢", "太差了，失望", "一般般吧", "非常满意", "坏了，差评", "还行，没什么特别"]
    moods = ["positive", "negative", "neutral", "positive", "negative", "neutral"]
    nb = NgramClassifier.fit(texts[:half], intents[:half], reviews, moods)
    acc = sum(nb.analyse(t).intent == i for t, i in zip(texts[half:], intents[half:])) / (len(texts) - half)
    assert acc >= 0.5  # well above the 1/13 of guessing among the chats' intents
    loaded = load_classifier("ngram", path=nb.save(tmp_path / "clf.json"))
    assert [loaded.analyse(t) for t in texts[half:half + 20]] == [nb.analyse(t) for t in texts[half:half + 20]]
    assert nb.analyse("太差了，失望").sentiment == "negative"


def test_registry():
    assert CLASSIFIERS.names() == ["lexicon", "ngram"]
    with pytest.raises(RegistryError, match="valid: lexicon, ngram"):
        load_classifier("bert")
    with pytest.raises(Exception, match="needs path"):
        load_classifier("ngram")
    with pytest.raises(Exception, match="unknown labels"):
        NgramClassifier.fit(["hi"], ["hello"])
