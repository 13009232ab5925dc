"""The engine core's loop: the end model's running batch, fed from a queue of requests.

Both continuous batchers run this one loop; they differ only in how requests arrive and
how results leave, their transport:

    ContinuousBatcher (a thread of the server): deque + condition ──► EngineCore ──► loop.call_soon_threadsafe
    ProcessBatcher (its own process, worker.py): pipe ───────────────► EngineCore ──► pipe

What the loop decides, once for both:
- An idle batch waits up to `window_s` after each arrival (at most `max_wait_s` after the
  first) so customers who write at the same moment share one prefill. A running batch
  waits for nobody: a new request is admitted at the very next step.
- Requests carry the model variant (`key`, compared by identity) that was current when they
  were submitted. A request for another variant waits until the running batch has drained,
  then a scheduler is built for it: every reply runs wholly on the adapter it started with,
  and an adapter swap never stops the batch in flight.
  The switch admits every request waiting for the new variant at once (`_sweep`): two variants
  served side by side (a canary) take turns batch by batch, never one row at a time. The
  variant switched away from keeps its idle scheduler (its prefix cache and KV pools) for
  `IDLE_KEEP_S`, so switching back does not prefill every prompt again; one idle scheduler at
  most, so memory is bounded by two variants' engine parts.
- A request the scheduler can never run is refused (`DataError`); a scheduler that cannot be
  built fails the requests waiting for its variant. A step that raises fails only the
  request that caused it: the scheduler is dropped, each of its requests runs alone until
  it has sampled one more token (a probe), a request whose probe raises fails, and the
  rest go on in a fresh scheduler from the tokens they had (nothing sent is taken back).
  When every probe fails (the model is broken, not one request) every request fails.
  The loop itself lives on.
- A request cancelled before it was admitted leaves as a finished, cancelled event, so the
  transport forgets it as it forgets one cancelled mid-reply.
- Figures: the schedulers' counters summed, the steps' wall and CPU time.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from endcloud.errors import DataError

log = logging.getLogger(__name__)

# the scheduler's counters (`StepStats`) a core sums over the schedulers it has run
STAT_KEYS = ("steps", "rows", "prefills", "prefill_tokens", "prefill_padded", "cached_tokens", "admitted", "finished",
             "mixed", "prefill_seconds", "decode_seconds", "mixed_seconds")


FIGURES_KEPT = 10_000  # batch figures a batcher keeps (the newest): a server runs for months
IDLE_KEEP_S = 30.0  # an idle scheduler of another variant (a canary's) is kept this long after its last use
TRIM_EVERY_S = 30.0  # under steady load, freed heap goes back to the OS at least this often


def _libc_trim():
    """glibc's malloc_trim, or None elsewhere (musl, macOS: nothing to do)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM: Any = None


def trim_heap() -> None:
    """Give the heap's free memory back to the OS. A decode step allocates and frees tensors
    of every size (logits, prefill chunks, gathered cache blocks); glibc keeps what was freed
    in its arenas, so an engine process's memory crept up under load though what it held did
    not (measured: ~50 MB given back by one trim after a few minutes)."""
    global _TRIM
    if _TRIM is None:
        _TRIM = _libc_trim() or False
    if _TRIM:
        _TRIM(0)


class Recent(list):
    """A list of the newest figures: past twice `keep` entries the oldest go, down to `keep`
    (amortised O(1) a figure), so a long-running batcher's figures stay bounded."""

    def __init__(self, keep: int = FIGURES_KEPT):
        super().__init__()
        self.keep = keep

    def append(self, x: Any) -> None:
        super().append(x)
        if len(self) > 2 * self.keep:
            del self[: len(self) - self.keep]


