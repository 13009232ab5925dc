"""What a killed loop leaves behind is cleaned at the next start, and nothing a live writer is
using is touched: publish temp folders and atomic-write temp files under adapters/, and
evolve rounds left "running" in the database by a process that is gone (kill -9, for real)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from endcloud.config import Workspace
from endcloud.end.adapters import AdapterRegistry
from endcloud.evolve import EvolveSettings, Evolver
from endcloud.evolve.service import clean_leftovers
from endcloud.store.labels import LabelStore

from .conftest import DictTeacher, serve_turn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _adapter(tmp_path, name="src"):
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (d / "adapter_model.safetensors").write_bytes(os.urandom(64))
    return d


def _run_then_kill(code: str, ready: callable, timeout: float = 30.0) -> int:
    """Run `code` in a fresh python, wait until `ready()`, kill -9 it; return its (now dead) pid."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the writer ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "the writer never got to where it is killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.pid


def _age(path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_a_publish_killed_mid_copy_leaves_a_temp_folder_the_next_start_removes(tmp_path):
    root = tmp_path / "adapters"
    reg = AdapterRegistry(root)
    reg.publish("shop", _adapter(tmp_path), manifest={})
    src = _adapter(tmp_path, "next")
    # The writer stops at the worst moment, its temp complete and the rename not done (its rename
    # waits there, in its own process), and is killed -9 there.
    pid = _run_then_kill(f"""
        import os, time
        from endcloud.end.adapters import AdapterRegistry
        os.rename = lambda *a: time.sleep(60)
        AdapterRegistry({str(root)!r}).publish("shop", {str(src)!r}, manifest={{}})
    """, ready=lambda: any((p / "manifest.json").exists() for p in (root / "shop").glob(".tmp-*")))
    left = [p for p in (root / "shop").iterdir() if p.name.startswith(".tmp-")]
    assert [p.name.split("-")[1] for p in left] == [str(pid)]  # named by its writer, who is dead
    assert [r["version"] for r in reg.list("shop")] == ["v1"]  # never listed

    assert reg.clean_leftovers() == left
    assert not any(p.name.startswith(".tmp-") for p in (root / "shop").iterdir())
    assert reg.publish("shop", src, manifest={}) == "v2"


def test_only_stale_temps_go_and_a_live_writer_s_stay(tmp_path):
    reg = AdapterRegistry(tmp_path / "adapters")
    reg.publish("shop", _adapter(tmp_path), manifest={})
    d = tmp_path / "adapters" / "shop"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = [d / f".tmp-{live.pid}-inflight", d / ".tmp-fresh", d / ".active.fresh.tmp"]
        go = [d / f".tmp-{_dead_pid()}-killed", d / ".tmp-old", d / ".active.old.tmp", d / "v1" / ".manifest.json.x.tmp"]
        for p in keep + go:
            if p.name.endswith(".tmp"):
                p.write_text("v9\n")
            else:
                p.mkdir()
                (p / "adapter_config.json").write_text("{}")
        for p in (d / ".tmp-old", d / ".active.old.tmp", d / "v1" / ".manifest.json.x.tmp"):
            _age(p, 120)  # no writer named: older than a minute is a leftover
        _age(d / f".tmp-{live.pid}-inflight", 3600)  # a slow live writer: its pid says it is alive
        removed = reg.clean_leftovers("shop")
    finally:
        live.kill()
        live.wait()
    assert sorted(removed) == sorted(go)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in go)
    assert reg.active_version("shop") is None and reg.activate("shop", "v1")  # the registry is whole


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_round_killed_mid_way_is_marked_failed_interrupted_at_start(tmp_path):
    db = tmp_path / "endcloud.db"
    labels = LabelStore(db)
    pid = _run_then_kill(f"""
        import time
        from endcloud.store.labels import LabelStore
        LabelStore({str(db)!r}).start_round(3, "v1")   # what a round writes first
        time.sleep(60)                                  # ... training, when kill -9 comes
    """, ready=lambda: bool(labels.rounds()))
    mine = labels.start_round(2, "v1")  # a round this live process runs: not interrupted
    labels.conn.execute("INSERT INTO evolve_rounds(id, started_at, labels) VALUES ('round-legacy', ?, 1)",
                        (time.time(),))  # written before rounds named their process
    killed = next(r["id"] for r in labels.rounds() if r["detail"].get("owner", {}).get("pid") == pid)
    assert {r["status"] for r in labels.rounds()} == {"running"}

    ws = Workspace.resolve(tmp_path)
    (ws.root / "evolve" / "rounds" / killed).mkdir(parents=True)  # its half-trained adapter
    out = clean_leftovers(ws, labels)
    assert sorted(out["rounds"]) == sorted([killed, "round-legacy"])
    by_id = {r["id"]: r for r in labels.rounds()}
    for rid in (killed, "round-legacy"):
        r = by_id[rid]
        assert r["status"] == "failed" and r["detail"]["reason"] == "interrupted"
        assert r["finished_at"] is not None and r["promoted"] is False
    assert by_id[mine]["status"] == "running"
    assert not (ws.root / "evolve" / "rounds" / killed).exists()
    assert clean_leftovers(ws, labels)["rounds"] == []  # idempotent


def test_a_round_whose_training_raises_is_failed_not_left_running(stores, tmp_path):
    conv, labels = stores
    serve_turn(conv, customer="c1", query="能选快递吗", end_text="你好", scores={"final": 0.1})

    def runner(spec):
        raise OSError("no space left on device")

    ev = Evolver(conversations=conv, labels=labels, teacher=DictTeacher({}), registry=AdapterRegistry(tmp_path / "a"),
                 base_dir=tmp_path, adapter_name="shop", heldout=[], settings=EvolveSettings(min_labels=1),
                 runner=runner, work_dir=tmp_path / "rounds")
    with pytest.raises(OSError):
        ev.tick()
    [r] = labels.rounds()
    assert r["status"] == "failed" and "no space left" in r["detail"]["reason"]
    assert labels.counts()["pending"] == 1  # its lessons wait for the next round
