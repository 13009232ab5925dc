"""Differential privacy of the updates a shop sends, and the budget it costs.

With `DPSettings` on, every shop clips its round update Δ = w_local − w_global to L2 norm ≤ C
before it leaves (Flower's fixed-clipping rule, `compute_clip_model_update`), and the server
adds Gaussian noise N(0, (z·C/n)²) to the mean of the n sampled updates (Flower's
`DifferentialPrivacyClientSideFixedClipping`). One shop then changes the released mean by at
most C/n, so each round is a Gaussian mechanism with noise multiplier z, and the unit
protected is a whole shop (every dialogue it has), not one example.

The budget: R rounds of a Gaussian mechanism with multiplier z compose exactly into one
μ-GDP mechanism with μ = √R / z (Dong, Roth & Su 2019), whose (ε, δ) curve is

    δ(ε) = Φ(−ε/μ + μ/2) − e^ε · Φ(−ε/μ − μ/2)

and `epsilon(z, R, δ)` solves it for ε. No amplification by sampling is credited (a shop may
be sampled every round), so with `fraction < 1` the figure is an upper bound. Only rounds that
released an aggregate count: a round Flower discards (a sampled shop failed) released nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from endcloud.errors import ConfigError


@dataclass(frozen=True)
class DPSettings:
    """Clipping + Gaussian noise on the round updates (shop-level DP)."""

    noise_multiplier: float = 1.0  # z: noise stddev over the clipping norm
    clipping_norm: float = 0.5  # C: the largest L2 norm of one shop's round update
    delta: float = 1e-5  # δ of the (ε, δ) reported

    def __post_init__(self) -> None:
        if not (isinstance(self.noise_multiplier, (int, float)) and self.noise_multiplier > 0):
            raise ConfigError(f"DP noise multiplier must be > 0, got {self.noise_multiplier!r}; change --dp-noise")
        if not (isinstance(self.clipping_norm, (int, float)) and self.clipping_norm > 0):
            raise ConfigError(f"DP clipping norm must be > 0, got {self.clipping_norm!r}; change --dp-clip")
        if not 0 < self.delta < 1:
            raise ConfigError(f"DP delta must be in (0, 1), got {self.delta!r}; change --dp-delta")

    def budget(self, rounds: int) -> dict[str, float]:
        return {"epsilon": epsilon(self.noise_multiplier, rounds, self.delta), "delta": self.delta,
                "rounds": rounds, "noise_multiplier": self.noise_multiplier, "clipping_norm": self.clipping_norm,
                "mu": gdp_mu(self.noise_multiplier, rounds)}


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gdp_mu(noise_multiplier: float, rounds: int) -> float:
    """μ of the μ-GDP mechanism that `rounds` Gaussian rounds with multiplier z compose into."""
    return math.sqrt(max(rounds, 0)) / noise_multiplier


def delta_of(eps: float, mu: float) -> float:
    """δ(ε) of a μ-GDP mechanism."""
    if mu <= 0:
        return 0.0
    return _phi(-eps / mu + mu / 2) - math.exp(eps) * _phi(-eps / mu - mu / 2)


def epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """The smallest ε with δ(ε) ≤ `delta` after `rounds` rounds (0 when nothing was released)."""
    mu = gdp_mu(noise_multiplier, rounds)
    if mu == 0 or delta_of(0.0, mu) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while delta_of(hi, mu) > delta:
        hi *= 2
        if hi > 512:  # e^ε overflows past ~709; no useful budget is this large
            return math.inf
    for _ in range(100):  # bisection: δ(ε) decreases in ε
        mid = (lo + hi) / 2
        if delta_of(mid, mu) > delta:
            lo = mid
        else:
            hi = mid
    return hi


__all__ = ["DPSettings", "delta_of", "epsilon", "gdp_mu"]
