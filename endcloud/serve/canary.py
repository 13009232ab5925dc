"""Canary and A/B tests of adapters on live traffic: assign, measure, judge, ramp or roll back.

    controller = CanaryController(registry=ws.adapter_registry(), name="shop", db_path=ws.db, engine=app.state.engine)
    controller.start()                           # follows adapters/shop/experiment.json, judges every interval_s
    label = controller.assign(customer, session) # the adapter label this turn runs on (None: the champion)
    controller.observe(result, latency_ms)       # the turn's outcome; into SQLite (`store.canary`) each tick

The pieces live where their rooms are: the experiment file, policies and sticky assignment in
`end.canary` (the CLI and the online loop start experiments there), the counts in
`store.canary`, the decision rule in `scoring.sequential`. This module joins them to the
running engine:

    experiment starts  -> the candidate is loaded beside the champion (`AsyncEngine.add_variant`):
                          one engine, one copy of the base, each request names its arm's variant
    every turn         -> the turn's arm (pinned per session), takeover, grounding, latency, Final
    every interval_s   -> judge (new turns only): ramp (the share in the experiment file grows),
                          promote (the engine swaps to the candidate first, then `active` moves,
                          then the extra variant goes), roll back (everyone back on the champion
                          at once, then the variant goes), or hold
                          The verdict and its evidence go into the candidate's manifest.

No request fails on any of these moves: a request names a label, and a label no longer
served beside the champion runs on the main variant (`AsyncEngine._pick`). While an
experiment runs a session keeps its first arm; when it ends everyone gets the winner.
`endcloud.compose` installs a controller for the adapter the server follows.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable

from fastapi import APIRouter, HTTPException, Request

from endcloud.end.canary import Experiment, arm_of, conclude, read_experiment, write_experiment
from endcloud.scoring.sequential import ArmStats, GuardRule, judge, p_better
from endcloud.serve.auth import ANONYMOUS, require_admin
from endcloud.serve.http import ApiError
from endcloud.store.canary import CanaryLog

log = logging.getLogger("endcloud.serve")

PINNED_SESSIONS = 100_000  # sessions whose arm is kept in memory (all of them are in SQLite)


def _label(name: str, version: str) -> str:
    return f"{name}/{version}"  # what AsyncEngine.adapter_label gives a registry version folder


class CanaryController:
    """One adapter name's experiments on one server (see the module docstring)."""

    def __init__(self, *, registry: Any, name: str, db_path: Any, engine: Any, interval_s: float = 2.0,
                 clock: Callable[[], float] = time.time):
        self.registry, self.name, self.engine, self.clock = registry, name, engine, clock
        self.interval_s = float(interval_s)
        self.log = CanaryLog(db_path)
        self.exp: Experiment | None = None
        self.last: dict[str, Any] | None = None  # the newest verdict (the dashboard's)
        self._pinned: OrderedDict[str, tuple[str, str | None]] = OrderedDict()  # session -> (experiment, label)
        # what the turns measured, written by the canary thread once a tick: a customer's turn
        # never waits for this SQLite connection (deque append / popleft are thread-safe)
        self._turns: deque[tuple] = deque()
        self._pins: deque[tuple] = deque()
        self._seen = 0  # turns observed; judged again only when it moved
        self._judged = -1
        self._lock = threading.RLock()  # one refresh / judgement at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the experiment file ---------------------------------------------------------------
    def refresh(self) -> None:
        """Follow the experiment file: load a new candidate beside the champion, drop a stopped one."""
        with self._lock:
            exp = read_experiment(self.registry, self.name)
            cur = self.exp
            if exp is None or (cur is not None and exp.id == cur.id and exp.state == cur.state
                               and exp.share == cur.share):
                return
            if exp.running and (cur is None or cur.id != exp.id or not cur.running):
                if cur is not None and cur.running:
                    self.engine.drop_variant(_label(self.name, cur.candidate))
                champion = _label(self.name, exp.champion)
                if self.engine.adapter != champion:  # serve what the experiment compares with
                    self.engine.swap_adapter(self.registry.path(self.name, exp.champion))
                self.engine.add_variant(_label(self.name, exp.candidate), self.registry.path(self.name, exp.candidate))
                log.info("experiment %s: %s of %s/%s at %.0f %% beside %s", exp.id, exp.policy, self.name, exp.candidate,
                         exp.share * 100, exp.champion)
            elif not exp.running and cur is not None and cur.running:  # stopped from the CLI
                self.engine.drop_variant(_label(self.name, cur.candidate))
                log.info("experiment %s ended (%s)", exp.id, exp.state)
            self.exp = exp

    # -- per turn ------------------------------------------------------------------------
    def assign(self, customer: str, session_id: str) -> str | None:
        """The adapter label `session_id`'s turn runs on (None: the champion, the main variant).
        Keyed by the token-proven customer, else the session; a session keeps its first arm."""
        exp = self.exp
        if exp is None or not exp.running:
            return None
        pinned = self._pinned.get(session_id)
        if pinned is not None and pinned[0] == exp.id:
            return pinned[1]
        key = customer if customer and customer != ANONYMOUS else session_id
        arm = None
        try:
            arm = self.log.pinned_arm(exp.id, session_id)  # pinned before a restart
        except Exception:  # a read that failed: the hash still gives this key its arm; never a failed turn
            log.exception("could not read the arm of session %s", session_id[:12])
        if arm is None:
            arm = arm_of(key, exp)
            self._pins.append((exp.id, session_id, arm, self.clock()))
        label = _label(self.name, exp.candidate) if arm == "candidate" else None
        self._pinned[session_id] = (exp.id, label)
        if len(self._pinned) > PINNED_SESSIONS:
            self._pinned.popitem(last=False)
        return label

    def label_for(self, session_id: str) -> str | None:
        exp, pinned = self.exp, self._pinned.get(session_id)
        if exp is None or not exp.running or pinned is None or pinned[0] != exp.id:
            return None
        return pinned[1]

    def observe(self, result: Any, latency_ms: float | None) -> None:
        """Count one finished turn for the arm whose adapter wrote its end reply."""
        exp = self.exp
        if exp is None or not exp.running or result.end_text is None:
            return
        arm = {_label(self.name, exp.candidate): "candidate", _label(self.name, exp.champion): "champion"}.get(
            result.adapter or "")
        if arm is None:  # neither arm wrote it (a swap in progress): it measures nothing
            return
        decision = result.decision or {}
        self._turns.append(self.log.turn_row(
            message_id=result.message_id, experiment=exp.id, arm=arm, adapter=result.adapter,
            session_id=result.session_id, share=exp.share, takeover=decision.get("route") == "cloud",
            grounded=(decision.get("signals") or {}).get("grounded"), latency_ms=latency_ms,
            final=(result.scores or {}).get("final"), now=self.clock()))
        self._seen += 1

    def flush(self) -> None:
        """Write the turns and pins gathered since the last tick (one transaction)."""
        turns = [self._turns.popleft() for _ in range(len(self._turns))]
        pins = [self._pins.popleft() for _ in range(len(self._pins))]
        try:
            self.log.write(turns, pins)
        except Exception:
            self._turns.extendleft(reversed(turns))  # the next tick tries again
            self._pins.extendleft(reversed(pins))
            raise

    # -- judging -------------------------------------------------------------------------
    def stats(self, exp: Experiment, *, since: float | None = None) -> dict[str, ArmStats]:
        raw = self.log.stats(exp.id, since=since)
        return {arm: ArmStats(**raw.get(arm, {})) for arm in ("champion", "candidate")}

    def judge_now(self) -> dict[str, Any] | None:
        """Judge the running experiment once and act on the verdict; returns it (None: nothing runs)."""
        with self._lock:
            exp = self.exp
            if exp is None or not exp.running:
                return None
            rule = GuardRule.from_json(exp.rule)
            arms = self.stats(exp)
            stage = self.stats(exp, since=exp.stage_started_at)["candidate"].turns
            timed_out = exp.until is not None and self.clock() >= exp.until
            verdict = judge(arms["champion"], arms["candidate"], rule,
                            stage_turns=stage if exp.policy == "canary" else (stage if timed_out else 0),
                            last_stage=exp.policy != "canary" or exp.next_share() >= 1.0)
            out = verdict.to_json() | {"share": exp.share, "arms": {a: s.to_json() for a, s in arms.items()},
                                       "p_better_takeover": p_better(arms["champion"], arms["candidate"]),
                                       "at": self.clock()}
            self.last = out
            action = verdict.action
            if exp.policy == "ab" and action in ("ramp", "promote") and not timed_out:
                action = "hold"  # an A/B split is fixed until its time is up
            if action == "hold" and timed_out:
                self._end(exp, "held", out)
            elif action == "rollback":
                self._end(exp, "rolled_back", out)
            elif action == "promote":
                self._promote(exp, out)
            elif action == "ramp":
                exp.share = exp.next_share()
                exp.stage_started_at = self.clock()
                exp.decisions.append({"at": out["at"], "share": exp.share, "action": "ramp", "reasons": verdict.reasons})
                write_experiment(self.registry, exp)
                log.info("experiment %s: %s ramps to %.0f %%", exp.id, exp.candidate, exp.share * 100)
            return out

    def _promote(self, exp: Experiment, verdict: dict[str, Any]) -> None:
        # the engine serves the candidate before `active` moves: no turn can land on a variant that is gone
        self.engine.swap_adapter(self.registry.path(self.name, exp.candidate))
        exp.share = 1.0
        self._end(exp, "promoted", verdict)

    def _end(self, exp: Experiment, state: str, verdict: dict[str, Any]) -> None:
        exp.state = state  # assign() sends everyone to the main variant from now on
        conclude(self.registry, exp, state, verdict, clock=self.clock)
        self.engine.drop_variant(_label(self.name, exp.candidate))
        log.warning("experiment %s: %s %s (%s)", exp.id, exp.candidate, state.replace("_", " "), exp.reason)

    def tick(self) -> None:
        self.refresh()
        self.flush()
        if self._seen != self._judged or (self.exp is not None and self.exp.until is not None):
            self._judged = self._seen
            self.judge_now()

    # -- life cycle ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:  # the champion serves whatever happens here
                log.exception("canary tick failed")

    def start(self) -> "CanaryController":
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="endcloud-canary", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.flush()
        finally:
            self.log.close()


