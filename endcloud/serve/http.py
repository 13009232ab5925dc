"""HTTP helpers of the server: OpenAI-shaped errors, the body limit, the per-customer rate
limit, and parsing a JSON body into a schema (who may call what: `endcloud.serve.auth`).

Every error leaves as OpenAI-shaped JSON `{"error": {"message", "type", "code", "param"}}`,
never a traceback: `ApiError` for what the client caused, the handlers of
`install_error_handlers` for everything else (`DataError`/`ConfigError` → 400,
`ModelError` → 503, other endcloud errors → 502, anything unexpected → 500, logged).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
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
    # text that quotes a bad input may hold what UTF-8 cannot encode (a lone surrogate): escaped
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if param is not None:
        param = param.encode("utf-8", "backslashreplace").decode("utf-8")
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


class LastResort:
    """ASGI middleware, the last resort before the server's own: whatever escaped the handlers
    before a response started leaves as OpenAI-shaped JSON, and the connection lives on.

    - an unexpected exception: logged with its traceback, answered 500 with no detail. (The
      `Exception` handler alone answers the same but re-raises to uvicorn, which then drops
      the keep-alive connection: the client's next request on it was reset.)
    - a cancelled request (uvicorn cancels what still runs when the graceful shutdown's time,
      setting shutdown_timeout_s, is up): 503 "shutting down", not uvicorn's bare 500.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except asyncio.CancelledError:
            if started:
                raise
            resp = error_response(503, "the server is shutting down; retry in a moment", type="server_error",
                                  code="shutting_down", headers={"Retry-After": "1", "Connection": "close"})
            await resp(scope, receive, send)
        except Exception:
            if started:
                raise  # half a response is out: only closing the connection can say it failed
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            resp = error_response(500, "internal error; the server logged the details", type="server_error",
                                  code="internal_error")
            await resp(scope, receive, send)


class RateLimiter:
    """Sliding one-minute window per customer; `check` returns seconds to wait, or 0."""

    def __init__(self, per_minute: int, *, clock=time.monotonic):
        self.per_minute, self.clock = per_minute, clock
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._swept = float("-inf")

    def check(self, key: str) -> float:
        now = self.clock()
        # forget customers idle for a minute, so memory stays bounded; at most once a second, or
        # 10,000 distinct callers would cost every request a scan of them all
        if len(self._hits) > 10_000 and now - self._swept >= 1.0:
            self._swept = now
            for k in [k for k, q in self._hits.items() if not q or now - q[-1] >= 60.0]:
                del self._hits[k]
        q = self._hits[key]
        while q and now - q[0] >= 60.0:
            q.popleft()
        if len(q) >= self.per_minute:
            return max(0.001, 60.0 - (now - q[0]))
        q.append(now)
        return 0.0



# What a request body may hold. A chat request nests 4 deep and no number of ours has 20
# digits; past these, Python's own limits (recursion, 4,300-digit integers) raise errors
# json.loads does not call JSON errors, which once answered 500.
MAX_JSON_DEPTH = 32
MAX_NUMBER_DIGITS = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# a lone UTF-16 surrogate (escaped, or raw bytes json.loads lets through): SQLite's UTF-8 cannot store it
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays/objects deeper than `limit` (brackets inside strings
    do not count). Counted before parsing: a parser recursing 20,000 levels is what must not run."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the usual body: too few brackets to be that deep
    depth = 0
    for ch in _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if ch in (91, 123) else -1  # [ {
        if depth > limit:
            return True
    return False


class _BodyRefused(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _BodyRefused(f"a number of {len(text.lstrip('-'))} digits (over {MAX_NUMBER_DIGITS})")
    return int(text)


def _parse_constant(name: str):
    raise _BodyRefused(f"{name}, which is not a JSON number")


def _surrogate_at(data: Any, path: str = "") -> str | None:
    """The path of the first string (key or value) holding a lone surrogate, else None."""
    if isinstance(data, str):
        return (path or "body") if _SURROGATE.search(data) else None
    if isinstance(data, dict):
        for k, v in data.items():
            name = k.encode("utf-8", "backslashreplace").decode("utf-8")
            here = f"{path}.{name}" if path else name
            if _SURROGATE.search(k) or (found := _surrogate_at(v, here)) is not None:
                return here if _SURROGATE.search(k) else found
    elif isinstance(data, list):
        for i, v in enumerate(data):
            if (found := _surrogate_at(v, f"{path}.{i}" if path else str(i))) is not None:
                return found
    return None


def _long_number_key(raw: bytes) -> str | None:
    m = re.search(rb'"([^"\\]{1,64})"\s*:\s*-?\d{%d,}' % (MAX_NUMBER_DIGITS + 1), raw)
    return m.group(1).decode("utf-8", "replace") if m else None


def load_json_body(raw: bytes) -> Any:
    """A request body's JSON, or an ApiError (400) saying what is wrong: not JSON, nested
    deeper than MAX_JSON_DEPTH, a number over MAX_NUMBER_DIGITS digits, NaN/Infinity, or a
    lone surrogate (which no reply or record could store)."""
    if json_too_deep(raw):
        raise ApiError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")
    try:
        data = json.loads(raw, parse_int=_parse_int, parse_constant=_parse_constant)
    except _BodyRefused as e:
        key = _long_number_key(raw) if "digits" in str(e) else None
        raise ApiError(400, f"the request body has {e}" + (f" in field {key!r}" if key else ""),
                       code="invalid_json", param=key) from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if _MAYBE_SURROGATE.search(raw) and (where := _surrogate_at(data)) is not None:
        raise ApiError(400, f"{where}: text holds a lone UTF-16 surrogate (half of a character), which is not "
                            "valid Unicode; send whole characters", code="invalid_text", param=where)
    return data


def session_header(request: Request) -> str | None:
    """The `X-Endcloud-Session` header, held to the body's `session_id` limit (400 past it)."""
    from endcloud.serve.protocol import MAX_SESSION_ID_CHARS, SESSION_HEADER

    value = request.headers.get(SESSION_HEADER)
    if value is not None and len(value) > MAX_SESSION_ID_CHARS:
        raise ApiError(400, f"header X-Endcloud-Session has {len(value)} characters, over the limit of "
                            f"{MAX_SESSION_ID_CHARS} (the same as session_id)", code="invalid_request",
                       param="X-Endcloud-Session")
    return value


async def parse_body(request: Request, model: type[BaseModel]):
    """The request body as `model`, or an ApiError (400) saying what is wrong with it."""
    raw = await request.body()
    if not raw:
        raise ApiError(400, "the request body is empty; send JSON", code="invalid_json")
    data = load_json_body(raw)
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        msg, param = validation_message(e.errors())
        raise ApiError(400, msg, code="invalid_request", param=param) from None

