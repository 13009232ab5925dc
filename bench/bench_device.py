"""The device check: training, serving and decoding figures of a real-sized end model on this machine's
accelerator (what `bench/device_check.sh` runs; docs/scale.md and docs/benchmarks.md quote it).

    .venv/bin/python bench/bench_device.py --size 0.5b --device cuda      # a GPU: Qwen2.5-0.5B shape, bf16
    .venv/bin/python bench/bench_device.py --size tiny --device cpu       # the CPU-sized variant (minutes here)

On a Qwen2.5-0.5B-shaped model with random weights (hidden 896, 24 layers, 14 heads / 2 KV heads,
MLP 4864, vocabulary 151,936, tied embeddings: 494M parameters) in bf16 (fp32 on the CPU):
1. training tokens/s of LoRA, prefix and P-tuning v2 (`endcloud.end.train.train` with the
   device and dtype, batch 8 of shop-style conversations; the steps after the first, which
   pays for kernels and allocation);
2. `endcloud serve --device ...` as a real process for each engine (transformers: the
   transformers forward in whole batches; transformers-cb: transformers' continuous batching),
   driven by 16 and then 64 concurrent customers streaming replies (turns/s, time to first
   token, latency; bench/bench_serve.py's client);
3. decode tokens/s at batch 1 (greedy, a fixed length) through `EndModel` and through the
   transformers-cb engine, and as a share of the memory-bandwidth bound: the weight bytes a
   step reads, against the bandwidth of a device-to-device copy measured here.

Random weights rarely emit end-of-turn, so every reply is its full length: a worst case.
Writes the figures as JSON to --out (default: stdout only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIZES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936),
    "tiny": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=6000),
}
READER = ROOT / "endcloud" / "assets" / "reader"  # its zh+en tokenizer and chat template
SENTENCES = ["亲，在的，请问有什么可以帮您？", "默认发中通快递，下午4点前下单当天发货。", "退货请在签收后7天内申请，运费由我们承担。",
             "We ship with ZTO Express by default; orders before 4 pm ship today.", "这款毛巾是纯棉的，20x20厘米，干湿两用。",
             "Returns are accepted within 7 days of delivery.", "亲，可以领取满99减10的优惠券哦。"]


def log(msg: str) -> None:
    print(f"[device-check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_base(out: Path, size: str) -> tuple[Path, int]:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from endcloud.end.base import load_tokenizer

    tok = load_tokenizer(READER)
    torch.manual_seed(0)
    cfg = Qwen2Config(**SIZES[size], max_position_embeddings=4096, tie_word_embeddings=True,
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
                      bos_token_id=None, rope_theta=1000000.0)
    model = Qwen2ForCausalLM(cfg)
    model.to(torch.bfloat16).save_pretrained(out)  # stored as a real base is: bf16
    tok.save_pretrained(out)
    return out, sum(p.numel() for p in model.parameters())


def examples(n: int = 256):
    import random

    from endcloud.end.data import Example

    rng = random.Random(0)
    out = []
    for i in range(n):
        turns = []
        for _ in range(rng.randint(1, 3)):
            turns += [{"role": "user", "content": " ".join(rng.choices(SENTENCES, k=rng.randint(1, 3)))},
                      {"role": "assistant", "content": " ".join(rng.choices(SENTENCES, k=rng.randint(1, 2)))}]
        out.append(Example(turns[:-1], turns[-1]["content"], id=f"b{i}"))
    return out


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_training(base: Path, device: str, dtype: str, steps: int, work: Path) -> dict:
    """Tokens/s of each tuner, over the steps after the first (kernels, allocation, autotuning)."""
    from endcloud.end.train import train

    out: dict = {}
    data = examples()
    for method in ("lora", "prefix", "ptuning-v2"):
        marks: list[tuple[float, int]] = []

        def on_step(step: int, loss: float) -> None:
            sync(device)
            marks.append((time.perf_counter(), step))

        t0 = time.perf_counter()
        res = train(base, data, work / f"train-{method}", method=method, steps=steps, batch_size=8, lr=1e-4,
                    device=device, dtype=dtype, progress=False, save_every=10**6, callback=on_step,
                    max_input_len=256, max_output_len=128, num_virtual_tokens=16, encoder_hidden_size=256)
        rec = json.loads((work / f"train-{method}" / "training.json").read_text())
        per_step = rec["metrics"]["tokens_this_session"] / max(1, res.steps)
        span = marks[-1][0] - marks[0][0] if len(marks) > 1 else float("nan")
        warm = (len(marks) - 1) * per_step / span if len(marks) > 1 and span > 0 else None
        out[method] = {"tokens_per_s": round(warm, 1) if warm else rec["metrics"]["tokens_per_s"],
                       "tokens_per_s_incl_first_step": rec["metrics"]["tokens_per_s"], "steps": res.steps,
                       "loss_first": rec["metrics"]["loss_first"], "loss_last": rec["metrics"]["loss_last"],
                       "seconds_total": round(time.perf_counter() - t0, 1), "dtype": res.dtype, "device": res.device}
        log(f"train {method}: {out[method]['tokens_per_s']} tokens/s ({res.dtype} on {res.device})")
    return out


def bandwidth_gbs(device: str) -> float:
    """Device memory bandwidth (GB/s): a device-to-device copy of 1 GiB (CPU: 256 MiB), bytes read + written."""
    import torch

    n = (1 << 30) if device.startswith("cuda") else (256 << 20)
    x = torch.empty(n // 2, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    sync(device)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        y.copy_(x)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n / best / 1e9


def bench_decode(base: Path, device: str, dtype: str, tokens: int) -> dict:
    """Batch-1 greedy decode tokens/s through EndModel and the transformers-cb engine."""
    import torch

    from endcloud.runtime.hfbatch import ContinuousHFModel
    from endcloud.runtime.model import EndModel

    conv = [{"role": "user", "content": "几天发货？ When do you ship?"}]
    out: dict = {}
    m = EndModel.load(base, device=device, dtype=dtype, max_input_len=256)
    weight_bytes = sum(p.numel() * p.element_size() for p in m.variant.handle.parameters())
    m.generate([conv], max_new_tokens=8, temperature=0)  # warm-up
    best = 0.0
    for _ in range(3):
        sync(device)
        t = time.perf_counter()
        [g] = m.generate([conv], max_new_tokens=tokens, temperature=0)
        sync(device)
        best = max(best, g.tokens / (time.perf_counter() - t))
    out["endmodel"] = {"tokens_per_s": round(best, 1), "fast_path": m.variant.weights is not None}
    del m
    cb = ContinuousHFModel.load(base, device=device, dtype=dtype, max_input_len=256, max_batch=8,
                                max_new_tokens=max(tokens, 64))
    try:
        cb.generate([conv], max_new_tokens=8, temperature=0)
        best = 0.0
        for _ in range(3):
            t = time.perf_counter()
            [g] = cb.generate([conv], max_new_tokens=tokens, temperature=0)
            best = max(best, g.tokens / (time.perf_counter() - t))
        out["transformers-cb"] = {"tokens_per_s": round(best, 1)}
    finally:
        cb.close()
    bw = bandwidth_gbs(device)
    bound = bw * 1e9 / weight_bytes  # tokens/s if a step only read every weight once
    out.update({"weight_bytes": weight_bytes, "copy_bandwidth_gbs": round(bw, 1), "bound_tokens_per_s": round(bound, 1)})
    for k in ("endmodel", "transformers-cb"):
        out[k]["share_of_bound"] = round(out[k]["tokens_per_s"] / bound, 3)
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
    log(f"decode b1: EndModel {out['endmodel']['tokens_per_s']} tok/s, transformers-cb "
        f"{out['transformers-cb']['tokens_per_s']} tok/s; bound {bound:.0f} tok/s at {bw:.0f} GB/s")
    return out


def bench_serve(base: Path, device: str, dtype: str, engine: str, customers_list: list[int], turns: int,
                max_tokens: int, work: Path) -> dict:
    """`endcloud serve --device` in its own process, then each crowd of customers at once."""
    import bench_serve as bs

    port = bs.free_port()
    ws = work / f"ws-{engine}"
    ws.mkdir(exist_ok=True)
    # every customer here is one client address: the per-client rate limit would refuse the crowd
    env = {**os.environ, "ENDCLOUD_SERVE_MAX_BATCH": str(max(customers_list)),
           "ENDCLOUD_SERVE_RATE_LIMIT_PER_MINUTE": "1000000"}
    cmd = [sys.executable, "-m", "endcloud", "serve", "--workspace", str(ws), "--base", str(base), "--cloud", "none",
           "--device", device, "--dtype", dtype, "--engine", engine, "--port", str(port), "--log-level", "warning"]
    logf = open(work / f"serve-{engine}.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    out: dict = {"engine": engine}
    try:
        import httpx

        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"endcloud serve exited ({proc.returncode}); see {work / f'serve-{engine}.log'}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("endcloud serve did not come up in 300 s")
            time.sleep(1)
        asyncio.run(bs.run_load(url, 2, 1, 8, concurrent=True, tag=f"warm-{engine}"))  # kernels, caches
        for n in customers_list:
            bs.ERRORS.clear()
            results, secs = asyncio.run(bs.run_load(url, n, turns, max_tokens, concurrent=True, tag=f"{engine}-{n}"))
            ok = [r for r in results if r[4]]
            ttft = sorted(r[2] for r in ok)
            lat = sorted(r[3] for r in ok)
            out[str(n)] = {"customers": n, "turns": len(results), "ok": len(ok), "seconds": round(secs, 2),
                           "turns_per_s": round(len(ok) / secs, 2),
                           "tokens_per_s": round(len(ok) * max_tokens / secs, 1),
                           "ttft_p50_s": round(bs.pct(ttft, 50), 3) if ttft else None,
                           "ttft_p95_s": round(bs.pct(ttft, 95), 3) if ttft else None,
                           "latency_p50_s": round(bs.pct(lat, 50), 3) if lat else None,
                           "errors": bs.ERRORS[:3]}
            log(f"serve {engine} x{n}: {out[str(n)]['turns_per_s']} turns/s, ~{out[str(n)]['tokens_per_s']} tokens/s, "
                f"ttft p50 {out[str(n)]['ttft_p50_s']} s, {len(results) - len(ok)} failed")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on a GPU, fp32 on the CPU), fp32, bf16, fp16")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--customers", default="16,64", help="crowds of concurrent customers, comma-separated")
    ap.add_argument("--turns", type=int, default=2, help="turns per customer")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--engines", default="transformers-cb,transformers")
    ap.add_argument("--skip", default="", help="parts to skip: train, serve, decode (comma-separated)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = ap.parse_args(argv)

    import torch

    from endcloud.end.device import dtype_name, resolve_device, resolve_dtype

    dev = resolve_device(args.device)
    dt = resolve_dtype(args.dtype, dev)
    device, dtype = str(dev), dtype_name(dt)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    report: dict = {"size": args.size, "device": device, "dtype": dtype, "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
                    "threads": torch.get_num_threads(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
        work = Path(tmp)
        base, report["params"] = build_base(work / "base", args.size)
        log(f"base {args.size} on {device} ({dtype}) in {work / 'base'}")
        if "train" not in skip:
            report["train"] = bench_training(base, device, dtype, args.train_steps, work)
        if "decode" not in skip:
            report["decode"] = bench_decode(base, device, dtype, args.decode_tokens)
        if "serve" not in skip:
            crowds = [int(x) for x in args.customers.split(",") if x.strip()]
            report["serve"] = {}
            for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
                try:
                    report["serve"][engine] = bench_serve(base, device, dtype, engine, crowds, args.turns,
                                                          args.max_new_tokens, work)
                except Exception as e:  # one engine failing must not lose the others' figures
                    report["serve"][engine] = {"error": f"{type(e).__name__}: {e}"[:400]}
                    log(f"serve {engine} failed: {e}")
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
