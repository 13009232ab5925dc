"""The privacy gate on the wire, and the wire format itself (checked by the official openai client)."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from endcloud.cloud import OpenAITeacher, PrivacyGate, make_teacher
from endcloud.cloud.distill import distill
from endcloud.errors import PrivacyError
from endcloud.records import Pair, Turn

privacy = pytest.importorskip("endcloud.privacy")


def pii_pairs(n: int, seed: int = 0) -> tuple[list[Pair], list[str]]:
    """Customer conversations full of generated PII (every type, zh and en); and the values."""
    from endcloud.privacy.synth import make_case

    rng = random.Random(seed)
    types = list(privacy.PII_TYPES)
    pairs, values = [], []
    for i in range(n):
        lang = "zh" if i % 2 == 0 else "en"
        cases = [make_case(rng, types[(3 * i + j) % len(types)], lang) for j in range(3)]
        values += [g[3] for c in cases for g in c.gold]
        agent = "好的，已为您备注" if lang == "zh" else "Noted, thank you"
        pairs.append(Pair(id=f"p{i}", source="test", session=f"s{i}", lang=lang,
                          context=[Turn("user", cases[0].text), Turn("assistant", agent), Turn("user", cases[1].text)],
                          query=cases[2].text, response=f"{agent}: {cases[0].text}"))
    return pairs, values


@pytest.fixture
def env(monkeypatch, cloud, tmp_path):
    monkeypatch.setenv("ENDCLOUD_CLOUD_BASE_URL", cloud.base_url)
    monkeypatch.setenv("ENDCLOUD_CLOUD_MODEL", "gemini-1.5-pro")
    monkeypatch.setenv("ENDCLOUD_CLOUD_API_KEY", "sk-test")
    return tmp_path


def test_wire_pii_distilled_through_the_double_never_leaves(env, cloud):
    pairs, values = pii_pairs(24)
    audit = privacy.AuditLog(env / "audit.jsonl")
    teacher = make_teacher("openai", workspace=env, examples=pairs, shots=10, audit=audit)
    labels, summary = distill(pairs, teacher, concurrency=4)
    assert summary.labelled == 24 and summary.calls == 24 and not summary.failures
    assert len(cloud.raw) == 24
    for raw in cloud.raw:
        body = raw.decode("utf-8")
        # rescanned by the detectors: nothing personal on the wire ...
        assert privacy.detect(body) == [] and not privacy.contains_pii(body)
        for m in json.loads(body)["messages"]:
            assert privacy.detect(m["content"]) == []
        # ... and, independent of the detectors, none of the generated values verbatim
        leaked = [v for v in values if v in body]
        assert not leaked, leaked
    # the audit log holds exactly what left: one entry per request, hashes of the wire bytes
    entries = list(audit.entries())
    assert sorted(e["sha256"] for e in entries) == sorted(hashlib.sha256(r).hexdigest() for r in cloud.raw)
    assert all(e["pii_spans"] == 0 for e in entries)
    # placeholders come back restored: the double echoes the last (redacted) customer line
    by_id = {p.id: p for p in pairs}
    for lab in labels:
        assert lab.label == "Reply: " + by_id[lab.id].query


def test_gate_refuses_to_send_when_redaction_leaves_pii(monkeypatch, cloud, tmp_path):
    monkeypatch.setattr(privacy, "redact_messages", lambda messages, vault, lang=None: [dict(m) for m in messages])
    gate = PrivacyGate(OpenAITeacher(base_url=cloud.base_url, model="m", api_key="k"), audit=privacy.AuditLog(tmp_path / "a.jsonl"))
    with pytest.raises(PrivacyError, match="PHONE"):
        gate.reply([{"role": "user", "content": "我的手机号是13812345678，麻烦联系我"}])
    assert cloud.requests == [] and not (tmp_path / "a.jsonl").exists()


def test_one_vault_per_request_keeps_placeholders_consistent(cloud, tmp_path):
    cloud.responder = lambda messages: "已记录 " + " / ".join(m["content"] for m in messages if m["role"] == "user")
    gate = PrivacyGate(OpenAITeacher(base_url=cloud.base_url, model="m", api_key="k"), audit=privacy.AuditLog(tmp_path / "a.jsonl"))
    msgs = [{"role": "user", "content": "电话13812345678"}, {"role": "assistant", "content": "好的"},
            {"role": "user", "content": "再说一遍：13812345678，另一个13900001111"}]
    r = gate.reply(msgs)
    sent = cloud.requests[0]["messages"]
    assert sent[0]["content"] == "电话[PHONE_1]" and sent[2]["content"] == "再说一遍：[PHONE_1]，另一个[PHONE_2]"
    assert r.text == "已记录 电话13812345678 / 再说一遍：13812345678，另一个13900001111"


def test_remote_teachers_always_come_behind_the_gate(env):
    t = make_teacher("openai", workspace=env)
    assert isinstance(t, PrivacyGate) and t.remote


def test_official_openai_client_speaks_the_doubles_wire_format(cloud):
    """The official client and ours exchange the same JSON with the double: proof of the
    format, not just of our own parser."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=cloud.base_url, api_key="sk-test", max_retries=0, timeout=10)
    msgs = [{"role": "system", "content": "你是客服"}, {"role": "user", "content": "发什么快递？"}]
    out = client.chat.completions.create(model="gemini-1.5-pro", messages=msgs, temperature=0.0, max_tokens=64)
    assert out.choices[0].message.content == "Reply: 发什么快递？" and out.usage.prompt_tokens > 0
    chunks = client.chat.completions.create(model="gemini-1.5-pro", messages=msgs, stream=True,
                                            stream_options={"include_usage": True})
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == "Reply: 发什么快递？"
    ours = OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="gemini-1.5-pro", api_key="sk-test", max_tokens=64)
    r = ours.reply(msgs)
    assert r.text == out.choices[0].message.content and r.usage.prompt_tokens == out.usage.prompt_tokens
    theirs_body, our_body = cloud.requests[0], cloud.requests[2]
    assert our_body == theirs_body  # byte-for-byte the same request semantics
    # and the 429 the double sends is one the official client honours too (Retry-After)
    cloud.script, cloud.retry_after = ["429"], 0.01
    retrying = openai.OpenAI(base_url=cloud.base_url, api_key="sk-test", max_retries=1, timeout=10)
    assert retrying.chat.completions.create(model="m", messages=msgs).choices[0].message.content == "Reply: 发什么快递？"
    assert cloud.outcomes[-2:] == ["429", "ok"]


