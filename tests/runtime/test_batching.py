"""The dynamic batcher: concurrent requests share one call; groups never mix settings."""

from __future__ import annotations

import asyncio
import threading

import pytest

from endcloud.runtime.batching import DynamicBatcher


def test_requests_waiting_behind_a_batch_form_the_next_one():
    calls: list[list[int]] = []
    gate = threading.Event()

    def fn(items, key):
        calls.append(list(items))
        if len(calls) == 1:
            gate.wait(10)  # hold the first batch so the others queue up behind it
        return [x * 10 for x in items]

    async def main():
        b = DynamicBatcher(fn, max_batch=16, window_ms=0)
        b.start()
        first = asyncio.create_task(b.submit(0))
        while not calls:
            await asyncio.sleep(0.001)
        rest = [asyncio.create_task(b.submit(i)) for i in range(1, 8)]
        await asyncio.sleep(0.05)
        gate.set()
        out = await asyncio.gather(first, *rest)
        await b.stop()
        return out

    out = asyncio.run(main())
    assert out == [i * 10 for i in range(8)]
    assert calls == [[0], list(range(1, 8))]


def test_max_batch_and_keys_split_groups():
    calls: list[tuple[list[int], object]] = []

    def fn(items, key):
        calls.append((list(items), key))
        return items

    async def main():
        b = DynamicBatcher(fn, max_batch=3, window_ms=50)
        tasks = [asyncio.create_task(b.submit(i, key=i % 2)) for i in range(6)]
        out = await asyncio.gather(*tasks)
        await b.stop()
        return out

    assert asyncio.run(main()) == list(range(6))
    assert all(len(items) <= 3 for items, _ in calls)
    assert all(all(i % 2 == key for i in items) for items, key in calls)
    assert sorted(i for items, _ in calls for i in items) == list(range(6))


def test_a_failing_batch_fails_its_requests_only():
    def fn(items, key):
        if key == "bad":
            raise RuntimeError("model broke")
        return items

    async def main():
        b = DynamicBatcher(fn, max_batch=4, window_ms=20)
        bad = asyncio.create_task(b.submit(1, key="bad"))
        good = asyncio.create_task(b.submit(2, key="good"))
        with pytest.raises(RuntimeError, match="model broke"):
            await bad
        assert await good == 2
        assert await b.submit(3, key="good") == 3  # still alive
        await b.stop()

    asyncio.run(main())
