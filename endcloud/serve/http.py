"""HTTP helpers of the server: OpenAI-shaped errors, the body limit, the per-customer rate
limit, parsing a JSON body into a schema, and the admin check.

Every error leaves as OpenAI-shaped JSON `{"error": {"message", "type", "code", "param"}}`,
never a traceback: `ApiError` for what the client caused, the handlers of
`install_error_handlers` for everything else (`DataError`/`ConfigError` → 400,
`ModelError` → 503, other endcloud errors → 502, anything unexpected → 500, logged).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict, deque
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from endcloud.errors import ConfigError, DataError, EndcloudError, ModelError

log = logging.getLogger("endcloud.serve")


class ApiError(Exception):
    """An error the client caused (or a state it must know about), OpenAI-shaped on the wire."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}


def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "code": code, "param": param}}


def error_response(status: int, message: str, *, type: str, code: str | None = None, param: str | None = None,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type=type, code=code, param=param), status_code=status, headers=headers)


def validation_message(errors: Sequence[dict[str, Any]]) -> tuple[str, str | None]:
    parts, param = [], None
    for e in errors[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        param = param or loc or None
        msg = e.get("msg", "invalid")
        got = e.get("input", None)
        shown = f" (got {got!r:.60})" if got is not None and not isinstance(got, (dict, list)) else ""
        parts.append(f"{loc or 'body'}: {msg}{shown}")
    return "invalid request: " + "; ".join(parts), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        msg, param = validation_message(exc.errors())
        return error_response(400, msg, type="invalid_request_error", code="invalid_request", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(exc.status_code, detail, type="invalid_request_error", code=code,
                               headers=getattr(exc, "headers", None))

    @app.exception_handler(EndcloudError)
    async def _endcloud(request: Request, exc: EndcloudError):
        if isinstance(exc, (DataError, ConfigError)):
            return error_response(400, str(exc), type="invalid_request_error", code="invalid_request")
        if isinstance(exc, ModelError):
            return error_response(503, str(exc), type="server_error", code="model_unavailable")
        log.error("endcloud error on %s: %s", request.url.path, exc)
        return error_response(502, str(exc), type="server_error", code="upstream_error")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the server logged the details", type="server_error", code="internal_error")


class BodyLimit:
    """ASGI middleware: refuse request bodies above `max_bytes` with 413 before any parsing.

    The body is buffered (it is small by definition) and replayed to the app, so chunked
    uploads without Content-Length are caught as well."""

    def __init__(self, app, *, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._reject(scope, receive, send, int(length))
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await self._reject(scope, receive, send, size)
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        data = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope, receive, send, size: int):
        resp = error_response(
            413, f"request body of {size} bytes is over the limit of {self.max_bytes} bytes (setting max_body_bytes)",
            type="invalid_request_error", code="request_too_large",
        )
        await resp(scope, receive, send)


class RateLimiter:
    """Sliding one-minute window per customer; `check` returns seconds to wait, or 0."""

    def __init__(self, per_minute: int, *, clock=time.monotonic):
        self.per_minute, self.clock = per_minute, clock
        self._hits: dict[str, deque[float]] = defaultdict(deque)

    def check(self, key: str) -> float:
        now = self.clock()
        if len(self._hits) > 10_000:  # forget customers idle for a minute, so memory stays bounded
            for k in [k for k, q in self._hits.items() if not q or now - q[-1] >= 60.0]:
                del self._hits[k]
        q = self._hits[key]
        while q and now - q[0] >= 60.0:
            q.popleft()
        if len(q) >= self.per_minute:
            return max(0.001, 60.0 - (now - q[0]))
        q.append(now)
        return 0.0



async def parse_body(request: Request, model: type[BaseModel]):
    """The request body as `model`, or an ApiError (400) saying what is wrong with it."""
    raw = await request.body()
    if not raw:
        raise ApiError(400, "the request body is empty; send JSON", code="invalid_json")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        msg, param = validation_message(e.errors())
        raise ApiError(400, msg, code="invalid_request", param=param) from None


def require_admin(request: Request) -> None:
    """401 unless the request carries the admin token (when the server has one: setting admin_token)."""
    token = request.app.state.settings.admin_token
    if token and request.headers.get("authorization") != f"Bearer {token}":
        raise ApiError(401, "this endpoint needs `Authorization: Bearer <admin token>` (setting admin_token)",
                       type="authentication_error", code="unauthorized")
