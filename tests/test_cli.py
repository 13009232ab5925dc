"""The command line: help for every command, clean errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

from endcloud.cli import app, main


def _commands(group) -> list[list[str]]:
    import typer.main

    click_group = typer.main.get_command(group)
    out: list[list[str]] = []

    def walk(cmd, prefix):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                out.append(prefix + [name])
                walk(sub, prefix + [name])

    walk(click_group, [])
    return out


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "Usage" in text


def test_every_command_has_help(capsys):
    for path in _commands(app):
        assert main(path + ["--help"]) == 0, path
        assert "Usage" in capsys.readouterr().out


def test_unknown_command_is_a_clean_error():
    proc = subprocess.run([sys.executable, "-m", "endcloud", "no-such-command"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
