"""The reference teacher: short, extractive, templated answers from any shop pack — its true
facts, in the customer's language — or the hand-off reply when the pack does not hold them."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from endcloud.cloud import ReferenceTeacher, make_teacher
from endcloud.cloud.reference import REPLIES
from endcloud.errors import ConfigError, RegistryError

UNKNOWN_ZH, UNKNOWN_EN = REPLIES["unknown"]["zh"], REPLIES["unknown"]["en"]


def norm(s: str) -> str:
    return "".join(unicodedata.normalize("NFKC", s).lower().split())


def ask(t, *turns: str, system: str | None = None) -> str:
    roles = ["user", "assistant"]
    msgs = [{"role": roles[i % 2], "content": x} for i, x in enumerate(turns)]
    return t.reply(([{"role": "system", "content": system}] if system else []) + msgs).text


@pytest.fixture(scope="module")
def zh(zh_pack_dir):
    return make_teacher("reference", shop=zh_pack_dir)


@pytest.fixture(scope="module")
def en(en_pack_dir):
    return make_teacher("reference", shop=en_pack_dir)


# Two shops unlike the generator's: their own columns (an English-name column, 产地, "frame
# material"), policy headings of their own wording and no `<!-- key: -->` comments.
TEA_CATALOG = """sku,name,price,stock,英文名,产地,规格,等级
T-LJ-01,西湖龙井,128,35,West Lake Longjing,浙江杭州,250g罐装,特级
T-BLC-02,洞庭碧螺春,96,0,Dongting Biluochun,江苏苏州,250g罐装,一级
T-TGY-03,安溪铁观音,88,60,Anxi Tieguanyin,福建安溪,500g袋装,一级
T-TGY-04,铁观音礼盒,168,8,Tieguanyin Gift Box,福建安溪,2x250g,特级
T-DHP-05,武夷大红袍,158,12,Wuyi Da Hong Pao,福建武夷山,200g礼盒,特级
T-CUP-06,青瓷茶杯,39,200,Celadon Tea Cup,浙江龙泉,150ml,
"""
TEA_POLICIES = """# 山间茶舍须知

## 寄送说明
我们统一使用顺丰快递寄出，江浙沪次日达。

下午三点前付款的订单当天寄出，之后付款的次日寄出。

## 关于退款
退款审核通过后，款项将在1到3个工作日内原路退回。

茶叶属于食品，拆封后不支持无理由退货。

## 联系我们
客服在线时间为每天9:00至21:00，晚上九点以后的留言次日回复。
"""
BIKE_CATALOG = """sku,name,price,stock,frame material,wheel size,weight,colour
BK-100,Trailblazer Mountain Bike,899,4,aluminium,29 inch,13.5 kg,black/green
BK-200,Cityglide Commuter Bike,649,0,steel,28 inch,15 kg,grey
BK-300,Aero Pro Road Bike,1499,2,carbon,28 inch,8.2 kg,red
AC-010,iPhone 15 Handlebar Phone Case,24.5,30,silicone,,,black
AC-011,iPhone 14 Handlebar Phone Mount,19.9,12,aluminium,,,silver
AC-020,LED Bike Light Set,35,50,,,,
"""
BIKE_POLICIES = """## Getting your bike to you
Bikes ship fully assembled with DHL Freight. Delivery takes 3 to 5 working days.

Orders paid before noon leave the workshop the same day.

## Changed your mind?
You can send a bike back within 30 days if it has not been ridden outside. Refunds reach your card within 7 days after we inspect the return.

