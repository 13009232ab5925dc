"""The OpenAI-compatible client: retries, Retry-After, timeouts, parse errors, limits, cost."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from endcloud.cloud import CostLedger, OpenAITeacher, PriceTable, RateLimiter
from endcloud.errors import BudgetExceeded, ConfigError, TeacherError, TeacherParseError, TeacherStatusError, TeacherTimeout
from endcloud.testing import FaultyCloud

HI = [{"role": "user", "content": "hi"}]


def ok_body(text: str = "Hello!", usage: dict | None = None) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "model": "m", "usage": usage or {"prompt_tokens": 10, "completion_tokens": 3}}


def scripted(responses: list[httpx.Response]):
    """A MockTransport answering from a list; records the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses[min(len(seen) - 1, len(responses) - 1)]

    return httpx.MockTransport(handler), seen


def make(transport, **kw) -> OpenAITeacher:
    kw.setdefault("backoff", 0.001)
    return OpenAITeacher(require_gate=False, base_url="http://cloud.test/v1", model="m", api_key="sk-test", transport=transport, **kw)


def test_retries_429_honouring_retry_after_then_succeeds():
    transport, seen = scripted([
        httpx.Response(429, headers={"retry-after-ms": "50"}, json={"error": "slow down"}),
        httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "busy"}),
        httpx.Response(200, json=ok_body("亲，在的")),
    ])
    t = make(transport)
    r = t.reply(HI)
    assert r.text == "亲，在的" and r.source == "cloud" and r.usage.prompt_tokens == 10
    assert len(seen) == 3 and t.stats.retries == 2
    assert t.stats.slept_s >= 0.05  # waited at least what the 429 asked
    req = seen[0]
    assert req.url.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    body = json.loads(req.content)
    assert body["model"] == "m" and body["messages"] == HI and body["max_tokens"] > 0


def test_gives_up_after_max_retries_with_status_error():
    transport, seen = scripted([httpx.Response(500, json={"error": "boom"})])
    with pytest.raises(TeacherStatusError) as e:
        make(transport, max_retries=2).reply(HI)
    assert e.value.status == 500 and len(seen) == 3


def test_client_errors_are_not_retried_and_say_what_to_do():
    transport, seen = scripted([httpx.Response(401, json={"error": "bad key"})])
    with pytest.raises(TeacherStatusError, match="ENDCLOUD_CLOUD_API_KEY"):
        make(transport).reply(HI)
    assert len(seen) == 1


@pytest.mark.parametrize("resp", [
    httpx.Response(200, content=b'{"choices": [{"message": {"role": "assis'),
    httpx.Response(200, json={"choices": []}),
    httpx.Response(200, json=ok_body("   ")),
    httpx.Response(200, json={"choices": [{"message": {"content": None}}]}),
], ids=["truncated-json", "no-choices", "blank", "null-content"])
def test_empty_or_malformed_reply_is_an_error_never_a_label(resp):
    transport, seen = scripted([resp])
    with pytest.raises(TeacherParseError):
        make(transport, max_retries=1).reply(HI)
    assert len(seen) == 2  # retried once, then gave up


def test_malformed_then_good_is_recovered():
    transport, _ = scripted([httpx.Response(200, content=b"{oops"), httpx.Response(200, json=ok_body("fine"))])
    assert make(transport).reply(HI).text == "fine"


def test_timeout_against_a_hanging_server_is_bounded():
    with FaultyCloud(ptimeout=1.0, hang=5.0) as cloud:
        t = OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="m", api_key="k", timeout=0.3, max_retries=1, backoff=0.01)
        with pytest.raises(TeacherTimeout, match="0.3s"):
            t.reply(HI)
        assert len(cloud.requests) == 2


def test_slow_drip_cannot_outlast_the_whole_attempt_deadline():
    # Each 16-byte piece arrives well within a per-read timeout; only a whole-attempt
    # deadline stops a server that drips forever.
    with FaultyCloud(drip=0.05) as cloud:
        t = OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="m", api_key="k", timeout=0.4, max_retries=0)
        with pytest.raises(TeacherTimeout):
            t.reply(HI)


