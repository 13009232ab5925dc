"""A fault-injecting OpenAI-compatible server on 127.0.0.1 (real HTTP, real uvicorn).

    with FaultyCloud(latency=0.2, p429=0.04, p500=0.03, pmalformed=0.03, seed=1) as cloud:
        teacher = PrivacyGate(OpenAITeacher(base_url=cloud.base_url, model="double", api_key="x"),
                              audit=AuditLog(tmp / "audit.jsonl"))
        teacher.reply([{"role": "user", "content": "hi"}])   # -> "Reply: hi" (default responder)
        cloud.requests        # every request body received, parsed JSON, in arrival order
        cloud.raw             # ... and the exact bytes of each
        cloud.outcomes        # "ok" | "429" | "500" | "timeout" | "malformed" | "empty" per request
        cloud.max_inflight    # most requests handled at once
        cloud.reset()         # forget all of the above

`responder`, `script` and `retry_after` may be changed on a running double. `api_key=`
makes it answer 401 to any other bearer token. GET /v1/models lists `model`.
`keep_alive` is how long an idle connection stays open (uvicorn closes it after);
`ssl_certfile`/`ssl_keyfile` serve HTTPS (then `base_url` starts with https://).

Each request draws one outcome (in this order of the probabilities): 429 with Retry-After,
500, a hang past any sane timeout, malformed JSON, an empty reply — else a good reply from
`responder(messages) -> str` after `latency` seconds. `script=["429", "ok", ...]` fixes the
outcomes of the first requests for exact tests. `drip` > 0 sends good bodies in small
pieces `drip` seconds apart. `stream: true` requests get server-sent events ending in
`data: [DONE]`. Faults answer at once (a gateway rejects before the model runs), except
malformed/empty replies, which cost the full latency like a good one.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from typing import Any, AsyncIterator, Callable, NamedTuple, Sequence

from endcloud.loopback import LoopbackServer

OUTCOMES = ("ok", "429", "500", "timeout", "malformed", "empty")


def default_responder(messages: list[dict[str, Any]]) -> str:
    """A deterministic reply that echoes the last customer message (so tests can see it)."""
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    return f"Reply: {last}"


def _tokens(text: str) -> int:
    from endcloud.text import estimate_tokens

    return estimate_tokens(text)


class FaultyCloud:
    """A real OpenAI-compatible chat server with injectable faults (a test double)."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        p429: float = 0.0,
        p500: float = 0.0,
        ptimeout: float = 0.0,
        pmalformed: float = 0.0,
        pempty: float = 0.0,
        drip: float = 0.0,
        retry_after: float = 1,
        hang: float = 30.0,
        seed: int = 0,
        responder: Callable[[list[dict[str, Any]]], str] | None = None,
        script: Sequence[str] = (),
        model: str = "faulty-cloud",
        api_key: str | None = None,
        keep_alive: float = 30.0,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ):
        total = p429 + p500 + ptimeout + pmalformed + pempty
        if not 0 <= total <= 1:
            raise ValueError(f"fault probabilities must sum to 0..1, got {total!r}")
        bad = [s for s in script if s not in OUTCOMES]
        if bad:
            raise ValueError(f"script outcomes must be in {OUTCOMES}, got {bad!r}")
        self.latency = latency
        self.p = [("429", p429), ("500", p500), ("timeout", ptimeout), ("malformed", pmalformed), ("empty", pempty)]
        self.drip = drip
        self.retry_after = retry_after
        self.hang = hang
        self.responder = responder or default_responder
        self.script = list(script)
        self.model = model
        self.api_key = api_key
        self.keep_alive = keep_alive
        self.ssl_certfile, self.ssl_keyfile = ssl_certfile, ssl_keyfile
        self.requests: list[dict[str, Any]] = []
        self.raw: list[bytes] = []  # the exact bytes of every body, as received
        self.outcomes: list[str] = []
        self.inflight = 0  # requests being handled now, and the most seen at once
        self.max_inflight = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: LoopbackServer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int | None:
        return self._server.port if self._server is not None else None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultyCloud is not started; use it as a context manager or call start()")
        return self._server.url + "/v1"

    def start(self) -> "FaultyCloud":
        # proxy_headers off: nothing proxies to a loopback double, and it is one more
        # middleware per request. http/loop stay "auto" (httptools/uvloop when installed).
        self._server = LoopbackServer(
            self._app(), name="faulty-cloud", start_timeout_s=20, access_log=False, lifespan="off",
            proxy_headers=False, timeout_graceful_shutdown=1, timeout_keep_alive=self.keep_alive,
            ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile,
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server = None

    def __enter__(self) -> "FaultyCloud":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.raw.clear()
            self.outcomes.clear()
            self.max_inflight = 0

    # -- behaviour ------------------------------------------------------------------------
    def _draw(self) -> str:
        with self._lock:
            if self.script:
                return self.script.pop(0)
            r = self._rng.random()
            acc = 0.0
            for name, p in self.p:
                acc += p
                if r < acc:
                    return name
            return "ok"

    def _completion(self, body: dict[str, Any], content: str) -> dict[str, Any]:
        prompt = sum(_tokens(str(m.get("content", ""))) + 4 for m in body.get("messages", []))
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": _tokens(content), "total_tokens": prompt + _tokens(content)},
        }

    def _app(self):
        # A bare ASGI app on real uvicorn: what a client meets is uvicorn's HTTP/1.1 on the
        # wire, and that is unchanged. Starlette's request objects, middleware stack and
        # router (what this was before) only cost CPU — about a third of the double's per
        # request here — which benchmarks share with the client they measure.
        double = self

        async def app(scope: dict[str, Any], receive: Callable, send: Callable) -> None:
            if scope["type"] != "http":
                return
            path, method = scope["path"], scope["method"]
            routes = {"/v1/chat/completions": ("POST", double._chat), "/v1/models": ("GET", double._models)}
            if path not in routes:
                reply = _json(404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})
            elif method != routes[path][0]:
                reply = _json(405, {"error": {"message": f"{method} not allowed on {path}"}})
            else:
                reply = await routes[path][1](scope, receive)
            if reply is not None:  # None: the client went away before its request was whole
                await _send(reply, receive, send)

        return app

    async def _models(self, scope: dict[str, Any], receive: Callable) -> "_Reply":
        return _json(200, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "endcloud"}]})

    async def _chat(self, scope: dict[str, Any], receive: Callable) -> "_Reply | None":
        raw = await _read_body(receive)
        if raw is None:
            return None
        if self.api_key is not None and dict(scope["headers"]).get(b"authorization") != f"Bearer {self.api_key}".encode():
            return _json(401, {"error": {"message": "bad api key", "type": "invalid_request_error"}})
        try:
            body = json.loads(raw)
        except ValueError:
            return _json(400, {"error": {"message": "body is not JSON"}})
        outcome = self._draw()
        with self._lock:
            self.raw.append(raw)
            self.requests.append(body)
            self.outcomes.append(outcome)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._respond(body, outcome)
        finally:
            with self._lock:
                self.inflight -= 1

    async def _respond(self, body: dict[str, Any], outcome: str) -> "_Reply":
        if outcome == "429":
            return _json(429, {"error": {"message": "rate limited", "type": "rate_limit_error"}},
                         [(b"retry-after", f"{self.retry_after:g}".encode()),
                          (b"retry-after-ms", str(int(self.retry_after * 1000)).encode())])
        if outcome == "500":
            return _json(500, {"error": {"message": "internal error", "type": "server_error"}})
        if outcome == "timeout":
            # Hang, but notice stop() so the server can shut down gracefully.
            until = time.monotonic() + self.hang
            while time.monotonic() < until and not (self._server and self._server.stopping):
                await asyncio.sleep(0.05)
            return _json(504, {"error": {"message": "too late"}})
        if self.latency:
            await asyncio.sleep(self.latency)
        if outcome == "malformed":
            return _Reply(200, _JSON, b'{"id": "chatcmpl-x", "choices": [{"index": 0, "message": {"role": "assist')
        content = "" if outcome == "empty" else self.responder(body.get("messages", []))
        if body.get("stream"):
            return _Reply(200, [(b"content-type", b"text/event-stream; charset=utf-8")], self._sse(body, content))
        payload = json.dumps(self._completion(body, content), ensure_ascii=False).encode("utf-8")
        if self.drip > 0:
            return _Reply(200, _JSON, self._dripped(payload))
        return _Reply(200, _JSON, payload)

    async def _dripped(self, payload: bytes):
        for i in range(0, len(payload), 16):
            yield payload[i : i + 16]
            await asyncio.sleep(self.drip)

    async def _sse(self, body: dict[str, Any], content: str):
        base = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model") or self.model}

        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode("utf-8")

        yield event({"role": "assistant", "content": ""})
        step = 8
        for i in range(0, len(content), step):
            if self.drip > 0:
                await asyncio.sleep(self.drip)
            yield event({"content": content[i : i + step]})
        yield event({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = self._completion(body, content)["usage"]
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode("utf-8")
        yield b"data: [DONE]\n\n"


_JSON = [(b"content-type", b"application/json")]


class _Reply(NamedTuple):
    """An answer: a whole body (sent with Content-Length) or chunks (sent chunked)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes | AsyncIterator[bytes]


def _json(status: int, obj: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> _Reply:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _Reply(status, [*_JSON, *headers], text)


async def _read_body(receive: Callable) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(reply: _Reply, receive: Callable, send: Callable) -> None:
    status, headers, body = reply
    if isinstance(body, bytes):
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    # Streamed: stop when the client hangs up (uvicorn then drops our writes silently, and a
    # dripping generator would run on to its end for nobody).
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        async for chunk in body:
            if gone.is_set():
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        watcher.cancel()
        await body.aclose()  # type: ignore[union-attr]
