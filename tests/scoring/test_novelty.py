"""The novelty check: text of a reply in neither its sources nor the end model's trained phrasing.

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/scoring/test_novelty.py
"""

from __future__ import annotations

import json

import pytest

from endcloud.errors import DataError
from endcloud.scoring.grounding import CHECKS, load_check
from endcloud.scoring.novelty import (GLUE_VERSION, Glue, NoveltyChecker, NoveltyScorer, novel_runs, shipped_glue,
                                      uncovered_runs)

# Training examples as the reader's are: (the text of the messages, the teacher's reply).
# Each reply copies its knowledge and wraps it in the shop's phrasing.
ZH_TRAINING = [
    ("纯棉方巾 价格128元 库存82件", "亲，纯棉方巾的价格是128元哦。"),
    ("经典羊毛袜子 价格40元", "亲，经典羊毛袜子的价格是40元哦。"),
    ("竹纤维浴巾 产地：浙江", "亲，竹纤维浴巾的产地是浙江哦。"),
    ("加厚珊瑚绒毯 适用人群：儿童", "您好，加厚珊瑚绒毯的适用人群是儿童哦。"),
    ("真丝枕套 品牌：云朵", "您好，真丝枕套的品牌是云朵哦。"),
]
EN_TRAINING = [
    ("Clear Shield Screen Protector price 12.99", "Hi, the Clear Shield Screen Protector is $12.99. Anything else?"),
    ("Rapid Charge Cable price 9.50", "Hi, the Rapid Charge Cable is $9.50. Anything else?"),
    ("Leather Wallet Case stock 0", "Sorry, the Leather Wallet Case is out of stock right now."),
    ("Magnetic Car Mount stock 0", "Sorry, the Magnetic Car Mount is out of stock right now."),
]


@pytest.fixture(scope="module")
def glue():
    return Glue.learn(ZH_TRAINING + EN_TRAINING)


def test_a_garbled_product_name_is_novel_and_the_copied_one_is_not(glue):
    knowledge = ["Shop knowledge:\n- 烟酰胺亮肤精华（SKU 100234）价格229元，库存15件", "云朵美妆"]
    assert novel_runs("亲，烟酰胺亮肤精华的价格是229元哦。", knowledge, glue) == []
    assert novel_runs("亲，禾韩烻酰胺亮肤精华的价格是229元哦。", knowledge, glue) == ["禾韩烻"]


def test_an_english_garbled_name_is_novel_and_the_learned_phrasing_is_not(glue):
    knowledge = ["Shop knowledge:\n- Clear Shield Tempered Glass Screen Protector, price 14.99, stock 30"]
    assert novel_runs("Hi, the Clear Shield Tempered Glass Screen Protector is $14.99. Anything else?", knowledge, glue) == []
    # case and width do not matter (NFKC + lower case)
    assert novel_runs("ＨＩ, THE CLEAR SHIELD Tempered Glass Screen Protector is $14.99.", knowledge, glue) == []
    # "the" is glue alone, not beside a made-up word: a run is judged whole
    assert novel_runs("Hi, the ClearSlear Shield Tempered Glar Screen Protector is $14.99.", knowledge, glue) == [
        "the clearslear", "glar"]


def test_a_value_remembered_from_training_shops_is_novel(glue):
    knowledge = ["Shop knowledge:\n- 玻尿酸保湿面霜 适用人群：干性皮肤 价格168元"]
    assert novel_runs("亲，玻尿酸保湿面霜的适用人群是干性皮肤哦。", knowledge, glue) == []
    runs = novel_runs("亲，玻尿酸保湿面霜的适用人群是日常训练哦。", knowledge, glue)
    assert len(runs) == 1 and "日常训练" in runs[0], runs


def test_digits_are_left_to_the_grounding_check(glue):
    knowledge = ["纯棉方巾 价格128元"]
    # a wrong number is no novel text (the grounding check faults it) ...
    assert novel_runs("亲，纯棉方巾的价格是138元哦。", knowledge, glue) == []
    assert uncovered_runs("a 4096 b", "nothing") == ["a", "b"]  # ... and a number ends a run
    # a word holding letters is a word, digits or not
    assert novel_runs("Hi, the Rapid Charge Cable X9, $9.50.", ["Rapid Charge Cable price 9.50"], glue) == ["x9"]


def test_punctuation_ends_a_run_and_whitespace_does_not():
    assert uncovered_runs("foo bar, baz", "") == ["foo bar", "baz"]
    assert uncovered_runs("甲乙。丙", "") == ["甲乙", "丙"]


def test_a_character_is_covered_by_a_window_with_a_neighbour():
    # "精" alone is in the source, but neither "禾精" nor "精禾" is: a lone shared character proves nothing
    assert uncovered_runs("禾精禾", "烟酰胺精华") == ["禾精禾"]
    assert uncovered_runs("精华禾", "烟酰胺精华") == ["禾"]


def test_earlier_assistant_replies_are_not_evidence(glue):
    scorer = NoveltyScorer(glue)
    convo = [{"role": "system", "content": "Shop knowledge:\n- 烟酰胺亮肤精华 价格229元"},
             {"role": "user", "content": "精华多少钱？"},
             {"role": "assistant", "content": "亲，禾韩烻酰胺亮肤精华的价格是229元哦。"},  # the model's own invention
             {"role": "user", "content": "还有货吗？"}]
    sources = scorer.evidence_for(convo)
    assert "禾韩烻" not in sources and "烟酰胺亮肤精华" in sources
    assert scorer.explain("亲，禾韩烻酰胺亮肤精华的价格是229元哦。", sources) == "禾韩烻"


