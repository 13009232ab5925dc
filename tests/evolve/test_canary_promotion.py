"""`EvolveSettings(promotion="canary")`: a candidate that passes the gate starts a canary on
live traffic instead of taking every customer at once; "switch" (the default) activates it."""

from __future__ import annotations

import pytest

from endcloud.end.adapters import AdapterRegistry
from endcloud.end.canary import read_experiment
from endcloud.errors import ConfigError
from endcloud.evolve import EvolveSettings, Evolver, RoundOutcome

from .conftest import DictTeacher, serve_turn


def evolver(stores, tmp_path, promotion: str, promoted: list) -> tuple[Evolver, AdapterRegistry]:
    conv, labels = stores
    serve_turn(conv, customer="c1", query="能选快递吗", end_text="在的", rating="down")
    serve_turn(conv, customer="c2", query="有发票吗", end_text="嗯", rating="down")
    reg = AdapterRegistry(tmp_path / "adapters")
    champion = tmp_path / "champion"
    champion.mkdir()
    (champion / "adapter_config.json").write_text("{}")
    reg.publish("shop", champion)
    reg.activate("shop", "v1")

    def runner(spec):  # a round that trains nothing and passes the gate
        out = tmp_path / "candidate"
        out.mkdir(exist_ok=True)
        (out / "adapter_config.json").write_text("{}")
        return RoundOutcome(spec.round_id, str(out), True, {"candidate": {}, "reasons": ["better"]}, {}, 0.0)

    ev = Evolver(conversations=conv, labels=labels, teacher=DictTeacher({}), registry=reg, base_dir=tmp_path,
                 adapter_name="shop", heldout=[], runner=runner, on_promote=promoted.append,
                 settings=EvolveSettings(min_labels=2, promotion=promotion, canary_share=0.05))
    return ev, reg


def test_a_passing_candidate_starts_a_canary(stores, tmp_path):
    promoted: list = []
    ev, reg = evolver(stores, tmp_path, "canary", promoted)
    out = ev.tick()["round"]
    exp = read_experiment(reg, "shop")
    assert exp is not None and exp.running and (exp.champion, exp.candidate, exp.share) == ("v1", "v2", 0.05)
    assert out["canary"] == exp.id
    assert reg.active_version("shop") == "v1" and promoted == []  # nobody switched yet: the server ramps it


def test_switch_is_the_default_and_unknown_promotions_are_refused(stores, tmp_path):
    promoted: list = []
    ev, reg = evolver(stores, tmp_path, "switch", promoted)
    ev.tick()
    assert reg.active_version("shop") == "v2" and len(promoted) == 1 and read_experiment(reg, "shop") is None
    with pytest.raises(ConfigError, match="promotion"):
        EvolveSettings(promotion="blue-green")
