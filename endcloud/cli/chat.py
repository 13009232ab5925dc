"""CLI commands of the `end` room: the interactive chat (registered on the root app by `register`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
