"""The fast per-turn signal the router reads besides the end model's own: frustration.

Frustration is a small zh+en lexicon plus punctuation cues (repeated "!"/"?", shouting in
capitals). It is deliberately cheap: it runs on every customer turn before the reply is
sent. (The match signal is a `endcloud.scoring` MATCHING scorer: the shop's trained
matcher, or "lexical" where none is trained.)
"""

from __future__ import annotations

import re
import unicodedata

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
