"""A federation over real loopback gRPC whose shops misbehave: one process dies mid-round, one
answers after the round's deadline, one sends a poisoned update. The round goes on with the rest.

The shops here are light Flower clients (fixed updates, no model) so the test is about the
server: who answered, who failed, who was caught, and the exact global that results."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install --no-deps -r requirements-federate.txt")

from endcloud.federate import _flower as fl
from endcloud.federate.server import FederationServer, FederationSettings
from endcloud.federate.weights import Template, read_tensors


class LightShop(fl.NumPyClient):
    def __init__(self, name, delta, examples, *, sleep_in_round=None, sleep_s=0.0):
        self.name, self.delta, self.examples = name, delta, examples
        self.sleep_in_round, self.sleep_s = sleep_in_round, sleep_s

    def fit(self, parameters, config):
        if config.get("round") == self.sleep_in_round:
            time.sleep(self.sleep_s)  # a straggler: slower than the round's deadline
        return [p + d for p, d in zip(parameters, self.delta)], self.examples, {"node": self.name}

    def evaluate(self, parameters, config):
        return 0.0, 0, {"node": self.name}


DROPPER = textwrap.dedent("""
    import os, sys
    import numpy as np
    from endcloud.federate import _flower as fl

    class Dropper(fl.NumPyClient):
        def fit(self, parameters, config):
            os._exit(3)  # the shop's machine dies mid-round: no reply, no goodbye

    fl.quiet(50)
    fl.run_client(sys.argv[1], Dropper(), max_message_length=1 << 20, max_retries=None, max_wait_time=60)
""")


@pytest.mark.slow
def test_the_round_goes_on_without_a_dropped_a_late_and_a_poisoned_shop(fake_adapter, tmp_path):
    fl.quiet(50)
    settings = FederationSettings(rounds=2, min_clients=6, round_timeout_s=6.0, connect_timeout_s=90, eval_every=0,
                                  gate=False, aggregator="screened")
    server = FederationServer(settings, init_dir=fake_adapter, out_dir=tmp_path / "out")
    address = server.start()
    t = Template.of(fake_adapter)
    g0 = t.arrays(read_tensors(fake_adapter))
    rng = np.random.default_rng(1)
    direction = [rng.normal(size=s).astype(np.float32) * 0.1 for s in t.shapes]
    honest = [LightShop(f"shop-{i}", [d + rng.normal(size=d.shape).astype(np.float32) * 0.01 for d in direction], n)
              for i, n in enumerate((10, 20, 30))]
    late = LightShop("late", direction, 5, sleep_in_round=1, sleep_s=15.0)
    mallory = LightShop("mallory", [d * -5.0 for d in direction], 40)
    dropper = subprocess.Popen([sys.executable, "-c", DROPPER, address], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    errors: list[BaseException] = []

    def run(shop):
        try:
            fl.run_client(address, shop, max_message_length=1 << 20, max_retries=0, max_wait_time=5)
        except BaseException as e:  # noqa: BLE001 - the late shop's stream is cut by the server
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in honest + [late, mallory]]
    for th in threads:
        th.start()
    try:
        report = server.run()
    finally:
        dropper.kill()
        dropper.wait(10)
    r1, r2 = report.rounds
    assert dropper.returncode == 3  # it was sent its round-1 instructions and died on them
    assert r1["sampled"] == 6 and r1["failed"] == 2  # the dead process and the straggler
    assert sorted(r1["answered"]) == ["mallory", "shop-0", "shop-1", "shop-2"]
    assert list(r1["flagged"]) == ["mallory"] and r1["applied"]
    # the federation carried on: round 2 ran with whoever was still there, the poisoner caught again
    assert r2["applied"] and list(r2["flagged"]) == ["mallory"] and r2["failed"] == 0
    assert {"shop-0", "shop-1", "shop-2", "mallory"} <= set(r2["answered"])
    # the global: each round, the unflagged answers' updates weighted by their examples, nothing else
    shops = {s.name: s for s in honest + [late, mallory]}
    want = [g.astype(np.float64) for g in g0]
    for r in (r1, r2):
        used = [shops[n] for n in r["answered"] if n not in r["flagged"]]
        total = sum(s.examples for s in used)
        want = [w + sum(s.examples * s.delta[j] for s in used) / total for j, w in enumerate(want)]
    final = read_tensors(report.global_dir)
    assert all(np.allclose(final[name], w, atol=1e-5) for name, w in zip(t.names, want))
