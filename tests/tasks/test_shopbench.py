"""The ShopBench reader, every metric on hand-written examples with hand-computed scores, the
chance levels, the harness (with a scripted model: multiple choice, ranking and retrieval by
generation and by the candidates' log-likelihood) and `endcloud eval shopbench` (a tiny real model)."""

from __future__ import annotations

import json
import math

import pytest

from endcloud.errors import ConfigError, DataError
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


# ---- ranking and retrieval by the candidates' log-likelihood -----------------------------------
class Likelihoods(Scripted):
    """A TaskModel double: replies by a substring of the question (as Scripted); loglik returns the
    given score of each candidate by its number, per question (keyed by a substring of it)."""

    def __init__(self, replies, scores):
        super().__init__(replies)
        self.scores, self.generated, self.asked = scores, [], []

    def generate(self, prompts, *, max_new_tokens):
        self.generated += [p[-1]["content"] for p in prompts]
        return super().generate(prompts, max_new_tokens=max_new_tokens)

    def loglik(self, prompt, candidates):
        self.loglik_calls += 1
        self.asked.append(list(candidates))
        q = prompt[-1]["content"]
        by_number = next(v for key, v in self.scores.items() if key in q)
        return [by_number[int(c.split(".")[0])] for c in candidates]


RANK_SCORES = {1: -1.0, 2: -3.0, 3: -0.5, 4: -2.0}  # likeliest first: 3, 1, 4, 2
SNIPPET_SCORES = {1: -2.0, 2: -1.0, 3: -4.0, 4: -0.5, 5: -3.0, 6: -2.5}  # likeliest first: 4, 2, 1, 6, 5, 3
SCORES = {"waterproof hiking": RANK_SCORES, "praise its weight": SNIPPET_SCORES}


def _of_type(shopbench_file, *types):
    return [it for it in read_items(shopbench_file) if it.task_type in types]


def test_loglik_ranks_a_ranking_item_by_hand(shopbench_file):
    items = _of_type(shopbench_file, "ranking")
    model = Likelihoods({}, SCORES)
    replies, chosen = answer_items(items, model, rank="loglik")
    assert replies == ["3, 1, 4, 2"] and chosen == [True]
    assert model.asked == [["1. Men's Waterproof Leather Hiking Boot", "2. Women's Running Shoe",
                            "3. Boot Waterproofing Spray", "4. Men's Trail Hiking Boot, Mesh"]]
    assert model.generated == []  # loglik mode never asks for a reply
    # weights [1, 0, 0.1, 0.01]; ranking 3, 1, 4, 2 -> gains 0.1, 1, 0.01, 0
    dcg = (2**0.1 - 1) / math.log2(2) + (2**1 - 1) / math.log2(3) + (2**0.01 - 1) / math.log2(4)
    idcg = (2**1 - 1) / math.log2(2) + (2**0.1 - 1) / math.log2(3) + (2**0.01 - 1) / math.log2(4)
    rep = run_shopbench(items, Likelihoods({}, SCORES), rank="loglik")
    assert rep.tasks["task_query_rank"]["score"] == pytest.approx(dcg / idcg, abs=1e-4) == pytest.approx(0.6733, abs=1e-4)
    assert rep.tasks["task_query_rank"]["by_loglik"] == 1


def test_loglik_retrieves_the_likeliest_three_by_hand(shopbench_file):
    items = _of_type(shopbench_file, "retrieval")
    replies, chosen = answer_items(items, Likelihoods({}, SCORES), rank="loglik")
    assert replies == ["4, 2, 1"] and chosen == [True]
    rep = run_shopbench(items, Likelihoods({}, SCORES), rank="loglik")
    assert rep.tasks["task_review_snippets"]["score"] == pytest.approx(2 / 3, abs=1e-4)  # truth 2, 4, 6: 4 and 2 hit
    assert rep.tasks["task_review_snippets"]["by_loglik"] == 1


class Prior(Likelihoods):
    """A TaskModel double whose candidates carry a prior that no question changes: loglik is
    prior + what the question adds (`SCORES`); after the empty question, the prior alone."""

    PRIOR = {0: 8.0, 1: 3.0, 2: 2.0, 3: 0.0, 4: -1.0, 5: 1.0, 6: 0.5}

    def loglik(self, prompt, candidates):
        prior = [self.PRIOR[int(c.split(".")[0])] for c in candidates]
        if not prompt[-1]["content"]:
            self.asked.append("empty")
            return prior
        return [p + s for p, s in zip(prior, super().loglik(prompt, candidates))]


