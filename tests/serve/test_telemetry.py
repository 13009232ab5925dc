"""Telemetry of a real server on 127.0.0.1 (the tiny EndModel on the continuous batch, the
cloud double behind the privacy gate): one trace per turn following the GenAI semantic
conventions (read with the SDK's InMemorySpanExporter, and received as OTLP/HTTP by a real
collector double), the renamed and new Prometheus metrics, and JSON log lines."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest
from fastapi import FastAPI, Request
from openai import OpenAI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from endcloud.cloud import OpenAITeacher
from endcloud.loopback import LoopbackServer
from endcloud.serve.app import create_app
from endcloud.serve.settings import ServeSettings
from endcloud.serve.telemetry import JsonFormatter, Tracing
from endcloud.store.labels import LabelStore
from endcloud.testing import FaultyCloud, ScriptedModel

ANGRY = "This is ridiculous, I want a real person!! Call me on 13812345678"


@pytest.fixture(scope="module")
def live(tmp_path_factory, end_model):
    root = tmp_path_factory.mktemp("telemetry")
    labels = LabelStore(root / "endcloud.db")  # one promoted and one rejected round of the online loop
    for promoted in (True, False):
        labels.finish_round(labels.start_round(3, "shop/v1"), candidate="shop/v2", promoted=promoted, detail={})
    labels.conn.close()
    with FaultyCloud(model="double") as cloud:
        teacher = OpenAITeacher(base_url=cloud.base_url, model="double", api_key="k", timeout=5, max_retries=0)
        settings = ServeSettings(db_path=root / "endcloud.db", audit_path=root / "audit.jsonl", min_match=0.0,
                                 min_confidence=0.0, max_new_tokens=8, cloud_timeout_s=10, worker="thread")
        app = create_app(settings, engine=end_model, teacher=teacher)
        with LoopbackServer(app) as srv:
            exporter = InMemorySpanExporter()
            app.state.service.tracing = Tracing.to(exporter)
            yield srv, OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60), exporter


def test_a_takeover_is_one_trace_with_genai_attributes(live):
    srv, client, exporter = live
    exporter.clear()
    resp = client.chat.completions.create(model="endcloud", messages=[{"role": "user", "content": ANGRY}],
                                          max_tokens=8, temperature=1.0, seed=3)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"chat endcloud", "chat end", "chat cloud"}
    root, end, cloud = spans["chat endcloud"], spans["chat end"], spans["chat cloud"]
    assert end.parent.span_id == root.context.span_id and cloud.parent.span_id == root.context.span_id
    assert end.context.trace_id == cloud.context.trace_id == root.context.trace_id
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "endcloud"
    assert a["gen_ai.response.id"] == resp.id and a["gen_ai.request.max_tokens"] == 8
    assert a["gen_ai.usage.input_tokens"] == resp.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens
    assert a["endcloud.route"] == "cloud" and any("frustration" in r for r in a["endcloud.route.reasons"])
    assert a["endcloud.answered_by"] == "cloud" and 0 < a["endcloud.score.confidence"] <= 1
    assert cloud.attributes["gen_ai.request.model"] == "double"
    assert end.attributes["gen_ai.usage.input_tokens"] > 0  # the end model's own prompt tokens
    assert root.start_time <= end.start_time <= end.end_time <= cloud.start_time <= cloud.end_time <= root.end_time


def test_metrics_renamed_and_completed(live):
    srv, client, _ = live
    client.chat.completions.create(model="endcloud", messages=[{"role": "user", "content": ANGRY}], max_tokens=4)
    list(client.chat.completions.create(model="end", messages=[{"role": "user", "content": "hello"}], max_tokens=6,
                                        temperature=1.0, seed=5, stream=True))
    text = httpx.get(srv.url + "/metrics", timeout=10).text

    def value(pattern: str) -> float:
        m = re.search("^" + re.escape(pattern) + r" ([0-9.e+-]+)$", text, re.M)
        assert m, pattern
        return float(m.group(1))

    assert value('endcloud_turns_total{answered_by="cloud"}') >= 1
    assert "endcloud_takeover_rate" not in text and "endcloud_cloud_cost_total" not in text
    assert value("endcloud_cloud_cost_usd_total") >= 0
    assert value("endcloud_end_prompt_tokens_total") > 0 and value("endcloud_end_generation_tokens_total") > 0
    assert value("endcloud_prefix_cache_queries_total") >= value("endcloud_prefix_cache_hits_total") >= 0
    assert value("endcloud_requests_running") == 0 and value("endcloud_cloud_requests_running") == 0
    assert value("endcloud_inter_token_latency_seconds_count") >= 1
    assert value('endcloud_adapter_info{adapter="base",engine="transformers"}') == 1
    assert value('endcloud_redactions_total{type="PHONE"}') >= 1  # the phone number never left
    assert value("endcloud_privacy_gate_refusals_total") == 0
    assert value('endcloud_evolve_rounds_total{outcome="promoted"}') == 1
    assert value('endcloud_evolve_rounds_total{outcome="rejected"}') == 1


def test_traces_reach_an_otlp_collector(tmp_path):
    got: list[tuple[str, bytes]] = []
    collector = FastAPI()

    @collector.post("/v1/traces")
    async def traces(request: Request):
        got.append((request.headers.get("content-type", ""), await request.body()))
        return {}

    with LoopbackServer(collector) as otlp:
        settings = ServeSettings(db_path=tmp_path / "e.db", max_new_tokens=3, otlp_endpoint=otlp.url)
        app = create_app(settings, engine=ScriptedModel())
        with LoopbackServer(app) as srv:
            r = httpx.post(srv.url + "/v1/chat/completions", timeout=60,
                           json={"model": "end", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
            assert r.status_code == 200
            tracing = app.state.service.tracing
            assert tracing.enabled
            tracing.provider.force_flush()
    assert got and got[0][0] == "application/x-protobuf"
    assert b"chat end" in got[0][1] and r.json()["id"].encode() in got[0][1]


def test_tracing_is_off_without_an_endpoint():
    assert not Tracing.from_settings(ServeSettings()).enabled


def test_json_log_lines():
    rec = logging.LogRecord("endcloud.serve", logging.WARNING, __file__, 1, "cloud failed: %s", ("timeout",), None)
    line = json.loads(JsonFormatter().format(rec))
    assert line["level"] == "warning" and line["message"] == "cloud failed: timeout" and line["logger"] == "endcloud.serve"


def test_the_grafana_dashboard_reads_metrics_the_server_exposes(live):
    from pathlib import Path

    srv, _, _ = live
    text = httpx.get(srv.url + "/metrics", timeout=10).text
    exposed = set(re.findall(r"^# TYPE (endcloud_\w+) ", text, re.M))
    exposed |= {n + s for n in exposed for s in ("_total", "_bucket", "_sum", "_count")}
    dash = (Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text()
    used = set(re.findall(r"endcloud_\w+", dash)) - {"endcloud_serve"}
    conditional = {"endcloud_cloud_budget_remaining_usd"}  # only with a cloud budget cap
    assert used - conditional and not (used - conditional - exposed), sorted(used - conditional - exposed)
