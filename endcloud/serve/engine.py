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

    def __init__(self, model: Any, *, max_batch: int = 16, window_ms: float = 10.0, adapter: str | None = None):
        self.model = model
        self.adapter = adapter  # what is served, for /healthz and the reply records
        self._lock = threading.Lock()  # one generate or one swap at a time
        self.batcher = DynamicBatcher(self._generate_batch, max_batch=max_batch, window_ms=window_ms)
        self.generations = 0

    @classmethod
    def load(cls, base_dir: str | os.PathLike[str], adapter_dir: str | os.PathLike[str] | None = None, **kw) -> "Engine":
        from endcloud.end.engine import EndModel  # lazy: torch/transformers

        model = EndModel.load(base_dir, adapter_dir=adapter_dir)
        return cls(model, adapter=str(adapter_dir) if adapter_dir else None, **kw)

    def _generate_batch(self, conversations: list[list[dict]], key: tuple) -> list[Any]:
        max_new_tokens, temperature, top_p, seed = key
        with self._lock:
            out = self.model.generate(conversations, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
            self.generations += 1
        return list(out)

    async def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float, top_p: float,
                       seed: int | None = None) -> Any:
        """One conversation -> one Generation, batched with whatever else is in flight."""
        return await self.batcher.submit(messages, key=(max_new_tokens, temperature, top_p, seed))

    def swap_adapter(self, adapter_dir: str | os.PathLike[str] | None) -> None:
        """Serve another adapter (None: the bare base) from the next batch on."""
        with self._lock:
            self.model.swap_adapter(adapter_dir)
            self.adapter = str(Path(adapter_dir)) if adapter_dir else None

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
