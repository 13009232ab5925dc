"""Intent and sentiment of a customer message: fast enough to run on every served turn.

    clf = load_classifier("lexicon")                 # rules + a zh/en lexicon, nothing to train
    clf.analyse("推荐一款纯棉的毛巾")                  # Analysis(intent='recommend', sentiment='neutral', ...)
    nb = NgramClassifier.fit(texts, intents, sentiments)   # or a small trained model: char/word n-gram naive Bayes
    nb.save("intent.json"); load_classifier("ngram", path="intent.json")

CLASSIFIERS is the registry ("lexicon", "ngram"); each returns a `DialogueClassifier`, whose one
method is `analyse(text) -> Analysis`. The server puts the analysis in the router's Signals and
on the dashboard (seed 003's dialogue management: intent recognition and sentiment beside the
model that answers); the labels are `lexicon.INTENTS` and `lexicon.SENTIMENTS`.

The lexicon classifier scores cue words per intent (a tie goes to the earlier intent in
`_PRIORITY`: "太慢了，我要投诉" is a complaint before it is a shipping question) and sentiment
as positive minus negative cues, a negation ("不推荐", "not good") flipping the cue after it.
`bench/bench_tasks.py` measures both classifiers on the generated tasks and on the synthetic
shop's chat logs, whose intents were written by another generator.
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from endcloud.errors import ConfigError, DataError
from endcloud.registry import Registry
from endcloud.tasks.lexicon import INTENTS, RECOMMEND_CUES, SENTIMENTS
from endcloud.text import CJK_IDEOGRAPHS


@dataclass(frozen=True, slots=True)
class Analysis:
    """What a customer message is about and how it feels. `sentiment_score` is in [-1, 1]
    (-1 very negative); `intent_score` is the classifier's confidence in [0, 1]."""

    intent: str
    intent_score: float
    sentiment: str
    sentiment_score: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class DialogueClassifier(ABC):
    """One method: the analysis of one customer message."""

    name: str = "classifier"

    @abstractmethod
    def analyse(self, text: str) -> Analysis: ...

    def intents(self, texts: Sequence[str]) -> list[str]:
        return [self.analyse(t).intent for t in texts]

    def sentiments(self, texts: Sequence[str]) -> list[str]:
        return [self.analyse(t).sentiment for t in texts]


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "").lower()


