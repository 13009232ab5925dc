"""The ShopBench reader, every metric on hand-written examples with hand-computed scores, the
chance levels, the harness (with a scripted model) and `endcloud eval shopbench` (a tiny real model)."""

from __future__ import annotations

import json
import math

import pytest

from endcloud.errors import DataError
from endcloud.tasks.items import TaskItem, read_items
from endcloud.tasks.metrics import (Similarities, bleu, chance_level, micro_f1, ndcg, parse_multichoice, parse_ner,
                                    parse_ranking, parse_retrieval, rouge_l, score_answers, sent_similarity, tp_fp_fn)
from endcloud.tasks.shopbench import answer_items, run_shopbench


# ---- the reader --------------------------------------------------------------------------
def test_reads_the_published_format(shopbench_file):
    items = read_items(shopbench_file)
    assert [it.task_type for it in items] == ["multiple-choice", "multiple-choice", "retrieval", "ranking",
                                              "named_entity_recognition", "named_entity_recognition", "generation",
                                              "generation"]
    mc = items[0]
    assert mc.output_field == 1 and mc.is_multiple_choice and mc.metric == "accuracy" and mc.task_name == "task_attr_category"
    assert items[3].output_field == [1, 0, 0.1, 0.01] and items[4].output_field == ["acme"]
    assert mc.prompt() == [{"role": "user", "content": mc.input_field}]  # ShopBench rows carry no messages


def test_reads_a_json_array_and_fills_metric_from_the_type(tmp_path):
    p = tmp_path / "dev.json"
    p.write_text(json.dumps([{"input_field": "q\n0. a\n1. b\nAnswer: ", "output_field": 0, "task_type": "multiple-choice"}]))
    [it] = read_items(p)
    assert it.metric == "accuracy" and it.is_multiple_choice and it.task_name == "multiple-choice"


@pytest.mark.parametrize("row, message", [
    ({"input_field": "x", "output_field": 1, "task_type": "essay"}, "task_type must be one of"),
    ({"input_field": "x", "output_field": "1", "task_type": "multiple-choice"}, "an option index"),
    ({"input_field": "x", "output_field": [1.5], "task_type": "retrieval"}, "a list of item numbers"),
    ({"input_field": "x", "task_type": "generation"}, "missing field(s) output_field"),
])
def test_a_bad_row_names_its_line(tmp_path, row, message):
    p = tmp_path / "dev.json"
    good = {"input_field": "q", "output_field": "a", "task_type": "generation"}
    p.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError) as e:
        read_items(p)
    assert message in str(e.value) and "line 2" in str(e.value)


def test_a_roundtrip_keeps_endcloud_fields(tmp_path):
    from endcloud.tasks.items import write_items

    it = TaskItem("q", ["x"], "t", "named_entity_recognition", "micro f1", False, response="x", id="t-1", heldout=True,
                  messages=[{"role": "user", "content": "q"}], meta={"sku": "1"})
    [back] = read_items(write_items(tmp_path / "t.jsonl", [it]))
    assert back == it


# ---- parsers and metrics, by hand -----------------------------------------------------------
def test_parsers_follow_the_starter_kit():
    assert parse_multichoice(" 2. wool") == 2 and parse_multichoice("a") == -1 and parse_multichoice("") == -1
    assert parse_ranking("[4, 1, 3, 2]") == [4, 1, 3, 2] and parse_ranking("1, 2, 2, 3") == []  # a repeat empties it
    assert parse_ranking("1,2,3,4,5,6") == [1, 2, 3, 4, 5]
    assert parse_retrieval("100, 200, jjhg, 300, 400") == [100, 200, 300]
    assert parse_ner("['New York', 'Amazon']") == ["New York", "Amazon"] and parse_ner("acme, socks") == ["acme", "socks"]


def test_hit_rate_at_3():
    assert score_answers([_row("retrieval", [2, 4, 6], "hit rate@3")], ["2, 3, 6"])[0] == pytest.approx(2 / 3)


def test_ndcg_by_hand():
    w = [1, 0, 0.1, 0.01]
    dcg = (2**0.01 - 1) / math.log2(2) + (2**1 - 1) / math.log2(3) + (2**0.1 - 1) / math.log2(4)  # ranking 4, 1, 3, 2
    idcg = (2**1 - 1) / math.log2(2) + (2**0.1 - 1) / math.log2(3) + (2**0.01 - 1) / math.log2(4)
    assert ndcg([4, 1, 3, 2], w) == pytest.approx(dcg / idcg) == pytest.approx(0.64244, abs=1e-4)
    assert ndcg([1, 3, 4, 2], w) == pytest.approx(1.0)
    assert ndcg([0, 2], w) == 0.0  # item 0 does not exist: irrelevant, not the last item
    assert ndcg([1, 2], [0, 0]) == 0.0


