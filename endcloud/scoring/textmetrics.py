"""Reply metrics against references, and the diversity that keeps a generic model honest.

`endcloud eval` scores with the paper's Sim; on chat logs the reference is the agent's own
reply, and these columns sit next to it:

    bleu4          corpus BLEU-4 (sacrebleu; "zh" tokenisation for Chinese, "13a" for English)
    rouge_l        mean ROUGE-L F1 (rouge-score; Chinese by character)
    distinct_1/2   distinct n-grams / all n-grams over all of a model's replies (Li et al. 2016;
                   characters for Chinese, words for English)
    top_share      share of the replies that are the model's most common reply (`reply_key`)
    degenerate     share of empty replies and of replies that are mostly one repeated unit

Why both kinds: on JDDC a model that answers every question with "您好，请问有什么可以帮您的
吗？" gets a respectable BLEU (agents say it often), and a constant reply beats TF-IDF
retrieval on BLEU; its top_share of 100 % and distinct-2 near 0 give it away.

    >>> m = reply_metrics(["好的亲", "好的亲"], ["好的亲，马上发货", "亲，明天到"], ["zh", "zh"])
    >>> m["top_share"]
    1.0
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Any, Sequence


# A reply is degenerate when it is empty, or when one unit of 1-4 tokens repeated back to
# back at least this many times covers at least this share of it ("好的好的好的好的…").
DEGENERATE_REPEATS = 3
DEGENERATE_COVER = 0.5

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def tokens(text: str, lang: str) -> list[str]:
    """Characters (no spaces, no punctuation) for Chinese; lower-cased words for English."""
    text = unicodedata.normalize("NFKC", text or "")
    if lang == "zh":
        return [c for c in text if not c.isspace() and not unicodedata.category(c).startswith("P")]
    return [w.lower() for w in _WORD.findall(text)]


def is_degenerate(text: str, lang: str) -> bool:
    """Empty, or mostly one short unit repeated (see DEGENERATE_REPEATS / DEGENERATE_COVER)."""
    toks = tokens(text, lang)
    if not toks:
        return True
    n = len(toks)
    for size in range(1, 5):
        i = 0
        while i + size * DEGENERATE_REPEATS <= n:
            unit = toks[i:i + size]
            j = i + size
            while toks[j:j + size] == unit:
                j += size
            if (j - i) // size >= DEGENERATE_REPEATS and (j - i) >= DEGENERATE_COVER * n:
                return True
            i += 1
    return False


def distinct_n(replies: Sequence[str], langs: Sequence[str], n: int) -> float | None:
    """Distinct n-grams over all n-grams of all replies; None when there are none."""
    grams: Counter = Counter()
    for text, lang in zip(replies, langs):
        t = tokens(text, lang)
        grams.update(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else None


def reply_key(text: str) -> str:
    """What makes two replies the same reply: their letters and digits (case, spacing and
    punctuation aside: "好的。" and "好的" are one reply)."""
    return "".join(c for c in unicodedata.normalize("NFKC", text or "").lower() if c.isalnum())


def top_reply_share(replies: Sequence[str]) -> tuple[float | None, str]:
    """(share of the most common reply, that reply), replies compared by `reply_key`."""
    if not replies:
        return None, ""
    keys = [reply_key(r) for r in replies]
    key, count = Counter(keys).most_common(1)[0]
    return count / len(replies), replies[keys.index(key)]


def bleu4(replies: Sequence[str], references: Sequence[str], langs: Sequence[str]) -> float | None:
    """Corpus BLEU-4 (0-100) with sacrebleu; the tokenizer follows the majority language."""
    import sacrebleu

    pairs = [(h, r) for h, r in zip(replies, references) if r]
    if not pairs:
        return None
    zh = sum(1 for lang in langs if lang == "zh") * 2 > len(langs)
    res = sacrebleu.corpus_bleu([h for h, _ in pairs], [[r for _, r in pairs]], tokenize="zh" if zh else "13a")
    return float(res.score)


class _CharTokenizer:
    """rouge-score's tokenizer interface for Chinese: its default keeps ASCII words only."""

    def tokenize(self, text: str) -> list[str]:
        return tokens(text, "zh")


def rouge_l(replies: Sequence[str], references: Sequence[str], langs: Sequence[str]) -> float | None:
    """Mean ROUGE-L F1 (0-1) with rouge-score; Chinese compared character by character."""
    from rouge_score import rouge_scorer

    en = rouge_scorer.RougeScorer(["rougeL"])
    zh = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_CharTokenizer())
    scores = [(zh if lang == "zh" else en).score(ref, hyp)["rougeL"].fmeasure
              for hyp, ref, lang in zip(replies, references, langs) if ref]
    return sum(scores) / len(scores) if scores else None


def reply_metrics(replies: Sequence[str], references: Sequence[str] | None, langs: Sequence[str]) -> dict[str, Any]:
    """Every metric above for one model's replies (BLEU/ROUGE only with references)."""
    share, top = top_reply_share(replies)
    out: dict[str, Any] = {
        "bleu4": bleu4(replies, references, langs) if references is not None else None,
        "rouge_l": rouge_l(replies, references, langs) if references is not None else None,
        "distinct_1": distinct_n(replies, langs, 1),
        "distinct_2": distinct_n(replies, langs, 2),
        "top_share": share,
        "top_reply": top,
        "distinct_replies": len({reply_key(r) for r in replies}),
        "degenerate": (sum(is_degenerate(r, lang) for r, lang in zip(replies, langs)) / len(replies)) if replies else None,
    }
    return out


__all__ = ["bleu4", "distinct_n", "is_degenerate", "reply_metrics", "rouge_l", "tokens", "top_reply_share"]
