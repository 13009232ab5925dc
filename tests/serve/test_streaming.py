"""Continuous batching and token streaming in the server's engine.

No timing: a `GatedEngine` lets its worker run only the decode steps a test grants, so
"the first chunk arrived before the reply ended" is shown by the reply still being
unfinished (and the worker held) when the chunk is read.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from endcloud.errors import ConfigError
from endcloud.loopback import LoopbackServer
from endcloud.serve.app import create_app
from endcloud.runtime.batching import Ticket
from endcloud.runtime.async_engine import AsyncEngine, IncrementalDetokenizer, ReplyStream
from endcloud.serve.settings import ServeSettings
from endcloud.testing import ScriptedModel, ScriptedTeacher

RARE = "龘鑫"  # not in the fixture tokenizer's training text: each character is three byte tokens


class GatedEngine(AsyncEngine):
    """An AsyncEngine whose worker waits for a grant before each step (`grant(n)`, `open()`)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._cond = threading.Condition()
        self._grants = 0
        self.waiting = False  # the worker is held at the gate

    def grant(self, n: int = 1) -> None:
        with self._cond:
            self._grants += n
            self._cond.notify_all()

    def open(self) -> None:
        self.grant(10**9)

    def held(self, timeout: float = 30) -> bool:
        """Wait until the worker is held at the gate (it used up its grants)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.waiting, timeout)

    def _build_scheduler(self, variant):
        st = super()._build_scheduler(variant)
        step = st.step

        def gated():
            with self._cond:
                while self._grants == 0:
                    self.waiting = True
                    self._cond.notify_all()
                    self._cond.wait()
                self.waiting = False
                self._grants -= 1
            return step()

        st.step = gated
        return st


def conv(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


SAMPLED = {"temperature": 1.0, "top_p": 1.0}  # random weights: greedy replies repeat one special token (no text)


@pytest.fixture(scope="module")
def long_question(end_model):
    """(question, seed, reference Generation): a seeded 12-token reply with text from its first tokens."""
    tok = end_model.tokenizer
    for seed in range(20):
        for q in ("Do you ship today?", "几天发货？", "hello", "可以用优惠券吗？"):
            g = end_model.generate([conv(q)], max_new_tokens=12, seed=seed, **SAMPLED)[0]
            ids = tok(g.text, add_special_tokens=False)["input_ids"]
            if g.tokens == 12 and len(g.text) > 4 and ids:
                return q, seed, g
    pytest.skip("no fixture question with a full-length sampled reply")


# ---- the detokenizer ------------------------------------------------------------------
def test_detokenizer_never_splits_a_multibyte_character(tiny_tokenizer):
    text = f"亲，{RARE}毛巾 ok {RARE}"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) - 2  # the rare characters really are split into byte pieces
    assert "\ufffd" in tiny_tokenizer.decode(ids[:3] + ids[3:4])  # a lone byte piece decodes to U+FFFD
    d = IncrementalDetokenizer(tiny_tokenizer)
    deltas = [d.push([i]) for i in ids]
    final = tiny_tokenizer.decode(ids, skip_special_tokens=True).strip()
    deltas.append(d.finish(final))
    assert all("\ufffd" not in x for x in deltas)
    assert "".join(deltas) == final == text
    assert sum(1 for x in deltas if x) > 4  # streamed in pieces, not held to the end


def test_detokenizer_strips_like_the_final_text(tiny_tokenizer):
    ids = tiny_tokenizer("  hello  world  ", add_special_tokens=False)["input_ids"]
    d = IncrementalDetokenizer(tiny_tokenizer)
    out = "".join(d.push([i]) for i in ids)
    final = tiny_tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert out + d.finish(final) == final == "hello  world"


def test_the_fast_text_decoder_is_the_tokenizers_decode(tiny_tokenizer, end_model):
    """The backend call the engine uses says what `decode(ids, skip_special_tokens=True)` says,
    special ids and byte pieces included; any other tokenizer keeps its own decode."""
    import random

    from endcloud.runtime.async_engine import text_decoder

    rng = random.Random(0)
    for tok in (tiny_tokenizer, end_model.tokenizer):
        fast = text_decoder(tok)
        assert fast.__code__ is not text_decoder(SimpleNamespace(decode=None)).__code__  # the backend path
        for _ in range(200):
            ids = [rng.randrange(len(tok)) for _ in range(rng.randrange(1, 40))]
            assert fast(ids) == tok.decode(ids, skip_special_tokens=True)
    calls = []  # anything else: the tokenizer's own decode
    fake = SimpleNamespace(decode=lambda ids, skip_special_tokens: calls.append(ids) or "x")
    assert text_decoder(fake)([1, 2]) == "x" and calls == [[1, 2]]


# ---- the engine -----------------------------------------------------------------------
def test_engine_picks_continuous_batching_for_the_in_process_model(end_model, scripted_model):
    assert AsyncEngine(end_model).mode == "continuous" and AsyncEngine(end_model).streams_tokens
    assert AsyncEngine(end_model, batching="static").mode == "static"
    assert AsyncEngine(scripted_model).mode == "static"
    with pytest.raises(ConfigError, match="batching"):
        AsyncEngine(scripted_model, batching="continuous")
    with pytest.raises(ConfigError, match="batching"):
        AsyncEngine(end_model, batching="iteration")


def test_continuous_replies_equal_generate(end_model):
    qs = ["几天发货？", "Do you ship today?", "在吗", "可以用优惠券吗？", "hello"]
    # a seeded request gets what generate gives that conversation alone with the same seed
    ref = [end_model.generate([conv(q)], max_new_tokens=10, seed=i, **SAMPLED)[0] for i, q in enumerate(qs)]
    engine = AsyncEngine(end_model, max_batch=2, window_ms=0)

    async def main():
        engine.start()
        try:
            return await asyncio.gather(*(engine.generate(conv(q), max_new_tokens=10, seed=i, **SAMPLED)
                                          for i, q in enumerate(qs)))
        finally:
            await engine.stop()

    out = asyncio.run(main())
    assert [g.text for g in out] == [g.text for g in ref] and any(g.text for g in ref)
    assert [g.tokens for g in out] == [g.tokens for g in ref]
    for a, b in zip(out, ref):
        assert a.confidence == pytest.approx(b.confidence, rel=1e-4)
    st = engine.stats()
    assert st["admitted"] == len(qs) and st["occupancy"] > 1


def test_a_failing_step_fails_its_requests_and_the_engine_recovers(end_model):
    class Flaky(AsyncEngine):
        builds = 0

        def _build_scheduler(self, variant):
            st = super()._build_scheduler(variant)
            Flaky.builds += 1
            if Flaky.builds == 1:
                def boom():
                    raise RuntimeError("kernel fault")

                st.step = boom
            return st

    engine = Flaky(end_model, window_ms=0)
    ref = end_model.generate([conv("hi")], max_new_tokens=4, seed=0, **SAMPLED)[0]

    async def main():
        engine.start()
        try:
            with pytest.raises(RuntimeError, match="kernel fault"):
                await engine.generate(conv("hi"), max_new_tokens=4, seed=0, **SAMPLED)
            return await engine.generate(conv("hi"), max_new_tokens=4, seed=0, **SAMPLED)
        finally:
            await engine.stop()

    g = asyncio.run(main())
    assert Flaky.builds == 2 and g.text == ref.text and g.tokens == ref.tokens


def test_stream_delivers_tokens_before_the_reply_ends(end_model, long_question):
    q, seed, ref = long_question
    engine = GatedEngine(end_model, window_ms=0)

    async def main():
        engine.start()
        try:
            stream = engine.stream_scored(conv(q), query=q, max_new_tokens=12, seed=seed, **SAMPLED)
            engine.grant(1)  # admit + prefill + one decode step: two of twelve tokens
            first = await asyncio.wait_for(stream.__anext__(), 30)
            while not first:
                engine.grant(1)
                first = await asyncio.wait_for(stream.__anext__(), 30)
            assert await asyncio.to_thread(engine.held)
            assert stream.result is None and not stream.finished  # the reply is not over
            engine.open()
            rest = [d async for d in stream]
            return first, rest, stream
        finally:
            engine.open()
            await engine.stop()

    first, rest, stream = asyncio.run(main())
    gen, match = stream.result
    assert first + "".join(rest) == stream.text == gen.text == ref.text
    assert match is None or 0 <= match <= 1


def test_a_swap_lets_the_reply_in_flight_finish_on_its_adapter(end_model, tiny_base_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    adapter = tmp_path / "lora"
    pm = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base_dir),
                        LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"],
                                   init_lora_weights=False, task_type="CAUSAL_LM"))
    pm.save_pretrained(adapter)
    q = "Do you ship today?"
    base_ref = end_model.generate([conv(q)], max_new_tokens=10, seed=3, **SAMPLED)[0].text
    engine = GatedEngine(end_model, window_ms=0)
    try:
        async def main():
            engine.start()
            try:
                a = asyncio.ensure_future(engine.generate(conv(q), max_new_tokens=10, seed=3, **SAMPLED))
                engine.grant(1)
                await asyncio.to_thread(engine.held)  # a is in flight on the base
                await asyncio.to_thread(engine.swap_adapter, adapter)
                b = asyncio.ensure_future(engine.generate(conv(q), max_new_tokens=10, seed=3, **SAMPLED))
                engine.open()
                return await a, await b
            finally:
                engine.open()
                await engine.stop()

        ga, gb = asyncio.run(main())
        lora_ref = end_model.generate([conv(q)], max_new_tokens=10, seed=3, **SAMPLED)[0].text
    finally:
        engine.swap_adapter(None)
    assert ga.adapter is None and ga.text == base_ref
    assert gb.adapter == str(adapter) and gb.text == lora_ref
    assert base_ref != lora_ref  # the adapter really changes the reply


# ---- the wire ---------------------------------------------------------------------------
def test_sse_streams_the_end_reply_as_it_is_generated(end_model, long_question, tmp_path):
    q, seed, ref = long_question
    engine = GatedEngine(end_model, window_ms=0)
    app = create_app(ServeSettings(db_path=tmp_path / "endcloud.db", min_match=0.0), engine=engine)
    lines: queue.Queue = queue.Queue()
    try:
        with LoopbackServer(app) as srv:
            def read():
                body = {"model": "end", "stream": True, "user": "s1", "max_tokens": 12, "seed": seed,
                        "messages": conv(q), **SAMPLED}
                with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=60) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            lines.put(line[6:])

            t = threading.Thread(target=read, daemon=True)
            t.start()
            content = []
            got_finish_early = False
            engine.grant(1)
            while not content:
                try:
                    data = lines.get(timeout=5)
                except queue.Empty:
                    engine.grant(1)
                    continue
                chunk = json.loads(data)
                got_finish_early |= chunk["choices"][0]["finish_reason"] == "stop"
                if chunk["choices"][0]["delta"].get("content"):
                    content.append(chunk["choices"][0]["delta"]["content"])
            assert engine.held() and not got_finish_early  # a token reached the client mid-reply
            engine.open()
            t.join(60)
            rest = []
            while not lines.empty():
                rest.append(lines.get())
            assert rest[-1] == "[DONE]"
            chunks = [json.loads(x) for x in rest[:-1]]
            final = chunks[-1]
            stored = app.state.store.reply(final["endcloud"]["message_id"])
        content += [c["choices"][0]["delta"].get("content", "") for c in chunks]
        # max_tokens=12 cut the reply unless the model stopped by itself
        assert final["choices"][0]["finish_reason"] == ("length" if final["usage"]["completion_tokens"] == 12 else "stop")
        assert final["endcloud"]["answered_by"] == "end"
        assert "".join(content) == ref.text == stored["served_text"]
    finally:
        engine.open()


class TokenScriptEngine(AsyncEngine):
    """Streams a fixed token sequence through the real Ticket/ReplyStream path (no model)."""

    def __init__(self, tokenizer, ids: list[int], **kw):
        model = SimpleNamespace(tokenizer=tokenizer, swap_adapter=lambda d: None,
                                generate=lambda convos, **k: [self._gen() for _ in convos])
        super().__init__(model, **kw)
        self.ids = ids
        self.streams_tokens = True

    def _gen(self):
        from endcloud.runtime.protocol import Generation

        text = self.model.tokenizer.decode(self.ids, skip_special_tokens=True).strip()
        return Generation(text=text, confidence=0.5, tokens=len(self.ids), logprob=-0.7)

    def stream_scored(self, messages, *, query, **kw) -> ReplyStream:
        loop = asyncio.get_running_loop()
        ticket = Ticket(SimpleNamespace(cancel=lambda: None), None, True, loop)

        async def feed():
            for i in self.ids:
                ticket._push(i)
                await asyncio.sleep(0.001)
            ticket._end((self._gen(), 0.9), None)

        asyncio.ensure_future(feed())
        return ReplyStream(self, ticket)


def _streamed_lines(tokenizer, text: str, tmp_path, user: str):
    """(non-empty SSE lines, the stored reply) of one model="end" reply that streams `text`'s ids."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    app = create_app(ServeSettings(db_path=tmp_path / "endcloud.db", min_match=0.0),
                     engine=TokenScriptEngine(tokenizer, ids))
    with TestClient(app) as c:
        with c.stream("POST", "/v1/chat/completions", json={"model": "end", "stream": True, "user": user,
                                                            "messages": conv("hi")}) as r:
            lines = [x for x in r.iter_lines() if x]
        last = json.loads(lines[-2][6:])  # the event before [DONE] carries the message id
        stored = app.state.store.reply(last["endcloud"]["message_id"])
    return lines, stored


