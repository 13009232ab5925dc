"""Adapter folders as arrays, what SHARING federates, and what the WireGuard lets out."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install --no-deps -r requirements-federate.txt")

from endcloud.errors import ModelError, PrivacyError
from endcloud.federate.client import WireGuard
from endcloud.federate.weights import SHARING, Template, read_tensors, write_adapter


def test_template_orders_by_name_and_sharing_keeps_personal_parts_home(fake_adapter):
    full = Template.of(fake_adapter, "all")
    a_only = Template.of(fake_adapter, "lora_A")
    assert list(full.names) == sorted(full.names) and len(full.names) == 4
    assert all(".lora_A." in n for n in a_only.names) and len(a_only.names) == 2
    assert a_only.size < full.size
    with pytest.raises(Exception, match="valid"):
        SHARING.get("lora_C")


def test_write_adapter_replaces_only_the_federated_tensors(fake_adapter, tmp_path):
    t = Template.of(fake_adapter, "lora_A")
    before = read_tensors(fake_adapter)
    new = [np.full(s, 7.0, np.float32) for s in t.shapes]
    out = write_adapter(fake_adapter, t.named(new), tmp_path / "out")
    after = read_tensors(out)
    for name in before:
        if name in t.names:
            assert np.all(after[name] == 7.0)
        else:  # the personal B matrices are the shop's own, untouched
            assert np.array_equal(after[name], before[name])
    assert (out / "adapter_config.json").exists()


@pytest.mark.parametrize("bad", ["token ids", "wrong shape", "nan", "too few"])
def test_template_refuses_anything_but_its_float_tensors(fake_adapter, bad):
    t = Template.of(fake_adapter)
    arrays = [np.zeros(s, np.float32) for s in t.shapes]
    if bad == "token ids":
        arrays[0] = np.arange(np.prod(t.shapes[0]), dtype=np.int64).reshape(t.shapes[0])
    elif bad == "wrong shape":
        arrays[1] = np.zeros((3, 3), np.float32)
    elif bad == "nan":
        arrays[2][0, 0] = np.nan
    else:
        arrays = arrays[:-1]
    with pytest.raises(ModelError):
        t.check(arrays)


def test_wire_guard_lets_out_tensors_and_numbers_only(fake_adapter, tmp_path):
    t = Template.of(fake_adapter)
    guard = WireGuard(tmp_path / "audit.jsonl")
    arrays = [np.ones(s, np.float32) for s in t.shapes]
    guard.check("fit", t, arrays, {"node": "shop-a", "loss": 1.5, "steps": 3}, 1)
    with pytest.raises(PrivacyError, match="query"):
        guard.check("fit", t, arrays, {"query": "where is my order 123-4567?"}, 1)
    with pytest.raises(PrivacyError, match="number"):
        guard.check("fit", t, arrays, {"loss": "the customer said ..."}, 1)
    with pytest.raises(PrivacyError, match="label"):
        guard.check("fit", t, arrays, {"node": "x" * 200}, 1)
    rows = (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 and '"bytes": %d' % sum(a.nbytes for a in arrays) in rows[0]  # only what passed


def test_init_adapter_starts_as_the_base_model(tiny_base_dir, tmp_path):
    from endcloud.federate.weights import init_adapter

    out = init_adapter(tiny_base_dir, tmp_path / "init", r=2)
    tensors = read_tensors(out)
    b = [v for k, v in tensors.items() if ".lora_B." in k]
    a = [v for k, v in tensors.items() if ".lora_A." in k]
    assert b and all(np.all(x == 0) for x in b) and any(np.any(x != 0) for x in a)
    assert not any("embed" in k or "lm_head" in k for k in tensors)  # no embedding is ever federated


def test_flower_is_imported_in_one_place_with_its_telemetry_off():
    import endcloud
    from endcloud.federate import _flower

    assert not _flower.telemetry_enabled()
    root = Path(endcloud.__file__).parent
    importers = set()
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            if any(n.split(".")[0] in ("flwr", "grpc") for n in names):
                importers.add(path.relative_to(root).as_posix())
    assert importers == {"federate/_flower.py"}
