"""Issue 22: the matcher reads any chat log the way `corpus prepare` does, epochs are epochs,
and response selection is scored R10@1/2/5 against TF-IDF and chance."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest

from endcloud.cli import main
from endcloud.corpus import log_pairs, prepare
from endcloud.scoring import TfidfMatcher, recall_at_k, train_matcher
from endcloud.scoring.matcher_train import ecd_recall, load_matcher_pairs, read_ecd
from tests.scoring.conftest import make_pairs

CJK_SPACE_CJK = re.compile(r"[\u4e00-\u9fff] [\u4e00-\u9fff]")


def _segment(text: str) -> str:
    """Write a text as ECD does: Chinese word-segmented with spaces (here: per character;
    a run of digits or latin letters stays one word)."""
    return " ".join(re.findall(r"[\u4e00-\u9fff]|[^\u4e00-\u9fff\s]+", text))


def _ecd_train(path: Path, n_sessions: int = 120) -> Path:
    """An ECD training file (no extension, as published) made from the synthetic zh pairs."""
    rows = [r for r in make_pairs(n_sessions) if r["lang"] == "zh"]
    lines = []
    for i, r in enumerate(rows):
        neg = rows[(i + 7) % len(rows)]["response"]
        ctx = [_segment(r["query"])]
        lines.append("\t".join(["1", *ctx, _segment(r["response"])]))
        lines.append("\t".join(["0", *ctx, _segment(neg)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_an_ecd_file_without_extension_is_read_like_corpus_prepare_reads_it(tmp_path: Path):
    ecd = _ecd_train(tmp_path / "ecd_train")
    rows = load_matcher_pairs(ecd)  # was: "not valid JSON" (only .txt was taken for ECD)
    assert rows and not any(CJK_SPACE_CJK.search(r["query"] + r["response"]) for r in rows)
    out = tmp_path / "corpus"
    prepare([ecd], out, workers=1, eval_fraction=0.0)
    prepared = load_matcher_pairs(out / "pairs.jsonl")
    assert [(r["query"], r["response"], r["session"]) for r in rows] == [(r["query"], r["response"], r["session"]) for r in prepared]


def test_the_same_data_gives_the_same_matcher(tmp_path: Path):
    ecd = _ecd_train(tmp_path / "ecd_train")
    prepare([ecd], tmp_path / "corpus", workers=1, eval_fraction=0.0)
    kw = dict(epochs=2, dim=16, n_features=2**12, threads=1, test_frac=0.2)
    a = train_matcher(ecd, tmp_path / "a", **kw)
    b = train_matcher(tmp_path / "corpus" / "pairs.jsonl", tmp_path / "b", **kw)
    assert a.r10_at_1 == b.r10_at_1 and a.n_train == b.n_train and a.recall == b.recall
    wa = (tmp_path / "a" / "matcher.safetensors").read_bytes()
    assert wa == (tmp_path / "b" / "matcher.safetensors").read_bytes()


def test_pairs_in_any_order_give_the_same_matcher(tmp_path: Path):
    ecd = _ecd_train(tmp_path / "ecd_train", 60)
    pairs = log_pairs([ecd])
    kw = dict(epochs=1, dim=16, n_features=2**12, threads=1, test_frac=0.2)
    a = train_matcher(pairs, tmp_path / "a", **kw)
    b = train_matcher(list(reversed(pairs)), tmp_path / "b", **kw)
    assert (tmp_path / "a" / "matcher.safetensors").read_bytes() == (tmp_path / "b" / "matcher.safetensors").read_bytes()
    assert a.recall == b.recall


def test_epochs_are_epochs_and_a_time_limit_is_explicit_and_reported(tmp_path: Path):
    assert inspect.signature(train_matcher).parameters["time_budget_s"].default is None
    rows = make_pairs(60)
    r = train_matcher(rows, tmp_path / "m", epochs=3, dim=16, n_features=2**12, threads=1, test_frac=0.2)
    assert r.epochs == r.epochs_requested == 3 and not r.stopped_early
    cut = train_matcher(rows, tmp_path / "m2", epochs=3, dim=16, n_features=2**12, threads=1, test_frac=0.2, time_budget_s=0.0)
    assert cut.epochs == 1 and cut.stopped_early
    assert json.loads((tmp_path / "m2" / "report.json").read_text())["stopped_early"] is True


def test_recall_at_k_shares_ties_and_gives_chance_to_a_constant():
    s = np.array([[0.9, 0.1, 0.2, 0.0], [0.1, 0.5, 0.2, 0.0], [0.3, 0.5, 0.2, 0.0]])
    assert recall_at_k(s, 1) == pytest.approx(1 / 3)
    assert recall_at_k(s, 2) == pytest.approx(2 / 3)
    assert recall_at_k(s, 4) == pytest.approx(1.0)
    const = np.ones((5, 10))
    assert [recall_at_k(const, k) for k in (1, 2, 5)] == pytest.approx([0.1, 0.2, 0.5])


def _ecd_test(path: Path, groups: int = 30) -> Path:
    """An ECD *test*-format file: 10 candidates per context, the true one first or not."""
    rows = list({r["query"]: r for r in make_pairs(200) if r["lang"] == "zh"}.values())  # one group per query
    lines = []
    for g in range(groups):
        r = rows[g]
        others = [x["response"] for x in rows[g + 1:] + rows[:g] if x["response"] != r["response"]]
        cands = [(1, r["response"])] + [(0, others[(g * 13 + k * 7) % len(others)]) for k in range(9)]
        cands = cands[g % 10:] + cands[:g % 10]
        lines += ["\t".join([str(lab), _segment(r["query"]), _segment(c)]) for lab, c in cands]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class _Oracle(TfidfMatcher):
    """Scores the true reply of each query 1: knows the answer."""

    def __init__(self, truth: dict[str, str]):
        self.truth = truth

    def score(self, a, b):
        return np.array([1.0 if self.truth.get(q) == r else 0.0 for q, r in zip(a, b)])


def test_ecd_recall_at_1_2_5_on_a_test_file(tmp_path: Path):
    path = _ecd_test(tmp_path / "ecd_test")
    groups = read_ecd(path)
    assert len(groups) == 30 and all(len(g["candidates"]) == 10 for g in groups)
    assert not any(CJK_SPACE_CJK.search(c) for g in groups for c in g["candidates"])  # normalised like the pairs
    truth = {g["query"]: g["candidates"][g["labels"].index(1)] for g in groups}
    best = ecd_recall(_Oracle(truth), path)
    assert best["r_at_1"] == 1.0 and best["candidates"] == 10
    assert [best[f"chance_r_at_{k}"] for k in (1, 2, 5)] == pytest.approx([0.1, 0.2, 0.5])
    tf = ecd_recall(TfidfMatcher(), groups)
    assert 0.0 <= tf["r_at_1"] <= tf["r_at_2"] <= tf["r_at_5"] <= 1.0


def test_matcher_eval_command_prints_r_at_k_against_tfidf_and_chance(tmp_path: Path, capsys):
    path = _ecd_test(tmp_path / "ecd_test")
    assert main(["matcher", "eval", "--ecd", str(path)]) == 0
    out = capsys.readouterr().out
    assert "30 contexts, 10 candidates each" in out
    assert re.search(r"chance\s+0\.100\s+0\.200\s+0\.500", out) and re.search(r"tfidf\s+\d\.\d{3}", out)


@pytest.mark.realdata
def test_real_ecd_sample_is_read_without_an_extension_and_normalised(shared_data: Path, tmp_path: Path):
    src = shared_data / "ecd" / "ecd_train_sample.txt"
    copy = tmp_path / "ecd_train"  # the official files' name: no extension
    copy.write_bytes(src.read_bytes())
    rows = load_matcher_pairs(copy)
    assert len(rows) == len(log_pairs([src])) > 77
    assert not any(CJK_SPACE_CJK.search(r["query"] + r["response"]) for r in rows)
    groups = read_ecd(copy)
    assert not any(CJK_SPACE_CJK.search(c) for g in groups for c in g["candidates"])
