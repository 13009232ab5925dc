"""`endcloud federate`: its commands are listed, documented, and a bad setting names the fix."""

from __future__ import annotations

import pytest

from endcloud.cli import main


def _flower() -> bool:
    try:
        import flwr  # noqa: F401
    except ImportError:
        return False
    return True


needs_flower = pytest.mark.skipif(not _flower(), reason="Flower is not installed")


def test_federate_lists_its_commands(capsys):
    assert main(["federate", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("server", "client", "simulate"))


@pytest.mark.parametrize("cmd", ["server", "client", "simulate"])
def test_each_command_documents_its_options(capsys, cmd):
    assert main(["federate", cmd, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--" in out and ("--server" in out if cmd == "client" else "--aggregator" in out)


@needs_flower
def test_an_unknown_aggregator_fails_listing_the_valid_ones(tmp_path, capsys):
    code = main(["federate", "server", "--out", str(tmp_path), "--base", str(tmp_path), "--aggregator", "mean-ish"])
    err = capsys.readouterr().err
    assert code == 2 and "fedavg" in err and "screened" in err and "mean-ish" in err


@needs_flower
def test_dp_needs_both_of_its_settings(tmp_path, capsys):
    code = main(["federate", "server", "--out", str(tmp_path), "--base", str(tmp_path), "--dp-noise", "1.0"])
    assert code == 2 and "--dp-clip" in capsys.readouterr().err
