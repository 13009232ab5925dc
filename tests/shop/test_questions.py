"""The questions customers would ask of any pack, written from the pack's own content."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from endcloud.kb import ShopPack
from endcloud.kb.questions import KINDS, cloze, customer_questions, key_facts, loose_names
from endcloud.text import normalise

EN_CATALOG = """sku,name,price,stock,brand,frame size,colour
RC-100,Trail Tent 2P,189,12,Ridgeline,2-person,olive
RC-101,Trail Tent 4P,259,0,Ridgeline,4-person,sand
RC-200,Down Sleeping Bag,149.5,7,Northdown,regular,navy
RC-300,Titanium Camp Stove,64,31,Ember,compact,grey
"""
EN_POLICIES = """## Shipping
<!-- key: shipping -->
Orders ship within 2 business days. Shipping is free on orders over $80.

## Returns
<!-- key: returns -->
Returns are accepted within 30 days of delivery.
"""
EN_FAQ = [("Do you ship to Canada?", "Yes, we ship to Canada with Canada Post."),
          ("Can I pay by invoice?", "Business customers can pay by invoice within 14 days."),
          ("Do you sell gift cards?", "Yes, digital gift cards from $25.")]

ZH_CATALOG = """sku,name,price,stock,material,英文名
T-01,明前龙井绿茶,168,40,绿茶,Longjing Green Tea
T-02,高山乌龙茶,98,0,乌龙,High Mountain Oolong
T-03,陈年普洱茶饼,328,5,普洱,Aged Puer Cake
"""
ZH_POLICIES = """## 发货
<!-- key: shipping -->
每天17:00前付款当天发货。

