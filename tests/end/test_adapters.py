"""The adapter registry: publish -> candidate, atomic activate, rollback, no half versions."""

from __future__ import annotations

import json
import os

import pytest

from endcloud.end.adapters import AdapterRegistry
from endcloud.errors import ConfigError, ModelError


def _fake_adapter(tmp_path, name="src", **record):
    """A folder shaped like a peft adapter + training record (the registry only copies files)."""
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (d / "adapter_model.safetensors").write_bytes(os.urandom(64))
    (d / "training.json").write_text(json.dumps({"method": "lora", "data": {"train_hash": "abc"},
                                                 "metrics": {"eval_loss": 1.5, "loss_curve": [[1, 2.0]]}, **record}))
    (d / "checkpoints").mkdir()  # training leftovers are not published
    (d / "checkpoints" / "junk").write_text("x")
    return d


def test_publish_activate_rollback(tmp_path):
    reg = AdapterRegistry(tmp_path / "adapters")
    src = _fake_adapter(tmp_path)
    assert reg.publish("shop", src, manifest={"base": "/b"}) == "v1"
    assert reg.active("shop") is None  # publishing never activates
    m = reg.manifest("shop", "v1")
    assert m["version"] == "v1" and m["method"] == "lora" and m["data_hash"] == "abc" and m["base"] == "/b"
    assert m["metrics"] == {"eval_loss": 1.5} and m["status"] == "candidate" and m["created_at"]
    assert not (reg.path("shop", 1) / "checkpoints").exists()
    assert (reg.path("shop", 1) / "adapter_model.safetensors").read_bytes() == (src / "adapter_model.safetensors").read_bytes()

    reg.activate("shop", "v1")
    assert reg.publish("shop", src, manifest={}, parent="v1") == "v2"
    assert reg.publish("shop", src, manifest={}, parent=2) == "v3"
    reg.activate("shop", 2)
    reg.activate("shop", "v3")
    assert reg.active("shop") == reg.path("shop", "v3")
    assert (tmp_path / "adapters" / "shop" / "active").read_text().strip() == "v3"
    rows = {r["version"]: r for r in reg.list("shop")}
    assert rows["v3"]["status"] == "active" and rows["v2"]["parent"] == "v1" and rows["v1"]["status"] == "candidate"

    assert reg.rollback("shop") == "v2"
    assert reg.active("shop").name == "v2"
    assert reg.manifest("shop", "v3")["status"] == "rolled_back"
    assert reg.rollback("shop") == "v1"  # repeated rollbacks walk further back
    with pytest.raises(ModelError, match="no earlier"):
        reg.rollback("shop")
    hist = [json.loads(x) for x in (tmp_path / "adapters" / "shop" / "history.jsonl").read_text().splitlines()]
    assert [h["action"] for h in hist] == ["activate"] * 3 + ["rollback"] * 2


def test_mark_and_rejected_needs_force(tmp_path):
    reg = AdapterRegistry(tmp_path)
    reg.publish("s", _fake_adapter(tmp_path), manifest={})
    m = reg.mark("s", "v1", "rejected", gate_loss=2.5)
    assert m["status"] == "rejected" and m["metrics"]["gate_loss"] == 2.5 and m["metrics"]["eval_loss"] == 1.5
    with pytest.raises(ModelError, match="rejected"):
        reg.activate("s", "v1")
    reg.activate("s", "v1", force=True)
    with pytest.raises(ConfigError):
        reg.mark("s", "v1", "active")


def test_crashed_publish_leaves_no_version(tmp_path):
    reg = AdapterRegistry(tmp_path / "adapters")
    src = _fake_adapter(tmp_path)
    reg.publish("s", src, manifest={})
    reg.activate("s", "v1")
    bad = _fake_adapter(tmp_path, "bad")
    os.symlink(tmp_path / "missing-target", bad / "dangling")  # copying it fails half-way
    with pytest.raises(Exception):
        reg.publish("s", bad, manifest={})
    assert reg.versions("s") == ["v1"] and reg.active("s").name == "v1"
    assert not [p for p in (tmp_path / "adapters" / "s").iterdir() if p.name.startswith(".tmp-")]


def test_half_written_versions_are_never_activatable(tmp_path):
    reg = AdapterRegistry(tmp_path / "adapters")
    reg.publish("s", _fake_adapter(tmp_path), manifest={})
    d = tmp_path / "adapters" / "s"
    (d / ".tmp-killed").mkdir()  # a publisher killed before its rename
    (d / ".tmp-killed" / "adapter_config.json").write_text("{}")
    (d / "v2").mkdir()  # a version copied by hand without a manifest
    (d / "v2" / "adapter_config.json").write_text("{}")
    rows = {r["version"]: r["status"] for r in reg.list("s")}
    assert rows == {"v1": "candidate", "v2": "incomplete"}
    with pytest.raises(ModelError, match="no complete version"):
        reg.activate("s", "v2")
    (d / "active").write_text("v2\n")  # a pointer at a half version reads as nothing active
    assert reg.active("s") is None
    assert reg.publish("s", _fake_adapter(tmp_path, "again"), manifest={}) == "v3"


def test_bad_names_and_sources(tmp_path):
    reg = AdapterRegistry(tmp_path)
    with pytest.raises(ConfigError, match="'../x'"):
        reg.publish("../x", tmp_path, manifest={})
    with pytest.raises(ModelError, match="adapter_config.json"):
        reg.publish("s", tmp_path, manifest={})
    with pytest.raises(ConfigError, match="'latest'"):
        reg.activate("s", "latest")
    assert reg.list() == []
