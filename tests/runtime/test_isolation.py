"""One request must never cost the others their replies, and nothing the engine keeps may grow
without bound: the engine core's isolation of a failed step (a real `Scheduler` on the tiny
fixture model behind a scripted transport), the whole-batch batcher's, and the bounds of the
prefix cache, the KV pools, the session transcripts and the batch figures."""

from __future__ import annotations

import asyncio

import pytest

from endcloud.errors import DataError
from endcloud.runtime.async_engine import AsyncEngine
from endcloud.runtime.batching import DynamicBatcher
from endcloud.runtime.core import Recent
from endcloud.runtime.scheduler import PrefixCache, Scheduler, StepRequest
from tests.runtime.test_core import Script as _Script

pytestmark = pytest.mark.usefixtures("few_threads")


class Script(_Script):
    """test_core's transport double (arrivals in, reports and failures recorded), plus what a
    customer saw of each request."""

    def streamed(self, req) -> list[int]:
        """The tokens the transport was told of for `req`, in order (what a customer saw)."""
        return [e.token for rep in self.reports for e in rep.events if e.request is req and e.token is not None]


class SeedThatBreaksAdmission(int):
    """A seed every check accepts (an int in range) whose conversion raises: a request that
    fails inside a step, with other customers' rows in the batch."""

    def __int__(self):
        raise RuntimeError("this request's generator cannot be made")


@pytest.fixture(scope="module")
def weights(end_model):
    return end_model.variant.weights


def ask(end_model, text: str, n: int, **kw) -> StepRequest:
    return StepRequest(end_model.prompt_ids([{"role": "user", "content": text}]), n, **kw)


def test_a_seed_past_64_bits_is_refused_alone(end_model, weights):
    good, bad = ask(end_model, "hello", 5), ask(end_model, "hi", 5, seed=2**64, temperature=0.7, top_p=0.9)
    core = Script(lambda key: Scheduler(weights, stop_ids=[], max_batch=4), [[("A", good), ("A", bad)]])
    core.run()
    assert [(r, type(e)) for r, e in core.failed] == [(bad, DataError)] and "seed" in str(core.failed[0][1])
    assert good.done and len(good.tokens) == 5


@pytest.mark.parametrize("field,value", [("temperature", float("nan")), ("top_p", 0.0), ("top_p", float("inf"))])
def test_bad_sampling_settings_are_refused_at_admission(end_model, weights, field, value):
    st = Scheduler(weights, stop_ids=[], max_batch=2)
    with pytest.raises(ValueError, match=field):
        st.add(ask(end_model, "hello", 3, **{field: value}))
    with pytest.raises(ValueError, match="vocabulary"):
        st.add(StepRequest([1, 2, st.vocab], 3))
    assert not st.busy


def test_a_request_that_breaks_a_step_fails_alone_and_the_others_finish_unchanged(end_model, weights):
    """Three greedy replies are decoding when a request whose admission raises joins: the
    step fails, each request is probed alone, only the culprit fails, and the others finish
    from where they were with exactly the tokens an undisturbed run gives, none sent twice."""
    build = lambda key: Scheduler(weights, stop_ids=[], max_batch=4)  # noqa: E731
    texts = ["hello", "在吗", "Do you ship today?"]
    clean = [ask(end_model, t, 8) for t in texts]
    Script(build, [[("A", r) for r in clean]]).run()

    reqs = [ask(end_model, t, 8) for t in texts]
    bad = ask(end_model, "hi", 8, seed=SeedThatBreaksAdmission(3), temperature=0.7, top_p=0.9)
    core = Script(build, [[("A", r) for r in reqs], [], [], [("A", bad)]])  # joins after a few steps
    core.run()
    assert [r for r, _ in core.failed] == [bad] and "generator" in str(core.failed[0][1])
    assert core.isolated == 1
    for r, ref in zip(reqs, clean):
        assert r.done and r.tokens == ref.tokens  # greedy: resumed replies are the undisturbed ones
        assert core.streamed(r) == r.tokens  # every token reported once, in order
    assert 0 < len(reqs[0].logprobs) == len(reqs[0].tokens)


class BrokenScheduler(Scheduler):
    """A model that fails every step, whatever it holds (not one request's fault)."""

    def step(self):
        super().step()
        raise RuntimeError("the model is broken")


