"""The end model served by a vLLM server the shop runs itself: the `EndModel` surface over HTTP.

    m = VLLMEndModel(base_url="http://127.0.0.1:8001/v1", model="qwen2.5-0.5b")
    m.swap_adapter("endcloud-work/adapters/shop/v3")   # POST /v1/load_lora_adapter, then route to it
    [g] = m.generate([[{"role": "user", "content": "几天发货？"}]], seed=0)
    g.text, g.confidence                               # confidence from the server's logprobs

    m = load_end_model("vllm", base_url=..., model=..., adapter_dir=...)     # runtime.ENGINES

Where a shop outgrows one CPU box, the in-process `EndModel` (runtime/model.py) gives way to
vLLM on the shop's GPU machine; this class serves the same `runtime.protocol.ServedModel`
(`generate`, `swap_adapter`, `variant`), so the server's `AsyncEngine`, the router and the
evolution loop do not change. Start the server with runtime LoRA loading on:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve <base dir> --served-model-name <model> \\
        --enable-lora --max-lora-rank 8 --max-loras 4 --host 127.0.0.1 --port 8001

Why this is not a way around the privacy gate: the rule "only `endcloud.cloud` talks to
the network, and only through `endcloud.privacy`" is about data leaving the shop. A vLLM
server here is the shop's *own* end model on the shop's own machine or LAN — the same
trust zone as the in-process model, which sees raw customer text too. So the constructor
refuses any URL whose host is not loopback, a private/link-local address, `localhost` or a
`.local` / `.localhost` name (no DNS lookup: a name is judged as written), unless the
caller passes `allow_remote=True` — deliberately, e.g. for a VPN address it owns.

How it batches: vLLM batches continuously on the server, so a `generate` call over N
conversations sends N concurrent chat requests (up to `concurrency` at once) and returns
the replies in input order. Each request carries `seed` as given, so a seeded reply does
not depend on what else is in the batch.

Confidence is exp(mean log-prob of the reply's tokens) from the `logprobs` the server
returns for the sampled tokens (requested with `logprobs: true`). Like `EndModel`'s, it
should be the model's own distribution, not the temperature/top-p adjusted one: recent
vLLM versions report raw log-probs by default (`--logprobs-mode raw_logprobs`); leave that
default alone. Whether the end-of-turn token is among them depends on the server. A server
that returns no logprobs gives confidence 1.0 and counts `stats.missing_logprobs`.

Adapter swaps: load the new LoRA under a name derived from its folder (`shop-v3-1a2b3c4d`,
the hash of the resolved path keeps names unique across versions and runs), route
requests to it, then unload the old one once no call is still using it. A failing load
raises `ModelError` and the old adapter keeps serving. vLLM serves LoRA only: prefix /
P-tuning v2 adapters are refused before any request.

Network: httpx with finite timeouts (connect ≤ 5 s, each read ≤ `timeout`), at most
`max_retries` retries with full-jitter backoff on timeouts, connection errors, malformed
replies and 408/409/425/429/5xx (honouring Retry-After up to `retry_after_max`);
other statuses fail at once with a hint. Tests pass `transport=httpx.MockTransport(...)`
or run a real server double on 127.0.0.1 (tests/end/test_vllm.py).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx

from endcloud.errors import ConfigError, ModelError
from endcloud.retry import retry_after
from endcloud.runtime.protocol import Generation, Variant, VariantView, check_generate_args, check_messages

log = logging.getLogger("endcloud.runtime.vllm")

ENV_BASE_URL = "ENDCLOUD_VLLM_BASE_URL"
ENV_MODEL = "ENDCLOUD_VLLM_MODEL"
ENV_API_KEY = "ENDCLOUD_VLLM_API_KEY"
ENV_TIMEOUT = "ENDCLOUD_VLLM_TIMEOUT"
ENV_ALLOW_REMOTE = "ENDCLOUD_VLLM_ALLOW_REMOTE"

# Statuses worth another try: rate limited, overloaded, or a gateway hiccup.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
LORA_HINT = ("start vLLM with --enable-lora (and --max-lora-rank >= the adapter's r) and the environment variable "
             "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, which enables /v1/load_lora_adapter")
_HINTS = {
    400: "the server rejected the request; check the model name and max_tokens against --max-model-len",
    401: f"check {ENV_API_KEY} (vLLM's --api-key)",
    404: f"check {ENV_BASE_URL} (it ends in /v1) and {ENV_MODEL} (vLLM's --served-model-name)",
}


class VLLMError(ModelError):
    """The vLLM server could not give a usable reply (after the allowed retries)."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status