# ---- the lexicon classifier -------------------------------------------------------------
# Cue -> weight, per intent; zh cues match as substrings, en cues as whole words/phrases.
_INTENT_CUES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # intent: (zh cues, en cues)
    "complaint": (("投诉", "差评", "太慢", "太差", "失望", "生气", "什么态度", "垃圾", "骗", "气死", "受够", "不处理", "没人回",
                   "不回消息", "发错", "12315", "无语", "急死", "着急", "一直等", "不敢出门", "怎么回事", "等了好久"),
                  ("complain", "complaint", "ridiculous", "unacceptable", "terrible", "angry", "disappointed", "worst",
                   "scam", "nobody answers", "wrong item", "fed up", "furious", "awful", "annoyed", "what is going on",
                   "hasn't moved", "still hasn't")),
    "recommend": (RECOMMEND_CUES["zh"], RECOMMEND_CUES["en"]),
    "compare": (("区别", "对比", "比较", "哪个更", "还是", "相比", "跟.+比", "和.+比", "和.+哪个", "跟.+哪个", "与.+对比"),
                ("difference", "compare", "versus", "vs", "better than", "stack up", r"\bor\b.*\bwhich\b", r"which is better")),
    "return_refund": (("退货", "退款", "退换", "无理由", "退掉", "退回", "能退", "可以退", "退钱", "到账"),
                      ("return", "refund", "send back", "send it back", "money back", "exchange")),
    "after_sales": (("保修", "质保", "维修", "坏了", "故障", "出问题", "售后", "修吗", "修一下", "破损", "有问题", "换吗"),
                    ("warranty", "repair", "broke", "broken", "faulty", "stopped working", "fix it", "after-sales",
                     "after sales", "defective", "defect", "damaged", "replacement")),
    "invoice": (("发票", "开票", "专票", "普票", "收据"), ("invoice", "invoices", "receipt", "vat")),
    "address_change": (("地址", "改成寄到", "寄到公司", "收件人"), ("address", "ship it to", "deliver it to", "where the order goes")),
    "order_status": (("订单", "物流", "到哪", "包裹", "单号", "查一下", "查下", "不更新", "运单"),
                     ("my order", "order", "track", "tracking", "parcel", "package", "status", "shipped yet", "where is my",
                      "arrived yet", "hasn't arrived")),
    "shipping": (("发货", "快递", "顺丰", "几天", "送到", "到货", "包邮", "运费", "寄出", "发什么", "明天能到", "发吗", "发出",
                  "能发"),
                 ("ship", "shipping", "courier", "carrier", "delivery", "deliver", "delivers", "arrive", "express", "dispatch",
                  "dispatched", "postage", "how many days", "go out")),
    "coupon": (("优惠", "便宜", "折扣", "活动", "满减", "券", "打折", "减价", "新人", "减多少", "首单"),
               ("coupon", "discount", "promo", "promotion", "deal", "deals", "cheaper", "better price", "voucher", "sale")),
    "stock": (("有货", "库存", "补货", "现货", "卖完", "缺货", "没货", "能拍", "还有没有"),
              ("in stock", "stock", "sold out", "restock", "available", "still have", "still order")),
    "price": (("多少钱", "价格", "什么价", "卖多少", "价钱", "要多少"), ("how much", "price", "cost", "costs")),
    "product_info": (("材质", "尺寸", "尺码", "颜色", "面料", "大小", "多大", "规格", "重量", "什么做的", "是什么", "是啥", "怎么样",
                      "了解一下", "特点", "好用吗", "哪些"),
                     ("material", "size", "sizes", "colour", "colours", "color", "colors", "made of", "dimensions", "weight",
                      "what is the", "what's the", "tell me the", "tell me about", "details", "feature", "check the",
                      "how big", "special about", "come in", "cotton or")),
    "greeting": (("你好", "在吗", "在不在", "有人吗", "哈喽", "您好", "亲在"),
                 ("hello", "hi", "hey", "anyone there", "good morning", "good evening", "someone around", "online")),
    "other": (("谢谢", "机器人", "天气", "哈哈", "老板是谁"), ("thanks", "thank you", "bot", "weather", "lol", "who owns")),
}
# A cue's weight by intent: an angry word outweighs the topic it is about ("气死了，物流一直不更新" is a
# complaint), and a greeting or small talk in front of a question ("你好呀，首单能减多少？") does not decide it.
_WEIGHT = {"complaint": 2.0, "greeting": 0.5, "other": 0.5}
# Earlier wins a tie: the more specific or more urgent reading first.
_PRIORITY = ("complaint", "recommend", "compare", "return_refund", "after_sales", "invoice", "address_change",
             "order_status", "stock", "price", "product_info", "coupon", "shipping", "greeting", "other")

_POSITIVE = {
    "zh": ("好用", "喜欢", "满意", "不错", "好评", "物超所值", "推荐购买", "精致", "超出预期", "回购", "很好", "挺好", "棒", "赞",
           "舒服", "值得", "完美", "谢谢", "一致"),
    "en": ("love", "great", "perfect", "perfectly", "happy", "highly recommend", "would recommend", "excellent", "worth", "amazing", "good", "nice",
           "awesome", "exceeded", "quickly", "thanks", "thank you", "fantastic", "works perfectly"),
}
_NEGATIVE = {
    "zh": ("差", "坏", "失望", "不满意", "差评", "异味", "粗糙", "不符", "色差", "投诉", "生气", "太慢", "垃圾", "骗", "破",
           "烂", "气死", "受够", "无语", "急死", "着急", "不处理", "发错", "退钱", "还没到"),
    "en": ("awful", "terrible", "broke", "broken", "disappointed", "unhappy", "flimsy", "damaged", "bad", "angry",
           "ridiculous", "unacceptable", "complain", "wrong", "worst", "smells", "cheap", "poor", "scam", "nothing like",
           "furious", "still no", "fed up"),
}
# A negation flips the next cue ("不推荐" is negative, "not bad" is not negative).
_NEGATION = {"zh": ("不", "没", "别", "并不", "一点也不"), "en": ("not", "never", "no", "don't", "doesn't", "isn't", "wasn't", "would not")}
_CJK = re.compile(f"[{CJK_IDEOGRAPHS}]")


