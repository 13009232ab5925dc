"""`endcloud eval`, `endcloud matcher train`, `endcloud review ...` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endcloud.cli import main
from endcloud.store.review import ReviewStore


def test_eval_help_lists_the_flags(capsys):
    assert main(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--workspace", "--inputs", "--probes", "--model", "--teacher", "--human", "--out"):
        assert flag in out


def test_bad_model_spec_is_one_clear_line(tmp_path, capsys):
    assert main(["eval", "-w", str(tmp_path), "--probes", "paper", "--model", "lora", "-o", str(tmp_path / "o")]) == 2
    assert "NAME=BASE[:ADAPTER], got 'lora'" in capsys.readouterr().err


@pytest.mark.slow
def test_matcher_train_prints_r10_against_tfidf(tmp_path, capsys):
    from tests.scoring.conftest import make_pairs

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in make_pairs(80)), encoding="utf-8")
    assert main(["matcher", "train", "--pairs", str(pairs), "-o", str(tmp_path / "m"), "--epochs", "1", "--threads", "1",
                 "--test-frac", "0.2", "--lm-steps", "20"]) == 0
    out = capsys.readouterr().out
    assert "R10@1" in out and "TF-IDF" in out
    assert "language model: 20 steps" in out and (tmp_path / "m" / "lm" / "config.json").exists()
    assert json.loads((tmp_path / "m" / "matcher.json").read_text())["platt"]["a"] > 0


def test_review_export_import_labels(tmp_path, capsys):
    ws = tmp_path / "ws"
    store = ReviewStore(ws / "endcloud.db")
    iid = store.add_item(query="能换快递吗", end_reply="你好", cloud_reply="默认中通")
    store.verdict(iid, "edit", reviewer="lin", corrected_text="亲，默认中通快递哦")
    store.close()
    for kind in ("items", "verdicts"):
        assert main(["review", "export", str(tmp_path / f"{kind}.csv"), "--kind", kind, "-w", str(ws)]) == 0
        assert main(["review", "import", str(tmp_path / f"{kind}.csv"), "--kind", kind, "-w", str(tmp_path / "ws2")]) == 0
    assert "imported 1 new verdicts" in capsys.readouterr().out
    assert main(["review", "labels", "-o", str(tmp_path / "labels.jsonl"), "-w", str(tmp_path / "ws2")]) == 0
    [label] = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text(encoding="utf-8").splitlines()]
    assert label["label"] == "亲，默认中通快递哦" and label["teacher"] == "human:lin"
    assert main(["review", "export", str(tmp_path / "x.csv"), "--kind", "nope", "-w", str(ws)]) == 2


@pytest.mark.slow
def test_eval_cli_with_a_real_tiny_end_model_and_reference_teacher(tmp_path, tiny_base_dir, capsys):
    from endcloud.corpus.shopworld import generate_shop

    ws = tmp_path / "ws"
    generate_shop(ws / "shop", lang="en", sessions=20, products=8, seed=0)
    store = ReviewStore(ws / "endcloud.db")
    for pid, rating in (("p1", 2), ("p2", 4), ("p3", 1)):
        store.rate(pid, rating, rater="lin", model="original")
    store.close()
    out = tmp_path / "report"
    rc = main(["eval", "-w", str(ws), "--probes", "paper", "--model", f"original={tiny_base_dir}", "--model", f"again={tiny_base_dir}",
               "--similarity", "char-ngram-en", "--matching", "tfidf", "--max-new-tokens", "6", "--human", "store", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    assert s["models"] == ["original", "again"] and s["teacher"] == "reference" and s["n_inputs"] == 6
    assert s["human"]["n"] == 3 and s["human"]["unmatched"] == 0  # ratings from the review store
    assert s["n_inputs_with_facts"] >= 4 and s["fact_accuracy"]["cloud"] is not None  # the probes took the shop's facts
    # same base, same seed: the same replies, so the same scores
    assert s["averages"]["original"]["final"] == pytest.approx(s["averages"]["again"]["final"])
    # the reference teacher answers from the shop: its delivery answer names the courier
    rows = (out / "components.csv").read_text(encoding="utf-8")
    assert "ZTO" in rows or "courier" in rows.lower()
    assert (out / "scores.png").stat().st_size > 1000


def test_model_specs_parse_and_expand_checkpoints(tmp_path):
    from endcloud.cli.scoring import expand_versions, parse_model_spec
    from endcloud.errors import ConfigError

    assert parse_model_spec("lora=/b:/a/v1") == ("lora", Path("/b"), Path("/a/v1"))
    assert parse_model_spec("original=/b") == ("original", Path("/b"), None)
    assert parse_model_spec("lora=:/a", base_default=Path("/ws/base")) == ("lora", Path("/ws/base"), Path("/a"))
    with pytest.raises(ConfigError, match="empty NAME"):
        parse_model_spec("=/b")
    for v in ("v1", "v10", "v2"):
        (tmp_path / "lora" / v).mkdir(parents=True)
    (tmp_path / "lora" / "active").write_text("v2\n")
    got = expand_versions("lora", Path("/b"), tmp_path / "lora")
    assert [n for n, _, _ in got] == ["lora@v1", "lora@v2", "lora@v10"] and got[2][2] == tmp_path / "lora" / "v10"
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "adapter_config.json").write_text("{}")
    assert expand_versions("x", Path("/b"), tmp_path / "one") == [("x", Path("/b"), tmp_path / "one")]
