"""What an end model offers the rest of endcloud, and what the scheduler needs besides.

Every engine in `ENGINES` (the in-process transformers model, a shop-local vLLM server,
llama.cpp over a GGUF file) and every test double serves the same small surface:

    class ServedModel(Protocol):             what the server, the online loop and `eval` call
        variant: Variant                     what is served now: immutable, a swap replaces it
        generate(conversations, *, max_new_tokens, temperature, top_p, seed, system) -> [Generation]
        swap_adapter(adapter_dir | None)     hot swap; calls in flight finish on the old variant

    class SchedulableModel(ServedModel):     the in-process model on its fast path, which the
        tokenizer, max_input_len, stop_ids   continuous-batching scheduler steps itself:
        prompt(messages, *, after, trim_to)  token ids in, token ids out (`runtime.scheduler`)
        late_system()
        variant.weights is not None          (fast weights exist for this architecture)

A `Variant` is the public identity of what is being served. It is replaced as a whole on a
swap, so `model.variant is not previous` says a swap happened, and a reply that started on
one variant finishes on it: the scheduler is built for one variant, the static batch reads
it once. Nothing outside a backend reads the backend's private attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

from endcloud.errors import DataError
from endcloud.records import ROLES


@dataclass
class Generation:
    """One reply: its text, confidence = exp(logprob), reply token count, mean token log-prob."""

    text: str
    confidence: float
    tokens: int
    logprob: float
    # What an engine knows besides (None where it does not; the server then says less):
    finish_reason: str | None = None  # "stop" (a stop token) | "length" (max_new_tokens ran out)
    prompt_tokens: int | None = None  # prompt length in the end model's own tokens
    cached_tokens: int = 0  # prompt tokens whose key/values came from the prefix cache
    token_ids: list[int] | None = None  # the reply's ids (no stop token), for per-token logprobs
    token_logprobs: list[float] | None = None  # log-prob of each reply token, same order
    token_texts: list[str] | None = None  # each token's text, where the engine names them (vLLM)


@dataclass(frozen=True, eq=False)  # compared by identity: a swap makes a new one
class Variant:
    """What a reply runs on: a base, an optional adapter, and what the backend needs to run it.

    `weights` and `prefix` are what the scheduler steps (`runtime.fastdecode.FastWeights`
    and the learned prefix key/values per layer, each (1, kv_heads, P, head_dim)); a
    backend without a fast path leaves `weights` None and is batched whole. `handle` is the
    backend's own object (the transformers module, a llama.cpp context), opaque to others."""

    name: str  # "base" or "base+shop/v3": what logs and records show
    adapter_dir: Path | None
    method: str  # "base" | "lora" | "prefix"
    weights: Any = None
    prefix: Any = None
    handle: Any = None

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix is None else int(self.prefix[0][0].shape[2])


class VariantView:
    """`adapter_dir`, `name` and `method` of what a backend serves, read off its `variant`:
    a backend defines `variant` alone, and the three can never disagree with it."""

    variant: Variant

    @property
    def adapter_dir(self) -> Path | None:
        return self.variant.adapter_dir

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def method(self) -> str:
        return self.variant.method


@runtime_checkable
class ServedModel(Protocol):
    """An end model as the runtime serves it (see the module docstring)."""

    @property
    def variant(self) -> Variant: ...

    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 128, temperature: float = 0.6,
                 top_p: float = 0.8, seed: int | None = None, system: str | None = None) -> list[Generation]: ...

    def swap_adapter(self, adapter_dir: Any) -> None: ...


@runtime_checkable
class SchedulableModel(ServedModel, Protocol):
    """A served model whose replies the continuous-batching scheduler can step itself."""

    tokenizer: Any
    max_input_len: int
    # True where generation runs torch in this process: the engine then sets torch's thread count
    uses_torch_threads: bool

    @property
    def stop_ids(self) -> Sequence[int]: ...

    def prompt(self, messages: list[dict], *, system: str | None = None, after: Any = None,
               trim_to: int | None = None) -> Any: ...

    def late_system(self) -> bool: ...


def schedulable(model: Any) -> bool:
    """Whether the scheduler can step `model`: the protocol, and fast weights for its current variant."""
    if not isinstance(model, SchedulableModel):  # cheap attribute checks: no torch import for doubles and clients
        return False
    from endcloud.runtime.fastdecode import FastWeights

    return isinstance(model.variant.weights, FastWeights)


def uses_torch_threads(model: Any) -> bool:
    """Whether `model` runs torch in this process (then its thread count is the engine's to set)."""
    return bool(getattr(model, "uses_torch_threads", False))


# The seeds every engine takes (a 64-bit signed integer, OpenAI's `seed`): torch's generator
# overflows past 64 bits, and one request's bad seed must never reach a shared batch step.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


def check_generate_args(max_new_tokens: int, temperature: float, top_p: float, seed: int | None = None) -> None:
    """The sampling settings every engine accepts (in-process, vLLM or llama.cpp)."""
    if max_new_tokens < 1:
        raise DataError(f"max_new_tokens must be at least 1, got {max_new_tokens!r}")
    if not (temperature >= 0) or not (0 < top_p <= 1) or temperature == float("inf"):
        raise DataError(f"need temperature >= 0 and 0 < top_p <= 1, got temperature={temperature!r} top_p={top_p!r}")
    if seed is not None and not (isinstance(seed, int) and SEED_MIN <= seed <= SEED_MAX):
        raise DataError(f"seed must be an integer in [{SEED_MIN}, {SEED_MAX}], got {seed!r:.40}")


def check_messages(messages) -> list[dict]:
    """A conversation as plain {role, content} dicts, or a DataError saying what is wrong."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DataError(f"a conversation must be a non-empty list of messages, got {messages!r:.80}")
    out = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(
                f"each message needs role in {ROLES} and a string content, got {m!r:.120}"
            )
        out.append({"role": m["role"], "content": m["content"]})
    return out
