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
        interval: float = typer.Option(30.0, "--interval", help="Seconds between steps when running on."),
        min_labels: int = typer.Option(8, "--min-labels", help="Trusted labels that start a training round."),
        low_score: float = typer.Option(0.45, "--low-score", help="Final score (eq. 1) under which a served turn is a lesson."),
        alpha: float = typer.Option(PAPER.alpha, "--alpha", help="Eq. 1: Final = alpha*Sim + (1-alpha)*Match."),
        theta: float = typer.Option(PAPER.theta, "--theta", help="Eq. 1: where Match(query, cloud) < theta, Final = Sim."),
        customer_cap: int = typer.Option(5, "--customer-cap", help="Automatic labels per customer per day (poisoning defence)."),
        lr: float = typer.Option(2e-3, "--lr", help="Learning rate of an online round."),
        max_steps: int = typer.Option(300, "--max-steps", help="Most optimizer steps in one round."),
        adapter: str = typer.Option(DEFAULT_ADAPTER, "--adapter", help="Adapter name in the workspace registry to evolve."),
        device: str = typer.Option(None, "--device", help="Where rounds train and the gate's models run: auto, cpu, cuda or cuda:N."),
        dtype: str = typer.Option(None, "--dtype", help="Precision of the base in rounds and the gate: auto, fp32, bf16 or fp16."),
    ) -> None:
        """Turn feedback and low scores into pseudo-labels, fine-tune, gate, promote (paper §III).

        A running `endcloud serve` on the same workspace picks up promoted versions itself."""
        from endcloud.evolve.checks import CheckSettings
        from endcloud.evolve.loop import EvolveSettings
        from endcloud.evolve.service import evolver_for_workspace
        from endcloud.evolve.triggers import TriggerSettings
        from endcloud.kb import ShopPack

        from endcloud.config import Workspace
        from endcloud.end.device import apply_flags

        apply_flags(device, dtype)  # a round's train() and its gate's EndModel.load read them
        ws = Workspace.resolve(workspace)
        competitors: list[str] = []
        if (ws.shop / "shop.yaml").exists():
            competitors = list(getattr(ShopPack.load(ws.shop), "competitors", []) or [])
        settings = EvolveSettings(triggers=TriggerSettings(low_score=low_score), checks=CheckSettings(competitors=competitors),
                                  min_labels=min_labels, customer_cap=customer_cap, lr=lr, max_steps=max_steps,
                                  alpha=alpha, theta=theta)
        ev = evolver_for_workspace(ws, settings=settings, adapter_name=adapter, background=False)
        done = 0
        while True:
            out = ev.tick()
            typer.echo(json.dumps(out, ensure_ascii=False, default=str))
            done += out["round"] is not None
            if once or (rounds and done >= rounds):
                break
            time.sleep(interval)