## Workshop
Our workshop is open Monday to Saturday, 9:00 to 18:00. A free safety check is included in the first year.
"""


def _write_shop(root: Path, *, yaml: str, catalog: str, policies: str, faq: list[tuple[str, str]], orders: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "shop.yaml").write_text(yaml, encoding="utf-8")
    (root / "catalog.csv").write_text(catalog, encoding="utf-8")
    (root / "policies.md").write_text(policies, encoding="utf-8")
    (root / "faq.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n" for q, a in faq),
                                    encoding="utf-8")
    (root / "orders.csv").write_text(orders, encoding="utf-8")
    return root


def _teacher(tmp_path_factory, name: str, lang: str, currency: str, **files):
    """The reference teacher of a shop written from `files` (catalog, policies, faq, orders)."""
    root = tmp_path_factory.mktemp("shop")
    return make_teacher("reference", shop=_write_shop(root, yaml=f"name: {name}\nlanguage: {lang}\ncurrency: {currency}\n",
                                                      **files))


@pytest.fixture(scope="module")
def tea(tmp_path_factory):
    return _teacher(tmp_path_factory, "山间茶舍", "zh", "CNY", catalog=TEA_CATALOG, policies=TEA_POLICIES,
                    faq=[("茶叶怎么保存？", "请密封后放在阴凉干燥处，避免阳光直射。")],
                    orders="order_id,sku,status,courier,tracking_no\nTEA20240001,T-LJ-01,已发货,顺丰,SF1234567890123\n")


@pytest.fixture(scope="module")
def bike(tmp_path_factory):
    return _teacher(tmp_path_factory, "Spoke & Chain Cycles", "en", "EUR", catalog=BIKE_CATALOG, policies=BIKE_POLICIES,
                    faq=[("Do you offer test rides?", "Yes, test rides are free at our workshop. Please book a slot by email.")],
                    orders="order_id,status,courier,tracking_no\nSC-5001,shipped,DHL Freight,JD014600003SE\n")


@pytest.mark.parametrize("q, facts", [
    ("在吗", ["亲，在的"]),
    ("发什么快递？", ["中通"]),
    ("能指定顺丰吗", ["顺丰", "8元"]),
    ("今天下单今天能发货吗？", ["16:00"]),
    ("寄到西藏要多久", ["7天"]),
    ("520401029636", ["纯棉方巾", "19.9元", "有货"]),   # Table III: a bare number is a product id
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
    assert reply.startswith("亲")


@pytest.mark.parametrize("q, facts", [
    ("Hello", ["how can i help"]),
    ("Can I choose the delivery service?", ["sf express", "$6"]),
    ("Which carrier will ship my order?", ["zto express"]),
    ("If I pay this afternoon, will it be dispatched today?", ["4 pm"]),
    ("What's the delivery time to Hawaii?", ["9 days"]),
    ("CC-1001", ["Face Towel: 12.99 USD, in stock."]),
    ("Any update on my order 114-3941689-8772232?", ["in transit", "7531234"]),
    ("What's the price on the Face Towel?", ["Face Towel is 12.99 USD."]),
    ("How many days do I have to return an item?", ["30 days"]),
    ("Is there a promo code I can use?", ["$10", "$99"]),
])
def test_en_facts(en, q, facts):
    reply = ask(en, q)
    assert all(norm(f) in norm(reply) for f in facts), reply


def test_the_templates(zh, en, tea, bike):
    assert ask(zh, "纯棉方巾多少钱？") == "亲，纯棉方巾的价格是19.9元哦。"
    assert ask(en, "How much is the Bath Towel?") == "Bath Towel is 39 USD."
    assert ask(zh, "纯棉方巾有货吗") == "亲，纯棉方巾有货的，库存120件。"
    assert ask(zh, "珊瑚绒浴巾有货吗") == "亲，珊瑚绒浴巾目前缺货哦。"
    assert ask(en, "Is the Face Towel in stock?") == "Yes, Face Towel is in stock (40 left)."
    assert ask(en, "Is the Bath Towel in stock?") == "Sorry, Bath Towel is out of stock right now."
    assert ask(zh, "纯棉方巾是什么材质的") == "亲，纯棉方巾的材质是纯棉哦。"
    assert ask(en, "What colors does the Face Towel come in?") == "The colour of Face Towel is white."
    assert ask(zh, "SKU-BATH-02") == "亲，珊瑚绒浴巾价格89元，目前缺货。"
    assert ask(en, "CC-2002") == "Bath Towel: 39 USD, out of stock."
    assert ask(zh, "帮我查下订单240101123456789") == "亲，您的订单240101123456789运输中，中通运单号75312345678。"
    assert ask(en, "Any update on order 114-3941689-8772232?") == \
        "Your order 114-3941689-8772232 is in transit, ZTO Express tracking number 7531234."
    # a currency other than CNY is named by its code, and a Chinese question gets the Chinese template
    assert ask(bike, "What does the Cityglide cost?") == "Cityglide Commuter Bike is 649 EUR."
    assert ask(bike, "Cityglide多少钱？") == "亲，Cityglide Commuter Bike的价格是649 EUR哦。"
    assert ask(tea, "How much is the Longjing?") == "West Lake Longjing is 128 CNY."  # its English-name column
    for t, lang in ((zh, "zh"), (en, "en")):
        assert ask(t, "你好" if lang == "zh" else "Hello") == REPLIES["greeting"][lang]
        assert ask(t, "好的谢谢" if lang == "zh" else "ok thanks") == REPLIES["thanks"][lang]
        assert ask(t, "你是机器人吗" if lang == "zh" else "Are you a bot?") == REPLIES["bot"][lang]
    assert ask(tea, "你好，西湖龙井多少钱？") == "亲，西湖龙井的价格是128元哦。"  # a greeting before the question


def test_products_named_loosely_by_sku_or_english_name(tea, bike):
    assert ask(tea, "龙井多少钱？") == "亲，西湖龙井的价格是128元哦。"
    assert ask(tea, "西湖龙井是哪里产的") == "亲，西湖龙井的产地是浙江杭州哦。"
    assert ask(tea, "What grade is the Da Hong Pao?") == "The grade of Wuyi Da Hong Pao is 特级."
    assert ask(tea, "T-DHP-05") == "亲，武夷大红袍价格158元，有货。"
    assert ask(bike, "How much is the iphone 15 case?") == "iPhone 15 Handlebar Phone Case is 24.5 EUR."
    assert ask(bike, "What is the trailblazer made of?") == "The frame material of Trailblazer Mountain Bike is aluminium."
    assert ask(bike, "BK-300 weight?") == "The weight of Aero Pro Road Bike is 8.2 kg."
    assert ask(bike, "What wheel size does the mountain bike have?") == "The wheel size of Trailblazer Mountain Bike is 29 inch."
    # two products share the words named: no guess, the fact of each (a few at most)
    assert ask(tea, "铁观音多少钱") == "亲，安溪铁观音的价格是88元哦。亲，铁观音礼盒的价格是168元哦。"
    # ... and only what was asked: "when is it back" is not answered by their stock
    assert ask(tea, "铁观音什么时候补货") == UNKNOWN_ZH
    assert ask(bike, "how much is a bike?") == UNKNOWN_EN
    # an attribute the product has no value for is not made up
    assert ask(tea, "青瓷茶杯的等级是什么") == UNKNOWN_ZH
    assert ask(bike, "What's the wheel size of the LED Bike Light Set?") == UNKNOWN_EN


def test_follow_ups_take_the_product_or_the_question_from_earlier_turns(zh, tea, bike):
    assert ask(zh, "纯棉方巾是什么材质的", "亲，纯棉的哦", "多少钱？") == "亲，纯棉方巾的价格是19.9元哦。"
    assert ask(tea, "碧螺春有货吗？", "亲，洞庭碧螺春目前缺货哦。", "大红袍呢？") == "亲，武夷大红袍有货的，库存12件。"
    assert ask(tea, "大红袍有货吗", "亲，武夷大红袍有货的，库存12件。", "它产地是哪里？") == "亲，武夷大红袍的产地是福建武夷山哦。"
    # the product an assistant turn named counts too
    assert ask(bike, "Tell me about your road bike", "Aero Pro Road Bike: 1499 EUR, in stock.", "how much is it?") == \
        "Aero Pro Road Bike is 1499 EUR."
    assert ask(bike, "Is the Cityglide in stock?", "Sorry, Cityglide Commuter Bike is out of stock right now.",
               "and the road bike?") == "Yes, Aero Pro Road Bike is in stock (2 left)."
    # a follow-up on a policy is asked together with the question before it
    assert ask(zh, "发货后几天能到？", "亲，发货后一般3天送达。", "那新疆呢？") == "亲，发货后一般3天送达，偏远地区（新疆、西藏）7天左右送达。"
    # English asked about a zh shop's product is answered in English
    assert ask(zh, "How much is 520401029636?") == "纯棉方巾 is 19.9 CNY."


def test_policy_sections_titled_anything_are_quoted_one_sentence_verbatim(tea, bike):
    replies = {
        "你们用什么快递？": "亲，我们统一使用顺丰快递寄出，江浙沪次日达。",
        "退款多久到账": "亲，退款审核通过后，款项将在1到3个工作日内原路退回。",
        "客服几点下班": "亲，客服在线时间为每天9:00至21:00，晚上九点以后的留言次日回复。",
        "拆封了还能退吗": "亲，茶叶属于食品，拆封后不支持无理由退货。",
        "茶叶怎么保存": "亲，请密封后放在阴凉干燥处，避免阳光直射。",  # the FAQ's answer
    }
    for q, want in replies.items():
        assert ask(tea, q) == want, q
        assert want.removeprefix("亲，") in TEA_POLICIES + "请密封后放在阴凉干燥处，避免阳光直射。"
    assert ask(bike, "How long does delivery take?") == "Delivery takes 3 to 5 working days."  # the sentence with the number
    assert ask(bike, "When will my refund arrive?") == "Refunds reach your card within 7 days after we inspect the return."
    assert ask(bike, "What are your opening hours?") == "Our workshop is open Monday to Saturday, 9:00 to 18:00."
    assert ask(bike, "Do you offer test rides?") == "Yes, test rides are free at our workshop."


@pytest.mark.parametrize("q", ["你们老板叫什么名字", "有实体店吗", "999999999999", "多少钱"])
def test_hand_off_when_the_pack_does_not_hold_the_answer_zh(zh, tea, q):
    assert ask(zh, q) == UNKNOWN_ZH
    assert ask(tea, q) == UNKNOWN_ZH


@pytest.mark.parametrize("q", ["能开增值税专票吗", "可以分期付款吗", "可以刻字吗"])
def test_hand_off_on_topics_the_tea_shop_has_no_policy_for(tea, q):
    assert ask(tea, q) == UNKNOWN_ZH


@pytest.mark.parametrize("q", ["What is the meaning of life?", "Do you sell skateboards?", "Can I pay with PayPal?",
                               "Do you have a physical store?", "999999999999"])
def test_hand_off_when_the_pack_does_not_hold_the_answer_en(en, bike, q):
    assert ask(en, q) == UNKNOWN_EN
    assert ask(bike, q) == UNKNOWN_EN


def test_orders_from_the_customer_message_kept_masked(tea, bike):
    customer = "Customer:\norder order_id: [ORDER_1], item: 西湖龙井, status: 已发货, courier: 顺丰, tracking_no: [TRACKING_1]"
    assert ask(tea, "[ORDER_1]到哪了", system=customer) == "亲，您的订单[ORDER_1]已发货，顺丰运单号[TRACKING_1]。"
    assert ask(tea, "我的快递到哪了", system=customer) == "亲，您的订单[ORDER_1]已发货，顺丰运单号[TRACKING_1]。"
    assert ask(tea, "[ORDER_2]到哪了", system=customer) == UNKNOWN_ZH  # a masked order nobody told us about
    assert ask(tea, "[ORDER_1]到哪了") == UNKNOWN_ZH
    assert ask(tea, "我的订单TEA20240001到哪了", system=customer) == "亲，您的订单TEA20240001已发货，顺丰运单号SF1234567890123。"
    en_customer = "Customer:\norder order_id: A-778, item: helmet, status: delivered"
    assert ask(bike, "where is my order?", system=en_customer) == "Your order A-778 is delivered."
    assert ask(bike, "Where is my order SC-5001?") == "Your order SC-5001 is shipped, DHL Freight tracking number JD014600003SE."
    # a complaint naming an order gets the order's facts
    assert ask(bike, "SC-5001 is taking forever!!") == "Your order SC-5001 is shipped, DHL Freight tracking number JD014600003SE."


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
    # Held-out phrasings of every intent and the paper's probes. Products and orders are
    # looked up, so all of theirs; policy questions are answered only where the retrieved
    # sentence covers the question (the rest get the hand-off), and a bare SKU gets the
    # product line (name, price, stock) while the set expects its size and material.
    looked_up = {"price", "stock", "product_attr", "order_status"}
    assert not [m for m in misses if m[0] in looked_up], misses[:5]
    assert len(misses) <= 0.25 * len(rows), (len(misses), len(rows), misses[:5])
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
    assert n > 10 and ok >= 0.7 * n, (ok, n)


# A shop whose catalog has a notes column and a pack size in a name ("4包"), and whose policy
# writes markdown emphasis: what hand-written packs hold and generated ones do not.
GEAR_CATALOG = """sku,name,price,stock,weight,temp rating,notes
GR-T2-S,Northstar 2P Tent - Sage,349,14,1.9 kg,,"2 doors; peak height 104 cm; 3-season"
GR-T2-E,Northstar 2P Tent - Ember,349,0,1.9 kg,,"same tent, orange fly"
GR-PAD,AirLite Sleeping Pad,189,9,480 g,,"R-value 4.2; pump sack included"
GR-TAB,ClearRun Purification Tablets,14.5,40,20 g,,"30 tablets; wait 30 minutes before drinking"
GR-BAG,Polar Down Bag,429,3,1.1 kg,comfort -9°C,"850 fill power"
"""
GEAR_POLICIES = """## Getting your gear to you
Standard shipping is $12.95, **free on orders of $150 or more**. Express shipping costs $24.95.

