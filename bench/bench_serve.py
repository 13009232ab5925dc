"""Benchmark `endcloud serve`: 16 concurrent customers vs one at a time, time to first token.

Builds a small random-weight Qwen2 end model in a temp folder (the embedded-default shape,
hidden 256 x 4 layers, ~5M parameters, with a zh+en BPE tokenizer trained on a few shop
sentences — or the test-fixture shape with --size conftest), starts the real server
in its own process (uvicorn on 127.0.0.1, real SQLite file, dynamic batching) and drives it with asyncio +
httpx streaming requests, `model="end"` (the cloud is not part of this measurement).

    .venv/bin/python bench/bench_serve.py                        # 16 customers x 4 turns
    .venv/bin/python bench/bench_serve.py --customers 16 --turns 8 --max-new-tokens 32
    .venv/bin/python bench/bench_serve.py --size conftest --window-ms 5

Prints: throughput (turns/s) one at a time and with N concurrent customers, their ratio,
time to first token p50/p95 (client side: request sent -> first content chunk), latency,
the end model's batch sizes, the error rate, and the machine's load average.
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


async def one_turn(client, url: str, user: str, question: str, max_tokens: int) -> tuple[float, float, bool]:
    """(ttft, latency, ok) of one streamed turn."""
    body = {"model": "end", "stream": True, "user": user, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": question}]}
    t0 = time.perf_counter()
    ttft = None
    ok = False
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                return float("nan"), time.perf_counter() - t0, False
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    ok = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    break
                if ttft is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    ttft = time.perf_counter() - t0
    except Exception:
        ok = False
    lat = time.perf_counter() - t0
    return (ttft if ttft is not None else lat), lat, ok


async def run_load(base: str, customers: int, turns: int, max_tokens: int, *, concurrent: bool):
    import httpx

    url = base + "/v1/chat/completions"
    limits = httpx.Limits(max_connections=customers + 4, max_keepalive_connections=customers + 4)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def customer(i: int):
            out = []
            for t in range(turns):
                out.append(await one_turn(client, url, f"bench-{concurrent}-{i}", QUESTIONS[(i + t) % len(QUESTIONS)], max_tokens))
            return out

        t0 = time.perf_counter()
        if concurrent:
            results = [r for rs in await asyncio.gather(*[customer(i) for i in range(customers)]) for r in rs]
        else:
            results = []
            for i in range(customers):
                results += await customer(i)
        return results, time.perf_counter() - t0


def serve(args) -> int:
    """The server process: the real app on the model in `args.serve`, plus a /bench/info route."""
    import torch
    import uvicorn
    from fastapi import APIRouter

    from endcloud.end.engine import EndModel
    from endcloud.serve.app import create_app
    from endcloud.serve.settings import ServeSettings

    torch.set_num_threads(args.threads)
    model = EndModel.load(args.serve)
    settings = ServeSettings(db_path=args.db, max_batch=args.customers, batch_window_ms=args.window_ms,
                             batch_max_wait_ms=args.max_wait_ms,
                             max_new_tokens=args.max_new_tokens, rate_limit_per_minute=10**6)
    router = APIRouter()
    app = None

    @router.get("/bench/info")
    def info():
        return {"params": sum(p.numel() for p in model._base_model.parameters()),
                "batch_sizes": app.state.engine.batcher.batch_sizes, "batch_seconds": app.state.engine.batcher.batch_seconds}

    app = create_app(settings, engine=model, teacher=None, extra_routers=[router])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


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
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--size", choices=sorted(SIZES), default="default")
    ap.add_argument("--base", type=Path, default=None,
                    help="a trained end model dir instead of random weights (e.g. the demo's endcloud-work/base)")
    ap.add_argument("--window-ms", type=float, default=10.0)
    ap.add_argument("--max-wait-ms", type=float, default=100.0)
    ap.add_argument("--serve", type=Path, default=None, help=argparse.SUPPRESS)  # internal: run the server
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: least contention on a shared 2-core box)")
    args = ap.parse_args(argv)

    import httpx

    if args.serve:
        return serve(args)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    base = args.base if args.base is not None else build_model(tmp / "base", args.size)
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", str(base), "--port", str(port), "--db", str(tmp / "endcloud.db"),
           "--customers", str(args.customers), "--window-ms", str(args.window_ms), "--max-wait-ms", str(args.max_wait_ms), "--threads", str(args.threads),
           "--max-new-tokens", str(args.max_new_tokens)]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
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
        asyncio.run(run_load(url, 4, 1, args.max_new_tokens, concurrent=True))  # warm up
        seq, seq_s = asyncio.run(run_load(url, args.customers, 1, args.max_new_tokens, concurrent=False))
        n_before = len(httpx.get(url + "/bench/info", timeout=10).json()["batch_sizes"])
        conc, conc_s = asyncio.run(run_load(url, args.customers, args.turns, args.max_new_tokens, concurrent=True))
        final = httpx.get(url + "/bench/info", timeout=10).json()
        batches, batch_s = final["batch_sizes"][n_before:], final["batch_seconds"][n_before:]
        seq_batch_s = final["batch_seconds"][n_before - len(seq):n_before]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    nparams = info["params"]
    seq_tp = len(seq) / seq_s
    conc_tp = len(conc) / conc_s
    errors = sum(not ok for _, _, ok in seq + conc)
    ttft_seq = [t for t, _, ok in seq if ok]
    ttft = [t for t, _, ok in conc if ok]
    lat = [l for _, l, ok in conc if ok]
    load = os.getloadavg()
    what = f"trained model {args.base}" if args.base is not None else f"random-weight Qwen2 '{args.size}' shape"
    print(f"model: {what}, {nparams / 1e6:.1f}M params, fp32, {args.threads} torch threads; "
          f"replies of {args.max_new_tokens} tokens; batch window {args.window_ms:g} ms, max wait {args.max_wait_ms:g} ms")
    print(f"one at a time : {len(seq)} turns in {seq_s:.2f} s = {seq_tp:.2f} turns/s; TTFT p50 {statistics.median(ttft_seq):.3f} s")
    print(f"{args.customers} concurrent : {len(conc)} turns in {conc_s:.2f} s = {conc_tp:.2f} turns/s "
          f"-> {conc_tp / seq_tp:.1f}x one at a time")
    print(f"TTFT (concurrent): p50 {pct(ttft, 50):.3f} s, p95 {pct(ttft, 95):.3f} s; latency p50 {pct(lat, 50):.3f} s, "
          f"p95 {pct(lat, 95):.3f} s")
    print(f"batch sizes: mean {statistics.mean(batches):.1f}, max {max(batches)}, {len(batches)} generate calls; "
          f"generate time per call: {statistics.mean(seq_batch_s):.3f} s alone, {statistics.mean(batch_s):.3f} s batched "
          f"({', '.join(f'{n}:{t:.2f}s' for n, t in zip(batches, batch_s))})")
    print(f"errors: {errors} / {len(seq) + len(conc)} ({100 * errors / (len(seq) + len(conc)):.1f}%)")
    print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
