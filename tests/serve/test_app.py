"""The app in-process (FastAPI TestClient) with injected doubles: wire shapes, routing, limits."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from endcloud.serve.app import create_app
from endcloud.serve.auth import sign_customer_token
from endcloud.serve.settings import ServeSettings
from endcloud.store.conversations import ConversationStore
from endcloud.testing import ScriptedModel, ScriptedTeacher


SECRET = "test-customer-secret-0123456789"
LOCAL = ("127.0.0.1", 50000)  # a TestClient on loopback: reads /metrics and admin routes as the shop's own machine


def as_customer(customer: str) -> dict[str, str]:
    """Headers of a request by `customer`, signed as the shop's site signs it (the only way to be a named customer)."""
    return {"Authorization": f"Bearer {sign_customer_token(SECRET, customer, 600)}"}


def make(tmp_path, *, model=None, teacher=None, **settings):
    store = ConversationStore(tmp_path / "endcloud.db")
    s = ServeSettings(db_path=tmp_path / "endcloud.db", **({"min_match": 0.0, "customer_secret": SECRET} | settings))
    app = create_app(s, engine=model or ScriptedModel(), teacher=teacher, store=store)
    return app, store


def chat(client, content="几天发货？", *, model="endcloud", user="alice", **kw):
    body = {"model": model, "messages": [{"role": "user", "content": content}]} | kw
    return client.post("/v1/chat/completions", json=body, headers=as_customer(user))


def test_non_streaming_reply_is_openai_shaped_and_stored(tmp_path):
    app, store = make(tmp_path)
    with TestClient(app) as c:
        r = chat(c)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Reply: 几天发货？"}
    ext = body["endcloud"]
    assert ext["message_id"] == body["id"] and ext["answered_by"] == "end"
    assert set(ext["scores"]) >= {"match", "confidence", "frustration"}
    assert ext["decision"]["route"] == "end"
    stored = store.reply(body["id"])
    assert stored["served_text"] == "Reply: 几天发货？" and stored["decision"]["route"] == "end"


def test_streaming_sends_role_content_finish_then_done(tmp_path):
    app, _ = make(tmp_path, model=ScriptedModel(lambda c: "We ship today, 亲"))
    with TestClient(app) as c:
        with c.stream("POST", "/v1/chat/completions", json={"model": "end", "stream": True, "user": "a",
                                                            "messages": [{"role": "user", "content": "ship?"}]}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [l for l in r.iter_lines() if l]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(l[6:]) for l in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks) == "We ship today, 亲"
    assert len(chunks) > 4  # split into pieces, not one blob
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["endcloud"]["answered_by"] == "end"
    assert {ch["id"] for ch in chunks} == {chunks[0]["id"]}


def test_low_match_hands_over_to_the_cloud(tmp_path):
    teacher = ScriptedTeacher("Cloud: 48小时内发货")
    app, store = make(tmp_path, model=ScriptedModel(lambda c: "毛巾是纯棉的"), teacher=teacher, min_match=0.3)
    with TestClient(app, client=LOCAL) as c:
        body = chat(c, "几天发货？").json()
        metrics = c.get("/metrics").text
    assert body["endcloud"]["answered_by"] == "cloud"
    assert body["choices"][0]["message"]["content"] == "Cloud: 48小时内发货"
    assert any("match" in r for r in body["endcloud"]["decision"]["reasons"])
    assert body["usage"]["prompt_tokens"] == 40
    assert store.reply(body["id"])["end_text"] == "毛巾是纯棉的"  # the draft is kept for the online loop
    # the takeover share over any window: rate(takeovers_total) / rate(turns_total)
    assert 'endcloud_turns_total{answered_by="cloud"} 1.0' in metrics
    assert 'endcloud_cloud_tokens_total{kind="prompt"} 40.0' in metrics
    assert "endcloud_cloud_cost_usd_total 0.002" in metrics


