"""Prometheus metrics of one server (its own registry, so several apps can live in a process).

    endcloud_requests_total{model, answered_by, status}   chat requests served / refused
    endcloud_request_latency_seconds{stream}              request start -> last byte
    endcloud_ttft_seconds{stream}                         request start -> first content token
    endcloud_takeovers_total{reason}                      turns the cloud answered
    endcloud_turns_total{answered_by}                     answered turns (end | cloud): the takeover share over any
                                                          window is rate(takeovers_total) / rate(turns_total)
    endcloud_requests_running                             chat requests in flight in the server
    endcloud_cloud_requests_running                       of those, turns waiting for a cloud takeover
    endcloud_cloud_failures_total{kind}                   cloud errors/timeouts (end reply served)
    endcloud_grounding_failures_total{kind}               end replies stating a fact the turn does not support, by
                                                          the fact's kind (price, duration, ...; a reply counts once per kind)
    endcloud_novelty_failures_total                       end replies holding novel text (neither in the turn's evidence
                                                          nor the end model's trained phrasing: `scoring.novelty`)
    endcloud_cloud_tokens_total{kind}                     prompt / completion tokens sent to the cloud
    endcloud_cloud_cost_usd_total                         money spent in the cloud (the cost ledger's US dollars)
    endcloud_cloud_budget_remaining_usd                   the cloud budget cap minus what was spent (with a cap)
    endcloud_end_prompt_tokens_total                      prompt tokens the end model read (its own tokenizer)
    endcloud_end_generation_tokens_total                  tokens the end model wrote
    endcloud_prefix_cache_queries_total                   prompt tokens looked up in the prefix cache
    endcloud_prefix_cache_hits_total                      ... and found there (key/values reused)
    endcloud_inter_token_latency_seconds                  streamed end replies: mean gap between tokens, per reply
    endcloud_adapter_info{adapter, engine}                1 for what is served now
    endcloud_evolve_rounds_total{outcome}                 online-loop rounds: promoted | rejected | failed (read
                                                          from the workspace database at scrape: any process's)
    endcloud_redactions_total{type}                       personal data replaced in what went to the cloud
    endcloud_privacy_gate_refusals_total                  cloud requests the privacy gate refused to send
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

import logging
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the app)

log = logging.getLogger("endcloud.serve")
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("endcloud_requests", "Chat requests", ["model", "answered_by", "status"], registry=r)
        self.latency = Histogram("endcloud_request_latency_seconds", "Request latency", ["stream"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("endcloud_ttft_seconds", "Time to first token", ["stream"], buckets=_LATENCY_BUCKETS, registry=r)
        self.takeovers = Counter("endcloud_takeovers", "Turns the cloud answered", ["reason"], registry=r)
        self.turns = Counter("endcloud_turns", "Answered turns", ["answered_by"], registry=r)
        self.running = Gauge("endcloud_requests_running", "Chat requests in flight", registry=r)
        self.cloud_running = Gauge("endcloud_cloud_requests_running", "Turns waiting for a cloud takeover", registry=r)
        self.end_prompt_tokens = Counter("endcloud_end_prompt_tokens", "Prompt tokens the end model read", registry=r)
        self.end_generation_tokens = Counter("endcloud_end_generation_tokens", "Tokens the end model wrote", registry=r)
        self.prefix_queries = Counter("endcloud_prefix_cache_queries", "Prompt tokens looked up in the prefix cache",
                                      registry=r)
        self.prefix_hits = Counter("endcloud_prefix_cache_hits", "Prompt tokens found in the prefix cache", registry=r)
        self.itl = Histogram("endcloud_inter_token_latency_seconds", "Mean gap between tokens of a streamed reply",
                             buckets=_ITL_BUCKETS, registry=r)
        self.adapter_info = Gauge("endcloud_adapter_info", "What is served (value 1)", ["adapter", "engine"], registry=r)
        self.cloud_failures = Counter("endcloud_cloud_failures", "Cloud errors (end reply served)", ["kind"], registry=r)
        self.grounding_failures = Counter("endcloud_grounding_failures", "End replies stating an unsupported fact",
                                          ["kind"], registry=r)
        self.novelty_failures = Counter("endcloud_novelty_failures", "End replies holding novel text", registry=r)
        self.cloud_tokens = Counter("endcloud_cloud_tokens", "Tokens exchanged with the cloud", ["kind"], registry=r)
        self.cloud_cost = Counter("endcloud_cloud_cost_usd", "Money spent in the cloud (US dollars)", registry=r)
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
        # (kind, name, help, label, read): families whose values live elsewhere (the privacy gate's
        # counts, the evolve rounds table, the ledger), read at each scrape; see `watch`
        self.sources: list[tuple[str, str, str, str | None, Callable[[], Any]]] = []
        r.register(_Sourced(self))

    def answered(self, *, by: str) -> None:
        self.turns.labels(answered_by=by).inc()

    def end_model(self, gen: Any) -> None:
        """Count one end reply's tokens (prompt counts only where the engine counted them)."""
        self.end_generation_tokens.inc(int(getattr(gen, "tokens", 0) or 0))
        prompt = getattr(gen, "prompt_tokens", None)
        if prompt is not None:
            self.end_prompt_tokens.inc(int(prompt))
            self.prefix_queries.inc(int(prompt))
            self.prefix_hits.inc(int(getattr(gen, "cached_tokens", 0) or 0))

    def watch(self, kind: str, name: str, help: str, read: Callable[[], Any], *, label: str | None = None) -> None:
        """Expose `read()` at each scrape: a number, a {label value: number} map, or None (left out).
        `kind` is "counter" (a total kept elsewhere; `name` without _total) or "gauge"."""
        self.sources.append((kind, name, help, label, read))

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


class _Sourced:
    """A collector for `Metrics.sources`: totals kept by other parts, read when scraped."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []  # values are read at scrape; nothing to declare up front

    def collect(self):
        for kind, name, help_text, label, read in self.metrics.sources:
            try:
                value = read()
            except Exception:  # a source that fails never breaks the scrape
                log.exception("metric %s could not be read", name)
                continue
            if value is None:
                continue
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, help_text, labels=[label] if label else None)
            if isinstance(value, dict):
                for key, v in sorted(value.items()):
                    family.add_metric([str(key)], float(v))
            else:
                family.add_metric([], float(value))
            yield family
