"""The server's handle on the end model: batched async generation, token streaming, hot swap.

`AsyncEngine` wraps any `runtime.protocol.ServedModel` (`generate(conversations, *,
max_new_tokens, temperature, top_p, seed) -> [Generation]`, `swap_adapter(dir|None)`,
`variant`). The evolution loop promotes a new adapter in-process with
`app.state.engine.swap_adapter(path)`.

How requests are batched (`batching`, a name in `BATCHING`):

    continuous  a `SchedulableModel` (the in-process `EndModel` on the fast path, Llama/Qwen2
                family): a running batch (`runtime.scheduler`) that a request joins at the
                next decode step and leaves the moment it ends; tokens stream out as they
                are sampled. A swap lets the replies in flight finish on the old variant
                while new ones queue, then the batch continues on the new one.
    engine      a model that batches continuously by itself (`streams_itself`: transformers'
                continuous batching, `runtime.hfbatch`): each request joins the model's own
                running batch at once (`EngineBatcher`) and its tokens stream as they are
                sampled; the model finishes replies in flight on their variant after a swap.
    static      anything else (a vLLM client, llama.cpp, a test double, a model without fast
                weights): `DynamicBatcher` collects a batch and calls `generate` on it;
                a swap waits for the batch in flight. The reply arrives whole.
    auto        continuous where the model allows it, engine where the model batches itself,
                else static.

Either way no reply mixes two adapters, and each reply records the adapter that wrote it.

Where the continuous batch runs (`worker`, a name in `WORKERS`): "thread" steps it in a
thread of this process; "process" (what `endcloud serve` uses) in a child process
(`runtime.worker`), so the model's ~100 torch calls per step never wait for the
interpreter lock the event loop holds.

Prompts (continuous path): a conversation's next prompt continues the ids of its previous
prompt and of the reply the model sampled (`runtime.prompts`), so the prefix cache
holds every earlier token; when it outgrows the model's input, it is trimmed to `TRIM_TO`
of it and then grows from that unchanged start again.

    gen, match = await engine.generate_scored(messages, query=q, max_new_tokens=64, temperature=0.6, top_p=0.8)
    stream = engine.stream_scored(messages, query=q, ...)
    async for delta in stream: ...          # text pieces; they join to stream.result[0].text
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from endcloud.errors import ConfigError, DataError
from endcloud.runtime.batching import ContinuousBatcher, DynamicBatcher, EngineBatcher, Ticket
from endcloud.runtime.protocol import Generation, check_generate_args, schedulable, uses_torch_threads

log = logging.getLogger(__name__)

PREFIX_CACHE_MB = 256.0  # default budget of the prefix cache (key/values of earlier prompts)
# A conversation that outgrows the model's input drops its oldest turns down to this share
# of max_input_len, so its next turns append to an unchanged start (prefix-cache hits)
# instead of each dropping one more turn and changing every prompt's beginning.
TRIM_TO = 0.75
TRANSCRIPTS = 4096  # conversations whose last prompt + reply ids are kept (LRU), for the next turn's prompt
TRANSCRIPTS_MB = 64.0  # ... and the most memory they may hold together (LRU beyond it)
BATCHING = ("auto", "continuous", "static")  # how requests are batched (see the module docstring)
WORKERS = ("process", "thread")  # where the continuous batch runs (see endcloud.runtime.worker)


def text_decoder(tokenizer: Any):
    """ids -> `tokenizer.decode(ids, skip_special_tokens=True)`, without transformers' wrapper
    where that is the same thing (a fast tokenizer that does not override `_decode` and does
    no space clean-up): the wrapper converts the id list element by element, and a streamed
    reply is decoded at every token, on the event loop (1/5 of its time under load)."""
    try:
        from transformers import TokenizersBackend
    except ImportError:  # an older transformers: the plain call
        TokenizersBackend = None
    backend = getattr(tokenizer, "_tokenizer", None)
    if (TokenizersBackend is not None and isinstance(tokenizer, TokenizersBackend) and backend is not None
            and type(tokenizer)._decode is TokenizersBackend._decode
            and not getattr(tokenizer, "clean_up_tokenization_spaces", False)):
        return lambda ids: backend.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


class IncrementalDetokenizer:
    """Token ids in, text deltas out, never splitting a multi-byte character.

    The deltas join to `decode(ids, skip_special_tokens=True).strip()`, exactly the text
    `EndModel.generate` returns, because every delta is cut from that same full decode:
    a byte-level piece that ends inside a character decodes to U+FFFD and is held back
    until its character completes; leading whitespace is dropped and trailing whitespace
    waits for what follows it (the final text is stripped). Decoding the whole reply at
    each push is O(n²) in tokens, microseconds for replies of a few hundred tokens, and
    cannot disagree with the final decode the way a decode of a window can.
    """

    def __init__(self, tokenizer: Any, decode: Any = None):
        self.decode = decode or text_decoder(tokenizer)
        self.ids: list[int] = []
        self.sent = ""

    def push(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        text = self.decode(self.ids).lstrip()
        end = len(text)
        while end and text[end - 1] == "\ufffd":
            end -= 1
        text = text[:end].rstrip()
        if not text.startswith(self.sent):
            return ""  # the decode rewrote what was sent (a tokenizer cleanup rule): wait for the end
        delta, self.sent = text[len(self.sent):], text
        return delta

    def finish(self, final: str) -> str:
        """What is left of `final` (the whole reply's text) after the deltas sent so far."""
        if final.startswith(self.sent):
            delta, self.sent = final[len(self.sent):], final
            return delta
        log.warning("streamed text %r is not a prefix of the reply %r", self.sent[:80], final[:80])
        return ""


class ReplyStream:
    """One end reply as text deltas: `async for delta in stream`, then `stream.result` is
    (Generation, match). Deltas join to `stream.text`, which is `result[0].text`.

    `ready()` returns what has arrived without waiting, so a caller can send everything
    available in one write. Leaving the loop early (`aclose`) frees the reply's row.
    """

    def __init__(self, engine: "AsyncEngine", ticket: Ticket | None = None, whole: Any = None):
        self._ticket = ticket
        self._whole = whole  # static path: an awaitable of (Generation, match)
        self._detok = IncrementalDetokenizer(engine.model.tokenizer, engine.decode) if ticket is not None else None
        self.result: tuple[Any, float | None] | None = None
        self.text = ""
        self._ended = False

    def __aiter__(self) -> "ReplyStream":
        return self

    @property
    def finished(self) -> bool:
        """Whether the engine has finished the reply (its last deltas may still be unread)."""
        if self._ticket is not None:
            return self._ticket.future.done()
        return self._ended

    def ready(self) -> str:
        """Text that arrived since the last delta, without waiting ('' when none)."""
        if self._ticket is None or self._ended:
            return ""
        delta = self._detok.push(self._ticket.take())
        self.text += delta
        return delta

    async def __anext__(self) -> str:
        if self._ended:
            raise StopAsyncIteration
        if self._ticket is None:  # the static path: the whole reply at once
            self.result = await self._whole
            self._ended = True
            self.text = self.result[0].text
            if self.text:
                return self.text
            raise StopAsyncIteration
        while True:
            delta = self.ready()
            if delta:
                return delta
            if self._ticket.future.done():
                self.result = self._ticket.future.result()  # raises the engine's error, if any
                self._ended = True
                gen = self.result[0]
                rest = self._detok.finish(gen.text)
                self.text += rest
                if self.text != gen.text:  # what the customer saw is what the reply is
                    gen.text = self.text
                if rest:
                    return rest
                raise StopAsyncIteration
            await self._ticket.wait()

    async def aclose(self) -> None:
        if self._ticket is not None and not self._ticket.future.done():
            self._ticket.cancel()
        elif self._whole is not None and not self._ended and hasattr(self._whole, "close"):
            self._whole.close()
        self._ended = True


class AsyncEngine:
    """Batched, thread-safe access to one end model."""

    def __init__(self, model: Any, *, max_batch: int = 16, window_ms: float = 10.0, max_wait_ms: float | None = None,
                 adapter: str | None = None, scorer: Any = None, batching: str = "auto", prefill_chunk: int = 512,
                 prefix_cache_mb: float = PREFIX_CACHE_MB, threads: int | None = None, worker: str = "thread",
                 transcripts: int = TRANSCRIPTS, transcripts_mb: float = TRANSCRIPTS_MB):
        if batching not in BATCHING:
            raise ConfigError(f"batching must be one of {BATCHING}, got {batching!r} (setting batching)")
        if worker not in WORKERS:
            raise ConfigError(f"worker must be one of {WORKERS}, got {worker!r} (setting worker)")
        self.model = model
        self.scorer = scorer  # matching scorer run on finished replies in the worker (see generate_scored)
        self._lock = threading.Lock()  # one swap at a time (static path: one generate or one swap)
        self._adapter = adapter  # what is served, for /healthz and the reply records
        # label -> Variant served beside the main one to the requests that name it (a canary's
        # or an A/B test's arm). Why per-request variants and not a second engine: the engine
        # core already keys every request by its variant and drains the running batch before it
        # switches, so two adapters share one process, one copy of the base weights and one
        # batcher; the price is that rows of different variants never share a decode step
        # (measured in bench/bench_canary.py).
        self._variants: dict[str, Any] = {}
        self.generations = 0
        # torch threads only for an in-process torch model (a vLLM client needs no torch)
        self.threads = threads if uses_torch_threads(model) else None
        can = batching != "static" and schedulable(model)
        itself = not can and batching != "static" and bool(getattr(model, "streams_itself", False))
        if batching == "continuous" and not (can or itself):
            raise ConfigError(f"continuous batching needs the in-process end model on its fast path, got "
                              f"{type(model).__name__} (set batching to auto or static)")
        self.mode = "continuous" if can else "engine" if itself else "static"
        self.worker = worker if can else "thread"  # a static batch always runs in a thread
        self.streams_tokens = can or itself  # whether stream_scored yields text as tokens are sampled
        tok = getattr(model, "tokenizer", None)
        self.decode = text_decoder(tok) if tok is not None else None  # ids -> reply text (continuous path)
        if can:
            self._stop_ids = tuple(model.stop_ids)
            self._served = (model.variant, adapter)  # (variant, label): replaced together on a swap
            self.prefill_chunk = int(prefill_chunk)
            self.prefix_cache_bytes = int(prefix_cache_mb * 2**20)
            # session -> Transcript of its last end-model turn (prompt + sampled ids): the next
            # turn's prompt continues those ids, so the prefix cache hits on all of them
            self._transcripts: OrderedDict[str, Any] = OrderedDict()
            self.max_transcripts = int(transcripts)  # bounded by count and by bytes, oldest first out
            self.max_transcript_bytes = int(transcripts_mb * 2**20)
            self.transcript_bytes = 0
            self._transcripts_lock = threading.Lock()  # written by the worker, read by the event loop
            self.prompts_continued = 0  # prompts that continued a transcript (figures for /bench)
            if worker == "process":
                from endcloud.runtime.worker import ProcessBatcher

                self.batcher: Any = ProcessBatcher(self._export, self._finish, max_batch=max_batch, window_ms=window_ms,
                                                   max_wait_ms=max_wait_ms, threads=self.threads)
            else:
                self.batcher = ContinuousBatcher(self._build_scheduler, self._finish, max_batch=max_batch,
                                                 window_ms=window_ms, max_wait_ms=max_wait_ms, threads=self.threads)
        elif itself:
            self.batcher = EngineBatcher(self._start_in_engine, max_batch=max_batch)
        else:
            self.batcher = DynamicBatcher(self._generate_batch, max_batch=max_batch, window_ms=window_ms,
                                          max_wait_ms=max_wait_ms)

    @classmethod
    def from_settings(cls, model: Any, settings: Any, **kw) -> "AsyncEngine":
        """An engine with the batching knobs of `ServeSettings`."""
        return cls(model, max_batch=settings.max_batch, window_ms=settings.batch_window_ms,
                   max_wait_ms=settings.batch_max_wait_ms, batching=settings.batching,
                   prefill_chunk=settings.prefill_chunk_tokens, prefix_cache_mb=settings.prefix_cache_mb,
                   threads=settings.resolved_torch_threads(), worker=settings.worker,
                   transcripts=settings.session_transcripts, transcripts_mb=settings.session_transcripts_mb, **kw)

    @classmethod
    def load(cls, base_dir: str | os.PathLike[str] | None, adapter_dir: str | os.PathLike[str] | None = None, *,
             kind: str = "transformers", **kw) -> "AsyncEngine":
        """`kind` picks the end-model engine (`runtime.ENGINES`): the in-process transformers
        model, a shop-local vLLM server named by ENDCLOUD_VLLM_*, or llama.cpp."""
        from endcloud.runtime.engines import load_end_model

        model = load_end_model(kind, base_dir=base_dir, adapter_dir=adapter_dir)
        settings = kw.pop("settings", None)
        if settings is not None:
            return cls.from_settings(model, settings, adapter=str(adapter_dir) if adapter_dir else None, **kw)
        return cls(model, adapter=str(adapter_dir) if adapter_dir else None, **kw)

    @property
    def late_system(self) -> bool:
        """Whether the end model renders a system message just before the newest question
        (where the app then puts that question's shop knowledge)."""
        fn = getattr(self.model, "late_system", None)
        return bool(fn()) if callable(fn) else False

    # -- what is served ------------------------------------------------------------------
    @property
    def adapter(self) -> str | None:
        return self._adapter

    @adapter.setter
    def adapter(self, label: str | None) -> None:
        self._adapter = label
        if self.mode == "continuous":
            self._served = (self.model.variant, label)

    def add_variant(self, label: str, adapter_dir: str | os.PathLike[str] | None) -> None:
        """Load `adapter_dir` beside the served adapter; requests that pass `variant=label`
        run on it. Needs a model that builds variants without serving them (`load_variant`:
        the in-process transformers engine)."""
        load = getattr(self.model, "load_variant", None)
        if load is None or self.mode == "engine":
            raise ConfigError(f"the {type(self.model).__name__} engine serves one adapter at a time; a canary or A/B "
                              "test needs the in-process transformers engine (setting engine)")
        variant = load(adapter_dir)  # slow (a LoRA merge): outside the lock, requests go on
        with self._lock:
            self._variants[label] = variant

    def drop_variant(self, label: str) -> None:
        """Stop serving `label` beside the main adapter; its replies in flight finish on it."""
        with self._lock:
            self._variants.pop(label, None)

    @property
    def variants(self) -> list[str]:
        """Labels served beside the main adapter."""
        return list(self._variants)

    def _pick(self, label: str | None) -> tuple[Any, str | None]:
        """(variant, label) a request runs on: `label`'s when it is served beside the main one,
        else the main one (an arm that was just promoted or rolled back: never an error)."""
        if label is not None:
            variant = self._variants.get(label)
            if variant is not None:
                return variant, label
        return self._current()

    def _current(self) -> tuple[Any, str | None]:
        variant, label = self._served
        live = self.model.variant
        if live is not variant and not self._lock.locked():
            # the model was swapped directly (not through swap_adapter): serve what it serves now
            self._served = (live, self._adapter)
            return self._served
        return variant, label  # during a swap: the old adapter, with its own label

    # -- static batching ---------------------------------------------------------------
    def _generate_batch(self, payloads: list[tuple[list[dict], str | None]], key: tuple) -> list[tuple[Any, float | None]]:
        max_new_tokens, temperature, top_p, seed, arm = key
        with self._lock:
            extra = {"variant": self._variants[arm]} if arm in self._variants else {}
            out = list(self.model.generate([p[0] for p in payloads], max_new_tokens=max_new_tokens, temperature=temperature,
                                           top_p=top_p, seed=seed, **extra))
            self.generations += 1
            served = arm if extra else self.adapter  # read under the lock: a swap cannot fall between reply and label
        for g in out:
            g.adapter = served
        # Score the whole batch in one call, here in the worker: the scorer's batch API is
        # cheaper per pair, and the event loop stays free for other customers.
        return list(zip(out, self._match([p[1] for p in payloads], out)))

    def _match(self, queries: list[str | None], gens: list[Any]) -> list[float | None]:
        idx = [i for i, (q, g) in enumerate(zip(queries, gens)) if q is not None and g.text.strip()]
        matches: list[float | None] = [None] * len(gens)
        if self.scorer is not None and idx:
            scores = self.scorer.score([queries[i] for i in idx], [gens[i].text for i in idx])
            for i, sc in zip(idx, scores):
                matches[i] = float(sc)
        return matches

    # -- a model that batches itself -------------------------------------------------------
    def _start_in_engine(self, payload: tuple, on_tokens: Any, on_end: Any) -> Any:
        """EngineBatcher: one request into the model's running batch; scored when it ends."""
        messages, query, params = payload
        label = self.adapter  # what the reply records: the adapter served when it started

        def end(gen: Any, error: BaseException | None) -> None:
            if error is not None:
                on_end(None, error)
                return
            gen.adapter = label
            try:
                match = self._match([query], [gen])[0]  # in the model's router thread, off the event loop
            except Exception as e:
                on_end(None, e)
                return
            self.generations += 1
            on_end((gen, match), None)

        return self.model.submit(messages, on_tokens=on_tokens, on_end=end, **params)

    def _submit_engine(self, messages: list[dict], *, query: str | None, stream: bool, **params: Any) -> Ticket:
        check_generate_args(params["max_new_tokens"], params["temperature"], params["top_p"], params.get("seed"))
        return self.batcher.submit((messages, query, params), stream=stream)

    # -- continuous batching -----------------------------------------------------------
    def _build_scheduler(self, variant: Any):
        from endcloud.runtime.scheduler import PrefixCache, Scheduler

        cache = PrefixCache(self.prefix_cache_bytes) if self.prefix_cache_bytes > 0 else None
        return Scheduler(variant.weights, prefix=variant.prefix, stop_ids=self._stop_ids, max_batch=self.batcher.max_batch,
                       prefill_chunk=self.prefill_chunk, prefix_cache=cache)

    def _export(self, variant: Any) -> tuple:
        """What the engine process needs to build a scheduler for `variant` (worker="process")."""
        return variant.weights, variant.prefix, {"stop_ids": list(self._stop_ids), "prefill_chunk": self.prefill_chunk,
                                              "prefix_cache_bytes": self.prefix_cache_bytes}

    def _finish(self, requests: list[Any]) -> list[tuple[Any, float | None]]:
        """In the worker: finished StepRequests -> (Generation, match), scored in one call."""
        gens = []
        for r in requests:
            text = self.decode(r.tokens).strip()
            n = len(r.tokens) + (1 if r.ended else 0)
            mean = float(sum(r.logprobs) / n) if n else 0.0
            g = Generation(text=text, confidence=math.exp(mean), tokens=len(r.tokens), logprob=mean,
                           finish_reason="stop" if r.ended else "length", prompt_tokens=len(r.prompt),
                           cached_tokens=int(r.cached_tokens), token_ids=list(r.tokens),
                           token_logprobs=[float(x) for x in r.logprobs[:len(r.tokens)]])
            g.adapter = r.meta[1]
            gens.append(g)
            self._remember(r, text)
        self.generations += 1
        return list(zip(gens, self._match([r.meta[0] for r in requests], gens)))

    def _remember(self, r: Any, text: str) -> None:
        """Keep a finished turn's prompt + reply ids for its conversation's next prompt."""
        session, prompt = r.meta[2], r.meta[3]
        if session is None or r.cancelled:
            return
        t = prompt.then(r.tokens, text, self.model.tokenizer)
        with self._transcripts_lock:
            old = self._transcripts.pop(session, None)
            if old is not None:
                self.transcript_bytes -= transcript_size(old)
            if t is None:
                return
            size = transcript_size(t)
            if size > self.max_transcript_bytes:
                return
            self._transcripts[session] = t
            self.transcript_bytes += size
            while len(self._transcripts) > self.max_transcripts or self.transcript_bytes > self.max_transcript_bytes:
                _, gone = self._transcripts.popitem(last=False)
                self.transcript_bytes -= transcript_size(gone)

    def _prompt(self, messages: list[dict], session: str | None) -> Any:
        with self._transcripts_lock:
            after = self._transcripts.get(session) if session is not None else None
        prompt = self.model.prompt(messages, after=after, trim_to=max(1, int(TRIM_TO * self.model.max_input_len)))
        if prompt.reused:
            self.prompts_continued += 1
        return prompt

    def _submit(self, messages: list[dict], *, query: str | None, max_new_tokens: int, temperature: float,
                top_p: float, seed: int | None, stream: bool, session: str | None = None,
                variant: str | None = None) -> Ticket:
        from endcloud.runtime.scheduler import StepRequest

        check_generate_args(max_new_tokens, temperature, top_p, seed)
        variant, label = self._pick(variant)
        prompt = self._prompt(messages, session)
        req = StepRequest(prompt.ids, max_new_tokens, temperature, top_p, seed,
                          meta=(query, label, session, prompt))  # read back by _finish
        return self.batcher.submit(req, key=variant, stream=stream)

    # -- the interface the app uses ------------------------------------------------------
    async def generate_scored(self, messages: list[dict], *, query: str | None, max_new_tokens: int, temperature: float,
                              top_p: float, seed: int | None = None, session: str | None = None,
                              variant: str | None = None) -> tuple[Any, float | None]:
        """(Generation, Match(query, reply) or None): batched with whatever else is in flight.

        `session` names the conversation: its next turn's prompt continues this turn's ids.
        `variant`: the label of an adapter served beside the main one (`add_variant`)."""
        if self.mode == "static":
            check_generate_args(max_new_tokens, temperature, top_p, seed)  # one bad request never reaches a batch
            arm = variant if variant in self._variants else None
            return await self.batcher.submit((messages, query), key=(max_new_tokens, temperature, top_p, seed, arm))
        if self.mode == "engine":
            ticket = self._submit_engine(messages, query=query, stream=False, max_new_tokens=max_new_tokens,
                                         temperature=temperature, top_p=top_p, seed=seed)
        else:
            ticket = self._submit(messages, query=query, max_new_tokens=max_new_tokens, temperature=temperature,
                                  top_p=top_p, seed=seed, stream=False, session=session, variant=variant)
        try:
            return await asyncio.shield(ticket.future)
        except asyncio.CancelledError:
            ticket.cancel()
            raise

    def stream_scored(self, messages: list[dict], *, query: str | None, max_new_tokens: int, temperature: float,
                      top_p: float, seed: int | None = None, session: str | None = None,
                      variant: str | None = None) -> ReplyStream:
        """The reply as text deltas while it is generated (static path: all at once at the end)."""
        if self.mode == "static":
            return ReplyStream(self, whole=self.generate_scored(messages, query=query, max_new_tokens=max_new_tokens,
                                                                temperature=temperature, top_p=top_p, seed=seed,
                                                                variant=variant))
        if self.mode == "engine":
            return ReplyStream(self, self._submit_engine(messages, query=query, stream=True,
                                                         max_new_tokens=max_new_tokens, temperature=temperature,
                                                         top_p=top_p, seed=seed))
        return ReplyStream(self, self._submit(messages, query=query, max_new_tokens=max_new_tokens,
                                              temperature=temperature, top_p=top_p, seed=seed, stream=True,
                                              session=session, variant=variant))

    @property
    def completes_text(self) -> bool:
        """Whether `complete` serves a raw-text prompt (the continuous engine: it takes ids)."""
        return self.mode == "continuous"

    async def complete(self, prompt: str, *, max_new_tokens: int, temperature: float, top_p: float,
                       seed: int | None = None) -> Any:
        """A plain completion of `prompt` (no chat template): the Generation of the text that
        follows it, batched with the chats in flight. Continuous engine only (`completes_text`);
        a prompt longer than the model's input keeps its end."""
        from endcloud.runtime.scheduler import StepRequest

        if not self.completes_text:
            raise ConfigError(f"plain completions need the continuous engine; this one batches whole ({self.mode}) "
                              "and takes conversations only: use /v1/chat/completions")
        check_generate_args(max_new_tokens, temperature, top_p, seed)
        ids = list(self.model.tokenizer(prompt, add_special_tokens=False)["input_ids"])[-self.model.max_input_len:]
        if not ids:
            raise DataError("the prompt has no tokens")
        variant, label = self._current()
        req = StepRequest(ids, max_new_tokens, temperature, top_p, seed, meta=(None, label, None, None))
        ticket = self.batcher.submit(req, key=variant, stream=False)
        try:
            gen, _ = await asyncio.shield(ticket.future)
        except asyncio.CancelledError:
            ticket.cancel()
            raise
        return gen

    async def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float, top_p: float,
                       seed: int | None = None) -> Any:
        """One conversation -> one Generation, batched with whatever else is in flight."""
        gen, _ = await self.generate_scored(messages, query=None, max_new_tokens=max_new_tokens, temperature=temperature,
                                            top_p=top_p, seed=seed)
        return gen

    def swap_adapter(self, adapter_dir: str | os.PathLike[str] | None) -> None:
        """Serve another adapter (None: the bare base). Continuous: replies in flight finish
        on the old adapter, new ones start on the new one; static: from the next batch on."""
        with self._lock:
            self.model.swap_adapter(adapter_dir)
            self.adapter = adapter_label(adapter_dir)  # continuous: (variant, label) replaced together

    def stats(self) -> dict[str, Any]:
        """Batching figures for /bench and metrics: mode, batch sizes, and (continuous) step totals."""
        out: dict[str, Any] = {"mode": self.mode, "batch_sizes": list(self.batcher.batch_sizes),
                               "batch_seconds": list(self.batcher.batch_seconds)}
        out["isolated"] = getattr(self.batcher, "isolated", 0)
        if self.mode == "continuous":
            out.update(self.batcher.stats())
            out["prompts_continued"] = self.prompts_continued
            out["transcripts"] = len(self._transcripts)
            out["transcript_bytes"] = self.transcript_bytes
        return out

    def memory(self) -> dict[str, int]:
        """Bytes the engine holds in the parts that grow with use, each bounded by a setting:
        the prefix cache (prefix_cache_mb), the KV pools (max_batch x the longest row, given
        back when the batch drains) and the session transcripts (session_transcripts_mb).
        Empty for engines batched whole (their memory is their own)."""
        if self.mode != "continuous":
            return {}
        st = self.batcher.stats()
        return {"prefix_cache": int(st.get("prefix_cache_bytes", 0)), "kv_pools": int(st.get("kv_pool_bytes", 0)),
                "transcripts": int(self.transcript_bytes)}

    def start(self) -> None:
        if self.threads and self.worker == "thread":
            import torch

            torch.set_num_threads(int(self.threads))
        self.batcher.start()
        if self.mode == "continuous" and self.worker == "process":
            self.batcher.prepare(self._current()[0])  # the weights cross now, not with the first customer

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop the batcher; replies still in flight fail. `timeout_s` bounds the wait for its
        worker (a thread, or the engine process: killed when it does not stop in time)."""
        if timeout_s is None:
            await self.batcher.stop()
        else:
            await self.batcher.stop(timeout_s=timeout_s)


def transcript_size(t: Any) -> int:
    """Bytes a Transcript holds, near enough: its ids, text and special-token marks."""
    ids = t.ids
    return len(ids) * ids.itemsize + len(t.text) * (1 if t.text.isascii() else 4) + 16 * len(t.marks) + 200


def adapter_label(adapter_dir: str | os.PathLike[str] | None) -> str | None:
    """"shop/v3" for a registry version folder (it has a manifest), else the folder path."""
    if not adapter_dir:
        return None
    p = Path(adapter_dir)
    return f"{p.parent.name}/{p.name}" if (p / "manifest.json").exists() else str(p)
