"""The `"transformers-cb"` engine: transformers' own continuous batching behind the end-model protocol.

    m = ContinuousHFModel.load("models/chatglm3-6b", device="cuda", trust_remote_code=True)
    [g] = m.generate([[{"role": "user", "content": "几天发货？"}]], temperature=0)
    h = m.submit(messages, max_new_tokens=64, temperature=0.6, top_p=0.8,
                 on_tokens=lambda ids: ..., on_end=lambda gen, err: ...)    # streamed, joins the running batch
    endcloud serve --engine transformers-cb --device cuda

What it is for: our fast path (`runtime.fastdecode` + `runtime.scheduler`) steps Llama/Qwen2-
family models on a CPU. Anything else — another architecture, a custom-code base, any model on
a GPU — would otherwise be generated in whole batches through `EndModel`'s transformers
forward. transformers 5 ships a continuous-batching engine (`generation/continuous_batching`:
a paged KV cache, prefix block sharing, requests joining and leaving between steps, per-request
temperature/top-p, streaming, CUDA graphs on a GPU and a plain CPU path); this module drives
it so the server streams tokens from such models too (`AsyncEngine` mode "engine").

What it serves: the base and LoRA adapters (merged into a private copy of the touched weights,
as `EndModel` does). Prefix / P-tuning v2 adapters are learned key/values in front of every
layer's cache, which a paged cache has no slot for: they are refused, and served by the
"transformers" engine (ours, CPU or GPU).

How it differs from our engine, on purpose and not:
- greedy requests (temperature 0) go to a manager that takes the argmax, sampled ones to a
  manager with per-request temperature and top-p: transformers decides `do_sample` per manager.
  Each keeps its own paged cache (created on first use).
- `seed` is not honoured per request: transformers draws every sample from one generator.
- confidence is exp(mean log-prob) as everywhere, but for a sampled reply the log-probs are
  those of the temperature/top-p adjusted distribution transformers samples from, not the raw
  one (a greedy reply's are raw): the router's threshold reads sampled replies as a little
  more confident than `EndModel` does.
- a swap: replies in flight finish on the old variant's manager, which is stopped once they
  have; new replies start on the new variant's.

Threads: each manager's generation loop is started from a daemon thread of ours (so it is a
daemon too, and never holds the interpreter open), which then routes the manager's outputs to
the callbacks of their requests.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from endcloud.errors import ModelError
from endcloud.runtime.model import EndModel
from endcloud.runtime.protocol import Generation, Variant, check_generate_args

log = logging.getLogger("endcloud.runtime.hfbatch")

PAGE_SIZE = 32  # tokens per KV block on the CPU; on a GPU transformers sizes the cache itself
GPU_MEMORY_SHARE = 0.4  # of the free GPU memory, per manager (a greedy and a sampled one may coexist)
_ids = itertools.count()


@dataclass
class _Request:
    """One reply on its way: what the router calls back, and what it has seen so far."""

    rid: str
    on_tokens: Callable[[list[int]], None] | None
    on_end: Callable[[Any, BaseException | None], None]
    manager: "_Manager"
    seen: int = 0
    cancelled: bool = False

    def cancel(self) -> None:
        """The customer left: the manager drops the row at its next step."""
        if not self.cancelled:
            self.cancelled = True
            self.manager.cancel(self.rid)


@dataclass
class _Manager:
    """One transformers ContinuousBatchingManager (one variant, greedy or sampled) and its router."""

    cb: Any
    variant: Variant
    greedy: bool
    stops: frozenset
    requests: dict[str, _Request] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None
    started: threading.Event = field(default_factory=threading.Event)
    closing: bool = False
    _stopper: threading.Thread | None = None  # the thread stopping it (see stop)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._route, name="endcloud-hfbatch", daemon=True)
        self.thread.start()
        self.started.wait()

    def _route(self) -> None:
        # Started from this daemon thread, the manager's generation thread is a daemon as well.
        self.cb.start()
        self.started.set()
        while not (self.closing and not self.requests):
            out = self.cb.get_result(timeout=0.05)
            if out is None:
                if not self.cb.is_running() and not self.closing:
                    self._fail_all(ModelError("the transformers continuous-batching loop stopped unexpectedly"))
                    return
                continue
            with self.lock:
                req = self.requests.get(out.request_id)
            if req is None:
                continue  # cancelled meanwhile
            new = list(out.generated_tokens[req.seen:])
            req.seen = len(out.generated_tokens)
            if out.error is not None:
                self._end(req, None, ModelError(f"transformers continuous batching failed a reply: {out.error}"))
                continue
            finished = out.is_finished()
            visible = [t for t in new if t not in self.stops]
            if visible and req.on_tokens is not None and not req.cancelled:
                req.on_tokens(visible)
            if finished:
                self._end(req, self._generation(out), None)

    def _generation(self, out: Any) -> dict:
        toks = list(out.generated_tokens)
        ended = bool(toks) and toks[-1] in self.stops
        reply = toks[:-1] if ended else toks
        lps = [max(float(x), -100.0) for x in out.logprobs[: len(reply) + (1 if ended else 0)]]
        mean = sum(lps) / len(lps) if lps else 0.0
        return {"tokens": reply, "logprob": mean, "ended": ended}

    def _end(self, req: _Request, result: Any, error: BaseException | None) -> None:
        with self.lock:
            self.requests.pop(req.rid, None)
        if not req.cancelled or error is None:
            try:
                req.on_end(result, error)
            except Exception:  # a caller's callback must not kill the router of every other reply
                log.exception("a reply's end callback failed")

    def _fail_all(self, error: BaseException) -> None:
        with self.lock:
            pending, self.requests = list(self.requests.values()), {}
        for r in pending:
            r.on_end(None, error)

    def add(self, ids: list[int], rid: str, req: _Request, *, max_new_tokens: int, sampling: dict) -> None:
        with self.lock:
            self.requests[rid] = req
        try:
            self.cb.add_request(ids, request_id=rid, max_new_tokens=max_new_tokens, streaming=req.on_tokens is not None,
                                eos_token_id=list(self.stops), **sampling)
        except BaseException:
            with self.lock:
                self.requests.pop(rid, None)
            raise

    def cancel(self, rid: str) -> None:
        with self.lock:
            self.requests.pop(rid, None)
        self.cb.cancel_request(rid)

    def busy(self) -> bool:
        with self.lock:
            return bool(self.requests)

    def stop(self) -> None:
        """Let the replies in flight finish, then stop (in the background: transformers' stop
        runs gc.collect(), seconds in a large process)."""
        self.closing = True

        def _stop() -> None:
            if self.thread is not None:
                self.thread.join()
            try:
                self.cb.stop(block=True, timeout=30)
            except Exception:  # the loop already died: nothing to stop
                log.debug("stopping a continuous-batching manager failed", exc_info=True)

        t = threading.Thread(target=_stop, name="endcloud-hfbatch-stop", daemon=True)
        t.start()
        self._stopper = t


class ContinuousHFModel(EndModel):
    """An end model generated by transformers' continuous batching (see the module docstring)."""

    streams_itself = True  # AsyncEngine streams its replies without a scheduler of ours

    def __init__(self, *, max_batch: int = 32, max_new_tokens: int = 512, **kw: Any):
        kw["fast"] = False  # the variant's handle is what transformers steps
        super().__init__(**kw)
        self.max_batch = int(max_batch)
        self.max_new_tokens = int(max_new_tokens)
        self._managers: dict[tuple[Variant, bool], _Manager] = {}  # a Variant hashes by identity
        self._managers_lock = threading.Lock()
        self._retired: list[_Manager] = []

    @classmethod
    def load(cls, base_dir, adapter_dir=None, *, dtype=None, max_input_len: int = 256, threads: int | None = None,
             device=None, trust_remote_code: bool | None = None, max_batch: int = 32,
             max_new_tokens: int = 512, **unused: Any) -> "ContinuousHFModel":
        """Load a local base dir (+ a LoRA adapter dir) for transformers' continuous batching."""
        import torch

        from endcloud.end.base import check_model_dir, load_base
        from endcloud.end.device import resolve_device
        from endcloud.runtime.model import _parse_dtype

        if unused.get("quant"):
            raise ModelError("the transformers-cb engine has no quant option; use --engine transformers --quant int8 "
                             "on the CPU, or a quantized model through llama-server / vLLM")
        if threads:
            torch.set_num_threads(int(threads))
        base = check_model_dir(base_dir)
        dev = resolve_device(device)
        dt = _parse_dtype(dtype, base, dev)
        model, tok = load_base(base, dtype=dt, padding_side="left", device=dev, trust_remote_code=trust_remote_code)
        self = cls(model=model, tokenizer=tok, base_dir=base, dtype=dt, max_input_len=max_input_len,
                   max_batch=max_batch, max_new_tokens=max_new_tokens)
        if adapter_dir is not None:
            self.swap_adapter(adapter_dir)
        return self

    # ---- adapters ------------------------------------------------------------------------
    def _build_variant(self, adapter_dir) -> Variant:
        v = super()._build_variant(adapter_dir)
        if v.method == "prefix":
            raise ModelError(
                f"adapter {str(adapter_dir)!r} is a prefix / P-tuning v2 adapter: its learned key/values go in front of "
                "every layer's cache, which transformers' paged cache has no slot for. Serve it with --engine "
                "transformers (CPU or GPU), or train --method lora for this engine"
            )
        return v

    def swap_adapter(self, adapter_dir) -> None:
        """Serve `adapter_dir` from now on; replies in flight finish on the old variant's manager."""
        with self._swap_lock:
            old = self._variant
            self._variant = self._build_variant(adapter_dir)
        if self._variant is not old:
            self._retire(old)

    def _retire(self, variant: Variant) -> None:
        with self._managers_lock:
            gone = [k for k in self._managers if k[0] is variant]
            for k in gone:
                m = self._managers.pop(k)
                m.stop()
                self._retired.append(m)
            # stopped ones go (and the variant's model copy with them): a promotion a day must not pile up models
            self._retired = [m for m in self._retired if m._stopper is not None and m._stopper.is_alive()]

    # ---- the managers --------------------------------------------------------------------
    def _cb_config(self, greedy: bool):
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        per_row = self.max_input_len + self.max_new_tokens
        if self.device.type == "cpu":
            # Sized from the engine's own limits: transformers' default sizing reads GPU memory.
            blocks = self.max_batch * math.ceil(per_row / PAGE_SIZE) + 8
            return ContinuousBatchingConfig(return_logprobs=True, page_size=PAGE_SIZE, num_blocks=blocks,
                                            max_batch_tokens=max(per_row, 512), per_request_processors=not greedy,
                                            use_cuda_graph=False, use_async_batching=False)
        return ContinuousBatchingConfig(return_logprobs=True, max_memory_percent=GPU_MEMORY_SHARE,
                                        per_request_processors=not greedy)

    def _manager(self, variant: Variant, greedy: bool) -> _Manager:
        key = (variant, greedy)
        with self._managers_lock:
            m = self._managers.get(key)
            if m is not None:
                return m
            from transformers import GenerationConfig

            # temperature / top_p not 1.0, so that transformers builds their per-request processors
            gen = (GenerationConfig(do_sample=False, max_new_tokens=self.max_new_tokens) if greedy else
                   GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=self.max_new_tokens))
            gen.eos_token_id = list(self.stop_ids)
            gen.pad_token_id = self.tokenizer.pad_token_id
            cb = variant.handle.init_continuous_batching(generation_config=gen,
                                                         continuous_batching_config=self._cb_config(greedy))
            m = _Manager(cb=cb, variant=variant, greedy=greedy, stops=frozenset(self.stop_ids))
            m.start()
            self._managers[key] = m
            return m

    @property
    def device(self):
        return next(self._base_model.parameters()).device

    # ---- generation ----------------------------------------------------------------------
    def submit(self, messages: list[dict], *, max_new_tokens: int = 128, temperature: float = 0.6, top_p: float = 0.8,
               seed: int | None = None, system: str | None = None, on_tokens: Callable[[list[int]], None] | None = None,
               on_end: Callable[[Generation | None, BaseException | None], None]) -> _Request:
        """Start one reply in the running batch. `on_tokens(ids)` gets its tokens as they are
        sampled (end-of-turn tokens left out); `on_end(generation, error)` is called once, from
        the engine's router thread. Returns a handle whose `cancel()` drops the row."""
        check_generate_args(max_new_tokens, temperature, top_p, seed)
        if max_new_tokens > self.max_new_tokens:
            raise ModelError(f"max_new_tokens {max_new_tokens} is above this engine's {self.max_new_tokens} "
                             "(its KV cache is sized for it); load it with a larger max_new_tokens")
        variant = self._variant
        ids = self.prompt_ids(messages, system=system)
        greedy = temperature <= 0
        manager = self._manager(variant, greedy)
        rid = f"r{next(_ids)}"
        decode = self.tokenizer.decode

        def finish(result: Any, error: BaseException | None) -> None:
            if error is not None:
                on_end(None, error)
                return
            text = decode(result["tokens"], skip_special_tokens=True).strip()
            on_end(Generation(text=text, confidence=math.exp(result["logprob"]), tokens=len(result["tokens"]),
                              logprob=result["logprob"], prompt_tokens=len(ids)), None)

        req = _Request(rid=rid, on_tokens=on_tokens, on_end=finish, manager=manager)
        sampling = {} if greedy else {"temperature": float(temperature), "top_p": float(top_p)}
        manager.add(ids, rid, req, max_new_tokens=int(max_new_tokens), sampling=sampling)
        return req

    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 128, temperature: float = 0.6,
                 top_p: float = 0.8, seed: int | None = None, system: str | None = None) -> list[Generation]:
        """One reply per conversation, all in the running batch at once (blocks until the last ends)."""
        if not conversations:
            return []
        check_generate_args(max_new_tokens, temperature, top_p, seed)
        done = threading.Semaphore(0)
        out: list[Any] = [None] * len(conversations)

        def ender(i: int):
            def end(gen: Generation | None, error: BaseException | None) -> None:
                out[i] = error if error is not None else gen
                done.release()
            return end

        for i, c in enumerate(conversations):
            self.submit(c, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                        system=system, on_end=ender(i))
        for _ in conversations:
            done.acquire()
        for r in out:
            if isinstance(r, BaseException):
                raise r
        return out

    def close(self) -> None:
        """Stop every manager (a later request starts new ones)."""
        with self._managers_lock:
            managers, self._managers = list(self._managers.values()), {}
        for m in managers + self._retired:
            if not m.closing:
                m.stop()
        for m in managers + self._retired:
            t = getattr(m, "_stopper", None)
            if t is not None:
                t.join(timeout=60)
        self._retired = []


def load(base_dir, adapter_dir=None, **kw: Any) -> ContinuousHFModel:
    """`ENGINES["transformers-cb"]`."""
    return ContinuousHFModel.load(base_dir, adapter_dir, **kw)


__all__ = ["ContinuousHFModel", "load"]