def test_real_http_faults_all_recovered(cloud):
    cloud.script = ["429", "500", "malformed", "empty", "ok"]
    cloud.retry_after = 0.01
    t = OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="m", api_key="k", backoff=0.001, max_retries=4)
    r = t.reply([{"role": "user", "content": "你好"}])
    assert r.text == "Reply: 你好"
    assert cloud.outcomes == ["429", "500", "malformed", "empty", "ok"]
    assert t.stats.retries == 4 and t.stats.failures == 0


def test_concurrency_limit_is_respected():
    with FaultyCloud(latency=0.1) as cloud:
        t = OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="m", api_key="k", concurrency=3)

        async def many():
            try:
                return await asyncio.gather(*(t.areply([{"role": "user", "content": f"q{i}"}]) for i in range(10)))
            finally:
                await t.aclose()

        replies = asyncio.run(many())
        assert [r.text for r in replies] == [f"Reply: q{i}" for i in range(10)]
        assert cloud.max_inflight == 3


def test_missing_env_names_the_variable(monkeypatch):
    monkeypatch.setenv("ENDCLOUD_CLOUD_BASE_URL", "http://x/v1")
    monkeypatch.setenv("ENDCLOUD_CLOUD_MODEL", "gemini-1.5-pro")
    monkeypatch.delenv("ENDCLOUD_CLOUD_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ENDCLOUD_CLOUD_API_KEY"):
        OpenAITeacher.from_env()
    monkeypatch.setenv("ENDCLOUD_CLOUD_API_KEY", "sk-secret")
    monkeypatch.setenv("ENDCLOUD_CLOUD_TIMEOUT", "abc")
    with pytest.raises(ConfigError, match="ENDCLOUD_CLOUD_TIMEOUT"):
        OpenAITeacher.from_env()
    monkeypatch.setenv("ENDCLOUD_CLOUD_TIMEOUT", "12")
    t = OpenAITeacher.from_env()
    assert t.timeout == 12 and t.model == "gemini-1.5-pro" and "sk-secret" not in repr(t)


@pytest.mark.parametrize("kw, flag", [({"timeout": float("inf")}, "timeout"), ({"max_retries": -1}, "max_retries"),
                                      ({"concurrency": 0}, "concurrency"), ({"base_url": "cloud.test"}, "ENDCLOUD_CLOUD_BASE_URL")])
def test_bad_settings_fail_at_start_naming_the_setting(kw, flag):
    args = {"base_url": "http://cloud.test/v1", "model": "m", "api_key": "k", **kw}
    with pytest.raises(ConfigError, match=flag):
        OpenAITeacher(require_gate=False, **args)


def test_cost_ledger_and_budget_cap():
    prices = PriceTable({"m": (1000.0, 2000.0)})  # $ per 1M tokens: 10 in + 3 out = $0.016
    ledger = CostLedger(prices=prices, budget=0.03)
    transport, seen = scripted([httpx.Response(200, json=ok_body())])
    t = make(transport, ledger=ledger)
    r1, r2 = t.reply(HI), t.reply(HI)
    assert r1.cost == pytest.approx(0.016) and ledger.spent == pytest.approx(0.032)
    with pytest.raises(BudgetExceeded, match="budget"):
        t.reply(HI)
    assert len(seen) == 2  # the third request never left
    tot = ledger.totals()
    assert tot["models"]["m"]["requests"] == 2 and tot["prompt_tokens"] == 20 and tot["completion_tokens"] == 6


def test_budget_needs_a_known_price():
    with pytest.raises(ConfigError, match="--price"):
        OpenAITeacher(require_gate=False, base_url="http://x/v1", model="my-private-model", api_key="k", ledger=CostLedger(budget=1.0))
    assert PriceTable().lookup("models/gemini-1.5-pro-002") == PriceTable().prices["gemini-1.5-pro"]


