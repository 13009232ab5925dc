"""The end model's running batch in its own process: the server's engine core.

In one process the model worker thread and the event loop share one interpreter lock.
A decode step is ~100 small torch calls, each of which must take the lock back from
the event loop, which is busy with what sixteen customers need (HTTP, SSE events, the
session store); measured on 2 cores, the worker then spends about a third of its busy
time waiting for the lock. vLLM runs its engine core in a separate process for the same
reason. `ProcessBatcher` does that for the continuous batcher: the same interface as
`ContinuousBatcher` (submit -> Ticket, tokens streamed, `finish` on the replies that
ended), with the `Scheduler` in a child process:

    event loop ── submit ──► pipe ──► child: Scheduler.add / step() / step() ...
        ▲                                   │  one message per step: tokens of streamed
        └── call_soon_threadsafe ◄── reader thread (finish: decode + score) ◄┘  rows, finished replies

Weights cross once per model variant (an adapter swap sends the new one): torch shares
the tensors through shared memory, no copy. The child runs the same engine-core loop as
the in-thread batcher (`endcloud.runtime.core`: the gathering window, draining the running
batch before a variant switch, refusals and failures); only the transport differs. The
child owns the prefix cache.

A child that dies (killed, out of memory) fails the requests it held with a clear error,
and the next request starts a new one. `stop()` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections import deque
from typing import Any, Callable, Sequence

from endcloud.errors import DataError, ModelError
from endcloud.runtime.batching import Ticket
from endcloud.runtime.core import EngineCore, Recent, StepReport, batch_window

log = logging.getLogger(__name__)

_KEEP_KEYS = 4  # model variants whose ids the parent remembers (in flight during swaps)


class ProcessBatcher:
    """`ContinuousBatcher`'s interface, the batch stepped in a child process.

    `export(key) -> (weights, prefix, config)` gives what the child needs to build a
    `Scheduler` for a model variant (config: stop_ids, prefill_chunk, prefix_cache_bytes);
    `finish(requests) -> results` runs in the parent's reader thread on finished replies.
    """

    def __init__(self, export: Callable[[Any], tuple], finish: Callable[[list[Any]], Sequence[Any]], *,
                 max_batch: int = 16, window_ms: float = 10.0, max_wait_ms: float | None = None,
                 threads: int | None = None, start_timeout_s: float = 120.0):
        self.window_s, self.max_wait_s = batch_window(max_batch, window_ms, max_wait_ms)
        self.export, self.finish = export, finish
        self.max_batch = max_batch
        self.threads = threads
        self.start_timeout_s = start_timeout_s
        self.batch_sizes: list[int] = Recent()
        self.batch_seconds: list[float] = Recent()
        self.on_batch: Callable[[int, float], None] | None = None
        self.on_step: Callable[[int], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: Any = None
        self._conn: Any = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._tickets: dict[int, Ticket] = {}
        self._rid = 0
        self._keys: deque[tuple[Any, int]] = deque()  # (key object, id) sent to the child
        self._kid = 0
        self._stats: dict[str, float] = {}
        self._stopping = False
        self.restarts = 0

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        import torch.multiprocessing as tmp

        self._loop = asyncio.get_running_loop()
        ctx = tmp.get_context("spawn")  # fork would copy a process with threads (torch's, uvicorn's)
        parent, child = ctx.Pipe()
        cfg = {"max_batch": self.max_batch, "window_s": self.window_s, "max_wait_s": self.max_wait_s,
               "threads": self.threads}
        proc = ctx.Process(target=_child_main, args=(child, cfg), name="endcloud-engine-core", daemon=True)
        with _main_module_hidden():
            proc.start()
        child.close()
        # each process has its own tickets: a dead one's reader fails only the replies it held
        tickets: dict[int, Ticket] = {}
        self._proc, self._conn, self._keys, self._stopping, self._tickets = proc, parent, deque(), False, tickets
        self._reader = threading.Thread(target=self._read, args=(parent, proc, tickets),
                                        name="endcloud-engine-reader", daemon=True)
        self._reader.start()

    async def stop(self, *, timeout_s: float = 30.0) -> None:
        """Stop the engine process: asked, then killed after `timeout_s`; what it held fails."""
        proc, conn, reader = self._proc, self._conn, self._reader
        if proc is None:
            return
        self._stopping = True
        try:
            self._send(("stop",))
        except (OSError, ValueError):
            pass
        await asyncio.to_thread(proc.join, timeout_s)
        if proc.is_alive():
            proc.kill()
            await asyncio.to_thread(proc.join, 2)
        if reader is not None:
            await asyncio.to_thread(reader.join, 2)  # it ends at the pipe's EOF
        conn.close()
        self._proc = self._conn = self._reader = None
        self._fail_all(ModelError("the server is shutting down"), self._tickets)

    # -- requests ----------------------------------------------------------------------
    def submit(self, request: Any, *, key: Any = None, stream: bool = False) -> Ticket:
        """Queue `request` (a StepRequest); returns its Ticket at once."""
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self.restarts += 1
            self.start()
        assert self._loop is not None
        ticket = Ticket(request, key, stream, self._loop)
        request.tag = ticket
        msg = (list(request.prompt), int(request.max_new_tokens), float(request.temperature), float(request.top_p),
               request.seed, bool(stream))
        for attempt in (1, 2):
            try:
                with self._send_lock:
                    self._rid += 1
                    rid = self._rid
                    self._tickets[rid] = ticket
                    kid = self._key_id(key)
                    self._send_locked(("add", kid, rid) + msg)
                break
            except (OSError, ValueError, EOFError) as e:  # the process died since the check above
                self._tickets.pop(rid, None)
                if attempt == 2:
                    raise ModelError(f"cannot reach the end model's engine process: {e}") from e
                log.warning("the engine process is gone (%s); starting a new one", e)
                self.restarts += 1
                self._restart()
        ticket.on_cancel = lambda: self._cancel(rid)
        return ticket

    def _restart(self) -> None:
        proc, conn = self._proc, self._conn
        if proc is not None and proc.is_alive():
            proc.kill()
        if conn is not None:
            conn.close()  # the old reader ends and fails the replies the old process held
        self._proc = None
        self.start()

    def prepare(self, key: Any) -> None:
        """Send model variant `key`'s weights to the engine process ahead of its first request."""
        with self._send_lock:
            self._key_id(key)

    def _key_id(self, key: Any) -> int:
        """The child's id of model variant `key`, sending its weights the first time (lock held)."""
        for k, kid in self._keys:
            if k is key:
                return kid
        self._kid += 1
        weights, prefix, config = self.export(key)
        self._send_locked(("variant", self._kid, weights, prefix, config))
        self._keys.append((key, self._kid))
        while len(self._keys) > _KEEP_KEYS:
            self._keys.popleft()
        return self._kid

    def _cancel(self, rid: int) -> None:
        try:
            self._send(("cancel", rid))
        except (OSError, ValueError):
            pass

    def _send(self, msg: tuple) -> None:
        with self._send_lock:
            self._send_locked(msg)

    def _send_locked(self, msg: tuple) -> None:
        if self._conn is None:
            raise ModelError("the end model's engine process is not running")
        self._conn.send(msg)

    # -- figures -----------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        out = dict(self._stats)
        out["occupancy"] = out.get("rows", 0) / out["steps"] if out.get("steps") else 0.0
        out.setdefault("step_seconds", 0.0)
        out.setdefault("step_cpu_seconds", 0.0)
        out["restarts"] = self.restarts
        return out

    # -- the reader thread -------------------------------------------------------------
    def _read(self, conn: Any, proc: Any, tickets: dict[int, Ticket]) -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._handle(msg, tickets)
            except Exception:  # a bug here must not leave the reader dead with customers waiting
                log.exception("handling a message of the engine process failed")
        if not (self._stopping and proc is self._proc):
            proc.join(1)
            code = proc.exitcode if proc.exitcode is not None else "unknown"
            log.error("the end model's engine process exited (code %s)", code)
            self._fail_all(ModelError(f"the end model's engine process stopped (exit code {code}); "
                                      "the next request starts a new one"), tickets)

    def _handle(self, msg: tuple, tickets: dict[int, Ticket]) -> None:
        kind = msg[0]
        if kind == "step":
            _, tokens, finished, admitted, rows, dt, stats = msg
            self._stats = stats
            if admitted:
                self.batch_sizes.append(admitted)
                self.batch_seconds.append(dt)
                if self.on_batch is not None:
                    self.on_batch(admitted, dt)
            if rows and self.on_step is not None:
                self.on_step(rows)
            pushed = [(tickets[rid], tok) for rid, tok in tokens if rid in tickets]
            ended = self._finished(finished, tickets)
            self._post(pushed, ended)
        elif kind == "failed":  # refused (the request's own fault), or its variant or its step failed
            _, rids, why, message = msg
            err = DataError(message) if why == "data" else ModelError(f"the end model failed: {message}")
            self._post([], [(t, None, err) for rid in rids if (t := tickets.pop(rid, None)) is not None])

    def _finished(self, finished: list[tuple], tickets: dict[int, Ticket]) -> list[tuple[Ticket, Any, BaseException | None]]:
        done = []
        for rid, toks, lps, ended, cached, cancelled in finished:
            t = tickets.pop(rid, None)
            if t is None:
                continue
            r = t.request
            r.tokens, r.logprobs, r.ended, r.cached_tokens, r.done = toks, lps, ended, cached, True
            if not (cancelled or r.cancelled):
                done.append(r)
        if not done:
            return []
        try:
            results = list(self.finish(done))
            if len(results) != len(done):
                raise RuntimeError(f"finish returned {len(results)} results for {len(done)} requests")
            return [(r.tag, res, None) for r, res in zip(done, results)]
        except Exception as e:
            log.exception("finishing replies failed")
            return [(r.tag, None, e) for r in done]

    def _post(self, tokens: list[tuple[Ticket, int]], ended: list[tuple[Ticket, Any, BaseException | None]]) -> None:
        from endcloud.runtime.batching import _deliver

        loop = self._loop
        if not (tokens or ended) or loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(_deliver, tokens, ended)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _fail_all(self, error: BaseException, tickets: dict[int, Ticket]) -> None:
        with self._send_lock:
            left = list(tickets.values())
            tickets.clear()
        self._post([], [(t, None, error) for t in left])


