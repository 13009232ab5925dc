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
import socket
import threading
import time
from typing import Any, Callable, Sequence

OUTCOMES = ("ok", "429", "500", "timeout", "malformed", "empty")


def default_responder(messages: list[dict[str, Any]]) -> str:
    """A deterministic reply that echoes the last customer message (so tests can see it)."""
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    return f"Reply: {last}"


def _tokens(text: str) -> int:
    from endcloud.cloud.tokens import estimate_tokens

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
        self.requests: list[dict[str, Any]] = []
        self.raw: list[bytes] = []  # the exact bytes of every body, as received
        self.outcomes: list[str] = []
        self.inflight = 0  # requests being handled now, and the most seen at once
        self.max_inflight = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FaultyCloud is not started; use it as a context manager or call start()")
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FaultyCloud":
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(), log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=1, timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="faulty-cloud")
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("FaultyCloud did not start within 20 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

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
        # Plain Starlette (what FastAPI is built on): the double should cost as little CPU
        # as possible, since benchmarks run it beside the client on the same cores.
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        double = self

        async def models(request: Request) -> JSONResponse:
            return JSONResponse({"object": "list", "data": [{"id": double.model, "object": "model", "owned_by": "endcloud"}]})

        async def chat(request: Request):
            raw = await request.body()
            if double.api_key is not None and request.headers.get("authorization") != f"Bearer {double.api_key}":
                return JSONResponse({"error": {"message": "bad api key", "type": "invalid_request_error"}}, status_code=401)
            try:
                body = json.loads(raw)
            except ValueError:
                return JSONResponse({"error": {"message": "body is not JSON"}}, status_code=400)
            outcome = double._draw()
            with double._lock:
                double.raw.append(raw)
                double.requests.append(body)
                double.outcomes.append(outcome)
                double.inflight += 1
                double.max_inflight = max(double.max_inflight, double.inflight)
            try:
                return await double._respond(body, outcome)
            finally:
                with double._lock:
                    double.inflight -= 1

        return Starlette(routes=[Route("/v1/models", models, methods=["GET"]),
                                 Route("/v1/chat/completions", chat, methods=["POST"])])

    async def _respond(self, body: dict[str, Any], outcome: str):
        from starlette.responses import JSONResponse, Response, StreamingResponse

        double = self
        if outcome == "429":
            return JSONResponse(
                {"error": {"message": "rate limited", "type": "rate_limit_error"}}, status_code=429,
                headers={"Retry-After": f"{double.retry_after:g}", "retry-after-ms": str(int(double.retry_after * 1000))},
            )
        if outcome == "500":
            return JSONResponse({"error": {"message": "internal error", "type": "server_error"}}, status_code=500)
        if outcome == "timeout":
            # Hang, but notice stop() so the server can shut down gracefully.
            until = time.monotonic() + double.hang
            while time.monotonic() < until and not (double._server and double._server.should_exit):
                await asyncio.sleep(0.05)
            return JSONResponse({"error": {"message": "too late"}}, status_code=504)
        if double.latency:
            await asyncio.sleep(double.latency)
        if outcome == "malformed":
            return Response(b'{"id": "chatcmpl-x", "choices": [{"index": 0, "message": {"role": "assist', media_type="application/json")
        content = "" if outcome == "empty" else double.responder(body.get("messages", []))
        if body.get("stream"):
            return StreamingResponse(double._sse(body, content), media_type="text/event-stream")
        payload = json.dumps(double._completion(body, content), ensure_ascii=False).encode("utf-8")
        if double.drip > 0:
            return StreamingResponse(double._dripped(payload), media_type="application/json")
        return Response(payload, media_type="application/json")

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