def test_sse_multibyte_characters_arrive_whole(tiny_tokenizer, tmp_path):
    text = f"亲{RARE}，{RARE}毛巾"
    lines, stored = _streamed_lines(tiny_tokenizer, text, tmp_path, "mb")
    events = [json.loads(x[6:]) for x in lines if x.startswith("data: ") and x != "data: [DONE]"]
    pieces = [e["choices"][0]["delta"].get("content") for e in events if e["choices"][0]["delta"].get("content")]
    assert len(pieces) > 2 and all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text == stored["served_text"]
    assert events[-1]["endcloud"]["scores"]["match"] == 0.9  # the engine's match, as for a whole reply


def test_sse_events_stay_one_line_whatever_the_text(tiny_tokenizer, tmp_path):
    """U+0085, U+2028, U+2029 are line ends to clients that split like str.splitlines (httpx)."""
    text = "a\u2028b\x85c\u2029d 亲"
    lines, _ = _streamed_lines(tiny_tokenizer, text, tmp_path, "nl")
    assert all(x.startswith("data: ") for x in lines)
    events = [json.loads(x[6:]) for x in lines if x != "data: [DONE]"]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == text


def test_routed_streaming_waits_for_the_whole_end_reply(scripted_model, tmp_path):
    """model=endcloud never streams the end draft: routing needs all of it first."""
    app = create_app(ServeSettings(db_path=tmp_path / "endcloud.db", min_match=0.0),
                     engine=TokenScriptEngine(None, []), teacher=ScriptedTeacher("Cloud: 48小时内发货"))
    app.state.engine.streams_tokens = True
    calls = []
    app.state.engine.stream_scored = lambda *a, **k: calls.append(1)  # must not be used for endcloud
    app.state.engine.generate_scored = _fixed_reply("我不知道")
    with TestClient(app) as c:
        with c.stream("POST", "/v1/chat/completions", json={
                "model": "endcloud", "stream": True, "user": "r",
                "messages": conv("This is ridiculous, I want a real person!!")}) as r:
            events = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: ") and x != "data: [DONE]"]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert not calls and text == "Cloud: 48小时内发货"
    assert events[-1]["endcloud"]["answered_by"] == "cloud"