def test_glue_needs_a_run_in_min_count_replies():
    once = [("纯棉方巾", "纯棉方巾包邮到家"), ("羊毛袜", "羊毛袜当天发出")]
    assert len(Glue.learn(once)) == 0  # "包邮到家" and "当天发出" each in one reply: no habit
    twice = once + [("真丝枕套", "真丝枕套包邮到家")]
    assert Glue.learn(twice).fragments == {"包邮到家"}
    assert Glue.learn(once, min_count=1).fragments == {"包邮到家", "当天发出"}
    with pytest.raises(DataError, match="min_count"):
        Glue(min_count=0)


def test_a_run_inside_a_fragment_is_accepted_and_glues_merge():
    a = Glue(frozenset({"帮您转人工客服确认一下哦"}))
    b = Glue(frozenset({"anything else"}))
    assert a.accepts("人工客服") and not a.accepts("客服人工") and not a.accepts("")
    assert not a.accepts("一下哦\x00anything")  # fragments are never joined into one run
    both = a.merge(b)
    assert both.fragments == a.fragments | b.fragments and both.accepts("else") and both.accepts("转人工")


def test_glue_save_load_round_trip(tmp_path, glue):
    path = glue.save(tmp_path / "glue.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == GLUE_VERSION and data["min_count"] == 2 and data["examples"] == len(ZH_TRAINING + EN_TRAINING)
    assert data["fragments"] == sorted(glue.fragments)
    back = Glue.load(path)
    assert back.fragments == glue.fragments and back.min_count == glue.min_count and back.meta["examples"] == 9
    data["version"] = GLUE_VERSION + 1
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match="version"):
        Glue.load(path)
    with pytest.raises(DataError, match="cannot read"):
        Glue.load(tmp_path / "missing.json")


def test_the_shipped_readers_glue_loads_and_matches_its_recipe():
    from endcloud.end.reader import ASSET_DIR, GLUE_NAME, RECORD_NAME, reader_base

    if reader_base() is None:
        pytest.skip("this install ships no shop reader")
    glue = shipped_glue()
    assert len(glue) > 20 and glue.min_count == 2
    assert glue.accepts("亲") and glue.accepts("帮您转人工客服") and glue.accepts("anything else")
    record = json.loads((ASSET_DIR / RECORD_NAME).read_text(encoding="utf-8"))
    # learned from the recipe the shipped weights were built by. The example count may differ
    # from the record's: the recipe's data is the offline teacher's answers, and the teacher
    # has improved since shop-reader-v1 was built (28,715 examples then, 29,220 now).
    assert glue.meta["fingerprint"] == record["fingerprint"] and glue.meta["recipe"] == record["recipe"]["name"]
    assert abs(glue.meta["examples"] - record["examples"]) <= 0.05 * record["examples"]
    assert Glue.load(ASSET_DIR / GLUE_NAME).fragments == glue.fragments


def test_the_checker_scores_the_share_of_units_that_are_not_novel(glue):
    checker = NoveltyChecker(glue)
    knowledge = ["烟酰胺亮肤精华 价格229元"]
    clean = checker.check("亲，烟酰胺亮肤精华的价格是229元哦。", knowledge)
    assert clean.clean and clean.score == 1.0 and clean.units == 14  # 229 is left out
    bad = checker.check("亲，禾韩烻酰胺亮肤精华的价格是229元哦。", knowledge)
    assert bad.novel == ["禾韩烻"] and bad.novel_units == 3 and bad.score == pytest.approx(1 - 3 / 16)
    assert checker.check("", knowledge).score == 1.0


def test_novelty_is_a_registered_reply_check(glue):
    assert "novelty" in CHECKS
    check = load_check("novelty")
    assert isinstance(check, NoveltyScorer) and check.name == "novelty"
    scorer = NoveltyScorer(glue)
    s = scorer.score(["亲，烟酰胺亮肤精华的价格是229元哦。", "亲，禾韩烻酰胺亮肤精华的价格是229元哦。"],
                     ["烟酰胺亮肤精华 价格229元"] * 2)
    assert s[0] == 1.0 and 0.0 < s[1] < 1.0
    with pytest.raises(DataError):
        scorer.score("a bare string", ["x"])


def test_eval_adds_a_novelty_column(tmp_path, glue):
    import csv

    from endcloud.kb import KnowledgeBase, ShopPack
    from endcloud.scoring import Evaluator, run_eval
    from endcloud.testing import LookupEndModel, LookupTeacher
    from tests.scoring.test_grounding import write_shop

    kb = KnowledgeBase(ShopPack.load(write_shop(tmp_path / "shop")))
    q = "纯棉方巾多少钱？"
    models = {"copies": LookupEndModel({q: "亲，纯棉方巾的价格是128元哦"}),
              "garbles": LookupEndModel({q: "亲，禾韩方巾的价格是128元哦"})}
    rep = run_eval([q], models, LookupTeacher({q: "纯棉方巾128元"}), out_dir=tmp_path / "out",
                   evaluator=Evaluator(similarity="char-ngram", matching="tfidf"), checks=[NoveltyScorer(glue, knowledge=kb)],
                   knowledge=kb)
    assert rep.summary["checks"] == ["novelty"]
    assert rep.summary["averages"]["copies"]["novelty"] == 1.0 and rep.summary["averages"]["garbles"]["novelty"] < 1.0
    with open(tmp_path / "out" / "components.csv", encoding="utf-8") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert rows["garbles"]["novelty_unsupported"] == "禾韩" and rows["copies"]["novelty_unsupported"] == ""
