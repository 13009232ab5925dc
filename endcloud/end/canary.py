"""Canary and A/B experiments of adapters: who gets which version, and the record of how it ended.

An experiment is one file beside the registry's `active` pointer, replaced atomically:

    adapters/<name>/experiment.json   {"id", "policy", "champion", "candidate", "share", "stages",
                                       "started_at", "stage_started_at", "until", "rule", "state",
                                       "decisions": [...], "reason"}

Policies (`POLICIES`, by name):

    champion  no experiment: everyone gets the active version
    canary    a share of customers gets the candidate; the share ramps 5 -> 25 -> 50 -> 100 %
              while the candidate is healthy (100 %: it is promoted), and it is rolled back
              the moment a guard metric is worse beyond its margin
    ab        a fixed share for a set time; rolled back at once when worse, judged at the end

Who gets which arm is sticky and stable: `arm_of(key, experiment)` hashes the customer id
(else the session id) with the experiment id, so a customer keeps her arm across the
experiment's restarts and across ramps (a ramp only adds customers to the candidate), and a
different experiment reshuffles. The server also pins each session's first arm, so a session
never changes arm mid-conversation while the experiment runs.

`endcloud adapters canary|ab|status` and the online loop (`EvolveSettings.promotion = "canary"`)
start experiments; the server (`endcloud.serve.canary`) measures, judges and ends them:
`conclude` writes the verdict and its evidence into the candidate's manifest
(`metrics.canary`), and on promotion points `active` at it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from endcloud.errors import ConfigError, ModelError
from endcloud.fileio import write_json_atomic
from endcloud.registry import Registry

EXPERIMENT = "experiment.json"
DEFAULT_STAGES = (0.05, 0.25, 0.5, 1.0)
STATES = ("running", "promoted", "rolled_back", "held", "stopped")
KEEP_DECISIONS = 50  # verdicts an experiment file keeps (the newest): the dashboard's history


@dataclass(frozen=True)
class Policy:
    """How an experiment moves: whether its share ramps, and whether it ends on a clock."""

    name: str
    ramps: bool
    timed: bool


POLICIES: Registry[Policy] = Registry("adapter policy")
POLICIES.add("champion", Policy("champion", ramps=False, timed=False))
POLICIES.add("canary", Policy("canary", ramps=True, timed=False))
POLICIES.add("ab", Policy("ab", ramps=False, timed=True))


@dataclass
class Experiment:
    """One canary or A/B test of `candidate` against `champion` (versions of adapter `name`)."""

    id: str
    name: str
    policy: str
    champion: str
    candidate: str
    share: float
    stages: list[float] = field(default_factory=lambda: list(DEFAULT_STAGES))
    started_at: float = 0.0
    stage_started_at: float = 0.0
    until: float | None = None  # ab: when it is judged
    rule: dict[str, Any] = field(default_factory=dict)  # scoring.sequential.GuardRule fields
    state: str = "running"
    reason: str = ""
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        POLICIES.get(self.policy)  # an unknown name lists the valid ones
        if not 0.0 < float(self.share) <= 1.0:
            raise ConfigError(f"share must be in (0, 100 %], got {self.share!r}")
        if self.state not in STATES:
            raise ConfigError(f"experiment state must be one of {STATES}, got {self.state!r}")

    @property
    def running(self) -> bool:
        return self.state == "running"

    def next_share(self) -> float:
        """The share after the next ramp (1.0: the promotion)."""
        later = [s for s in self.stages if s > self.share + 1e-9]
        return min(later) if later else 1.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Experiment":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def parse_share(text: str | float) -> float:
    """'5%', '5', 0.05 -> 0.05; a bare number above 1 is a percentage."""
    s = str(text).strip()
    try:
        v = float(s[:-1]) / 100.0 if s.endswith("%") else float(s)
    except ValueError:
        raise ConfigError(f"--share must look like 5% or 0.05, got {text!r}") from None
    if not s.endswith("%") and v > 1.0:
        v /= 100.0
    if not 0.0 < v <= 1.0:
        raise ConfigError(f"--share must be in (0, 100%], got {text!r}")
    return v


def bucket(key: str, salt: str) -> float:
    """A stable number in [0, 1) for `key` (sha256: the same on every machine and restart)."""
    h = hashlib.sha256(f"{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def arm_of(key: str, exp: Experiment) -> str:
    """"candidate" or "champion" for a customer (or session) key under `exp`'s share."""
    if not exp.running or exp.policy == "champion":
        return "champion"
    return "candidate" if bucket(key, exp.id) < exp.share else "champion"


# ---- the experiment file --------------------------------------------------------------
def _path(registry: Any, name: str):
    return registry.path(name, "v1").parent / EXPERIMENT


def read_experiment(registry: Any, name: str) -> Experiment | None:
    """The adapter's experiment (running or ended), or None when it never had one."""
    try:
        d = json.loads(_path(registry, name).read_text(encoding="utf-8"))
        return Experiment.from_json(d)
    except (OSError, ValueError, TypeError, ConfigError):
        return None