def _compile(cue: str, zh: bool) -> re.Pattern[str]:
    if zh:
        return re.compile(cue if any(c in cue for c in ".+") else re.escape(cue))
    if any(c in cue for c in "\\.*"):
        return re.compile(cue)
    return re.compile(r"(?<![a-z0-9])" + re.escape(cue) + r"(?![a-z0-9])")


class LexiconClassifier(DialogueClassifier):
    """Rules over cue words, zh + en; no model, a few microseconds per message."""

    name = "lexicon"

    def __init__(self) -> None:
        self._cues = {intent: [_compile(c, True) for c in zh] + [_compile(c.lower(), False) for c in en]
                      for intent, (zh, en) in _INTENT_CUES.items()}
        self._pos = [(_compile(c, True), c) for c in _POSITIVE["zh"]] + [(_compile(c, False), c) for c in _POSITIVE["en"]]
        self._neg = [(_compile(c, True), c) for c in _NEGATIVE["zh"]] + [(_compile(c, False), c) for c in _NEGATIVE["en"]]

    def analyse(self, text: str) -> Analysis:
        t = _norm(text)
        scores = {intent: _WEIGHT.get(intent, 1.0) * sum(1 for rx in rxs if rx.search(t)) for intent, rxs in self._cues.items()}
        best = max(_PRIORITY, key=lambda i: (scores[i], -_PRIORITY.index(i)))
        total = sum(scores.values())
        if scores[best] == 0:
            intent, conf = "other", 0.0
        else:
            intent, conf = best, min(1.0, scores[best] / total)
        s = self._sentiment(t)
        label = "positive" if s > 0.2 else "negative" if s < -0.2 else "neutral"
        return Analysis(intent, round(conf, 4), label, round(s, 4))

    def _sentiment(self, t: str) -> float:
        pos = neg = 0.0
        taken: list[tuple[int, int]] = []
        # longer cues first, so "不满意" is one negative cue, not a negated "满意"
        for rx, cue, sign in sorted([(rx, c, 1) for rx, c in self._pos] + [(rx, c, -1) for rx, c in self._neg],
                                    key=lambda x: -len(x[1])):
            for m in rx.finditer(t):
                if any(s < m.end() and m.start() < e for s, e in taken):
                    continue
                taken.append((m.start(), m.end()))
                flip = -1 if _negated(t, m.start()) else 1
                if sign * flip > 0:
                    pos += 1
                else:
                    neg += 1
        if "!!" in t or "！！" in t or "??" in t or "？？" in t:
            neg += 0.5 if neg > pos else 0.0
        return 0.0 if pos + neg == 0 else (pos - neg) / (pos + neg)


def _negated(t: str, start: int) -> bool:
    if _CJK.search(t[start:start + 1] or ""):
        return any(t[max(0, start - 6):start].endswith(n) for n in _NEGATION["zh"])
    words = re.findall(r"[a-z']+", t[max(0, start - 16):start])
    return bool(words) and words[-1] in _NEGATION["en"]


# ---- the n-gram naive Bayes classifier ----------------------------------------------------
def features(text: str) -> list[str]:
    """Character 1-2-grams of the Chinese runs and word 1-2-grams of the rest."""
    t = _norm(text)
    out: list[str] = []
    for run in re.findall(f"[{CJK_IDEOGRAPHS}]+", t):
        out += list(run) + [run[i:i + 2] for i in range(len(run) - 1)]
    words = re.findall(r"[a-z][a-z']*", t)
    out += words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return out


