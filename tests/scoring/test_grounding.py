"""The grounding check: the facts a reply states, zh + en, looked up in the evidence of its turn."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from endcloud.errors import RegistryError
from endcloud.scoring import CHECKS, Evaluator, GroundingChecker, GroundingScorer, load_check, run_eval
from endcloud.scoring.grounding import canonical_number, zh_number
from endcloud.testing import LookupEndModel, LookupTeacher

CHECKER = GroundingChecker(products=["纯棉方巾", "经典羊毛袜子", "Pure Cotton Face Towel"])


def write_shop(root):
    """A small zh shop pack: two products, a courier FAQ, shipping and refund policies."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "shop.yaml").write_text("name: 云朵织物\nlanguage: zh\ncurrency: CNY\nhotline: 400-820-8820\n", encoding="utf-8")
    (root / "catalog.csv").write_text("sku,name,price,stock,material\n520401029636,纯棉方巾,128,82,纯棉\n"
                                      "599836375986,经典羊毛袜子,40.9,0,羊毛\n", encoding="utf-8")
    (root / "faq.jsonl").write_text(
        json.dumps({"question": "默认发什么快递？", "answer": "亲，默认发中通快递哦，需要顺丰补8元差价。"}, ensure_ascii=False) + "\n"
        + json.dumps({"question": "退款多久到账？", "answer": "仓库收到退货后7天内原路退款。"}, ensure_ascii=False) + "\n",
        encoding="utf-8")
    (root / "policies.md").write_text(
        "# 店铺政策\n\n## 发货\n<!-- key: shipping -->\n\n每天17:00前付款的订单当天发货，发货后一般2天送达。\n\n"
        "满49元包邮，不满49元运费6元。\n\n## 退款\n<!-- key: refunds -->\n\n仓库收到退货验收后7天内退款，原路退回。\n",
        encoding="utf-8")
    return root


def kinds(text):
    return [(f.kind, f.text) for f in CHECKER.facts(text)]


def test_facts_are_read_in_both_languages_with_chinese_numerals():
    assert kinds("亲，纯棉方巾128元，库存82件，三天送达，下午4点前下单当天发顺丰") == [
        ("product", "纯棉方巾"), ("price", "128元"), ("count", "82件"), ("duration", "三天"), ("time", "下午4点"),
        ("courier", "顺丰")]
    assert kinds("The Pure Cotton Face Towel is $12.99, ships in 3-5 business days via UPS; 10% off until June 24") == [
        ("product", "Pure Cotton Face Towel"), ("price", "$12.99"), ("duration", "3-5 business days"), ("courier", "UPS"),
        ("percent", "10%"), ("date", "June 24")]
    assert kinds("订单543307238704310553已发货，运单号 SF1234567890，[PHONE_1] 联系您") == [
        ("id", "543307238704310553"), ("id", "SF1234567890"), ("placeholder", "[PHONE_1]")]
    # look-alikes of facts that are not facts: list markers, "快一点", "ups" as a word, 0 and 1
    assert kinds("1. 打开订单 2. 点击售后，快一点哦") == []
    assert kinds("ups and downs, 1 question") == []
    assert zh_number("一百二十八") == 128 and zh_number("十五") == 15 and zh_number("两") == 2 and zh_number("二零二四") == 2024
    assert canonical_number("1,299.00") == "1299" and canonical_number("12.50") == "12.5" and canonical_number("０８") == "8"


@pytest.mark.parametrize("reply,evidence", [
    ("这款¥128", "纯棉方巾价格128.00元"),
    ("这款１２８元", "价格128元"),  # full-width digits
    ("共1,299元", "总价1299元"),
    ("three days", "delivery takes 3 days"),
    ("三天送达", "发货后一般3天送达"),
    ("48小时内发货", "2天内发货"),  # compared in minutes
    ("七天无理由退货", "支持7天无理由退货"),
    ("下午4点前下单", "每天16:00前下单"),
    ("order by 4 pm", "orders before 16:00"),
    ("营业时间9:00-21:00", "客服早上9点到晚上9点在线"),
    ("可以发SF Express", "需要发顺丰的亲补8元"),
    ("6月24日发货", "发货日期：2024-06-24"),
    ("shipped on June 24", "ship_date: 2024-06-24"),
    ("12.99 USD", "price $12.99"),
    ("3-5 business days", "3 to 5 business days"),
    ("预计3天送达", "order eta_days: 3"),  # a bare number in the customer's orders row
    ("打九折", "全场9折"),
    ("百分之十的折扣", "10% off"),
    ("纯棉 方巾有货", "纯棉方巾（SKU 520401029636）"),
    ("您的订单[ORDER_1]已发货", "我的订单[ORDER_1]到哪了"),
    ("订单 5433 0723 8704 3105 53 已发货", "订单号：543307238704310553"),
    ("满299元减30元", "店铺优惠券：满299减30"),
])
def test_look_alikes_are_supported(reply, evidence):
    g = CHECKER.check(reply, [evidence])
    assert g.supported, [f.text for f in g.unsupported]
    assert g.score == 1.0 and g.facts


