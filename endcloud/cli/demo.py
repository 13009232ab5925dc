"""CLI command `endcloud demo`: the whole loop, offline, on the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""

    @app.command("demo")
    def demo(
        workspace: Path = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $ENDCLOUD_HOME or ./endcloud-work)."),
        lang: str = typer.Option("zh", "--lang", help="Language of the synthetic shop: zh or en."),
        quick: bool = typer.Option(False, "--quick", help="Tiny sizes (a minute or two): for smoke tests, not for results."),
        fresh: bool = typer.Option(True, "--fresh/--keep", help="Start from an empty workspace (default) or keep what is there."),
        seed: int = typer.Option(0, "--seed", help="Seed of the shop and of every sampling step."),
    ) -> None:
        """Shop → corpus → distil → pretrain → fine-tune (3 tuners) → evaluate → serve → customers → evolve → report.

        Offline on the embedded defaults; with ENDCLOUD_CLOUD_* set, the real cloud is the teacher."""
        from endcloud.demo import DemoConfig, DemoQualityError, run_demo
        from endcloud.errors import ConfigError

        if lang not in ("zh", "en"):
            raise ConfigError(f"--lang must be zh or en, got {lang!r}")
        cfg = DemoConfig.quick(lang=lang, seed=seed) if quick else DemoConfig(lang=lang, seed=seed)
        try:
            run_demo(workspace, config=cfg, echo=typer.echo, fresh=fresh)
        except DemoQualityError as e:
            typer.echo(f"demo stopped: {e}", err=True)
            raise typer.Exit(3) from None
