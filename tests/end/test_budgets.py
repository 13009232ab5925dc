"""Issue 22: budgets that mean what they say. A time limit is a visible flag, bounds the whole
command (not only its training loop) and says when it stopped early; without one, every step runs."""

from __future__ import annotations

import json
import time

import pytest

from endcloud.cli import main
from endcloud.end.pretrain import pretrain
from endcloud.errors import ConfigError
from tests.conftest import FIXTURE_TEXT

TINY = dict(vocab_size=300, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, seq_len=32, batch_size=2)
# distinct documents: the held-out split is by a document's hash
DOCS = [f"{t} ({i})" for i, t in enumerate(FIXTURE_TEXT)] + [
    [{"role": "user", "content": f"在吗 {i}"}, {"role": "assistant", "content": f"在的亲 {i}"}] for i in range(20)]


def test_help_shows_the_time_budget_flags(capsys):
    for cmd in ("pretrain", "train"):
        assert main([cmd, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.replace("│", " ").split())  # rich draws the help in a box
        assert "--max-minutes" in out and "whole command" in out and "stops early" in out


@pytest.mark.usefixtures("few_threads")
def test_pretrain_budget_bounds_the_whole_call_and_says_it_stopped(tmp_path):
    import transformers.models.qwen2.modeling_qwen2  # noqa: F401  (imports alone took 97 s on a crowded machine)

    budget = 6.0
    started = time.monotonic()
    r = pretrain(DOCS, tmp_path / "base", progress=False, steps=1_000_000, max_seconds=budget, started_at=started, **TINY)
    elapsed = time.monotonic() - started
    assert r.stopped_early and 1 <= r.steps < r.steps_planned == 1_000_000
    assert elapsed < budget + 60  # the whole call, saving included (the million steps would take hours)
    rec = json.loads((tmp_path / "base" / "pretrain.json").read_text())
    assert rec["stopped_early"] is True and rec["steps"] == r.steps and rec["steps_planned"] == 1_000_000
    assert (tmp_path / "base" / "config.json").exists()


@pytest.mark.usefixtures("few_threads")
def test_pretrain_without_a_budget_runs_every_step(tmp_path):
    r = pretrain(DOCS, tmp_path / "base", progress=False, steps=3, **TINY)
    assert r.steps == 3 and not r.stopped_early
    with pytest.raises(ConfigError, match="--max-minutes"):
        pretrain(DOCS, tmp_path / "b2", progress=False, steps=3, max_seconds=0.0, **TINY)


@pytest.mark.usefixtures("few_threads")
def test_pretrain_command_reports_stopping_early(tmp_path, capsys):
    docs = tmp_path / "chats.jsonl"
    docs.write_text("".join(json.dumps({"messages": d} if isinstance(d, list) else {"text": d}, ensure_ascii=False) + "\n"
                            for d in DOCS), encoding="utf-8")
    args = ["pretrain", str(docs), "-o", str(tmp_path / "base"), "--steps", "1000000", "--max-minutes", "0.15", "-q"]
    args += [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "stopped early:" in out and "of 1000000 steps, to end within --max-minutes 0.15" in out


@pytest.mark.usefixtures("few_threads")
def test_train_deadline_stops_saves_and_says_so(tmp_path, tiny_base_dir, train_examples):
    from endcloud.end.train import train

    res = train(tiny_base_dir, train_examples, tmp_path / "lora", method="lora", steps=1_000_000, lr=1e-3, batch_size=2,
                progress=False, resume=False, deadline=time.monotonic() + 5.0, save_every=10**9)
    assert res.stopped_early and 1 <= res.steps < 1_000_000
    assert (tmp_path / "lora" / "adapter_config.json").exists()
    rec = json.loads((tmp_path / "lora" / "training.json").read_text())
    assert rec["stopped_early"] is True and rec["steps"] == res.steps and rec["steps_planned"] == 1_000_000
    done = train(tiny_base_dir, train_examples, tmp_path / "lora2", method="lora", steps=2, lr=1e-3, batch_size=2,
                 progress=False, resume=False)
    assert done.steps == 2 and not done.stopped_early
