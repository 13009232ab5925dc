"""One customer turn: checks, context, the end model, the router, the cloud, the record.

    request ─► limits (400 shape, 429 rate) ─► session + profile + KB snippets
            ─► end model (`AsyncEngine`: continuous batch; whole batches for engines without it)
            ─► signals (match, confidence, frustration, grounded: `serve.grounding`, placeholders filled)
            ─► Router.decide ─► end reply, or cloud takeover through the privacy gate
               (cloud error / timeout ─► the end reply is served, `cloud_failed` recorded)
            ─► score a takeover the paper's way (`PaperRule`, α and Θ from the settings)
            ─► store the turn, reply, scores and decision

`TurnService` holds what every turn needs (settings, engine, teacher, scorer, KB, store,
metrics) and knows nothing of HTTP framing: the routes turn its results into JSON or SSE.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from endcloud.errors import DataError, EndcloudError, TeacherError
from endcloud.kb.prompt import build_messages, customer_text, retrieve
from endcloud.scoring.final import PaperRule
from endcloud.serve.auth import (ANONYMOUS, CUSTOMER_RE, Caller, is_anonymous_owner, issue_session_id, order_key,
                                 visible_snippets, withhold_orders)
from endcloud.serve.grounding import ReplyGuard
from endcloud.serve.http import ApiError, RateLimiter
from endcloud.serve.metrics import Metrics
from endcloud.serve.protocol import ChatRequest
from endcloud.serve.router import MODELS, Router, Signals, is_handoff
from endcloud.serve.settings import ServeSettings
from endcloud.serve.signals import frustration
from endcloud.tasks.serving import ShopAssistant
from endcloud.text import detect_lang, estimate_tokens

log = logging.getLogger("endcloud.serve")

END_GRACE_S = 0.5  # a forced takeover whose cloud failed at the deadline still gets this long for an end reply
# What a customer reads when the takeover failed and the end model wrote nothing either.
HANDOFF = {"zh": "抱歉，这个问题需要同事进一步为您处理，我们会尽快回复您。",
           "en": "Sorry, this one needs a colleague to look into it; we will get back to you shortly."}



@dataclass
class TurnResult:
    """What one turn produced: what the customer is sent, and what is recorded."""

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


class TurnService:
    """Everything one turn needs, held by the app (`app.state.service`)."""

    def __init__(self, settings: ServeSettings, *, engine: Any, teacher: Any, scorer: Any, kb: Any, store: Any,
                 metrics: Metrics):
        self.settings, self.engine, self.teacher, self.scorer, self.kb, self.store = settings, engine, teacher, scorer, kb, store
        self.metrics = metrics
        self.router = Router.from_settings(settings)
        # what an end model says when it does not know: the offline teacher's hand-off replies,
        # which the shop reader and models tuned on the teacher's labels learned to say
        from endcloud.cloud.reference import REPLIES

        self.handoffs = tuple(REPLIES["unknown"].values())
        self.rule = PaperRule(alpha=settings.alpha, theta=settings.theta)  # eq. 1 for every takeover
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.guard = ReplyGuard(settings, kb, metrics)  # end replies: placeholders filled, facts checked (grounding)
        self.assistant = ShopAssistant(kb)  # intent + sentiment signals; "推荐一款…" answered from in-stock catalog rows
        self._sim: Any = None  # loaded on the first takeover

    # -- request checks ----------------------------------------------------------------
    def check(self, req: ChatRequest, caller: Caller) -> tuple[str, list[dict[str, str]]]:
        """(the customer the turn serves: a token-proven id or ANONYMOUS, the messages); ApiError if refused."""
        s = self.settings
        if req.model not in MODELS:
            raise ApiError(404, f"model {req.model!r} does not exist; use one of {list(MODELS)} "
                                "(endcloud routes automatically, end forces the end model, cloud forces the cloud)",
                           code="model_not_found", param="model")
        # `user` is a label the client chose, never an identity: only a customer token names a customer
        if req.user is not None and not CUSTOMER_RE.match(req.user):
            raise ApiError(400, f"user {req.user[:40]!r} must be 1-128 letters, digits or . _ @ : + -", param="user")
        customer = caller.name
        if len(req.messages) > s.max_messages:
            raise ApiError(400, f"{len(req.messages)} messages is over the limit of {s.max_messages} per request "
                                "(setting max_messages)", code="too_many_messages", param="messages")
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        for i, m in enumerate(messages):
            n = estimate_tokens(m["content"])
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
        wait = self.limiter.check(caller.labelled(req.user).rate_key)
        if wait:
            retry = max(1, int(wait + 0.999))
            who = f"customer {customer!r}" if caller.customer else "this client"
            raise ApiError(429, f"{who} sent more than {s.rate_limit_per_minute} requests in a minute "
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
        # Order numbers the caller does not own are withheld from every model and from retrieval:
        # "status of order 7024…" must not fetch a stranger's courier and tracking number.
        owned = self._owned_orders(customer)
        system_in = [m["content"] for m in withhold_orders([{"role": "system", "content": t} for t in system_in],
                                                            self.kb, owned)]
        turns = withhold_orders(turns, self.kb, owned)
        query = turns[-1]["content"]
        knowledge: list[dict[str, Any]] = []
        snippets: list = []
        if self.kb is not None:
            try:
                # the one retrieval and prompt builder training uses too (endcloud.kb.prompt)
                snippets = visible_snippets(retrieve(self.kb, turns, s.knowledge_snippets), owned)
                snippets = self.assistant.snippets(turns, snippets, s.knowledge_snippets)
            except Exception:  # retrieval must never cost the customer a reply
                log.exception("knowledge search failed")
                snippets = []
            knowledge = [{"source": sn.source, "ref": getattr(sn, "ref", ""), "score": round(float(sn.score), 4)}
                         for sn in snippets]
        # The knowledge found for this question changes every turn. At the top (in the system
        # message) it changes the start of every prompt, so no earlier turn's key/values can be
        # reused; after the question (where the end model's chat template renders a late system
        # message) the conversation before it stays the same text turn after turn.
        late = (bool(snippets) and s.knowledge_position == "after_question"
                and bool(getattr(self.engine, "late_system", False)))
        parts = list(system_in)
        if customer != ANONYMOUS:
            prof = self.store.profile(customer, max_orders=3)
            if not prof.is_empty():
                parts.append(customer_text(prof.orders, prof.preferences) or "")
        convo = build_messages(turns, snippets, system_parts=parts, late=late)
        system = convo[0]["content"] if convo and convo[0]["role"] == "system" else ""
        return convo, system, knowledge

    def _owned_orders(self, customer: str) -> set[str]:
        """The order ids (`order_key` form) a token-proven customer owns; none for ANONYMOUS."""
        if customer == ANONYMOUS:
            return set()
        return {order_key(o) for o in self.store.order_ids_of(customer)}

    # -- the turn ------------------------------------------------------------------------
    def open_session(self, req: ChatRequest, caller: Caller, session_header: str | None) -> str:
        """The session this turn belongs to. A named customer continues their own (given, or the
        latest); an anonymous caller gets a new unguessable id, or continues one it was given."""
        asked = req.session_id or session_header
        if caller.customer is not None:
            try:
                return self.store.open_session(caller.customer, asked)
            except DataError as e:
                raise ApiError(403, f"{e}; omit session_id to continue your own latest session",
                               code="session_forbidden", param="session_id") from None
        if asked is None:
            # never "the latest anonymous session": two strangers would share one conversation
            return self.store.open_session(caller.labelled(req.user).owner, issue_session_id())
        if not is_anonymous_owner(self.store.session_owner(asked)):
            raise ApiError(403, f"session {asked[:40]!r} belongs to another customer or was never issued to this "
                                "client; omit session_id to start a new one", code="session_forbidden", param="session_id")
        return asked

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
        filler = self.guard.filler(convo)  # a learned "[ORDER_1]" reaches the customer as their order number
        try:
            async for delta in stream:
                piece = filler.feed(delta + stream.ready())  # whatever else already arrived goes in the same write
                if piece:
                    yield piece
        finally:
            await stream.aclose()
        if rest := filler.flush():
            yield rest
        yield await self._answer(req, query, convo, knowledge, message_id=message_id, session_id=session_id,
                                 end=stream.result)

    async def _answer(self, req: ChatRequest, query: str, convo: list[dict], knowledge: list, *, message_id: str,
                      session_id: str, end: tuple[Any, float | None] | None = None) -> TurnResult:
        """Route and finish one turn. `end`: the end reply and its match when already generated (streamed)."""
        s, store = self.settings, self.store
        args = self._generation_args(req)

        async def end_reply():
            gen, match = await self.engine.generate_scored(convo, query=query, session=session_id, **args)
            gen.text = self.guard.fill(gen.text, convo)  # the customer's own data into learned placeholders
            return gen, match

        gen = None
        signals = Signals(frustration=frustration(query), **self.assistant.analyse(query))
        self.metrics.dialogue(intent=signals.intent, sentiment=signals.sentiment)
        if req.model != "cloud":
            gen, match = end if end is not None else await end_reply()
            signals.empty = not gen.text.strip()
            signals.handoff = is_handoff(gen.text, self.handoffs)
            signals.confidence = round(float(gen.confidence), 6)
            if match is not None:
                signals.match = round(match, 6)
            gen = self.guard.review(gen, convo, signals)  # every fact it states supported? (signals.grounded)
            if problems := self.assistant.review(query, gen.text):  # a recommendation of what cannot ship
                signals.unsupported, signals.grounded = signals.unsupported + problems, False
        decision = self.router.decide(signals, model=req.model)
        cloud_text, cloud_failed, usage_cloud, cost, takeover_ms = None, False, None, 0.0, None
        if decision.route == "cloud":
            # The customer waits for the takeover at most the deadline: the cloud (retries and
            # Retry-After sleeps included, however slowly it drips or often it says 429), and
            # then, if it failed, an end reply not written yet; past it, a hand-off message.
            limit = min(s.cloud_timeout_s, s.takeover_deadline_s)
            t_cloud = time.perf_counter()
            if self.teacher is None:
                decision.reasons.append("no cloud configured: end reply served")
                cloud_failed = True
                await asyncio.to_thread(store.record_event, "cloud_unavailable", message_id=message_id)
            else:
                try:
                    reply = await asyncio.wait_for(self.teacher.areply(convo), timeout=limit)
                    if not (reply.text or "").strip():
                        raise TeacherError("the cloud returned an empty reply")
                    cloud_text, usage_cloud, cost = reply.text, reply.usage, float(reply.cost or 0.0)
                except Exception as e:  # noqa: BLE001 — whatever the cloud does, the customer gets the end reply
                    kind = type(e).__name__
                    if isinstance(e, asyncio.TimeoutError):
                        kind = "deadline" if s.takeover_deadline_s < s.cloud_timeout_s else "timeout"
                    if not isinstance(e, (asyncio.TimeoutError, EndcloudError)):
                        log.warning("cloud takeover failed unexpectedly: %r", e)
                    cloud_failed = True
                    decision.reasons.append(f"cloud_failed: {kind}")
                    self.metrics.cloud_failures.labels(kind=kind).inc()
                    await asyncio.to_thread(store.record_event, "cloud_failed", message_id=message_id,
                                            detail={"kind": kind, "error": str(e)[:500]})
            if cloud_failed and gen is None:  # model="cloud" with the cloud down: still answer, in time
                left = limit - (time.perf_counter() - t_cloud)
                try:
                    gen, _ = await asyncio.wait_for(end_reply(), timeout=max(left, END_GRACE_S))
                except asyncio.TimeoutError:
                    decision.reasons.append("end reply not ready by the takeover deadline")
            takeover_ms = round((time.perf_counter() - t_cloud) * 1000, 1)  # what the takeover cost the customer
        answered_by = "cloud" if cloud_text is not None else "end"
        text = cloud_text if cloud_text is not None else (gen.text if gen is not None else "")
        if cloud_failed and not text.strip():  # no cloud and no end reply: never an empty answer
            text = HANDOFF.get(detect_lang(query), HANDOFF["en"])
            decision.reasons.append("handoff: neither the cloud nor the end model had a reply")
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
                    scores["final"] = round(float(self.rule.final(sim, scores["match"], scores["cloud_match"])), 6)
        if usage_cloud is not None:
            usage = {"prompt_tokens": int(usage_cloud.prompt_tokens), "completion_tokens": int(usage_cloud.completion_tokens)}
            self.metrics.cloud_tokens.labels(kind="prompt").inc(usage["prompt_tokens"])
            self.metrics.cloud_tokens.labels(kind="completion").inc(usage["completion_tokens"])
            self.metrics.cloud_cost.inc(cost)
            self.metrics.takeovers.labels(reason="forced" if req.model == "cloud" else "routed").inc()
        else:
            usage = {"prompt_tokens": sum(estimate_tokens(m["content"]) for m in convo),
                     "completion_tokens": int(gen.tokens) if gen is not None else 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        self.metrics.answered(by=answered_by)
        result = TurnResult(
            message_id=message_id, created=int(time.time()), model=req.model, text=text, answered_by=answered_by,
            scores=scores, usage=usage,
            decision=decision.to_json() | {"signals": signals.to_json()}
            | ({} if takeover_ms is None else {"takeover_ms": takeover_ms}),
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

