"""Benchmark `endcloud serve`: 16 concurrent customers vs one at a time, time to first token.

Builds a small random-weight Qwen2 end model in a temp folder (the embedded-default shape,
hidden 256 x 4 layers, ~3M parameters, with a zh+en BPE tokenizer trained on a few shop
sentences — or the test-fixture shape with --size conftest), starts the real server
in its own process (uvicorn on 127.0.0.1, real SQLite file, the engine's batching) and drives
it with asyncio + aiohttp streaming requests, `model="end"` (the cloud is not part of this
measurement).

    .venv/bin/python bench/bench_serve.py                        # 16 customers x 4 turns
    .venv/bin/python bench/bench_serve.py --turns 8 --repeats 3
    .venv/bin/python bench/bench_serve.py --batching static      # the whole-batch engine, for comparison
    .venv/bin/python bench/bench_serve.py --size conftest --threads 2
    .venv/bin/python bench/bench_serve.py --base endcloud-work/base   # the demo's trained embedded default
    .venv/bin/python bench/bench_serve.py --worker thread            # the batch in a thread of the server
    .venv/bin/python bench/bench_serve.py --no-stream                # whole replies, no SSE token events
    .venv/bin/python bench/bench_serve.py --telemetry                # traces on: OTLP/HTTP to a sink in this process

Each repeat runs the same workload twice, back to back: one customer at a time, then all
customers at once (each customer's turns in order, its history in the prompt as the server
keeps it). Prints throughput (turns/s) of both and their ratio per repeat and for the best
of each, time to first token p50/p95 (client side: request sent -> first content chunk),
latency, the engine's batching figures (continuous: rows per decode step, steps that
prefilled and decoded in one forward, prefill and prefix-cache tokens, prompts that
continued their conversation's ids; static: batch sizes and generate time), the CPU of the
server, of its engine process and of this client (all three share the box's cores), the
error count, the machine's load average and the share of its CPU time the hypervisor gave
to other guests (steal: a phase that is slow without any more CPU used here). Also the
ratio against the first turns alone
served one at a time (short prompts: the baseline this bench used before the same-workload
baseline).
Random weights rarely emit end-of-turn, so every reply is `--max-new-tokens` long: a worst case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEXT = [
    "亲，在的，请问有什么可以帮您？", "您好，这款毛巾是纯棉的，20x20厘米，干湿两用。", "默认发中通快递，下午4点前下单当天发货。",
    "亲，可以领取满99减10的优惠券哦。", "退货请在签收后7天内申请，运费由我们承担。", "Hello, how can I help you today?",
    "We ship with ZTO Express by default; orders before 4 pm ship today.", "Returns are accepted within 7 days of delivery.",
] * 40
QUESTIONS = ["几天发货？", "可以用优惠券吗？", "Do you ship today?", "How do I return this towel?", "这款毛巾是纯棉的吗？",
             "What courier do you use?", "退货运费谁出？", "Is it in stock?"]
SIZES = {"default": dict(hidden_size=256, layers=4, heads=4, kv_heads=2, intermediate_size=688),
         "conftest": dict(hidden_size=64, layers=2)}


def build_model(out: Path, size: str) -> Path:
    from endcloud.end.base import tiny_qwen2
    from endcloud.end.tokenizer import train_tokenizer

    tok = train_tokenizer(TEXT, vocab_size=2000, min_frequency=1)
    model = tiny_qwen2(tok, **SIZES[size])
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ERRORS: list[str] = []  # why turns failed (printed at the end)
CLIENT_CPU: dict[str, float] = {}  # CPU seconds this client spent per load tag (it shares the box's cores)
STREAM = True  # --no-stream: ask for whole replies (no per-token events)


async def one_turn(session, url: str, user: str, question: str, max_tokens: int) -> tuple[float, float, bool]:
    """(ttft, latency, ok) of one streamed turn."""
    body = {"model": "end", "stream": STREAM, "user": user, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": question}]}
    t0 = time.perf_counter()
    ttft = None
    ok = False
    try:
        async with session.post(url, json=body) as r:
            if r.status != 200:
                ERRORS.append(f"HTTP {r.status}: {(await r.text())[:200]}")
                return float("nan"), time.perf_counter() - t0, False
            if not STREAM:  # the whole reply in one response: time to first token is its latency
                ok = bool((await r.json())["choices"])
                lat = time.perf_counter() - t0
                return lat, lat, ok
            async for raw in r.content:  # one SSE line at a time
                line = raw.decode().rstrip("\r\n")
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    ok = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    ERRORS.append(f"error event: {chunk['error']}")
                    break
                if ttft is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    ttft = time.perf_counter() - t0
    except Exception as e:
        ERRORS.append(f"{type(e).__name__}: {e}"[:300])
        ok = False
    lat = time.perf_counter() - t0
    return (ttft if ttft is not None else lat), lat, ok


async def run_load(base: str, customers: int, turns: int, max_tokens: int, *, concurrent: bool, tag: str):
    """All customers' turns, at once or one customer after another: (results per turn, seconds).

    Results are (customer, turn, ttft, latency, ok). A customer's turns always run in order
    (each sees the history its earlier turns left), so both modes serve the same workload.
    The client is aiohttp (C-accelerated HTTP parsing): it shares the box's cores with the
    server, and httpx spent as much CPU as the whole server process here."""
    import aiohttp

    url = base + "/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=customers + 4)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def customer(i: int):
            out = []
            for t in range(turns):
                r = await one_turn(session, url, f"bench-{tag}-{i}", QUESTIONS[(i + t) % len(QUESTIONS)], max_tokens)
                out.append((i, t) + r)
            return out

        t0, c0 = time.perf_counter(), time.process_time()
        if concurrent:
            results = [r for rs in await asyncio.gather(*[customer(i) for i in range(customers)]) for r in rs]
        else:
            results = []
            for i in range(customers):
                results += await customer(i)
        CLIENT_CPU[tag] = time.process_time() - c0
        return results, time.perf_counter() - t0


def serve(args) -> int:
    """The server process: the real app on the model in `args.serve`, plus a /bench/info route."""
    import uvicorn
    from fastapi import APIRouter

    from endcloud.runtime.model import EndModel
    from endcloud.serve.app import create_app
    from endcloud.serve.settings import ServeSettings

    model = EndModel.load(args.serve, threads=args.threads)
    settings = ServeSettings(db_path=args.db, max_batch=args.customers, batch_window_ms=args.window_ms,
                             batch_max_wait_ms=args.max_wait_ms, batching=args.batching, torch_threads=args.threads,
                             prefill_chunk_tokens=args.prefill_chunk, prefix_cache_mb=args.prefix_cache_mb,
                             max_new_tokens=args.max_new_tokens, rate_limit_per_minute=10**6, worker=args.worker,
                             shop_dir=args.shop, knowledge_position="system" if args.knowledge_top else "after_question",
                             otlp_endpoint=args.otlp_endpoint, json_logs=args.json_logs)
    router = APIRouter()
    app = None

    @router.get("/bench/info")
    def info():
        import torch

        stats = app.state.engine.stats()
        return {"params": sum(p.numel() for p in model._base_model.parameters()), "threads": torch.get_num_threads(),
                "process_cpu": time.process_time(), "core_cpu": _cpu_of(stats.get("pid")),
                "worker": app.state.engine.worker, **stats}

    app = create_app(settings, engine=model, teacher=None, extra_routers=[router])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


def otlp_sink():
    """A collector stand-in on 127.0.0.1: accepts OTLP/HTTP trace batches and counts their bytes."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Sink(BaseHTTPRequestHandler):
        received = [0, 0]  # batches, bytes

        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            self.rfile.read(n)
            Sink.received[0] += 1
            Sink.received[1] += n
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.received = Sink.received
    return server


