"""Dynamic batching: concurrent requests share one `generate` call of the end model.

Generation is synchronous and CPU-bound, so it runs in one worker thread; while a batch
is being generated, newly arriving requests queue up and form the next batch. After the
first request of a batch arrives the batcher waits at most `window_ms` for more (up to
`max_batch`), so a lone customer pays a few milliseconds and sixteen customers at once
pay roughly one batched generation instead of sixteen sequential ones.

Two rules stretch the window, both capped at `max_wait_ms` after the first arrival:
- while requests keep arriving (each within `window_ms` of the last) it keeps collecting;
- while fewer have arrived than the previous batch held, it waits for them: customers
  released together by one batch come back spread over tens of milliseconds (the reply
  is streamed, read, and the next question sent), and without this the first one back
  would be generated alone while the rest queue behind it — a batch of 1, then of 15.

    requests ──► queue ──► [collect ≤ max_batch within window] ──► worker thread: fn(batch)
                                                                     │
                 futures ◄───────────── results, one per request ◄───┘

Requests are grouped by `key` (e.g. the generation settings) because one call can only
use one set of settings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Item:
    payload: Any
    key: Hashable
    future: asyncio.Future


class DynamicBatcher:
    """`await batcher.submit(payload, key=...)` -> the result of `fn([payloads...], key)[i]`.

    `fn(payloads, key) -> list[result]` runs in a single dedicated thread (one batch at a
    time). Call `start()` inside the running loop and `await stop()` at shutdown.
    """

    def __init__(self, fn: Callable[[list[Any], Hashable], Sequence[Any]], *, max_batch: int = 16, window_ms: float = 10.0,
                 max_wait_ms: float | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        self.fn = fn
        self.max_batch = max_batch
        self.window_s = max(0.0, window_ms) / 1000.0
        self.max_wait_s = max(self.window_s, (10 * window_ms if max_wait_ms is None else max_wait_ms) / 1000.0)
        self._expected = 1  # size of the previous batch: how many are likely to come back
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.batch_sizes: list[int] = []  # observed sizes (for metrics and tests)
        self.batch_seconds: list[float] = []  # wall time of each call, same order
        self.on_batch: Callable[[int, float], None] | None = None  # e.g. a metrics hook

    def start(self) -> None:
        if self._task is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="endcloud-generate")
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="endcloud-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def submit(self, payload: Any, *, key: Hashable = None) -> Any:
        if self._task is None:
            self.start()
        assert self._queue is not None
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(payload, key, fut))
        return await fut

    async def _collect(self) -> list[_Item]:
        assert self._queue is not None
        first = await self._queue.get()
        items = [first]
        loop = asyncio.get_running_loop()
        hard = loop.time() + self.max_wait_s
        deadline = min(hard, loop.time() + self.window_s)
        while len(items) < self.max_batch:
            # take whatever is already queued without waiting
            while len(items) < self.max_batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            until = hard if len(items) < self._expected else deadline
            remaining = until - loop.time()
            if len(items) >= self.max_batch or remaining <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
            deadline = min(hard, loop.time() + self.window_s)  # an arrival: give the next one a window too
        self._expected = len(items)
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            groups: dict[Hashable, list[_Item]] = {}
            for it in items:
                if not it.future.cancelled():
                    groups.setdefault(it.key, []).append(it)
            for key, group in groups.items():
                self.batch_sizes.append(len(group))
                t0 = loop.time()
                try:
                    results = await loop.run_in_executor(self._pool, self.fn, [g.payload for g in group], key)
                    self.batch_seconds.append(loop.time() - t0)
                    if self.on_batch is not None:
                        self.on_batch(len(group), self.batch_seconds[-1])
                    if len(results) != len(group):
                        raise RuntimeError(f"batch function returned {len(results)} results for {len(group)} inputs")
                except Exception as e:  # the requests get the error; the batcher lives on
                    log.exception("batched generation failed")
                    for g in group:
                        if not g.future.done():
                            g.future.set_exception(e)
                    continue
                for g, r in zip(group, results):
                    if not g.future.done():
                        g.future.set_result(r)
