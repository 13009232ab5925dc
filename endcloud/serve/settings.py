"""Every knob of the server in one dataclass: limits, routing thresholds, batching, cloud.

Field comments are the help text; `ServeSettings.from_env()` reads `ENDCLOUD_SERVE_*`
overrides (e.g. `ENDCLOUD_SERVE_MIN_MATCH=0.4`). Validation errors quote the bad value and
name the setting to change.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields, replace
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
MIN_SECRET_CHARS = 16  # the shortest customer_secret accepted (it keys HMAC-SHA256)


def is_loopback_host(host: str) -> bool:
    """Whether `host` (an interface to listen on, or a client address) is this machine only."""
    h = (host or "").strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


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
    session_transcripts: int = 4096  # continuous: conversations whose last prompt + reply ids are kept for the next turn (LRU)
    session_transcripts_mb: float = 64.0  # continuous: ... and the most memory they hold together (LRU beyond it)
    worker: str = "process"  # continuous: the running batch in its own process (no lock shared with the event loop; measured faster) | thread
    torch_threads: int = 0  # torch threads of the in-process end model; 0: all cores but one, which stays with uvicorn (1 on 2 cores: measured best)
    # -- routing (a turn goes to the cloud when any check fails) --
    min_match: float = 0.25  # matching score of (query, end reply) below this -> cloud
    min_confidence: float = 0.0  # end model confidence (exp mean logprob) below this -> cloud
    max_frustration: float = 0.5  # frustration signal at or above this -> cloud
    grounding_check: bool = True  # an end reply stating a fact (price, duration, time, courier, id, ...) that the turn's knowledge snippets, the customer's data and the shop's profile do not support -> cloud (needs a shop pack)
    grounding_snippets: int = 3  # with knowledge_snippets=0 the check retrieves this many snippets for itself
    novelty_check: bool = True  # an end reply holding text (a garbled name, a value remembered from training) that is neither in what the grounding check reads nor phrasing the end model was trained to write -> cloud (needs the base's glue.json, as the shipped reader has; the workspace's teacher labels add theirs)
    cloud_timeout_s: float = 20.0  # the whole cloud takeover (retries included); then the end reply is served
    takeover_deadline_s: float = 4.0  # the most a customer waits for the cloud in a turn (the lower of this and cloud_timeout_s applies); then the end reply, or a hand-off message when there is none
    # -- life cycle --
    warmup: bool = True  # /readyz says ready after one generation (continuous engines: the engine process up, weights in, a step run); engines batched whole are ready once started
    shutdown_timeout_s: float = 10.0  # on SIGTERM, requests in flight get this long to finish (then they are cancelled), and the engine as long to stop
    # -- the paper's score of every takeover (eq. 1), which the dashboard and the online loop read --
    alpha: float = PAPER.alpha  # Final = alpha * Sim(end, cloud) + (1 - alpha) * Match(query, end)
    theta: float = PAPER.theta  # where Match(query, cloud) < theta, Final = Sim alone
    # -- telemetry (endcloud.serve.telemetry) --
    otlp_endpoint: str | None = None  # OTLP/HTTP collector for one trace per turn (GenAI semantic conventions), e.g. http://127.0.0.1:4318; unset: no traces, no cost
    json_logs: bool = False  # log lines as JSON objects (ts, level, logger, message), uvicorn's included
    # -- security (docs/architecture.md, "Security"); secrets stay out of repr --
    admin_token: str | None = field(default=None, repr=False)  # admin routes (sessions, profiles, /review, /dashboard, /metrics from elsewhere) need it; unset: loopback clients only, and a non-loopback --host refuses to start
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # keys of the shop's own front ends (Authorization: Bearer <key>; env: comma-separated); set: chat needs a key or a customer token; empty: chat is open, and anonymous
    customer_secret: str | None = field(default=None, repr=False)  # HMAC-SHA256 key of customer tokens (the only way a chat is a named customer's); unset: every chat is anonymous
    # -- the chat widget (GET /widget.js, GET /chat: endcloud/serve/widget.py) --
    cors_origins: tuple[str, ...] = ()  # sites whose pages may call the API from a browser (the widget on the shop's own site), e.g. https://shop.example.com (env: comma-separated; "*": any); empty: none, closed

    def __post_init__(self) -> None:
        self._check_security()
        positive = ("max_body_bytes", "max_messages", "max_tokens_per_message", "rate_limit_per_minute",
                    "max_new_tokens", "max_new_tokens_cap", "max_batch", "cloud_timeout_s", "prefill_chunk_tokens",
                    "takeover_deadline_s", "shutdown_timeout_s", "session_transcripts", "session_transcripts_mb")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"serve setting {name} must be > 0, got {v!r} (env {ENV_PREFIX}{name.upper()})")
        if self.batching not in BATCHING:
            raise ConfigError(f"serve setting batching must be one of {', '.join(BATCHING)}, got {self.batching!r} "
                              f"(env {ENV_PREFIX}BATCHING)")
        for name in ("prefix_cache_mb", "torch_threads", "grounding_snippets"):
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

    def _check_security(self) -> None:
        if isinstance(self.api_keys, str):
            object.__setattr__(self, "api_keys", tuple(k.strip() for k in self.api_keys.split(",") if k.strip()))
        object.__setattr__(self, "api_keys", tuple(self.api_keys or ()))
        for name in ("admin_token", "customer_secret"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)  # an empty variable is an unset one
        secrets = [("admin_token", self.admin_token), ("customer_secret", self.customer_secret)] + \
                  [("api_keys", k) for k in self.api_keys]
        for name, v in secrets:
            if v is not None and (not isinstance(v, str) or not v.strip() or any(c.isspace() for c in v)):
                raise ConfigError(f"serve setting {name} must be a non-empty string without spaces "
                                  f"(env {ENV_PREFIX}{name.upper()})")
        if self.customer_secret is not None and len(self.customer_secret) < MIN_SECRET_CHARS:
            raise ConfigError(f"serve setting customer_secret must be at least {MIN_SECRET_CHARS} characters, got "
                              f"{len(self.customer_secret)} (env {ENV_PREFIX}CUSTOMER_SECRET; e.g. `openssl rand -hex 32`)")
        values = [v for _, v in secrets if v is not None]
        if len(set(values)) < len(values):
            raise ConfigError("serve settings admin_token, customer_secret and api_keys must all differ: "
                              "one secret must not open another's door")
        if not is_loopback_host(self.host) and not self.admin_token:
            raise ConfigError(
                f"--host {self.host} is reachable from other machines, so the admin routes (/review, /dashboard, "
                "/v1/sessions, /v1/customers/...) need an admin token: pass --admin-token TOKEN or set "
                f"{ENV_PREFIX}ADMIN_TOKEN (e.g. `export {ENV_PREFIX}ADMIN_TOKEN=$(openssl rand -hex 32)`)")

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
        if isinstance(default, tuple):
            return tuple(x.strip() for x in raw.split(",") if x.strip())
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if name.endswith(("_dir", "_path")):
            return Path(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type(default).__name__}") from None
