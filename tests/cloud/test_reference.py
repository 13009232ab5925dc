"""The reference teacher states the shop's true facts, in the customer's language, or says it does not know."""

from __future__ import annotations

import json
import unicodedata

import pytest

from endcloud.cloud import ReferenceTeacher, make_teacher
from endcloud.errors import ConfigError, RegistryError


def norm(s: str) -> str:
    return "".join(unicodedata.normalize("NFKC", s).lower().split())


def ask(t, *turns: str) -> str:
    roles = ["user", "assistant"]
    return t.reply([{"role": roles[i % 2], "content": x} for i, x in enumerate(turns)]).text


@pytest.fixture(scope="module")
def zh(zh_pack_dir):
    return make_teacher("reference", shop=zh_pack_dir)


@pytest.fixture(scope="module")
def en(en_pack_dir):
    return make_teacher("reference", shop=en_pack_dir)


@pytest.mark.parametrize("q, facts", [
    ("在吗", ["亲，在的"]),
    ("发什么快递？", ["中通"]),
    ("能指定顺丰吗", ["顺丰", "8元"]),
    ("今天下单今天能发货吗？", ["16:00"]),
    ("寄到西藏要多久", ["7天"]),
    ("520401029636", ["20x20cm", "纯棉"]),             # Table III: a bare number is a product id
    ("240101123456789", ["运输中", "75312345678"]),     # ... or an order number
    ("纯棉方巾多少钱？", ["19.9"]),
    ("珊瑚绒浴巾还有没有", ["缺货"]),
    ("不喜欢能退吗", ["7天"]),
    ("退款几天能到", ["3天"]),
    ("能便宜点吗", ["199", "20"]),
    ("需要开票", ["电子发票"]),
    ("收到的方巾有破损怎么办", ["48小时"]),
    ("地址写错了能改吗", ["发货前"]),
])
def test_zh_facts(zh, q, facts):
    reply = ask(zh, q)
    assert all(norm(f) in norm(reply) for f in facts), reply
    assert reply.startswith("亲") or reply.startswith("非常抱歉")


@pytest.mark.parametrize("q, facts", [
    ("Hello", ["how can i help"]),
    ("Can I choose the delivery service?", ["sf express", "$6"]),
    ("Which carrier will ship my order?", ["zto express"]),
    ("If I pay this afternoon, will it be dispatched today?", ["4 pm"]),
    ("What's the delivery time to Hawaii?", ["9 days"]),
    ("CC-1001", ["pure cotton", "20x20cm"]),
    ("Any update on my order 114-3941689-8772232?", ["in transit", "7531234"]),
    ("What's the price on the Face Towel?", ["$12.99"]),
    ("How many days do I have to return an item?", ["30 days"]),
    ("Is there a promo code I can use?", ["$10", "$99"]),
])
def test_en_facts(en, q, facts):
    reply = ask(en, q)
    assert all(norm(f) in norm(reply) for f in facts), reply


def test_frustration_apologises_then_gives_the_delivery_facts(zh, en):
    r = ask(zh, "真的太让人着急了，从昨天就一直等这个快递，都不敢出门。")
    assert r.startswith("非常抱歉") and "3天" in r
    r = ask(zh, "订单240101123456789怎么还没到啊！！")
    assert r.startswith("非常抱歉") and "运输中" in r and "75312345678" in r
    r = ask(en, "This is so frustrating. I've been waiting for this delivery since yesterday.")
    assert r.lower().startswith("i'm really sorry") and "5 days" in r


def test_honest_when_it_does_not_know(zh, en):
    assert "没有准确的信息" in ask(zh, "你们老板叫什么名字")
    assert "don't have reliable information" in ask(en, "What is the meaning of life?")
    assert "核对" in ask(zh, "999999999999")  # a number the shop does not know
    assert "哪款商品" in ask(zh, "多少钱")


def test_context_carries_the_product_and_replies_follow_the_customers_language(zh):
    assert "19.9" in ask(zh, "纯棉方巾是什么材质的", "亲，纯棉的哦", "多少钱？")
    r = ask(zh, "How much is 520401029636?")
    assert r.startswith("Hi!") and "19.9" in r  # an English question gets an English reply


def test_deterministic_and_replies_have_usage(zh):
    msgs = [{"role": "user", "content": "发什么快递？"}]
    a, b = zh.reply(msgs), zh.reply(msgs)
    assert a == b and a.source == "cloud" and a.usage.completion_tokens > 0 and a.cost == 0.0
    assert isinstance(zh, ReferenceTeacher) and zh.fingerprint.startswith("reference|")


def test_registry_errors():
    with pytest.raises(RegistryError, match="openai, reference"):
        make_teacher("gemini")
    with pytest.raises(ConfigError, match="no options"):
        make_teacher("reference", shop=".", shots=5)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_states_the_facts_on_the_synthetic_shops_eval_questions(tmp_path, lang):
    shopworld = pytest.importorskip("endcloud.corpus.shopworld")
    shop = tmp_path / "shop"
    shopworld.generate_shop(shop, lang=lang, sessions=30, seed=7, eval_per_intent=6)
    t = make_teacher("reference", shop=shop)
    rows = [json.loads(line) for line in (shop / "chats" / "eval.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) > 50
    misses = []
    for r in rows:
        reply = ask(t, r["query"])
        if not all(norm(f) in norm(reply) for f in r["facts"]):
            misses.append((r["intent"], r["query"], r["facts"], reply))
    # held-out phrasings, every intent, the paper's probes: all facts stated
    assert len(misses) <= len(rows) // 50, misses[:5]
    # and inside multi-turn conversations, where the question follows context
    chats = [json.loads(line) for line in (shop / "chats" / "chats.jsonl").read_text(encoding="utf-8").splitlines()]
    n = ok = 0
    for c in chats:
        msgs = c["messages"]
        for i, m in enumerate(msgs):
            if m["role"] == "assistant" and m.get("facts"):
                reply = t.reply([{"role": x["role"], "content": x["content"]} for x in msgs[:i]]).text
                n += 1
                ok += all(norm(f) in norm(reply) for f in m["facts"])
    assert n > 10 and ok >= 0.95 * n
