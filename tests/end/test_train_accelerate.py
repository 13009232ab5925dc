"""Data-parallel training through accelerate: one process reproduces the plain loop, and
`torchrun` with two CPU processes trains one adapter written by the main process only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from endcloud.end.train import train
from endcloud.records import Pair, Turn

FAST = {"lr": 1e-2, "batch_size": 4, "progress": False, "r": 4}


@pytest.fixture()
def fresh_accelerate_state():
    """accelerate keeps its state in process-wide singletons; give each test a clean one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_one_process_accelerator_reproduces_the_plain_loop(tmp_path, train_base_dir, train_examples, train_threads,
                                                          fresh_accelerate_state):
    from accelerate import Accelerator

    plain = train(train_base_dir, train_examples, tmp_path / "plain", method="lora", steps=6, **FAST)
    acc = train(train_base_dir, train_examples, tmp_path / "acc", method="lora", steps=6,
                accelerator=Accelerator(cpu=True), **FAST)
    assert plain.losses == pytest.approx(acc.losses, abs=1e-5)
    assert sum(plain.losses[-3:]) < sum(plain.losses[:3])  # per-batch losses are noisy: compare thirds
    rec = json.loads((tmp_path / "acc" / "training.json").read_text())
    assert rec["processes"] == 1 and rec["steps"] == 6
    assert (tmp_path / "acc" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_adapter(tmp_path, train_base_dir, train_examples):
    pairs = tmp_path / "pairs.jsonl"
    rows = [Pair(id=e.id, source="t", session=e.id, lang="zh", context=[Turn("user", "你好")] if i % 2 else [],
                 query=e.messages[-1]["content"], response=e.response).to_json() for i, e in enumerate(train_examples)]
    pairs.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "adapter"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "endcloud", "train", "--base", str(train_base_dir), "--pairs", str(pairs), "-o", str(out),
           "--steps", "8", "--batch-size", "4", "--lr", "1e-2", "--lora-r", "4", "--threads", "1", "-q",
           "--eval-fraction", "0.2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    # the main process alone reports, publishes and writes
    assert done.stdout.count("lora adapter saved to") == 1, done.stdout
    rec = json.loads((out / "training.json").read_text())
    assert rec["processes"] == 2 and rec["steps"] == 8 and rec["config"]["tuner"]["r"] == 4 and len(rec["metrics"]["loss_curve"]) > 0
    assert not (out / "checkpoints").exists()

    # the adapter trained: its LoRA B matrices (zero at init) moved
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    b = [t for k, t in weights.items() if "lora_B" in k]
    assert b and max(float(t.abs().max()) for t in b) > 0
    assert torch.isfinite(torch.tensor(rec["metrics"]["eval_loss"]))