def test_pmi_takes_the_candidates_prior_out(shopbench_file):
    items = _of_type(shopbench_file, "ranking")
    # prior + question: 1: 2.0, 2: -1.0, 3: -0.5, 4: -3.0 -> loglik ranks the common candidate 1 first
    assert answer_items(items, Prior({}, SCORES), rank="loglik")[0] == ["1, 3, 2, 4"]
    model = Prior({}, SCORES)
    replies, chosen = answer_items(items, model, rank="pmi")
    assert replies == ["3, 1, 4, 2"] and chosen == [True]  # what the question adds: RANK_SCORES' order
    assert model.asked[-1] == "empty" and model.generated == []
    # multiple choice: "pillow" (0) is the likeliest answer to anything; the question raises "sandal" (1) most
    heel = [it for it in read_items(shopbench_file) if "heel height" in it.input_field]
    scores = {"heel height": {0: -3.0, 1: -0.1, 2: -2.0, 3: -3.0}}
    assert answer_items(heel, Prior({}, scores), mc="loglik")[0] == ["0. pillow"]
    assert answer_items(heel, Prior({}, scores), mc="pmi")[0] == ["1. sandal"]


def test_ties_and_nan_scores_keep_the_listed_order(shopbench_file):
    items = _of_type(shopbench_file, "ranking")
    flat = {"waterproof hiking": {1: float("nan"), 2: -1.0, 3: -2.0, 4: -1.0}}
    assert answer_items(items, Likelihoods({}, flat), rank="loglik")[0] == ["2, 4, 3, 1"]


@pytest.mark.parametrize("reply, valid", [
    ("4, 1, 3, 2", True),
    ("[2, 1, 4, 3]", True),
    ("4, 1", False),           # not every listed item
    ("4, 1, 1, 2", False),     # a repeat (the parser empties it)
    ("4, 1, 3, 7", False),     # 7 is not listed
    ("Men's Trail Hiking Boot", False),
])
def test_auto_keeps_a_valid_ranking_and_falls_back_for_an_invalid_one(shopbench_file, reply, valid):
    items = _of_type(shopbench_file, "ranking")
    model = Likelihoods({"waterproof hiking": reply}, SCORES)
    replies, chosen = answer_items(items, model, rank="auto")
    assert model.generated == [items[0].input_field]
    assert replies == ([reply] if valid else ["3, 1, 4, 2"]) and chosen == [not valid]
    assert model.loglik_calls == (0 if valid else 1)


@pytest.mark.parametrize("reply, valid", [
    ("2, 3, 6", True),
    ("6", True),               # "up to 3 numbers": one is a selection
    ("", False),
    ("2, 2, 6", False),        # a repeat
    ("2, 9", False),           # 9 is not listed
])
def test_auto_keeps_a_valid_selection_and_falls_back_for_an_invalid_one(shopbench_file, reply, valid):
    items = _of_type(shopbench_file, "retrieval")
    replies, chosen = answer_items(items, Likelihoods({"praise its weight": reply}, SCORES), rank="auto")
    assert replies == ([reply] if valid else ["4, 2, 1"]) and chosen == [not valid]


def test_generate_mode_keeps_even_an_invalid_ranking(shopbench_file):
    items = _of_type(shopbench_file, "ranking", "retrieval")
    model = Likelihoods({"waterproof hiking": "4, 4", "praise its weight": "none"}, SCORES)
    assert answer_items(items, model, rank="generate") == (["none", "4, 4"], [False, False])
    assert model.loglik_calls == 0


