"""The paper's final score (eq. 1 with the Θ rule) and the escalation decision.

    Final = α·Sim(end, cloud) + (1 − α)·Match(query, end)
    Final = Sim(end, cloud)                 where Match(query, cloud) < Θ

The Θ rule says: when even the cloud's reply does not match the query (a bare order
number, a greeting), matching carries no signal, so judge by similarity alone.
The decision is kept apart from the number (the RouteLLM shape): the server and the
online loop both call `should_escalate(final, threshold)`.
"""

from __future__ import annotations

import numpy as np

from endcloud.config import PAPER
from endcloud.errors import ConfigError


def _check_unit(name: str, value: float) -> None:
    if not (0.0 <= float(value) <= 1.0):
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}; pass --{name} between 0 and 1")


def final_score(sim, match, cloud_match, alpha: float = PAPER.alpha, theta: float = PAPER.theta) -> np.ndarray:
    """Vectorised eq. 1: arrays (or scalars) of equal shape in, float64 array out."""
    _check_unit("alpha", alpha)
    _check_unit("theta", theta)
    sim, match, cloud_match = (np.asarray(x, dtype=np.float64) for x in (sim, match, cloud_match))
    blended = alpha * sim + (1.0 - alpha) * match
    return np.where(cloud_match < theta, sim, blended)


def should_escalate(final, threshold: float):
    """True where the end reply is not good enough and the cloud should answer instead.

    Scalar in -> bool out; array in -> bool array out."""
    out = np.asarray(final, dtype=np.float64) < float(threshold)
    return bool(out) if out.ndim == 0 else out