def _box_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks of the whole machine so far (/proc/stat), None off Linux.

    Steal is time the hypervisor gave this VM's virtual CPUs to someone else: on a shared
    host it is what makes a phase slow without any process here using more CPU."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def _steal(a: dict, b: dict) -> str:
    if not a.get("box") or not b.get("box"):
        return ""
    steal, total = b["box"][0] - a["box"][0], b["box"][1] - a["box"][1]
    return f"; steal {100 * steal / max(total, 1):.0f}% of the box's CPU time"


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) of process `pid` so far (the engine process), 0 when none."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=16)
    ap.add_argument("--turns", type=int, default=4, help="turns per customer")
    ap.add_argument("--repeats", type=int, default=1, help="one-at-a-time + concurrent pairs, interleaved")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--size", choices=sorted(SIZES), default="default")
    ap.add_argument("--base", type=Path, default=None,
                    help="a trained end model dir instead of random weights (e.g. the demo's endcloud-work/base)")
    ap.add_argument("--batching", choices=("auto", "continuous", "static"), default="auto")
    ap.add_argument("--window-ms", type=float, default=10.0)
    ap.add_argument("--max-wait-ms", type=float, default=100.0)
    ap.add_argument("--prefill-chunk", type=int, default=512, help="continuous: prompt tokens prefilled per step")
    ap.add_argument("--prefix-cache-mb", type=float, default=256.0, help="continuous: prefix cache budget (0: off)")
    ap.add_argument("--no-stream", action="store_true", help="whole replies instead of SSE token streams")
    ap.add_argument("--shop", type=Path, default=None,
                    help="a shop pack: 3 knowledge snippets per question in the end model's context (e.g. endcloud-work/shop)")
    ap.add_argument("--knowledge-top", action="store_true",
                    help="with --shop: knowledge in the leading system message (the earlier layout), for comparison")
    ap.add_argument("--worker", choices=("process", "thread"), default="process",
                    help="continuous: the running batch in its own process (the default) or a thread of the server")
    ap.add_argument("--telemetry", action="store_true",
                    help="per-turn traces on (OTLP/HTTP to a sink in this process) and JSON logs: the cost of telemetry")
    ap.add_argument("--otlp-endpoint", default=None, help=argparse.SUPPRESS)  # internal: the server's collector
    ap.add_argument("--json-logs", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve", type=Path, default=None, help=argparse.SUPPRESS)  # internal: run the server
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: least contention on a shared 2-core box)")
    args = ap.parse_args(argv)

    import httpx

    global STREAM
    STREAM = not args.no_stream
    if args.serve:
        return serve(args)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    base = args.base if args.base is not None else build_model(tmp / "base", args.size)
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", str(base), "--port", str(port), "--db", str(tmp / "endcloud.db"),
           "--customers", str(args.customers), "--window-ms", str(args.window_ms), "--max-wait-ms", str(args.max_wait_ms),
           "--threads", str(args.threads), "--max-new-tokens", str(args.max_new_tokens), "--batching", args.batching,
           "--prefill-chunk", str(args.prefill_chunk), "--prefix-cache-mb", str(args.prefix_cache_mb),
           "--worker", args.worker] + (["--shop", str(args.shop)] if args.shop else []) + (
              ["--knowledge-top"] if args.knowledge_top else [])
    if args.telemetry:
        sink = otlp_sink()
        cmd += ["--otlp-endpoint", sink.url, "--json-logs"]
        print(f"telemetry on: traces to {sink.url}/v1/traces, JSON logs")
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    reps = []
    loads = []
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).json().get("status") == "ok":
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        info = httpx.get(url + "/bench/info", timeout=10).json()
        asyncio.run(run_load(url, 4, 1, args.max_new_tokens, concurrent=True, tag="warm"))  # warm up
        for rep in range(args.repeats):
            i0 = httpx.get(url + "/bench/info", timeout=10).json()
            i0["box"] = _box_ticks()
            seq, seq_s = asyncio.run(run_load(url, args.customers, args.turns, args.max_new_tokens, concurrent=False,
                                              tag=f"seq{rep}"))
            i1 = httpx.get(url + "/bench/info", timeout=10).json()
            i1["box"] = _box_ticks()
            conc, conc_s = asyncio.run(run_load(url, args.customers, args.turns, args.max_new_tokens, concurrent=True,
                                                tag=f"conc{rep}"))
            i2 = httpx.get(url + "/bench/info", timeout=10).json()
            i2["box"] = _box_ticks()
            loads.append(os.getloadavg()[0])
            reps.append((seq, seq_s, conc, conc_s, i0, i1, i2))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if args.telemetry:
            print(f"otlp sink received {sink.received[0]} trace batches, {sink.received[1]} bytes")
    return report(args, info, reps, loads)