def test_micro_f1_sums_counts_over_the_task():
    assert tp_fp_fn(["Acme ", "socks"], ["acme"]) == (1, 1, 0)
    assert tp_fp_fn(["rain boots"], ["rain boots", "umbrella"]) == (1, 0, 1)
    assert micro_f1([(1, 1, 0), (1, 0, 1)]) == pytest.approx(2 / 3)  # P = 2/3, R = 2/3
    assert micro_f1([(0, 0, 2)]) == 0.0


def test_rouge_l_reads_english_words_and_chinese_characters():
    assert rouge_l("super comfortable shoes", "super comfortable") == pytest.approx(0.8)  # LCS 2, P 2/3, R 1
    assert rouge_l("纯棉方巾", "纯棉毛巾") == pytest.approx(0.75)  # LCS 纯棉巾: P = R = 3/4
    assert rouge_l("", "x") == 0.0 and rouge_l("a b", ["c", "a b"]) == 1.0


def test_bleu_like_sacrebleu():
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert bleu("a red cup", "a red cup") == 0.0  # three words: no 4-gram, and no effective order
    # one word wrong: 1-grams 5/6, 2-grams 3/5, 3-grams 2/4, 4-grams 1/3
    assert bleu("the cat sat on a mat", "the cat sat on the mat") == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    # two wrong: 1-grams 4/6, 2-grams 1/5, 3-grams 0/4 -> 1/(2*4), 4-grams 0/3 -> 1/(4*3) (exp smoothing)
    assert bleu("the dog sat on a mat", "the cat sat on the mat") == pytest.approx((4 / 6 * 1 / 5 * 1 / 8 * 1 / 12) ** 0.25)


def test_sentence_similarity_is_the_clipped_cosine():
    vecs = {"a tent": [1.0, 0.0, 1.0], "a shelter": [1.0, 1.0, 1.0], "not": [-1.0, 0.0, -1.0]}
    enc = lambda texts: [vecs[t] for t in texts]  # noqa: E731
    assert sent_similarity("a tent", "a shelter", enc) == pytest.approx(2 / (math.sqrt(2) * math.sqrt(3)))
    assert sent_similarity("not", "a tent", enc) == 0.0
    sims = Similarities(minilm=enc)
    assert score_answers([_row("generation", "a shelter", "sent-transformer")], ["a tent"], sims)[0] == pytest.approx(0.8165, abs=1e-4)


def test_endcloud_metrics():
    item = _row("generation", ["42", "有货"], "fact")
    assert score_answers([item], ["亲，42元，有货"])[0] == 1.0 and score_answers([item], ["42元"])[0] == 0.0
    rec = _row("generation", {"allowed": ["纯棉毛巾"], "forbidden": ["纯棉浴巾"]}, "grounded-recommendation")
    assert score_answers([rec], ["推荐纯棉毛巾"])[0] == 1.0
    assert score_answers([rec], ["推荐纯棉毛巾或纯棉浴巾"])[0] == 0.0 and score_answers([rec], ["在的"])[0] == 0.0


# ---- chance --------------------------------------------------------------------------------
def test_chance_levels_by_hand(shopbench_file):
    items = read_items(shopbench_file)
    by = {}
    for it in items:
        by.setdefault(it.task_name, []).append(it)
    assert chance_level(by["task_attr_category"]) == pytest.approx(0.25)
    assert chance_level(by["task_review_snippets"]) == pytest.approx(3 / 6)
    w = [1, 0, 0.1, 0.01]
    mean_discount = sum(1 / math.log2(p + 1) for p in range(1, 5)) / 4
    idcg = 1 + (2**0.1 - 1) / math.log2(3) + (2**0.01 - 1) / 2
    assert chance_level(by["task_query_rank"]) == pytest.approx(sum(2**x - 1 for x in w) * mean_discount / idcg)
    # NER: each query answered with the other query's entities -> tp 0 everywhere
    assert chance_level(by["task_query_ner"]) == 0.0


