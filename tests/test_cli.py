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


def test_pretrain_recipe_reader_takes_only_the_sizes_given(tmp_path, capsys):
    """`endcloud pretrain --recipe reader`: the sizes given on the command line override the
    recipe's, the others keep the recipe's (not the plain pretrain's defaults), and a reader
    with its record and glue is written. (It once failed at once: the click package's current
    context is not typer's.)"""
    import json

    out = tmp_path / "reader"
    assert main(["pretrain", "--recipe", "reader", "--out", str(out), "--shops", "1", "--steps", "2",
                 "--vocab-size", "600", "--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1",
                 "--intermediate", "48", "--batch-size", "2", "--quiet"]) == 0
    rec = json.loads((out / "reader.json").read_text())
    r = rec["recipe"]
    assert (r["steps"], r["hidden"], r["layers"], r["vocab_size"], r["shops_per_lang"]) == (2, 32, 1, 600, 1)
    assert r["lr"] == 3e-3 and r["max_input_len"] == 384  # not given: the recipe's, not pretrain's 2e-3
    assert (out / "glue.json").exists() and (out / "model.safetensors").exists()
    assert "shop reader saved to" in capsys.readouterr().out