def test_rate_limiter_spaces_requests_and_tokens():
    now = [0.0]
    lim = RateLimiter(requests_per_minute=60, tokens_per_minute=600, clock=lambda: now[0])
    # burst: 10 s worth = 10 requests / 100 tokens
    waits = [lim.reserve(1) for _ in range(10)]
    assert waits == [0.0] * 10
    assert lim.reserve(1) == pytest.approx(1.0)  # one request per second after the burst
    now[0] += 30.0
    assert lim.reserve(0) == 0.0
    assert lim.reserve(90) == 0.0 and lim.reserve(20) == pytest.approx(1.0)  # 10 tokens short at 10 tok/s


def test_wrong_key_against_a_real_server_names_the_variable():
    with FaultyCloud(api_key="right") as cloud:
        with pytest.raises(TeacherStatusError, match="ENDCLOUD_CLOUD_API_KEY") as e:
            OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="m", api_key="wrong").reply(HI)
        assert e.value.status == 401 and cloud.requests == []
        ok = OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="m", api_key="right").reply(HI)
        assert ok.text == "Reply: hi"


def _gather(teacher: OpenAITeacher, contents: list[str]):
    async def go():
        try:
            return await asyncio.gather(*(teacher.areply([{"role": "user", "content": c}]) for c in contents))
        finally:
            await teacher.aclose()

    return asyncio.run(go())


def _sent(cloud: FaultyCloud) -> list[str]:
    return [body["messages"][-1]["content"] for body in cloud.requests]


def test_a_request_waiting_out_retry_after_holds_no_slot():
    # One slot. A is told to come back in 0.3 s; B, queued behind A, goes meanwhile.
    # (Holding the slot through the wait would send A, A, B.)
    with FaultyCloud(script=["429"], retry_after=0.3) as cloud:
        t = OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="m", api_key="k", concurrency=1)
        replies = _gather(t, ["A", "B"])
        assert [r.text for r in replies] == ["Reply: A", "Reply: B"]
        assert _sent(cloud) == ["A", "B", "A"] and cloud.outcomes == ["429", "ok", "ok"]
        assert cloud.max_inflight == 1
        assert t.stats.slept_s >= 0.3 and t.stats.wire_s > 0 and t.stats.retries == 1


def test_a_retry_takes_the_next_slot_ahead_of_requests_not_yet_started():
    # One slot, A fails at once and backs off ~1 ms while B is on the wire (0.1 s); C has
    # been waiting since the start, but A's retry goes before it. A plain FIFO would send
    # A, B, C, A — the retry last, behind a whole batch.
    with FaultyCloud(script=["500"], latency=0.1) as cloud:
        t = OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="m", api_key="k", concurrency=1,
                          backoff=0.001)
        replies = _gather(t, ["A", "B", "C"])
        assert [r.text for r in replies] == ["Reply: A", "Reply: B", "Reply: C"]
        assert _sent(cloud) == ["A", "B", "A", "C"]


def test_a_cancelled_waiter_does_not_leak_its_slot():
    with FaultyCloud(latency=0.2) as cloud:
        t = OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="m", api_key="k", concurrency=1)

        async def go():
            try:
                first = asyncio.create_task(t.areply([{"role": "user", "content": "A"}]))
                await asyncio.sleep(0.05)  # A holds the only slot
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(t.areply([{"role": "user", "content": "B"}]), 0.05)
                # If B's cancelled wait had swallowed the slot, C would wait forever.
                third = await asyncio.wait_for(t.areply([{"role": "user", "content": "C"}]), 5)
                return (await first).text, third.text
            finally:
                await t.aclose()

        assert asyncio.run(go()) == ("Reply: A", "Reply: C")
        assert _sent(cloud) == ["A", "C"]


def test_an_http_proxy_in_the_environment_is_used(monkeypatch, cloud):
    # The proxy named here is not listening, so a request that honours it cannot arrive.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    t = OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="m", api_key="k", max_retries=0)
    with pytest.raises(TeacherError, match="cannot reach"):
        t.reply(HI)
    assert cloud.requests == []
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert t.reply(HI).text == "Reply: hi" and len(cloud.requests) == 1


def test_an_api_key_that_cannot_go_in_a_header_fails_at_start():
    with pytest.raises(ConfigError, match="ENDCLOUD_CLOUD_API_KEY"):
        OpenAITeacher(require_gate=False, base_url="http://x/v1", model="m", api_key="sk-abc\n")
