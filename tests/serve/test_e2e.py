"""End to end: a real uvicorn on 127.0.0.1, the official `openai` client, the real tiny
EndModel, and the fault-injecting cloud double behind the privacy gate."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from endcloud.cloud import OpenAITeacher
from endcloud.loopback import LoopbackServer
from endcloud.privacy import contains_pii
from endcloud.serve.app import create_app
from endcloud.serve.auth import sign_customer_token
from endcloud.serve.settings import ServeSettings
from endcloud.testing import FaultyCloud

ANGRY = "This is ridiculous, I want a real person!!"
SECRET = "e2e-customer-secret-0123456789"


@pytest.fixture(scope="module")
def cloud():
    with FaultyCloud(model="double") as c:  # default responder: "Reply: <last customer message>"
        yield c


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("serve-e2e")


def _app(root, end_model, cloud):
    teacher = OpenAITeacher(base_url=cloud.base_url, model="double", api_key="test-key", timeout=5, max_retries=0)
    settings = ServeSettings(db_path=root / "endcloud.db", audit_path=root / "audit" / "outbound.jsonl", min_match=0.0,
                             min_confidence=0.0, max_new_tokens=12, cloud_timeout_s=10, customer_secret=SECRET)
    return create_app(settings, engine=end_model, teacher=teacher)  # the app puts the remote teacher behind the gate


@pytest.fixture(scope="module")
def live(root, end_model, cloud):
    app = _app(root, end_model, cloud)
    with LoopbackServer(app) as srv:
        yield srv, app


@pytest.fixture
def client(live):
    srv, _ = live
    return OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def ext(obj) -> dict:
    return obj.model_extra["endcloud"]


def test_non_streaming(client, live):
    resp = client.chat.completions.create(model="end", messages=[{"role": "user", "content": "几天发货？"}], user="c1", seed=1)
    assert isinstance(resp.choices[0].message.content, str)
    # max_new_tokens=12: a reply the limit cut says so (the random tiny model rarely stops by itself)
    assert resp.choices[0].finish_reason == ("length" if resp.usage.completion_tokens == 12 else "stop")
    e = ext(resp)
    assert e["answered_by"] == "end" and e["message_id"] == resp.id
    assert 0 < e["scores"]["confidence"] <= 1
    assert resp.usage.completion_tokens >= 1
    stored = live[1].state.store.reply(resp.id)
    assert stored["served_text"] == resp.choices[0].message.content


def test_streaming(client, live):
    stream = client.chat.completions.create(model="end", messages=[{"role": "user", "content": "Do you ship today?"}],
                                            user="c2", stream=True, seed=2)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == ("length" if chunks[-1].usage.completion_tokens == 12 else "stop")
    final = ext(chunks[-1])
    assert final["answered_by"] == "end"
    assert live[1].state.store.reply(final["message_id"])["served_text"] == text


def test_multi_turn_uses_the_stored_session(client, live):
    first = client.chat.completions.create(model="end", messages=[{"role": "user", "content": "我想买毛巾"}], user="c3")
    sid = ext(first)["session_id"]
    # an anonymous chat continues with the session id it was issued (never by its `user` label)
    second = client.chat.completions.create(model="end", messages=[{"role": "user", "content": "几天发货？"}], user="c3",
                                            extra_body={"session_id": sid})
    assert ext(second)["session_id"] == sid
    sess = httpx.get(f"{live[0].url}/v1/sessions/{sid}", timeout=10).json()
    assert [m["role"] for m in sess["messages"]] == ["user", "assistant", "user", "assistant"]
    assert sess["messages"][0]["content"] == "我想买毛巾"
    assert sess["messages"][3]["content"] == second.choices[0].message.content


def test_feedback(client, live):
    resp = client.chat.completions.create(model="end", messages=[{"role": "user", "content": "hi"}], user="c4")
    r = httpx.post(f"{live[0].url}/v1/feedback", json={"message_id": resp.id, "rating": "down", "correction": "Hello!"}, timeout=10)
    assert r.status_code == 200 and r.json()["feedback"]["rating"] == 1
    missing = httpx.post(f"{live[0].url}/v1/feedback", json={"message_id": "chatcmpl-missing", "rating": 4}, timeout=10)
    assert missing.status_code == 404 and "chatcmpl-missing" in missing.json()["error"]["message"]


def test_routed_takeover_goes_through_the_cloud_double(client, live, cloud):
    cloud.reset()
    resp = client.chat.completions.create(model="endcloud", messages=[{"role": "user", "content": ANGRY}], user="c5")
    e = ext(resp)
    assert e["answered_by"] == "cloud"
    assert any("frustration" in r for r in e["decision"]["reasons"])
    assert resp.choices[0].message.content == "Reply: " + ANGRY
    assert len(cloud.requests) == 1
    stored = live[1].state.store.reply(resp.id)
    assert stored["end_text"] is not None and stored["cloud_text"] == "Reply: " + ANGRY


def test_cloud_down_serves_the_end_reply(client, live, cloud):
    cloud.reset()
    cloud.script = ["500"]
    resp = client.chat.completions.create(model="endcloud", messages=[{"role": "user", "content": ANGRY}], user="c6")
    e = ext(resp)
    assert e["answered_by"] == "end" and e["cloud_failed"] is True
    assert cloud.outcomes == ["500"]
    events = live[1].state.store.events("cloud_failed")
    assert any(ev["message_id"] == resp.id for ev in events)


def test_cloud_unreachable_serves_the_end_reply(root, end_model):
    teacher = OpenAITeacher(base_url="http://127.0.0.1:9/v1", model="double", api_key="k", timeout=2, max_retries=0)
    app = create_app(ServeSettings(db_path=root / "down.db", audit_path=root / "audit" / "down.jsonl", max_new_tokens=4),
                     engine=end_model, teacher=teacher)
    with LoopbackServer(app) as srv:
        c = OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=60)
        resp = c.chat.completions.create(model="cloud", messages=[{"role": "user", "content": "hello"}], user="c7")
    assert ext(resp)["answered_by"] == "end" and ext(resp)["cloud_failed"]


def test_wire_no_pii_leaves_and_the_customer_sees_it_restored(client, live, cloud, root):
    cloud.reset()
    phone, email = "13812345678", "alice.wang@example.com"
    messages = [
        {"role": "user", "content": f"我叫王芳，电话 {phone}"},
        {"role": "assistant", "content": "好的，王女士，请问有什么可以帮您？"},
        {"role": "user", "content": f"Please send the invoice to {email} and call {phone}"},
    ]
    resp = client.chat.completions.create(model="cloud", messages=messages, user="c8")
    assert ext(resp)["answered_by"] == "cloud"
    reply = resp.choices[0].message.content
    assert phone in reply and email in reply  # restored before the customer saw it
    assert cloud.raw, "the cloud double received nothing"
    for raw in cloud.raw:
        text = raw.decode("utf-8")
        assert phone not in text and email not in text and "王芳" not in text
        for m in json.loads(text)["messages"]:
            assert not contains_pii(m["content"]), m
    audit = (root / "audit" / "outbound.jsonl").read_text(encoding="utf-8")
    assert phone not in audit and email not in audit


def test_concurrent_customers_are_batched(live):
    srv, app = live
    before = len(app.state.engine.batcher.batch_sizes)

    async def main():
        c = AsyncOpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=120)
        return await asyncio.gather(*[
            c.chat.completions.create(model="end", messages=[{"role": "user", "content": f"问题 {i}"}], user=f"b{i}")
            for i in range(8)
        ])

    replies = asyncio.run(main())
    assert len({r.id for r in replies}) == 8
    sizes = app.state.engine.batcher.batch_sizes[before:]
    assert sum(sizes) == 8 and max(sizes) > 1, sizes


def test_metrics_and_health_over_http(live):
    base = live[0].url
    text = httpx.get(f"{base}/metrics", timeout=10).text
    assert 'endcloud_requests_total{answered_by="end",model="end",status="200"}' in text
    assert "endcloud_ttft_seconds_bucket" in text and "endcloud_turns_total" in text
    assert httpx.get(f"{base}/healthz", timeout=10).json()["status"] == "ok"


def test_restart_keeps_sessions_and_feedback(tmp_path, end_model, cloud):
    app = _app(tmp_path, end_model, cloud)
    r1 = sign_customer_token(SECRET, "r1", 600)  # a named customer: what the shop's site signs for her
    with LoopbackServer(app) as srv:
        c = OpenAI(base_url=srv.url + "/v1", api_key=r1, max_retries=0, timeout=60)
        ids = [c.chat.completions.create(model="end", messages=[{"role": "user", "content": q}]).id
               for q in ("first", "second")]
        for mid, rating in zip(ids, ("up", 2)):
            assert httpx.post(f"{srv.url}/v1/feedback", json={"message_id": mid, "rating": rating}, timeout=10,
                              headers={"Authorization": f"Bearer {r1}"}).status_code == 200
        sid = httpx.get(f"{srv.url}/v1/customers/r1/sessions", timeout=10).json()["sessions"][0]
    app2 = _app(tmp_path, end_model, cloud)
    with LoopbackServer(app2) as srv2:
        sess = httpx.get(f"{srv2.url}/v1/sessions/{sid}", timeout=10).json()
        assert [m["id"] for m in sess["messages"] if m["role"] == "assistant"] == ids
        assert [f["rating"] for f in app2.state.store.feedback()] == [5, 2]
        # the restarted server continues the same session
        c = OpenAI(base_url=srv2.url + "/v1", api_key=r1, max_retries=0, timeout=60)
        third = c.chat.completions.create(model="end", messages=[{"role": "user", "content": "third"}])
        assert ext(third)["session_id"] == sid


def test_hot_swap_to_a_real_adapter_while_serving(live, tiny_base_dir, tmp_path, client):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from endcloud.errors import ModelError

    adapter = tmp_path / "adapters" / "shop" / "v1"
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base_dir),
                                LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(adapter)
    srv, app = live
    engine = app.state.engine
    try:
        engine.swap_adapter(adapter)  # what the evolution loop calls in-process
        assert httpx.get(f"{srv.url}/healthz", timeout=10).json()["adapter"] == str(adapter)
        resp = client.chat.completions.create(model="end", messages=[{"role": "user", "content": "hi"}], user="swap")
        assert app.state.store.reply(resp.id)["adapter"] == str(adapter)
        assert engine.model.method == "lora"
        with pytest.raises(ModelError):
            engine.swap_adapter(tmp_path / "missing")
        assert engine.adapter == str(adapter)  # a failed swap keeps serving the previous adapter
    finally:
        engine.swap_adapter(None)
    assert engine.model.method == "base"
