"""The shop's chat server: OpenAI-compatible chat where the end model answers first.

    app = create_app(ServeSettings(...), engine=AsyncEngine(EndModel.load(base)), teacher=make_teacher("openai"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

One customer turn:

    request ─► limits (413 body, 400 shape, 429 rate) ─► session + profile + KB snippets
            ─► end model (continuous batch; whole batches for engines without it)
            ─► signals (match, confidence, frustration)
            ─► Router.decide ─► end reply, or cloud takeover through the privacy gate
               (cloud error / timeout ─► the end reply is served, `cloud_failed` recorded)
            ─► store the turn, reply, scores and decision ─► JSON or SSE to the customer

Streaming (`stream: true`): with `model="end"` the end model's text goes out as its
tokens are sampled (first chunk after prefill and one step); with `endcloud` the router
needs the whole end reply (its match and confidence) before any of it may be shown, and
with `cloud` the cloud's reply is whole, so those stream once the turn is decided.

Endpoints: `POST /v1/chat/completions` (models `endcloud` | `end` | `cloud`; `user` is the
customer; reply extension field `endcloud`), `POST /v1/feedback`, `GET /v1/models`,
`GET|PUT /v1/customers/{id}/profile`, `GET /v1/sessions/{id}`, `GET /metrics`, `GET /healthz`.
Every error is OpenAI-shaped JSON `{"error": {"message", "type", "code"}}`, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections import defaultdict, deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Literal, Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from endcloud.errors import ConfigError, DataError, EndcloudError, ModelError, TeacherError
from endcloud.scoring.final import final_score
from endcloud.runtime.async_engine import AsyncEngine
from endcloud.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from endcloud.serve.router import MODELS, Router, Signals
from endcloud.serve.settings import ServeSettings
from endcloud.serve.signals import LexicalMatcher, approx_tokens, frustration

log = logging.getLogger("endcloud.serve")

ANONYMOUS = "anonymous"
SESSION_HEADER = "x-endcloud-session"
_CUSTOMER_RE = re.compile(r"^[\w.@:+\-]{1,128}$")


# ---------------------------------------------------------------------------------------
# errors
class ApiError(Exception):
    """An error the client caused (or a state it must know about), OpenAI-shaped on the wire."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}


def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "code": code, "param": param}}


def _error_response(status: int, message: str, *, type: str, code: str | None = None, param: str | None = None,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type=type, code=code, param=param), status_code=status, headers=headers)


