"""Every knob of the server in one dataclass: limits, routing thresholds, batching, cloud.

Field comments are the help text; `ServeSettings.from_env()` reads `ENDCLOUD_SERVE_*`
overrides (e.g. `ENDCLOUD_SERVE_MIN_MATCH=0.4`). Validation errors quote the bad value and
name the setting to change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from endcloud.paper import PAPER
from endcloud.errors import ConfigError
from endcloud.runtime.async_engine import BATCHING, WORKERS
from endcloud.runtime.engines import ENGINES

ENV_PREFIX = "ENDCLOUD_SERVE_"

# Request limits (named so tests and docs can cite them).
MAX_BODY_BYTES = 64 * 1024
MAX_MESSAGES = 64
MAX_TOKENS_PER_MESSAGE = 1024
RATE_LIMIT_PER_MINUTE = 60
KNOWLEDGE_POSITIONS = ("after_question", "system")  # where a question's shop knowledge goes (see TurnService._context)


@dataclass(frozen=True)
class ServeSettings:
    """Settings of `endcloud serve`."""

    host: str = "127.0.0.1"  # interface to listen on
    port: int = 8000  # TCP port
    base_dir: Path | None = None  # local HF model dir of the end model (lifespan loads it when no engine is injected)
    adapter_dir: Path | None = None  # a peft adapter dir to apply on top of the base (None: base only)
    adapter_name: str | None = None  # registry name of the adapter served (for /healthz and records)
    db_path: Path | None = None  # SQLite file of sessions/replies/feedback (None: in memory)
    audit_path: Path | None = None  # where the privacy gate logs what left the shop
    shop_dir: Path | None = None  # shop pack for knowledge snippets and orders.csv
    engine: str = "transformers"  # end-model engine: transformers (in-process) | vllm (a local vLLM server, ENDCLOUD_VLLM_*) | llamacpp (GGUF, optional extra)
    # -- limits --
    max_body_bytes: int = MAX_BODY_BYTES  # larger request bodies get 413
    max_messages: int = MAX_MESSAGES  # more messages in one request get 400
    max_tokens_per_message: int = MAX_TOKENS_PER_MESSAGE  # approx. tokens (CJK char = 1, else 4 chars = 1); over -> 400
    rate_limit_per_minute: int = RATE_LIMIT_PER_MINUTE  # requests per customer per minute; over -> 429 + Retry-After
    # -- generation --
    max_new_tokens: int = 64  # default reply length of the end model; a request's max_tokens may lower it
    max_new_tokens_cap: int = 512  # the most a request may ask for (paper Table IV max output)
    temperature: float = PAPER.temperature
    top_p: float = PAPER.top_p
    history_messages: int = 8  # the most earlier messages in the model's context (the window moves in steps of half of it, so prompts keep their start)
    knowledge_snippets: int = 3  # knowledge-base snippets put in the end model's context
    knowledge_position: str = "after_question"  # after_question: a system message after the newest question (earlier turns keep their cached key/values; needs a template that renders it, else system) | system: in the leading system message
    # -- batching --
    batching: str = "auto"  # continuous (a running batch, tokens streamed) | static (whole batches) | auto: continuous where the end model allows
    max_batch: int = 16  # most conversations generated at once (rows of the running batch, or one `generate` call)
    batch_window_ms: float = 10.0  # how long the batcher waits for another request after each arrival (continuous: only while idle)
    batch_max_wait_ms: float = 100.0  # the most a batch waits for stragglers after its first request
    prefill_chunk_tokens: int = 512  # continuous: prompt tokens prefilled per decode step, so a long prompt never stalls the batch long
    prefix_cache_mb: float = 256.0  # continuous: memory for key/values of earlier prompts (shared system/knowledge text, earlier turns); 0 turns it off
    worker: str = "process"  # continuous: the running batch in its own process (no lock shared with the event loop; measured faster) | thread
    torch_threads: int = 0  # torch threads of the in-process end model; 0: all cores but one, which stays with uvicorn (1 on 2 cores: measured best)
    # -- routing (a turn goes to the cloud when any check fails) --
    min_match: float = 0.25  # matching score of (query, end reply) below this -> cloud
    min_confidence: float = 0.0  # end model confidence (exp mean logprob) below this -> cloud
    max_frustration: float = 0.5  # frustration signal at or above this -> cloud
    cloud_timeout_s: float = 20.0  # the whole cloud takeover (retries included); then the end reply is served
    # -- the paper's score of every takeover (eq. 1), which the dashboard and the online loop read --
    alpha: float = PAPER.alpha  # Final = alpha * Sim(end, cloud) + (1 - alpha) * Match(query, end)
    theta: float = PAPER.theta  # where Match(query, cloud) < theta, Final = Sim alone
    # -- admin --
    admin_token: str | None = None  # when set, profile endpoints need `Authorization: Bearer <token>`

    def __post_init__(self) -> None:
        positive = ("max_body_bytes", "max_messages", "max_tokens_per_message", "rate_limit_per_minute",
                    "max_new_tokens", "max_new_tokens_cap", "max_batch", "cloud_timeout_s", "prefill_chunk_tokens")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"serve setting {name} must be > 0, got {v!r} (env {ENV_PREFIX}{name.upper()})")
        if self.batching not in BATCHING:
            raise ConfigError(f"serve setting batching must be one of {', '.join(BATCHING)}, got {self.batching!r} "
                              f"(env {ENV_PREFIX}BATCHING)")
        for name in ("prefix_cache_mb", "torch_threads"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"serve setting {name} must be >= 0, got {v!r} (env {ENV_PREFIX}{name.upper()})")
        if self.knowledge_position not in KNOWLEDGE_POSITIONS:
            raise ConfigError(f"serve setting knowledge_position must be one of {', '.join(KNOWLEDGE_POSITIONS)}, got "
                              f"{self.knowledge_position!r} (env {ENV_PREFIX}KNOWLEDGE_POSITION)")
        if self.worker not in WORKERS:
            raise ConfigError(f"serve setting worker must be one of {', '.join(WORKERS)}, got {self.worker!r} "
                              f"(env {ENV_PREFIX}WORKER)")
        if self.engine not in ENGINES:
            raise ConfigError(f"serve setting engine must be one of {', '.join(ENGINES.names())}, got {self.engine!r} "
                              f"(--engine or env {ENV_PREFIX}ENGINE)")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be 1-65535, got {self.port!r}")
        for name in ("alpha", "theta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ConfigError(f"serve setting {name} must be in [0, 1], got {v!r} (env {ENV_PREFIX}{name.upper()})")
        if not 0.0 <= self.top_p <= 1.0:
            raise ConfigError(f"serve setting top_p must be in [0, 1], got {self.top_p!r}")
        if self.batch_window_ms < 0 or self.batch_max_wait_ms < 0:
            raise ConfigError(f"serve settings batch_window_ms / batch_max_wait_ms must be >= 0, "
                              f"got {self.batch_window_ms!r} / {self.batch_max_wait_ms!r}")

    def resolved_torch_threads(self) -> int:
        """`torch_threads`, with 0 resolved for this machine."""
        return self.torch_threads or max(1, (os.cpu_count() or 2) - 1)

    def with_(self, **changes) -> "ServeSettings":
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "ServeSettings":
        """Defaults, then `ENDCLOUD_SERVE_<FIELD>` variables, then explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _parse(f.name, raw, f.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _parse(name: str, raw: str, default: object) -> object:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if name.endswith(("_dir", "_path")):
            return Path(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type(default).__name__}") from None
