"""The server's endpoints, on one module-level router that `create_app` includes.

    POST /v1/chat/completions            models endcloud | end | cloud; the customer is who a customer
                                         token proves (`user` is only a label); JSON, or SSE with `stream: true`
    POST /v1/completions                 a plain completion on the end model (continuous engine; no routing)
    POST /v1/feedback                    👍/👎 (rating) and corrections on a reply's message_id (your own)
    GET  /v1/models
    GET  /v1/customers/{id}/profile      admin, or that customer
    PUT  /v1/customers/{id}/profile      admin
    GET  /v1/customers/{id}/sessions     admin, or that customer
    GET  /v1/sessions/{id}               admin, or its customer
    GET  /metrics                        Prometheus: loopback, or the admin token
    GET  /healthz  (alias /health)       liveness: the process answers
    GET  /readyz                         readiness: 200 once the end model has generated (warm-up), else 503

Who may call what is `endcloud.serve.auth`'s (API keys, customer tokens, the admin token).

Each handler reads what it needs from `request.app.state` (the `TurnService`, metrics,
settings) and leaves the turn itself to `endcloud.serve.turn`. Streaming: with
`model="end"` the end model's text goes out as its tokens are sampled (first chunk after
prefill and one step); with `endcloud` the router needs the whole end reply (its match and
confidence) before any of it may be shown, and with `cloud` the cloud's reply is whole, so
those stream once the turn is decided.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from endcloud.errors import ConfigError, DataError
from endcloud.serve.auth import (authenticate, is_admin, is_anonymous_owner, require_admin, require_metrics_reader,
                                 require_owner_or_admin)
from endcloud.serve.http import ApiError, error_body, parse_body, session_header
from endcloud.serve.metrics import CONTENT_TYPE_LATEST
from endcloud.serve.protocol import (SSE_DONE, ChatRequest, CompletionRequest, FeedbackRequest, ProfileRequest, cut_at_stop,
                                     completion_json, sse_chunk, stream_pieces, usage_chunk)
from endcloud.serve.router import MODELS
from endcloud.serve.turn import CUSTOMER_RE, TurnResult, TurnService

log = logging.getLogger("endcloud.serve")

router = APIRouter()


def _service(request: Request) -> TurnService:
    return request.app.state.service


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    t0 = time.perf_counter()
    start_ns = time.time_ns()  # the trace's start (wall clock)
    svc = _service(request)
    metrics = svc.metrics
    try:
        caller = authenticate(request)
    except ApiError as e:
        metrics.requests.labels(model="other", answered_by="none", status=str(e.status)).inc()
        raise
    req = await parse_body(request, ChatRequest)
    try:
        customer, messages = svc.check(req, caller)
    except ApiError as e:
        metrics.requests.labels(model=req.model[:32] if req.model in MODELS else "other", answered_by="none",
                                status=str(e.status)).inc()
        raise
    session_id = svc.open_session(req, caller, session_header(request))
    message_id = "chatcmpl-" + uuid.uuid4().hex[:24]
    if not req.stream:
        metrics.running.inc()
        try:
            result = await svc.turn(req, customer, messages, message_id=message_id, session_id=session_id)
        finally:
            metrics.running.dec()
        ttft = time.perf_counter() - t0
        await svc.record(result, messages[-1]["content"], t0=t0, ttft=ttft)
        svc.tracing.record_turn(req, result, start_ns=start_ns, end_ns=time.time_ns(), ttft_s=ttft)
        metrics.ttft.labels(stream="false").observe(ttft)
        metrics.latency.labels(stream="false").observe(time.perf_counter() - t0)
        metrics.requests.labels(model=req.model, answered_by=result.answered_by, status="200").inc()
        return JSONResponse(completion_json(result))
    return StreamingResponse(_stream(svc, req, customer, messages, t0, message_id, session_id, start_ns),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(svc: TurnService, req: ChatRequest, customer: str, messages, t0: float, mid: str, session_id: str,
                  start_ns: int):
    metrics = svc.metrics
    metrics.running.inc()
    try:
        async for event in _stream_turn(svc, req, customer, messages, t0, mid, session_id, start_ns):
            yield event
    finally:
        metrics.running.dec()


async def _stream_turn(svc: TurnService, req: ChatRequest, customer: str, messages, t0: float, mid: str,
                       session_id: str, start_ns: int):
    metrics = svc.metrics
    created = int(time.time())
    # The role chunk goes out at once: the customer sees the reply start while the turn runs.
    yield sse_chunk(mid, created, req.model, {"role": "assistant", "content": ""}, endcloud={"message_id": mid})
    ttft = None
    t_last = None  # when the last streamed piece went out (inter-token latency)
    result = None
    try:
        if req.model == "end" and svc.engine.streams_tokens:
            # The end model's tokens go out as they are sampled: the first after prefill.
            async for item in svc.stream_end(req, customer, messages, message_id=mid, session_id=session_id):
                if isinstance(item, TurnResult):
                    result = item
                elif item:
                    yield sse_chunk(mid, created, req.model, {"content": item})
                    t_last = time.perf_counter()
                    if ttft is None:
                        ttft = t_last - t0
        else:
            # Routed (or cloud): the reply is shown once the turn is decided (docs/architecture.md,
            # "Streaming the routed model"); a takeover is announced the moment the router decides,
            # while the cloud writes, so a client can say "handing you over" instead of waiting blind.
            decided: asyncio.Queue = asyncio.Queue()
            task = asyncio.ensure_future(svc.turn(req, customer, messages, message_id=mid, session_id=session_id,
                                                  on_decision=decided.put_nowait))
            getter = asyncio.ensure_future(decided.get())
            try:
                done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done and not task.done():
                    yield sse_chunk(mid, created, req.model, {}, endcloud={"message_id": mid, "decision": getter.result()})
                result = await task
            finally:
                getter.cancel()
                if not task.done():
                    task.cancel()  # the client left: the turn (and its cloud call) stops with it
    except Exception as e:
        log.exception("streamed turn failed")
        status = 400 if isinstance(e, (DataError, ConfigError)) else 500
        msg = str(e) if status == 400 else "internal error; the server logged the details"
        metrics.requests.labels(model=req.model, answered_by="none", status=str(status)).inc()
        yield "data: " + json.dumps(error_body(msg, type="server_error" if status == 500 else "invalid_request_error")) + "\n\n"
        yield SSE_DONE
        return
    if ttft is None:
        # The whole reply is known at once (routed, cloud, or a whole-batch engine), so
        # its content events go out in one write: one send instead of one per word.
        yield "".join(sse_chunk(mid, created, req.model, {"content": piece}) for piece in stream_pieces(result.text))
        ttft = time.perf_counter() - t0
    await svc.record(result, messages[-1]["content"], t0=t0, ttft=ttft)
    tokens = int(result.usage.get("completion_tokens", 0)) if result.answered_by == "end" else 0
    if t_last is not None and tokens > 1:  # tokens streamed as sampled: the mean gap between them
        metrics.itl.observe(max(0.0, t_last - t0 - ttft) / (tokens - 1))
    svc.tracing.record_turn(req, result, start_ns=start_ns, end_ns=time.time_ns(), ttft_s=ttft)
    # the whole reply's logprobs ride on the last chunk: a streamed reply's log-probs arrive with its end
    if req.stream_options is not None and req.stream_options.include_usage:
        yield sse_chunk(mid, created, req.model, {}, result.finish_reason, logprobs=result.logprobs,
                        endcloud=result.extension(), usage=None)
        yield usage_chunk(mid, created, req.model, result.usage)
    else:
        yield sse_chunk(mid, created, req.model, {}, result.finish_reason, logprobs=result.logprobs,
                        endcloud=result.extension(), usage=result.usage)
    yield SSE_DONE
    metrics.ttft.labels(stream="true").observe(ttft)
    metrics.latency.labels(stream="true").observe(time.perf_counter() - t0)
    metrics.requests.labels(model=req.model, answered_by=result.answered_by, status="200").inc()


@router.post("/v1/completions")
async def completions(request: Request):
    """A plain completion of `prompt` on the end model (no chat template, knowledge or routing)."""
    svc = _service(request)
    caller = authenticate(request)
    body = await parse_body(request, CompletionRequest)
    if not svc.engine.completes_text:
        raise ApiError(400, f"plain completions need the continuous engine (this server's {svc.settings.engine} engine "
                            f"batches whole conversations); use /v1/chat/completions", param="prompt")
    s = svc.settings
    if body.max_tokens > s.max_new_tokens_cap:
        raise ApiError(400, f"max_tokens={body.max_tokens} is over the limit of {s.max_new_tokens_cap} "
                            "(setting max_new_tokens_cap)", param="max_tokens")
    if wait := svc.limiter.check(caller.labelled(body.user).rate_key):
        retry = max(1, int(wait + 0.999))
        raise ApiError(429, f"more than {s.rate_limit_per_minute} requests in a minute; retry after {retry} s",
                       type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": str(retry)})
    gen = await svc.engine.complete(body.prompt, max_new_tokens=body.max_tokens,
                                    temperature=s.temperature if body.temperature is None else body.temperature,
                                    top_p=s.top_p if body.top_p is None else body.top_p, seed=body.seed)
    svc.metrics.end_model(gen)
    text, stopped = cut_at_stop(gen.text, body.stop)
    finish = "stop" if stopped or gen.finish_reason != "length" else "length"
    svc.metrics.requests.labels(model="completions", answered_by="end", status="200").inc()
    return {"id": "cmpl-" + uuid.uuid4().hex[:24], "object": "text_completion", "created": int(time.time()),
            "model": body.model, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.tokens,
                      "total_tokens": gen.prompt_tokens + gen.tokens}}


@router.post("/v1/feedback")
async def feedback(request: Request):
    svc = _service(request)
    caller = authenticate(request)
    body = await parse_body(request, FeedbackRequest)
    missing = ApiError(404, f"no reply with message_id {body.message_id!r}: use the `id` (or endcloud.message_id) "
                            "of a chat completion this server sent you", code="message_not_found", param="message_id")
    owner = await asyncio.to_thread(svc.store.message_owner, body.message_id)
    # An anonymous chat's message id is its own proof (only that chat's client was sent it); a
    # named customer's reply takes that customer's token (or the admin's). Another's reply is
    # answered like a missing one: the answer says nothing about what exists.
    if owner is None or not (is_anonymous_owner(owner) or owner == caller.customer or is_admin(request)):
        raise missing
    try:
        row = await asyncio.to_thread(svc.store.add_feedback, body.message_id, body.rating, comment=body.comment,
                                      correction=body.correction, customer=caller.labelled(body.user).owner)
    except KeyError:
        raise missing from None
    except DataError as e:
        raise ApiError(400, str(e), code="invalid_rating", param="rating") from None
    svc.metrics.feedback.labels(rating=str(row["rating"])).inc()
    return {"ok": True, "feedback": row}


@router.get("/v1/models")
async def models():
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "endcloud"} for m in MODELS]}


@router.get("/v1/customers/{customer}/profile")
async def get_profile(customer: str, request: Request):
    require_owner_or_admin(request, customer)
    return (await asyncio.to_thread(_service(request).store.profile, customer)).to_json()


@router.put("/v1/customers/{customer}/profile")
async def put_profile(customer: str, request: Request):
    require_admin(request)
    if not CUSTOMER_RE.match(customer):
        raise ApiError(400, f"customer id {customer[:40]!r} must be 1-128 letters, digits or . _ @ : + -")
    body = await parse_body(request, ProfileRequest)
    prof = await asyncio.to_thread(_service(request).store.set_profile, customer, preferences=body.preferences,
                                   orders=body.orders, replace_orders=body.replace_orders)
    return prof.to_json()


@router.get("/v1/customers/{customer}/sessions")
async def customer_sessions(customer: str, request: Request):
    require_owner_or_admin(request, customer)
    return {"customer": customer, "sessions": await asyncio.to_thread(_service(request).store.sessions_of, customer)}


@router.get("/v1/sessions/{session_id}")
async def get_session(session_id: str, request: Request):
    if not is_admin(request):
        require_owner_or_admin(request, await asyncio.to_thread(_service(request).store.session_owner, session_id))
    sess = await asyncio.to_thread(_service(request).store.session, session_id)
    if sess is None:
        raise ApiError(404, f"no session {session_id!r}", code="session_not_found")
    return sess


@router.get("/metrics")
async def metrics_endpoint(request: Request):
    require_metrics_reader(request)
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
@router.get("/health")  # vLLM's and llama.cpp's name for it
async def healthz(request: Request):
    st = request.app.state
    svc = getattr(st, "service", None)
    settings = st.settings
    return {
        "status": "ok" if svc is not None else "starting",
        "adapter": st.engine.adapter if st.engine is not None else None,
        "cloud": getattr(st.teacher, "name", None),
        "knowledge": st.kb is not None,
        "db": str(settings.db_path) if settings.db_path else ":memory:",
    }


@router.get("/readyz", responses={200: {"description": "Ready: the end model has generated"},
                                  503: {"description": "Not ready: starting, warming up, or shutting down"}})
async def readyz(request: Request):
    """Readiness, for a load balancer: 200 only once the end model has generated a reply (the
    app's warm-up), 503 while it starts, warms up or shuts down. /healthz is liveness."""
    st = request.app.state
    status = getattr(st, "readiness", "starting")
    body = {"status": status, "ready": status == "ready"}
    if getattr(st, "readiness_error", None):
        body["error"] = st.readiness_error
    return JSONResponse(body, status_code=200 if status == "ready" else 503)