def test_frustrated_customer_goes_to_the_cloud(tmp_path):
    app, _ = make(tmp_path, teacher=ScriptedTeacher())
    with TestClient(app) as c:
        calm = chat(c, "Do you ship today?").json()
        angry = chat(c, "This is ridiculous, I want a real person!!").json()
    assert calm["endcloud"]["answered_by"] == "end"
    assert angry["endcloud"]["answered_by"] == "cloud"


def test_cloud_failure_serves_the_end_reply_and_records_it(tmp_path):
    app, store = make(tmp_path, teacher=ScriptedTeacher(fail=True))
    with TestClient(app, client=LOCAL) as c:
        body = chat(c, model="cloud").json()
        metrics = c.get("/metrics").text
    assert body["endcloud"]["answered_by"] == "end" and body["endcloud"]["cloud_failed"]
    assert body["choices"][0]["message"]["content"] == "Reply: 几天发货？"
    assert store.events("cloud_failed")[0]["message_id"] == body["id"]
    assert 'endcloud_cloud_failures_total{kind="TeacherStatusError"} 1.0' in metrics


def test_slow_cloud_times_out_to_the_end_reply(tmp_path):
    app, store = make(tmp_path, teacher=ScriptedTeacher(delay=5), cloud_timeout_s=0.2)
    with TestClient(app) as c:
        body = chat(c, model="cloud").json()
    assert body["endcloud"]["answered_by"] == "end"
    assert store.events("cloud_failed")[0]["detail"]["kind"] == "timeout"


def test_no_cloud_configured_still_answers(tmp_path):
    app, store = make(tmp_path, teacher=None)
    with TestClient(app) as c:
        body = chat(c, model="cloud").json()
    assert body["endcloud"]["answered_by"] == "end"
    assert store.events("cloud_unavailable")


def test_stored_history_and_profile_reach_the_model(tmp_path):
    model = ScriptedModel()
    app, store = make(tmp_path, model=model)
    store.set_profile("alice", preferences={"courier": "SF"}, orders=[{"order_id": "A-778", "item": "towel", "status": "shipped"}])
    with TestClient(app) as c:
        first = chat(c, "first question").json()
        chat(c, "second question")
        sess = c.get(f"/v1/sessions/{first['endcloud']['session_id']}", headers=as_customer("alice")).json()
    convo = model.batches[-1][0]
    assert [m["content"] for m in convo if m["role"] != "system"] == [
        "first question", "Reply: first question", "second question"]
    system = convo[0]["content"]
    assert "A-778" in system and "SF" in system
    assert [m["role"] for m in sess["messages"]] == ["user", "assistant", "user", "assistant"]


