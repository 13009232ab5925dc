"""The cost dial: router thresholds picked from the logged turns for a share of cloud turns.

A shop thinks in "at most 20 % of turns to the cloud" or "at most ¥50 a day", not in match
scores. Every served turn is logged with the signals the router read (`replies.decision`
holds them, measured before any threshold), so the thresholds that would have sent a given
share of those turns to the cloud can be found by replaying them (RouteLLM calibrates its
threshold to a share of strong-model calls the same way):

    turns = logged_turns(store.routing_log())
    cal = calibrate(turns, cloud_share=0.2, router=Router.from_settings(settings))
    cal.thresholds        {"min_match": 0.41, "min_confidence": 0.0}
    cal.curve             the quality/offload frontier it chose from (Point: share, quality, thresholds)
    replay(turns, router) the share of `turns` a router sends to the cloud (what the test checks)
    write_thresholds(ws.root / "endcloud.toml", cal.thresholds)   # [serve] keys; every other line kept

What it moves: `min_match` and `min_confidence`, the two quality thresholds. The other rules
send a turn to the cloud whatever the dial says (an empty or hand-off draft, an ungrounded
fact, a frustrated customer at `max_frustration`, a `cloud_intents` intent): their share is
the floor of the curve, and a target below it is reported, not pretended.

Quality is Match(query, served reply) as the server scores it: the end draft's `match` where
the end answers, the cloud reply's `cloud_match` where the cloud does (logged for takeovers;
elsewhere the mean of the logged ones, or 1.0 when no takeover was scored yet: the teacher
is the reference). `endcloud route calibrate` prints the curve, plots it and writes the file.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from endcloud.errors import ConfigError, DataError
from endcloud.serve.router import Router, Signals

SERVE_TABLE = "serve"
DIAL_KEYS = ("min_match", "min_confidence")  # what calibration writes
GRID_QUANTILES = 101  # candidate thresholds per signal: its percentiles (plus "off")
_SIGNAL_FIELDS = {f.name for f in fields(Signals)}


@dataclass(frozen=True)
class LoggedTurn:
    """One logged turn as the dial sees it: the router's signals, what either reply scored."""

    signals: Signals
    end_quality: float | None  # Match(query, end draft)
    cloud_quality: float | None  # Match(query, cloud reply), where a takeover was scored
    cloud_cost: float  # what its takeover cost (0 where the end answered)
    created_at: float


@dataclass(frozen=True)
class Point:
    """One setting of the dial and what it would have done on the logged turns."""

    min_match: float
    min_confidence: float
    share: float  # of turns sent to the cloud
    quality: float  # mean Match(query, served reply)


@dataclass
class Calibration:
    target: float  # the share asked for
    chosen: Point
    current: Point  # the thresholds in force, on the same turns
    floor: float  # the share the fixed rules send to the cloud whatever the dial says
    curve: list[Point] = field(default_factory=list)  # the frontier: best quality at each share
    turns: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def thresholds(self) -> dict[str, float]:
        return {"min_match": self.chosen.min_match, "min_confidence": self.chosen.min_confidence}

    def to_json(self) -> dict[str, Any]:
        pt = lambda p: {"min_match": p.min_match, "min_confidence": p.min_confidence,  # noqa: E731
                        "share": round(p.share, 4), "quality": round(p.quality, 4)}
        return {"target": self.target, "turns": self.turns, "floor": round(self.floor, 4), "chosen": pt(self.chosen),
                "current": pt(self.current), "curve": [pt(p) for p in self.curve], "notes": self.notes}


def logged_turns(rows: Iterable[dict[str, Any]]) -> list[LoggedTurn]:
    """The routing log (`ConversationStore.routing_log()`) as turns the dial can replay: those
    whose end draft was measured (a forced-cloud turn has no draft to judge)."""
    out = []
    for r in rows:
        sig = (r.get("decision") or {}).get("signals")
        if not isinstance(sig, dict) or sig.get("confidence") is None:
            continue
        known = {k: v for k, v in sig.items() if k in _SIGNAL_FIELDS}
        scores = r.get("scores") or {}
        cm = scores.get("cloud_match")
        out.append(LoggedTurn(signals=Signals(**known), end_quality=known.get("match"),
                              cloud_quality=float(cm) if cm is not None else None,
                              cloud_cost=float(r.get("cloud_cost") or 0.0) if r.get("answered_by") == "cloud" else 0.0,
                              created_at=float(r.get("created_at") or 0.0)))
    return out


def replay(turns: Sequence[LoggedTurn], router: Router) -> float:
    """The share of `turns` that `router` sends to the cloud (the real `Router.decide`)."""
    if not turns:
        raise DataError("no logged turns to replay")
    return sum(router.decide(copy_signals(t.signals)).route == "cloud" for t in turns) / len(turns)