def test_default_teacher_is_the_cloud_when_configured_else_the_reference(env, monkeypatch, zh_pack_dir, tmp_path):
    from endcloud.cloud import ReferenceTeacher, default_teacher
    from endcloud.cloud.prompt import PromptedTeacher

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"id": "a", "query": "发什么快递", "response": "中通"}\n', encoding="utf-8")
    t = default_teacher(shop=zh_pack_dir, workspace=env, examples=pairs)
    assert isinstance(t, PromptedTeacher) and t.remote and len(t.bank) == 1
    monkeypatch.delenv("ENDCLOUD_CLOUD_BASE_URL")
    t = default_teacher(shop=zh_pack_dir, workspace=env, examples=pairs)
    assert isinstance(t, ReferenceTeacher) and not t.remote


def test_gate_rescans_the_exact_body_before_it_leaves(monkeypatch, cloud, tmp_path):
    real = privacy.contains_pii
    # a detector that only fires on the serialised request (as if JSON framing exposed something)
    monkeypatch.setattr(privacy, "contains_pii", lambda text: '"model"' in text or real(text))
    gate = PrivacyGate(OpenAITeacher(base_url=cloud.base_url, model="m", api_key="k"), audit=privacy.AuditLog(tmp_path / "a.jsonl"))
    with pytest.raises(PrivacyError, match="body"):
        gate.reply([{"role": "user", "content": "在吗"}])
    assert cloud.requests == [] and not (tmp_path / "a.jsonl").exists()


def test_an_ungated_client_refuses_to_send(cloud):
    t = OpenAITeacher(base_url=cloud.base_url, model="m", api_key="k")
    with pytest.raises(PrivacyError, match="PrivacyGate"):
        t.reply([{"role": "user", "content": "电话13812345678"}])
    assert cloud.requests == []
