"""Throughput of the cloud client against the fault-injecting double, as a ratio of the ideal.

    .venv/bin/python bench/bench_teacher.py --requests 1600             # the issue's target run
    .venv/bin/python bench/bench_teacher.py --transports default,httpx     # + httpx's own transport, interleaved
    .venv/bin/python bench/bench_teacher.py --latency 1.0 --repeats 1

The double runs in its own process (so the server's work does not share our GIL) with
`latency` seconds per good reply and 10% faults: 4% 429 with Retry-After 0.1 s, 3% 500, 3%
malformed JSON (the malformed ones cost a full latency, like a real truncated reply).

Ideal = concurrency / latency requests per second: every slot busy, every request answered
first time. This is the headline: `ratio_to_ideal` = answered requests / whole wall time
(ramp-up, connection set-up and the last part-full round included) / ideal, median of the
repeats. Faults make the ideal unreachable even for a perfect client, so we also print the
fault-adjusted ideal: the slot time per answered request of a perfect client is

    E = L · (1 - p_fault + p_malformed) / (1 - p_fault)

(every attempt is a fresh draw, so a request needs 1/(1-p) attempts; a malformed reply
costs a full latency L; a 429 or 500 answers at once and the client waits out its
Retry-After or backoff without holding a slot). `steady` counts the completions between
the 10th and 90th percentile of the batch per second (no ramp-up, no tail).

Where the time went, per request (from `OpenAITeacher.stats`): `queued` waiting for a
concurrency slot (here mostly the batch's own line, N requests for C slots), `wire` on the
wire with a slot (an ideal attempt is `latency` long), `slept` in backoff/Retry-After
without a slot; `slot_busy_share` = wire time / (C · wall), the share of slot time spent
on the wire (the rest is ramp-up, the tail, and gaps between one request ending and the
next starting). Client and server CPU are process CPU time per request and over wall time
(share of one core). The machine may be shared: the load average
before and after each run is printed beside it; compare transports within one run.

`lost` counts requests that never got their own correct reply; it must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

TRANSPORTS = ("default", "httpx")  # the client's default (aiohttp via httpx-aiohttp), httpx's stock pool


def _make_transport(name: str, concurrency: int):
    """None = the teacher's default (aiohttp under httpx); 'httpx' = httpx's own."""
    if name == "default":
        return None
    import httpx

    return httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))


def one_run(a: argparse.Namespace, base_url: str, server_pid: int, transport: str, rep: int) -> dict:
    import psutil

    from endcloud.cloud import OpenAITeacher

    t = OpenAITeacher(require_gate=False, base_url=base_url, model="bench", api_key="x", concurrency=a.concurrency,
                      max_retries=6, backoff=0.05, timeout=10.0, transport=_make_transport(transport, a.concurrency))

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
            done.sort()
            lo, hi = len(done) // 10, (len(done) * 9) // 10
            steady = (hi - lo) / (done[hi] - done[lo]) if hi > lo and done[hi] > done[lo] else 0.0
            ends = {"first_reply_s": done[0] - t0 if done else None,
                    # from the last full round's start to the end: fewer than C requests left
                    "last_round_s": done[-1] - done[-a.concurrency] if len(done) >= a.concurrency else None}
            return wall, ok, steady, ends
        finally:
            await t.aclose()

    server = psutil.Process(server_pid)
    load0 = os.getloadavg()[0]
    s0 = sum(server.cpu_times()[:2])
    cpu0 = time.process_time()
    wall, ok, steady, ends = asyncio.run(go())
    cpu = time.process_time() - cpu0
    server_cpu = sum(server.cpu_times()[:2]) - s0
    lost = ok.count(False)
    st = t.stats
    n = max(1, st.requests)
    return {
        "transport": transport, "wall_s": round(wall, 3), "req_per_s": round((a.requests - lost) / wall, 1),
        "steady_req_per_s": round(steady, 1), "lost": lost,
        "client_cpu_ms_per_request": round(1000 * cpu / a.requests, 2),
        # share of one core; with work always queued, < 1 means the client was not CPU-bound
        # (or, on a shared machine, that the OS gave the core to someone else)
        "client_cpu_share_of_a_core": round(cpu / wall, 2),
        "server_cpu_ms_per_request": round(1000 * server_cpu / a.requests, 2),
        "server_cpu_share_of_a_core": round(server_cpu / wall, 2),
        "per_request_ms": {"queued": round(1000 * st.queued_s / n, 1), "wire": round(1000 * st.wire_s / n, 1),
                           "slept": round(1000 * st.slept_s / n, 1)},
        "wire_ms_per_attempt": round(1000 * st.wire_s / max(1, st.attempts), 1),
        # slot-seconds on the wire / (C x wall): 1 = no slot ever idle (then only a slower
        # wire, i.e. latency added by client, server or OS, can cost throughput)
        "slot_busy_share": round(st.wire_s / (a.concurrency * wall), 3),
        **{k: (round(v, 3) if v is not None else None) for k, v in ends.items()},
        "retries": st.retries, "attempts": st.attempts, "outcomes": dict(st.outcomes),
        "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


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
    ap.add_argument("--transports", type=str, default="default",
                    help=f"comma-separated, run interleaved in each repeat: {', '.join(TRANSPORTS)}")
    ap.add_argument("--json", type=str, default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()
    transports = [x.strip() for x in a.transports.split(",") if x.strip()]
    bad = [x for x in transports if x not in TRANSPORTS]
    if bad or not transports:
        ap.error(f"--transports must name some of {', '.join(TRANSPORTS)}, got {a.transports!r}")

    server = subprocess.Popen(
        [sys.executable, "-m", "endcloud.testing", "--latency", str(a.latency), "--p429", str(a.p429),
         "--p500", str(a.p500), "--pmalformed", str(a.pmalformed), "--retry-after", str(a.retry_after), "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs: list[dict] = []
    try:
        base_url = server.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise SystemExit(f"the double did not start: {server.stderr.read()}")
        for rep in range(a.repeats):
            # Alternate the order so neither transport always runs first after a pause.
            for transport in (transports if rep % 2 == 0 else transports[::-1]):
                r = one_run(a, base_url, server.pid, transport, rep)
                ratio = r["req_per_s"] / (a.concurrency / a.latency)
                print(f"# {transport:5s} rep {rep}: {r['req_per_s']:.1f} req/s ({ratio:.3f} of ideal), lost {r['lost']}, client CPU {r['client_cpu_share_of_a_core']:.2f} core, "
                      f"load {r['loadavg_1m'][0]:.2f}->{r['loadavg_1m'][1]:.2f}", file=sys.stderr, flush=True)
                runs.append(r)
    finally:
        server.terminate()
        server.wait(timeout=10)

    ideal = a.concurrency / a.latency
    p_fault = a.p429 + a.p500 + a.pmalformed
    slot = a.latency * (1 - p_fault + a.pmalformed) / (1 - p_fault)
    adjusted = a.concurrency / slot
    by_transport = {}
    for name in transports:
        rs = [r for r in runs if r["transport"] == name]
        median = statistics.median(r["req_per_s"] for r in rs)
        steady = statistics.median(r["steady_req_per_s"] for r in rs)
        by_transport[name] = {
            "median_req_per_s": median, "ratio_to_ideal": round(median / ideal, 3),
            "ratio_to_fault_adjusted_ideal": round(median / adjusted, 3),
            "best_ratio_to_ideal": round(max(r["req_per_s"] for r in rs) / ideal, 3),
            "worst_ratio_to_ideal": round(min(r["req_per_s"] for r in rs) / ideal, 3),
            "median_steady_req_per_s": steady, "steady_ratio_to_ideal": round(steady / ideal, 3),
            "steady_ratio_to_fault_adjusted_ideal": round(steady / adjusted, 3),
            "median_client_cpu_ms_per_request": statistics.median(r["client_cpu_ms_per_request"] for r in rs),
            "median_client_cpu_share_of_a_core": statistics.median(r["client_cpu_share_of_a_core"] for r in rs),
            "lost_total": sum(r["lost"] for r in rs),
        }
    out = {
        "requests": a.requests, "concurrency": a.concurrency, "latency_s": a.latency, "repeats": a.repeats,
        "faults": {"p429": a.p429, "p500": a.p500, "pmalformed": a.pmalformed, "retry_after_s": a.retry_after},
        "ideal_req_per_s": round(ideal, 1), "fault_adjusted_ideal_req_per_s": round(adjusted, 1),
        **by_transport[transports[0]], "by_transport": by_transport, "lost_total": sum(r["lost"] for r in runs),
        "runs": runs, "cpus": os.cpu_count(),
    }
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0 if out["lost_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