def _fixed_reply(text: str):
    from endcloud.runtime.protocol import Generation

    async def generate_scored(messages, *, query, **kw):
        return Generation(text=text, confidence=0.9, tokens=3, logprob=-0.1), 0.5

    return generate_scored


# ---- settings ---------------------------------------------------------------------------
def test_batching_settings_are_validated():
    assert ServeSettings().batching == "auto" and ServeSettings().torch_threads == 0
    assert ServeSettings().resolved_torch_threads() == max(1, (os.cpu_count() or 2) - 1)  # one core for uvicorn
    with pytest.raises(ConfigError, match="ENDCLOUD_SERVE_BATCHING"):
        ServeSettings(batching="dynamic")
    with pytest.raises(ConfigError, match="prefix_cache_mb"):
        ServeSettings(prefix_cache_mb=-1)
    with pytest.raises(ConfigError, match="prefill_chunk_tokens"):
        ServeSettings(prefill_chunk_tokens=0)
    s = ServeSettings.from_env({"ENDCLOUD_SERVE_BATCHING": "static", "ENDCLOUD_SERVE_TORCH_THREADS": "2"})
    assert s.batching == "static" and s.torch_threads == 2
    engine = AsyncEngine.from_settings(ScriptedModel(), s)
    assert engine.mode == "static" and engine.threads is None  # no torch threads for a model without torch