## Changed your mind?
Return unused gear within 45 days. Return shipping is $9.95, deducted from the refund.
"""
LITTER_CATALOG = """商品编号,名称,单价,库存,规格
L-01,豆腐猫砂 原味 6L,25.8,200,6L/包
L-02,豆腐猫砂 绿茶味 6L×4包,89,35,6L×4
"""
LITTER_POLICIES = """## 关于寄送
实付满99元包邮；不满99元的订单收8元运费。

## 找我们
客服热线400-800-1234，每天9:00-21:00。
"""


@pytest.fixture(scope="module")
def gear(tmp_path_factory):
    return _teacher(tmp_path_factory, "Cairn Gear", "en", "CAD", catalog=GEAR_CATALOG, policies=GEAR_POLICIES,
                    faq=[("Which courier do you use?", "We ship with Canada Post.")],
                    orders="order_id,status,courier,tracking_no,ship_date\nCG-1,shipped,Canada Post,7001234,2025-06-02\n")


@pytest.fixture(scope="module")
def litter(tmp_path_factory):
    return _teacher(tmp_path_factory, "猫砂铺", "zh", "CNY", catalog=LITTER_CATALOG, policies=LITTER_POLICIES,
                    faq=[("发什么快递？", "默认发中通。")], orders="order_id,status\nM-1,待发货\n")


def test_typos_are_read_as_the_shops_words(gear):
    kb = gear.kb
    assert kb.spell("which courer do u use") == "which courier do u use"
    # the synonym table's words are the shop's too ("warranty" asks for the repair policy)
    assert kb.spell("is the airlite pad warrenty ok, how long is the retrun window") == \
        "is the airlite pad warranty ok, how long is the return window"
    assert kb.spell("my tnet poles") == "my tent poles"  # two letters swapped
    assert kb.spell("my tnte poles") == "my tnte poles"  # two edits from any word of this shop
    # ids, SKUs, placeholders, e-mail addresses and short words stay as written
    for text in ("GR-PAD", "[ORDER_1]", "mail me at retrn@example.com", "u r ok", "CG-1"):
        assert kb.spell(text) == text
    assert ask(gear, "which courer do you use") == "We ship with Canada Post."


def test_a_fact_the_card_does_not_hold_is_handed_off_or_read_from_the_row(gear, tea):
    # asked in words no column header uses: the clause of the row that says it
    assert ask(gear, "r value of the airlite pad?") == "AirLite Sleeping Pad: R-value 4.2."
    assert ask(gear, "peak height of the northstar 2p sage") == "Northstar 2P Tent - Sage: peak height 104 cm."
    # asked something the row does not hold: not the product's price-and-stock card
    assert ask(gear, "is the airlite pad machine washable?") == UNKNOWN_EN
    assert ask(tea, "西湖龙井能泡几次") == UNKNOWN_ZH
    # the product itself asked for: its card
    assert ask(gear, "tell me about the airlite pad") == "AirLite Sleeping Pad: 189 CAD, in stock."
    assert ask(tea, "想买个青瓷茶杯") == "亲，青瓷茶杯价格39元，有货。"


def test_products_tied_by_a_loose_name_each_get_the_fact(gear):
    assert ask(gear, "how much is the northstar 2p") == \
        "Northstar 2P Tent - Sage is 349 CAD. Northstar 2P Tent - Ember is 349 CAD."
    assert ask(gear, "when will the northstar 2p be back in stock?") == UNKNOWN_EN


def test_a_measure_word_names_no_product_and_markup_is_not_quoted(litter, gear):
    # "包" of "包邮" is not the "4包" of a litter pack: a shipping question, not that product
    assert ask(litter, "满多少包邮呀") == "亲，实付满99元包邮；不满99元的订单收8元运费。"
    assert ask(litter, "原味豆腐砂一包多少钱") == "亲，豆腐猫砂 原味 6L的价格是25.8元哦。"
    assert "**" not in ask(gear, "free shipping over how much?")
    assert "150" in ask(gear, "free shipping over how much?")


def test_a_header_word_asks_its_column_and_an_order_says_when_it_shipped(gear):
    assert ask(gear, "what temp is the polar bag good for") == "The temp rating of Polar Down Bag is comfort -9°C."
    assert ask(gear, "CG-1 when did it ship?") == \
        "Your order CG-1 is shipped (shipped on 2025-06-02), Canada Post tracking number 7001234."
    assert "2025-06-02" not in ask(gear, "where is CG-1")


def test_a_customer_giving_their_own_number_is_not_asking_for_the_shops(litter, gear):
    kb = litter.kb
    refs = lambda q: [sn.ref for sn in kb.search(q, k=3)]  # noqa: E731
    contact = next(sn.ref for sn in kb.search("客服热线", k=3) if sn.source == "policy")
    assert contact in refs("你们客服电话多少")
    assert contact not in refs("满多少包邮，有事打我电话13800138000")
    assert ask(litter, "你们客服电话多少") == "亲，客服热线400-800-1234，每天9:00-21:00。"


def test_follow_ups_about_an_order_or_a_products_row(gear):
    first = ask(gear, "my order is CG-1")
    assert "7001234" in first
    assert "2025-06-02" in ask(gear, "my order is CG-1", first, "when did it ship?")
    price = ask(gear, "how much is the airlite pad")
    assert ask(gear, "how much is the airlite pad", price, "is a pump sack included?") == \
        "AirLite Sleeping Pad: pump sack included."
    assert ask(gear, "how much is the airlite pad", price, "is it machine washable?") == UNKNOWN_EN


def test_the_cheapest_or_dearest_of_what_the_question_names(gear, litter):
    # of the products named equally loosely, the one priced lowest (ties: each)
    assert ask(gear, "whats ur cheapest tent") == \
        "Northstar 2P Tent - Sage: 349 CAD, in stock. Northstar 2P Tent - Ember: 349 CAD, out of stock."
    assert ask(litter, "豆腐猫砂哪款最便宜") == "亲，豆腐猫砂 原味 6L价格25.8元，有货。"
    # none named: those the previous message named, else the whole catalog
    tents = ask(gear, "do you have tents?")
    assert ask(gear, "do you have tents?", tents, "which one is cheapest?") == ask(gear, "whats ur cheapest tent")
    assert ask(litter, "你们家最贵的是哪个") == "亲，豆腐猫砂 绿茶味 6L×4包价格89元，有货。"
    assert ask(gear, "what's the most expensive thing you sell?") == "Polar Down Bag: 429 CAD, in stock."
    # a superlative of something else, or about a product named exactly, is not a price ranking
    assert "Tent" not in ask(gear, "what's the cheapest way to ship?")
    assert ask(gear, "is the airlite sleeping pad your cheapest?") == ask(gear, "is the airlite sleeping pad your best?")