def test_the_report_counts_loglik_answers_per_task(shopbench_file):
    from dataclasses import replace

    items = read_items(shopbench_file)
    # a second ranking question of the same task, whose generated ranking is valid
    items.append(replace(items[3], input_field=items[3].input_field.replace("waterproof hiking boots men", "hiking boots")))
    replies = dict(REPLIES, **{"waterproof hiking": "4, 1", "'hiking boots'": "1, 4, 3, 2"})
    scores = dict(SCORES, **{"'hiking boots'": RANK_SCORES, "heel height": {0: -1.0, 1: -2.0, 2: -3.0, 3: -4.0},
                             "Merino Wool": {0: -4.0, 1: -3.0, 2: -1.0, 3: -2.0}})
    vecs = {"a tent": [1.0, 0.0, 1.0], items[7].output_field: [1.0, 1.0, 1.0]}
    sims = Similarities(minilm=lambda texts: [vecs[t] for t in texts])
    rep = run_shopbench(items, Likelihoods(replies, scores), mc="generate", rank="auto", sims=sims)
    t = rep.tasks
    assert t["task_query_rank"]["n"] == 2 and t["task_query_rank"]["by_loglik"] == 1  # "4, 1" is no full ranking
    assert t["task_review_snippets"]["by_loglik"] == 0  # "2, 3, 6" is a valid selection
    assert t["task_attr_category"]["by_loglik"] == 0  # mc=generate: "cotton" stays, wrong
    assert t["task_query_ner"]["by_loglik"] == 0  # ner=auto: "acme, socks" and ['rain boots'] are spans of the query
    assert "by_loglik" not in t["task_keyphrase"]
    # loglik's 3, 1, 4, 2 (0.6733) and the generated 1, 4, 3, 2 (gains 1, 0.01, 0.1, 0: by hand below)
    dcg = 1 + (2**0.01 - 1) / math.log2(3) + (2**0.1 - 1) / math.log2(4)
    idcg = 1 + (2**0.1 - 1) / math.log2(3) + (2**0.01 - 1) / math.log2(4)
    assert t["task_query_rank"]["score"] == pytest.approx((0.6733 + dcg / idcg) / 2, abs=1e-4)
    assert rep.modes == {"mc": "generate", "rank": "auto", "ner": "auto"} and rep.to_json()["modes"] == rep.modes
    assert "ranking/retrieval by auto, named entities by auto; by log-likelihood: task_query_rank 1/2" in "\n".join(rep.lines())
    rep2 = run_shopbench(items, Likelihoods(replies, scores), mc="loglik", rank="loglik", sims=sims)
    assert [rep2.tasks[n]["by_loglik"] for n in ("task_attr_category", "task_query_rank", "task_review_snippets")] == [2, 2, 1]
    assert rep2.tasks["task_attr_category"]["score"] == 0.5  # option 0 (wrong), option 2 (right)
    assert rep2.tasks["task_query_rank"]["score"] == pytest.approx(0.6733, abs=1e-4)  # both 3, 1, 4, 2


def test_training_examples_carry_the_candidates_and_the_right_ones(shopbench_file):
    """A candidate question trains its ranking too (`endcloud.end.train.choice_loss`): its example
    lists every candidate as the reply loglik scores, and marks the right ones by position."""
    from endcloud.tasks.shopbench import choices_of

    by_type: dict[str, TaskItem] = {}
    for it in read_items(shopbench_file):
        by_type.setdefault(it.task_type, it)  # the first of each type
    mc = by_type["multiple-choice"]  # heel height: 1. sandal
    assert choices_of(mc) == (["0. pillow", "1. sandal", "2. kettle", "3. mouse pad"], [1])
    assert choices_of(by_type["retrieval"])[1] == [1, 3, 5]  # truth 2, 4, 6 of six snippets
    rank_texts, rank_right = choices_of(by_type["ranking"])  # weights [1, 0, 0.1, 0.01]: item 1 alone is most relevant
    assert rank_texts[0] == "1. Men's Waterproof Leather Hiking Boot" and rank_right == [0]
    flat = TaskItem("Rank:\n1. a\n2. b\nOutput: ", [0, 0], "t", "ranking", "ndcg", False)
    assert choices_of(flat) == ([], [])  # nothing relevant: nothing to prefer
    ex = TaskItem(mc.input_field, 1, "t", "multiple-choice", "accuracy", True, response="1. sandal").to_example()
    assert ex.choices == ("0. pillow", "1. sandal", "2. kettle", "3. mouse pad") and ex.answers == (1,)
    gen = TaskItem("Translate: 毛巾", "towel", "t", "generation", "rougel", False, response="towel").to_example()
    assert gen.choices == () and gen.answers == ()


def test_an_item_listing_no_candidates_is_generated_even_in_loglik_mode():
    item = TaskItem("Rank the boots by relevance: leather, mesh. Output: ", [1, 0], "t", "ranking", "ndcg", False)
    model = Likelihoods({"Rank the boots": "1, 2"}, {})
    assert answer_items([item], model, rank="loglik") == (["1, 2"], [False]) and model.loglik_calls == 0


