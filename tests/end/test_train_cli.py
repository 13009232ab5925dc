"""The end room's CLI: `endcloud pretrain`, `endcloud train`, `endcloud adapters`."""

from __future__ import annotations

import json

import pytest

from endcloud.cli import main
from endcloud.records import Pair, Turn


@pytest.fixture()
def train_pairs_file(tmp_path, train_examples):
    p = tmp_path / "pairs.jsonl"
    rows = [Pair(id=e.id, source="t", session=e.id, lang="zh", context=[Turn("user", "你好")] if i % 2 else [],
                 query=e.messages[-1]["content"], response=e.response).to_json() for i, e in enumerate(train_examples)]
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return p


def test_help_lists_flags(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--method", "--mix", "--virtual-tokens", "--max-input-len", "--publish", "--r", "--alpha"):
        assert flag in out
    assert main(["adapters", "--help"]) == 0 and "rollback" in capsys.readouterr().out
    assert main(["pretrain", "--help"]) == 0 and "--vocab-size" in capsys.readouterr().out


def test_bad_inputs_are_one_line_errors(tmp_path, train_pairs_file, capsys):
    assert main(["train", "--base", str(tmp_path), "--pairs", str(train_pairs_file), "-m", "ptuning", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'ptuning'" in err and "lora, prefix, ptuning-v2" in err and "Traceback" not in err
    assert main(["train", "--base", str(tmp_path / "nobase"), "--pairs", str(train_pairs_file), "-o", str(tmp_path / "o")]) == 2
    assert "nobase" in capsys.readouterr().err
    assert main(["adapters", "rollback", "shop", "-w", str(tmp_path)]) == 2
    assert "no earlier" in capsys.readouterr().err


@pytest.mark.slow
def test_train_publish_activate_rollback(tmp_path, train_base_dir, train_pairs_file, capsys, train_threads):
    ws = tmp_path / "ws"
    common = ["--base", str(train_base_dir), "--pairs", str(train_pairs_file), "--steps", "4", "--batch-size", "4",
              "--lr", "1e-2", "-q", "-w", str(ws), "--publish", "shop", "--eval-fraction", "0.2"]
    assert main(["train", *common, "-m", "lora", "-o", str(tmp_path / "a"), "--r", "4", "--activate"]) == 0
    out = capsys.readouterr().out
    assert "published shop v1" in out and "activated shop v1" in out
    rec = json.loads((tmp_path / "a" / "training.json").read_text())
    assert rec["config"]["tuner"]["r"] == 4 and rec["config"]["lr"] == 1e-2 and rec["data"]["eval_examples"] > 0

    v1 = ws / "adapters" / "shop" / "v1"
    assert main(["train", *common, "-o", str(tmp_path / "b"), "--init-adapter", str(v1)]) == 0
    assert "published shop v2" in capsys.readouterr().out
    assert main(["adapters", "list", "-w", str(ws), "--json"]) == 0
    rows = {r["version"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["v1"]["status"] == "active" and rows["v2"]["status"] == "candidate" and rows["v2"]["parent"] == "v1"
    assert rows["v2"]["method"] == "lora" and rows["v2"]["metrics"]["eval_loss"] > 0

    assert main(["adapters", "activate", "shop", "v2", "-w", str(ws)]) == 0
    assert main(["adapters", "rollback", "shop", "-w", str(ws)]) == 0
    assert "active -> v1" in capsys.readouterr().out
    assert (ws / "adapters" / "shop" / "active").read_text().strip() == "v1"
    assert main(["adapters", "list", "-w", str(ws)]) == 0
    assert "rolled_back" in capsys.readouterr().out


@pytest.mark.slow
def test_pretrain_cli_writes_a_base(tmp_path, train_pairs_file, capsys, train_threads):
    out = tmp_path / "base"
    args = ["pretrain", str(train_pairs_file), str(train_pairs_file), "-o", str(out), "--vocab-size", "400",
            "--hidden", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--intermediate", "64",
            "--seq-len", "32", "--batch-size", "4", "--steps", "5", "--eval-fraction", "0.3", "-q"]
    assert main(args) == 0
    assert "held-out loss" in capsys.readouterr().out
    assert (out / "config.json").exists() and (out / "pretrain.json").exists() and (out / "tokenizer.json").exists()
