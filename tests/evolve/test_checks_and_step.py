"""The pure parts of the loop: triggers, poisoning checks, caps, round scheduling."""

from __future__ import annotations

from endcloud.evolve import CheckSettings, EvolveSettings, check_label, decide, step, violations
from endcloud.evolve.gate import Metrics

from .conftest import DictTeacher, serve_turn


def test_checks_catch_pii_and_competitors_but_pass_shop_replies():
    assert "pii" in violations("亲，加我电话 138 1234 5678 聊")
    assert "pii" in violations("Email me at jane.doe@example.com")
    assert "competitor" in violations("亲，隔壁店更便宜哦，去别家买吧")
    assert "competitor" in violations("Honestly you should buy it from another store.")
    assert "competitor" in violations("MegaMart has it cheaper", CheckSettings(competitors=["MegaMart"]))
    assert check_label("亲，默认发中通快递，下午4点前下单当天发货。").ok
    assert check_label("This towel is 20x20 cm, ¥129, ships today before 16:00.").ok
    assert not check_label("").ok


def test_step_turns_dissatisfaction_into_cloud_labels(stores):
    conv, labels = stores
    teacher = DictTeacher({"能选快递吗": "亲，默认发中通快递哦"})
    serve_turn(conv, customer="c1", query="能选快递吗", end_text="在的", rating="down")
    serve_turn(conv, customer="c2", query="你好", end_text="亲，在的", rating="up")  # upvote reinforces
    serve_turn(conv, customer="c3", query="有发票吗", end_text="嗯", answered_by="cloud", cloud_text="亲，支持电子发票")
    rep = step(conversations=conv, labels=labels, teacher=teacher, settings=EvolveSettings(min_labels=3))
    got = {lab.trigger: lab for lab in labels.list()}
    assert set(got) == {"downvote", "upvote", "takeover"}
    assert got["downvote"].label == "亲，默认发中通快递哦" and teacher.calls == 1  # the same query went to the cloud
    assert got["takeover"].label == "亲，支持电子发票"
    assert rep.round_due and len(rep.round_labels) == 3
    # idempotent: a second step finds nothing new and asks the cloud nothing
    rep2 = step(conversations=conv, labels=labels, teacher=teacher, settings=EvolveSettings(min_labels=99))
    assert rep2.new_labels == 0 and teacher.calls == 1 and not rep2.round_due


def test_poisoned_upvotes_are_quarantined_and_caps_hold(stores):
    conv, labels = stores
    teacher = DictTeacher({})
    # 5% poison: 2 of 40 upvoted replies leak a phone number or send customers elsewhere
    for i in range(38):
        serve_turn(conv, customer=f"c{i}", query=f"第{i}个问题", end_text=f"亲，第{i}个问题的答案在详情页哦", rating=5)
    serve_turn(conv, customer="bad1", query="怎么联系你", end_text="亲，直接打我电话13812345678", rating=5)
    serve_turn(conv, customer="bad2", query="哪里便宜", end_text="亲，去隔壁店买更便宜", rating=5)
    # one customer floods upvotes: only `customer_cap` count
    for i in range(10):
        serve_turn(conv, customer="flood", query=f"刷{i}", end_text=f"亲，好的{i}", rating=5)
    settings = EvolveSettings(min_labels=1000, customer_cap=3)
    step(conversations=conv, labels=labels, teacher=teacher, settings=settings)
    q = {lab.customer: lab for lab in labels.list("quarantined") if lab.customer in ("bad1", "bad2")}
    assert q["bad1"].reason == "label_pii: PHONE" and q["bad2"].reason == "competitor"
    flood = labels.list(customer="flood")
    assert sum(lab.status == "pending" for lab in flood) == 3
    assert all(lab.reason == "customer_cap" for lab in flood if lab.status == "quarantined")
    pending_text = " ".join(lab.label for lab in labels.list("pending"))
    assert "13812345678" not in pending_text and "隔壁" not in pending_text


def test_gate_decision_is_not_worse_rule():
    champ = Metrics(final=0.50, fact_accuracy=0.40, leak_rate=0.0, n=10)
    assert decide(Metrics(0.49, 0.40, 0.0, 10), champ).promote  # within tolerance
    assert not decide(Metrics(0.40, 0.40, 0.0, 10), champ).promote  # worse final
    assert not decide(Metrics(0.60, 0.30, 0.0, 10), champ).promote  # worse facts
    r = decide(Metrics(0.70, 0.90, 0.1, 10), champ)  # better but leaks
    assert not r.promote and any("leak" in x for x in r.reasons)


