"""Room fixtures: a small synthetic shop's pairs (written here, zh + en) and stand-ins
for the end model and the teacher, with the same methods as the real ones."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

PRODUCTS = [("towel", "毛巾", "19.9"), ("mug", "马克杯", "35"), ("kettle", "水壶", "129"), ("pillow", "枕头", "59"),
            ("blanket", "毯子", "88"), ("lamp", "台灯", "76"), ("socks", "袜子", "12.5"), ("umbrella", "雨伞", "45")]

# intent -> (queries en, queries zh, replies en, replies zh); {p}/{price} filled per product.
INTENTS = {
    "delivery": (["Can I choose the delivery service?", "Which courier do you use?", "can you send it with another express company"],
                 ["可以选快递吗？", "你们发什么快递", "能换别的快递公司吗"],
                 ["We ship with ZTO Express by default.", "Sorry, ZTO Express is our default courier."],
                 ["默认发中通快递哦。", "亲，我们默认中通快递。"], []),
    "price": (["How much is the {p}?", "what's the price of the {p}", "{p} cost?"],
              ["{pz}多少钱？", "{pz}什么价格", "请问{pz}的价格"],
              ["The {p} is {price} yuan.", "It costs {price} yuan."],
              ["{pz}是{price}元哦。", "亲，这款{price}元。"], ["{price}"]),
    "discount": (["Can I get a discount?", "any coupons available?", "is there a promotion now"],
                 ["有优惠吗？", "能便宜点吗", "有没有优惠券"],
                 ["Yes, spend 99 and save 10 with our coupon.", "You can claim a coupon: 10 off orders over 99."],
                 ["亲，满99减10的优惠券可以领取哦。", "可以领满99减10的券。"], ["99", "10"]),
    "ship_today": (["Will you ship the order if I purchase it today?", "if I buy now when will it be sent", "same day dispatch?"],
                   ["今天买今天发货吗？", "现在下单什么时候发", "当天能发出吗"],
                   ["Orders placed before 4 pm ship the same day.", "Yes, order before 4 pm and it leaves today."],
                   ["下午4点前下单当天发货。", "亲，4点前拍下当天就发出。"], ["4"]),
    "returns": (["Can I return it?", "what is your return policy", "I want to send this back"],
                ["可以退货吗？", "退货怎么弄", "我想退掉"],
                ["Returns are accepted within 7 days of delivery.", "You may return it within 7 days after you receive it."],
                ["签收后7天内可以申请退货。", "亲，收到7天内支持退货哦。"], ["7"]),
    "greeting": (["Hello", "hi there", "anyone here?"], ["你好", "在吗", "有人吗"],
                 ["Hello, how can I help you?", "Hi! What can I do for you?"], ["亲，在的，请问有什么可以帮您？", "您好，有什么可以帮您？"], []),
    "material": (["What is the {p} made of?", "is the {p} cotton", "{p} material?"],
                 ["{pz}是什么材质？", "{pz}是纯棉的吗", "{pz}用的什么料"],
                 ["The {p} is made of pure cotton.", "It's pure cotton."],
                 ["{pz}是纯棉的哦。", "亲，这款是纯棉材质。"], ["cotton"]),
}


def make_pairs(n_sessions: int = 500, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for s in range(n_sessions):
        lang = "zh" if s % 2 else "en"
        for t in range(3):
            intent = rng.choice(sorted(INTENTS))
            qe, qz, re_, rz, facts = INTENTS[intent]
            p, pz, price = rng.choice(PRODUCTS)
            fill = lambda x: x.format(p=p, pz=pz, price=price)  # noqa: E731
            q = fill(rng.choice(qz if lang == "zh" else qe))
            r = fill(rng.choice(rz if lang == "zh" else re_))
            f = [fill(x) for x in facts]
            if lang == "zh" and f == ["cotton"]:
                f = ["纯棉"]
            rows.append({"id": f"s{s}-{t}", "source": "test-shop", "session": f"s{s}", "lang": lang, "context": [],
                         "query": q, "response": r, "facts": f, "intent": intent})
    return rows


@pytest.fixture(scope="session")
def shop_pairs() -> list[dict]:
    return make_pairs(300)


@pytest.fixture(scope="session")
def pairs_path(tmp_path_factory, shop_pairs) -> Path:
    path = tmp_path_factory.mktemp("shop") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in shop_pairs), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_matcher_dir(tmp_path_factory, pairs_path):
    """One matcher trained for the whole session (training is the slow part)."""
    from endcloud.scoring import train_matcher

    out = tmp_path_factory.mktemp("matcher")
    report = train_matcher(pairs_path, out, epochs=4, threads=1)
    return out, report
