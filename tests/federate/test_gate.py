"""The same global adapter reaches two shops; each one's own gate decides (evolve.gate.decide, the
real one). It is better on shop A's held-out set and worse on shop B's: activated at A, refused
at B, B's champion untouched. The held-out metrics are constructed so the outcome is certain;
the path is the real one: a Flower evaluate instruction with `gate` → ShopClient → the gate →
each shop's AdapterRegistry."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install --no-deps -r requirements-federate.txt")

from endcloud.end.adapters import AdapterRegistry
from endcloud.evolve.gate import Metrics

pytestmark = pytest.mark.usefixtures("few_threads")


def _measure(table, registry):
    """adapter dir -> Metrics: the champion's (the active version, or the bare base) or the candidate's."""

    def run(adapter_dir):
        champion = registry.active("shop")
        is_champion = adapter_dir is None or (champion is not None and adapter_dir == champion)
        return table["champion" if is_champion else "candidate"]

    return run


def test_a_worse_global_adapter_is_refused_at_one_shop_and_activated_at_another(fed_shops, tiny_base_dir, tmp_path,
                                                                               fake_adapter):
    from endcloud.federate.client import ShopClient
    from endcloud.federate.shops import load_shop
    from endcloud.federate.weights import read_tensors

    shop = load_shop(fed_shops[0], base_dir=tiny_base_dir, heldout_size=4)
    reg_a, reg_b = AdapterRegistry(tmp_path / "a"), AdapterRegistry(tmp_path / "b")
    reg_b.activate("shop", reg_b.publish("shop", fake_adapter))  # B already serves a good adapter of its own
    a = ShopClient(shop, base_dir=tiny_base_dir, work_dir=tmp_path / "work-a", node="shop-a", registry=reg_a,
                   measure=_measure({"champion": Metrics(final=0.40, fact_accuracy=0.40, leak_rate=0.0, n=4),
                                     "candidate": Metrics(final=0.52, fact_accuracy=0.60, leak_rate=0.0, n=4)}, reg_a))
    b = ShopClient(shop, base_dir=tiny_base_dir, work_dir=tmp_path / "work-b", node="shop-b", registry=reg_b,
                   measure=_measure({"champion": Metrics(final=0.55, fact_accuracy=0.70, leak_rate=0.0, n=4),
                                     "candidate": Metrics(final=0.45, fact_accuracy=0.50, leak_rate=0.0, n=4)}, reg_b))
    config = {"round": 3, "gate": True, "share": "all", "lora_r": 2}
    template = a.ensure_template(config)
    global_arrays = [x + 0.01 for x in template.arrays(read_tensors(a.template_dir))]

    _, _, out_a = a.evaluate(global_arrays, config)
    _, _, out_b = b.evaluate(global_arrays, config)

    assert out_a == {"node": "shop-a", "promoted": 1}
    assert reg_a.active_version("shop") == "v1"
    m = reg_a.manifest("shop", "v1")
    assert m["federated"]["round"] == 3 and m["gate"]["promote"] and "better" in m["gate"]["reasons"][0]
    sent = read_tensors(reg_a.active("shop"))
    assert all(np.allclose(sent[n], g) for n, g in zip(template.names, global_arrays))  # what A serves is the global

    assert out_b == {"node": "shop-b", "promoted": 0}
    assert reg_b.active_version("shop") == "v1"  # B keeps serving its own champion
    rows = {r["version"]: r for r in reg_b.list("shop")}
    assert rows["v2"]["status"] == "rejected"
    reasons = reg_b.manifest("shop", "v2")["gate"]["reasons"]
    assert any("final 0.450 < champion 0.550" in r for r in reasons)
    assert b.guard.records[-1]["metrics"] == {"node": "shop-b", "promoted": 0}  # nothing of B's scores left


def test_the_gate_measures_real_models_when_none_is_injected(fed_shops, tiny_base_dir, tmp_path):
    """No injected metrics: the gate generates with the candidate and with the bare base on the
    shop's held-out set and scores both (Final, facts, leak probes) before deciding."""
    from endcloud.federate.client import ShopClient
    from endcloud.federate.shops import load_shop
    from endcloud.federate.weights import read_tensors
    from endcloud.scoring import default_evaluator

    shop = load_shop(fed_shops[1], base_dir=tiny_base_dir, heldout_size=4)
    reg = AdapterRegistry(tmp_path / "reg")
    c = ShopClient(shop, base_dir=tiny_base_dir, work_dir=tmp_path / "work", node="shop-c", registry=reg,
                   evaluator=default_evaluator(str(shop.workspace)))
    config = {"round": 1, "gate": True, "share": "all", "lora_r": 2}
    template = c.ensure_template(config)
    loss, n, out = c.evaluate(template.arrays(read_tensors(c.template_dir)), config)
    assert n == len(shop.eval_examples()) > 0 and np.isfinite(loss)
    m = reg.manifest("shop", c.activation.version)
    cand, champ = m["gate"]["candidate"], m["gate"]["champion"]
    assert cand["n"] == champ["n"] == len(shop.heldout) and 0.0 <= cand["final"] <= 1.0
    # the round-0 adapter (B = 0) is the base model itself: the same replies, the same scores
    assert cand["final"] == pytest.approx(champ["final"]) and out["promoted"] == int(c.activation.promoted)


def test_a_global_adapter_that_leaks_is_refused_even_when_it_scores_better(tmp_path, fake_adapter):
    """A poisoned shop may train the shared adapter to recite a phone number: whatever it gains
    elsewhere, the shop's gate vetoes a candidate whose leak probes leak more than its champion."""
    from endcloud.federate.activate import gate_and_activate

    reg = AdapterRegistry(tmp_path / "reg")
    table = {None: Metrics(final=0.40, fact_accuracy=0.40, leak_rate=0.0, n=8),
             "cand": Metrics(final=0.70, fact_accuracy=0.80, leak_rate=1 / 6, n=8)}
    act = gate_and_activate(reg, "shop", fake_adapter, lambda d: table["cand" if d is not None else None])
    assert not act.promoted and act.active is None
    assert any("leak rate" in r for r in act.gate["reasons"])
    assert reg.list("shop")[0]["status"] == "rejected"
