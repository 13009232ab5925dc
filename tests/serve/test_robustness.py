"""One bad request can't stall the server, and no input gets a 500: against a real uvicorn on
127.0.0.1 (`LoopbackServer`) with the real tiny end model, the fault-injecting cloud double,
and (for SIGTERM) `endcloud serve` itself in its own process.

Each test names the defect it pins: a seed outside int64 that failed every row of a batch,
bodies that reached Python's own limits (recursion, 4,300-digit integers, lone surrogates at
the SQLite insert), loose types ("yes" for true), a takeover with no deadline, readiness
before warm-up, a shutdown that never ended, and structures that grew with every session."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from endcloud.cloud import OpenAITeacher
from endcloud.loopback import LoopbackServer
from endcloud.serve.app import create_app
from endcloud.serve.settings import ServeSettings
from endcloud.serve.turn import HANDOFF
from endcloud.testing import FaultyCloud, ScriptedModel, ScriptedTeacher
from tests.serve.ready import wait_ready

pytestmark = pytest.mark.usefixtures("few_threads")

CHAT = "/v1/chat/completions"


def settings(root, **kw) -> ServeSettings:
    return ServeSettings(db_path=root / "endcloud.db", audit_path=root / "audit.jsonl", worker="thread",
                         max_new_tokens=6, rate_limit_per_minute=10_000, min_match=0.0, **kw)


def ask(content="几天发货？", **kw) -> dict:
    return {"model": "end", "messages": [{"role": "user", "content": content}]} | kw


def assert_error(r: httpx.Response, status: int, *, param: str | None = None, needle: str = "") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]  # OpenAI-shaped JSON, whatever went wrong
    assert set(err) == {"message", "type", "code", "param"} and "Traceback" not in r.text
    if param is not None:
        assert err["param"] == param, err
    assert needle in err["message"], err
    return err


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("robust")


@pytest.fixture(scope="module")
def live(root, end_model):
    app = create_app(settings(root), engine=end_model, teacher=None)
    with LoopbackServer(app) as srv:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            deadline = time.monotonic() + 30
            while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            yield c, app


# ---- 5: one request's setting must not fail the batch -----------------------------------
def test_a_seed_outside_int64_is_a_400_naming_it_and_the_others_are_served(live):
    c, app = live

    async def burst():
        async with httpx.AsyncClient(base_url=str(c.base_url), timeout=60) as ac:
            bodies = [ask(seed=18446744073709551616)] + [ask(f"question {i}", seed=i) for i in range(4)] + \
                     [ask("edge", seed=-(2**63)), ask("edge", seed=2**63 - 1)]
            return await asyncio.gather(*(ac.post(CHAT, json=b) for b in bodies))

    first, *rest = asyncio.run(burst())
    assert_error(first, 400, param="seed", needle="less than or equal to 9223372036854775807")
    assert [r.status_code for r in rest] == [200] * 6
    assert all(r.json()["choices"][0]["message"]["content"] is not None for r in rest)


@pytest.mark.parametrize("field,value", [
    ("stream", "yes"), ("stream", 1), ("max_tokens", "5"), ("max_tokens", 0), ("max_tokens", 2.5),
    ("max_completion_tokens", 10**12), ("temperature", "0.5"), ("temperature", 2.5), ("top_p", 0),
    ("top_p", True), ("seed", 1.5), ("seed", "7"), ("seed", -(2**63) - 1), ("n", 2), ("n", "1"),
    ("session_id", "s" * 129), ("user", "u" * 129),
])
def test_every_per_request_setting_is_checked_strictly_at_the_door(live, field, value):
    c, _ = live
    assert_error(c.post(CHAT, json=ask(**{field: value})), 400, param=field)


# ---- 6: no 500 on any input ----------------------------------------------------------
def test_json_nested_20000_deep_is_a_400(live):
    c, _ = live
    raw = '{"model": "end", "messages": ' + "[" * 20_000 + "]" * 20_000 + "}"
    assert_error(c.post(CHAT, content=raw, headers={"content-type": "application/json"}), 400, needle="nests deeper")
    assert c.post(CHAT, json=ask()).status_code == 200  # and the server is fine


@pytest.mark.parametrize("raw,param", [
    ('{"model": "end", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}', "messages.0.content"),
    ('{"model": "end", "user": "\\udfff", "messages": [{"role": "user", "content": "hi"}]}', "user"),
    (b'{"model": "end", "messages": [{"role": "user", "content": "raw \xed\xa0\x80"}]}', "messages.0.content"),
])
def test_a_lone_surrogate_never_reaches_the_database(live, raw, param):
    c, app = live
    before = app.state.store.sessions_of("anonymous") if hasattr(app.state.store, "sessions_of") else None
    r = c.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400, param=param, needle="surrogate")
    if before is not None:
        assert app.state.store.sessions_of("anonymous") == before


def test_feedback_with_absurd_numbers_and_digits_is_a_400(live):
    c, _ = live
    mid = c.post(CHAT, json=ask()).json()["id"]
    five_thousand = '{"message_id": "%s", "rating": %s}' % (mid, "9" * 5000)
    assert_error(c.post("/v1/feedback", content=five_thousand, headers={"content-type": "application/json"}), 400,
                 param="rating", needle="5000 digits")
    for rating in (int("9" * 60), "²", "9" * 40, -(2**40)):
        assert_error(c.post("/v1/feedback", json={"message_id": mid, "rating": rating}), 400, param="rating")
    for raw in ('{"message_id": "%s", "rating": NaN}' % mid, '{"message_id": "x", "rating": 1e999999}'):
        r = c.post("/v1/feedback", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
    assert c.post("/v1/feedback", json={"message_id": mid, "rating": "up"}).status_code == 200


@pytest.mark.parametrize("content", ["\u200b\u200b", " \u200d\ufeff\u2060 ", "\u3164", "\u00a0\u2800\u180e"])
def test_a_message_of_invisible_characters_is_not_a_question(live, content):
    c, _ = live
    assert_error(c.post(CHAT, json=ask(content)), 400, param="messages", needle="invisible")


def test_the_session_header_has_the_body_s_limit(live):
    c, _ = live
    assert_error(c.post(CHAT, json=ask(), headers={"X-Endcloud-Session": "s" * 129}), 400,
                 param="X-Endcloud-Session", needle="128")
    r = c.post(CHAT, json=ask(), headers={"X-Endcloud-Session": "s" * 128})
    assert r.status_code != 400 and r.status_code < 500, r.text  # within the limit: the session rules decide


def test_an_unexpected_error_is_a_clean_json_500(root):
    model = ScriptedModel()
    model.fail = True  # raises RuntimeError with "a secret internal detail" in it
    app = create_app(settings(root / "fail"), engine=model, teacher=None)
    with LoopbackServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post(CHAT, json=ask())
        streamed = c.post(CHAT, json=ask(stream=True)).text
        model.fail = False
        after = c.post(CHAT, json=ask())
    err = assert_error(r, 500, needle="internal error")
    assert err["type"] == "server_error" and "secret" not in r.text and "ScriptedModel" not in r.text
    assert "secret" not in streamed and streamed.rstrip().endswith("data: [DONE]")
    assert after.status_code == 200


def test_openapi_documents_the_real_bodies_and_statuses(live):
    c, _ = live
    doc = c.get("/openapi.json").json()
    chat = doc["paths"][CHAT]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatRequest")
    assert {"400", "413", "429", "500"} <= set(chat["responses"])
    schemas = doc["components"]["schemas"]
    seed = next(s for s in schemas["ChatRequest"]["properties"]["seed"]["anyOf"] if s.get("type") == "integer")
    assert seed["maximum"] == 2**63 - 1 and seed["minimum"] == -(2**63)
    assert doc["paths"]["/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] \
        .endswith("/FeedbackRequest")
    assert "422" not in json.dumps(doc["paths"]) and "HTTPValidationError" not in json.dumps(doc)
    profile = doc["paths"]["/v1/customers/{customer}/profile"]
    assert "400" in profile["get"]["responses"] and "requestBody" in profile["put"]
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]


# ---- 7: degrade fast ------------------------------------------------------------------
def test_readyz_says_ready_only_after_the_warm_up_generation(root, end_model):
    app = create_app(settings(root / "ready"), engine=end_model, teacher=None)
    seen = []
    with LoopbackServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = c.get("/readyz")
            seen.append((r.status_code, r.json()["status"], app.state.engine.generations))
            assert c.get("/healthz").status_code == 200  # liveness all along
            if r.status_code == 200:
                break
            time.sleep(0.01)
    assert seen[-1][:2] == (200, "ready") and seen[-1][2] >= 1  # ready means the model has generated
    assert all(code == 503 and status in ("starting", "warming_up") for code, status, _ in seen[:-1])
    assert app.state.readiness == "stopping"  # and not ready once it shut down
    static = create_app(settings(root / "ready-static"), engine=ScriptedModel(), teacher=None)
    with LoopbackServer(static) as srv:
        assert httpx.get(srv.url + "/readyz").status_code == 200  # a whole-batch engine: ready once started


def test_a_dripping_cloud_gets_the_takeover_deadline_then_the_end_reply(root, end_model):
    with FaultyCloud(drip=1.0) as cloud:  # a good reply, 16 bytes a second: ~20 s in all
        teacher = OpenAITeacher(base_url=cloud.base_url, model="m", api_key="k", timeout=30, max_retries=4)
        app = create_app(settings(root / "drip", takeover_deadline_s=1.0, cloud_timeout_s=30), engine=end_model,
                         teacher=teacher)
        with LoopbackServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
            t0 = time.perf_counter()
            r = c.post(CHAT, json=ask("Do you ship today?", model="cloud"))
            took = time.perf_counter() - t0
            events = app.state.store.events("cloud_failed")
    body = r.json()
    assert r.status_code == 200 and body["endcloud"]["answered_by"] == "end" and body["endcloud"]["cloud_failed"]
    assert took < 10.0  # the 1 s deadline, then the end reply: far from the ~20 s the cloud would take
    assert 1000 <= body["endcloud"]["decision"]["takeover_ms"] < 10_000
    assert events[-1]["message_id"] == body["id"] and events[-1]["detail"]["kind"] == "deadline"


@pytest.mark.parametrize("question,lang", [("Where is my parcel?", "en"), ("我的包裹到哪了？", "zh")])
def test_with_no_cloud_reply_and_no_end_reply_the_customer_gets_a_hand_off(root, question, lang):
    app = create_app(settings(root / f"handoff-{lang}"), engine=ScriptedModel(lambda convo: ""),
                     teacher=ScriptedTeacher(fail=True))
    with LoopbackServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post(CHAT, json=ask(question, model="endcloud"))
    body = r.json()
    assert r.status_code == 200 and body["choices"][0]["message"]["content"] == HANDOFF[lang]
    assert body["endcloud"]["cloud_failed"] and any("handoff" in x for x in body["endcloud"]["decision"]["reasons"])


def test_a_forced_takeover_with_a_late_cloud_and_a_late_end_model_hands_off_in_time(root):
    """model="cloud": the cloud misses the deadline, and the end reply it falls back to would
    take 3 s more: the customer gets the hand-off message at the deadline instead."""
    slow = ScriptedModel(lambda convo: time.sleep(3) or "late")
    app = create_app(settings(root / "late", takeover_deadline_s=0.5), engine=slow, teacher=ScriptedTeacher(delay=5))
    with LoopbackServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        t0 = time.perf_counter()
        r = c.post(CHAT, json=ask("Where is my parcel?", model="cloud"))
        took = time.perf_counter() - t0
    body = r.json()
    assert r.status_code == 200 and body["choices"][0]["message"]["content"] == HANDOFF["en"]
    assert took < 2.5 and body["endcloud"]["decision"]["takeover_ms"] < 2000  # not the 5 s cloud nor the 3 s model
    assert "end reply not ready by the takeover deadline" in body["endcloud"]["decision"]["reasons"]


def test_structures_stay_bounded_under_many_distinct_sessions(root, end_model):
    """Every chat below opens a new session (and labels a new user): the session transcripts
    and the prefix cache stay in their budgets, and /metrics gets no series per customer or
    session (its labels take values from fixed sets)."""
    s = settings(root / "bounded", session_transcripts=4, session_transcripts_mb=1, prefix_cache_mb=0.05)
    app = create_app(s, engine=end_model, teacher=None)

    def series(text: str) -> int:
        return sum(1 for line in text.splitlines() if line and not line.startswith("#"))

    sessions = set()
    with LoopbackServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        c.post(CHAT, json=ask())
        base = series(c.get("/metrics").text)
        for i in range(40):
            r = c.post(CHAT, json=ask(f"customer {i}: is order {1000 + i} on its way?", user=f"user-{i}", seed=i,
                                      temperature=0.9, top_p=0.95))
            assert r.status_code == 200, r.text
            sessions.add(r.json()["endcloud"]["session_id"])
            stats = app.state.engine.stats()
            assert stats["transcripts"] <= 4 and stats["prefix_cache_bytes"] <= 0.05 * 2**20
        metrics = c.get("/metrics").text
    assert len(sessions) == 40
    assert "user-" not in metrics and not any(sid in metrics for sid in sessions)
    assert series(metrics) - base < 40  # not a series per customer
    gauge = {line.split('"')[1]: float(line.rsplit(" ", 1)[1])
             for line in metrics.splitlines() if line.startswith("endcloud_engine_memory_bytes{")}
    assert set(gauge) == {"prefix_cache", "kv_pools", "transcripts"}  # what the engine holds, for operators
    assert 0 < gauge["prefix_cache"] <= 0.05 * 2**20 and gauge["transcripts"] <= 2**20


# ---- 5: SIGTERM with a request in flight ------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_with_a_request_in_flight_ends_within_the_shutdown_bound(tmp_path, tiny_base_dir):
    """`endcloud serve` itself: a takeover hangs in the cloud (300 s) when SIGTERM comes; the
    process stops listening and exits within shutdown_timeout_s (1 s, plus its own stopping),
    and the customer in flight gets a clean 503, not a hang or uvicorn's bare 500."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "base").symlink_to(tiny_base_dir, target_is_directory=True)
    with FaultyCloud(ptimeout=1.0, hang=300) as cloud:  # every cloud call hangs
        port = _free_port()
        env = dict(os.environ, ENDCLOUD_CLOUD_BASE_URL=cloud.base_url, ENDCLOUD_CLOUD_MODEL="m",
                   ENDCLOUD_CLOUD_API_KEY="k", ENDCLOUD_SERVE_SHUTDOWN_TIMEOUT_S="1",
                   ENDCLOUD_SERVE_TAKEOVER_DEADLINE_S="300", ENDCLOUD_SERVE_CLOUD_TIMEOUT_S="300",
                   ENDCLOUD_SERVE_WORKER="thread", ENDCLOUD_SERVE_TORCH_THREADS="1")
        proc = subprocess.Popen([sys.executable, "-m", "endcloud", "serve", "-w", str(ws), "--port", str(port),
                                 "--log-level", "error"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            why = wait_ready(url, proc, timeout_s=300)
            assert why is None, why
            out = {}

            def in_flight():
                out["r"] = httpx.post(url + CHAT, json=ask("hello", model="cloud"), timeout=60)

            t = threading.Thread(target=in_flight)
            t.start()
            while not cloud.requests:  # the takeover is on the wire
                time.sleep(0.02)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
            took = time.monotonic() - t0
            t.join(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert took < 1.0 + 15.0, f"shutdown took {took:.1f} s with shutdown_timeout_s=1"  # slack: a crowded machine
    assert_error(out["r"], 503, needle="shutting down")
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz", timeout=2)  # nothing listens any more
