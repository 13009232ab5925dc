"""The fast per-turn signals the router reads: frustration, and a lexical match fallback.

Frustration is a small zh+en lexicon plus punctuation cues (repeated "!"/"?", shouting in
capitals). It is deliberately cheap: it runs on every customer turn before the reply is
sent. `LexicalMatcher` is the stand-in matching scorer used when `endcloud.scoring`'s
trained matcher is not available: character 1–2-gram overlap of query and reply, which
(per STACK-NOTES) separates Chinese paraphrases from unrelated text better than MiniLM.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

# Each entry weighs 0.5: one strong cue alone does not reach the default threshold
# (0.5 is the default max_frustration, so one strong cue plus anything else does).
FRUSTRATION_ZH = (
    "投诉", "差评", "垃圾", "骗子", "骗人", "气死", "太慢", "太差", "无语", "失望", "生气", "愤怒", "坑人", "破东西",
    "什么破", "怎么回事", "到底", "转人工", "人工客服", "找你们领导", "12315", "退钱", "还没到", "还没发", "等了好几天",
    "搞什么", "不靠谱", "恶心", "烦死", "受够",
)
FRUSTRATION_EN = (
    "angry", "furious", "terrible", "worst", "scam", "ridiculous", "useless", "frustrated", "frustrating",
    "complaint", "unacceptable", "waste of", "real person", "human agent", "speak to a human", "manager",
    "still not", "still hasn't", "still haven't", "never arrived", "fed up", "disgusting", "awful", "rip off", "rip-off",
    "what the hell", "wtf", "refund now",
)
_WORD_EN = [re.compile(r"\b" + re.escape(w) + r"\b", re.I) for w in FRUSTRATION_EN]


def frustration(text: str) -> float:
    """A frustration signal in [0, 1] for one customer message (0 calm, 1 very upset)."""
    t = unicodedata.normalize("NFKC", text or "")
    score = 0.0
    score += 0.5 * sum(1 for w in FRUSTRATION_ZH if w in t)
    score += 0.5 * sum(1 for rx in _WORD_EN if rx.search(t))
    if re.search(r"[!?！？]{2,}", t):
        score += 0.25
    letters = [c for c in t if c.isascii() and c.isalpha()]
    if len(letters) >= 8 and sum(c.isupper() for c in letters) / len(letters) > 0.7:
        score += 0.25  # shouting
    return float(min(1.0, score))


def _grams(text: str) -> set[str]:
    t = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text or "").lower()).strip()
    chars = [c for c in t if not unicodedata.category(c).startswith("P")]
    s = "".join(chars)
    return set(s) | {s[i : i + 2] for i in range(len(s) - 1)}


class LexicalMatcher:
    """`score(queries, replies) -> [0, 1]`: Dice overlap of character 1–2-grams."""

    name = "lexical"

    def score(self, a: list[str], b: list[str]) -> np.ndarray:
        out = np.zeros(len(a), dtype=np.float64)
        for i, (x, y) in enumerate(zip(a, b)):
            gx, gy = _grams(x), _grams(y)
            if gx and gy:
                out[i] = 2 * len(gx & gy) / (len(gx) + len(gy))
        return out


_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


def approx_tokens(text: str) -> int:
    """A tokenizer-free token estimate: each CJK character is one token, else ~4 characters."""
    cjk = len(_CJK.findall(text))
    rest = len(text) - cjk
    return cjk + (rest + 3) // 4
