"""Throughput of the cloud client against the fault-injecting double, as a ratio of the ideal.

    .venv/bin/python bench/bench_teacher.py [--requests 400] [--concurrency 32] [--latency 0.2]

The double runs in its own process (so the server's work does not share our GIL) with
`latency` seconds per good reply and 10% faults: 4% 429 with Retry-After 0.1 s, 3% 500, 3%
malformed JSON (the malformed ones cost a full latency, like a real truncated reply).

Ideal = concurrency / latency requests per second: every slot busy, every request answered
first time. Faults make that unreachable even for a perfect client, so we also print the
fault-adjusted ideal: with slot time per answered request

    E = (p_ok·L + p_malformed·L + p_429·RetryAfter) / (1 - p_fault)

(a 429 holds its slot while waiting, as the server asked for less pressure; a 5xx or a
malformed reply releases it during backoff, and 5xx/429 answers come back at once).
`lost` counts requests that never got a correct reply; it must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--p429", type=float, default=0.04)
    ap.add_argument("--p500", type=float, default=0.03)
    ap.add_argument("--pmalformed", type=float, default=0.03)
    ap.add_argument("--retry-after", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=str, default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()

    from endcloud.cloud import OpenAITeacher

    server = subprocess.Popen(
        [sys.executable, "-m", "endcloud.cloud.testing", "--latency", str(a.latency), "--p429", str(a.p429),
         "--p500", str(a.p500), "--pmalformed", str(a.pmalformed), "--retry-after", str(a.retry_after), "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise SystemExit(f"the double did not start: {server.stderr.read()}")
        runs = []
        for rep in range(a.repeats):
            t = OpenAITeacher(require_gate=False, base_url=base_url, model="bench", api_key="x", concurrency=a.concurrency,
                              max_retries=6, backoff=0.05, timeout=10.0)

            async def go():
                try:
                    done: list[float] = []

                    async def one(i: int):
                        try:
                            r = await t.areply([{"role": "user", "content": f"q{rep}-{i}"}])
                            done.append(time.perf_counter())
                            return r.text == f"Reply: q{rep}-{i}"
                        except Exception:
                            return False
                    t0 = time.perf_counter()
                    ok = await asyncio.gather(*(one(i) for i in range(a.requests)))
                    wall = time.perf_counter() - t0
                    # Steady state: completions between the 10th and 90th percentile of the
                    # batch, i.e. without the ramp-up and the half-empty last round.
                    done.sort()
                    lo, hi = len(done) // 10, (len(done) * 9) // 10
                    steady = (hi - lo) / (done[hi] - done[lo]) if hi > lo and done[hi] > done[lo] else 0.0
                    return wall, ok, steady
                finally:
                    await t.aclose()

            cpu0 = time.process_time()
            wall, ok, steady = asyncio.run(go())
            cpu = time.process_time() - cpu0
            lost = ok.count(False)
            rps = (a.requests - lost) / wall
            runs.append({"wall_s": round(wall, 3), "req_per_s": round(rps, 1), "steady_req_per_s": round(steady, 1),
                         "client_cpu_ms_per_request": round(1000 * cpu / a.requests, 2),
                         # share of one core the client got; with work always queued, < 1 means
                         # the OS gave the core to someone else (a shared machine), not that we idled
                         "client_cpu_share_of_a_core": round(cpu / wall, 2),
                         "cpu_bound_ceiling_req_per_s": round(a.requests / cpu, 1), "lost": lost,
                         "retries": t.stats.retries, "attempts": t.stats.attempts, "outcomes": dict(t.stats.outcomes)})
    finally:
        server.terminate()
        server.wait(timeout=10)

    ideal = a.concurrency / a.latency
    p_fault = a.p429 + a.p500 + a.pmalformed
    slot = ((1 - p_fault) * a.latency + a.pmalformed * a.latency + a.p429 * a.retry_after) / (1 - p_fault)
    adjusted = a.concurrency / slot
    best = max(runs, key=lambda r: r["req_per_s"])
    median = sorted(r["req_per_s"] for r in runs)[len(runs) // 2]
    steady = sorted(r["steady_req_per_s"] for r in runs)[len(runs) // 2]
    load = os.getloadavg()
    out = {
        "requests": a.requests, "concurrency": a.concurrency, "latency_s": a.latency,
        "faults": {"p429": a.p429, "p500": a.p500, "pmalformed": a.pmalformed, "retry_after_s": a.retry_after},
        "ideal_req_per_s": round(ideal, 1), "fault_adjusted_ideal_req_per_s": round(adjusted, 1),
        "median_req_per_s": median, "ratio_to_ideal": round(median / ideal, 3),
        "ratio_to_fault_adjusted_ideal": round(median / adjusted, 3),
        "best_ratio_to_ideal": round(best["req_per_s"] / ideal, 3),
        "median_steady_req_per_s": steady, "steady_ratio_to_ideal": round(steady / ideal, 3),
        "steady_ratio_to_fault_adjusted_ideal": round(steady / adjusted, 3),
        "lost_total": sum(r["lost"] for r in runs), "runs": runs,
        "cpus": os.cpu_count(), "loadavg_1m_at_end": round(load[0], 2),
    }
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0 if out["lost_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
