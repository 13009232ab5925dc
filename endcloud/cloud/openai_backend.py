"""The OpenAI-compatible chat client (Gemini, GPT, Qwen, DeepSeek, vLLM, Ollama all speak it).

    teacher = OpenAITeacher.from_env()          # ENDCLOUD_CLOUD_BASE_URL / _MODEL / _API_KEY
    reply = await teacher.areply(messages)      # or teacher.reply(messages) from sync code

Async httpx with finite timeouts (connect/read per phase, plus a whole-attempt deadline so a
server that drips bytes forever still times out), bounded retries with jittered
exponential backoff that honours `Retry-After` / `retry-after-ms` on 429 and 5xx, a
concurrency limit, request- and token-rate limits, and a cost ledger with a budget cap.
An empty or malformed reply is an error (retried, then `TeacherParseError`), never a label.

The concurrency limit counts requests on the wire: a request waiting out a backoff, a
`Retry-After` or a rate limit holds no slot, and a retry takes the next free slot ahead of
requests not yet started (so giving the slot away does not send it to the back of a long
batch). Requests go through an httpx transport directly — aiohttp's (`httpx_aiohttp`) by
default, `httpx.AsyncHTTPTransport` when an HTTP(S) proxy is configured in the environment,
or whatever `transport=` injects; `stats` says where each request's time went.

This client sends messages as given: it knows nothing of prompts (see `prompt.py`) or of
privacy (see `gate.py`, which `make_teacher` always puts in front of it) — except that it
refuses to send anything that did not come through that gate (`require_gate=True`; tests
and benchmarks that send synthetic text pass False explicitly). Tests inject an
`httpx.MockTransport` via `transport=` or use the real server double `endcloud.testing.FaultyCloud`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import threading
import time
import urllib.request
import weakref
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from endcloud.cloud.gate import THROUGH_GATE
from endcloud.cloud.ledger import ENV_PRICE, CostLedger, PriceTable, parse_price
from endcloud.cloud.ratelimit import RateLimiter
from endcloud.cloud.teacher import Messages, Teacher, check_messages
from endcloud.errors import (BudgetExceeded, ConfigError, PrivacyError, TeacherError, TeacherParseError, TeacherStatusError,
                             TeacherTimeout)
from endcloud.records import Reply, Usage
from endcloud.retry import retry_after
from endcloud.text import estimate_message_tokens, estimate_tokens

ENV_BASE_URL = "ENDCLOUD_CLOUD_BASE_URL"
ENV_MODEL = "ENDCLOUD_CLOUD_MODEL"
ENV_API_KEY = "ENDCLOUD_CLOUD_API_KEY"
ENV_TIMEOUT = "ENDCLOUD_CLOUD_TIMEOUT"
ENV_CONCURRENCY = "ENDCLOUD_CLOUD_CONCURRENCY"
ENV_RPM = "ENDCLOUD_CLOUD_RPM"
ENV_TPM = "ENDCLOUD_CLOUD_TPM"

# Statuses worth another try: rate limited, overloaded, or a gateway hiccup.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_HINTS = {
    400: "the server rejected the request; check ENDCLOUD_CLOUD_MODEL and the prompt size",
    401: "check ENDCLOUD_CLOUD_API_KEY",
    403: "the key lacks access to this model; check ENDCLOUD_CLOUD_API_KEY / ENDCLOUD_CLOUD_MODEL",
    404: "check ENDCLOUD_CLOUD_BASE_URL (it usually ends in /v1) and ENDCLOUD_CLOUD_MODEL",
}


@dataclass
class TeacherStats:
    """Counters of one client (all event loops together), and where the time went."""

    requests: int = 0  # logical requests (areply calls)
    attempts: int = 0  # HTTP attempts, retries included
    retries: int = 0
    failures: int = 0  # requests that raised after all retries
    outcomes: Counter = field(default_factory=Counter)  # "200", "429", "timeout", "malformed", ...
    slept_s: float = 0.0  # backoff and Retry-After waits (no slot held)
    limited_s: float = 0.0  # waits for the request/token rate limits (no slot held)
    queued_s: float = 0.0  # waits for a free concurrency slot
    wire_s: float = 0.0  # attempts on the wire, reply parsing included (a slot held)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "attempts": self.attempts, "retries": self.retries,
            "failures": self.failures, "outcomes": dict(self.outcomes), "slept_s": round(self.slept_s, 3),
            "limited_s": round(self.limited_s, 3), "queued_s": round(self.queued_s, 3), "wire_s": round(self.wire_s, 3),
        }


class _Slots:
    """The concurrency limit of one event loop: `n` requests on the wire at once.

    Like `asyncio.Semaphore`, but a retry waits in a queue served before that of requests
    not yet started: a retry gives its slot up while it backs off (the slot is for a
    request in flight), and must not then queue behind the rest of a batch and finish last.
    """

    def __init__(self, n: int):
        self.free = n
        self._retries: deque[asyncio.Future] = deque()
        self._fresh: deque[asyncio.Future] = deque()

    async def acquire(self, *, retry: bool) -> None:
        if self.free > 0:  # the queues are empty whenever a slot is free (release hands over)
            self.free -= 1
            return
        fut = asyncio.get_running_loop().create_future()
        queue = self._retries if retry else self._fresh
        queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot in the same tick we were cancelled: pass it on
            else:
                queue.remove(fut)
            raise

    def release(self) -> None:
        for queue in (self._retries, self._fresh):
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)  # the slot passes straight to the waiter
                    return
        self.free += 1


class _LoopState:
    """What must belong to one event loop: the transport's connections and the slots."""

    def __init__(self, teacher: "OpenAITeacher"):
        self.slots = _Slots(teacher.concurrency)
        self.transport: httpx.AsyncBaseTransport = teacher.transport or teacher._default_transport()

    async def aclose(self) -> None:
        # Like httpx.AsyncClient, closing the teacher closes its transport, injected or not.
        await self.transport.aclose()