def test_someone_elses_session_is_refused(tmp_path):
    app, _ = make(tmp_path)
    with TestClient(app) as c:
        sid = chat(c, user="alice").json()["endcloud"]["session_id"]
        r = chat(c, user="mallory", session_id=sid)
        s = c.post("/v1/chat/completions", headers={"X-Endcloud-Session": sid} | as_customer("mallory"), json={
            "model": "end", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    _assert_error(r, 403, "another customer")
    _assert_error(s, 403, "another customer")


def test_client_history_is_used_as_sent(tmp_path):
    model = ScriptedModel()
    app, _ = make(tmp_path, model=model)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"}, {"role": "user", "content": [{"type": "text", "text": "c"}]}]
    with TestClient(app) as c:
        assert c.post("/v1/chat/completions", json={"model": "end", "messages": msgs}).status_code == 200
    convo = model.batches[-1][0]
    assert convo[0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in convo[1:]] == ["a", "b", "c"]


def test_feedback_round_trip(tmp_path):
    app, store = make(tmp_path)
    with TestClient(app) as c:
        mid = chat(c).json()["id"]  # alice's reply: her feedback carries her token
        alice = as_customer("alice")
        up = c.post("/v1/feedback", json={"message_id": mid, "rating": "up"}, headers=alice)
        down = c.post("/v1/feedback", json={"message_id": mid, "rating": 2, "comment": "too slow", "correction": "今天发货"},
                      headers=alice)
        unknown = c.post("/v1/feedback", json={"message_id": "chatcmpl-nope", "rating": "up"}, headers=alice)
        bad = c.post("/v1/feedback", json={"message_id": mid, "rating": "great"}, headers=alice)
    assert up.json()["feedback"]["rating"] == 5 and down.json()["feedback"]["rating"] == 2
    assert [f["rating"] for f in store.feedback(mid)] == [5, 2]
    assert unknown.status_code == 404 and "chatcmpl-nope" in unknown.json()["error"]["message"]
    assert bad.status_code == 400 and "great" in bad.json()["error"]["message"]


def _assert_error(r, status, needle):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"]
    assert "Traceback" not in r.text


def test_bad_inputs_get_clear_4xx(tmp_path):
    app, _ = make(tmp_path, max_messages=3, max_tokens_per_message=20, max_body_bytes=2000)
    with TestClient(app, client=LOCAL) as c:
        post = lambda **kw: c.post("/v1/chat/completions", **kw)  # noqa: E731
        _assert_error(post(content=b"{not json", headers={"content-type": "application/json"}), 400, "not valid JSON")
        _assert_error(post(json=[1, 2]), 400, "JSON object")
        _assert_error(post(content=b""), 400, "empty")
        _assert_error(post(json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}), 404, "gpt-9")
        _assert_error(post(json={"model": "end", "messages": []}), 400, "messages")
        _assert_error(post(json={"model": "end"}), 400, "messages")
        _assert_error(post(json={"model": "end", "messages": [{"role": "tool", "content": "x"}]}), 400, "role")
        _assert_error(post(json={"model": "end", "messages": [{"role": "assistant", "content": "x"}]}), 400, "last message")
        _assert_error(post(json={"model": "end", "messages": [{"role": "user", "content": "  "}]}), 400, "empty")
        _assert_error(post(json={"model": "end", "messages": [{"role": "user", "content": "x"}] * 4}), 400, "max_messages")
        _assert_error(post(json={"model": "end", "messages": [{"role": "user", "content": "字" * 30}]}), 400, "max_tokens_per_message")
        _assert_error(post(json={"model": "end", "n": 2, "messages": [{"role": "user", "content": "x"}]}), 400, "n=1")
        _assert_error(post(json={"model": "end", "temperature": 9, "messages": [{"role": "user", "content": "x"}]}), 400, "temperature")
        _assert_error(post(json={"model": "end", "max_tokens": 10**6, "messages": [{"role": "user", "content": "x"}]}), 400, "max_tokens")
        _assert_error(post(json={"model": "end", "user": "bad user!", "messages": [{"role": "user", "content": "x"}]}), 400, "user")
        _assert_error(post(json={"model": "end", "messages": [{"role": "user", "content": "x" * 5000}]}), 413, "max_body_bytes")
        _assert_error(c.get("/v1/nothing"), 404, "/v1/nothing")
        _assert_error(c.get("/v1/chat/completions"), 405, "")
        _assert_error(c.get("/v1/sessions/nope"), 404, "nope")


def test_body_limit_also_catches_chunked_uploads(tmp_path):
    app, _ = make(tmp_path, max_body_bytes=1000)

    def gen():
        for _ in range(10):
            yield b"x" * 200

    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", content=gen(), headers={"content-type": "application/json"})
    _assert_error(r, 413, "1000 bytes")


def test_rate_limit_per_customer_with_retry_after(tmp_path):
    app, _ = make(tmp_path, rate_limit_per_minute=2)
    with TestClient(app, client=LOCAL) as c:
        codes = [chat(c, user="alice").status_code for _ in range(3)]
        other = chat(c, user="bob")
        r = chat(c, user="alice")
        metrics = c.get("/metrics").text
    assert codes == [200, 200, 429] and other.status_code == 200
    _assert_error(r, 429, "rate_limit_per_minute")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert 'status="429"' in metrics


def test_unexpected_errors_are_500_json_without_details(tmp_path):
    model = ScriptedModel()
    model.fail = True
    app, _ = make(tmp_path, model=model)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = chat(c)
    _assert_error(r, 500, "internal error")
    assert "secret internal detail" not in r.text


def test_profile_admin_endpoints_and_token(tmp_path):
    app, _ = make(tmp_path, admin_token="s3cret")
    with TestClient(app) as c:
        assert c.get("/v1/customers/alice/profile").status_code == 401
        h = {"Authorization": "Bearer s3cret"}
        r = c.put("/v1/customers/alice/profile", headers=h, json={"preferences": {"size": "L"}, "orders": [{"order_id": "O9"}]})
        assert r.status_code == 200
        assert c.get("/v1/customers/alice/profile", headers=h).json()["orders"][0]["order_id"] == "O9"
        _assert_error(c.put("/v1/customers/alice/profile", headers=h, json={"orders": [{"item": "x"}]}), 400, "order_id")
        _assert_error(c.put("/v1/customers/alice/profile", headers=h, json={"bogus": 1}), 400, "bogus")


def test_healthz_models_and_hot_swap(tmp_path):
    model = ScriptedModel()
    app, _ = make(tmp_path, model=model)
    with TestClient(app) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["endcloud", "end", "cloud"]
        app.state.engine.swap_adapter(tmp_path / "adapters" / "shop" / "v2")
        assert c.get("/healthz").json()["adapter"].endswith("v2")
    assert model.adapters == [tmp_path / "adapters" / "shop" / "v2"]


def test_extra_routers_are_included(tmp_path):
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/review/ping")
    def ping():
        return {"pong": True}

    app = create_app(ServeSettings(), engine=ScriptedModel(), extra_routers=[router])
    with TestClient(app) as c:
        assert c.get("/review/ping").json() == {"pong": True}


def _shop(root):
    root.mkdir()
    (root / "shop.yaml").write_text("name: Towel Town\nlanguage: en\ncurrency: USD\n", encoding="utf-8")
    (root / "catalog.csv").write_text("sku,name,price,stock,material\nT-1,Bath towel,12.5,40,cotton\n", encoding="utf-8")
    (root / "faq.jsonl").write_text('{"question": "Which courier do you use?", "answer": "We ship with ZTO Express."}\n',
                                    encoding="utf-8")
    (root / "policies.md").write_text("## Returns\n<!-- key: returns -->\nReturns are accepted within 7 days.\n", encoding="utf-8")
    (root / "orders.csv").write_text("order_id,customer,sku,status\nA-1001,carol,T-1,shipped\n", encoding="utf-8")
    return root


def test_shop_knowledge_and_orders_reach_the_model(tmp_path):
    model = ScriptedModel()
    s = ServeSettings(db_path=tmp_path / "endcloud.db", shop_dir=_shop(tmp_path / "shop"), min_match=0.0,
                      customer_secret=SECRET)
    app = create_app(s, engine=model)
    with TestClient(app) as c:
        body = chat(c, "Which courier do you use?", user="carol").json()
    system = model.batches[-1][0][0]
    assert system["role"] == "system"
    assert "ZTO Express" in system["content"]  # the FAQ snippet
    assert "A-1001" in system["content"]  # carol's order, from the pack's orders.csv
    assert any(k["source"] == "faq" for k in body["endcloud"]["knowledge"])


def test_rate_limiter_window_slides_and_forgets():
    from endcloud.serve.http import RateLimiter

    now = [0.0]
    rl = RateLimiter(2, clock=lambda: now[0])
    assert rl.check("a") == 0 and rl.check("a") == 0
    assert rl.check("a") == pytest.approx(60.0)
    now[0] = 30.0
    assert rl.check("a") == pytest.approx(30.0)
    now[0] = 60.0
    assert rl.check("a") == 0  # the first hit left the window


def test_the_history_window_keeps_its_start_for_several_turns(tmp_path):
    """The context window jumps half its size at a time instead of sliding one message per
    turn, so consecutive prompts of a long chat begin alike (the end model's prefix cache)."""
    from endcloud.serve.turn import window_start

    model = ScriptedModel()
    app, _ = make(tmp_path, model=model, history_messages=8)
    with TestClient(app) as c:
        for i in range(9):
            chat(c, f"q{i}")
    starts = [next(m["content"] for m in convo if m["role"] != "system") for [convo] in model.batches]
    sizes = [len([m for m in convo if m["role"] != "system"]) - 1 for [convo] in model.batches]
    assert starts == ["q0"] * 5 + ["q2"] * 2 + ["q4"] * 2
    assert sizes == [0, 2, 4, 6, 8, 6, 8, 6, 8] and max(sizes) <= 8
    # client-sent history follows the same rule
    assert [window_start(n, 8) for n in (8, 9, 10, 12, 13, 16, 17)] == [0, 4, 4, 4, 8, 8, 12]
    assert window_start(5, 0) == 5 and window_start(3, 1) == 2


def test_knowledge_goes_after_the_question_when_the_model_takes_it_there(tmp_path):
    """The question's knowledge changes every turn: an end model whose template renders a
    late system message gets it after the question, so everything before is the same text
    turn after turn; `knowledge_position=system` (or a template that refuses) puts it on top."""
    model = ScriptedModel()
    model.late_system = lambda: True
    s = ServeSettings(db_path=tmp_path / "endcloud.db", shop_dir=_shop(tmp_path / "shop"), min_match=0.0,
                      customer_secret=SECRET)
    app = create_app(s, engine=model)
    with TestClient(app) as c:
        chat(c, "Which courier do you use?", user="carol")
        chat(c, "Can I return it?", user="carol")
    first, second = model.batches[-2][0], model.batches[-1][0]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user", "system"]
    assert "A-1001" in second[0]["content"] and "Shop knowledge" not in second[0]["content"]  # the order stays on top
    assert second[3]["content"] == "Can I return it?" and second[4]["content"].startswith("Shop knowledge:")
    assert second[:2] == first[:2]  # the same beginning: the end model's prefix cache keeps it

    top = ScriptedModel()
    top.late_system = lambda: True
    app = create_app(s.with_(knowledge_position="system", db_path=tmp_path / "top.db"), engine=top)
    with TestClient(app) as c:
        chat(c, "Which courier do you use?", user="carol")
    [convo] = top.batches[-1]
    assert [m["role"] for m in convo] == ["system", "user"] and "Shop knowledge" in convo[0]["content"]
    with pytest.raises(Exception, match="knowledge_position"):
        ServeSettings(knowledge_position="middle")


@pytest.mark.parametrize("alpha,theta", [(0.8, 0.2), (0.3, 0.0), (0.5, 1.0)])
def test_a_takeover_is_scored_with_the_servers_alpha_and_theta(tmp_path, alpha, theta):
    app, _ = make(tmp_path, model=ScriptedModel(lambda c: "亲，默认发中通快递哦"), teacher=ScriptedTeacher("亲，48小时内发中通快递"),
                  min_match=1.0, alpha=alpha, theta=theta)
    with TestClient(app) as c:
        s = chat(c, "几天发货？").json()["endcloud"]["scores"]
    assert s["sim"] != pytest.approx(s["match"], abs=1e-3)  # else any α would give the same Final
    expected = s["sim"] if s["cloud_match"] < theta else alpha * s["sim"] + (1 - alpha) * s["match"]
    assert s["final"] == pytest.approx(expected, abs=1e-5)
