"""Batching concurrent requests into the end model: two batchers, one per kind of engine.

`ContinuousBatcher` (the in-process end model, see `endcloud.end.stepper`): one worker
thread advances a running batch one decode step at a time; a request joins at the next
step and leaves the moment its reply ends, and its tokens reach the event loop as they
are sampled (one loop wake-up per step for all rows). See the class for adapter swaps.

`DynamicBatcher` (whole batches, for engines that only return finished replies: a vLLM
client, test doubles): concurrent requests share one `generate` call. Generation is
synchronous and CPU-bound, so it runs in one worker thread; while a batch is being
generated, newly arriving requests queue up and form the next batch. After the first
request of a batch arrives the batcher waits at most `window_ms` for more (up to
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
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from endcloud.errors import DataError, ModelError

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


# ---------------------------------------------------------------------------------------
# continuous batching
class Ticket:
    """One request in the continuous batcher, seen from the event loop.

    `future` resolves to `finish([request])[0]` when the reply ends. With `stream=True`
    the tokens arrive as they are sampled: `await ticket.wait()` then `ticket.take()`.
    """

    __slots__ = ("request", "key", "stream", "future", "on_cancel", "_tokens", "_event")

    def __init__(self, request: Any, key: Any, stream: bool, loop: asyncio.AbstractEventLoop):
        self.request, self.key, self.stream = request, key, stream
        self.on_cancel: Callable[[], None] | None = None  # tells an out-of-process batch (worker.ProcessBatcher)
        self.future: asyncio.Future = loop.create_future()
        self._tokens: list[int] = []
        self._event = asyncio.Event()

    def take(self) -> list[int]:
        """The tokens that arrived since the last call."""
        out, self._tokens = self._tokens, []
        self._event.clear()
        return out

    async def wait(self) -> None:
        """Until a token arrives or the reply ends."""
        if self._tokens or self.future.done():
            return
        await self._event.wait()

    def cancel(self) -> None:
        """The customer left: free the row at the next step."""
        self.request.cancel()
        if self.on_cancel is not None and not self.future.done():
            self.on_cancel()
        if not self.future.done():
            self.future.cancel()

    def _push(self, token: int) -> None:
        self._tokens.append(token)
        self._event.set()

    def _end(self, result: Any, error: BaseException | None) -> None:
        if not self.future.done():
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
        self._event.set()


_STAT_KEYS = ("steps", "rows", "prefills", "prefill_tokens", "prefill_padded", "cached_tokens", "admitted", "finished", "mixed", "prefill_seconds",
              "decode_seconds", "mixed_seconds")


class ContinuousBatcher:
    """Iteration-level batching: one worker thread runs a `Stepper` step after step; a
    request joins the running batch at the next step and leaves the moment it ends.

        submit(request, key) ──► pending ──► worker thread: stepper.add ─► stepper.step() ─┐
                                                 ▲            (one decode step per loop)  │
        Ticket (future, tokens) ◄── loop.call_soon_threadsafe(one batch of events) ◄──────┘

    `build(key) -> Stepper` makes a stepper for a key (the model variant: weights and
    learned prefix); requests carry the key that was current when they were submitted.
    A request whose key differs from the running stepper's waits until the running batch
    has drained, then a stepper is built for the new key: every reply runs wholly on the
    adapter it started with, and an adapter swap never stops the batch in flight.
    `finish(requests) -> results` runs in the worker for the requests that ended in one
    step (decode the text, score it) and its results resolve the tickets.

    When the batch is idle, the first arrival waits up to `window_ms` after each arrival
    (at most `max_wait_ms`) so customers who write at the same moment share one prefill.
    While a batch runs nobody waits: a new request is admitted at the very next step.
    """

    def __init__(self, build: Callable[[Any], Any], finish: Callable[[list[Any]], Sequence[Any]], *,
                 max_batch: int = 16, window_ms: float = 10.0, max_wait_ms: float | None = None,
                 threads: int | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        self.build, self.finish = build, finish
        self.max_batch = max_batch
        self.window_s = max(0.0, window_ms) / 1000.0
        self.max_wait_s = max(self.window_s, (10 * window_ms if max_wait_ms is None else max_wait_ms) / 1000.0)
        self.threads = threads
        self._cond = threading.Condition()
        self._pending: deque[Ticket] = deque()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batch_sizes: list[int] = []  # requests admitted into the running batch together
        self.batch_seconds: list[float] = []  # wall time of the step that admitted them
        self.on_batch: Callable[[int, float], None] | None = None  # (admitted, seconds), e.g. a metrics hook
        self.on_step: Callable[[int], None] | None = None  # rows in each decode step (occupancy)
        self._done_stats: dict[str, float] = {}
        self._stepper: Any = None
        self._key: Any = None  # the key the stepper was built for
        self.step_seconds = 0.0  # wall time the worker spent in steps (busy time)
        self.step_cpu_seconds = 0.0  # CPU time of the worker thread in those steps: wall - CPU = waiting (GIL, scheduler)

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="endcloud-stepper", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        await asyncio.to_thread(self._thread.join, 30)
        self._thread = None
        err = ModelError("the server is shutting down")
        with self._cond:
            left, self._pending = list(self._pending), deque()
        for t in left:
            t._end(None, err)

    def submit(self, request: Any, *, key: Any = None, stream: bool = False) -> Ticket:
        """Queue `request` (a StepRequest); returns its Ticket at once."""
        if self._thread is None:
            self.start()
        assert self._loop is not None
        ticket = Ticket(request, key, stream, self._loop)
        request.tag = ticket
        with self._cond:
            self._pending.append(ticket)
            self._cond.notify()
        return ticket

    # -- figures -----------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        """Totals since start: steps, rows (sum of rows per step), occupancy, prefill and cached tokens."""
        out = dict(self._done_stats)
        st = getattr(self._stepper, "stats", None)
        if st is not None:
            for k in _STAT_KEYS:
                out[k] = out.get(k, 0) + getattr(st, k)
        out["occupancy"] = out.get("rows", 0) / out["steps"] if out.get("steps") else 0.0
        out["step_seconds"] = self.step_seconds
        out["step_cpu_seconds"] = self.step_cpu_seconds
        return out

    # -- the worker --------------------------------------------------------------------
    def _retire_stepper(self) -> None:
        st = getattr(self._stepper, "stats", None)
        if st is not None:
            for k in _STAT_KEYS:
                self._done_stats[k] = self._done_stats.get(k, 0) + getattr(st, k)
        self._stepper = None

    def _wait_for_work(self) -> bool:
        """Block until there is something to do; False when stopping. Holds the condition."""
        idle = self._stepper is None or not self._stepper.busy
        while idle and not self._pending and not self._stopping:
            self._cond.wait()
        if self._stopping:
            return False
        if idle and self._pending:
            # an idle batch gathers customers who write at the same moment into one prefill
            first = last = time.monotonic()
            seen = len(self._pending)
            while len(self._pending) < self.max_batch and not self._stopping:
                now = time.monotonic()
                until = min(first + self.max_wait_s, last + self.window_s)
                if now >= until:
                    break
                self._cond.wait(until - now)
                if len(self._pending) != seen:
                    seen, last = len(self._pending), time.monotonic()
        return not self._stopping

    def _run(self) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))
        try:
            self._loop_forever()
        except BaseException as e:  # a bug here must not leave customers waiting forever
            log.exception("the continuous batcher's worker died")
            self._fail_all(ModelError(f"the end model's worker stopped: {e}"))
            with self._cond:
                left, self._pending = list(self._pending), deque()
            self._post([], [(t, None, ModelError("the end model's worker stopped")) for t in left])
            return
        self._fail_all(ModelError("the server is shutting down"))

    def _loop_forever(self) -> None:
        while True:
            with self._cond:
                if not self._wait_for_work():
                    return
                st = self._stepper
                busy = st is not None and st.busy
                take: list[Ticket] = []
                switch = None
                while self._pending:
                    head = self._pending[0]
                    if st is None or head.key is not self._key:
                        if busy or take:
                            break  # drain the batch on the old adapter first
                        switch = head.key
                        break
                    take.append(self._pending.popleft())
            if switch is not None:
                self._retire_stepper()
                try:
                    self._stepper, self._key = self.build(switch), switch
                except Exception as e:  # e.g. out of memory: fail what waits for this key
                    log.exception("could not build a stepper")
                    with self._cond:
                        bad = [t for t in self._pending if t.key is switch]
                        self._pending = deque(t for t in self._pending if t.key is not switch)
                    self._post([], [(t, None, e) for t in bad])
                continue
            self._step(take)

    def _step(self, take: list[Ticket]) -> None:
        st = self._stepper
        ended: list[tuple[Ticket, Any, BaseException | None]] = []
        for t in take:
            if t.request.cancelled:
                continue
            try:
                st.add(t.request)
            except ValueError as e:
                ended.append((t, None, DataError(str(e))))
        t0, c0 = time.perf_counter(), time.thread_time()
        admitted0, steps0, rows0 = st.stats.admitted, st.stats.steps, st.stats.rows
        try:
            events = st.step() if st.busy else []
        except Exception as e:  # the requests in the batch get the error; the batcher lives on
            log.exception("decode step failed")
            self._post([], ended)
            self._fail_all(e)
            return
        dt = time.perf_counter() - t0
        self.step_seconds += dt
        self.step_cpu_seconds += time.thread_time() - c0
        admitted = st.stats.admitted - admitted0
        if admitted:
            self.batch_sizes.append(admitted)
            self.batch_seconds.append(dt)
            if self.on_batch is not None:
                self.on_batch(admitted, dt)
        if self.on_step is not None and st.stats.steps > steps0:
            self.on_step(st.stats.rows - rows0)
        tokens = [(e.request.tag, e.token) for e in events if e.token is not None and e.request.tag.stream]
        done = [e.request for e in events if e.finished and not e.request.cancelled]
        if done:
            try:
                results = list(self.finish(done))
                if len(results) != len(done):
                    raise RuntimeError(f"finish returned {len(results)} results for {len(done)} requests")
                ended += [(r.tag, res, None) for r, res in zip(done, results)]
            except Exception as e:
                log.exception("finishing replies failed")
                ended += [(r.tag, None, e) for r in done]
        if tokens or ended:
            self._post(tokens, ended)

    def _fail_all(self, error: BaseException) -> None:
        """Fail every request of the running stepper and drop it (the next request builds a new one)."""
        st = self._stepper
        if st is None:
            return
        reqs = list(st.waiting) + [r.req for r in st.decoding] + [r.req for r in st.prefilling]
        self._retire_stepper()
        self._post([], [(r.tag, None, error) for r in reqs if r.tag is not None])

    def _post(self, tokens: list[tuple[Ticket, int]], ended: list[tuple[Ticket, Any, BaseException | None]]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            # one wake-up of the event loop per step, whatever the number of rows
            loop.call_soon_threadsafe(_deliver, tokens, ended)
        except RuntimeError:  # the loop closed meanwhile
            pass


def _deliver(tokens: list[tuple[Ticket, int]], ended: list[tuple[Ticket, Any, BaseException | None]]) -> None:
    for t, tok in tokens:
        t._push(tok)
    for t, res, err in ended:
        t._end(res, err)