class OpenAITeacher(Teacher):
    """A teacher behind `POST {base_url}/chat/completions`."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str,
        timeout: float = 30.0,
        max_retries: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
        concurrency: int = 8,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        ledger: CostLedger | None = None,
        backoff: float = 0.25,
        backoff_max: float = 8.0,
        retry_after_max: float = 60.0,
        headers: dict[str, str] | None = None,
        seed: int | None = None,
        require_gate: bool = True,
    ):
        if not str(base_url).startswith(("http://", "https://")):
            raise ConfigError(f"{ENV_BASE_URL} must be an http(s) URL such as https://api.example.com/v1, got {base_url!r}")
        if not model:
            raise ConfigError(f"{ENV_MODEL} must name a model, got {model!r}")
        if not api_key:
            raise ConfigError(f"{ENV_API_KEY} is empty; set it to the provider's API key")
        if not api_key.isascii() or not api_key.isprintable():
            raise ConfigError(f"{ENV_API_KEY} must be printable ASCII (it goes in an HTTP header); check for a pasted "
                              "quote or line break")
        if not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
            raise ConfigError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        if not (isinstance(max_retries, int) and 0 <= max_retries <= 20):
            raise ConfigError(f"max_retries must be an int in 0..20, got {max_retries!r}")
        if not (isinstance(concurrency, int) and concurrency >= 1):
            raise ConfigError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.base_url = str(base_url).rstrip("/")
        self.model = model
        self._api_key = api_key
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.transport = transport
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.headers = dict(headers or {})
        self.seed = seed
        self.require_gate = require_gate
        self.ledger = ledger or CostLedger()
        self.ledger.check_priced(model)
        self.limiter = RateLimiter(requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute)
        self.stats = TeacherStats()
        self._timeout_ext = httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)).as_dict()
        self._url = httpx.URL(self.base_url + "/chat/completions")
        # Built once (httpx.Request adds Host and Content-Length per request); `headers`
        # given by the caller replace ours of the same name.
        merged = httpx.Headers({"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
                                "Accept": "application/json", "User-Agent": "endcloud"})
        merged.update(self.headers)
        self._headers = merged.raw
        self._states: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._ssl: Any = None

    def __repr__(self) -> str:  # never print the key
        return f"OpenAITeacher(base_url={self.base_url!r}, model={self.model!r})"

    @classmethod
    def from_env(cls, **overrides: Any) -> "OpenAITeacher":
        """Read ENDCLOUD_CLOUD_BASE_URL, _MODEL, _API_KEY (required) and _TIMEOUT,
        _CONCURRENCY, _RPM, _TPM, _PRICE (optional); keywords override the environment."""
        env = os.environ
        kw: dict[str, Any] = {}
        for key, var in (("base_url", ENV_BASE_URL), ("model", ENV_MODEL), ("api_key", ENV_API_KEY)):
            if overrides.get(key):
                continue
            value = env.get(var, "").strip()
            if not value:
                extra = " (local servers such as vLLM or Ollama accept any value, e.g. 'local')" if var == ENV_API_KEY else ""
                raise ConfigError(f"{var} is not set; the openai teacher needs it{extra}")
            kw[key] = value
        for key, var, conv in (
            ("timeout", ENV_TIMEOUT, float), ("concurrency", ENV_CONCURRENCY, int),
            ("requests_per_minute", ENV_RPM, float), ("tokens_per_minute", ENV_TPM, float),
        ):
            if env.get(var):
                try:
                    kw[key] = conv(env[var])
                except ValueError:
                    raise ConfigError(f"{var} must be a number, got {env[var]!r}") from None
        if env.get(ENV_PRICE) and "ledger" not in overrides:
            model = overrides.get("model") or kw["model"]
            prices = PriceTable.from_env()
            prices.prices[model] = parse_price(env[ENV_PRICE], source=ENV_PRICE)
            kw["ledger"] = CostLedger(prices=prices, budget=overrides.pop("budget", None))
        elif "budget" in overrides:
            kw["ledger"] = CostLedger(prices=PriceTable.from_env(), budget=overrides.pop("budget"))
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    # -- identity ------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return f"openai|{self.base_url}|{self.model}|t={self.temperature}|max={self.max_tokens}|seed={self.seed}"

    @property
    def remote(self) -> bool:
        return True

    def payload(self, messages: Messages) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": check_messages(messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    def outbound_body(self, messages: Messages) -> str:
        """The exact JSON text sent on the wire (the gate audits and hashes this)."""
        return json.dumps(self.payload(messages), ensure_ascii=False, separators=(",", ":"))

    # -- plumbing ------------------------------------------------------------------------
    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            st = self._states.get(loop)
            if st is None:
                st = self._states[loop] = _LoopState(self)
            return st

    def _ssl_context(self) -> Any:
        # Loading the CA bundle costs ~0.3 s; do it once per teacher, not per loop.
        with self._lock:
            if self._ssl is None:
                import ssl

                import certifi

                self._ssl = ssl.create_default_context(cafile=certifi.where())
            return self._ssl

    def _unreachable(self, e: Exception, attempt: int):
        self._count(outcome="connect")
        err = TeacherError(f"cannot reach {self.base_url}: {type(e).__name__}: {e} "
                           f"(after {attempt + 1} attempts); check ENDCLOUD_CLOUD_BASE_URL")
        return None, err, self._backoff(attempt)

    def _default_transport(self) -> httpx.AsyncBaseTransport:
        """aiohttp under httpx's interface (httpx-aiohttp, as `openai[aiohttp]` uses), or httpx's own when the environment names a proxy
        for this host (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, minus NO_PROXY — what
        httpx.AsyncClient would honour)."""
        url = self._url
        tls = self._ssl_context() if url.scheme == "https" else None
        proxies = urllib.request.getproxies()
        proxy = proxies.get(url.scheme) or proxies.get("all")
        if proxy and not urllib.request.proxy_bypass(url.host):
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            return httpx.AsyncHTTPTransport(proxy=proxy, verify=tls or True, limits=limits)
        # aiohttp's C HTTP parser: ~1 ms of client CPU per request where httpx's own pool
        # (httpcore) spent 3-9 ms at concurrency 32 -- the difference between 0.25 and 0.9
        # of the ideal throughput in bench/bench_teacher.py.
        from httpx_aiohttp import AiohttpTransport

        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return AiohttpTransport(verify=tls or True, limits=limits, trust_env=False)

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog): spreads retries of many callers apart.
        with self._lock:
            return self._rng.uniform(0, min(self.backoff_max, self.backoff * 2**attempt))

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            st = self._states.pop(loop, None)
        if st is not None:
            await st.aclose()

    def _count(self, **kw: Any) -> None:
        with self._lock:
            for k, v in kw.items():
                if k == "outcome":
                    self.stats.outcomes[v] += 1
                else:
                    setattr(self.stats, k, getattr(self.stats, k) + v)

    # -- the request ---------------------------------------------------------------------
    async def areply(self, messages: Messages) -> Reply:
        if self.require_gate and not THROUGH_GATE.get():
            raise PrivacyError(
                "OpenAITeacher sends only what came through the privacy gate: wrap it in "
                "PrivacyGate(teacher, audit=AuditLog(...)) — make_teacher('openai') does — or, for "
                "synthetic test traffic only, construct it with require_gate=False"
            )
        msgs = check_messages(messages)  # a bad message fails now, not after the queue
        self._count(requests=1)
        try:
            return await self._with_retries(msgs)
        except BudgetExceeded:
            raise  # nothing was sent: a stop, not a failed request
        except TeacherError:
            self._count(failures=1)
            raise

    async def _with_retries(self, msgs: list[dict[str, str]]) -> Reply:
        st = self._state()
        clock = time.perf_counter
        data, prompt_est, reserved = b"", 0, None
        attempt = 0
        try:
            while True:
                # Neither the rate limit nor the backoff below holds a slot: a slot is for a
                # request on the wire. A retry queues for its slot ahead of new requests.
                limited = 0.0
                if self.limiter.active:
                    prompt_est = prompt_est or estimate_message_tokens(msgs)
                    limited = await self.limiter.acquire(prompt_est + self.max_tokens)
                t0 = clock()
                await st.slots.acquire(retry=attempt > 0)
                t1 = clock()
                if reserved is None:
                    # Serialised and charged only once a slot is ours: a request waiting in a
                    # long batch costs no CPU up front (a batch of thousands started at once
                    # would otherwise delay the first requests' connections), and the budget
                    # holds back only what is about to be sent.
                    try:
                        data = self.outbound_body(msgs).encode("utf-8")
                        prompt_est = prompt_est or estimate_message_tokens(msgs)
                        reserved = self.ledger.reserve(self.model, prompt_est)
                    except BaseException:
                        st.slots.release()
                        raise
                try:
                    reply, error, wait = await self._attempt(st.transport, data, attempt)
                finally:
                    st.slots.release()
                    self._count(attempts=1, limited_s=limited, queued_s=t1 - t0, wire_s=clock() - t1)
                if reply is not None:
                    return reply
                if attempt >= self.max_retries:
                    raise error
                attempt += 1
                self._count(retries=1, slept_s=wait)
                await asyncio.sleep(wait)
        finally:
            if reserved is not None:
                self.ledger.release(reserved)

    async def _attempt(self, transport: httpx.AsyncBaseTransport, data: bytes,
                       attempt: int) -> tuple[Reply | None, Any, float]:
        """One HTTP attempt -> (reply, None, 0) or (None, error, seconds to wait before the next)."""
        request = httpx.Request("POST", self._url, headers=self._headers, content=data,
                                extensions={"timeout": self._timeout_ext})
        try:
            # The whole attempt has one deadline: per-read timeouts alone let a server that
            # drips a byte at a time hold a request forever.
            async with asyncio.timeout(self.timeout):
                resp = await transport.handle_async_request(request)
                try:
                    await resp.aread()
                finally:
                    await resp.aclose()
        except (TimeoutError, httpx.TimeoutException) as e:
            if _refused(e):
                return self._unreachable(e, attempt)
            self._count(outcome="timeout")
            err: TeacherError = TeacherTimeout(
                f"{self.base_url} did not answer within {self.timeout:g}s (after {attempt + 1} attempts); "
                "raise ENDCLOUD_CLOUD_TIMEOUT or check the server")
            return None, err, self._backoff(attempt)
        except httpx.TransportError as e:
            return self._unreachable(e, attempt)
        status = resp.status_code
        self._count(outcome=str(status))
        if status == 200:
            try:
                return self._parse(resp, data), None, 0.0
            except TeacherParseError as e:
                self._count(outcome="malformed")
                return None, e, self._backoff(attempt)
        text = resp.text[:200]
        if status not in RETRY_STATUSES:
            hint = _HINTS.get(status, "see the server's message")
            raise TeacherStatusError(f"{self.base_url} answered HTTP {status}: {text!r}; {hint}", status=status)
        err = TeacherStatusError(f"{self.base_url} answered HTTP {status} after {attempt + 1} attempts: {text!r}",
                                 status=status)
        ra = retry_after(resp.headers)
        if ra is not None:
            with self._lock:
                jitter = self._rng.uniform(0, 0.1 * ra + 0.01)
            return None, err, min(ra, self.retry_after_max) + jitter
        return None, err, self._backoff(attempt)

    def _parse(self, resp: httpx.Response, sent: bytes) -> Reply:
        try:
            data = resp.json()
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise TeacherParseError(f"malformed reply from {self.base_url}: {resp.text[:120]!r}") from None
        if not isinstance(content, str) or not content.strip():
            raise TeacherParseError(f"empty reply from {self.base_url} (finish_reason={choice.get('finish_reason')!r})")
        u = data.get("usage") or {}
        try:
            usage = Usage(int(u["prompt_tokens"]), int(u["completion_tokens"]))
        except (KeyError, TypeError, ValueError):
            # Some compatible servers omit usage; estimate rather than bill zero.
            usage = Usage(estimate_message_tokens(json.loads(sent)["messages"]), estimate_tokens(content))
        cost = self.ledger.record(self.model, usage)
        return Reply(text=content.strip(), source="cloud", model=str(data.get("model") or self.model), usage=usage, cost=cost)


def _refused(e: BaseException) -> bool:
    """A connection refused or reset that the transport reported as a timeout.

    httpx-aiohttp 0.2 maps aiohttp's `ClientConnectorError` (refused, unreachable, DNS) to
    `httpx.ConnectTimeout`; the teacher's message must say "cannot reach", not "did not
    answer in time". A real timeout's cause is a `TimeoutError` (an OSError as well)."""
    cause = e.__cause__
    return isinstance(e, httpx.ConnectTimeout) and isinstance(cause, OSError) and not isinstance(cause, TimeoutError)
