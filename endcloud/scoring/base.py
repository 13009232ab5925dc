"""The scorer interface: one method that returns a number per pair (the RouteLLM shape)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from endcloud.errors import DataError


class Scorer(ABC):
    """Scores pairs of texts; higher = more similar / better matched; always in [0, 1].

    Similarity scorers compare (end reply, cloud reply); matching scorers compare
    (query, reply). `name` is what reports print so a reader knows which model judged."""

    name: str = "scorer"

    @abstractmethod
    def score(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """One float64 in [0, 1] per pair (a[i], b[i])."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def check_pairs(a: Sequence[str], b: Sequence[str]) -> tuple[list[str], list[str]]:
    """Lists of str of equal length, or a DataError saying what was passed."""
    if isinstance(a, str) or isinstance(b, str):
        raise DataError("score() takes two lists of texts, got a bare string; wrap it: score([a], [b])")
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise DataError(f"score() needs equally long lists, got {len(a)} and {len(b)}")
    return ["" if x is None else str(x) for x in a], ["" if x is None else str(x) for x in b]


def remember(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> Any:
    """Put `value` in `cache` under `key`, first dropping the oldest entries (dicts keep
    insertion order) so at most `limit` remain; returns `value`. Safe to race: a checker's
    cache is shared by the threads that score turns, and losing an entry only costs a recompute."""
    while len(cache) >= limit:
        try:
            cache.pop(next(iter(cache)), None)
        except (RuntimeError, StopIteration):  # another thread changed it meanwhile
            break
    cache[key] = value
    return value


def cosine_rows(x, y) -> np.ndarray:
    """Row-wise cosine of two equally shaped (dense or scipy-sparse) matrices, 0 for empty rows."""
    import scipy.sparse as sp

    if sp.issparse(x):
        dots = np.asarray(x.multiply(y).sum(axis=1)).ravel()
        nx = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        ny = np.sqrt(np.asarray(y.multiply(y).sum(axis=1)).ravel())
    else:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        dots = (x * y).sum(axis=1)
        nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    denom = nx * ny
    out = np.divide(dots, denom, out=np.zeros_like(dots, dtype=np.float64), where=denom > 0)
    return np.clip(out, 0.0, 1.0)
