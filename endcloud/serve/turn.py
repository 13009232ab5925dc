"""One customer turn: checks, context, the end model, the router, the cloud, the record.

    request ─► limits (400 shape, 429 rate) ─► session + profile + KB snippets
            ─► end model (`AsyncEngine`: continuous batch; whole batches for engines without it)
            ─► signals (match, confidence, frustration, grounded, novel: `serve.grounding`, placeholders filled)
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
from endcloud.serve.protocol import ChatRequest, StopFilter, cut_at_stop
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
    finish_reason: str = "stop"  # "length" where max_tokens cut the end reply; "stop" otherwise
    logprobs: dict[str, Any] | None = None  # OpenAI's {"content": [...]}: the end reply's tokens, when asked
    timings: dict[str, Any] = field(default_factory=dict)  # wall-clock ns of the end draft and the cloud call (traces)

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
                 metrics: Metrics, glue: Any = None):
        self.settings, self.engine, self.teacher, self.scorer, self.kb, self.store = settings, engine, teacher, scorer, kb, store
        self.metrics = metrics
        self.router = Router.from_settings(settings)
        # what an end model says when it does not know: the offline teacher's hand-off replies,
        # which the shop reader and models tuned on the teacher's labels learned to say
        from endcloud.cloud.reference import REPLIES

        self.handoffs = tuple(REPLIES["unknown"].values())
        self.rule = PaperRule(alpha=settings.alpha, theta=settings.theta)  # eq. 1 for every takeover
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        # end replies: placeholders filled, facts checked (grounding), text checked against `glue` (novelty)
        self.guard = ReplyGuard(settings, kb, metrics, glue=glue)
        self.assistant = ShopAssistant(kb)  # intent + sentiment signals; "推荐一款…" answered from in-stock catalog rows
        self._sim: Any = None  # loaded on the first takeover
        from endcloud.serve.telemetry import Tracing, json_logging

        if getattr(settings, "json_logs", False):
            json_logging()
        self.tracing = Tracing.from_settings(settings)  # off (no cost) unless otlp_endpoint is set
        inner = teacher.unwrap() if hasattr(teacher, "unwrap") else teacher
        self._cloud_names = (getattr(inner, "name", "cloud"), getattr(inner, "model", None) or getattr(inner, "name", "cloud"))
        watch_sources(metrics, engine=engine, teacher=teacher, engine_kind=settings.engine, db_path=settings.db_path)
        self.canary: Any = None  # serve.canary.CanaryController when an experiment may run (set by endcloud.compose)

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
        if req.top_logprobs:
            raise ApiError(400, f"top_logprobs={req.top_logprobs} is not supported by the {s.engine} engine (it keeps "
                                "the sampled token's log-prob only); ask logprobs: true without top_logprobs",
                           param="top_logprobs")
        if req.logprobs and req.model == "cloud":
            raise ApiError(400, "logprobs are the end model's; the cloud's replies carry none: use model 'end' or "
                                "'endcloud' (a turn the cloud answers has logprobs null)", param="logprobs")
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
                   session_id: str, on_decision: Any = None) -> TurnResult:
        # Inline, not in a worker thread: these are sub-millisecond SQLite reads and WAL
        # appends without fsync (synchronous=NORMAL), and a thread hop per request spreads
        # the arrivals of customers who write at the same time over more than one batch window.
        convo, query, knowledge = self._prepare(customer, session_id, messages)
        return await self._answer(req, query, convo, knowledge, message_id=message_id, session_id=session_id,
                                  on_decision=on_decision)

    def _prepare(self, customer: str, session_id: str, messages: list[dict[str, str]]) -> tuple[list[dict], str, list]:
        """(conversation for the models, the customer's question, knowledge refs); stores the question."""
        convo, _, knowledge = self._context(customer, session_id, messages)
        query = messages[-1]["content"]
        self.store.add_message(session_id, "user", query)
        if self.canary is not None:
            self.canary.assign(customer, session_id)  # the session's arm of a running canary or A/B test
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
        timings = {"end_start": time.time_ns()}
        stream = self.engine.stream_scored(convo, query=query, session=session_id, **self._generation_args(req),
                                           **self._arm(session_id))
        filler = self.guard.filler(convo)  # a learned "[ORDER_1]" reaches the customer as their order number
        stops = StopFilter(req.stop)  # past a stop sequence nothing is shown (the model runs to its end)
        try:
            async for delta in stream:
                piece = stops.feed(filler.feed(delta + stream.ready()))  # whatever else arrived goes in the same write
                if piece:
                    yield piece
        finally:
            await stream.aclose()
        if rest := stops.feed(filler.flush()) + stops.flush():
            yield rest
        timings["end_stop"] = time.time_ns()
        yield await self._answer(req, query, convo, knowledge, message_id=message_id, session_id=session_id,
                                 end=stream.result, timings=timings)

    async def _answer(self, req: ChatRequest, query: str, convo: list[dict], knowledge: list, *, message_id: str,
                      session_id: str, end: tuple[Any, float | None] | None = None,
                      on_decision: Any = None, timings: dict[str, Any] | None = None) -> TurnResult:
        """Route and finish one turn. `end`: the end reply and its match when already generated (streamed);
        `on_decision(decision_json)`: called the moment the router hands a turn to the cloud (before the
        cloud answers), so a streamed reply can say so early."""
        s, store = self.settings, self.store
        args = self._generation_args(req)

        async def end_reply():
            gen, match = await self.engine.generate_scored(convo, query=query, session=session_id, **args,
                                                           **self._arm(session_id))
            gen.text = self.guard.fill(gen.text, convo)  # the customer's own data into learned placeholders
            return gen, match

        gen = None
        stopped = False
        timings = {} if timings is None else timings
        signals = Signals(frustration=frustration(query), **self.assistant.analyse(query))
        self.metrics.dialogue(intent=signals.intent, sentiment=signals.sentiment)
        if req.model != "cloud":
            if end is None:
                timings["end_start"] = time.time_ns()
                gen, match = await end_reply()
                timings["end_stop"] = time.time_ns()
            else:
                gen, match = end
            self.metrics.end_model(gen)
            if getattr(gen, "prompt_tokens", None) is not None:
                timings["end_usage"] = {"input_tokens": int(gen.prompt_tokens), "output_tokens": int(gen.tokens)}
            # the stop sequences cut the draft before it is checked: the router and the grounding
            # check see what the customer would be shown (the match is the whole draft's)
            gen.text, stopped = cut_at_stop(gen.text, req.stop)
            signals.empty = not gen.text.strip()
            signals.handoff = is_handoff(gen.text, self.handoffs)
            signals.confidence = round(float(gen.confidence), 6)
            if match is not None:
                signals.match = round(match, 6)
            gen = self.guard.review(gen, convo, signals)  # every fact it states supported? anything novel? (.grounded, .novel)
            if problems := self.assistant.review(query, gen.text):  # a recommendation of what cannot ship
                signals.unsupported, signals.grounded = signals.unsupported + problems, False
        decision = self.router.decide(signals, model=req.model)
        if on_decision is not None and decision.route == "cloud":
            on_decision(decision.to_json())
        cloud_text, cloud_failed, usage_cloud, cost, takeover_ms = None, False, None, 0.0, None
        if decision.route == "cloud":
            # The customer waits for the takeover at most the deadline: the cloud (retries and
            # Retry-After sleeps included, however slowly it drips or often it says 429), and
            # then, if it failed, an end reply not written yet; past it, a hand-off message.
            limit = min(s.cloud_timeout_s, s.takeover_deadline_s)
            t_cloud = time.perf_counter()
            timings["cloud_start"] = time.time_ns()
            timings["cloud_provider"], timings["cloud_model"] = self._cloud_names
            self.metrics.cloud_running.inc()
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
                    cloud_text, _ = cut_at_stop(cloud_text, req.stop)
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
            timings["cloud_stop"] = time.time_ns()
            self.metrics.cloud_running.dec()
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
        elif gen is not None and getattr(gen, "prompt_tokens", None) is not None:
            # the end model's own tokenizer counted both (and the prefix cache's share of the prompt)
            usage = {"prompt_tokens": int(gen.prompt_tokens), "completion_tokens": int(gen.tokens),
                     "prompt_tokens_details": {"cached_tokens": int(getattr(gen, "cached_tokens", 0) or 0)}}
        else:  # an engine that does not count its prompt (a test double): an estimate
            usage = {"prompt_tokens": sum(estimate_tokens(m["content"]) for m in convo),
                     "completion_tokens": int(gen.tokens) if gen is not None else 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if answered_by == "cloud":
            finish = "stop"
        else:
            finish = "length" if (gen is not None and not stopped and getattr(gen, "finish_reason", None) == "length") \
                else "stop"
        logprobs = None
        if req.logprobs and answered_by == "end" and gen is not None:
            logprobs = self._logprobs(gen, text, stopped)
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
            finish_reason=finish, logprobs=logprobs, timings=timings,
        )
        return result

    def _logprobs(self, gen: Any, text: str, stopped: bool) -> dict[str, Any] | None:
        """OpenAI's `logprobs` of an end reply: each sampled token, its text and log-prob (the
        tokens past a stop sequence left out). None where the engine kept no per-token log-probs."""
        lps = getattr(gen, "token_logprobs", None)
        if lps is None:
            return None
        texts = getattr(gen, "token_texts", None)
        if texts is None:
            tok = getattr(getattr(self.engine, "model", None), "tokenizer", None)
            ids = getattr(gen, "token_ids", None)
            if tok is None or ids is None:
                return None
            texts = [tok.decode([i], skip_special_tokens=True) for i in ids]
        if stopped:  # keep the tokens that wrote the text shown (the first that reaches its end included)
            n, seen = 0, ""
            while n < len(texts) and len(seen.strip()) < len(text):
                seen += texts[n]
                n += 1
            texts, lps = texts[:n], lps[:n]
        return {"content": [{"token": t, "logprob": round(float(lp), 6), "bytes": list(t.encode("utf-8")),
                             "top_logprobs": []} for t, lp in zip(texts, lps)], "refusal": None}

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

    def _arm(self, session_id: str) -> dict[str, Any]:
        """{"variant": label} when this session's turns run on an experiment's candidate, else {}."""
        label = self.canary.label_for(session_id) if self.canary is not None else None
        return {"variant": label} if label is not None else {}

    async def record(self, result: TurnResult, query: str, *, t0: float, ttft: float | None) -> None:
        from endcloud.store.conversations import ServedReply

        # inline: a WAL append without fsync (synchronous=NORMAL), see `turn`
        latency_ms = (time.perf_counter() - t0) * 1000
        self.store.record_reply(ServedReply(
            message_id=result.message_id, session_id=result.session_id, query=query, answered_by=result.answered_by,
            model=result.model, end_text=result.end_text, cloud_text=result.cloud_text, served_text=result.text,
            scores=result.scores, decision=result.decision, cloud_failed=result.cloud_failed,
            latency_ms=latency_ms, ttft_ms=None if ttft is None else ttft * 1000,
            cloud_tokens=result.cloud_tokens, cloud_cost=result.cloud_cost, adapter=result.adapter,
        ))
        if self.canary is not None:
            try:
                self.canary.observe(result, latency_ms)  # the arm's online metrics (queued; the canary thread writes)
            except Exception:  # measuring an experiment must never cost a customer her reply
                log.exception("canary observation failed")


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



def watch_sources(metrics: Metrics, *, engine: Any, teacher: Any, engine_kind: str, db_path: Any) -> None:
    """Metrics whose values live in other parts, read at each scrape: what is served, the
    privacy gate's redactions and refusals, the cloud budget left, the online loop's rounds."""
    def adapter() -> None:
        metrics.adapter_info.clear()
        metrics.adapter_info.labels(adapter=str(getattr(engine, "adapter", None) or "base"), engine=engine_kind).set(1)

    metrics.on_render.append(adapter)
    gate = teacher
    while gate is not None and type(gate).__name__ != "PrivacyGate":
        gate = getattr(gate, "inner", None)
    if gate is not None:
        metrics.watch("counter", "endcloud_redactions", "Personal data replaced in what went to the cloud, by type",
                      lambda: dict(gate.redactions), label="type")
        metrics.watch("counter", "endcloud_privacy_gate_refusals", "Cloud requests the privacy gate refused to send",
                      lambda: gate.refusals)
    inner = teacher.unwrap() if hasattr(teacher, "unwrap") else teacher
    ledger = getattr(inner, "ledger", None)
    if ledger is not None and getattr(ledger, "budget", None) is not None:
        metrics.watch("gauge", "endcloud_cloud_budget_remaining_usd", "The cloud budget cap minus what was spent (USD)",
                      lambda: max(0.0, float(ledger.budget) - float(ledger.spent())))
    if db_path is not None:
        metrics.watch("counter", "endcloud_evolve_rounds", "Online-loop rounds by outcome (promoted, rejected, failed)",
                      lambda: evolve_round_outcomes(db_path), label="outcome")


def evolve_round_outcomes(db_path: Any) -> dict[str, int] | None:
    """Finished rounds of the online loop by outcome, from the workspace database (whichever
    process ran them); None where the loop never ran here."""
    from endcloud.store.labels import round_outcomes

    return round_outcomes(db_path)
