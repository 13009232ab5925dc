"""What telemetry costs a turn, in CPU: traces off vs on, and the metrics' scrape.

A turn's tracing work is `Tracing.record_turn` after the reply (three spans, GenAI attributes)
plus the batch exporter's encoding and POST in its own thread; both are CPU the server's
process spends. CPU seconds (`time.process_time`, all threads) are measured rather than wall
time, so a busy shared machine changes the figures far less than it changes serving
throughput (`bench/bench_serve.py --telemetry` measures that end to end).

    .venv/bin/python bench/bench_telemetry.py                  # 5000 turns each way
    .venv/bin/python bench/bench_telemetry.py --turns 20000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def fake_turn(i: int):
    from endcloud.serve.protocol import ChatRequest
    from endcloud.serve.turn import TurnResult

    req = ChatRequest(model="endcloud", messages=[{"role": "user", "content": "Do you ship today?"}], max_tokens=64,
                      temperature=0.6, seed=i)
    now = time.time_ns()
    res = TurnResult(message_id=f"chatcmpl-{i:024d}", created=int(time.time()), model="endcloud", text="We ship today.",
                     answered_by="cloud" if i % 5 == 0 else "end",
                     scores={"match": 0.41, "confidence": 0.83, "frustration": 0.0, "grounded": True, "matcher": "tfidf"},
                     decision={"route": "cloud" if i % 5 == 0 else "end", "reasons": ["match 0.210 < 0.25"]},
                     usage={"prompt_tokens": 180, "completion_tokens": 24, "total_tokens": 204}, session_id=f"sess-{i}",
                     adapter="shop/v3", timings={"end_start": now - 90_000_000, "end_stop": now - 40_000_000,
                                                 "end_usage": {"input_tokens": 180, "output_tokens": 24},
                                                 **({"cloud_start": now - 40_000_000, "cloud_stop": now - 1_000_000,
                                                     "cloud_provider": "openai", "cloud_model": "gpt-4o-mini"}
                                                    if i % 5 == 0 else {})})
    return req, res, now - 100_000_000, now


def run(tracing, turns: int) -> float:
    items = [fake_turn(i) for i in range(turns)]
    t0 = time.process_time()
    for i, (req, res, start, end) in enumerate(items):
        tracing.record_turn(req, res, start_ns=start, end_ns=end, ttft_s=0.05)
        if tracing.provider is not None and i % 500 == 499:
            tracing.provider.force_flush()  # a server makes turns far slower than this loop: no span is dropped
    if tracing.provider is not None:
        tracing.provider.force_flush()
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    from bench_serve import otlp_sink

    from endcloud.serve.metrics import Metrics
    from endcloud.serve.settings import ServeSettings
    from endcloud.serve.telemetry import Tracing

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=5000)
    args = ap.parse_args(argv)
    sink = otlp_sink()
    off = run(Tracing.from_settings(ServeSettings()), args.turns)
    on = run(Tracing.from_settings(ServeSettings(otlp_endpoint=sink.url)), args.turns)
    print(f"tracing off: {1e6 * off / args.turns:.1f} µs CPU a turn; on (OTLP/HTTP to a local sink): "
          f"{1e6 * on / args.turns:.1f} µs CPU a turn ({sink.received[0]} batches, {sink.received[1] / args.turns:.0f} "
          f"bytes a turn)")
    m = Metrics()
    t0 = time.process_time()
    for i in range(args.turns):
        m.answered(by="end")
        m.end_model(type("G", (), {"tokens": 24, "prompt_tokens": 180, "cached_tokens": 120})())
        m.ttft.labels(stream="true").observe(0.05)
        m.latency.labels(stream="true").observe(0.3)
    per = (time.process_time() - t0) / args.turns
    t0 = time.process_time()
    for _ in range(100):
        body = m.render()
    print(f"metrics: {1e6 * per:.1f} µs CPU a turn to update; a scrape renders {len(body)} bytes in "
          f"{1e3 * (time.process_time() - t0) / 100:.2f} ms CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
