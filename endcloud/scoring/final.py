"""The paper's rule: the final score (eq. 1 with the Θ rule) and the escalation decision.

    Final = α·Sim(end, cloud) + (1 − α)·Match(query, end)
    Final = Sim(end, cloud)                 where Match(query, cloud) < Θ

The Θ rule says: when even the cloud's reply does not match the query (a bare order
number, a greeting), matching carries no signal, so judge by similarity alone.

`PaperRule(alpha, theta)` is its one home, with α and Θ as settings: the server scores
every takeover with it (`ServeSettings.alpha/theta`), the online loop's evaluator scores
served turns and the gate's held-out set with it (`EvolveSettings.alpha/theta`), and
`endcloud eval` scores its report with it (`--alpha/--theta`). The decision is kept apart
from the number (the RouteLLM shape): `should_escalate(value, threshold)` is what the
online loop calls to make a low Final a lesson (`evolve.triggers`), and what the server's
router calls on the signals it has before the cloud has answered (Match, confidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from endcloud.errors import ConfigError
from endcloud.paper import PAPER


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


@dataclass(frozen=True)
class PaperRule:
    """Eq. 1 with the Θ rule at one α and Θ (checked here: each in [0, 1])."""

    alpha: float = PAPER.alpha
    theta: float = PAPER.theta

    def __post_init__(self) -> None:
        _check_unit("alpha", self.alpha)
        _check_unit("theta", self.theta)

    def final(self, sim, match, cloud_match) -> np.ndarray:
        """`final_score` at this rule's α and Θ."""
        return final_score(sim, match, cloud_match, self.alpha, self.theta)