def _engine_line(a: dict, b: dict) -> str:
    """What the engine did between two /bench/info snapshots."""
    core = b.get("core_cpu", 0.0) - a.get("core_cpu", 0.0)
    return (_engine_part(a, b) + f"; server process CPU {b['process_cpu'] - a['process_cpu']:.2f} s"
            + (f" + engine process {core:.2f} s" if core else ""))


def _engine_part(a: dict, b: dict) -> str:
    sizes, secs = b["batch_sizes"][len(a["batch_sizes"]):], b["batch_seconds"][len(a["batch_seconds"]):]
    if b["mode"] == "continuous":
        steps = b["steps"] - a.get("steps", 0)
        rows = b["rows"] - a.get("rows", 0)
        pre = b["prefill_tokens"] - a.get("prefill_tokens", 0)
        padded = b["prefill_padded"] - a.get("prefill_padded", 0)
        chunks = b["prefills"] - a.get("prefills", 0)
        hit = b["cached_tokens"] - a.get("cached_tokens", 0)
        busy = b["step_seconds"] - a.get("step_seconds", 0)
        dec = b["decode_seconds"] - a.get("decode_seconds", 0)
        pre_s = b["prefill_seconds"] - a.get("prefill_seconds", 0)
        mix_s = b.get("mixed_seconds", 0) - a.get("mixed_seconds", 0)
        mixed = b.get("mixed", 0) - a.get("mixed", 0)
        cpu = b["step_cpu_seconds"] - a.get("step_cpu_seconds", 0)
        cont = b.get("prompts_continued", 0) - a.get("prompts_continued", 0)
        return (f"continuous: {steps} decode steps, occupancy {rows / max(steps, 1):.1f} rows/step, "
                f"{1000 * (dec + mix_s) / max(steps, 1):.1f} ms/step; busy {busy:.2f} s = decode {dec:.2f} s + prefill {pre_s:.2f} s "
                f"+ both in one forward {mix_s:.2f} s ({mixed} steps) + {busy - dec - pre_s - mix_s:.2f} s other, worker CPU {cpu:.2f} s; prompt tokens {pre + hit}: {pre} computed, "
                f"{hit} from the prefix cache ({100 * hit / max(pre + hit, 1):.0f}%), {cont} prompts continued "
                f"their conversation's ids; "
                f"{chunks} prefill chunks, {padded} positions with padding; "
                f"admitted in groups of mean {statistics.mean(sizes) if sizes else 0:.1f}")
    return (f"static: {len(sizes)} generate calls, batch mean {statistics.mean(sizes) if sizes else 0:.1f}, "
            f"max {max(sizes) if sizes else 0}, {statistics.mean(secs) if secs else 0:.3f} s per call")


