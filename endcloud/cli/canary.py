"""`endcloud adapters canary | ab | stop | status`: try an adapter version on live traffic.

    endcloud adapters canary shop v4 --share 5%        # 5 % of customers, ramped 25 -> 50 -> 100 % while healthy
    endcloud adapters ab shop v3 v4 --days 3           # a fixed 50/50 split, judged after three days
    endcloud adapters status                           # arms, rates, the verdict and its evidence
    endcloud adapters stop shop                        # everyone back on the champion, no verdict

The running server (`endcloud serve`) follows the experiment file, measures each arm and
ramps, promotes or rolls back by itself (`endcloud.serve.canary`); these commands only
start, stop and read. Thresholds of the decision rule: `--min-samples` and the margins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from endcloud.config import Workspace

WS_HELP = "Workspace root (default $ENDCLOUD_HOME or ./endcloud-work)."
# the options canary and ab share (typer reads an option's declaration, never changes it)
WORKSPACE = typer.Option(None, "--workspace", "-w", help=WS_HELP)
FORCE = typer.Option(False, "--force", help="Replace an experiment that is running.")
MARGIN_TAKEOVER = typer.Option(0.05, "--margin-takeover", help="How much higher the candidate's takeover rate may be (absolute).")
MARGIN_LATENCY = typer.Option(0.25, "--margin-latency", help="How much slower the candidate may be on average (relative).")


def _rule(min_samples: int, stage_samples: Optional[int], margin_takeover: float, margin_latency: float) -> dict:
    from endcloud.scoring.sequential import GuardRule

    return GuardRule(min_samples=min_samples, stage_samples=stage_samples or min_samples,
                     margin_takeover=margin_takeover, margin_latency=margin_latency).to_json()


def canary_cmd(
    name: str = typer.Argument(..., help="Adapter name."),
    version: str = typer.Argument(..., help="The candidate version, e.g. v4 (the active version is the champion)."),
    share: str = typer.Option("5%", "--share", help="Share of customers on the candidate at first (ramps 25 -> 50 -> 100 %)."),
    min_samples: int = typer.Option(100, "--min-samples", help="Candidate turns before any verdict (and per share before a ramp)."),
    stage_samples: Optional[int] = typer.Option(None, "--stage-samples", help="Candidate turns at a share before it ramps (default --min-samples)."),
    margin_takeover: float = MARGIN_TAKEOVER,
    margin_latency: float = MARGIN_LATENCY,
    force: bool = FORCE,
    workspace: Optional[Path] = WORKSPACE,
) -> None:
    """Serve VERSION to a share of customers beside the active version; ramp while healthy, roll back when worse."""
    from endcloud.end.canary import parse_share, start_canary

    reg = Workspace.resolve(workspace).adapter_registry()
    exp = start_canary(reg, name, version, share=parse_share(share), force=force,
                       rule=_rule(min_samples, stage_samples, margin_takeover, margin_latency))
    typer.echo(f"{name}: canary {exp.candidate} at {exp.share:.0%} beside {exp.champion} "
               f"(ramps {' -> '.join(f'{s:.0%}' for s in exp.stages)}); a running `endcloud serve` picks it up")


def ab_cmd(
    name: str = typer.Argument(..., help="Adapter name."),
    a: str = typer.Argument(..., help="One version (one of the two must be active: the champion)."),
    b: str = typer.Argument(..., help="The other version."),
    days: float = typer.Option(3.0, "--days", help="How long the split runs before it is judged."),
    share: str = typer.Option("50%", "--share", help="Share of customers on the non-active version."),
    min_samples: int = typer.Option(100, "--min-samples", help="Turns an arm needs before any verdict."),
    margin_takeover: float = MARGIN_TAKEOVER,
    margin_latency: float = MARGIN_LATENCY,
    force: bool = FORCE,
    workspace: Optional[Path] = WORKSPACE,
) -> None:
    """A fixed split between two versions for --days; a worse one is rolled back at once."""
    from endcloud.end.canary import parse_share, start_ab

    reg = Workspace.resolve(workspace).adapter_registry()
    exp = start_ab(reg, name, a, b, days=days, share=parse_share(share), force=force,
                   rule=_rule(min_samples, None, margin_takeover, margin_latency))
    typer.echo(f"{name}: A/B {exp.champion} vs {exp.candidate} ({exp.share:.0%} on {exp.candidate}) for {days:g} days")


def stop_cmd(
    name: str = typer.Argument(..., help="Adapter name."),
    workspace: Optional[Path] = WORKSPACE,
) -> None:
    """End the running experiment without a verdict: everyone back on the active version."""
    from endcloud.end.canary import stop

    exp = stop(Workspace.resolve(workspace).adapter_registry(), name)
    typer.echo(f"{name}: {exp.policy} of {exp.candidate} stopped; {exp.champion} serves everyone")


def status_cmd(
    name: Optional[str] = typer.Argument(None, help="Adapter name (default: every adapter with an experiment)."),
    workspace: Optional[Path] = WORKSPACE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Each experiment: arms, their rates, the verdict the rule gives now (or the final one) and its evidence."""
    from endcloud.end.canary import read_experiment
    from endcloud.serve.canary import experiment_status
    from endcloud.store.canary import CanaryLog

    ws = Workspace.resolve(workspace)
    reg = ws.adapter_registry()
    names = [name] if name else [n for n in reg.names() if read_experiment(reg, n) is not None]
    log = CanaryLog(ws.db)
    try:
        rows = [experiment_status(reg, n, log) for n in names]
    finally:
        log.close()
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("no experiments; start one with `endcloud adapters canary NAME vN --share 5%`")
    for r in rows:
        exp = r["experiment"]
        if exp is None:
            typer.echo(f"{r['name']}: no experiment (active {r['active']})")
            continue
        typer.echo(f"{r['name']}: {exp['policy']} {exp['candidate']} vs {exp['champion']} — {exp['state']}, "
                   f"share {exp['share']:.0%}" + (f" ({exp['reason']})" if exp.get("reason") else ""))
        for arm, s in r["arms"].items():
            rates = ", ".join(f"{g} {v:.3f}" if isinstance(v, float) else f"{g} -" for g, v in s["rates"].items())
            typer.echo(f"  {arm:9s} {s['turns']:6d} turns  {rates}")
        v = r.get("verdict") or {}
        if v:
            typer.echo(f"  verdict: {v.get('action', v.get('state'))} — {'; '.join(v.get('reasons') or [])}")


def register(adapters_app: typer.Typer) -> None:
    adapters_app.command("canary")(canary_cmd)
    adapters_app.command("ab")(ab_cmd)
    adapters_app.command("stop")(stop_cmd)
    adapters_app.command("status")(status_cmd)
