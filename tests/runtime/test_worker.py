"""The running batch in its own process (`endcloud.runtime.worker`): same replies, cancels,
a killed process, settings. A real spawned child on the tiny fixture model."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from endcloud.errors import ConfigError, ModelError
from endcloud.runtime.async_engine import AsyncEngine
from endcloud.serve.settings import ServeSettings

SAMPLED = {"temperature": 1.0, "top_p": 1.0}  # random weights: greedy replies repeat one special token


def conv(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


async def _started(engine: AsyncEngine) -> AsyncEngine:
    engine.start()
    return engine


def test_the_engine_process_writes_what_the_thread_writes(end_model):
    """Seeded replies (batched, streamed or whole) are the same token for token, and the
    engine process is another process."""
    questions = ["Do you ship today?", "几天发货？", "hello", "可以用优惠券吗？"]

    async def run(worker: str):
        e = await _started(AsyncEngine(end_model, worker=worker, window_ms=0))
        try:
            whole = await asyncio.gather(*[e.generate_scored(conv(q), query=q, max_new_tokens=10, seed=i, **SAMPLED)
                                           for i, q in enumerate(questions)])
            stream = e.stream_scored(conv("hello"), query="hello", max_new_tokens=10, seed=7, **SAMPLED)
            deltas = [d async for d in stream]
            return [g.text for g, _ in whole], [g.tokens for g, _ in whole], deltas, stream.result[0].text, e.stats()
        finally:
            await e.stop()

    texts, counts, deltas, streamed, stats = asyncio.run(run("process"))
    ref_texts, ref_counts, _, ref_streamed, ref_stats = asyncio.run(run("thread"))
    assert (texts, counts, streamed) == (ref_texts, ref_counts, ref_streamed)
    assert "".join(deltas) == streamed
    assert stats["pid"] != os.getpid() and "pid" not in ref_stats
    assert stats["finished"] == 5 and stats["steps"] > 0


def test_a_cancelled_reply_frees_its_row_in_the_engine_process(end_model):
    async def run():
        e = await _started(AsyncEngine(end_model, worker="process", window_ms=0, max_batch=1))
        try:
            stream = e.stream_scored(conv("hello"), query="hello", max_new_tokens=400, seed=1, **SAMPLED)
            async for _ in stream:
                break  # the customer leaves after the first piece
            await stream.aclose()
            # the one row is free again: another reply finishes (it would wait ~400 steps otherwise)
            g, _ = await asyncio.wait_for(e.generate_scored(conv("hi"), query="hi", max_new_tokens=4, seed=2, **SAMPLED), 60)
            return g, e.stats()
        finally:
            await e.stop()

    g, stats = asyncio.run(run())
    assert g.tokens <= 4 and stats["steps"] < 300


def test_a_killed_engine_process_fails_its_replies_and_the_next_request_restarts_it(end_model):
    async def run():
        e = await _started(AsyncEngine(end_model, worker="process", window_ms=0))
        try:
            first, _ = await e.generate_scored(conv("hello"), query="hello", max_new_tokens=2, seed=1, **SAMPLED)
            pid = e.stats()["pid"]
            os.kill(pid, signal.SIGSTOP)  # frozen: the reply below cannot finish before the kill
            long = asyncio.ensure_future(e.generate_scored(conv("hello"), query="hello", max_new_tokens=64, seed=1,
                                                           **SAMPLED))
            await asyncio.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(ModelError, match="engine process stopped"):
                await asyncio.wait_for(long, 60)
            again, _ = await asyncio.wait_for(e.generate_scored(conv("hello"), query="hello", max_new_tokens=2, seed=1,
                                                                **SAMPLED), 120)
            return first, again, pid, e.stats()
        finally:
            await e.stop()

    first, again, pid, stats = asyncio.run(run())
    assert again.text == first.text and stats["pid"] != pid and stats["restarts"] == 1


def test_the_spawned_child_never_reruns_the_callers_main_script():
    from endcloud.runtime.worker import _main_module_hidden

    main = sys.modules["__main__"]
    before = (getattr(main, "__file__", None), getattr(main, "__spec__", None))
    with _main_module_hidden():
        assert getattr(main, "__file__", None) is None and main.__spec__ is None
    assert (getattr(main, "__file__", None), getattr(main, "__spec__", None)) == before


def test_worker_setting():
    assert ServeSettings().worker == "process"
    assert ServeSettings.from_env({"ENDCLOUD_SERVE_WORKER": "thread"}).worker == "thread"
    with pytest.raises(ConfigError, match="ENDCLOUD_SERVE_WORKER"):
        ServeSettings(worker="gpu")


def test_a_broken_pipe_on_submit_restarts_the_engine_process_once(end_model):
    """The process died between the liveness check and the send: a new one serves the request."""
    async def run():
        e = await _started(AsyncEngine(end_model, worker="process", window_ms=0))
        try:
            await e.generate_scored(conv("hello"), query="hello", max_new_tokens=2, seed=1, **SAMPLED)
            batcher, real = e.batcher, e.batcher._send_locked
            calls = []

            def flaky(msg):
                if msg[0] == "add" and not calls:
                    calls.append(msg)
                    raise BrokenPipeError(32, "Broken pipe")
                real(msg)

            batcher._send_locked = flaky
            g, _ = await asyncio.wait_for(e.generate_scored(conv("hello"), query="hello", max_new_tokens=2, seed=1,
                                                            **SAMPLED), 120)
            return g, e.stats(), calls
        finally:
            await e.stop()

    g, stats, calls = asyncio.run(run())
    assert len(calls) == 1 and g.tokens >= 1 and stats["restarts"] == 1


def test_a_request_cancelled_while_waiting_in_the_engine_process_is_forgotten(end_model):
    """A reply for another variant waits in the engine process until the running batch
    drains; cancelled there, it leaves as a cancelled event and the parent drops its ticket
    (it used to stay in the parent's table for good)."""
    from endcloud.runtime.scheduler import StepRequest
    from endcloud.runtime.worker import ProcessBatcher

    w = end_model.variant.weights
    cfg = {"stop_ids": [], "prefill_chunk": 512, "prefix_cache_bytes": 0}
    ids = end_model.prompt_ids(conv("hello"))
    a, b = object(), object()  # two model variants (the same weights)

    async def run():
        batcher = ProcessBatcher(lambda key: (w, None, cfg), lambda reqs: [len(r.tokens) for r in reqs], window_ms=0)
        batcher.start()
        try:
            running = batcher.submit(StepRequest(ids, 200), key=a)
            waiting = batcher.submit(StepRequest(ids, 3), key=b)
            waiting.cancel()
            assert await asyncio.wait_for(running.future, 60) == 200
            for _ in range(200):
                if not batcher._tickets:
                    break
                await asyncio.sleep(0.02)
            return dict(batcher._tickets), batcher.stats()
        finally:
            await batcher.stop()

    left, stats = asyncio.run(run())
    assert left == {} and stats["finished"] == 1  # the cancelled one never reached a scheduler