def experiment_status(registry: Any, name: str, log_: CanaryLog, *, last: dict[str, Any] | None = None,
                      curve: bool = False) -> dict[str, Any]:
    """What `endcloud adapters status` and the dashboard show: the experiment, both arms' counts
    and rates, the verdict the rule gives now (or the server's last one) with its evidence."""
    exp = read_experiment(registry, name)
    out: dict[str, Any] = {"name": name, "active": registry.active_version(name), "experiment": None}
    if exp is None:
        return out
    raw = log_.stats(exp.id)
    arms = {arm: ArmStats(**raw.get(arm, {})) for arm in ("champion", "candidate")}
    out["experiment"] = exp.to_json()
    out["arms"] = {a: s.to_json() for a, s in arms.items()}
    if last is not None:
        out["verdict"] = last
    elif exp.running:
        stage = ArmStats(**log_.stats(exp.id, since=exp.stage_started_at).get("candidate", {})).turns
        out["verdict"] = judge(arms["champion"], arms["candidate"], GuardRule.from_json(exp.rule), stage_turns=stage,
                               last_stage=exp.policy != "canary" or exp.next_share() >= 1.0).to_json()
    else:
        out["verdict"] = (registry.manifest(name, exp.candidate) or {}).get("metrics", {}).get("canary")
    if curve:
        out["curve"] = log_.curve(exp.id)
    return out


def canary_router(*, admin_token: str | None = None) -> APIRouter:
    """GET /api/canary: the running (or last) experiment of the adapter the server follows."""
    router = APIRouter()

    @router.get("/api/canary")
    async def canary_status(request: Request):
        try:
            require_admin(request, admin_token)
        except ApiError as e:
            raise HTTPException(e.status, e.message, headers=e.headers or None) from None
        ctl = getattr(request.app.state, "canary", None)
        if ctl is None:
            return {"experiment": None, "reason": "no canary controller (a pinned --adapter, or no workspace)"}
        # SQLite aggregates and Monte Carlo draws: off the event loop
        return await asyncio.to_thread(experiment_status, ctl.registry, ctl.name, ctl.log, last=ctl.last, curve=True)

    return router


__all__ = ["CanaryController", "canary_router", "experiment_status"]
