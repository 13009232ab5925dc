"""Lessons against the shop's knowledge: a label that contradicts it is quarantined; an order
reply is learned as a template ([ORDER_1]) instead of being quarantined for its order number."""

from __future__ import annotations

import pytest

from endcloud.evolve import EvolveSettings, step, vet_label
from endcloud.kb import KnowledgeBase, ShopPack
from endcloud.store.labels import PseudoLabel
from tests.scoring.test_grounding import write_shop

from .conftest import DictTeacher, serve_turn

ORDER = "543307238704310553"
TRACKING = "738116605083227"


@pytest.fixture
def kb(tmp_path):
    return KnowledgeBase(ShopPack.load(write_shop(tmp_path / "shop")))


def labels_by_query(labels):
    return {lab.query: lab for lab in labels.list()}


def test_corrections_contradicting_the_policies_are_quarantined(stores, kb):
    conv, labels = stores
    serve_turn(conv, customer="c1", query="包邮吗？运费多少？", end_text="满49元包邮", correction="运费全免，亲")
    serve_turn(conv, customer="c2", query="退款多久到账？", end_text="7天内", correction="退款3天到账")
    serve_turn(conv, customer="c3", query="纯棉方巾多少钱？", end_text="128元", correction="纯棉方巾99元")
    serve_turn(conv, customer="c4", query="退款多久到账？ ", end_text="嗯", correction="亲，仓库收到退货后7天内原路退款")
    serve_turn(conv, customer="c5", query="包邮吗", end_text="嗯", correction="亲，满49元包邮，不满49元运费6元")
    step(conversations=conv, labels=labels, teacher=DictTeacher({}), settings=EvolveSettings(min_labels=99), knowledge=kb)
    got = labels_by_query(labels)
    assert got["包邮吗？运费多少？"].status == "quarantined"
    assert got["包邮吗？运费多少？"].reason == "contradicts_knowledge: 运费全免"
    assert got["退款多久到账？"].status == "quarantined" and got["退款多久到账？"].reason == "contradicts_knowledge: 3天"
    assert got["纯棉方巾多少钱？"].reason == "contradicts_knowledge: 99元"
    # corrections that agree with the knowledge are learned
    assert got["退款多久到账？ "].status == "pending" and got["包邮吗"].status == "pending"


def test_a_reviewed_correction_is_checked_too(stores, kb):
    from endcloud.store.review import ReviewStore

    conv, labels = stores
    reviews = ReviewStore(labels.conn)
    good = reviews.add_item(query="默认发什么快递？", end_reply="圆通", cloud_reply="默认中通")
    bad = reviews.add_item(query="有优惠吗？", end_reply="没有", cloud_reply="没有")
    reviews.verdict(good, "edit", reviewer="lin", corrected_text="亲，默认发中通快递，发顺丰补8元差价")
    reviews.verdict(bad, "edit", reviewer="lin", corrected_text="亲，全场一律免费！")
    step(conversations=conv, labels=labels, teacher=DictTeacher({}), settings=EvolveSettings(min_labels=99),
         reviews=reviews, knowledge=kb)
    got = labels_by_query(labels)
    assert got["默认发什么快递？"].status == "pending" and got["默认发什么快递？"].trust == "human"
    assert got["有优惠吗？"].status == "quarantined" and got["有优惠吗？"].reason == "contradicts_knowledge: 全场一律免费"


def test_an_order_reply_is_learned_as_a_template(stores, kb):
    conv, labels = stores
    # the customer wrote the number; the cloud's reply (restored by the privacy gate) repeats it
    serve_turn(conv, customer="c1", query=f"我的订单{ORDER}到哪了", end_text="在的", answered_by="cloud",
               cloud_text=f"亲，您的订单{ORDER}已发货，中通快递，预计2天送达")
    # the customer wrote none: the order and its tracking number come from their profile's orders
    conv.set_profile("c2", orders=[{"order_id": "206356239797693974", "status": "派送中", "courier": "中通",
                                    "tracking_no": TRACKING}])
    serve_turn(conv, customer="c2", query="我的快递到哪了", end_text="在的", answered_by="cloud",
               cloud_text=f"亲，您的订单206356239797693974正在派送，运单号{TRACKING}")
    # someone else's number is still personal data the conversation does not hold
    serve_turn(conv, customer="c3", query="怎么联系你们", end_text="亲，打13812345678", rating=5)
    step(conversations=conv, labels=labels, teacher=DictTeacher({}), settings=EvolveSettings(min_labels=99), knowledge=kb)
    got = labels_by_query(labels)
    first = got[f"我的订单{ORDER}到哪了"]
    assert first.status == "pending", first.reason
    assert first.label == "亲，您的订单[ORDER_1]已发货，中通快递，预计2天送达"
    second = got["我的快递到哪了"]
    assert second.status == "pending", second.reason
    assert second.label == "亲，您的订单[ORDER_1]正在派送，运单号[ORDER_2]"
    assert ORDER not in " ".join(lab.label for lab in labels.list("pending"))
    third = got["怎么联系你们"]
    assert third.status == "quarantined" and third.reason == "label_pii: PHONE" and "13812345678" in third.label


def test_without_knowledge_only_the_template_and_content_checks_run():
    lab = PseudoLabel(source_id="m1", trigger="correction", trust="auto", query=f"订单{ORDER}到哪了",
                      label=f"订单{ORDER}已发货，运费全免")
    verdict = vet_label(lab)
    assert verdict.ok and lab.label == "订单[ORDER_1]已发货，运费全免"