@pytest.mark.parametrize("reply,evidence,wrong", [
    ("纯棉方巾99元", "纯棉方巾价格128元", "99元"),
    ("这款82元", "库存82件", "82元"),  # the same number with another unit
    ("10% off today", "$10 off orders over $99", "10%"),
    ("4天送达", "发货后一般3天送达", "4天"),
    ("默认发圆通", "默认发中通快递", "圆通"),
    ("6月25日发货", "发货日期：2024-06-24", "6月25日"),
    ("18:00前下单当天发", "每天17:00前付款当天发货", "18:00"),
    ("您的订单[ORDER_2]已发货", "我的订单[ORDER_1]到哪了", "[ORDER_2]"),
    ("SKU 520401029637", "纯棉方巾（SKU 520401029636）", "520401029637"),
    ("满199减20", "店铺优惠券：满299减30", "199"),
    ("经典羊毛袜子有货", "纯棉方巾价格128元", "经典羊毛袜子"),
])
def test_wrong_facts_are_unsupported(reply, evidence, wrong):
    g = CHECKER.check(reply, [evidence])
    assert not g.supported and wrong in [f.text for f in g.unsupported]


def test_result_shape_and_score():
    g = CHECKER.check("亲，纯棉方巾99元，3天送达，默认中通", ["纯棉方巾价格128元", "发货后一般3天送达，默认中通快递"])
    assert [f.kind for f in g.facts] == ["product", "price", "duration", "courier"]
    assert g.supported is False and [f.text for f in g.unsupported] == ["99元"]
    assert g.score == pytest.approx(0.75)
    assert g.to_json()["unsupported"] == [{"kind": "price", "text": "99元", "values": ["99"]}]
    assert CHECKER.check("亲，在的，请问有什么可以帮您？", ["anything"]).score == 1.0  # no facts, nothing made up


def test_contradictions_numbers_and_free_claims():
    kb = ["满49元包邮，不满49元运费6元。", "仓库收到退货验收后7天内退款，原路退回。", "商品破损请拍照联系客服，给您免费补发或退款。"]
    c = CHECKER.contradictions
    assert c("运费全免哦", kb) == ["运费全免哦"]
    assert c("亲，全场一律免费", kb) == ["全场一律免费"]
    assert c("退款3天到账", kb) == ["3天"]
    assert c("满49元包邮，不满49元运费6元", kb) == []  # the condition the knowledge states
    assert c("退款7天内到账", kb) == [] and c("给您免费补发", kb) == []  # the same promise as the knowledge
    assert c("运费全免", ["新品上架"]) == []  # no fee stated: nothing to contradict
    en = ["Shipping is free on orders over $35; below that it costs $5.99.", "Refunds are issued within 7 days."]
    assert c("Free shipping on all orders!", en) == ["Free shipping on all orders"]
    assert c("Shipping is free on orders over $35.", en) == []
    assert c("Refunds take 3 days.", en) == ["3 days"]


def test_the_scorer_is_a_registered_reply_check(tmp_path):
    from endcloud.kb import KnowledgeBase, ShopPack

    assert "grounding" in CHECKS.names()
    with pytest.raises(RegistryError, match="valid: grounding"):
        load_check("nope")
    kb = KnowledgeBase(ShopPack.load(write_shop(tmp_path / "shop")))
    scorer = load_check("grounding", knowledge=kb)
    assert isinstance(scorer, GroundingScorer) and scorer.name == "grounding"
    ev = scorer.evidence_for([{"role": "user", "content": "纯棉方巾多少钱？"}])
    assert "128" in ev and "云朵织物" in ev  # the retrieved catalog row and the shop's profile
    got = scorer.score(["纯棉方巾128元哦", "纯棉方巾99元哦", "热线400-820-8820"], [ev, ev, ev])
    assert got.dtype == np.float64 and list(got) == [1.0, 0.5, 1.0]


def test_eval_adds_a_grounding_column(tmp_path):
    from endcloud.kb import KnowledgeBase, ShopPack

    kb = KnowledgeBase(ShopPack.load(write_shop(tmp_path / "shop")))
    q1, q2 = "纯棉方巾多少钱？", "退款多久到账？"
    cloud = LookupTeacher({q1: "纯棉方巾128元", q2: "仓库收到退货后7天内退款"})
    models = {"right": LookupEndModel({q1: "亲，纯棉方巾128元", q2: "7天内退款"}),
              "wrong": LookupEndModel({q1: "亲，纯棉方巾99元", q2: "3天到账"})}
    rep = run_eval([q1, q2], models, cloud, out_dir=tmp_path / "out", evaluator=Evaluator(similarity="char-ngram", matching="tfidf"),
                   checks=["grounding"], knowledge=kb)
    s = rep.summary
    assert s["checks"] == ["grounding"]
    assert s["averages"]["right"]["grounding"] == 1.0 and s["averages"]["cloud"]["grounding"] == 1.0
    assert s["averages"]["wrong"]["grounding"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    with open(tmp_path / "out" / "components.csv", encoding="utf-8") as f:
        rows = {(r["model"], r["query"]): r for r in csv.DictReader(f)}
    assert rows[("wrong", q1)]["grounding_unsupported"] == "99元" and rows[("wrong", q2)]["grounding"] == "0.0000"
    assert "| grounding |" in (tmp_path / "out" / "table.md").read_text(encoding="utf-8")


def test_eval_cli_offers_the_check_and_refuses_an_unknown_one(tmp_path, capsys):
    from endcloud.cli import main

    assert main(["eval", "--help"]) == 0
    assert "--check" in capsys.readouterr().out
    assert main(["eval", "-w", str(tmp_path), "--probes", "paper", "--check", "vibes", "-o", str(tmp_path / "o")]) == 2
    assert "unknown reply check 'vibes'; valid: grounding" in capsys.readouterr().err