# ---- the harness ---------------------------------------------------------------------------
class Scripted:
    """A TaskModel double: replies by a substring of the question; loglik prefers `loglik_pick`."""

    name = "scripted"

    def __init__(self, replies, loglik_pick=2):
        self.replies, self.pick, self.loglik_calls = replies, loglik_pick, 0

    def generate(self, prompts, *, max_new_tokens):
        out = []
        for p in prompts:
            q = p[-1]["content"]
            out.append(next((r for key, r in self.replies.items() if key in q), ""))
        return out

    def loglik(self, prompt, candidates):
        self.loglik_calls += 1
        return [0.0 if c.startswith(f"{self.pick}.") else -5.0 for c in candidates]


REPLIES = {"heel height": "1", "Merino Wool": "cotton", "praise its weight": "2, 3, 6", "waterproof hiking": "4, 1, 3, 2",
           "acme merino": "acme, socks", "kids rain": "['rain boots']", "super comfortable but": "super comfortable shoes",
           "product type: Tent": "a tent"}


def test_harness_scores_every_type_by_hand(shopbench_file):
    items = read_items(shopbench_file)
    vecs = {"a tent": [1.0, 0.0, 1.0], items[7].output_field: [1.0, 1.0, 1.0]}
    sims = Similarities(minilm=lambda texts: [vecs[t] for t in texts])
    model = Scripted(REPLIES)
    rep = run_shopbench(items, model, mc="generate", sims=sims)
    t = rep.tasks
    assert t["task_attr_category"]["score"] == 0.5  # "1" right; "cotton" is no option number
    assert t["task_review_snippets"]["score"] == pytest.approx(2 / 3, abs=1e-4)
    assert t["task_query_rank"]["score"] == pytest.approx(0.64244, abs=1e-4)
    assert t["task_query_ner"]["score"] == pytest.approx(2 / 3, abs=1e-4)
    assert t["task_keyphrase"]["score"] == pytest.approx(0.8)
    assert t["task_explain"]["score"] == pytest.approx(0.8165, abs=1e-4)
    assert rep.types["generation"]["score"] == pytest.approx((0.8 + 0.8165) / 2, abs=1e-4)
    assert rep.overall == pytest.approx((0.5 + 2 / 3 + 0.64244 + 2 / 3 + 0.8 + 0.8165) / 6, abs=1e-3)
    assert model.loglik_calls == 0
    # auto: the reply that is no option is decided by the options' log-likelihood (option 2, wool: right)
    assert rep.tasks["task_attr_category"]["by_loglik"] == 0
    auto = run_shopbench(items, Scripted(REPLIES), mc="auto", sims=sims)
    assert auto.tasks["task_attr_category"]["score"] == 1.0 and auto.tasks["task_attr_category"]["by_loglik"] == 1
    assert "task_query_rank" in "\n".join(auto.lines())


def test_loglik_mode_never_generates_for_multiple_choice(shopbench_file):
    items = [it for it in read_items(shopbench_file) if it.is_multiple_choice]
    model = Scripted({}, loglik_pick=1)
    replies, chosen = answer_items(items, model, mc="loglik")
    assert chosen == [True, True] and replies == ["1. sandal", "1. cotton"]


def test_a_real_model_scores_options_by_log_likelihood(tiny_base_dir):
    from endcloud.tasks.shopbench import HFTaskModel

    m = HFTaskModel.load(tiny_base_dir)
    prompt = [{"role": "user", "content": "在吗"}]
    a, b = m.loglik(prompt, ["亲，在的", "亲，在的，请问有什么可以帮您？"])
    assert a < 0 and b < 0 and a != b
    [again] = m.loglik(prompt, ["亲，在的"])
    assert again == pytest.approx(a, abs=1e-5)  # padding beside a longer candidate changes nothing


def test_cli_eval_shopbench(tiny_base_dir, shopbench_file, tmp_path, capsys):
    from endcloud.cli import main

    out = tmp_path / "report.json"
    rc = main(["eval", "shopbench", str(shopbench_file), "--base", str(tiny_base_dir), "-w", str(tmp_path / "ws"),
               "--task", "task_attr_category", "--task", "task_query_ner", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(out.read_text())
    assert set(rep["tasks"]) == {"task_attr_category", "task_query_ner"}
    assert rep["tasks"]["task_attr_category"]["chance"] == 0.25 and 0 <= rep["tasks"]["task_attr_category"]["score"] <= 1
    assert "overall" in capsys.readouterr().out


def test_cli_eval_still_runs_the_scoring_command(capsys):
    from endcloud.cli import main

    assert main(["eval"]) != 0  # the scoring room's eval: --out is required when no subcommand is given
    assert "--out" in capsys.readouterr().err


def _row(task_type, output, metric):
    return TaskItem("q", output, "t", task_type, metric, task_type == "multiple-choice")