def test_a_bad_mode_names_its_flag(shopbench_file):
    from endcloud.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--rank must be one of auto, generate, loglik, pmi, got 'best'"):
        answer_items(read_items(shopbench_file), Scripted({}), rank="best")


def test_generated_rankings_and_retrievals_list_their_candidates(zh_shop):
    from endcloud.kb import ShopPack
    from endcloud.tasks.generate import generate_tasks
    from endcloud.tasks.shopbench import candidates_of

    ts = generate_tasks(ShopPack.load(zh_shop), tasks=["recommend_rank", "next_purchase"], per_task=6, seed=2)
    assert {it.task_type for it in ts.items} == {"ranking", "retrieval"}
    for it in ts.items:
        assert [k for k, _ in candidates_of(it)] == list(range(1, len(it.meta["skus"]) + 1))
        assert not it.messages  # what loglik scores the candidates after is the question itself


def test_a_real_model_ranks_candidates_by_log_likelihood(tiny_base_dir, shopbench_file):
    from endcloud.tasks.shopbench import HFTaskModel, candidates_of

    m = HFTaskModel.load(tiny_base_dir)
    items = _of_type(shopbench_file, "ranking", "retrieval")
    replies, chosen = answer_items(items, m, rank="loglik")
    assert chosen == [True, True]
    for it, reply in zip(items, replies):
        cands = candidates_of(it)
        scores = m.loglik(it.prompt(), [f"{k}. {t}" for k, t in cands])
        assert len(set(scores)) == len(scores)  # no ties: the order below is the model's, not the list's
        expect = [k for _, k in sorted(((-s, k) for s, (k, _) in zip(scores, cands)))]
        assert reply == ", ".join(map(str, expect if it.task_type == "ranking" else expect[:3]))


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


