"""Experiments in the adapter registry (`endcloud.end.canary`): sticky, stable assignment; a
ramp only adds customers to the candidate; start/stop/conclude write the file and the manifest."""

from __future__ import annotations

import json

import pytest

from endcloud.end.adapters import AdapterRegistry
from endcloud.end.canary import (Experiment, arm_of, bucket, conclude, parse_share, read_experiment, start_ab,
                                 start_canary, stop)
from endcloud.errors import ConfigError, ModelError, RegistryError


def fake_adapter(root, name):
    d = root / name
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}), encoding="utf-8")
    return d


@pytest.fixture
def reg(tmp_path):
    r = AdapterRegistry(tmp_path / "adapters")
    for i in range(3):
        r.publish("shop", fake_adapter(tmp_path / "src", f"a{i}"))
    r.activate("shop", "v1")
    return r


def test_assignment_is_stable_sticky_and_near_the_share():
    exp = Experiment(id="shop-v2-1", name="shop", policy="canary", champion="v1", candidate="v2", share=0.05)
    keys = [f"customer-{i}" for i in range(4000)]
    first = [arm_of(k, exp) for k in keys]
    assert first == [arm_of(k, exp) for k in keys]  # the same on every call (and machine: sha256)
    assert 0.03 < first.count("candidate") / len(keys) < 0.07
    exp.share = 0.25  # a ramp
    later = [arm_of(k, exp) for k in keys]
    assert all(b == "candidate" for a, b in zip(first, later) if a == "candidate")  # nobody leaves the candidate
    assert 0.22 < later.count("candidate") / len(keys) < 0.28
    other = Experiment(id="shop-v3-2", name="shop", policy="canary", champion="v1", candidate="v3", share=0.25)
    assert [arm_of(k, other) for k in keys] != later  # another experiment reshuffles
    assert bucket("x", "a") == bucket("x", "a") != bucket("x", "b")


def test_parse_share_accepts_percent_and_fractions():
    assert parse_share("5%") == pytest.approx(0.05) and parse_share("0.25") == 0.25 and parse_share("50") == 0.5
    with pytest.raises(ConfigError, match="--share"):
        parse_share("lots")
    with pytest.raises(ConfigError, match="--share"):
        parse_share("0%")


def test_start_stop_and_conclude(reg):
    exp = start_canary(reg, "shop", "v2", share=0.05, rule={"min_samples": 10})
    assert read_experiment(reg, "shop").to_json() == exp.to_json() and exp.champion == "v1"
    assert exp.stages == [0.05, 0.25, 0.5, 1.0] and exp.next_share() == 0.25
    with pytest.raises(ConfigError, match="already runs"):
        start_canary(reg, "shop", "v3")
    with pytest.raises(ConfigError, match="already the active"):
        start_canary(reg, "shop", "v1", force=True)
    assert stop(reg, "shop").state == "stopped" and arm_of("anyone", read_experiment(reg, "shop")) == "champion"

    exp = start_canary(reg, "shop", "v3")
    conclude(reg, exp, "rolled_back", {"action": "rollback", "reasons": ["ungrounded: P(worse) = 0.99"]})
    m = reg.manifest("shop", "v3")
    assert m["status"] == "rolled_back" and m["metrics"]["canary"]["reasons"] == ["ungrounded: P(worse) = 0.99"]
    assert reg.active_version("shop") == "v1" and read_experiment(reg, "shop").state == "rolled_back"

    exp = start_ab(reg, "shop", "v2", "v1", days=3)
    assert (exp.champion, exp.candidate, exp.share) == ("v1", "v2", 0.5) and exp.until - exp.started_at == 3 * 86400
    conclude(reg, exp, "promoted", {"action": "promote", "reasons": ["every guard ok"]})
    assert reg.active_version("shop") == "v2" and reg.manifest("shop", "v2")["metrics"]["canary"]["policy"] == "ab"


def test_bad_requests_name_what_to_do(reg, tmp_path):
    with pytest.raises(ModelError, match="no complete version"):
        start_canary(reg, "shop", "v9")
    with pytest.raises(RegistryError, match="valid: ab, canary, champion"):
        Experiment(id="x", name="shop", policy="blue-green", champion="v1", candidate="v2", share=0.1)
    with pytest.raises(ConfigError, match="active version"):
        start_ab(reg, "shop", "v2", "v3", days=1)
    empty = AdapterRegistry(tmp_path / "none")
    empty.publish("shop", fake_adapter(tmp_path / "src2", "b"))
    with pytest.raises(ModelError, match="no active version"):
        start_canary(empty, "shop", "v1")


def test_the_cli_starts_reads_and_stops_an_experiment(tmp_path):
    from typer.testing import CliRunner

    from endcloud.cli import app

    ws = tmp_path / "ws"
    reg = AdapterRegistry(ws / "adapters")
    for i in range(2):
        reg.publish("shop", fake_adapter(tmp_path / "src", f"a{i}"))
    reg.activate("shop", "v1")
    run = CliRunner().invoke
    res = run(app, ["adapters", "canary", "shop", "v2", "--share", "5%", "--min-samples", "30", "-w", str(ws)])
    assert res.exit_code == 0, res.output
    assert "canary v2 at 5% beside v1" in res.output and "5% -> 25% -> 50% -> 100%" in res.output
    exp = read_experiment(reg, "shop")
    assert exp.running and exp.rule["min_samples"] == 30
    res = run(app, ["adapters", "status", "-w", str(ws)])
    assert res.exit_code == 0 and "canary v2 vs v1 — running, share 5%" in res.output
    assert "candidate turns < min_samples 30" in res.output  # no turns yet: the rule holds
    res = run(app, ["adapters", "ab", "shop", "v1", "v2", "--days", "2", "-w", str(ws)])
    assert res.exit_code != 0 and "already runs an experiment" in str(res.exception or res.output)
    assert run(app, ["adapters", "stop", "shop", "-w", str(ws)]).exit_code == 0
    assert read_experiment(reg, "shop").state == "stopped"


def test_canary_and_ab_commands_share_their_options(tmp_path, capsys):
    """`adapters canary` and `adapters ab` read the same margin, force and workspace options."""
    from endcloud.cli import main

    ws = tmp_path / "ws"
    r = AdapterRegistry(ws / "adapters")
    for i in range(3):
        r.publish("shop", fake_adapter(tmp_path / "src", f"a{i}"))
    r.activate("shop", "v1")
    assert main(["adapters", "canary", "shop", "v2", "-w", str(ws), "--margin-takeover", "0.1",
                 "--margin-latency", "0.5"]) == 0
    rule = read_experiment(r, "shop").rule
    assert (rule["margin_takeover"], rule["margin_latency"]) == (0.1, 0.5)
    assert main(["adapters", "ab", "shop", "v1", "v3", "-w", str(ws), "--margin-takeover", "0.07"]) == 2  # one runs
    assert main(["adapters", "ab", "shop", "v1", "v3", "--workspace", str(ws), "--force", "--margin-takeover", "0.07"]) == 0
    exp = read_experiment(r, "shop")
    assert exp.policy == "ab" and exp.candidate == "v3"
    assert (exp.rule["margin_takeover"], exp.rule["margin_latency"]) == (0.07, 0.25)  # the default where not given
    assert "already runs" in capsys.readouterr().err
