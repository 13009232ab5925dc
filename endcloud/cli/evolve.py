"""CLI commands of the `evolve` room: `endcloud evolve` runs the online loop on a workspace."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from endcloud.config import DEFAULT_ADAPTER
from endcloud.paper import PAPER


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""

    @app.command("evolve")
    def evolve(
        workspace: Path = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $ENDCLOUD_HOME or ./endcloud-work)."),
        rounds: int = typer.Option(0, "--rounds", help="Stop after this many training rounds (0: no limit)."),
        once: bool = typer.Option(False, "--once", help="One step (and a round if one is due), then exit."),
        interval: float = typer.Option(None, "--interval", help="Seconds between steps when running on (env ENDCLOUD_EVOLVE_INTERVAL_S; default 30)."),
        min_labels: int = typer.Option(None, "--min-labels", help="Trusted labels that start a training round (env ENDCLOUD_EVOLVE_MIN_LABELS; default 8)."),
        low_score: float = typer.Option(None, "--low-score", help="Final score (eq. 1) under which a served turn is a lesson (env ENDCLOUD_EVOLVE_LOW_SCORE; default 0.45)."),
        alpha: float = typer.Option(None, "--alpha", help=f"Eq. 1: Final = alpha*Sim + (1-alpha)*Match (env ENDCLOUD_EVOLVE_ALPHA; default {PAPER.alpha})."),
        theta: float = typer.Option(None, "--theta", help=f"Eq. 1: where Match(query, cloud) < theta, Final = Sim (env ENDCLOUD_EVOLVE_THETA; default {PAPER.theta})."),
        customer_cap: int = typer.Option(None, "--customer-cap", help="Automatic labels per customer per day, a poisoning defence (env ENDCLOUD_EVOLVE_CUSTOMER_CAP; default 5)."),
        lr: float = typer.Option(None, "--lr", help="Learning rate of an online round (env ENDCLOUD_EVOLVE_LR; default 2e-3)."),
        max_steps: int = typer.Option(None, "--max-steps", help="Most optimizer steps in one round (env ENDCLOUD_EVOLVE_MAX_STEPS; default 300)."),
        config: Path = typer.Option(None, "--config", "-c", help="A TOML config file (its \\[evolve] table and the others; env ENDCLOUD_CONFIG; default <workspace>/endcloud.toml when it exists)."),
        adapter: str = typer.Option(DEFAULT_ADAPTER, "--adapter", help="Adapter name in the workspace registry to evolve."),
        device: str = typer.Option(None, "--device", help="Where rounds train and the gate's models run: auto, cpu, cuda or cuda:N."),
        dtype: str = typer.Option(None, "--dtype", help="Precision of the base in rounds and the gate: auto, fp32, bf16 or fp16."),
    ) -> None:
        """Turn feedback and low scores into pseudo-labels, fine-tune, gate, promote (paper §III).

        A running `endcloud serve` on the same workspace picks up promoted versions itself."""
        from endcloud.evolve.service import evolver_for_workspace
        from endcloud.kb import ShopPack

        from endcloud.config import Workspace
        from endcloud.end.device import apply_flags

        from endcloud.cli.config import evolve_settings, root_config, sections, settings_in_force
        from endcloud.configfile import apply_to_environ

        given = dict(interval_s=interval, min_labels=min_labels, low_score=low_score, alpha=alpha, theta=theta,
                     customer_cap=customer_cap, lr=lr, max_steps=max_steps)
        _, tables, resolved = settings_in_force(config=config or root_config(), workspace=workspace,
                                                flags={("evolve", k): v for k, v in given.items()})
        apply_to_environ(sections(), tables)  # [cloud], [end], [privacy] reach the rooms as their variables
        apply_flags(device, dtype)  # a round's train() and its gate's EndModel.load read them
        ws = Workspace.resolve(workspace)
        competitors: list[str] = []
        if (ws.shop / "shop.yaml").exists():
            competitors = list(getattr(ShopPack.load(ws.shop), "competitors", []) or [])
        settings, interval = evolve_settings(resolved, competitors=competitors)
        ev = evolver_for_workspace(ws, settings=settings, adapter_name=adapter, background=False)
        done = 0
        while True:
            out = ev.tick()
            typer.echo(json.dumps(out, ensure_ascii=False, default=str))
            done += out["round"] is not None
            if once or (rounds and done >= rounds):
                break
            time.sleep(interval)
