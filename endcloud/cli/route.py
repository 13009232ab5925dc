"""CLI commands of the router's cost dial (`endcloud.serve.calibrate`).

    endcloud route calibrate -w WS --cloud-share 0.2          # at most 20 % of turns to the cloud
    endcloud route calibrate -w WS --daily-budget 50          # at most 50 (the ledger's currency) a day
    endcloud route calibrate -w WS --cloud-share 0.2 --dry-run   # print and plot, write nothing

It replays the workspace's logged turns (`<workspace>/endcloud.db`), prints the quality /
offload curve it chose from, plots it (`<workspace>/reports/route-calibration.png`), and
writes `min_match` and `min_confidence` into the `[serve]` table of the config file serve
reads (`--config`, else `<workspace>/endcloud.toml`), every other line kept.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

route_app = typer.Typer(help="The router's cost dial: thresholds from the logged turns for a share or a budget.",
                        no_args_is_help=True)


@route_app.command("calibrate")
def calibrate_cmd(
    workspace: Path = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $ENDCLOUD_HOME or ./endcloud-work)."),
    cloud_share: Optional[float] = typer.Option(None, "--cloud-share", help="At most this share of turns to the cloud, in [0, 1] (e.g. 0.2)."),
    daily_budget: Optional[float] = typer.Option(None, "--daily-budget", help="At most this much cloud spend a day (the cost ledger's currency); turned into a share with the log's turns a day and mean takeover cost."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="The TOML file to write the thresholds to (default <workspace>/endcloud.toml)."),
    since_days: Optional[float] = typer.Option(None, "--since-days", help="Only the turns of the last N days (default: all)."),
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="Where to write the curve (default <workspace>/reports/route-calibration.png)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print and plot, but write no config."),
) -> None:
    """Pick min_match / min_confidence so that replaying the logged turns sends the asked share to the cloud."""
    from endcloud.config import Workspace
    from endcloud.configfile import FILE_NAME
    from endcloud.errors import ConfigError
    from endcloud.fileio import write_json_atomic
    from endcloud.serve import calibrate as cal_mod
    from endcloud.serve.router import Router
    from endcloud.serve.settings import ServeSettings
    from endcloud.store.conversations import ConversationStore

    if (cloud_share is None) == (daily_budget is None):
        raise ConfigError("pass one of --cloud-share (e.g. 0.2) or --daily-budget (e.g. 50)")
    ws = Workspace.resolve(workspace)
    if not ws.db.exists():
        raise ConfigError(f"no logged turns: {str(ws.db)!r} does not exist; serve traffic first (`endcloud serve -w {ws.root}`)")
    store = ConversationStore(ws.db)
    try:
        since = time.time() - since_days * 86400 if since_days else 0.0
        turns = cal_mod.logged_turns(store.routing_log(since=since))
    finally:
        store.close()
    if daily_budget is not None:
        if daily_budget < 0:
            raise ConfigError(f"--daily-budget must be >= 0, got {daily_budget!r}")
        if not turns:
            raise ConfigError("no logged turns with an end draft to calibrate on")
        cloud_share, how = cal_mod.share_for_budget(turns, daily_budget)
        typer.echo(how)
    router = Router.from_settings(ServeSettings.from_env())  # the rules in force (env, config file applied)
    cal = cal_mod.calibrate(turns, cloud_share=float(cloud_share), router=router)
    typer.echo(f"{cal.turns} logged turns; the fixed rules send {cal.floor:.1%} to the cloud whatever the thresholds")
    typer.echo(cal_mod.table(cal))
    for note in cal.notes:
        typer.echo(f"note: {note}")
    png = cal_mod.plot(cal, plot_path or ws.reports / "route-calibration.png")
    write_json_atomic(png.with_suffix(".json"), cal.to_json())
    typer.echo(f"curve: {png} (and {png.with_suffix('.json').name})")
    replayed = cal_mod.replay(turns, Router(**{**_router_fields(router), **cal.thresholds}))
    typer.echo(f"chosen: min_match={cal.chosen.min_match:g} min_confidence={cal.chosen.min_confidence:g} -> "
               f"{replayed:.1%} of the logged turns to the cloud (asked {cal.target:.1%}), quality {cal.chosen.quality:.3f} "
               f"(in force: {cal.current.share:.1%}, {cal.current.quality:.3f})")
    if dry_run:
        typer.echo("dry run: nothing written")
        return
    target = config or (ws.root / FILE_NAME)
    cal_mod.write_thresholds(target, cal.thresholds, comment=f"cloud share {cal.target:.3f} on {cal.turns} turns, "
                                                             f"{time.strftime('%Y-%m-%d %H:%M')}")
    typer.echo(f"wrote [serve] min_match, min_confidence to {target}; `endcloud serve -w {ws.root}` reads them "
               "(a flag or ENDCLOUD_SERVE_* variable still wins)")


def _router_fields(router) -> dict:
    return {"min_match": router.min_match, "min_confidence": router.min_confidence,
            "max_frustration": router.max_frustration, "cloud_intents": router.cloud_intents,
            "min_sentiment": router.min_sentiment}


def register(app: typer.Typer) -> None:
    app.add_typer(route_app, name="route")