def report(args, info: dict, reps: list, loads: list[float]) -> int:
    what = f"trained model {args.base}" if args.base is not None else f"random-weight Qwen2 '{args.size}' shape"
    if args.shop:
        what += f", shop {args.shop} ({'knowledge on top' if args.knowledge_top else 'knowledge before the question'})"
    print(f"model: {what}, {info['params'] / 1e6:.1f}M params, fp32, {info['threads']} torch threads, "
          f"batching {info['mode']} ({info.get('worker', 'thread')}); {args.customers} customers x {args.turns} turns, replies of {args.max_new_tokens} "
          f"tokens; window {args.window_ms:g} ms, max wait {args.max_wait_ms:g} ms"
          + (f", prefill chunk {args.prefill_chunk}, prefix cache {args.prefix_cache_mb:g} MB"
             if info["mode"] == "continuous" else ""))
    errors = total = 0
    best_seq = best_conc = best_first = 0.0
    ttft_all: list[float] = []
    lat_all: list[float] = []
    for k, (seq, seq_s, conc, conc_s, i0, i1, i2) in enumerate(reps):
        seq_tp, conc_tp = len(seq) / seq_s, len(conc) / conc_s
        # first turns alone, one at a time: the short-prompt baseline of the earlier bench
        first = [lat for _, t, _, lat, ok in seq if t == 0]
        first_tp = len(first) / sum(first)
        errors += sum(not ok for *_, ok in seq + conc)
        total += len(seq) + len(conc)
        ttft = [x for _, _, x, _, ok in conc if ok]
        lat = [x for _, _, _, x, ok in conc if ok]
        ttft_all += ttft
        lat_all += lat
        seq_ttft = [x for _, _, x, _, ok in seq if ok]
        best_seq, best_conc, best_first = max(best_seq, seq_tp), max(best_conc, conc_tp), max(best_first, first_tp)
        print(f"[{k + 1}] one at a time: {len(seq)} turns in {seq_s:.2f} s = {seq_tp:.2f} turns/s "
              f"(TTFT p50 {statistics.median(seq_ttft):.3f} s; first turns alone {first_tp:.2f} turns/s) | "
              f"concurrent: {len(conc)} turns in {conc_s:.2f} s = {conc_tp:.2f} turns/s -> {conc_tp / seq_tp:.2f}x "
              f"({conc_tp / first_tp:.2f}x first turns); TTFT p50 {pct(ttft, 50):.3f} s, p95 {pct(ttft, 95):.3f} s; "
              f"load {loads[k]:.2f}")
        print(f"    one at a time -> {_engine_line(i0, i1)}; client CPU {CLIENT_CPU.get(f'seq{k}', 0):.2f} s"
              + _steal(i0, i1))
        print(f"    concurrent    -> {_engine_line(i1, i2)}; client CPU {CLIENT_CPU.get(f'conc{k}', 0):.2f} s"
              + _steal(i1, i2))
    print(f"best of {len(reps)}: one at a time {best_seq:.2f} turns/s, concurrent {best_conc:.2f} turns/s -> "
          f"{best_conc / best_seq:.2f}x (vs first turns alone {best_first:.2f} turns/s: {best_conc / best_first:.2f}x)")
    print(f"TTFT (concurrent, all repeats): p50 {pct(ttft_all, 50):.3f} s, p95 {pct(ttft_all, 95):.3f} s; "
          f"latency p50 {pct(lat_all, 50):.3f} s, p95 {pct(lat_all, 95):.3f} s")
    print(f"errors: {errors} / {total} ({100 * errors / max(total, 1):.1f}%)" + "".join(f"\n  {e}" for e in ERRORS[:5]))
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