def test_review_track_queues_doubts_and_human_verdicts_outrank_automatic_labels(stores):
    from endcloud.store.review import ReviewStore

    conv, labels = stores
    reviews = ReviewStore(labels.conn)
    teacher = DictTeacher({"能选快递吗": "亲，默认发中通快递哦", "有发票吗": "没有"})
    serve_turn(conv, customer="c1", query="能选快递吗", end_text="在的", rating="down")
    serve_turn(conv, customer="c2", query="有发票吗", end_text="嗯", rating="down")
    step(conversations=conv, labels=labels, teacher=teacher, settings=EvolveSettings(min_labels=99), reviews=reviews)
    queued = {it.query: it for it in reviews.pending()}
    assert set(queued) == {"能选快递吗", "有发票吗"} and queued["有发票吗"].cloud_reply == "没有"
    reviews.verdict(queued["能选快递吗"].id, "edit", reviewer="alice", corrected_text="亲，默认中通，可备注顺丰（到付）")
    reviews.verdict(queued["有发票吗"].id, "reject", reviewer="alice")
    rep = step(conversations=conv, labels=labels, teacher=teacher, settings=EvolveSettings(min_labels=1), reviews=reviews)
    assert [(lab.trust, lab.label) for lab in rep.round_labels] == [("human", "亲，默认中通，可备注顺丰（到付）")]
    assert any(lab.reason == "rejected_by_reviewer" for lab in labels.list("quarantined"))


def test_shadow_scoring_asks_the_cloud_once_per_turn_and_triggers_on_low_final(stores):
    from endcloud.scoring import Evaluator

    conv, labels = stores
    teacher = DictTeacher({"能选快递吗": "亲，默认发中通快递，下午4点前下单当天发货。"})
    serve_turn(conv, customer="c1", query="能选快递吗", end_text="嗯嗯")  # end-answered, no score recorded
    ev = Evaluator(similarity="char-ngram", matching="tfidf")
    settings = EvolveSettings(min_labels=99, shadow_share=1.0)
    rep = step(conversations=conv, labels=labels, teacher=teacher, settings=settings, evaluator=ev)
    assert rep.shadow_scored == 1
    assert [lab.trigger for lab in labels.list()] == ["low_score"]
    assert labels.list()[0].label == "亲，默认发中通快递，下午4点前下单当天发货。"
    calls = teacher.calls
    rep2 = step(conversations=conv, labels=labels, teacher=teacher, settings=settings, evaluator=ev)
    assert rep2.shadow_scored == 0 and teacher.calls == calls  # the stored score is reused


def test_the_loops_alpha_and_theta_reach_the_rounds_evaluator(stores, tmp_path):
    from endcloud.end.adapters import AdapterRegistry
    from endcloud.evolve import Evolver, RoundOutcome
    from endcloud.scoring import PaperRule, default_evaluator

    conv, labels = stores
    serve_turn(conv, customer="c1", query="能选快递吗", end_text="在的", rating="down")
    serve_turn(conv, customer="c2", query="有发票吗", end_text="嗯", rating="down")
    specs = []

    def runner(spec):  # a round that trains nothing: the spec is what this test reads
        specs.append(spec)
        out = tmp_path / "candidate"
        out.mkdir(exist_ok=True)
        (out / "adapter_config.json").write_text("{}")
        return RoundOutcome(spec.round_id, str(out), False, {"candidate": {}, "reasons": ["test"]}, {}, 0.0)

    ev = Evolver(conversations=conv, labels=labels, teacher=DictTeacher({}), registry=AdapterRegistry(tmp_path / "adapters"),
                 base_dir=tmp_path, adapter_name="shop", heldout=[], runner=runner,
                 settings=EvolveSettings(min_labels=2, alpha=0.6, theta=0.3))
    assert ev.tick()["round"] is not None
    assert (specs[0].alpha, specs[0].theta) == (0.6, 0.3)
    assert default_evaluator(None, specs[0].alpha, specs[0].theta).rule == PaperRule(0.6, 0.3)
