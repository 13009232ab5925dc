"""Fact accuracy: the ground truth the paper's proxy scores are checked against.

The synthetic shop knows the facts behind each question (a price, a courier, a return
window); a reply is right when it states every one of them. Comparison is after NFKC,
lower-casing and removing whitespace, so "ZTO  Express" matches "zto express" and
full-width digits match ASCII ones. Inputs without facts (a greeting) are not judged: NaN.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from endcloud.errors import DataError
from endcloud.text import normalise


def fact_correct(reply: str, facts: Sequence[str] | None) -> float:
    """1.0 when every fact occurs in the reply, 0.0 when one is missing, NaN without facts."""
    if not facts:
        return float("nan")
    text = normalise(reply)
    return 1.0 if all(normalise(f) in text for f in facts) else 0.0


def fact_accuracy(replies: Sequence[str], facts: Sequence[Sequence[str] | None]) -> np.ndarray:
    """Per reply: 1.0 right, 0.0 wrong, NaN where the input has no facts (excluded from means)."""
    if len(replies) != len(facts):
        raise DataError(f"fact_accuracy needs one facts list per reply; got {len(replies)} replies and {len(facts)} facts lists")
    return np.array([fact_correct(r, f) for r, f in zip(replies, facts)], dtype=np.float64)