# ---- prompts that continue the conversation's ids ---------------------------------------
def test_a_conversation_continues_its_own_ids_into_the_prefix_cache(end_model, tmp_path):
    """Turn 2's prompt starts with turn 1's prompt + the ids the model sampled, so the prefix
    cache supplies all of them (a re-tokenized reply would miss from the reply on)."""
    from endcloud.runtime.scheduler import BLOCK

    engine = AsyncEngine(end_model, window_ms=0)
    app = create_app(ServeSettings(db_path=tmp_path / "endcloud.db", min_match=0.0), engine=engine)

    def say(c, user, text, seed, session=None):
        body = {"model": "end", "user": user, "max_tokens": 24, "seed": seed, "messages": conv(text), **SAMPLED}
        r = c.post("/v1/chat/completions", json=body | ({"session_id": session} if session else {}))
        assert r.status_code == 200, r.text
        return r.json()

    with TestClient(app) as c:
        for seed in range(16):  # a random-weight reply may begin with whitespace: its text is stripped, no continuation
            first = say(c, f"u{seed}", "Do you ship today?", seed)
            before = engine.stats()
            say(c, f"u{seed}", "可以用优惠券吗？", seed, first["endcloud"]["session_id"])  # the anonymous chat's own session
            after = engine.stats()
            if after["prompts_continued"] > before["prompts_continued"]:
                break
        else:
            pytest.fail("no conversation continued its ids")
    p1 = end_model.prompt(conv("Do you ship today?")).ids
    fed = len(p1) + first["usage"]["completion_tokens"] - 1  # the last sampled id is never fed
    cached = after["cached_tokens"] - before["cached_tokens"]
    assert cached >= fed // BLOCK * BLOCK > len(p1) // BLOCK * BLOCK
