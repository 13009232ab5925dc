"""Paired comparisons: is one system better than another over the same cases, or only lucky
in which cases were held out?

    lo, hi = paired_interval(scores_a - scores_b)      # 95 % paired-bootstrap interval of the mean

Used by the matcher's report (R@1 gain over TF-IDF) and by the shop-task bench (multi-task vs
chat-only chat quality). Written here rather than taken from `scipy.stats.bootstrap` so that the
interval is a plain percentile bootstrap with a seeded numpy generator, the same on every
machine and cheap for a few hundred cases.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def paired_interval(diffs: Sequence[float] | np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> list[float]:
    """Percentile-bootstrap interval of the mean of per-case differences (a − b, each case
    scored by both): cases are resampled together, so what both find hard cancels out.
    NaNs when there are no cases."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return [float("nan"), float("nan")]
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(d[idx].mean(axis=1), [tail, 100 - tail])
    return [round(float(lo), 4), round(float(hi), 4)]


__all__ = ["paired_interval"]