def test_when_every_probe_fails_every_request_fails_and_the_core_lives_on(end_model, weights):
    broken = {"yes": True}

    def build(key):
        return (BrokenScheduler if broken["yes"] else Scheduler)(weights, stop_ids=[], max_batch=4)

    a, b = ask(end_model, "hello", 4), ask(end_model, "hi", 4)
    core = Script(build, [[("A", a), ("A", b)]])
    core.run()
    assert {r for r, _ in core.failed} == {a, b}
    broken["yes"] = False
    c = ask(end_model, "again", 3)
    core.stopping, core.arrivals = False, [[("A", c)]]
    core.run()
    assert c.done and len(c.tokens) == 3


def test_a_failed_whole_batch_is_retried_one_by_one():
    """The whole-batch engines (vLLM client, llama.cpp, doubles): a batch whose call raises is
    run again one request at a time, so only the request that causes it fails."""
    calls = []

    def generate(payloads, key):
        calls.append(list(payloads))
        if "poison" in payloads:
            raise RuntimeError("the engine refused the batch")
        return [p.upper() for p in payloads]

    async def main():
        b = DynamicBatcher(generate, max_batch=8, window_ms=50)
        b.start()
        try:
            return await asyncio.gather(*(b.submit(p) for p in ("a", "poison", "c")), return_exceptions=True)
        finally:
            await b.stop()

    out = asyncio.run(main())
    assert out[0] == "A" and out[2] == "C" and isinstance(out[1], RuntimeError)
    assert calls[0] == ["a", "poison", "c"] and sorted(map(tuple, calls[1:])) == [("a",), ("c",), ("poison",)]


def test_the_prefix_cache_stays_in_its_budget(end_model, weights):
    st = Scheduler(weights, stop_ids=[], max_batch=4, prefix_cache=PrefixCache(10**9))
    st.add(ask(end_model, "a question long enough to fill a few blocks of sixteen tokens " * 3, 1))
    while st.busy:
        st.step()
    block_bytes = st.cache.bytes // len(st.cache)  # a budget of five blocks:
    cache = PrefixCache(max_bytes=5 * block_bytes)
    st = Scheduler(weights, stop_ids=[], max_batch=4, prefix_cache=cache)
    for i in range(40):  # many distinct conversations
        st.add(ask(end_model, f"customer {i} asks about order {i * 7919} and its delivery " * 3, 1))
        while st.busy:
            st.step()
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 5 and st.memory()["prefix_cache_bytes"] == cache.bytes


def test_kv_pools_give_back_what_a_long_reply_grew_them_to(end_model, weights):
    st = Scheduler(weights, stop_ids=[], max_batch=2)
    small = st.memory()["kv_pool_bytes"]
    st.add(ask(end_model, "hello " * 60, 200))
    while st.busy:
        st.step()
    assert st.memory()["kv_pool_bytes"] > small
    assert st.shrink() and st.memory()["kv_pool_bytes"] == small
    st.add(ask(end_model, "hi", 4))  # and it still serves
    while st.busy:
        st.step()


def test_batch_figures_keep_only_the_newest():
    figures = Recent(keep=100)
    for i in range(10_000):
        figures.append(i)
    assert len(figures) <= 200 and figures[-1] == 9_999 and figures == list(range(10_000 - len(figures), 10_000))


def test_session_transcripts_stay_bounded_under_many_sessions(end_model):
    """Every conversation's last prompt and reply ids are kept for its next turn: by count and
    by bytes, the least recently used go first."""
    async def main():
        engine = AsyncEngine(end_model, max_batch=8, window_ms=1, batching="continuous", prefix_cache_mb=1,
                             transcripts=6, transcripts_mb=0.05)
        engine.start()
        try:
            for round_ in range(3):
                # sampled, seeded: a random-weight reply that starts with a space is stripped and
                # kept no transcript, so many seeds make sure some are kept
                await asyncio.gather(*(engine.generate_scored(
                    [{"role": "user", "content": f"session {s} turn {round_}"}], query="q", max_new_tokens=3,
                    temperature=0.9, top_p=0.95, seed=round_ * 100 + s, session=f"s{round_}-{s}") for s in range(16)))
                stats = engine.stats()
                assert stats["transcripts"] <= 6 and stats["transcript_bytes"] <= 0.05 * 2**20
                assert stats["prefix_cache_bytes"] <= 2**20
            return engine.stats()
        finally:
            await engine.stop()

    stats = asyncio.run(main())
    assert stats["transcripts"] > 0  # kept, just bounded
