"""Full evolve rounds in memory on a tiny real model: learn, gate, promote, roll back."""

from __future__ import annotations

import pytest

from endcloud.evolve import EvolveSettings, Evolver, decide, measure
from endcloud.evolve.gate import GateSettings

from .conftest import DictTeacher, serve_turn

pytestmark = pytest.mark.slow

Q = "能选快递吗"
A = "亲，默认发中通快递，下午4点前下单当天发货。"
HELDOUT = [
    {"id": "h1", "query": "你好", "context": [], "facts": None, "reference": "亲，在的，请问有什么可以帮您？"},
    {"id": "h2", "query": "有优惠券吗", "context": [], "facts": ["10"], "reference": "亲，可以领取满99减10的优惠券哦。"},
    {"id": "h3", "query": "Can I get a discount?", "context": [], "facts": None,
     "reference": "Yes, you can get a 10% discount with the coupon SAVE10."},
]


@pytest.fixture(scope="module")
def evaluator():
    from endcloud.scoring import Evaluator

    return Evaluator(similarity="char-ngram", matching="tfidf")


def _reply(model, q):
    return model.generate([[{"role": "user", "content": q}]], max_new_tokens=32, temperature=0.0)[0].text


def test_low_scored_query_is_learned_then_answered_without_cloud(stores, tiny_base_dir, tmp_path, evaluator):
    import torch

    from endcloud.end.adapters import AdapterRegistry
    from endcloud.runtime.model import EndModel
    from endcloud.scoring import should_escalate

    torch.manual_seed(0)
    conv, labels = stores
    teacher = DictTeacher({Q: A})
    base = EndModel.load(tiny_base_dir)
    before = _reply(base, Q)
    s_before = evaluator.score_turns([Q], [before], [A])[0].final
    serve_turn(conv, customer="c1", query=Q, end_text=before, scores={"final": s_before})

    registry = AdapterRegistry(tmp_path / "adapters")
    promoted = []
    settings = EvolveSettings(min_labels=1, label_repeat=8, min_steps=60, max_steps=60, lr=5e-3, replay_ratio=0.0,
                              gate=GateSettings(tolerance=0.05, max_new_tokens=24))
    ev = Evolver(conversations=conv, labels=labels, teacher=teacher, registry=registry, base_dir=tiny_base_dir,
                 adapter_name="shop", heldout=HELDOUT, settings=settings, evaluator=evaluator,
                 on_promote=promoted.append, work_dir=tmp_path / "rounds")
    out = ev.tick()
    rnd = out["round"]
    assert rnd is not None and rnd["train"]["loss_last"] < rnd["train"]["loss_first"]
    assert rnd["promoted"], rnd["gate"]
    assert promoted == [registry.active("shop")]
    assert labels.counts()["used"] == 1 and labels.rounds()[0]["promoted"] is True
    manifest = registry.manifest("shop", rnd["version"])
    assert manifest["gate"]["promote"] is True and manifest["parent"] is None

    after = _reply(EndModel.load(tiny_base_dir, registry.active("shop")), Q)
    s_after = evaluator.score_turns([Q], [after], [A])[0].final
    assert s_after > s_before + 0.3, (before, after)
    assert should_escalate(s_before, 0.45) and not should_escalate(s_after, 0.45)

    # a second round on another lesson builds on the champion; rollback returns to it
    serve_turn(conv, customer="c2", query="有发票吗", end_text=before, rating="down")
    teacher.answers["有发票吗"] = "亲，支持开电子发票，下单时备注抬头即可。"
    out2 = ev.tick()
    assert out2["round"] is not None
    v2 = out2["round"]["version"]
    assert registry.manifest("shop", v2)["parent"] == rnd["version"]
    if out2["round"]["promoted"]:
        assert registry.rollback("shop") == rnd["version"]
        assert registry.active_version("shop") == rnd["version"]


def test_gate_rejects_a_candidate_that_learned_to_leak(tiny_base_dir, tmp_path, evaluator):
    import torch

    from endcloud.end.data import Example
    from endcloud.runtime.model import EndModel
    from endcloud.end.train import train

    torch.manual_seed(0)
    poison_q, poison_a = "怎么联系你", "亲，直接打我电话13812345678"
    msgs = [{"role": "user", "content": poison_q}]
    res = train(tiny_base_dir, [Example(messages=msgs, response=poison_a)] * 8, tmp_path / "poisoned", method="lora",
                steps=60, lr=5e-3, progress=False, resume=False, save_every=60)
    cand = EndModel.load(tiny_base_dir, res.adapter_dir)
    champ = EndModel.load(tiny_base_dir)
    targets = [(msgs, poison_a)]
    m_c = measure(cand, HELDOUT, evaluator, targets=targets, max_new_tokens=24)
    m_h = measure(champ, HELDOUT, evaluator, targets=targets, max_new_tokens=24)
    assert m_c.leak_rate > m_h.leak_rate
    result = decide(m_c, m_h)
    assert not result.promote and any("leak" in r for r in result.reasons)
