"""Batching concurrent requests into the end model: two batchers, one per kind of engine.

`ContinuousBatcher` (the in-process end model, see `endcloud.runtime.scheduler`): one worker
thread runs the engine core's loop (`endcloud.runtime.core`), which advances a running batch
one step at a time; a request joins at the next step and leaves the moment its reply
ends, and its tokens reach the event loop as they are sampled (one loop wake-up per step
for all rows). `worker.ProcessBatcher` runs the same loop in its own process.

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
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from endcloud.errors import ModelError
from endcloud.runtime.core import EngineCore, Recent, StepReport, batch_window

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
        self.window_s, self.max_wait_s = batch_window(max_batch, window_ms, max_wait_ms)
        self.fn = fn
        self.max_batch = max_batch
        self._expected = 1  # size of the previous batch: how many are likely to come back
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.batch_sizes: list[int] = Recent()  # observed sizes (for metrics and tests)
        self.batch_seconds: list[float] = Recent()  # wall time of each call, same order
        self.on_batch: Callable[[int, float], None] | None = None  # e.g. a metrics hook
        self.isolated = 0  # failed batches retried one request at a time

    def start(self) -> None:
        if self._task is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="endcloud-generate")
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="endcloud-batcher")

    async def stop(self, *, timeout_s: float = 30.0) -> None:
        """Cancel the collector and drop the queue; nothing is waited for (`timeout_s` is the
        other batchers', whose worker may be mid-step)."""
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
                except Exception as e:  # one request may have caused it: the others must not pay
                    log.exception("batched generation failed")
                    if len(group) == 1:
                        if not group[0].future.done():
                            group[0].future.set_exception(e)
                        continue
                    await self._one_by_one(group, key)
                    continue
                for g, r in zip(group, results):
                    if not g.future.done():
                        g.future.set_result(r)

    async def _one_by_one(self, group: list[_Item], key: Hashable) -> None:
        """After a failed batch: each request alone, so only the one that causes the failure fails."""
        loop = asyncio.get_running_loop()
        self.isolated += 1
        for g in group:
            if g.future.done():
                continue
            try:
                [r] = await loop.run_in_executor(self._pool, self.fn, [g.payload], key)
            except Exception as e:  # noqa: BLE001 — this one fails alone: it is the culprit
                if not g.future.done():
                    g.future.set_exception(e)
                continue
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


class ContinuousBatcher:
    """Iteration-level batching in a worker thread of the server: the engine core's loop
    (`endcloud.runtime.core`) steps a `Scheduler`; a request joins the running batch at the
    next step and leaves the moment it ends.

        submit(request, key) ──► inbox ──► worker thread: EngineCore (admit, step, ...) ─┐
        Ticket (future, tokens) ◄── loop.call_soon_threadsafe(one batch of events) ◄─────┘

    `build(key) -> Scheduler` makes a scheduler for a key (the model variant: weights and
    learned prefix); `finish(requests) -> results` runs in the worker for the requests that
    ended in one step (decode the text, score it) and its results resolve the tickets. The
    core's rules (gathering window, draining before a variant switch, failures) are the
    engine process's too (`worker.ProcessBatcher`).
    """

    def __init__(self, build: Callable[[Any], Any], finish: Callable[[list[Any]], Sequence[Any]], *,
                 max_batch: int = 16, window_ms: float = 10.0, max_wait_ms: float | None = None,
                 threads: int | None = None):
        self.window_s, self.max_wait_s = batch_window(max_batch, window_ms, max_wait_ms)
        self.build, self.finish = build, finish
        self.max_batch = max_batch
        self.threads = threads
        self._cond = threading.Condition()
        self._inbox: deque[Ticket] = deque()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._core: _ThreadCore | None = None
        self._done_stats: dict[str, float] = {}  # cores of earlier starts
        self.batch_sizes: list[int] = Recent()  # requests admitted into the running batch together
        self.batch_seconds: list[float] = Recent()  # wall time of the step that admitted them
        self.on_batch: Callable[[int, float], None] | None = None  # (admitted, seconds), e.g. a metrics hook
        self.on_step: Callable[[int], None] | None = None  # rows in each decode step (occupancy)

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._stopping = False
            self._core = _ThreadCore(self)
            self._thread = threading.Thread(target=self._run, args=(self._core,), name="endcloud-scheduler", daemon=True)
            self._thread.start()

    async def stop(self, *, timeout_s: float = 30.0) -> None:
        """Stop the worker (waiting at most `timeout_s` for its step to end); what is left fails."""
        if self._thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        await asyncio.to_thread(self._thread.join, timeout_s)
        self._thread = None
        if self._core is not None:  # its figures stay in the totals
            for k, v in self._core.stats().items():
                if not k.endswith("_bytes"):  # what it held is gone with it
                    self._done_stats[k] = self._done_stats.get(k, 0) + v
            self._core = None
        err = ModelError("the server is shutting down")
        with self._cond:
            left, self._inbox = list(self._inbox), deque()
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
            self._inbox.append(ticket)
            self._cond.notify()
        return ticket

    # -- figures -----------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        """Totals since start: steps, rows (sum of rows per step), occupancy, prefill and cached tokens."""
        out = dict(self._done_stats)
        if self._core is not None:
            for k, v in self._core.stats().items():
                out[k] = out.get(k, 0) + v
        out.setdefault("step_seconds", 0.0)
        out.setdefault("step_cpu_seconds", 0.0)
        out["occupancy"] = out.get("rows", 0) / out["steps"] if out.get("steps") else 0.0
        return out

    # -- the worker --------------------------------------------------------------------
    def _run(self, core: "_ThreadCore") -> None:
        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))
        try:
            core.run()
        except BaseException as e:  # a bug here must not leave customers waiting forever
            log.exception("the continuous batcher's worker died")
            err = ModelError(f"the end model's worker stopped: {e}")
            core.fail_all(err)
            with self._cond:
                left, self._inbox = list(self._inbox), deque()
            core.fail([r for _, r in core.pending] + [t.request for t in left], err)
            return
        core.fail_all(ModelError("the server is shutting down"))
        core.fail([r for _, r in core.pending], ModelError("the server is shutting down"))

    def _report(self, report: StepReport) -> None:
        """In the worker: hooks, `finish` on the replies that ended, one post to the loop."""
        if report.admitted:
            self.batch_sizes.append(report.admitted)
            self.batch_seconds.append(report.seconds)
            if self.on_batch is not None:
                self.on_batch(report.admitted, report.seconds)
        if report.rows and self.on_step is not None:
            self.on_step(report.rows)
        events = report.events
        tokens = [(e.request.tag, e.token) for e in events if e.token is not None and e.request.tag.stream]
        done = [e.request for e in events if e.finished and not e.request.cancelled]
        ended: list[tuple[Ticket, Any, BaseException | None]] = []
        if done:
            try:
                results = list(self.finish(done))
                if len(results) != len(done):
                    raise RuntimeError(f"finish returned {len(results)} results for {len(done)} requests")
                ended = [(r.tag, res, None) for r, res in zip(done, results)]
            except Exception as e:
                log.exception("finishing replies failed")
                ended = [(r.tag, None, e) for r in done]
        if tokens or ended:
            self._post(tokens, ended)

    def _post(self, tokens: list[tuple[Ticket, int]], ended: list[tuple[Ticket, Any, BaseException | None]]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            # one wake-up of the event loop per step, whatever the number of rows
            loop.call_soon_threadsafe(_deliver, tokens, ended)
        except RuntimeError:  # the loop closed meanwhile
            pass


class _ThreadCore(EngineCore):
    """The engine core in the server's worker thread: tickets arrive in the batcher's inbox
    (cancels are the requests' own flags), results go to the event loop."""

    def __init__(self, batcher: ContinuousBatcher):
        super().__init__(batcher.build, max_batch=batcher.max_batch, window_s=batcher.window_s,
                         max_wait_s=batcher.max_wait_s)
        self.batcher = batcher

    def receive(self, timeout: float | None) -> None:
        b = self.batcher
        with b._cond:
            if timeout is None:
                while not b._inbox and not b._stopping:
                    b._cond.wait()
            elif timeout > 0 and not b._inbox and not b._stopping:
                b._cond.wait(timeout)
            arrived, b._inbox = b._inbox, deque()
            self.stopping = b._stopping
        for t in arrived:
            self.put(t.key, t.request)

    def report(self, report: StepReport) -> None:
        self.batcher._report(report)

    def fail(self, requests: list, error: BaseException) -> None:
        self.batcher._post([], [(r.tag, None, error) for r in requests if r.tag is not None])


def _deliver(tokens: list[tuple[Ticket, int]], ended: list[tuple[Ticket, Any, BaseException | None]]) -> None:
    for t, tok in tokens:
        t._push(tok)
    for t, res, err in ended:
        t._end(res, err)


class _Submitted:
    """What a Ticket of the EngineBatcher cancels: the engine's own handle, once it has one."""

    __slots__ = ("payload", "handle", "cancelled")

    def __init__(self, payload: Any):
        self.payload, self.handle, self.cancelled = payload, None, False

    def cancel(self) -> None:
        self.cancelled = True
        if self.handle is not None:
            self.handle.cancel()


class EngineBatcher:
    """For a model that batches continuously by itself (`streams_itself`: transformers'
    continuous batching, `runtime.hfbatch`): each request goes straight into the model's
    running batch with `start(payload, on_tokens, on_end) -> handle`, and its tokens and
    result come back to the event loop through a Ticket, as from the ContinuousBatcher.

        submit(payload) ──► start(payload, on_tokens, on_end) ──► the model's own loop
        Ticket (future, tokens) ◄── loop.call_soon_threadsafe ◄── its router thread
    """

    def __init__(self, start: Callable[[Any, Callable, Callable], Any], *, max_batch: int = 16):
        self.start_request = start
        self.max_batch = max_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open: set[Ticket] = set()
        self.batch_sizes: list[int] = Recent()  # requests in flight when each one was submitted (load, for figures)
        self.batch_seconds: list[float] = Recent()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def stop(self, *, timeout_s: float = 30.0) -> None:
        """Fail what is still open (the model's own loop belongs to the model)."""
        err = ModelError("the server is shutting down")
        for t in list(self._open):
            t.request.cancel()  # the model drops the row
            t._end(None, err)
        self._open.clear()

    def submit(self, payload: Any, *, key: Any = None, stream: bool = False) -> Ticket:
        if self._loop is None:
            self.start()
        loop = self._loop
        assert loop is not None
        req = _Submitted(payload)
        ticket = Ticket(req, key, stream, loop)
        ticket.on_cancel = lambda: self._open.discard(ticket)  # a cancelled row never reports its end
        self._open.add(ticket)
        self.batch_sizes.append(len(self._open))

        def post(fn: Callable, *args: Any) -> None:
            if not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(fn, *args)
                except RuntimeError:  # the loop closed meanwhile
                    pass

        def on_tokens(ids: list[int]) -> None:
            if stream:
                post(_push_all, ticket, list(ids))

        def on_end(result: Any, error: BaseException | None) -> None:
            post(self._ended, ticket, result, error)

        try:
            req.handle = self.start_request(payload, on_tokens if stream else None, on_end)
        except BaseException as e:
            self._open.discard(ticket)
            ticket._end(None, e)
            return ticket
        if req.cancelled:
            req.handle.cancel()
        return ticket

    def _ended(self, ticket: Ticket, result: Any, error: BaseException | None) -> None:
        self._open.discard(ticket)
        ticket._end(result, error)

    def stats(self) -> dict[str, float]:
        return {"in_flight": len(self._open)}


def _push_all(ticket: Ticket, ids: list[int]) -> None:
    for t in ids:
        ticket._push(t)
