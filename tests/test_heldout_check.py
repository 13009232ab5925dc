"""The held-out evaluation data (bench/heldout/) and its checker.

Both packs load as real shop packs; every questions.jsonl row is well formed, its expected
facts are really in its pack (a typo in an expectation fails here, not in a benchmark),
its SKU exists and a stock expectation agrees with the catalog. The checker is tried on
hand-made right and wrong replies, so a change to its rule that lets a wrong reply through
fails a test.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from endcloud.kb import ShopPack

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "bench" / "heldout"


def _load_check():
    spec = importlib.util.spec_from_file_location("heldout_check", HELDOUT / "check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("heldout_check", mod)  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


check = _load_check()
PACKS = {p.name: p for p in check.packs(HELDOUT)}
# the hand-written packs rules were developed on (bench/devpacks): checked the same way
DEVPACKS = ROOT / "bench" / "devpacks"
ALL_PACKS = {**PACKS, **{f"dev/{p.name}": p for p in check.packs(DEVPACKS)}}


def test_both_held_out_packs_are_there():
    assert set(PACKS) >= {"phone-accessories-en", "tea-shop-zh", "cosmetics-zh", "coffee-en"}
    assert (HELDOUT / "README.md").exists()
    assert set(ALL_PACKS) >= {"dev/pet-supplies-zh", "dev/outdoor-gear-en"} and (DEVPACKS / "README.md").exists()


@pytest.mark.parametrize("name", ["dev/pet-supplies-zh", "dev/outdoor-gear-en"])
def test_the_offline_teacher_on_the_development_packs(name):
    """The offline teacher, played turn by turn as the benchmarks play it (no customer data):
    a floor under what it does on the hand-written packs its rules were developed on, and
    every question the pack cannot answer handed off. (On the held-out packs it is measured,
    not tested: docs/benchmarks.md.)"""
    from endcloud.cloud.reference import ReferenceTeacher
    from endcloud.kb import KnowledgeBase

    pack = ShopPack.load(ALL_PACKS[name])
    teacher, facts = ReferenceTeacher(pack=pack, kb=KnowledgeBase(pack)), check.PackFacts.from_pack(pack)
    right = unanswerable = abstained = 0
    qs = check.load_questions(ALL_PACKS[name] / "questions.jsonl")
    for q in qs:
        turns = []
        for text in q.turns:
            turns.append({"role": "user", "content": text})
            turns.append({"role": "assistant", "content": teacher.reply(list(turns)).text})
        verdict = check.judge(turns[-1]["content"], q, facts)
        right += verdict.right
        unanswerable += q.unanswerable
        abstained += q.unanswerable and verdict.right
    # measured 2026-12-05: 64.4 % (outdoor-gear-en, 9/10 handed off) and 77.0 % (pet-supplies-zh, 11/11)
    assert right / len(qs) >= 0.6
    assert abstained >= unanswerable - 1


@pytest.fixture(scope="module", params=sorted(ALL_PACKS))
def pack_and_questions(request):
    pack = ShopPack.load(ALL_PACKS[request.param])
    return pack, check.PackFacts.from_pack(pack), check.load_questions(ALL_PACKS[request.param] / "questions.jsonl")


def test_pack_is_a_real_shop_with_enough_questions(pack_and_questions):
    pack, _, qs = pack_and_questions
    assert 20 <= len(pack.products) <= 30
    assert len(pack.faq) >= 10 and len(pack.policies) >= 5 and len(pack.orders) >= 3
    assert any(p.stock == 0 for p in pack.products) and any(p.stock > 0 for p in pack.products)
    assert len(qs) >= 40
    assert sum(q.unanswerable for q in qs) >= 5
    assert sum(len(q.turns) > 1 for q in qs) >= 3  # follow-ups that lean on the earlier turn


def test_every_expected_fact_is_in_the_pack(pack_and_questions):
    _, facts, qs = pack_and_questions
    problems = []
    for q in qs:
        for group in check.expected_facts(q):
            if not any(facts.has(a) for a in group):
                problems.append(f"{q.id}: none of {group} occurs in the pack")
        if q.sku is not None and q.sku not in facts.stock:
            problems.append(f"{q.id}: sku {q.sku!r} is not in the catalog")
        stock = (q.expect or {}).get("stock")
        if stock is not None and q.sku in facts.stock and (stock == "in") != (facts.stock[q.sku] > 0):
            problems.append(f"{q.id}: expects stock {stock!r} but the catalog holds {facts.stock[q.sku]}")
    assert problems == []


def test_pack_facts_catch_a_typo_in_an_expectation():
    facts = check.PackFacts.from_pack(ShopPack.load(PACKS["phone-accessories-en"]))
    assert facts.has("17.99") and facts.has("WELCOME10") and facts.has("Canada Post")
    assert not facts.has("17.98")
    assert not facts.has("7.99")  # only inside 17.99 / 27.99: glued to more digits


def test_malformed_rows_are_refused(tmp_path):
    bad = [
        {"id": "a", "turns": ["x"]},                                        # neither expect nor unanswerable
        {"id": "b", "turns": ["x"], "expect": {"all": ["1"]}, "unanswerable": True},
        {"id": "c", "turns": [], "expect": {"all": ["1"]}},
        {"id": "d", "turns": ["x"], "expect": {"stock": "out"}},            # stock without sku
        {"id": "e", "turns": ["x"], "expect": {"every": ["1"]}},
        {"id": "f", "turns": ["x"], "expect": {"none": ["1"]}},             # none alone checks nothing
    ]
    for row in bad:
        assert check.row_problems(row), row
        f = tmp_path / f"{row['id']}.jsonl"
        f.write_text(json.dumps(row) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=f"{f.name}:1"):
            check.load_questions(f)


def test_normalise_and_number_boundaries():
    assert check.contains("It's $17.99 today", "17.99")
    assert not check.contains("It's $117.99", "17.99")
    assert not check.contains("made in 2024", "20")
    assert check.contains("a 30-day window", "30")
    assert check.contains("ＵＳＰＳ Ground, ３–５ days", "usps")  # full-width letters
    assert check.contains("售价３６８元", "368")
    assert check.contains("1,299.00 dollars", "1299")
    assert check.contains("we can’t take it back", "can't")
    assert not check.contains("model 2 100W", "2100w")
    assert check.contains("2 x USB-C", "2x usb-c")


def _q(**kw):
    return check.Question.from_json({"id": "t", "turns": ["q"], **kw})


def test_answerable_right_and_wrong_replies():
    price = _q(expect={"all": ["32.99"]})
    assert check.judge("The GaN Duo 45W is $32.99.", price).right
    assert not check.judge("The GaN Duo 45W is $23.99.", price).right
    assert not check.judge("", price).right

    groups = _q(expect={"all": [["已发货", "发货了"], ["顺丰", "SF1402837465921"]]})
    assert check.judge("您的订单已发货，顺丰单号SF1402837465921", groups).right
    assert not check.judge("您的订单已发货，请耐心等待", groups).right

    anyq = _q(expect={"any": ["30 days", "30-day"]})
    assert check.judge("We offer a 30-day return window", anyq).right
    assert not check.judge("Returns within 14 days", anyq).right

    none = _q(expect={"all": ["14.99"], "none": ["9.99"]})
    assert check.judge("It is $14.99", none).right
    assert not check.judge("The 1m is $9.99 and the 2m is $14.99", none).right


def test_stock_replies():
    out = _q(expect={"stock": "out"}, sku="X")
    assert check.judge("Sorry, that one is out of stock right now.", out).right
    assert check.judge("这款目前缺货哦", out).right
    assert not check.judge("Yes, it's in stock and ships today!", out).right
    inq = _q(expect={"stock": "in"}, sku="X")
    assert check.judge("有货的亲，现在下单今天发", inq).right
    assert not check.judge("It is not in stock", inq).right
    assert not check.judge("It costs $19.99", inq).right


def test_unanswerable_rule():
    facts = check.PackFacts.from_pack(ShopPack.load(PACKS["phone-accessories-en"]))
    q = _q(unanswerable=True, turns=["is the rugged armor case drop tested? how many feet"])
    assert check.judge("I'm not sure about drop testing; let me check with a colleague.", q, facts).right
    assert check.judge("I don't have that information, a human agent will follow up.", q, facts).right
    assert not check.judge("Yes, it is drop tested to 10 feet.", q, facts).right        # no abstention
    assert not check.judge("I'm not sure, but probably 13 feet.", q, facts).right        # invented number
    assert not check.judge("Not sure about drops, but it costs $29.99.", q, facts).right  # a price claim
    zh = check.PackFacts.from_pack(ShopPack.load(PACKS["tea-shop-zh"]))
    health = _q(unanswerable=True, turns=["喝普洱熟茶能降血脂吗"], forbid=["可以降血脂", "有助于降"])
    assert check.judge("这个问题我不太清楚，建议咨询医生，我帮您转人工。", health, zh).right
    assert not check.judge("不太清楚具体数据，不过普洱熟茶有助于降血脂。", health, zh).right
    with pytest.raises(ValueError):
        check.judge("不清楚", health)  # the unanswerable rule needs the pack's facts
