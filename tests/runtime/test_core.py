"""The engine core's loop (`endcloud.runtime.core`), which both continuous batchers run: a
real `Scheduler` on the tiny fixture model behind a scripted transport (arrivals per
`receive` call, reports and failures recorded)."""

from __future__ import annotations

import pytest

from endcloud.runtime.scheduler import StepRequest, Scheduler
from endcloud.errors import DataError
from endcloud.runtime.core import EngineCore


class Script(EngineCore):
    """A transport double: `arrivals[i]` is what the i-th `receive` takes in; when the
    script is done and the core would block, it stops."""

    def __init__(self, build, arrivals, *, window_s: float = 0.0):
        super().__init__(build, max_batch=4, window_s=window_s, max_wait_s=max(window_s, 0.05))
        self.arrivals = list(arrivals)
        self.reports, self.failed = [], []

    def receive(self, timeout):
        if self.arrivals:
            for key, req in self.arrivals.pop(0):
                self.put(key, req)
        elif timeout is None:
            self.stopping = True

    def report(self, report):
        self.reports.append(report)

    def fail(self, requests, error):
        self.failed += [(r, error) for r in requests]


@pytest.fixture(scope="module")
def weights(end_model):
    return end_model.variant.weights


def req(end_model, text: str, n: int = 3) -> StepRequest:
    return StepRequest(end_model.prompt_ids([{"role": "user", "content": text}]), n)


def test_a_new_variant_waits_for_the_running_batch_to_drain(end_model, weights):
    """Requests of variant B arrive while A's batch runs: they start only when it is empty,
    on a scheduler built for B; every reply runs wholly on one scheduler."""
    built = []

    def build(key):
        built.append(key)
        return Scheduler(weights, stop_ids=[], max_batch=4)

    a1, a2, b1 = req(end_model, "hello", 6), req(end_model, "hi", 2), req(end_model, "在吗", 3)
    core = Script(build, [[("A", a1)], [("A", a2), ("B", b1)]])
    core.run()
    assert built == ["A", "B"]
    assert all(r.done and len(r.tokens) == r.max_new_tokens for r in (a1, a2, b1))
    finished = [e.request for rep in core.reports for e in rep.events if e.finished]
    assert finished.index(b1) > max(finished.index(a1), finished.index(a2))  # B after A drained
    assert core.stats()["finished"] == 3 and core.stats()["steps"] > 0


def test_a_request_cancelled_before_admission_leaves_as_a_cancelled_event(end_model, weights):
    a, b = req(end_model, "hello", 4), req(end_model, "hi", 4)
    b.cancel()
    core = Script(lambda key: Scheduler(weights, stop_ids=[], max_batch=4), [[("A", a), ("B", b)]])
    core.run()
    ends = [e for rep in core.reports for e in rep.events if e.request is b]
    assert [(e.token, e.finished) for e in ends] == [(None, True)] and b.done and not b.tokens
    assert a.done and len(a.tokens) == 4


def test_refused_and_unbuildable_requests_fail_alone(end_model, weights):
    """A prompt the scheduler can never hold is refused (DataError); a variant whose scheduler
    cannot be built fails its own requests; the others are served."""
    def build(key):
        if key == "broken":
            raise MemoryError("no room for this adapter")
        return Scheduler(weights, stop_ids=[], max_batch=4, max_len=64)

    ok, too_long, orphan = req(end_model, "hello"), StepRequest(list(range(5, 100)), 3), req(end_model, "hi")
    core = Script(build, [[("A", ok), ("A", too_long)], [("broken", orphan)]])
    core.run()
    failed = {id(r): e for r, e in core.failed}
    assert isinstance(failed[id(too_long)], DataError) and "over the scheduler" in str(failed[id(too_long)])
    assert isinstance(failed[id(orphan)], MemoryError)
    assert ok.done and len(ok.tokens) == 3


def test_an_idle_batch_gathers_arrivals_within_the_window(end_model, weights):
    """Three customers write within the window: one prefill admits all of them."""
    rs = [req(end_model, q) for q in ("hello", "hi", "在吗")]
    core = Script(lambda key: Scheduler(weights, stop_ids=[], max_batch=4), [[("A", rs[0])], [("A", rs[1])],
                                                                          [("A", rs[2])]], window_s=0.05)
    core.run()
    assert core.reports[0].admitted == 3
