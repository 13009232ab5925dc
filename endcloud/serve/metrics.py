"""Prometheus metrics of one server (its own registry, so several apps can live in a process).

    endcloud_requests_total{model, answered_by, status}   chat requests served / refused
    endcloud_request_latency_seconds{stream}              request start -> last byte
    endcloud_ttft_seconds{stream}                         request start -> first content token
    endcloud_takeovers_total{reason}                      turns the cloud answered
    endcloud_takeover_rate                                takeovers / answered turns
    endcloud_cloud_failures_total{kind}                   cloud errors/timeouts (end reply served)
    endcloud_grounding_failures_total{kind}               end replies stating a fact the turn does not support, by
                                                          the fact's kind (price, duration, ...; a reply counts once per kind)
    endcloud_cloud_tokens_total{kind}                     prompt / completion tokens sent to the cloud
    endcloud_cloud_cost_total                             money spent in the cloud
    endcloud_batch_size                                   conversations per end-model generate call
                                                          (continuous batching: admitted together into the running batch)
    endcloud_batch_occupancy                              continuous batching: rows in each decode step
    endcloud_feedback_total{rating}
    endcloud_engine_memory_bytes{part}                    what the end model's engine holds, each part within a
                                                          setting: prefix_cache, kv_pools, transcripts (read at scrape)
    endcloud_intents_total{intent}                        customer messages by intent (`endcloud.tasks.classify`)
    endcloud_sentiment_total{sentiment}                   customer messages by sentiment (negative / neutral / positive)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the app)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("endcloud_requests", "Chat requests", ["model", "answered_by", "status"], registry=r)
        self.latency = Histogram("endcloud_request_latency_seconds", "Request latency", ["stream"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("endcloud_ttft_seconds", "Time to first token", ["stream"], buckets=_LATENCY_BUCKETS, registry=r)
        self.takeovers = Counter("endcloud_takeovers", "Turns the cloud answered", ["reason"], registry=r)
        self.takeover_rate = Gauge("endcloud_takeover_rate", "Takeovers / answered turns", registry=r)
        self.cloud_failures = Counter("endcloud_cloud_failures", "Cloud errors (end reply served)", ["kind"], registry=r)
        self.grounding_failures = Counter("endcloud_grounding_failures", "End replies stating an unsupported fact",
                                          ["kind"], registry=r)
        self.cloud_tokens = Counter("endcloud_cloud_tokens", "Tokens exchanged with the cloud", ["kind"], registry=r)
        self.cloud_cost = Counter("endcloud_cloud_cost", "Money spent in the cloud", registry=r)
        self.batch_size = Histogram("endcloud_batch_size", "Conversations per generate call",
                                    buckets=(1, 2, 4, 8, 12, 16, 32, 64), registry=r)
        self.batch_occupancy = Histogram("endcloud_batch_occupancy", "Rows in each decode step of the running batch",
                                         buckets=(1, 2, 4, 8, 12, 16, 32, 64), registry=r)
        self.feedback = Counter("endcloud_feedback", "Feedback received", ["rating"], registry=r)
        self.intents = Counter("endcloud_intents", "Customer messages by intent", ["intent"], registry=r)
        self.sentiments = Counter("endcloud_sentiment", "Customer messages by sentiment", ["sentiment"], registry=r)
        self.engine_memory = Gauge("endcloud_engine_memory_bytes", "Memory the end model's engine holds, by part",
                                   ["part"], registry=r)
        self.on_render: list = []  # callables refreshing gauges read at scrape time (the app adds the engine's)
        self._answered = 0
        self._taken_over = 0

    def answered(self, *, by: str) -> None:
        self._answered += 1
        self._taken_over += by == "cloud"
        self.takeover_rate.set(self._taken_over / self._answered)

    def dialogue(self, *, intent: str | None, sentiment: str | None) -> None:
        """Count one customer message's intent and sentiment (None: not analysed)."""
        if intent:
            self.intents.labels(intent=intent).inc()
        if sentiment:
            self.sentiments.labels(sentiment=sentiment).inc()

    def render(self) -> bytes:
        for refresh in self.on_render:
            refresh()
        return generate_latest(self.registry)

    def engine(self, memory: dict[str, int]) -> None:
        """Set the engine-memory gauge from `AsyncEngine.memory()`."""
        for part, value in memory.items():
            self.engine_memory.labels(part=part).set(value)
