"""The `endcloud` command: one subcommand per stage, plus `demo` that runs them all.

Each room registers its commands from its own module here (`cli/<room>.py`, a
`register(app)` function); commands are plain functions that import their heavy
dependencies (torch, transformers) only when run, so `endcloud --help` is instant.
Any deliberate `EndcloudError` becomes one clear line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from endcloud import __version__
from endcloud.errors import EndcloudError

app = typer.Typer(
    name="endcloud",
    help="End-cloud collaboration for e-commerce customer service (shop, corpus, teacher, end model, eval, serve, evolve).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"endcloud {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    config: Optional[Path] = typer.Option(None, "--config", envvar="ENDCLOUD_CONFIG", show_envvar=True, help="A TOML config file for every command: its \\[cloud], \\[privacy], \\[end], ... tables fill the ENDCLOUD_* variables the environment leaves unset (`endcloud config show`)."),
) -> None:
    """End-cloud collaboration for e-commerce customer service."""
    from endcloud.cli.config import set_root_config

    applied: list[str] = []
    if config is not None:
        from endcloud.cli.config import sections
        from endcloud.configfile import apply_to_environ, find_config, load_file

        applied = apply_to_environ(sections(), load_file(find_config(config), sections()))
    set_root_config(config, applied)


def _register_all() -> None:
    from endcloud.cli import chat, cloud, config, corpus, demo, end, evolve, export, privacy, scoring, serve, shop

    for module in (shop, corpus, privacy, cloud, end, export, chat, scoring, serve, evolve, demo, config):
        module.register(app)
    __import__("endcloud.cli.federate", fromlist=["register"]).register(app)
    __import__("endcloud.cli.tasks", fromlist=["register"]).register(app)  # after scoring: makes `eval` a group
    __import__("endcloud.cli.route", fromlist=["register"]).register(app)  # the router's cost dial


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 usage error, 2 endcloud error, 130 interrupted)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, standalone_mode=False)
    except EndcloudError as e:
        typer.secho(f"error: {e}", err=True, fg="red")
        return 2
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        return 130
    except typer.Exit as e:  # --help, --version, explicit exits
        return e.exit_code
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:
        # Usage errors come from the click that typer vendors (typer._click): duck-type them.
        if type(e).__name__ == "Abort":
            return 130
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            return int(e.exit_code)
        raise
    return result if isinstance(result, int) else 0
