"""The server's handle on the end model: batched async generation and adapter hot swap.

`Engine` wraps anything with the `EndModel` interface (`generate(conversations, *,
max_new_tokens, temperature, top_p, seed) -> [Generation]`, `swap_adapter(dir|None)`).
The evolution loop promotes a new adapter in-process with `app.state.engine.swap_adapter(path)`:
the swap waits for the batch in flight, so no reply mixes two adapters.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from endcloud.serve.batching import DynamicBatcher


class Engine:
    """Batched, thread-safe access to one end model."""

    def __init__(self, model: Any, *, max_batch: int = 16, window_ms: float = 10.0, max_wait_ms: float | None = None,
                 adapter: str | None = None, scorer: Any = None):
        self.model = model
        self.adapter = adapter  # what is served, for /healthz and the reply records
        self.scorer = scorer  # matching scorer run on each whole batch in the worker (see generate_scored)
        self._lock = threading.Lock()  # one generate or one swap at a time
        self.batcher = DynamicBatcher(self._generate_batch, max_batch=max_batch, window_ms=window_ms, max_wait_ms=max_wait_ms)
        self.generations = 0

    @classmethod
    def load(cls, base_dir: str | os.PathLike[str] | None, adapter_dir: str | os.PathLike[str] | None = None, *,
             kind: str = "transformers", **kw) -> "Engine":
        """`kind` picks the end-model engine (endcloud.end.vllm.ENGINES): the in-process
        transformers engine, or a shop-local vLLM server named by ENDCLOUD_VLLM_*."""
        from endcloud.end.vllm import load_end_model  # lazy: torch/transformers only for "transformers"

        model = load_end_model(kind, base_dir=base_dir, adapter_dir=adapter_dir)
        return cls(model, adapter=str(adapter_dir) if adapter_dir else None, **kw)

    def _generate_batch(self, payloads: list[tuple[list[dict], str | None]], key: tuple) -> list[tuple[Any, float | None]]:
        max_new_tokens, temperature, top_p, seed = key
        with self._lock:
            out = list(self.model.generate([p[0] for p in payloads], max_new_tokens=max_new_tokens, temperature=temperature,
                                           top_p=top_p, seed=seed))
            self.generations += 1
            served = self.adapter  # read under the lock: a swap cannot fall between reply and label
        for g in out:
            g.adapter = served
        # Score the whole batch in one call, here in the worker: the scorer's batch API is
        # cheaper per pair, and the event loop stays free for other customers.
        idx = [i for i, (p, g) in enumerate(zip(payloads, out)) if p[1] is not None and g.text.strip()]
        matches: list[float | None] = [None] * len(out)
        if self.scorer is not None and idx:
            scores = self.scorer.score([payloads[i][1] for i in idx], [out[i].text for i in idx])
            for i, sc in zip(idx, scores):
                matches[i] = float(sc)
        return list(zip(out, matches))

    async def generate_scored(self, messages: list[dict], *, query: str | None, max_new_tokens: int, temperature: float,
                              top_p: float, seed: int | None = None) -> tuple[Any, float | None]:
        """(Generation, Match(query, reply) or None): batched with whatever else is in flight."""
        return await self.batcher.submit((messages, query), key=(max_new_tokens, temperature, top_p, seed))

    async def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float, top_p: float,
                       seed: int | None = None) -> Any:
        """One conversation -> one Generation, batched with whatever else is in flight."""
        gen, _ = await self.generate_scored(messages, query=None, max_new_tokens=max_new_tokens, temperature=temperature,
                                            top_p=top_p, seed=seed)
        return gen

    def swap_adapter(self, adapter_dir: str | os.PathLike[str] | None) -> None:
        """Serve another adapter (None: the bare base) from the next batch on."""
        with self._lock:
            self.model.swap_adapter(adapter_dir)
            self.adapter = adapter_label(adapter_dir)

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()


def adapter_label(adapter_dir: str | os.PathLike[str] | None) -> str | None:
    """"shop/v3" for a registry version folder (it has a manifest), else the folder path."""
    if not adapter_dir:
        return None
    p = Path(adapter_dir)
    return f"{p.parent.name}/{p.name}" if (p / "manifest.json").exists() else str(p)
