"""Traces and JSON logs of the server: one OpenTelemetry trace per turn, off unless asked.

    tracing = Tracing.from_settings(settings)      # OTLP/HTTP to settings.otlp_endpoint, else off (no cost)
    tracing = Tracing.to(exporter)                 # any SpanExporter (tests: InMemorySpanExporter)
    tracing.record_turn(req, result, start_ns=..., end_ns=..., ttft_s=...)
    json_logging()                                 # settings.json_logs: one JSON object a log line

A turn's spans follow the OpenTelemetry GenAI semantic conventions (`gen_ai.*`), with the
routing in `endcloud.*` attributes:

    chat endcloud                 the turn (server side): request settings, response id, finish
    │                             reasons, usage, route + reasons, scores, cost, adapter
    ├── chat end                  the end model's draft: its tokens (prompt, completion, cached)
    └── chat cloud                the takeover (when there was one): provider, tokens, cost, failure

The spans are written once the turn is over, with the times the turn recorded
(`TurnResult.timings`), so nothing on the turn's path waits for tracing, and with tracing off
the turn pays for four clock reads.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

log = logging.getLogger("endcloud.serve")

SERVICE_NAME = "endcloud"
TRACER_NAME = "endcloud.serve"
PROVIDER = "endcloud"  # gen_ai.provider.name of the routed turn and the end model


class Tracing:
    """Per-turn spans into a tracer provider, or nothing (`enabled` False)."""

    def __init__(self, provider: Any = None):
        self.provider = provider
        self.tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @classmethod
    def from_settings(cls, settings: Any) -> "Tracing":
        """OTLP over HTTP to `settings.otlp_endpoint` (a collector's base URL, e.g.
        http://127.0.0.1:4318; /v1/traces is added), batched off the event loop; else off."""
        endpoint = getattr(settings, "otlp_endpoint", None)
        if not endpoint:
            return cls()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        return cls._with(BatchSpanProcessor(OTLPSpanExporter(endpoint=url, timeout=5)))

    @classmethod
    def to(cls, exporter: Any) -> "Tracing":
        """Spans handed to `exporter` as each ends (tests; a console exporter)."""
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        return cls._with(SimpleSpanProcessor(exporter))

    @classmethod
    def _with(cls, processor: Any) -> "Tracing":
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        provider.add_span_processor(processor)
        return cls(provider)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()

    def record_turn(self, req: Any, result: Any, *, start_ns: int, end_ns: int, ttft_s: float | None = None) -> None:
        """The turn's spans (see the module docstring). Never raises: tracing must not cost a reply."""
        if self.tracer is None:
            return
        try:
            self._record(req, result, start_ns, end_ns, ttft_s)
        except Exception:  # noqa: BLE001
            log.exception("tracing a turn failed")

    def _record(self, req: Any, r: Any, start_ns: int, end_ns: int, ttft_s: float | None) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        usage = r.usage or {}
        root_attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": req.model,
            "gen_ai.response.id": r.message_id,
            "gen_ai.response.model": _served_model(r),
            "gen_ai.response.finish_reasons": [r.finish_reason],
            "gen_ai.conversation.id": r.session_id,
            "gen_ai.usage.input_tokens": int(usage.get("prompt_tokens", 0)),
            "gen_ai.usage.output_tokens": int(usage.get("completion_tokens", 0)),
            "endcloud.answered_by": r.answered_by,
            "endcloud.route": r.decision.get("route", ""),
            "endcloud.route.reasons": [str(x) for x in r.decision.get("reasons", [])],
            "endcloud.cloud_failed": bool(r.cloud_failed),
            "endcloud.cloud.cost_usd": float(r.cloud_cost or 0.0),
            "endcloud.stream": bool(getattr(req, "stream", False)),
        }
        for key in ("max_tokens", "temperature", "top_p", "seed"):
            value = getattr(req, key, None)
            if key == "max_tokens":
                value = getattr(req, "max_completion_tokens", None) or value
            if value is not None:
                root_attrs[f"gen_ai.request.{key}"] = value
        if getattr(req, "stop", None):
            root_attrs["gen_ai.request.stop_sequences"] = list(req.stop)
        for key in ("match", "confidence", "frustration", "cloud_match", "sim", "final"):
            value = r.scores.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                root_attrs[f"endcloud.score.{key}"] = float(value)
        if r.scores.get("grounded") is not None:
            root_attrs["endcloud.score.grounded"] = bool(r.scores["grounded"])
        if r.adapter:
            root_attrs["endcloud.adapter"] = r.adapter
        if ttft_s is not None:
            root_attrs["endcloud.ttft_s"] = float(ttft_s)
        root = self.tracer.start_span(f"chat {req.model}", kind=SpanKind.SERVER, start_time=start_ns,
                                      attributes=_clean(root_attrs))
        ctx = trace.set_span_in_context(root)
        t = r.timings or {}
        if "end_start" in t:
            end_attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": PROVIDER,
                         "gen_ai.request.model": "end", "gen_ai.response.model": r.adapter or "base"}
            end_attrs.update({f"gen_ai.usage.{k}": v for k, v in (t.get("end_usage") or {}).items()})
            span = self.tracer.start_span("chat end", context=ctx, kind=SpanKind.INTERNAL, start_time=t["end_start"],
                                          attributes=_clean(end_attrs))
            span.end(end_time=t.get("end_stop", end_ns))
        if "cloud_start" in t:
            cloud_attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": t.get("cloud_provider", "cloud"),
                           "gen_ai.request.model": t.get("cloud_model", "cloud"),
                           "endcloud.cloud.cost_usd": float(r.cloud_cost or 0.0)}
            if r.answered_by == "cloud":
                cloud_attrs["gen_ai.usage.input_tokens"] = int(usage.get("prompt_tokens", 0))
                cloud_attrs["gen_ai.usage.output_tokens"] = int(usage.get("completion_tokens", 0))
            span = self.tracer.start_span("chat cloud", context=ctx, kind=SpanKind.CLIENT, start_time=t["cloud_start"],
                                          attributes=_clean(cloud_attrs))
            if r.cloud_failed:
                failure = next((x for x in r.decision.get("reasons", []) if str(x).startswith("cloud_failed")), "cloud_failed")
                span.set_attribute("error.type", str(failure).split(": ", 1)[-1])
                span.set_status(Status(StatusCode.ERROR, str(failure)))
            span.end(end_time=t.get("cloud_stop", end_ns))
        root.end(end_time=end_ns)


def _served_model(r: Any) -> str:
    if r.answered_by == "cloud":
        return (r.timings or {}).get("cloud_model", "cloud")
    return r.adapter or "end"


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry takes str, bool, int, float and their lists; None is left out."""
    return {k: v for k, v in attrs.items() if v is not None}


def now_ns() -> int:
    return time.time_ns()


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: time, level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 6), "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        for key in ("request_id", "message_id", "session_id"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        return json.dumps(out, ensure_ascii=False)


def json_logging(loggers: tuple[str, ...] = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "endcloud")) -> None:
    """Make every handler of these loggers (the root's, uvicorn's) write JSON lines; the root
    gets a stderr handler when it has none."""
    fmt = JsonFormatter()
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(fmt)
