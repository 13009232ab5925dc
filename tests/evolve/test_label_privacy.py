"""A lesson holds no one else's personal data, and the poisoning cap counts who a token proves.

The loop re-asks the teacher with the stored query; a teacher that reads the shop's orders (the
offline one does) may answer with another customer's tracking number. The label is run through the
redactor after templating: whatever it still finds that is not a placeholder or a public id
quarantines the lesson, and the reason names the types. The cap is keyed on the customer a token
proved; anonymous chats, whose `user` label is unsigned, share one bucket.
"""

from __future__ import annotations

import pytest

from endcloud.evolve import EvolveSettings, step, vet_label
from endcloud.evolve.loop import ANONYMOUS, lesson_owner
from endcloud.kb import KnowledgeBase, ShopPack
from endcloud.privacy import public
from endcloud.store.labels import PseudoLabel
from tests.scoring.test_grounding import write_shop

from .conftest import DictTeacher, serve_turn

ALICE_ORDER, ALICE_TRACKING = "206356239797693974", "738116605083227"
BOB_ORDER, BOB_TRACKING = "543307238704310553", "YT7412365478963"


@pytest.fixture
def kb(tmp_path):
    root = write_shop(tmp_path / "shop")
    (root / "orders.csv").write_text(
        "order_id,sku,status,courier,tracking_no,ship_date,eta_days\n"
        f"{ALICE_ORDER},520401029636,派送中,中通,{ALICE_TRACKING},2026-12-01,2\n"
        f"{BOB_ORDER},599836375986,已发货,圆通,{BOB_TRACKING},2026-12-02,3\n", encoding="utf-8")
    return KnowledgeBase(ShopPack.load(root))


def test_another_customers_tracking_number_in_a_teacher_label_is_quarantined(stores, kb):
    conv, labels = stores
    conv.set_profile("alice", orders=[{"order_id": ALICE_ORDER, "status": "派送中", "courier": "中通",
                                       "tracking_no": ALICE_TRACKING}])
    # the teacher quotes the order row the query names: alice's own, and bob's asked by someone else
    teacher = DictTeacher({f"订单{ALICE_ORDER}到哪了": f"亲，您的订单{ALICE_ORDER}在派送，运单号{ALICE_TRACKING}",
                           f"订单{BOB_ORDER}到哪了": f"亲，订单{BOB_ORDER}已发货，圆通运单号{BOB_TRACKING}"})
    conv.open_session("~anon:mallory")
    serve_turn(conv, customer="alice", query=f"订单{ALICE_ORDER}到哪了", end_text="在的", rating=1)
    serve_turn(conv, customer="~anon:mallory", query=f"订单{BOB_ORDER}到哪了", end_text="在的", rating=1)
    step(conversations=conv, labels=labels, teacher=teacher, settings=EvolveSettings(min_labels=99), knowledge=kb)
    got = {lab.query: lab for lab in labels.list()}
    mine = got[f"订单{ALICE_ORDER}到哪了"]
    assert mine.status == "pending", mine.reason
    assert ALICE_TRACKING not in mine.label and "[" in mine.label  # her own data, learned as placeholders
    theirs = got[f"订单{BOB_ORDER}到哪了"]
    assert theirs.status == "quarantined"
    assert theirs.reason.startswith("label_pii: ") and "TRACKING" in theirs.reason, theirs.reason
    assert BOB_TRACKING not in " ".join(lab.label for lab in labels.list("pending"))


def test_a_label_of_placeholders_and_public_ids_passes_and_anything_else_names_its_type():
    before = public.public_values()
    public.install(["AB-2049-XL"])
    try:
        ok = PseudoLabel(source_id="m1", trigger="takeover", trust="auto", query="AB-2049-XL 有货吗",
                         label="亲，AB-2049-XL 有货，发货后[TRACKING_1]可查")
        assert vet_label(ok).ok
        bad = PseudoLabel(source_id="m2", trigger="takeover", trust="auto", query="怎么联系",
                          label="亲，加微信 shop_lina88 或打 +44 7700 900123，也可以发 invoice no. INV-2024-00871")
        verdict = vet_label(bad)
        assert not verdict.ok and verdict.reason.startswith("label_pii: ")
        kinds = set(verdict.reason.removeprefix("label_pii: ").split(","))
        assert {"HANDLE", "PHONE", "ORDER"} <= kinds, verdict.reason
    finally:
        public.install(before)


def test_the_cap_counts_the_proven_customer_and_all_anonymous_chats_together(stores):
    conv, labels = stores
    # one poisoner behind ten unsigned `user` labels, and a token-proven customer beside them
    for i in range(10):
        serve_turn(conv, customer=f"~anon:u{i}", query=f"刷{i}", end_text=f"亲，好的{i}", rating=5)
    for i in range(4):
        serve_turn(conv, customer="alice", query=f"问{i}", end_text=f"亲，答{i}", rating=5)
    step(conversations=conv, labels=labels, teacher=DictTeacher({}),
         settings=EvolveSettings(min_labels=1000, customer_cap=3, anonymous_cap=2))
    anon = labels.list(customer=ANONYMOUS)
    assert len(anon) == 10  # every anonymous lesson is credited to the one bucket, not to its label
    assert sum(lab.status == "pending" for lab in anon) == 2
    assert all(lab.reason == "customer_cap" for lab in anon if lab.status == "quarantined")
    alice = labels.list(customer="alice")
    assert sum(lab.status == "pending" for lab in alice) == 3


def test_anonymous_chats_still_teach_the_clouds_replies(stores):
    """The anonymous bucket caps what a customer steers (corrections, upvotes), not the cloud's
    replies to anonymous questions: a shop whose customers do not log in still learns."""
    conv, labels = stores
    for i in range(6):  # takeovers: the label is the cloud's text
        serve_turn(conv, customer=f"~anon:t{i}", query=f"问题{i}", end_text="嗯", answered_by="cloud",
                   cloud_text=f"亲，答案{i}")
    for i in range(4):  # corrections: the label is the customer's own text
        serve_turn(conv, customer=f"~anon:c{i}", query=f"价格{i}", end_text="亲，好的", correction=f"亲，改成{i}")
    step(conversations=conv, labels=labels, teacher=DictTeacher({}),
         settings=EvolveSettings(min_labels=1000, anonymous_cap=2))
    anon = labels.list(customer=ANONYMOUS)
    takeovers = [lab for lab in anon if lab.trigger == "takeover"]
    corrections = [lab for lab in anon if lab.trigger == "correction"]
    assert len(takeovers) == 6 and all(lab.status == "pending" for lab in takeovers)
    assert len(corrections) == 4 and sum(lab.status == "pending" for lab in corrections) == 2
    assert all(lab.reason == "customer_cap" for lab in corrections if lab.status == "quarantined")


def test_lesson_owner():
    assert lesson_owner("alice") == "alice"
    assert lesson_owner("~anon") == lesson_owner("~anon:bob") == ANONYMOUS
    assert lesson_owner(None) is None