def batch_window(max_batch: int, window_ms: float, max_wait_ms: float | None) -> tuple[float, float]:
    """Check a batcher's settings; (window_s, max_wait_s): how long an idle batch waits after
    each arrival, and at most after the first (default: ten windows)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
    window_s = max(0.0, window_ms) / 1000.0
    return window_s, max(window_s, (10 * window_ms if max_wait_ms is None else max_wait_ms) / 1000.0)


@dataclass(slots=True)
class StepReport:
    """What one iteration did: the scheduler's events (tokens, finished requests), how many
    requests joined, the rows of its decode step (0: none ran), and its wall time."""

    events: list
    admitted: int
    rows: int
    seconds: float


class EngineCore:
    """The loop; a transport subclasses it and supplies `receive`, `report` and `fail`.

    `build(key) -> Scheduler` makes the scheduler for a model variant. `run()` returns once
    `stopping` is set; the transport then calls `fail_all` for what is left.
    """

    def __init__(self, build: Callable[[Any], Any], *, max_batch: int, window_s: float, max_wait_s: float):
        self.build = build
        self.max_batch = max_batch
        self.window_s, self.max_wait_s = window_s, max_wait_s
        self.pending: deque[tuple[Any, Any]] = deque()  # (key, StepRequest) not yet in a scheduler
        self.scheduler: Any = None
        self.key: Any = None  # the variant the scheduler was built for
        self._idle: tuple[Any, Any, float] | None = None  # (key, idle scheduler, last used): the other variant's
        self.totals: dict[str, float] = {}  # counters of retired schedulers
        self.step_seconds = 0.0  # wall time in steps (busy time)
        self.step_cpu_seconds = 0.0  # CPU time of this thread in those steps: wall - CPU = waiting (lock, scheduler)
        self.stopping = False
        self.isolated = 0  # failed steps whose requests were probed one by one
        self._trimmed = time.monotonic()  # when freed heap last went back to the OS
        self._dropped: list = []  # events of requests cancelled before admission, for the next report

    # -- what a transport supplies -----------------------------------------------------
    def receive(self, timeout: float | None) -> None:
        """Wait up to `timeout` seconds (None: until anything arrives; 0: not at all) and take
        in what arrived: `put` new requests, apply cancels, set `stopping`."""
        raise NotImplementedError

    def report(self, report: StepReport) -> None:
        """Deliver one iteration's results."""
        raise NotImplementedError

    def fail(self, requests: list, error: BaseException) -> None:
        """These requests end with `error` (DataError: the request's own fault)."""
        raise NotImplementedError

    # -- the loop ----------------------------------------------------------------------
    def put(self, key: Any, request: Any) -> None:
        self.pending.append((key, request))

    @property
    def busy(self) -> bool:
        return self.scheduler is not None and self.scheduler.busy

    def run(self) -> None:
        while not self.stopping:
            busy = self.busy
            self.receive(0.0 if busy or self.pending else None)  # idle: block for the next request
            if self.stopping:
                return
            if not busy and self.pending and self.window_s > 0:
                self._gather()
                if self.stopping:
                    return
            self._admit()
            self._drop_idle(older_than=IDLE_KEEP_S)  # a swapped-out adapter's scheduler does not stay forever
            if self.busy:
                self._step()
            elif self._dropped:
                self.report(StepReport(self._take_dropped(), 0, 0, 0.0))

    def _gather(self) -> None:
        """An idle batch waits a moment for customers who write at the same time (one prefill)."""
        first = last = time.monotonic()
        seen = len(self.pending)
        while len(self.pending) < self.max_batch and not self.stopping:
            now = time.monotonic()
            until = min(first + self.max_wait_s, last + self.window_s)
            if now >= until:
                break
            self.receive(until - now)
            if len(self.pending) != seen:
                seen, last = len(self.pending), time.monotonic()

    def _admit(self) -> None:
        st = self.scheduler
        while self.pending:
            key, req = self.pending[0]
            if req.cancelled:
                self.pending.popleft()
                req.done = True
                self._dropped.append(_cancelled_event(req))
                continue
            if st is None or key is not self.key:
                if st is not None and st.busy:
                    return  # drain the batch on the old variant first
                st = self._switch(key)
                if st is None:
                    continue
                self._sweep(key)
            self.pending.popleft()
            try:
                st.add(req)
            except ValueError as e:
                self.fail([req], DataError(str(e)))

    def _sweep(self, key: Any) -> None:
        """Move every request waiting for `key` to the front (each key's order kept). Why: with
        two variants served at once (a canary), arrivals interleave A, B, A, B…; admitting only
        up to the next request of the other variant made every batch after a switch one row
        long. Now a switch takes all that waits for its variant, and the other variant's
        requests wait at most one batch (measured in bench/bench_canary.py)."""
        mine = [(k, r) for k, r in self.pending if k is key]
        if len(mine) > 1 or (mine and self.pending[0][0] is not key):
            rest = [(k, r) for k, r in self.pending if k is not key]
            self.pending = deque(mine + rest)

    def _switch(self, key: Any):
        # Keep the scheduler switched away from (idle: switches happen between batches) for a
        # quick return; reuse the idle one when it is the variant asked for.
        prev, prev_key = self.scheduler, self.key
        reuse = None
        if self._idle is not None and self._idle[0] is key:
            reuse, self._idle = self._idle[1], None
        if prev is not None and not prev.busy and prev_key is not None and prev_key is not key:
            self._drop_idle()
            self._idle = (prev_key, prev, time.monotonic())
            self.scheduler = None
        else:
            self._retire()
        if reuse is not None:
            self.scheduler, self.key = reuse, key
            return reuse
        try:
            self.scheduler, self.key = self.build(key), key
        except Exception as e:  # e.g. out of memory: fail what waits for this variant
            log.exception("could not build a scheduler")
            bad = [r for k, r in self.pending if k is key]
            self.pending = deque((k, r) for k, r in self.pending if k is not key)
            self.fail(bad, e)
            return None
        return self.scheduler

    def _drop_idle(self, older_than: float | None = None) -> None:
        """Retire the idle scheduler (its counters into the totals), if any (and if unused for `older_than` s)."""
        if self._idle is None or (older_than is not None and time.monotonic() - self._idle[2] < older_than):
            return
        current, self.scheduler = self.scheduler, self._idle[1]
        self._idle = None
        self._retire()
        self.scheduler = current

    def _retire(self) -> None:
        st = getattr(self.scheduler, "stats", None)
        if st is not None:
            for k in STAT_KEYS:
                self.totals[k] = self.totals.get(k, 0) + getattr(st, k)
        self.scheduler = None

    def _step(self) -> None:
        st = self.scheduler
        t0, c0 = time.perf_counter(), time.thread_time()
        admitted0, steps0, rows0 = st.stats.admitted, st.stats.steps, st.stats.rows
        try:
            events = st.step()
        except Exception as e:  # find the request that caused it; the others go on
            log.exception("decode step failed; isolating the request that caused it")
            self._isolate(st, e)
            return
        dt = time.perf_counter() - t0
        self.step_seconds += dt
        self.step_cpu_seconds += time.thread_time() - c0
        rows = st.stats.rows - rows0 if st.stats.steps > steps0 else 0
        self.report(StepReport(self._take_dropped() + events, st.stats.admitted - admitted0, rows, dt))
        if not st.busy:
            st.shrink()  # the batch drained: memory grown for its longest row goes back
        now = time.monotonic()
        if now - self._trimmed > (1.0 if not st.busy else TRIM_EVERY_S):
            self._trimmed = now
            trim_heap()

    def _isolate(self, st: Any, error: BaseException) -> None:
        """After `st.step()` raised: report what it did before, then probe each request it held
        alone; fail those whose probe raises, queue the others first (resumed) for a fresh scheduler."""
        key = self.key
        held = st.held()
        self._retire()
        self.report(StepReport(self._take_dropped() + list(st.last_events), 0, 0, 0.0))
        if len(held) <= 1:
            if held:
                self.fail(held, error)
            return
        survivors = []
        for req in held:
            if req.cancelled:
                req.done = True
                self._dropped.append(_cancelled_event(req))
                continue
            probe = None
            try:
                probe = self.build(key)
                try:
                    probe.add(req)
                except ValueError as e:  # the scheduler refuses it: its own fault
                    raise DataError(str(e)) from None
                seen = len(req.logprobs)
                while not req.done and len(req.logprobs) == seen:
                    self.report(StepReport(probe.step(), 0, 0, 0.0))
            except Exception as e:  # noqa: BLE001 — this request fails alone: it is the culprit
                if probe is not None:
                    self.report(StepReport(list(probe.last_events), 0, 0, 0.0))
                log.warning("a request failed alone after a failed step: %r", e)
                if not req.done:
                    self.fail([req], e)
                continue
            if not req.done:
                survivors.append(req)
        self.isolated += 1
        for req in reversed(survivors):
            self.pending.appendleft((key, req))

    def _take_dropped(self) -> list:
        out, self._dropped = self._dropped, []
        return out

    def fail_all(self, error: BaseException) -> None:
        """Fail every request in the scheduler and drop it (the next request builds a new one)."""
        st = self.scheduler
        if st is None:
            return
        reqs = list(st.waiting) + [r.req for r in st.decoding] + [r.req for r in st.prefilling]
        self._retire()
        if reqs:
            self.fail(reqs, error)

    def stats(self) -> dict[str, float]:
        """Totals since start: the schedulers' counters, busy and CPU seconds of the steps."""
        out = dict(self.totals)
        live = [self.scheduler] + ([self._idle[1]] if self._idle is not None else [])
        for sched in live:
            st = getattr(sched, "stats", None)
            if st is not None:
                for k in STAT_KEYS:
                    out[k] = out.get(k, 0) + getattr(st, k)
        for sched in live:  # engine memory: the idle scheduler's parts count too
            memory = getattr(sched, "memory", None)
            if memory is not None:
                for k, v in memory().items():
                    out[k] = out.get(k, 0) + v
        out["isolated"] = self.isolated
        out["step_seconds"] = self.step_seconds
        out["step_cpu_seconds"] = self.step_cpu_seconds
        return out


def _cancelled_event(req: Any):
    from endcloud.runtime.scheduler import StepEvent

    return StepEvent(req, None, True)