def copy_signals(s: Signals) -> Signals:
    """A copy (decide never writes to it, but the log's objects stay untouched)."""
    return Signals(**s.to_json())


def share_for_budget(turns: Sequence[LoggedTurn], daily_budget: float) -> tuple[float, str]:
    """The cloud share a daily budget buys: budget / (turns a day x mean cost of a takeover),
    both from the log. Returns (share, how it was worked out)."""
    costs = [t.cloud_cost for t in turns if t.cloud_cost > 0]
    if not costs:
        raise ConfigError("--daily-budget needs logged takeovers with a cost (cloud_cost), and this log has none; "
                          "pass --cloud-share instead, or serve with the real cloud first")
    span_days = max((max(t.created_at for t in turns) - min(t.created_at for t in turns)) / 86400.0, 1.0)
    per_day = len(turns) / span_days
    cost = float(np.mean(costs))
    share = min(1.0, daily_budget / (per_day * cost))
    return share, (f"{per_day:.0f} turns a day x {cost:.4f} a takeover: a budget of {daily_budget:g} a day "
                   f"buys {share:.1%} of turns")


def calibrate(turns: Sequence[LoggedTurn], *, cloud_share: float, router: Router | None = None,
              quantiles: int = GRID_QUANTILES) -> Calibration:
    """The thresholds whose replay sends at most `cloud_share` of `turns` to the cloud (the
    nearest share below it, the best quality among settings that reach it). `router` holds
    the rules the dial does not move (max_frustration, cloud_intents, min_sentiment) and the
    thresholds in force (for the curve's "current" point)."""
    if not 0.0 <= cloud_share <= 1.0:
        raise ConfigError(f"--cloud-share must be in [0, 1], got {cloud_share!r}")
    if not turns:
        raise DataError("no logged turns with an end draft to calibrate on: serve some traffic first "
                        "(`endcloud serve`, model endcloud) and run this again")
    router = router or Router()
    # the rules the dial does not move: a turn they send to the cloud goes there at any threshold
    never = replace(router, min_match=-math.inf, min_confidence=-math.inf)
    fixed = np.array([never.decide(copy_signals(t.signals)).route == "cloud" for t in turns])
    match = np.array([np.nan if t.signals.match is None else t.signals.match for t in turns], dtype=float)
    conf = np.array([np.nan if t.signals.confidence is None else t.signals.confidence for t in turns], dtype=float)
    q_end = np.nan_to_num(np.array([np.nan if t.end_quality is None else t.end_quality for t in turns], dtype=float),
                          nan=0.0)
    known = [t.cloud_quality for t in turns if t.cloud_quality is not None]
    fill = float(np.mean(known)) if known else 1.0
    q_cloud = np.array([fill if t.cloud_quality is None else t.cloud_quality for t in turns], dtype=float)

    def candidates(values: np.ndarray) -> np.ndarray:
        v = values[~np.isnan(values)]
        if v.size == 0:
            return np.array([0.0])
        grid = np.unique(np.round(np.quantile(v, np.linspace(0, 1, quantiles)), 6))
        # strict "<": a threshold just above the largest value sends every measured turn
        return np.unique(np.concatenate([[0.0], grid, [round(float(v.max()) + 1e-6, 6)]]))

    mm, mc = candidates(match), candidates(conf)
    # cloud[i, j, k]: turn k at (mm[i], mc[j]); NaN never escalates, as in `should_escalate` on None
    with np.errstate(invalid="ignore"):
        low_m = match[None, :] < mm[:, None]  # (I, K)
        low_c = conf[None, :] < mc[:, None]  # (J, K)
    points: list[Point] = []
    for i, m in enumerate(mm):
        cloud = fixed[None, :] | low_m[i][None, :] | low_c  # (J, K)
        shares = cloud.mean(axis=1)
        quality = np.where(cloud, q_cloud[None, :], q_end[None, :]).mean(axis=1)
        points += [Point(float(m), float(c), float(s), float(q)) for c, s, q in zip(mc, shares, quality)]
    frontier = pareto(points)
    floor = float(fixed.mean())
    below = [p for p in points if p.share <= cloud_share + 1e-12]
    notes = []
    if not below:
        chosen = min(points, key=lambda p: (p.share, -p.quality))
        notes.append(f"the rules the dial does not move already send {floor:.1%} of turns to the cloud, over the "
                     f"{cloud_share:.1%} asked; the thresholds are off (0) and the share is {chosen.share:.1%}")
    else:
        reach = max(p.share for p in below)
        # among settings within half a point of the nearest reachable share, the best quality;
        # then the mildest thresholds (fewest turns changed by a small drift in the scores)
        near = [p for p in below if p.share >= reach - 0.005]
        chosen = max(near, key=lambda p: (round(p.quality, 6), p.share, -p.min_confidence, -p.min_match))
    cur_cloud = fixed | (np.nan_to_num(match, nan=np.inf) < router.min_match) | \
        (np.nan_to_num(conf, nan=np.inf) < router.min_confidence)
    current = Point(router.min_match, router.min_confidence, float(cur_cloud.mean()),
                    float(np.where(cur_cloud, q_cloud, q_end).mean()))
    if not known:
        notes.append("no takeover was scored yet: a cloud reply's quality is taken as 1.0 (the teacher is the reference)")
    return Calibration(target=cloud_share, chosen=chosen, current=current, floor=floor, curve=frontier,
                       turns=len(turns), notes=notes)


