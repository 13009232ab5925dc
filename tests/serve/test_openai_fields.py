"""The OpenAI chat fields as vLLM serves them, checked with the official `openai` client
against a real `endcloud serve` app on 127.0.0.1 (the tiny EndModel on the continuous
batch, the fault-injecting cloud double behind the privacy gate): finish_reason "length",
stop sequences, logprobs, token-counted usage, the include_usage chunk, a takeover
announced early on a routed stream, and a 400 naming each field the server cannot honour."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import OpenAI

from endcloud.cloud import OpenAITeacher
from endcloud.loopback import LoopbackServer
from endcloud.serve.app import create_app
from endcloud.serve.protocol import StopFilter
from endcloud.serve.settings import ServeSettings
from endcloud.testing import FaultyCloud

MAX = 12
Q = "Do you ship to Shanghai today?"
ANGRY = "This is ridiculous, I want a real person!!"


@pytest.fixture(scope="module")
def live(tmp_path_factory, end_model):
    root = tmp_path_factory.mktemp("openai-fields")
    with FaultyCloud(model="double") as cloud:
        teacher = OpenAITeacher(base_url=cloud.base_url, model="double", api_key="k", timeout=5, max_retries=0)
        settings = ServeSettings(db_path=root / "endcloud.db", audit_path=root / "audit.jsonl", min_match=0.0,
                                 min_confidence=0.0, max_new_tokens=MAX, cloud_timeout_s=10)
        with LoopbackServer(create_app(settings, engine=end_model, teacher=teacher)) as srv:
            yield srv, OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)


SAMPLED = {"temperature": 1.0, "top_p": 1.0}  # random weights: greedy replies repeat one special token (no text)


@pytest.fixture(scope="module")
def seed(end_model):
    """A seed whose sampled reply to Q has text all along (the server's replies are seeded the same)."""
    for s in range(40):
        g = end_model.generate([[{"role": "user", "content": Q}]], max_new_tokens=MAX, seed=s, **SAMPLED)[0]
        if g.tokens == MAX and len(g.text) >= 8:
            return s
    pytest.skip("no seed gives the fixture question a full-length reply")


def ask(client, **kw):
    kw.setdefault("messages", [{"role": "user", "content": Q}])
    return client.chat.completions.create(model=kw.pop("model", "end"), **SAMPLED, **kw)


def test_max_tokens_cut_says_length(live):
    _, client = live
    resp = ask(client, max_tokens=3)
    assert resp.usage.completion_tokens == 3
    assert resp.choices[0].finish_reason == "length"


def test_stop_sequence_ends_the_reply_before_it(live, seed):
    _, client = live
    full = ask(client, max_tokens=MAX, seed=seed).choices[0].message.content
    assert len(full) >= 8, full
    stop = full[4:6]
    cut = full[:full.index(stop)]
    resp = ask(client, max_tokens=MAX, seed=seed, stop=[stop, "never-written-zz"])
    assert resp.choices[0].message.content == cut
    assert resp.choices[0].finish_reason == "stop"
    chunks = list(ask(client, max_tokens=MAX, seed=seed, stop=stop, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == resp.choices[0].message.content and stop not in streamed
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_logprobs_are_the_end_models_tokens(live, seed):
    _, client = live
    resp = ask(client, max_tokens=MAX, seed=seed, logprobs=True)
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens
    assert all(t.logprob <= 0.0 for t in content)
    assert "".join(t.token for t in content).strip() == resp.choices[0].message.content
    # the confidence the router read is exp(mean logprob), the stop token's included when there was one
    conf = resp.model_extra["endcloud"]["scores"]["confidence"]
    assert 0 < conf <= 1
    assert ask(client, max_tokens=MAX).choices[0].logprobs is None  # not asked, not sent


def test_usage_counts_the_end_models_tokens(live, end_model):
    _, client = live
    resp = ask(client, max_tokens=5)
    prompt = end_model.prompt([{"role": "user", "content": Q}]).ids
    assert resp.usage.prompt_tokens == len(prompt)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_include_usage_sends_a_spec_shaped_last_chunk(live):
    _, client = live
    chunks = list(ask(client, max_tokens=4, stream=True, stream_options={"include_usage": True}))
    last, before = chunks[-1], chunks[-2]
    assert last.choices == [] and last.usage.completion_tokens == 4
    assert last.usage.total_tokens == last.usage.prompt_tokens + 4
    assert before.choices[0].finish_reason == "length" and before.usage is None


def test_a_routed_stream_announces_the_takeover_before_the_cloud_answers(live):
    srv, _ = live
    body = {"model": "endcloud", "stream": True, "messages": [{"role": "user", "content": ANGRY}], "max_tokens": 4}
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=60) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    first_content = next(i for i, e in enumerate(events) if e["choices"] and e["choices"][0]["delta"].get("content"))
    announced = [i for i, e in enumerate(events) if (e.get("endcloud") or {}).get("decision", {}).get("route") == "cloud"]
    assert announced and announced[0] < first_content
    assert events[-1]["endcloud"]["answered_by"] == "cloud"


@pytest.mark.parametrize("field, kw", [
    ("response_format", {"response_format": {"type": "json_object"}}),
    ("response_format", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
    ("tools", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
    ("tool_choice", {"tool_choice": "required"}),
    ("top_logprobs", {"logprobs": True, "top_logprobs": 2}),
    ("logit_bias", {"logit_bias": {"5": 10}}),
])
def test_fields_the_server_cannot_honour_are_refused_by_name(live, field, kw):
    _, client = live
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, max_tokens=2, **kw)
    assert e.value.param == field and field in e.value.message


def test_cloud_logprobs_refused_and_text_format_accepted(live):
    _, client = live
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, model="cloud", logprobs=True)
    assert e.value.param == "logprobs"
    assert ask(client, max_tokens=2, response_format={"type": "text"}, tool_choice="none").choices[0].message is not None


def test_health_alias(live):
    srv, _ = live
    assert httpx.get(srv.url + "/health", timeout=10).json()["status"] == "ok"


def test_stop_filter_holds_back_a_partial_stop():
    f = StopFilter(["END"])
    assert f.feed("abc E") == "abc "  # "E" may start END
    assert f.feed("x") == "Ex"
    assert f.feed(" EN") == " "
    assert f.feed("D tail") == "" and f.stopped
    assert f.shown == "abc Ex "


def test_plain_completion_on_the_end_model(live, end_model, seed):
    _, client = live
    resp = client.completions.create(model="end", prompt="Towels ship", max_tokens=4, seed=seed, **SAMPLED)
    assert resp.object == "text_completion" and resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 4
    assert resp.usage.prompt_tokens == len(end_model.tokenizer("Towels ship", add_special_tokens=False)["input_ids"])
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="end", prompt="x", echo=True)
    assert e.value.param == "echo"