@dataclass
class VLLMStats:
    """Counters of one client (all threads together)."""

    requests: int = 0  # chat requests (one per conversation)
    attempts: int = 0  # HTTP attempts, retries included
    retries: int = 0
    failures: int = 0
    missing_logprobs: int = 0  # replies without logprobs (confidence defaulted to 1.0)
    outcomes: Counter = field(default_factory=Counter)  # "200", "503", "timeout", "connect", "malformed"


def is_private_host(host: str) -> bool:
    """True for loopback, private, link-local and unique-local addresses, `localhost` and `.local` names."""
    h = host.strip("[]").lower().rstrip(".")
    if h == "localhost" or h.endswith((".localhost", ".local")):
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False  # a DNS name: judged as written, never resolved
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_loopback or ip.is_private or ip.is_link_local) and not ip.is_unspecified


def _normalise_base_url(base_url: str) -> str:
    url = str(base_url).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{ENV_BASE_URL} must be an http(s) URL such as http://127.0.0.1:8001/v1, got {base_url!r}")
    return url if url.endswith("/v1") else url + "/v1"



def lora_name_for(adapter_dir: str | os.PathLike[str]) -> str:
    """The name an adapter folder is loaded under: `<name>-<version>-<8 hex of the resolved path>`."""
    p = Path(adapter_dir).expanduser().resolve()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{p.parent.name}-{p.name}").strip("-") or "adapter"
    return f"{stem}-{hashlib.sha256(str(p).encode('utf-8')).hexdigest()[:8]}"


def _check_lora_dir(ad: Path, server: str = "vLLM") -> None:
    """Refuse, before any request, what the server cannot serve (when the folder is visible here)."""
    if not ad.exists():
        return  # the server may see another filesystem; it will say if the path is wrong
    cfg = ad / "adapter_config.json"
    if not cfg.exists():
        raise ModelError(f"adapter directory {str(ad)!r} has no adapter_config.json: pass a folder written by peft "
                         "save_pretrained (e.g. adapters/<name>/vN)")
    try:
        kind = str(json.loads(cfg.read_text(encoding="utf-8"))["peft_type"]).upper()
    except (ValueError, KeyError, OSError) as e:
        raise ModelError(f"{str(cfg)!r} is not a valid peft adapter config: {e}") from e
    if kind != "LORA":
        raise ModelError(f"adapter {str(ad)!r} is of type {kind!r}; {server} serves LORA adapters only (prefix / "
                         "P-tuning v2 adapters are learned key/values in front of every layer's cache, which only "
                         "endcloud's own engine feeds) — train with --method lora, or serve this adapter with "
                         "--engine transformers")


