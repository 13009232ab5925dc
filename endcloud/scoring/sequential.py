"""Is a candidate adapter worse than the champion on live traffic? The canary's decision rule.

Pure: two arms' counts in, a verdict out (`judge`). The server (`endcloud.serve.canary`)
runs it every few turns on the counts its SQLite log holds; `endcloud adapters status`
and `bench/bench_canary.py` run the same function.

Guards, each "lower is better": the share of end replies the router handed to the cloud
(takeover), of checked replies with a fact the shop's knowledge does not support
(ungrounded), of replies the customer rated down (downvote), and the mean latency.

    rates     Beta-Binomial: each arm's rate has the posterior Beta(1 + k, 1 + n - k)
              (uniform prior); p_worse = P(rate_cand > rate_champ + margin), by Monte Carlo
              with a fixed seed (the same counts always give the same verdict)
    latency   normal approximation of the difference of means:
              p_worse = P(mean_cand > (1 + margin) * mean_champ)

    verdict   candidate turns < min_samples              -> hold  (a few turns decide nothing)
              any guard's p_worse >= confidence          -> rollback (at once, whatever the stage)
              turns at this stage < stage_samples        -> hold
              every p_worse <= ramp_risk                 -> ramp to the next share
                 (the last ramp, to 100 %, is the promotion: every p_worse <= promote_risk)
              else                                       -> hold

Looking at the data every few turns inflates a fixed-sample test's error rates; the bench
simulates the whole sequential procedure and reports its real false-rollback rate and the
turns it needs to catch a given drop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from endcloud.errors import ConfigError

RATE_GUARDS = ("takeover", "ungrounded", "downvote")
GUARDS = RATE_GUARDS + ("latency",)
ACTIONS = ("hold", "ramp", "promote", "rollback")


@dataclass(frozen=True)
class GuardRule:
    """The canary's thresholds (stored with each experiment, so a restart judges alike)."""

    min_samples: int = 100  # candidate turns before any verdict but hold
    stage_samples: int = 100  # candidate turns at the current share before it may ramp
    margin_takeover: float = 0.05  # absolute: how much more often the cloud may take over
    margin_ungrounded: float = 0.03  # absolute, of replies the grounding check read
    margin_downvote: float = 0.03  # absolute, of the arm's turns
    margin_latency: float = 0.25  # relative: mean latency at most 25 % above the champion's
    confidence: float = 0.95  # rollback once P(worse beyond the margin) reaches this
    ramp_risk: float = 0.2  # ramp while every P(worse beyond the margin) is at most this
    promote_risk: float = 0.05  # ... and promote (the last ramp) at most this
    draws: int = 20_000  # Monte Carlo draws per rate guard

    def __post_init__(self) -> None:
        for name in ("min_samples", "stage_samples", "draws"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"canary rule {name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("margin_takeover", "margin_ungrounded", "margin_downvote"):  # differences of rates
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ConfigError(f"canary rule {name} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0.0 <= float(self.margin_latency) < float("inf"):  # relative: 1.0 allows twice the champion's
            raise ConfigError(f"canary rule margin_latency must be >= 0, got {self.margin_latency!r}")
        for name in ("confidence", "ramp_risk", "promote_risk"):
            if not 0.0 < float(getattr(self, name)) < 1.0:
                raise ConfigError(f"canary rule {name} must be in (0, 1), got {getattr(self, name)!r}")

    def margin(self, guard: str) -> float:
        return float(getattr(self, f"margin_{guard}"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> "GuardRule":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in known})


@dataclass
class ArmStats:
    """One arm's counts: end replies, and how many of them went wrong each way."""

    turns: int = 0
    takeover: int = 0
    checked: int = 0  # replies the grounding check read (None: no shop knowledge)
    ungrounded: int = 0
    rated: int = 0
    downvote: int = 0
    upvote: int = 0
    corrections: int = 0
    latency_n: int = 0
    latency_sum: float = 0.0  # milliseconds
    latency_sq: float = 0.0
    final_n: int = 0  # shadow-scored Final (the paper's eq. 1 on takeovers): shown, not a guard
    final_sum: float = 0.0

    def trials(self, guard: str) -> tuple[int, int]:
        """(failures, trials) of a rate guard."""
        if guard == "ungrounded":
            return self.ungrounded, self.checked
        return int(getattr(self, guard)), self.turns

    def rate(self, guard: str) -> float | None:
        if guard == "latency":
            return self.latency_sum / self.latency_n if self.latency_n else None
        k, n = self.trials(guard)
        return k / n if n else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["rates"] = {g: (None if (r := self.rate(g)) is None else round(r, 4)) for g in GUARDS}
        out["final"] = round(self.final_sum / self.final_n, 4) if self.final_n else None
        return out


@dataclass
class Verdict:
    action: str  # one of ACTIONS
    reasons: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)  # guard -> champion, candidate, p_worse, margin

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": list(self.reasons), "evidence": self.evidence}


def p_rate_worse(champ: tuple[int, int], cand: tuple[int, int], margin: float, *, draws: int = 20_000,
                 seed: int = 0) -> float:
    """P(rate_cand > rate_champ + margin) under independent Beta(1 + k, 1 + n - k) posteriors."""
    import numpy as np

    rng = np.random.default_rng(seed)
    (k0, n0), (k1, n1) = champ, cand
    a = rng.beta(1 + k0, 1 + n0 - k0, draws)
    b = rng.beta(1 + k1, 1 + n1 - k1, draws)
    return float(np.mean(b > a + margin))


def p_latency_worse(champ: ArmStats, cand: ArmStats, margin: float) -> float | None:
    """P(mean_cand > (1 + margin) * mean_champ), normal approximation; None below 2 samples an arm."""
    if champ.latency_n < 2 or cand.latency_n < 2:
        return None

    def mean_var(s: ArmStats) -> tuple[float, float]:
        m = s.latency_sum / s.latency_n
        var = max(0.0, (s.latency_sq - s.latency_n * m * m) / (s.latency_n - 1))
        return m, var / s.latency_n

    m0, v0 = mean_var(champ)
    m1, v1 = mean_var(cand)
    scale = 1.0 + margin
    diff = m1 - scale * m0
    sd = math.sqrt(v1 + scale * scale * v0)
    if sd == 0.0:
        return 1.0 if diff > 0 else 0.0
    return 0.5 * (1.0 + math.erf(diff / (sd * math.sqrt(2.0))))


def evidence(champ: ArmStats, cand: ArmStats, rule: GuardRule) -> dict[str, Any]:
    """Per guard: both arms' rates, their samples, the margin and P(candidate worse beyond it)."""
    out: dict[str, Any] = {}
    for i, g in enumerate(RATE_GUARDS):
        (k0, n0), (k1, n1) = champ.trials(g), cand.trials(g)
        p = p_rate_worse((k0, n0), (k1, n1), rule.margin(g), draws=rule.draws, seed=i) if n0 and n1 else None
        out[g] = {"champion": champ.rate(g), "candidate": cand.rate(g), "n": [n0, n1], "margin": rule.margin(g),
                  "p_worse": None if p is None else round(p, 4)}
    p = p_latency_worse(champ, cand, rule.margin_latency)
    out["latency"] = {"champion": champ.rate("latency"), "candidate": cand.rate("latency"),
                      "n": [champ.latency_n, cand.latency_n], "margin": rule.margin_latency,
                      "p_worse": None if p is None else round(p, 4)}
    return out


def judge(champ: ArmStats, cand: ArmStats, rule: GuardRule, *, stage_turns: int, last_stage: bool) -> Verdict:
    """What to do with the candidate now (see the module docstring). `stage_turns`: the
    candidate's turns since its share last changed; `last_stage`: the next ramp is to 100 %."""
    if cand.turns < rule.min_samples:
        return Verdict("hold", [f"{cand.turns} candidate turns < min_samples {rule.min_samples}"])
    ev = evidence(champ, cand, rule)
    worse = [f"{g}: P(worse by > {ev[g]['margin']}) = {ev[g]['p_worse']:.3f} >= {rule.confidence}"
             for g in GUARDS if ev[g]["p_worse"] is not None and ev[g]["p_worse"] >= rule.confidence]
    if worse:
        return Verdict("rollback", worse, ev)
    if stage_turns < rule.stage_samples:
        return Verdict("hold", [f"{stage_turns} candidate turns at this share < stage_samples {rule.stage_samples}"], ev)
    risk = rule.promote_risk if last_stage else rule.ramp_risk
    doubtful = [f"{g}: P(worse by > {ev[g]['margin']}) = {ev[g]['p_worse']:.3f} > {risk}"
                for g in GUARDS if ev[g]["p_worse"] is not None and ev[g]["p_worse"] > risk]
    if doubtful:
        return Verdict("hold", doubtful, ev)
    action = "promote" if last_stage else "ramp"
    return Verdict(action, [f"every guard P(worse beyond its margin) <= {risk}"], ev)


def p_better(champ: ArmStats, cand: ArmStats, guard: str = "takeover", *, draws: int = 20_000) -> float | None:
    """P(rate_cand < rate_champ) on a rate guard: an A/B test's "is it better", not only "not worse"."""
    (k0, n0), (k1, n1) = champ.trials(guard), cand.trials(guard)
    if not (n0 and n1):
        return None
    return 1.0 - p_rate_worse((k0, n0), (k1, n1), 0.0, draws=draws, seed=7)


__all__ = ["ACTIONS", "GUARDS", "RATE_GUARDS", "ArmStats", "GuardRule", "Verdict", "evidence", "judge",
           "p_better", "p_latency_worse", "p_rate_worse"]
