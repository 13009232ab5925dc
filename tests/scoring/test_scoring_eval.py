"""`run_eval` and `endcloud eval`: Table VI table, Fig. 3 plot, averages, facts, human agreement."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from endcloud.errors import DataError
from endcloud.scoring import (PAPER_PROBES_EN, PAPER_PROBES_ZH, EvalInput, Evaluator, load_inputs, paper_probes, run_eval,
                              score_turns)
from endcloud.scoring.similarity import CharNgramSimilarity

from endcloud.testing import LookupEndModel, LookupTeacher

INPUTS = [
    EvalInput(id="i1", query="Can I choose the delivery service?", facts=["ZTO"]),
    EvalInput(id="i2", query="Can I get a discount?", facts=["99", "10"]),
    EvalInput(id="i3", query="Hello"),
    EvalInput(id="i4", query="可以退货吗？", facts=["7天"]),
]
CLOUD = {"Can I choose the delivery service?": "We ship with ZTO Express by default.",
         "Can I get a discount?": "Yes, spend 99 and save 10 with our coupon.",
         "Hello": "Hello, how can I help you?",
         "可以退货吗？": "签收后7天内可以申请退货。"}
GOOD = {"Can I choose the delivery service?": "We use ZTO Express by default.",
        "Can I get a discount?": "You can save 10 when you spend 99.",
        "Hello": "Hello! How can I help?",
        "可以退货吗？": "亲，签收7天内可以退货哦。"}


@pytest.fixture(scope="module")
def evaluator(trained_matcher_dir):
    # char n-grams for both languages keep this module free of MiniLM's load time;
    # MiniLM itself is covered in test_similarity.
    from endcloud.scoring import AutoSimilarity

    return Evaluator(similarity=AutoSimilarity(en=CharNgramSimilarity(lang="en")), matching=str(trained_matcher_dir[0]))


def test_run_eval_writes_table_plot_summary(tmp_path, evaluator):
    models = {"original": LookupEndModel({}, fallback="I am an AI assistant, nice to meet you."), "lora": LookupEndModel(GOOD)}
    human = tmp_path / "ratings.csv"
    human.write_text("id,rating,model\ni1,1,original\ni2,1,original\ni3,2,original\ni4,1,original\n"
                     "i1,5,lora\ni2,4,lora\ni3,5,lora\ni4,5,lora\nnope,3,lora\n", encoding="utf-8")
    rep = run_eval(INPUTS, models, LookupTeacher(CLOUD), out_dir=tmp_path / "out", evaluator=evaluator, human=human)
    for name in ("table.md", "table.csv", "components.csv", "scores.png", "summary.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert (tmp_path / "out" / "scores.png").read_bytes()[:4] == b"\x89PNG"

    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["models"] == ["original", "lora"]
    assert s["averages"]["lora"]["final"] > s["averages"]["original"]["final"] + 0.2
    assert s["fact_accuracy"] == {"original": 0.0, "lora": 1.0, "cloud": 1.0}
    assert s["n_inputs_with_facts"] == 3
    assert s["similarity_used"] == ["char-ngram", "char-ngram-en"] and s["matching"] == "trained"
    assert s["human"]["n"] == 8 and s["human"]["unmatched"] == 1 and s["human"]["rho"] > 0.5
    assert s["final_vs_fact_spearman"]["rho"] > 0.5  # the proxy agrees with the ground truth here
    # the teacher's own column: Sim(cloud, cloud) = 1
    np.testing.assert_allclose([r["sim"] for r in rep.rows if r["model"] == "cloud"], 1.0)

    with open(tmp_path / "out" / "table.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["id"] for r in table] == ["i1", "i2", "i3", "i4"]
    assert list(table[0]) == ["id", "query", "original", "lora", "cloud"]
    np.testing.assert_allclose([float(r["lora"]) for r in table], rep.final("lora"), atol=1e-4)
    md = (tmp_path / "out" / "table.md").read_text(encoding="utf-8")
    assert "| i3 | Hello |" in md and "fact accuracy" in md and "Θ = 0.2" in md


def test_run_eval_final_scores_follow_eq1(tmp_path, evaluator):
    rep = run_eval(INPUTS[:2], {"m": LookupEndModel(GOOD)}, LookupTeacher(CLOUD), out_dir=tmp_path, evaluator=evaluator)
    for r in rep.rows:
        want = r["sim"] if r["cloud_match"] < 0.2 else 0.8 * r["sim"] + 0.2 * r["match"]
        assert r["final"] == pytest.approx(want)


def test_run_eval_batches_and_rejects_bad_calls(tmp_path, evaluator):
    model = LookupEndModel(GOOD)
    run_eval([i.query for i in INPUTS] * 3, {"m": model}, LookupTeacher(CLOUD), out_dir=tmp_path, evaluator=evaluator, batch_size=5)
    assert len(model.batches) == 3  # 12 inputs in batches of 5
    with pytest.raises(DataError, match="no end models"):
        run_eval(INPUTS, {}, LookupTeacher(CLOUD), out_dir=tmp_path, evaluator=evaluator)
    with pytest.raises(DataError, match="reserved"):
        run_eval(INPUTS, {"cloud": model}, LookupTeacher(CLOUD), out_dir=tmp_path, evaluator=evaluator)


def test_paper_probes_are_built_in():
    en, zh = paper_probes("en"), paper_probes("zh")
    assert [p.query for p in en] == PAPER_PROBES_EN and len(PAPER_PROBES_EN) == 6
    assert [p.query for p in zh] == PAPER_PROBES_ZH and all(p.lang == "zh" for p in zh[:2])
    assert en[2].query == "520401029636" and en[1].query == "Can I choose the delivery service?"
    assert len({p.id for p in paper_probes("both")}) == 12


def test_paper_probes_match_the_synthetic_shops():
    from endcloud.corpus.shopworld import PROBES

    for lang in ("en", "zh"):
        assert [(p.intent, p.query) for p in paper_probes(lang)] == list(PROBES[lang])


def test_paper_probes_take_the_shops_facts(tmp_path):
    rows = [{"id": "probe-2", "lang": "en", "intent": "courier", "query": "Can I choose the delivery service?", "facts": ["ZTO Express"]},
            {"id": "probe-2", "lang": "zh", "intent": "courier", "query": "可以选快递吗？", "facts": ["中通"]}]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    en = paper_probes("en", shop_eval=path)
    assert en[1].facts == ["ZTO Express"] and en[0].facts is None
    assert paper_probes("zh", shop_eval=path)[1].facts == ["中通"]


def test_load_inputs_accepts_shop_eval_corpus_pairs_chats_and_text(tmp_path):
    shop = tmp_path / "eval.jsonl"
    shop.write_text(json.dumps({"id": "e1", "lang": "zh", "intent": "price", "query": "毛巾多少钱", "context": [{"role": "user", "content": "在吗"},
                    {"role": "assistant", "content": "在的"}], "facts": ["19.9"]}, ensure_ascii=False) + "\n"
                    + json.dumps({"id": "p1", "source": "x", "session": "s", "lang": "en", "context": [{"role": "user", "text": "hi"}],
                                  "query": "price?", "response": "19.9", "facts": None}) + "\n"
                    + json.dumps({"id": "c1", "messages": [{"role": "user", "content": "Can I return it?"},
                                  {"role": "assistant", "content": "Within 7 days.", "facts": ["7 days"], "intent": "returns"}]}) + "\n",
                    encoding="utf-8")
    a, b, c = load_inputs(shop)
    assert a.facts == ["19.9"] and a.messages()[-1] == {"role": "user", "content": "毛巾多少钱"} and len(a.messages()) == 3
    assert b.context == [{"role": "user", "content": "hi"}] and b.facts is None
    assert c.query == "Can I return it?" and c.facts == ["7 days"] and c.intent == "returns" and c.context == []
    txt = tmp_path / "q.txt"
    txt.write_text("Hello\n\n可以选快递吗？\n", encoding="utf-8")
    x, y = load_inputs(txt)
    assert (x.lang, y.lang) == ("en", "zh")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no 'query'"):
        load_inputs(bad)


def test_score_turns_fast_path_returns_records(trained_matcher_dir):
    ev = Evaluator(similarity="char-ngram", matching=str(trained_matcher_dir[0]))
    good, bad = ev.score_turns(["你们发什么快递"] * 2, ["亲，默认中通快递哦", "这款是纯棉的"], ["亲，我们默认中通快递。"] * 2)
    assert good.final > bad.final and good.similarity_model == "char-ngram" and good.matching_model == "trained"
    assert 0 <= bad.final <= 1 and good.to_json()["cloud_match"] == pytest.approx(good.cloud_match)
    # the module-level convenience on a workspace without a trained matcher falls back to TF-IDF
    [s] = score_turns(["可以退货吗"], ["7天内可以退货"], ["签收后7天内可以申请退货。"], lang="zh", workspace="/nonexistent-ws")
    assert s.matching_model == "tfidf" and s.similarity_model == "char-ngram"


def test_human_ratings_file_is_validated(tmp_path, evaluator):
    bad = tmp_path / "r.csv"
    bad.write_text("id,rating\ni1,9\n", encoding="utf-8")
    with pytest.raises(DataError, match="outside 1–5"):
        run_eval(INPUTS, {"m": LookupEndModel(GOOD)}, LookupTeacher(CLOUD), out_dir=tmp_path / "o", evaluator=evaluator, human=bad)
