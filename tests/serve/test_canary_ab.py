"""An A/B test judged by the server's controller (`serve.canary.CanaryController`) on a clock:
the split stays fixed while it runs, a worse arm is rolled back at once, and at the end an
arm that is not worse is promoted. A real registry and SQLite; the engine is a recording double
(the live engine is exercised by test_canary.py)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from endcloud.end.adapters import AdapterRegistry
from endcloud.end.canary import read_experiment, start_ab
from endcloud.serve.canary import CanaryController

RULE = {"min_samples": 20, "stage_samples": 20, "margin_downvote": 0.3}
ids = itertools.count()


class Engine:
    """What the controller calls on the engine, recorded."""

    def __init__(self):
        self.adapter, self.variants, self.calls = "shop/v1", [], []

    def add_variant(self, label, path):
        self.variants.append(label)
        self.calls.append(("add", label))

    def drop_variant(self, label):
        self.variants.remove(label)
        self.calls.append(("drop", label))

    def swap_adapter(self, path):
        self.adapter = f"shop/{path.name}"
        self.calls.append(("swap", self.adapter))


def registry(tmp_path) -> AdapterRegistry:
    reg = AdapterRegistry(tmp_path / "adapters")
    for i in range(2):
        src = tmp_path / "src" / f"a{i}"
        src.mkdir(parents=True)
        (src / "adapter_config.json").write_text("{}")
        reg.publish("shop", src)
    reg.activate("shop", "v1")
    return reg


def turns(ctl, n, *, takeover_every: dict[str, int]):
    """`n` customers, one turn each, on whatever arm they are assigned."""
    for i in range(n):
        session = f"s{next(ids)}"
        label = ctl.assign(f"cust{i}-{session}", session) or ctl.engine.adapter
        arm = "candidate" if label == "shop/v2" else "champion"
        k = takeover_every.get(arm)
        route = "cloud" if k and i % k == 0 else "end"
        ctl.observe(SimpleNamespace(message_id=f"m{next(ids)}", session_id=session, adapter=label, end_text="ok",
                                    decision={"route": route, "signals": {"grounded": True}}, scores={}), 100.0)


def test_an_ab_split_is_fixed_until_its_time_then_the_candidate_that_is_not_worse_wins(tmp_path):
    reg, now = registry(tmp_path), [1000.0]
    clock = lambda: now[0]  # noqa: E731
    start_ab(reg, "shop", "v1", "v2", days=1, rule=RULE, clock=clock)
    ctl = CanaryController(registry=reg, name="shop", db_path=tmp_path / "endcloud.db", engine=Engine(), clock=clock)
    ctl.refresh()
    assert ctl.engine.variants == ["shop/v2"]
    turns(ctl, 400, takeover_every={})
    ctl.tick()
    exp = read_experiment(reg, "shop")
    assert exp.running and exp.share == 0.5 and ctl.last["action"] == "hold"  # healthy, yet the split holds
    now[0] += 86400 + 1
    ctl.tick()
    exp = read_experiment(reg, "shop")
    assert exp.state == "promoted" and reg.active_version("shop") == "v2"
    assert ctl.engine.calls[-2:] == [("swap", "shop/v2"), ("drop", "shop/v2")]  # the engine serves it before it goes
    ctl.stop()


def test_a_worse_arm_of_an_ab_test_is_rolled_back_before_its_time(tmp_path):
    reg, now = registry(tmp_path), [1000.0]
    clock = lambda: now[0]  # noqa: E731
    start_ab(reg, "shop", "v1", "v2", days=3, rule=RULE, clock=clock)
    ctl = CanaryController(registry=reg, name="shop", db_path=tmp_path / "endcloud.db", engine=Engine(), clock=clock)
    ctl.refresh()
    turns(ctl, 200, takeover_every={"candidate": 2})  # half the candidate's turns go to the cloud
    ctl.tick()
    exp = read_experiment(reg, "shop")
    assert exp.state == "rolled_back" and "takeover" in exp.reason
    assert reg.active_version("shop") == "v1" and reg.manifest("shop", "v2")["status"] == "rolled_back"
    assert ctl.engine.variants == [] and ctl.assign("anyone", "s-new") is None
    ctl.stop()
    # the counts survived in SQLite: a new controller (a restarted server) sees the same arms
    again = CanaryController(registry=reg, name="shop", db_path=tmp_path / "endcloud.db", engine=Engine(), clock=clock)
    arms = again.stats(read_experiment(reg, "shop"))
    assert arms["candidate"].turns + arms["champion"].turns == 200 and arms["candidate"].takeover > 40
    again.stop()