@contextlib.contextmanager
def _main_module_hidden():
    """Start a spawned child without re-running the caller's main script in it.

    spawn imports the parent's `__main__` (by path or module name) in the child before the
    target runs, so a script that builds the app without an `if __name__ == "__main__"`
    guard would run again there. The child needs only this module, so multiprocessing is
    shown a main module without a file or spec while it prepares the child."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


# ---------------------------------------------------------------------------------------
# the child process
def _child_main(conn: Any, cfg: dict) -> None:
    """The engine core: read commands, step the batch, send one message per step."""
    import signal

    import torch

    # Ctrl-C and a service manager signal the whole process group; the server then shuts
    # down gracefully and tells this process to stop (or closes the pipe: EOF ends it too).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    try:
        _Core(conn, cfg).run()
    except (EOFError, OSError, KeyboardInterrupt):  # the parent went away
        pass
    finally:
        conn.close()


class _Core(EngineCore):
    """The engine core in the engine process: commands arrive on the pipe, one message per
    step goes back. Requests are known by the parent's ids (`StepRequest.tag`)."""

    def __init__(self, conn: Any, cfg: dict):
        super().__init__(self._build, max_batch=int(cfg["max_batch"]), window_s=float(cfg["window_s"]),
                         max_wait_s=float(cfg["max_wait_s"]))
        self.conn = conn
        self.variants: dict[int, tuple] = {}  # id -> (weights, prefix, config): the key of its requests
        self.live: dict[int, Any] = {}  # rid -> StepRequest, pending or in the scheduler
        self.stream: set[int] = set()

    def receive(self, timeout: float | None) -> None:
        if timeout is None:
            self._take(self.conn.recv())  # idle: block for the next command
        elif timeout > 0 and not self.conn.poll(timeout):
            return
        while not self.stopping and self.conn.poll():
            self._take(self.conn.recv())

    def _take(self, msg: tuple) -> None:
        from endcloud.runtime.scheduler import StepRequest

        kind = msg[0]
        if kind == "add":
            _, kid, rid, prompt, max_new, temperature, top_p, seed, stream = msg
            variant = self.variants.get(kid)
            if variant is None:  # cannot happen: the parent sends a variant before its first request
                self.conn.send(("failed", [rid], "model", "unknown model variant"))
                return
            req = StepRequest(prompt, max_new, temperature, top_p, seed, tag=rid)
            self.live[rid] = req
            if stream:
                self.stream.add(rid)
            self.put(variant, req)
        elif kind == "cancel":
            r = self.live.get(msg[1])
            if r is not None:
                r.cancel()  # the scheduler frees its row at the next step; a pending one leaves at admission
        elif kind == "variant":
            _, kid, weights, prefix, config = msg
            self.variants[kid] = (weights, prefix, config)
            for old in [k for k in self.variants if k < kid - _KEEP_KEYS]:
                del self.variants[old]
        elif kind == "stop":
            self.stopping = True

    def _build(self, variant: tuple):
        from endcloud.runtime.scheduler import PrefixCache, Scheduler

        weights, prefix, config = variant
        cache_bytes = int(config.get("prefix_cache_bytes", 0))
        return Scheduler(weights, prefix=prefix, stop_ids=config["stop_ids"], max_batch=self.max_batch,
                       prefill_chunk=int(config["prefill_chunk"]),
                       prefix_cache=PrefixCache(cache_bytes) if cache_bytes > 0 else None)

    def fail(self, requests: list, error: BaseException) -> None:
        rids = [r.tag for r in requests]
        for rid in rids:
            self.live.pop(rid, None)
            self.stream.discard(rid)
        kind = "data" if isinstance(error, DataError) else "model"
        self.conn.send(("failed", rids, kind, str(error) if kind == "data" else f"{type(error).__name__}: {error}"))

    def report(self, report: StepReport) -> None:
        tokens, finished = [], []
        for ev in report.events:
            rid = ev.request.tag
            if ev.token is not None and rid in self.stream:
                tokens.append((rid, ev.token))
            if ev.finished:
                r = self.live.pop(rid, ev.request)
                self.stream.discard(rid)
                finished.append((rid, r.tokens, r.logprobs, r.ended, r.cached_tokens, r.cancelled))
        if tokens or finished or report.admitted:  # else nothing to tell: the parent's reader stays asleep
            stats = self.stats()
            stats["pid"] = os.getpid()
            self.conn.send(("step", tokens, finished, report.admitted, report.rows, report.seconds, stats))
