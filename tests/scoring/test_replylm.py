"""The matcher's language model (`endcloud.scoring.replylm`): trained beside the encoder with
`lm_steps`, saved in the matcher's folder, weighed by the calibration, and learning what follows what."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from endcloud.errors import ConfigError, ModelError
from endcloud.scoring import TrainedMatcher, load_matching, train_matcher
from endcloud.scoring.replylm import LM_DIR, SIGNALS, ReplyLM
from tests.scoring.conftest import make_pairs

KW = dict(epochs=1, dim=16, n_features=2**12, threads=1, test_frac=0.2)


@pytest.fixture(scope="module")
def lm_matcher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm-matcher") / "m"
    train_matcher(make_pairs(200), out, lm_steps=150, **KW)
    return out


def _held_out_contrast(seed: int = 7):
    """Queries of sessions no training saw, each with its own reply and another intent's reply."""
    held = make_pairs(40, seed=seed)
    rng = random.Random(0)
    q, good, bad = [], [], []
    for r in held:
        other = rng.choice([x for x in held if x["intent"] != r["intent"] and x["lang"] == r["lang"]])
        q.append(r["query"])
        good.append(r["response"])
        bad.append(other["response"])
    return q, good, bad


@pytest.mark.slow
def test_the_language_model_is_saved_weighed_and_reloaded(lm_matcher: Path):
    cfg = json.loads((lm_matcher / "matcher.json").read_text())
    assert cfg["lm"]["dir"] == LM_DIR and cfg["lm"]["steps"] == 150
    assert (lm_matcher / LM_DIR / "config.json").exists()
    assert set(SIGNALS) <= set(cfg["combine"])  # the calibration weighed all six signals
    report = json.loads((lm_matcher / "report.json").read_text())
    assert report["extra"]["lm"]["steps"] == 150
    m = TrainedMatcher.load(lm_matcher)
    assert load_matching(str(lm_matcher)).lm is not None  # as `endcloud eval -m DIR` and serving load it
    q, good, bad = _held_out_contrast()
    assert m.signals(q, good).shape == (len(q), 3 + len(SIGNALS))
    p = m.score(q, good)
    assert p.shape == (len(q),) and np.all((p >= 0) & (p <= 1))
    # the same language model as trained: its signals are a function of the saved folder
    again = ReplyLM.load(lm_matcher / LM_DIR).signals(q[:5], good[:5])
    np.testing.assert_allclose(m.signals(q[:5], good[:5])[:, 3:], again, rtol=1e-5)


@pytest.mark.slow
def test_the_language_model_learned_which_reply_follows_which_query(lm_matcher: Path, tmp_path: Path):
    """Held-out sessions: log p(r | q) − log p(r) prefers the query's own reply to another
    intent's far more often than an untrained model of the same shape does (about half)."""
    from endcloud.scoring.replylm import train_reply_lm

    q, good, bad = _held_out_contrast()
    pmi = lambda s: s[:, 0] - s[:, 1]  # noqa: E731

    def wins(lm: ReplyLM) -> float:
        return float((pmi(lm.signals(q, good)) > pmi(lm.signals(q, bad))).mean())

    rows = make_pairs(200)
    train_reply_lm([r["query"] for r in rows], [r["response"] for r in rows], tmp_path / "lm1", steps=1)
    trained, untrained = wins(ReplyLM.load(lm_matcher / LM_DIR)), wins(ReplyLM.load(tmp_path / "lm1"))
    assert trained >= 0.7 and trained >= untrained + 0.15, (trained, untrained)


@pytest.mark.slow
def test_a_matcher_without_its_language_model_folder_says_so(lm_matcher: Path, tmp_path: Path):
    partial = tmp_path / "copied"
    shutil.copytree(lm_matcher, partial, ignore=shutil.ignore_patterns(LM_DIR))
    with pytest.raises(ModelError, match="language model"):
        TrainedMatcher.load(partial)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "100"])
def test_lm_steps_must_be_a_whole_number(tmp_path: Path, bad):
    with pytest.raises(ConfigError, match="lm_steps"):
        train_matcher(make_pairs(40), tmp_path / "m", lm_steps=bad, **KW)


def test_without_lm_steps_the_matcher_has_no_language_model(tmp_path: Path):
    train_matcher(make_pairs(60), tmp_path / "m", **KW)
    cfg = json.loads((tmp_path / "m" / "matcher.json").read_text())
    assert "lm" not in cfg and not (tmp_path / "m" / LM_DIR).exists()
    assert TrainedMatcher.load(tmp_path / "m").signals(["几天能到"], ["一般两三天"]).shape == (1, 3)


@pytest.mark.slow
def test_concurrent_scoring_gives_the_sequential_scores(lm_matcher: Path):
    """Serving scores from worker threads (`asyncio.to_thread`), several turns at once."""
    from concurrent.futures import ThreadPoolExecutor

    m = TrainedMatcher.load(lm_matcher)
    q, good, bad = _held_out_contrast()
    pairs = [([a], [b]) for a, b in zip(q + q, good + bad)]
    alone = [float(m.score(a, b)[0]) for a, b in pairs]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda ab: float(m.score(*ab)[0]), pairs))
    np.testing.assert_allclose(together, alone, rtol=1e-5)