def write_experiment(registry: Any, exp: Experiment) -> None:
    exp.decisions = exp.decisions[-KEEP_DECISIONS:]
    write_json_atomic(_path(registry, exp.name), exp.to_json())


def _check_versions(registry: Any, name: str, *versions: str) -> list[str]:
    out = []
    for v in versions:
        v = registry.version_str(v)
        m = registry.manifest(name, v)
        if m is None:
            raise ModelError(f"adapter {name!r} has no complete version {v!r}; see `endcloud adapters list --name {name}`")
        if m.get("status") == "rejected":
            raise ModelError(f"adapter {name!r} {v} was rejected by the gate; activate it by hand if you are sure")
        out.append(v)
    return out


def _refuse_running(registry: Any, name: str, force: bool) -> None:
    old = read_experiment(registry, name)
    if old is not None and old.running and not force:
        raise ConfigError(f"adapter {name!r} already runs an experiment ({old.policy} of {old.candidate} against "
                          f"{old.champion}); stop it first (`endcloud adapters stop {name}`) or pass --force")


def start_canary(registry: Any, name: str, version: str, *, share: float = DEFAULT_STAGES[0],
                 stages: tuple[float, ...] = DEFAULT_STAGES, rule: dict[str, Any] | None = None, force: bool = False,
                 clock: Callable[[], float] = time.time) -> Experiment:
    """Serve `version` to `share` of customers beside the active version, ramping while healthy."""
    champion = registry.active_version(name)
    if champion is None:
        raise ModelError(f"adapter {name!r} has no active version to compare with; activate one "
                         f"(`endcloud adapters activate {name} vN`)")
    [cand] = _check_versions(registry, name, version)
    if cand == champion:
        raise ConfigError(f"{name} {cand} is already the active version; a canary needs another version")
    _refuse_running(registry, name, force)
    now = clock()
    ramp = sorted({float(s) for s in stages if float(s) > share} | {share, 1.0})
    exp = Experiment(id=f"{name}-{cand}-{int(now * 1000)}", name=name, policy="canary", champion=champion,
                     candidate=cand, share=float(share), stages=ramp, started_at=now, stage_started_at=now,
                     rule=dict(rule or {}))
    write_experiment(registry, exp)
    return exp


def start_ab(registry: Any, name: str, a: str, b: str, *, days: float, share: float = 0.5,
             rule: dict[str, Any] | None = None, force: bool = False,
             clock: Callable[[], float] = time.time) -> Experiment:
    """A fixed split between versions `a` and `b` (one of them active: the champion) for `days`."""
    if days <= 0:
        raise ConfigError(f"--days must be > 0, got {days!r}")
    va, vb = _check_versions(registry, name, a, b)
    active = registry.active_version(name)
    if active not in (va, vb) or va == vb:
        raise ConfigError(f"an A/B test compares the active version of {name!r} ({active}) with another; got {va} and "
                          f"{vb} (activate one of them first)")
    champion, cand = (va, vb) if active == va else (vb, va)
    _refuse_running(registry, name, force)
    now = clock()
    exp = Experiment(id=f"{name}-{cand}-ab-{int(now * 1000)}", name=name, policy="ab", champion=champion,
                     candidate=cand, share=float(share), stages=[float(share)], started_at=now, stage_started_at=now,
                     until=now + days * 86400.0, rule=dict(rule or {}))
    write_experiment(registry, exp)
    return exp


def stop(registry: Any, name: str, *, reason: str = "stopped by hand") -> Experiment:
    """End a running experiment without a verdict: everyone back on the champion."""
    exp = read_experiment(registry, name)
    if exp is None or not exp.running:
        raise ConfigError(f"adapter {name!r} runs no experiment")
    exp.state, exp.reason = "stopped", reason
    write_experiment(registry, exp)
    return exp


def conclude(registry: Any, exp: Experiment, state: str, verdict: dict[str, Any], *,
             clock: Callable[[], float] = time.time) -> Experiment:
    """End `exp` as `state` ("promoted", "rolled_back", "held"): the verdict and its evidence go
    into the candidate's manifest (`metrics.canary`) and the experiment file; a promotion points
    `active` at the candidate."""
    if state not in ("promoted", "rolled_back", "held"):
        raise ConfigError(f"an experiment concludes as promoted, rolled_back or held, got {state!r}")
    record = {"experiment": exp.id, "policy": exp.policy, "against": exp.champion, "state": state,
              "share": exp.share, "at": clock(), **verdict}
    registry.mark(exp.name, exp.candidate, "candidate" if state == "held" else state, canary=record)
    if state == "promoted":
        registry.activate(exp.name, exp.candidate)
    exp.state = state
    exp.reason = "; ".join(verdict.get("reasons") or [])[:500]
    exp.decisions.append({"at": record["at"], "share": exp.share, "action": verdict.get("action", state),
                          "reasons": verdict.get("reasons", [])})
    write_experiment(registry, exp)
    return exp


__all__ = ["DEFAULT_STAGES", "EXPERIMENT", "Experiment", "POLICIES", "Policy", "STATES", "arm_of", "bucket", "conclude",
           "parse_share", "read_experiment", "start_ab", "start_canary", "stop", "write_experiment"]