@dataclass
class _NB:
    """Multinomial naive Bayes with add-one smoothing: log priors and per-label feature counts."""

    labels: list[str]
    prior: dict[str, float]
    counts: dict[str, dict[str, int]]
    totals: dict[str, int]
    vocab: int

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[str]) -> "_NB":
        if len(texts) != len(labels) or not texts:
            raise DataError(f"need one label per text and at least one text, got {len(texts)} texts, {len(labels)} labels")
        n = Counter(labels)
        counts: dict[str, Counter] = {lb: Counter() for lb in n}
        for t, lb in zip(texts, labels):
            counts[lb].update(features(t))
        vocab = len({f for c in counts.values() for f in c})
        return cls(sorted(n), {lb: math.log(k / len(labels)) for lb, k in n.items()},
                   {lb: dict(c) for lb, c in counts.items()}, {lb: sum(c.values()) for lb, c in counts.items()}, vocab)

    def scores(self, text: str) -> dict[str, float]:
        feats = features(text)
        out = {}
        for lb in self.labels:
            c, tot = self.counts[lb], self.totals[lb] + self.vocab + 1
            out[lb] = self.prior[lb] + sum(math.log((c.get(f, 0) + 1) / tot) for f in feats)
        return out

    def predict(self, text: str) -> tuple[str, float]:
        sc = self.scores(text)
        best = max(self.labels, key=lambda lb: sc[lb])
        top = max(sc.values())
        z = sum(math.exp(v - top) for v in sc.values())
        return best, 1.0 / z


class NgramClassifier(DialogueClassifier):
    """Two naive Bayes models (intent, sentiment) over `features`; saved as one JSON file."""

    name = "ngram"

    def __init__(self, intent: _NB, sentiment: _NB | None):
        self.intent_model, self.sentiment_model = intent, sentiment
        self._fallback = LexiconClassifier() if sentiment is None else None

    @classmethod
    def fit(cls, texts: Sequence[str], intents: Sequence[str], sentiment_texts: Sequence[str] = (),
            sentiments: Sequence[str] = ()) -> "NgramClassifier":
        bad = sorted({i for i in intents if i not in INTENTS} | {s for s in sentiments if s not in SENTIMENTS})
        if bad:
            raise DataError(f"unknown labels {bad}; intents are {', '.join(INTENTS)}, sentiments {', '.join(SENTIMENTS)}")
        return cls(_NB.fit(texts, intents), _NB.fit(sentiment_texts, sentiments) if sentiment_texts else None)

    def analyse(self, text: str) -> Analysis:
        intent, ip = self.intent_model.predict(text)
        if self.sentiment_model is None:
            lex = self._fallback.analyse(text)  # type: ignore[union-attr]
            return Analysis(intent, round(ip, 4), lex.sentiment, lex.sentiment_score)
        sent, sp = self.sentiment_model.predict(text)
        score = {"positive": sp, "negative": -sp, "neutral": 0.0}[sent]
        return Analysis(intent, round(ip, 4), sent, round(score, 4))

    def save(self, path: str | os.PathLike[str]) -> Path:
        from endcloud.fileio import write_json_atomic

        p = Path(path)
        write_json_atomic(p, {"kind": "endcloud-ngram-classifier", "intent": asdict(self.intent_model),
                              "sentiment": asdict(self.sentiment_model) if self.sentiment_model else None})
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "NgramClassifier":
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"classifier file {str(p)!r} not found; train one with NgramClassifier.fit(...).save(path)") from None
        except ValueError as e:
            raise DataError(f"not a classifier file ({e})", path=str(p)) from None
        if not isinstance(d, dict) or d.get("kind") != "endcloud-ngram-classifier":
            raise DataError("not an endcloud n-gram classifier (no kind: endcloud-ngram-classifier)", path=str(p))
        return cls(_NB(**d["intent"]), _NB(**d["sentiment"]) if d.get("sentiment") else None)


CLASSIFIERS: Registry = Registry("dialogue classifier")
CLASSIFIERS.add("lexicon", lambda **kw: LexiconClassifier(**kw))
CLASSIFIERS.add("ngram", lambda *, path=None: NgramClassifier.load(path) if path is not None else _need_path())


def _need_path() -> DialogueClassifier:
    raise ConfigError("the ngram classifier needs path=FILE (a model saved by NgramClassifier.save)")


def load_classifier(name: str = "lexicon", **kw: Any) -> DialogueClassifier:
    """The classifier registered as `name` (unknown names list the valid ones)."""
    return CLASSIFIERS.get(name)(**kw)


__all__ = ["CLASSIFIERS", "Analysis", "DialogueClassifier", "LexiconClassifier", "NgramClassifier", "features",
           "load_classifier"]
