"""Matching scorers: TF-IDF baseline, the shop's trained matcher, a cross-encoder dir."""

from __future__ import annotations

import json

import numpy as np
import pytest

from endcloud.errors import DataError, ModelError, RegistryError
from endcloud.scoring import MATCHING, TfidfMatcher, TrainedMatcher, load_matching, recall_at_1, train_matcher
from endcloud.scoring.matcher_train import ecd_recall_at_1, load_matcher_pairs, read_ecd


def test_tfidf_ranks_a_lexical_paraphrase_first_zh_and_en():
    m = TfidfMatcher()
    s = m.score(["Can I choose the delivery service?"] * 2, ["Yes, you can choose the delivery service at checkout.", "This towel is pure cotton."])
    assert s[0] > s[1]
    s = m.score(["可以选快递吗？"] * 2, ["可以的，快递下单时选择。", "这款毛巾是纯棉的。"])
    assert s[0] > s[1]


def test_trained_matcher_beats_tfidf_on_held_out_r10_at_1(trained_matcher_dir):
    out, report = trained_matcher_dir
    assert report.n_test_groups >= 50
    assert report.r10_at_1 > report.baseline_tfidf_r10_at_1 + 0.1, report
    assert report.loss_last_epoch < report.loss_first_epoch / 2  # it learned
    saved = json.loads((out / "report.json").read_text())
    assert saved["r10_at_1"] == pytest.approx(report.r10_at_1)


def test_trained_matcher_ranks_answers_above_unrelated_replies(trained_matcher_dir):
    m = load_matching(str(trained_matcher_dir[0]))
    assert isinstance(m, TrainedMatcher)
    # Answers that share no words with the question: where lexical matching fails.
    en = m.score(["Which courier do you use?"] * 2, ["Sorry, ZTO Express is our default courier.", "Returns are accepted within 7 days of delivery."])
    zh = m.score(["你们发什么快递"] * 2, ["亲，我们默认中通快递。", "签收后7天内可以申请退货。"])
    assert en[0] > en[1] and zh[0] > zh[1]


def test_trained_matcher_is_calibrated_for_theta(trained_matcher_dir):
    out, report = trained_matcher_dir
    m = TrainedMatcher.load(out)
    # Platt scaling: true answers well above 0.5, unrelated replies below Θ = 0.2.
    assert report.mean_prob_true > 0.7 and report.mean_prob_false < 0.2
    p = m.score(["Can I return it?", "Can I return it?"], ["You may return it within 7 days after you receive it.", "It costs 35 yuan."])
    assert p[0] > 0.5 > 0.2 > p[1]


def test_trained_matcher_save_load_round_trip(trained_matcher_dir, tmp_path):
    m = TrainedMatcher.load(trained_matcher_dir[0])
    m.save(tmp_path / "copy")
    m2 = TrainedMatcher.load(tmp_path / "copy")
    q, r = ["有优惠吗？", "hello"], ["可以领满99减10的券。", "Hi! What can I do for you?"]
    np.testing.assert_allclose(m.score(q, r), m2.score(q, r))


def test_registry_and_auto_fallback(tmp_path):
    assert MATCHING.names() == ["lexical", "tfidf", "trained"]
    assert load_matching("auto", workspace=tmp_path).name == "tfidf"  # no trained matcher in this workspace
    with pytest.raises(ModelError, match="matcher train"):
        load_matching("trained", workspace=tmp_path)
    with pytest.raises(RegistryError, match="valid: auto, lexical, tfidf, trained"):
        load_matching("rocketqa")


def test_recall_at_1_counts_ties_as_shared_credit():
    assert recall_at_1(np.array([[0.9, 0.1, 0.2], [0.1, 0.5, 0.2]])) == pytest.approx(0.5)
    assert recall_at_1(np.ones((4, 10))) == pytest.approx(0.1)  # a constant scorer: chance


def test_too_few_pairs_is_a_data_error(tmp_path, shop_pairs):
    with pytest.raises(DataError, match="at least 16"):
        train_matcher(shop_pairs[:6], tmp_path / "m")


@pytest.mark.realdata
def test_ecd_sample_reads_as_groups_and_scores(shared_data, tmp_path):
    path = shared_data / "ecd" / "ecd_train_sample.txt"
    groups = read_ecd(path)
    assert len(groups) > 50 and all(sum(g["labels"]) == 1 for g in groups if len(g["labels"]) == 2)
    rows = load_matcher_pairs(path)
    # The ECD path gives what `corpus prepare` gives (every agent turn of each positive line).
    from endcloud.corpus import log_pairs

    assert sorted((r["query"], r["response"]) for r in rows) == sorted((p["query"], p["response"]) for p in log_pairs([path]))
    res = ecd_recall_at_1(TfidfMatcher(), path)
    assert res["candidates"] == 2 and 0.3 < res["r_at_1"] <= 1.0


def test_cross_encoder_directory_gives_sigmoid_probabilities(tmp_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from endcloud.scoring import minilm_dir

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=37, num_labels=1, max_position_embeddings=64))
    model.save_pretrained(tmp_path / "ce")
    tok.save_pretrained(tmp_path / "ce")
    m = load_matching(str(tmp_path / "ce"))
    assert m.name == "ce"
    q, r = ["can i return it", "hello"], ["returns within 7 days", "hi"]
    got = m.score(q, r)
    with torch.no_grad():
        logits = model.eval()(**tok(q, r, return_tensors="pt", padding=True)).logits.squeeze(-1)
    np.testing.assert_allclose(got, torch.sigmoid(logits).numpy(), atol=1e-5)


def test_retraining_a_folder_reloads_it(trained_matcher_dir, tmp_path):
    import os

    src = TrainedMatcher.load(trained_matcher_dir[0])
    src.save(tmp_path / "m")
    first = TrainedMatcher.load(tmp_path / "m")
    assert TrainedMatcher.load(tmp_path / "m") is first  # cached
    changed = TrainedMatcher(w_query=src.w_query, w_reply=src.w_reply, config={**src.config, "platt": {"a": 1.0, "b": -50.0}})
    changed.save(tmp_path / "m")
    cfg = tmp_path / "m" / "matcher.json"
    os.utime(cfg, ns=(cfg.stat().st_atime_ns, cfg.stat().st_mtime_ns + 10**9))  # coarse-mtime filesystems
    again = TrainedMatcher.load(tmp_path / "m")
    assert again is not first and again.config["platt"]["b"] == -50.0