## 退货
<!-- key: returns -->
签收后7天内可以退货。
"""


def write_pack(root: Path, lang: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if lang == "en":
        (root / "shop.yaml").write_text("name: Ridgeline Outdoor\nlanguage: en\ncurrency: USD\n", encoding="utf-8")
        (root / "catalog.csv").write_text(EN_CATALOG, encoding="utf-8")
        (root / "policies.md").write_text(EN_POLICIES, encoding="utf-8")
        faq = EN_FAQ
    else:
        (root / "shop.yaml").write_text("name: 一叶茶庄\nlanguage: zh\ncurrency: CNY\n", encoding="utf-8")
        (root / "catalog.csv").write_text(ZH_CATALOG, encoding="utf-8")
        (root / "policies.md").write_text(ZH_POLICIES, encoding="utf-8")
        faq = [("可以开发票吗？", "可以的，下单后3个工作日内开电子发票。")]
    (root / "faq.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n"
                                            for q, a in faq), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def en_pack(tmp_path_factory) -> ShopPack:
    return ShopPack.load(write_pack(tmp_path_factory.mktemp("q-en"), "en"))


@pytest.fixture(scope="module")
def zh_pack(tmp_path_factory) -> ShopPack:
    return ShopPack.load(write_pack(tmp_path_factory.mktemp("q-zh"), "zh"))


def test_same_seed_same_questions_and_every_kind_the_pack_supports(en_pack):
    a = customer_questions(en_pack, n=200, seed=3)
    assert a == customer_questions(en_pack, n=200, seed=3)
    assert [q.id for q in a] != [q.id for q in customer_questions(en_pack, n=200, seed=4)]
    kinds = Counter(q.kind for q in a)
    assert set(kinds) == set(KINDS), kinds
    # balanced: a small n still takes every kind
    assert set(q.kind for q in customer_questions(en_pack, n=len(KINDS), seed=0)) == set(KINDS)
    assert len({q.turns for q in a}) == len(a)  # no question asked twice


def test_expected_facts_come_from_the_pack(en_pack):
    knowledge = normalise(en_pack.knowledge_text())
    by_sku = {p.sku: p for p in en_pack.products}
    for q in customer_questions(en_pack, n=300, seed=0):
        if q.kind in ("price", "attribute", "switch", "faq", "faq-paraphrase", "policy-fact"):
            assert q.expect and all(normalise(f) in knowledge for f in q.expect), q
        if q.kind == "price":
            assert q.expect == (by_sku[q.ref].price_text,)
        if q.kind == "stock":
            assert q.expect == ("in stock" if by_sku[q.ref].stock > 0 else "out of stock",)
        if q.kind in ("unanswerable", "policy-topic"):
            assert q.expect == ()


def test_products_are_named_loosely_and_only_by_parts_that_name_one_product(en_pack):
    tent2 = next(p for p in en_pack.products if p.sku == "RC-100")
    names = loose_names(tent2, en_pack.products, "en")
    assert names[0] == "Trail Tent 2P" and names[-1] == "RC-100" and "Tent 2P" in names
    assert "Tent" not in names and "Trail Tent" not in names  # those name both tents
    asked = " ".join(q.query for q in customer_questions(en_pack, n=300, seed=0) if q.kind in ("price", "stock"))
    assert "Sleeping Bag" in asked and "RC-300" in asked and "Camp Stove" in asked


def test_follow_ups_refer_back_or_switch_product(en_pack):
    qs = customer_questions(en_pack, n=300, seed=0)
    by_sku = {p.sku: p for p in en_pack.products}
    pronouns = [q for q in qs if q.kind == "pronoun"]
    switches = [q for q in qs if q.kind == "switch"]
    assert pronouns and switches
    for q in pronouns:
        assert len(q.turns) == 2 and not any(n in q.turns[1] for n in (by_sku[q.ref].name, q.ref))
    for q in switches:
        assert len(q.turns) == 2 and q.expect == (by_sku[q.ref].price_text,)
        assert by_sku[q.ref].name not in q.turns[0]
    msgs = pronouns[0].messages(["It is 189 USD."])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]


def test_faq_paraphrases_policies_and_what_the_pack_cannot_answer(en_pack):
    qs = customer_questions(en_pack, n=300, seed=0)
    paras = [q for q in qs if q.kind == "faq-paraphrase" and q.ref == "faq:1"]
    assert len(paras) >= 2 and all(q.expect == ("14 days",) for q in paras)
    assert all(q.query != "Can I pay by invoice?" for q in paras)
    facts = {q.query: q.expect for q in qs if q.kind == "policy-fact"}
    assert facts["Returns are accepted within how many days of delivery?"] == ("30 days",)
    assert facts["Orders ship within how many business days?"] == ("2 business days",)
    topics = [q.query for q in qs if q.kind == "policy-topic"]
    assert any("returns" in t.lower() for t in topics)
    none = [q.query for q in qs if q.kind == "unanswerable"]
    assert none and "Do you sell gift cards?" not in none  # this pack's FAQ answers it


def test_held_out_share_per_kind_and_never_the_same_question_in_both(en_pack):
    qs = customer_questions(en_pack, n=300, seed=0, heldout_share=0.25)
    for kind in KINDS:
        of = [q for q in qs if q.kind == kind]
        if len(of) >= 3:
            assert 1 <= sum(q.heldout for q in of) <= len(of) // 2 + 1, kind
    held = {q.turns for q in qs if q.heldout}
    assert held and not held & {q.turns for q in qs if not q.heldout}


def test_chinese_pack_in_its_languages(zh_pack):
    qs = customer_questions(zh_pack, n=300, seed=0)
    langs = Counter(q.lang for q in qs)
    assert langs["zh"] > 0 and langs["en"] > 0  # the catalog's English names ask in English too
    zh = [q for q in qs if q.lang == "zh"]
    assert any("乌龙茶" in q.query and q.expect == ("缺货",) for q in zh if q.kind == "stock")
    assert not any("Oolong" in q.query for q in zh)  # a Chinese name exists: Chinese questions use it
    assert any(q.expect == ("17:00",) and "几点" in q.query for q in zh if q.kind == "policy-fact")
    en = [q for q in qs if q.lang == "en" and q.kind == "price"]
    assert any("Oolong" in q.query and q.expect == ("98",) for q in en)
    only = customer_questions(zh_pack, n=300, seed=0, langs=["zh"])
    assert {q.lang for q in only} == {"zh"}


def test_cloze_and_key_facts():
    assert cloze("Returns are accepted within 30 days of delivery.", "en") == (
        "Returns are accepted within how many days of delivery?", "30 days")
    assert cloze("Orders paid before 4 pm ship today.", "en") == ("Orders paid before what time ship today?", "4 pm")
    assert cloze("每天17:00前付款当天发货。", "zh") == ("每天几点前付款当天发货？", "17:00")
    assert cloze("满199元减20元。", "zh") == ("满多少钱减20元？", "199元")
    assert cloze("We ship fast.", "en") is None
    assert key_facts("We ship with ZTO Express by default.", "en", avoid="Which courier?") == ["ZTO Express"]
    assert key_facts("Shipping is free over $49; otherwise $5.99.", "en") == ["$49", "$5.99"]
    assert key_facts("亲，在的。", "zh") == []