class VLLMEndModel(VariantView):
    """An end model behind a shop-local vLLM (OpenAI-compatible) server; the `EndModel` surface.

    The base of the local OpenAI-compatible engines (`runtime.openai_local`: SGLang and
    llama-server subclass it): a subclass says how an adapter is loaded (`_load`, `_unload`),
    and what a request to a variant carries (`_route`), everything else is shared."""

    # The environment variables `from_env` reads (a subclass names its own).
    env_base_url, env_model, env_api_key, env_timeout, env_allow_remote = (
        ENV_BASE_URL, ENV_MODEL, ENV_API_KEY, ENV_TIMEOUT, ENV_ALLOW_REMOTE)
    server_name = "vLLM"
    model_required = True  # llama-server serves one model and ignores the name

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        allow_remote: bool = False,
        concurrency: int = 16,
        backoff: float = 0.2,
        backoff_max: float = 4.0,
        retry_after_max: float = 10.0,
    ):
        self.base_url = _normalise_base_url(base_url)
        host = urlsplit(self.base_url).hostname or ""
        if not allow_remote and not is_private_host(host):
            raise ConfigError(
                f"{ENV_BASE_URL} {base_url!r} points at host {host!r}, which is not loopback, a private address or a "
                f".local name: the end model sees raw customer text, so it must run inside the shop. Use the shop's own "
                f"server, or pass allow_remote=True ({ENV_ALLOW_REMOTE}=1) if that host is yours"
            )
        if not model:
            raise ConfigError(f"{ENV_MODEL} must name the served base model (vLLM's --served-model-name), got {model!r}")
        if not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
            raise ConfigError(f"timeout must be a finite number of seconds > 0, got {timeout!r} ({ENV_TIMEOUT})")
        if not (isinstance(max_retries, int) and 0 <= max_retries <= 10):
            raise ConfigError(f"max_retries must be an int in 0..10, got {max_retries!r}")
        if not (isinstance(concurrency, int) and concurrency >= 1):
            raise ConfigError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.model = model  # the base model's served name
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.allow_remote = allow_remote
        self.stats = VLLMStats()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, transport=transport,
            timeout=httpx.Timeout(self.timeout, connect=min(5.0, self.timeout)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # counters, the pool, the rng
        self._swap_lock = threading.Lock()  # one swap at a time; generate never takes it
        self._idle = threading.Condition(self._lock)  # signalled when a served name has no call in flight
        self._inflight: Counter = Counter()
        self._rng = random.Random()
        self._variant = Variant(model, None, "base")  # name: the served model requests go to; swapped atomically

    def __repr__(self) -> str:  # never print the key
        return f"VLLMEndModel(base_url={self.base_url!r}, model={self.model!r}, serving={self.name!r})"

    @classmethod
    def from_env(cls, **overrides: Any) -> "VLLMEndModel":
        """Read ENDCLOUD_VLLM_BASE_URL, _MODEL (required), _API_KEY, _TIMEOUT, _ALLOW_REMOTE (a
        subclass: its own `env_*` names); keywords win."""
        env = os.environ
        kw: dict[str, Any] = {}
        for key, var in (("base_url", cls.env_base_url), ("model", cls.env_model)):
            if not overrides.get(key):
                if not env.get(var, "").strip():
                    if key == "model" and not cls.model_required:
                        continue
                    raise ConfigError(f"{var} is not set; the {cls.server_name} end model needs it (e.g. {var}="
                                      f"{'http://127.0.0.1:8001/v1' if key == 'base_url' else 'qwen2.5-0.5b'})")
                kw[key] = env[var].strip()
        if env.get(cls.env_api_key):
            kw["api_key"] = env[cls.env_api_key]
        if env.get(cls.env_timeout):
            try:
                kw["timeout"] = float(env[cls.env_timeout])
            except ValueError:
                raise ConfigError(f"{cls.env_timeout} must be a number of seconds, got {env[cls.env_timeout]!r}") from None
        if env.get(cls.env_allow_remote, "").strip().lower() in ("1", "true", "yes"):
            kw["allow_remote"] = True
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    # ---- what is served (runtime.protocol.ServedModel) -------------------------------------
    @property
    def variant(self) -> Variant:
        """What is served; its `name` is the served model requests go to: the base's, or the loaded LoRA's."""
        return self._variant

    def models(self) -> list[str]:
        """Model ids the server lists (the base and every loaded LoRA)."""
        resp = self._request("GET", "/models", None)
        try:
            return [str(m["id"]) for m in resp.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise VLLMError(f"malformed /models reply from {self.base_url}: {resp.text[:120]!r}") from None

    # ---- HTTP with bounded retries ---------------------------------------------------------------
    def _count(self, **kw: Any) -> None:
        with self._lock:
            for k, v in kw.items():
                if k == "outcome":
                    self.stats.outcomes[v] += 1
                else:
                    setattr(self.stats, k, getattr(self.stats, k) + v)

    def _backoff(self, attempt: int) -> float:
        # Full jitter: many rows of one batch retrying at once spread apart.
        with self._lock:
            return self._rng.uniform(0, min(self.backoff_max, self.backoff * 2**attempt))

    def _request(self, method: str, path: str, body: dict | None, *,
                 parse: Callable[[httpx.Response], Any] | None = None, hints: dict[int, str] | None = None) -> Any:
        """One logical request: at most 1 + max_retries attempts, each bounded by the timeout."""
        attempt = 0
        while True:
            self._count(attempts=1)
            wait = None
            try:
                resp = self._client.request(method, path, json=body)
            except httpx.TimeoutException:
                self._count(outcome="timeout")
                err = VLLMError(f"{self.base_url}{path} did not answer within {self.timeout:g}s "
                                f"(after {attempt + 1} attempts); raise {ENV_TIMEOUT} or check the server")
            except httpx.TransportError as e:
                self._count(outcome="connect")
                err = VLLMError(f"cannot reach {self.base_url}{path}: {type(e).__name__}: {e} "
                                f"(after {attempt + 1} attempts); is vLLM running? check {ENV_BASE_URL}")
            else:
                status = resp.status_code
                self._count(outcome=str(status))
                if status == 200:
                    if parse is None:
                        return resp
                    try:
                        return parse(resp)
                    except VLLMError as e:
                        self._count(outcome="malformed")
                        err = e
                elif status in RETRY_STATUSES:
                    err = VLLMError(f"{self.base_url}{path} answered HTTP {status} after {attempt + 1} attempts: "
                                    f"{resp.text[:200]!r}", status=status)
                    ra = retry_after(resp.headers)
                    wait = None if ra is None else min(ra, self.retry_after_max)
                else:
                    hint = {**_HINTS, **(hints or {})}.get(status, "see the server's message")
                    raise VLLMError(f"{self.base_url}{path} answered HTTP {status}: {resp.text[:200]!r}; {hint}",
                                    status=status)
            if attempt >= self.max_retries:
                raise err
            attempt += 1
            self._count(retries=1)
            time.sleep(self._backoff(attempt - 1) if wait is None else wait)

    # ---- generation --------------------------------------------------------------------------------
    def _parse_chat(self, resp: httpx.Response) -> Generation:
        try:
            data = resp.json()
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise VLLMError(f"malformed chat reply from {self.base_url}: {resp.text[:120]!r}") from None
        if not isinstance(content, str):
            raise VLLMError(f"chat reply from {self.base_url} has no text content: {resp.text[:120]!r}")
        entries = ((choice.get("logprobs") or {}).get("content")) or []
        lps = [float(e["logprob"]) for e in entries if isinstance(e, dict) and e.get("logprob") is not None]
        # vLLM reports -inf / -9999 for tokens outside a top-k; clamp so one token cannot zero a reply.
        lps = [max(lp, -100.0) for lp in lps if not math.isnan(lp)]
        usage = data.get("usage") or {}
        tokens = int(usage.get("completion_tokens") or len(entries))
        if lps:
            mean = sum(lps) / len(lps)
        else:
            self._count(missing_logprobs=1)
            mean = 0.0
        texts = [e.get("token", "") for e in entries if isinstance(e, dict) and e.get("logprob") is not None]
        finish = choice.get("finish_reason")
        prompt = usage.get("prompt_tokens")
        return Generation(text=content.strip(), confidence=math.exp(mean), tokens=tokens, logprob=mean,
                          finish_reason=finish if finish in ("stop", "length") else None,
                          prompt_tokens=int(prompt) if isinstance(prompt, int) else None,
                          token_logprobs=lps if len(lps) == len(texts) else None,
                          token_texts=texts if lps and len(lps) == len(texts) else None)

    def _route(self, variant: Variant) -> tuple[str, dict]:
        """(the `model` a request to `variant` names, extra body fields): vLLM routes by name."""
        return variant.name, {}

    def _one(self, variant: Variant, messages: list[dict], params: dict) -> Generation:
        self._count(requests=1)
        name, extra = self._route(variant)
        try:
            return self._request("POST", "/chat/completions", {"model": name, "messages": messages, **params, **extra},
                                 parse=self._parse_chat)
        except VLLMError:
            self._count(failures=1)
            raise

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="vllm-end")
            return self._pool

    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 128, temperature: float = 0.6,
                 top_p: float = 0.8, seed: int | None = None, system: str | None = None) -> list[Generation]:
        """One reply per conversation, in input order; the rows go to the server concurrently."""
        if not conversations:
            return []
        check_generate_args(max_new_tokens, temperature, top_p)
        convs = []
        for c in conversations:
            msgs = check_messages(c)
            if system is not None:
                msgs = [{"role": "system", "content": system}] + [m for m in msgs if m["role"] != "system"]
            convs.append(msgs)
        params: dict[str, Any] = {"max_tokens": int(max_new_tokens), "temperature": float(temperature),
                                  "top_p": float(top_p), "logprobs": True}
        if seed is not None:
            params["seed"] = int(seed)
        with self._lock:
            variant = self._variant  # snapshot: a concurrent swap does not affect this call
            name = variant.name
            self._inflight[name] += 1
        try:
            if len(convs) == 1:
                return [self._one(variant, convs[0], params)]
            futures = [self._executor().submit(self._one, variant, c, params) for c in convs]
            return [f.result() for f in futures]  # input order; the first failure raises
        finally:
            with self._lock:
                self._inflight[name] -= 1
                if self._inflight[name] <= 0:
                    del self._inflight[name]
                    self._idle.notify_all()

    # ---- adapters ----------------------------------------------------------------------------------
    def swap_adapter(self, adapter_dir: str | os.PathLike[str] | None) -> None:
        """Serve `adapter_dir` (a LoRA folder the server can read; None: the bare base) from now on.

        Loads it with POST /load_lora_adapter; on failure raises ModelError and the old adapter
        keeps serving. Then routes new calls to it and unloads the old adapter once the calls
        still using it have finished."""
        with self._swap_lock:
            old = self._variant
            if adapter_dir is None:
                new = Variant(self.model, None, "base")
            else:
                ad = Path(adapter_dir).expanduser()
                _check_lora_dir(ad, self.server_name)
                path = ad.resolve() if ad.exists() else ad
                new = self._lora_variant(ad, path)
                if new.name != old.name:
                    self._load(new.name, path)
            with self._lock:
                self._variant = new
            if old.adapter_dir is not None and old.name != new.name:
                self._unload_when_idle(old.name)

    def _lora_variant(self, ad: Path, path: Path) -> Variant:
        """The Variant that serves the LoRA folder `ad` (its name is what `_load` loads it as)."""
        return Variant(lora_name_for(ad), path, "lora")

    def _load(self, lora_name: str, path: Path) -> None:
        hints = {404: LORA_HINT, 405: LORA_HINT, 400: "check that the adapter folder exists on the vLLM server and its r "
                 "is at most --max-lora-rank"}
        try:
            self._request("POST", "/load_lora_adapter", {"lora_name": lora_name, "lora_path": str(path)}, hints=hints)
        except VLLMError as e:
            # The name carries a hash of the path, so "already loaded" means this very folder is loaded.
            if e.status == 400 and "already" in str(e).lower():
                return
            raise VLLMError(f"cannot load adapter {str(path)!r} into vLLM (still serving {self.name!r}): {e}",
                            status=e.status) from e

    def _unload_when_idle(self, lora_name: str) -> None:
        deadline = time.monotonic() + self.timeout * (self.max_retries + 1)
        with self._lock:
            while self._inflight.get(lora_name) and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
        try:
            self._unload(lora_name)
        except VLLMError as e:
            # The new adapter already serves; a leftover slot costs memory, not correctness.
            log.warning("could not unload adapter %r from %s: %s", lora_name, self.server_name, e)

    def _unload(self, lora_name: str) -> None:
        self._request("POST", "/unload_lora_adapter", {"lora_name": lora_name})

    # ---- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> "VLLMEndModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