def test_cli_eval_shopbench_ranks_by_log_likelihood(tiny_base_dir, shopbench_file, tmp_path, capsys):
    from endcloud.cli import main
    from endcloud.tasks.metrics import parse_ranking

    out = tmp_path / "report.json"
    rc = main(["eval", "shopbench", str(shopbench_file), "--base", str(tiny_base_dir), "-w", str(tmp_path / "ws"),
               "--task", "task_query_rank", "--task", "task_review_snippets", "--rank", "loglik", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(out.read_text())
    assert rep["modes"] == {"mc": "auto", "rank": "loglik", "ner": "auto"}
    assert rep["tasks"]["task_query_rank"]["by_loglik"] == 1 and rep["tasks"]["task_review_snippets"]["by_loglik"] == 1
    [sample] = rep["samples"]["task_query_rank"]
    assert sorted(parse_ranking(sample["reply"])) == [1, 2, 3, 4]
    assert rep["tasks"]["task_query_rank"]["score"] == pytest.approx(ndcg(parse_ranking(sample["reply"]), [1, 0, 0.1, 0.01]), abs=1e-4)
    assert "ranking/retrieval by loglik" in capsys.readouterr().out


def test_cli_eval_shopbench_rejects_a_bad_rank_mode(shopbench_file, tmp_path, capsys):
    from endcloud.cli import main

    assert main(["eval", "shopbench", str(shopbench_file), "-w", str(tmp_path / "ws"), "--rank", "best"]) != 0
    assert "--rank must be one of auto, generate, loglik" in capsys.readouterr().err


def test_cli_eval_still_runs_the_scoring_command(capsys):
    from endcloud.cli import main

    assert main(["eval"]) != 0  # the scoring room's eval: --out is required when no subcommand is given
    assert "--out" in capsys.readouterr().err


def _row(task_type, output, metric):
    return TaskItem("q", output, "t", task_type, metric, task_type == "multiple-choice")


def test_cli_tasks_train_makes_an_adapter_the_harness_scores(zh_shop, tmp_path, capsys):
    """generate -> train (tasks + replayed dialogue, the choice loss on the candidate items) -> eval shopbench."""
    from endcloud.cli import main
    from endcloud.end.reader import reader_base

    if reader_base() is None:
        pytest.skip("no shipped shop reader in this install")
    items, adapter = tmp_path / "tasks.jsonl", tmp_path / "multi"
    assert main(["tasks", "generate", str(zh_shop), "-o", str(items), "--task", "intent", "--task", "attribute_ner",
                 "--per-task", "8"]) == 0
    rc = main(["tasks", "train", str(items), "--shop", str(zh_shop), "-o", str(adapter), "-w", str(tmp_path / "ws"),
               "--steps", "3", "--chat-questions", "12", "--replay", "0.5", "--polish-steps", "2", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    trained = [it for it in read_items(items) if not it.heldout]
    mcq = sum(1 for it in trained if it.task_type in ("multiple-choice", "named_entity_recognition"))
    assert f"on {len(trained)} task items ({mcq} ranked by the choice loss) + {len(trained)} dialogue examples" in out
    assert "then 2 steps on the dialogue alone" in out
    rec = json.loads((adapter / "mix" / "training.json").read_text())  # the mixed stage
    assert rec["steps"] == 3 and rec["config"]["choice_weight"] == 1.0 and rec["config"]["lr"] == 5e-3
    rec = json.loads((adapter / "training.json").read_text())  # the dialogue stage, from the mixed adapter
    assert rec["steps"] == 2 and rec["config"]["lr"] == 1e-3
    targets = set(json.loads((adapter / "adapter_config.json").read_text())["target_modules"])
    assert {"q_proj", "v_proj", "gate_proj", "down_proj"} <= targets and "lm_head" not in targets  # all-linear
    assert main(["eval", "shopbench", str(items), "--heldout-only", "--adapter", str(adapter), "-w", str(tmp_path / "ws"),
                 "--mc", "loglik"]) == 0
    assert "intent" in capsys.readouterr().out


class SpanScores(Scripted):
    """A TaskModel double: loglik scores each candidate by its text (unlisted: -9)."""

    def __init__(self, replies, scores):
        super().__init__(replies)
        self.scores, self.asked = scores, []

    def loglik(self, prompt, candidates):
        self.loglik_calls += 1
        self.asked.append(list(candidates))
        return [self.scores.get(c, -9.0) for c in candidates]


def test_named_entities_by_the_spans_likelihood(shopbench_file):
    """ner=loglik: every run of up to four words of the question's text is a candidate, scored as
    the reply itself; the likeliest is the answer. By hand: "acme" (right: tp 1) and "umbrella"
    (one of two: tp 1, fn 1) give micro P 2/2, R 2/3, F1 0.8. And training's choice examples
    name the right spans."""
    from endcloud.tasks.shopbench import choices_of, ner_spans, ner_text

    items = _of_type(shopbench_file, "named_entity_recognition")
    assert [ner_text(it) for it in items] == ["acme merino socks", "kids rain boots and umbrella"]
    assert [t for _, t in ner_spans(items[0])] == ["acme", "acme merino", "acme merino socks", "merino", "merino socks",
                                                  "socks"]
    assert len(ner_spans(items[1])) == 5 + 4 + 3 + 2  # five words, spans of up to four
    model = SpanScores({}, {"acme": -0.5, "merino socks": -1.0, "umbrella": -0.2, "rain boots": -0.4})
    replies, chosen = answer_items(items, model, ner="loglik")
    assert replies == ["acme", "umbrella"] and chosen == [True, True]
    rep = run_shopbench(items, model, ner="loglik")
    assert rep.tasks["task_query_ner"]["score"] == pytest.approx(0.8)
    cands, right = choices_of(items[1])
    assert sorted(cands[j] for j in right) == ["rain boots", "umbrella"]
    # auto keeps a reply made of spans; a reply that is not one is replaced by the likeliest span
    garbled = Scripted({"acme merino": "acme", "kids rain": "galoshes"})
    garbled.loglik = model.loglik
    assert answer_items(items, garbled, ner="auto") == (["acme", "umbrella"], [False, True])
    assert answer_items(items, garbled, ner="generate")[0] == ["acme", "galoshes"]
    with pytest.raises(ConfigError, match="--ner"):
        answer_items(items, model, ner="best")


def test_a_ner_question_without_a_text_line_is_generated():
    from endcloud.tasks.shopbench import ner_spans

    bare = TaskItem(input_field="Extract brands from: acme socks", output_field=["acme"], task_name="t",
                    task_type="named_entity_recognition", metric="micro f1", is_multiple_choice=False)
    assert ner_spans(bare) == []
    assert answer_items([bare], Scripted({"acme": "acme"}), ner="loglik") == (["acme"], [False])