def _validation_message(errors: Sequence[dict[str, Any]]) -> tuple[str, str | None]:
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
        return _error_response(exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        msg, param = _validation_message(exc.errors())
        return _error_response(400, msg, type="invalid_request_error", code="invalid_request", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        return _error_response(exc.status_code, detail, type="invalid_request_error", code=code,
                               headers=getattr(exc, "headers", None))

    @app.exception_handler(EndcloudError)
    async def _endcloud(request: Request, exc: EndcloudError):
        if isinstance(exc, (DataError, ConfigError)):
            return _error_response(400, str(exc), type="invalid_request_error", code="invalid_request")
        if isinstance(exc, ModelError):
            return _error_response(503, str(exc), type="server_error", code="model_unavailable")
        log.error("endcloud error on %s: %s", request.url.path, exc)
        return _error_response(502, str(exc), type="server_error", code="upstream_error")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error_response(500, "internal error; the server logged the details", type="server_error", code="internal_error")


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
        resp = _error_response(
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


# ---------------------------------------------------------------------------------------
# wire formats
class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat request the server honours (other fields are ignored)."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = 1
    session_id: str | None = Field(default=None, max_length=128)  # extension: pin the conversation's session

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported")
        return v


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_id: str = Field(min_length=1, max_length=128)
    rating: int | str
    comment: str | None = Field(default=None, max_length=4000)
    correction: str | None = Field(default=None, max_length=8000)
    user: str | None = Field(default=None, max_length=128)


class ProfileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preferences: dict[str, Any] | None = None
    orders: list[dict[str, Any]] | None = None
    replace_orders: bool = False


# ---------------------------------------------------------------------------------------
# one turn
@dataclass
class TurnResult:
    message_id: str
    created: int
    model: str
    text: str
    answered_by: str
    scores: dict[str, Any]
    decision: dict[str, Any]
    usage: dict[str, int]
    knowledge: list[dict[str, Any]] = field(default_factory=list)
    cloud_failed: bool = False
    session_id: str = ""
    # recorded, not sent: the end draft is kept even when the cloud answered (the online loop learns from it)
    end_text: str | None = None
    cloud_text: str | None = None
    cloud_cost: float = 0.0
    cloud_tokens: int = 0
    adapter: str | None = None  # the adapter version that drafted the end reply (read under the engine's lock)

    def extension(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "session_id": self.session_id,
            "answered_by": self.answered_by,
            "scores": self.scores,
            "decision": self.decision,
            "knowledge": self.knowledge,
            "cloud_failed": self.cloud_failed,
            "adapter": self.adapter,
        }


def _is_gated(teacher: Any) -> bool:
    t = teacher
    while t is not None:
        if type(t).__name__ == "PrivacyGate":
            return True
        t = getattr(t, "inner", None)
    return False


def gate_teacher(teacher: Any, settings: ServeSettings) -> Any:
    """Wrap a remote teacher in the privacy gate unless it already passes through one."""
    if teacher is None or _is_gated(teacher) or not getattr(teacher, "remote", True):
        return teacher
    from endcloud.cloud import PrivacyGate  # lazy: only with a remote cloud
    from endcloud.privacy import AuditLog

    audit = settings.audit_path or (Path(settings.db_path).parent / "audit" / "outbound.jsonl" if settings.db_path else None)
    if audit is None:
        raise ConfigError("a remote cloud needs an audit log: set ServeSettings.audit_path (or db_path)")
    return PrivacyGate(teacher, audit=AuditLog(audit))


class ChatService:
    """Everything one turn needs, held by the app (`app.state.service`)."""

    def __init__(self, settings: ServeSettings, *, engine: AsyncEngine, teacher: Any, scorer: Any, kb: Any, store: Any,
                 metrics: Metrics):
        self.settings, self.engine, self.teacher, self.scorer, self.kb, self.store = settings, engine, teacher, scorer, kb, store
        self.metrics = metrics
        self.router = Router.from_settings(settings)
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self._sim: Any = None  # loaded on the first takeover

    # -- request checks ----------------------------------------------------------------
    def check(self, req: ChatRequest, client: str) -> tuple[str, list[dict[str, str]]]:
        s = self.settings
        if req.model not in MODELS:
            raise ApiError(404, f"model {req.model!r} does not exist; use one of {list(MODELS)} "
                                "(endcloud routes automatically, end forces the end model, cloud forces the cloud)",
                           code="model_not_found", param="model")
        customer = req.user if req.user else ANONYMOUS
        if not _CUSTOMER_RE.match(customer):
            raise ApiError(400, f"user {customer[:40]!r} must be 1-128 letters, digits or . _ @ : + -", param="user")
        if len(req.messages) > s.max_messages:
            raise ApiError(400, f"{len(req.messages)} messages is over the limit of {s.max_messages} per request "
                                "(setting max_messages)", code="too_many_messages", param="messages")
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        for i, m in enumerate(messages):
            n = approx_tokens(m["content"])
            if n > s.max_tokens_per_message:
                raise ApiError(400, f"message {i} has about {n} tokens, over the limit of {s.max_tokens_per_message} "
                                    "(setting max_tokens_per_message)", code="message_too_long", param=f"messages.{i}.content")
        if messages[-1]["role"] != "user":
            raise ApiError(400, f"the last message must be the customer's (role 'user'), got role {messages[-1]['role']!r}",
                           param="messages")
        if not messages[-1]["content"].strip():
            raise ApiError(400, "the last user message is empty", param="messages")
        max_tokens = req.max_completion_tokens or req.max_tokens
        if max_tokens is not None and max_tokens > s.max_new_tokens_cap:
            raise ApiError(400, f"max_tokens={max_tokens} is over the limit of {s.max_new_tokens_cap} "
                                "(setting max_new_tokens_cap)", param="max_tokens")
        wait = self.limiter.check(customer if customer != ANONYMOUS else f"ip:{client}")
        if wait:
            retry = max(1, int(wait + 0.999))
            raise ApiError(429, f"customer {customer!r} sent more than {s.rate_limit_per_minute} requests in a minute "
                                f"(setting rate_limit_per_minute); retry after {retry} s",
                           type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": str(retry)})
        return customer, messages

    # -- context -----------------------------------------------------------------------
    def _context(self, customer: str, session_id: str, messages: list[dict[str, str]]) -> tuple[list[dict], str, list]:
        """(conversation for the models, system text, knowledge refs)."""
        s = self.settings
        system_in = [m["content"] for m in messages if m["role"] == "system"]
        turns = [m for m in messages if m["role"] != "system"]
        if len(turns) == 1:
            # A client that sends only the new message (a chat widget) gets the stored history.
            n, tail = self.store.history_tail(session_id, s.history_messages)
            turns = tail[max(0, len(tail) - (n - window_start(n, s.history_messages))):] + turns
        else:
            turns = turns[window_start(len(turns) - 1, s.history_messages):]
        query = turns[-1]["content"]
        parts = list(system_in)
        knowledge: list[dict[str, Any]] = []
        knowledge_text = None
        if self.kb is not None:
            try:
                snippets = self.kb.search(query, k=s.knowledge_snippets)
            except Exception:  # retrieval must never cost the customer a reply
                log.exception("knowledge search failed")
                snippets = []
            if snippets:
                knowledge_text = "Shop knowledge:\n" + "\n".join(f"- {sn.text}" for sn in snippets)
                knowledge = [{"source": sn.source, "ref": getattr(sn, "ref", ""), "score": round(float(sn.score), 4)}
                             for sn in snippets]
        # The knowledge found for this question changes every turn. At the top (in the system
        # message) it changes the start of every prompt, so no earlier turn's key/values can be
        # reused; after the question (where the end model's chat template renders a late system
        # message) the conversation before it stays the same text turn after turn.
        late = (knowledge_text is not None and s.knowledge_position == "after_question"
                and bool(getattr(self.engine, "late_system", False)))
        if knowledge_text is not None and not late:
            parts.append(knowledge_text)
        if customer != ANONYMOUS:
            prof = self.store.profile(customer, max_orders=3)
            if not prof.is_empty():
                lines = []
                for o in prof.orders:
                    lines.append("order " + ", ".join(f"{k}: {v}" for k, v in o.items() if v not in (None, "")))
                if prof.preferences:
                    lines.append("preferences: " + ", ".join(f"{k}: {v}" for k, v in prof.preferences.items()))
                parts.append("Customer:\n" + "\n".join(lines))
        system = "\n\n".join(parts)
        if late:
            turns = turns + [{"role": "system", "content": knowledge_text}]
        convo = ([{"role": "system", "content": system}] if system else []) + turns
        return convo, system, knowledge

    # -- the turn ------------------------------------------------------------------------
    def open_session(self, req: ChatRequest, customer: str, session_header: str | None) -> str:
        try:
            return self.store.open_session(customer, req.session_id or session_header)
        except DataError as e:
            raise ApiError(403, f"{e}; omit session_id to continue your own latest session", code="session_forbidden",
                           param="session_id") from None

    async def turn(self, req: ChatRequest, customer: str, messages: list[dict[str, str]], *, message_id: str,
                   session_id: str) -> TurnResult:
        # Inline, not in a worker thread: these are sub-millisecond SQLite reads and WAL
        # appends without fsync (synchronous=NORMAL), and a thread hop per request spreads
        # the arrivals of customers who write at the same time over more than one batch window.
        convo, query, knowledge = self._prepare(customer, session_id, messages)
        return await self._answer(req, query, convo, knowledge, message_id=message_id, session_id=session_id)

    def _prepare(self, customer: str, session_id: str, messages: list[dict[str, str]]) -> tuple[list[dict], str, list]:
        """(conversation for the models, the customer's question, knowledge refs); stores the question."""
        convo, _, knowledge = self._context(customer, session_id, messages)
        query = messages[-1]["content"]
        self.store.add_message(session_id, "user", query)
        return convo, query, knowledge

    def _generation_args(self, req: ChatRequest) -> dict[str, Any]:
        s = self.settings
        return {"max_new_tokens": min(req.max_completion_tokens or req.max_tokens or s.max_new_tokens, s.max_new_tokens_cap),
                "temperature": s.temperature if req.temperature is None else req.temperature,
                "top_p": s.top_p if req.top_p is None else req.top_p, "seed": req.seed}

    async def stream_end(self, req: ChatRequest, customer: str, messages: list[dict[str, str]], *, message_id: str,
                         session_id: str) -> AsyncIterator[str | TurnResult]:
        """model="end": the end reply's text as the model writes it (str pieces), then the TurnResult.

        Only for the forced end model: `endcloud` routing needs the whole reply (its match
        and confidence) before it may show any of it, so those turns go through `turn`."""
        convo, query, knowledge = self._prepare(customer, session_id, messages)
        stream = self.engine.stream_scored(convo, query=query, session=session_id, **self._generation_args(req))
        try:
            async for delta in stream:
                yield delta + stream.ready()  # whatever else already arrived goes in the same write
        finally:
            await stream.aclose()
        yield await self._answer(req, query, convo, knowledge, message_id=message_id, session_id=session_id,
                                 end=stream.result)

    async def _answer(self, req: ChatRequest, query: str, convo: list[dict], knowledge: list, *, message_id: str,
                      session_id: str, end: tuple[Any, float | None] | None = None) -> TurnResult:
        """Route and finish one turn. `end`: the end reply and its match when already generated (streamed)."""
        s, store = self.settings, self.store
        args = self._generation_args(req)

        async def end_reply():
            return await self.engine.generate_scored(convo, query=query, session=session_id, **args)

        gen = None
        signals = Signals(frustration=frustration(query))
        if req.model != "cloud":
            gen, match = end if end is not None else await end_reply()
            signals.empty = not gen.text.strip()
            signals.confidence = round(float(gen.confidence), 6)
            if match is not None:
                signals.match = round(match, 6)
        decision = self.router.decide(signals, model=req.model)
        cloud_text, cloud_failed, usage_cloud, cost = None, False, None, 0.0
        if decision.route == "cloud":
            if self.teacher is None:
                decision.reasons.append("no cloud configured: end reply served")
                cloud_failed = True
                await asyncio.to_thread(store.record_event, "cloud_unavailable", message_id=message_id)
            else:
                try:
                    reply = await asyncio.wait_for(self.teacher.areply(convo), timeout=s.cloud_timeout_s)
                    if not (reply.text or "").strip():
                        raise TeacherError("the cloud returned an empty reply")
                    cloud_text, usage_cloud, cost = reply.text, reply.usage, float(reply.cost or 0.0)
                except Exception as e:  # noqa: BLE001 — whatever the cloud does, the customer gets the end reply
                    kind = "timeout" if isinstance(e, asyncio.TimeoutError) else type(e).__name__
                    if not isinstance(e, (asyncio.TimeoutError, EndcloudError)):
                        log.warning("cloud takeover failed unexpectedly: %r", e)
                    cloud_failed = True
                    decision.reasons.append(f"cloud_failed: {kind}")
                    self.metrics.cloud_failures.labels(kind=kind).inc()
                    await asyncio.to_thread(store.record_event, "cloud_failed", message_id=message_id,
                                            detail={"kind": kind, "error": str(e)[:500]})
                if cloud_failed and gen is None:
                    gen, _ = await end_reply()  # model="cloud" with the cloud down: still answer
        answered_by = "cloud" if cloud_text is not None else "end"
        text = cloud_text if cloud_text is not None else (gen.text if gen is not None else "")
        scores: dict[str, Any] = signals.to_json()
        scores.pop("empty", None)
        scores["matcher"] = getattr(self.scorer, "name", type(self.scorer).__name__)
        if cloud_text is not None and gen is not None and gen.text.strip():
            scores["cloud_match"] = round(float((await asyncio.to_thread(self.scorer.score, [query], [cloud_text]))[0]), 6)
            if scores.get("match") is not None:
                # every takeover is scored the paper's way (eq. 1 with the Θ rule): the dashboard's
                # trend and the online loop's triggers read it
                sim = await asyncio.to_thread(self._similarity, gen.text, cloud_text)
                if sim is not None:
                    scores["sim"] = round(sim, 6)
                    scores["final"] = round(float(final_score(sim, scores["match"], scores["cloud_match"])), 6)
        if usage_cloud is not None:
            usage = {"prompt_tokens": int(usage_cloud.prompt_tokens), "completion_tokens": int(usage_cloud.completion_tokens)}
            self.metrics.cloud_tokens.labels(kind="prompt").inc(usage["prompt_tokens"])
            self.metrics.cloud_tokens.labels(kind="completion").inc(usage["completion_tokens"])
            self.metrics.cloud_cost.inc(cost)
            self.metrics.takeovers.labels(reason="forced" if req.model == "cloud" else "routed").inc()
        else:
            usage = {"prompt_tokens": sum(approx_tokens(m["content"]) for m in convo),
                     "completion_tokens": int(gen.tokens) if gen is not None else 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        self.metrics.answered(by=answered_by)
        result = TurnResult(
            message_id=message_id, created=int(time.time()), model=req.model, text=text, answered_by=answered_by,
            scores=scores, decision=decision.to_json() | {"signals": signals.to_json()}, usage=usage,
            knowledge=knowledge, cloud_failed=cloud_failed, session_id=session_id,
            end_text=gen.text if gen is not None else None, cloud_text=cloud_text, cloud_cost=cost,
            cloud_tokens=usage["total_tokens"] if usage_cloud is not None else 0,
            adapter=getattr(gen, "adapter", None) if gen is not None else None,
        )
        return result

    def _similarity(self, end_text: str, cloud_text: str) -> float | None:
        """Sim(end, cloud) with the per-language offline default; None if no scorer loads."""
        if self._sim is None:
            try:
                from endcloud.scoring import load_similarity

                self._sim = load_similarity("auto")
            except Exception:  # scoring is a record, never a reason to fail a customer's turn
                log.exception("similarity scorer unavailable")
                self._sim = False
        if self._sim is False:
            return None
        return float(self._sim.score([end_text], [cloud_text])[0])

    async def record(self, result: TurnResult, query: str, *, t0: float, ttft: float | None) -> None:
        from endcloud.store.conversations import ServedReply

        # inline: a WAL append without fsync (synchronous=NORMAL), see `turn`
        self.store.record_reply(ServedReply(
            message_id=result.message_id, session_id=result.session_id, query=query, answered_by=result.answered_by,
            model=result.model, end_text=result.end_text, cloud_text=result.cloud_text, served_text=result.text,
            scores=result.scores, decision=result.decision, cloud_failed=result.cloud_failed,
            latency_ms=(time.perf_counter() - t0) * 1000, ttft_ms=None if ttft is None else ttft * 1000,
            cloud_tokens=result.cloud_tokens, cloud_cost=result.cloud_cost, adapter=result.adapter,
        ))


def window_start(n: int, limit: int) -> int:
    """Index of the first of `n` earlier messages that goes into the model's context (at most `limit`).

    The window does not slide one message per turn: its start jumps `limit // 2` messages
    (an even number: user/assistant pairs stay whole) at a time, so consecutive turns of a
    long chat begin with the same messages and the end model's prefix cache keeps hitting;
    the context holds between `limit - step + 1` and `limit` earlier messages."""
    if n <= limit:
        return 0
    step = max(2, limit // 2 // 2 * 2)
    return min(n - 1, -(-(n - limit) // step) * step) if limit > 0 else n


def _chunks(text: str) -> list[str]:
    """Split a reply into stream pieces: a word with its trailing space, or one CJK character."""
    return re.findall(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]|[^\s\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]+\s*|\s+", text) or [text]


def _completion_json(r: TurnResult) -> dict[str, Any]:
    return {
        "id": r.message_id,
        "object": "chat.completion",
        "created": r.created,
        "model": r.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text}, "finish_reason": "stop", "logprobs": None}],
        "usage": r.usage,
        "endcloud": r.extension(),
    }


# Characters JSON leaves raw that some SSE clients take for line ends (httpx's line decoder
# splits like str.splitlines): escaped, the event stays one line and decodes the same.
_SSE_ESCAPES = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _chunk(mid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None, **extra) -> str:
    body = {"id": mid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
    return "data: " + json.dumps(body, ensure_ascii=False).translate(_SSE_ESCAPES) + "\n\n"


# ---------------------------------------------------------------------------------------
# the app
def create_app(settings: ServeSettings | None = None, *, engine: Any = None, teacher: Any = None, scorer: Any = None,
               kb: Any = None, store: Any = None, extra_routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The FastAPI app. Parts not injected are built by the lifespan from `settings`:
    the engine from `base_dir`/`adapter_dir`, the store from `db_path` (in memory when None),
    the KB (and customer orders) from `shop_dir`; the matcher falls back to `LexicalMatcher`.
    `teacher=None` means no cloud: every turn is answered by the end model (and the routing
    decision still recorded). A remote teacher is wrapped in the privacy gate here."""
    settings = settings or ServeSettings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = app.state
        if st.engine is None:
            if settings.base_dir is None and settings.engine == "transformers":
                raise ConfigError("no end model: pass engine= or set base_dir (--base)")
            st.engine = await asyncio.to_thread(AsyncEngine.load, settings.base_dir, settings.adapter_dir, kind=settings.engine,
                                                settings=settings)
            if settings.adapter_name:
                st.engine.adapter = settings.adapter_name
        if st.store is None:
            from endcloud.store.conversations import ConversationStore

            st.store = ConversationStore(settings.db_path or ":memory:")
            st.owns_store = True
        if st.kb is None and settings.shop_dir is not None:
            st.kb = await asyncio.to_thread(load_kb, settings.shop_dir, st.store)
        st.scorer = st.scorer or LexicalMatcher()
        st.engine.scorer = st.scorer
        st.engine.batcher.on_batch = lambda n, seconds: metrics.batch_size.observe(n)
        if st.engine.mode == "continuous":
            st.engine.batcher.on_step = metrics.batch_occupancy.observe
        st.service = ChatService(settings, engine=st.engine, teacher=st.teacher, scorer=st.scorer,
                                 kb=st.kb, store=st.store, metrics=metrics)
        st.engine.start()
        stops = [stop for hook in st.startup_hooks if (stop := hook(app)) is not None]
        try:
            yield
        finally:
            for stop in stops:
                stop()
            await st.engine.stop()
            # The teacher's connections belong to this event loop: close them with it.
            aclose = getattr(st.teacher, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            if st.owns_store:
                st.store.close()

    app = FastAPI(title="endcloud", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.engine = engine if engine is None or isinstance(engine, AsyncEngine) else AsyncEngine.from_settings(engine, settings)
    app.state.teacher = gate_teacher(teacher, settings)
    app.state.scorer = scorer
    app.state.kb = kb
    app.state.store = store
    app.state.owns_store = False
    # callables hook(app) -> stop | None run once the engine is up (e.g. the adapter watcher)
    app.state.startup_hooks = []
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    def service(request: Request) -> ChatService:
        return request.app.state.service

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        t0 = time.perf_counter()
        svc = service(request)
        req = await _parse(request, ChatRequest)
        try:
            customer, messages = svc.check(req, request.client.host if request.client else "?")
        except ApiError as e:
            metrics.requests.labels(model=req.model[:32] if req.model in MODELS else "other", answered_by="none",
                                    status=str(e.status)).inc()
            raise
        session_id = svc.open_session(req, customer, request.headers.get(SESSION_HEADER))
        message_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        if not req.stream:
            result = await svc.turn(req, customer, messages, message_id=message_id, session_id=session_id)
            ttft = time.perf_counter() - t0
            await _record(svc, result, messages[-1]["content"], t0=t0, ttft=ttft)
            metrics.ttft.labels(stream="false").observe(ttft)
            metrics.latency.labels(stream="false").observe(time.perf_counter() - t0)
            metrics.requests.labels(model=req.model, answered_by=result.answered_by, status="200").inc()
            return JSONResponse(_completion_json(result))
        return StreamingResponse(_stream(svc, req, customer, messages, t0, message_id, session_id),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _stream(svc: ChatService, req: ChatRequest, customer: str, messages, t0: float, mid: str, session_id: str):
        created = int(time.time())
        # The role chunk goes out at once: the customer sees the reply start while the turn runs.
        yield _chunk(mid, created, req.model, {"role": "assistant", "content": ""}, endcloud={"message_id": mid})
        ttft = None
        result = None
        try:
            if req.model == "end" and svc.engine.streams_tokens:
                # The end model's tokens go out as they are sampled: the first after prefill.
                async for item in svc.stream_end(req, customer, messages, message_id=mid, session_id=session_id):
                    if isinstance(item, TurnResult):
                        result = item
                    elif item:
                        yield _chunk(mid, created, req.model, {"content": item})
                        if ttft is None:
                            ttft = time.perf_counter() - t0
            else:
                result = await svc.turn(req, customer, messages, message_id=mid, session_id=session_id)
        except Exception as e:
            log.exception("streamed turn failed")
            status = 400 if isinstance(e, (DataError, ConfigError)) else 500
            msg = str(e) if status == 400 else "internal error; the server logged the details"
            metrics.requests.labels(model=req.model, answered_by="none", status=str(status)).inc()
            yield "data: " + json.dumps(error_body(msg, type="server_error" if status == 500 else "invalid_request_error")) + "\n\n"
            yield "data: [DONE]\n\n"
            return
        if ttft is None:
            # The whole reply is known at once (routed, cloud, or a whole-batch engine), so
            # its content events go out in one write: one send instead of one per word.
            yield "".join(_chunk(mid, created, req.model, {"content": piece}) for piece in _chunks(result.text))
            ttft = time.perf_counter() - t0
        await _record(svc, result, messages[-1]["content"], t0=t0, ttft=ttft)
        yield _chunk(mid, created, req.model, {}, "stop", endcloud=result.extension(), usage=result.usage)
        yield "data: [DONE]\n\n"
        metrics.ttft.labels(stream="true").observe(ttft)
        metrics.latency.labels(stream="true").observe(time.perf_counter() - t0)
        metrics.requests.labels(model=req.model, answered_by=result.answered_by, status="200").inc()

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        svc = service(request)
        body = await _parse(request, FeedbackRequest)
        try:
            row = await asyncio.to_thread(svc.store.add_feedback, body.message_id, body.rating, comment=body.comment,
                                          correction=body.correction, customer=body.user)
        except KeyError:
            raise ApiError(404, f"no reply with message_id {body.message_id!r}: use the `id` (or endcloud.message_id) "
                                "of a chat completion this server sent", code="message_not_found", param="message_id") from None
        except DataError as e:
            raise ApiError(400, str(e), code="invalid_rating", param="rating") from None
        metrics.feedback.labels(rating=str(row["rating"])).inc()
        return {"ok": True, "feedback": row}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "endcloud"} for m in MODELS]}

    def _admin(request: Request) -> None:
        token = settings.admin_token
        if token and request.headers.get("authorization") != f"Bearer {token}":
            raise ApiError(401, "this endpoint needs `Authorization: Bearer <admin token>` (setting admin_token)",
                           type="authentication_error", code="unauthorized")

    @app.get("/v1/customers/{customer}/profile")
    async def get_profile(customer: str, request: Request):
        _admin(request)
        return (await asyncio.to_thread(service(request).store.profile, customer)).to_json()

    @app.put("/v1/customers/{customer}/profile")
    async def put_profile(customer: str, request: Request):
        _admin(request)
        if not _CUSTOMER_RE.match(customer):
            raise ApiError(400, f"customer id {customer[:40]!r} must be 1-128 letters, digits or . _ @ : + -")
        body = await _parse(request, ProfileRequest)
        prof = await asyncio.to_thread(service(request).store.set_profile, customer, preferences=body.preferences,
                                       orders=body.orders, replace_orders=body.replace_orders)
        return prof.to_json()

    @app.get("/v1/customers/{customer}/sessions")
    async def customer_sessions(customer: str, request: Request):
        _admin(request)
        return {"customer": customer, "sessions": await asyncio.to_thread(service(request).store.sessions_of, customer)}

    @app.get("/v1/sessions/{session_id}")
    async def get_session(session_id: str, request: Request):
        _admin(request)
        sess = await asyncio.to_thread(service(request).store.session, session_id)
        if sess is None:
            raise ApiError(404, f"no session {session_id!r}", code="session_not_found")
        return sess

    @app.get("/metrics")
    async def metrics_endpoint():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz(request: Request):
        st = request.app.state
        svc = getattr(st, "service", None)
        return {
            "status": "ok" if svc is not None else "starting",
            "adapter": st.engine.adapter if st.engine is not None else None,
            "cloud": getattr(st.teacher, "name", None),
            "knowledge": st.kb is not None,
            "db": str(settings.db_path) if settings.db_path else ":memory:",
        }

    for r in extra_routers:
        app.include_router(r)
    return app


async def _record(svc: ChatService, result: TurnResult, query: str, *, t0: float, ttft: float) -> None:
    await svc.record(result, query, t0=t0, ttft=ttft)


async def _parse(request: Request, model: type[BaseModel]):
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
        msg, param = _validation_message(e.errors())
        raise ApiError(400, msg, code="invalid_request", param=param) from None


def load_kb(shop_dir: str | Path, store: Any = None):
    """KnowledgeBase of a shop pack; orders with a customer column become customer profiles."""
    from endcloud.kb import KnowledgeBase, ShopPack

    pack = ShopPack.load(shop_dir)
    if store is not None:
        orders = getattr(pack, "orders", None) or {}
        by_customer: dict[str, list[dict[str, Any]]] = {}
        for oid, row in orders.items():
            cust = row.get("customer") or row.get("customer_id") or row.get("user")
            if cust:
                by_customer.setdefault(cust, []).append({k: v for k, v in row.items() if k not in ("customer", "customer_id", "user")})
        for cust, rows in by_customer.items():
            store.set_profile(cust, orders=rows)
    return KnowledgeBase(pack)


__all__ = ["ApiError", "ChatRequest", "ChatService", "RateLimiter", "TurnResult", "create_app", "load_kb"]