def pareto(points: Sequence[Point]) -> list[Point]:
    """The frontier: for each share, the best quality, kept only if better than at every lower share."""
    best: dict[float, Point] = {}
    for p in points:
        key = round(p.share, 6)
        if key not in best or p.quality > best[key].quality:
            best[key] = p
    out: list[Point] = []
    for key in sorted(best):
        p = best[key]
        if not out or p.quality > out[-1].quality:
            out.append(p)
    return out


def table(cal: Calibration, rows: int = 11) -> str:
    """The curve as a text table: the frontier at about `rows` shares, the chosen and current settings marked."""
    pts = cal.curve
    picks = {id(min(pts, key=lambda p: abs(p.share - s))) for s in np.linspace(0, 1, rows)} if pts else set()
    shown = sorted([p for p in pts if id(p) in picks] + [cal.chosen, cal.current], key=lambda p: (p.share, p.quality))
    lines = [f"{'cloud share':>11}  {'quality':>7}  {'min_match':>9}  {'min_confidence':>14}"]
    seen = set()
    for p in shown:
        key = (round(p.share, 6), p.min_match, p.min_confidence)
        if key in seen:
            continue
        seen.add(key)
        mark = "  <- chosen" if p is cal.chosen else "  <- in force" if p is cal.current else ""
        lines.append(f"{p.share:>11.1%}  {p.quality:>7.3f}  {p.min_match:>9.4f}  {p.min_confidence:>14.4f}{mark}")
    return "\n".join(lines)


def plot(cal: Calibration, path: str | Path) -> Path:
    """The quality/offload curve as a PNG, with the asked share, the chosen and the current setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot([p.share * 100 for p in cal.curve], [p.quality for p in cal.curve], "-", color="#4c72b0",
            label="best quality at each share")
    ax.axvline(cal.target * 100, color="#999", ls="--", lw=1, label=f"asked: {cal.target:.0%}")
    ax.axvspan(0, cal.floor * 100, color="#eee", label="fixed rules' floor")
    ax.plot([cal.chosen.share * 100], [cal.chosen.quality], "o", color="#c44e52", label="chosen")
    ax.plot([cal.current.share * 100], [cal.current.quality], "s", color="#55a868", label="in force")
    ax.set_xlabel("turns sent to the cloud (%)")
    ax.set_ylabel("mean Match(query, served reply)")
    ax.set_title(f"router calibration on {cal.turns} logged turns")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_thresholds(path: str | Path, thresholds: dict[str, float], *, comment: str | None = None) -> Path:
    """Set `thresholds` in the `[serve]` table of a TOML config file (created if missing),
    keeping every other line, comment and table as it was; what serve then reads."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    header = re.compile(rf"^\s*\[\s*{SERVE_TABLE}\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        lines += ([""] if lines else []) + [f"[{SERVE_TABLE}]"]
        start = len(lines) - 1
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
    if comment:
        tag = "# endcloud route calibrate:"
        old = next((i for i in range(start + 1, end) if lines[i].startswith(tag)), None)
        if old is None:
            lines.insert(start + 1, f"{tag} {comment}")
            end += 1
        else:
            lines[old] = f"{tag} {comment}"
    for key, value in thresholds.items():
        text = f"{key} = {round(float(value), 6)!r}"
        at = next((i for i in range(start + 1, end) if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i])), None)
        if at is None:
            lines.insert(end, text)
            end += 1
        else:
            lines[at] = text
    body = "\n".join(lines) + "\n"
    try:
        tomllib.loads(body)
    except tomllib.TOMLDecodeError as e:  # never leave a file serve cannot read
        raise ConfigError(f"{str(path)!r} would not be valid TOML after setting {sorted(thresholds)}: {e}") from None
    from endcloud.fileio import write_text_atomic

    write_text_atomic(path, body)
    return path
