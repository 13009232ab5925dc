"""Decode speed of llama.cpp on GGUF exports of a Qwen2.5-0.5B-shaped model vs the memory-bandwidth bound.

Issue #4's target: decode tokens/s of a random-weight model shaped like Qwen2.5-0.5B at
≥ 60 % of the bound = read bandwidth ÷ bytes of weights read per token, any weight format.

    .venv/bin/python bench/bench_gguf.py                          # bf16,f16,q8_0,q4_0; b=1 and 8 (~10 min quiet)
    .venv/bin/python bench/bench_gguf.py --types q8_0 --batches 1 --repeats 2 --new-tokens 16
    .venv/bin/python bench/bench_gguf.py --workdir /tmp/gguf-bench   # keep (and reuse) the model and files

What it does:
1. Saves a random-weight Qwen2 model of bench_decode.py's `qwen0.5b` shape (494 M params,
   tied embeddings, bf16) with a small real tokenizer (`bench_decode.py --save-model`).
2. Exports it with `endcloud.end.gguf.export_gguf` to each `--types` (export time reported).
3. In one fresh process (`--child`), loads every file in llama.cpp (n_threads = --threads)
   and, interleaved round by round so that load changes hit every format alike:
     bandwidth  best of `x.sum()` over 1 GiB fp32 (bench_decode.bandwidth) and an fp32
                mat-vec over a 1 GiB matrix, same thread count: the best read kernel seen
     llama.cpp  raw `llama_decode` of one token per sequence after a 32-token prompt: the
                time of N decode steps ÷ N (no sampling, nothing in Python but the batch)
     engine     `LlamaCppEndModel.decode` (what `generate` runs: numpy greedy sampling and
                log-probs included): b·(N−1) / (t(N) − t(1)), prefill cancels
   Each figure is the best over --repeats rounds.
With --threads 1,2 each round measures both thread counts (llama_set_n_threads; the
bandwidth with the same count). The bound for a file: batch × bandwidth ÷ `gguf.decode_bytes(file)` (every tensor's bytes;
the tied embedding is the output head, read whole). KV-cache reads (≤ 64 positions ×
12 KiB per token here) are left out; they are < 0.1 % of the weights.
"""

from __future__ import annotations

import argparse
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

PROMPT_LEN = 32


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def cpu_basis_bandwidth(threads: int, repeats: int = 5) -> dict[str, float]:
    """GB/s per thread-second of CPU time (bytes ÷ (CPU seconds ÷ threads)) of x.sum() and a mat-vec, 1 GiB fp32.

    Under load a process gets a fraction of its cores, and a short kernel may catch a
    better moment than a long decode: CPU time counts only the time the threads ran.
    """
    import torch

    torch.set_num_threads(threads)
    w = torch.ones(16384, 16384, dtype=torch.float32)  # 1 GiB
    x = torch.ones(16384, dtype=torch.float32)
    flat = w.view(-1)
    kernels = {"x.sum()": lambda: flat.sum(), "mat-vec": lambda: torch.mv(w, x)}
    best = {k: float("inf") for k in kernels}
    for _ in range(repeats):
        for k, fn in kernels.items():
            best[k] = min(best[k], _timed(fn)[1] / threads)
    return {k: w.numel() * 4 / v / 1e9 for k, v in best.items()}


def read_bandwidth(threads: int) -> dict:
    """Wall-clock GB/s of each 1 GiB fp32 read kernel (bench_decode.bandwidth's; the best is the bound),
    plus the CPU-time basis of x.sum() and a mat-vec."""
    from bench_decode import bandwidth

    r = bandwidth(threads)
    each = dict(r[2]) if isinstance(r, tuple) else {"x.sum()": float(r)}  # newer versions time several kernels
    cpu = cpu_basis_bandwidth(threads)
    if "mat-vec" not in each:  # the older bandwidth() timed x.sum() only, ~40 % below a mat-vec here
        each["mat-vec"] = _matvec_wall(threads)
    win = max(each, key=each.get)
    return {"best": each[win], "kernel": win, "each": each, "cpu": cpu}


def _matvec_wall(threads: int, repeats: int = 5) -> float:
    import torch

    torch.set_num_threads(threads)
    w = torch.ones(16384, 16384, dtype=torch.float32)
    x = torch.ones(16384, dtype=torch.float32)
    return w.numel() * 4 / min(_timed(lambda: torch.mv(w, x))[0] for _ in range(repeats)) / 1e9


# ---- the measuring child ------------------------------------------------------------------------
def raw_decode_tok_s(rt, batch: int, new_tokens: int) -> tuple[float, float]:
    """llama.cpp alone: a PROMPT_LEN prefill per sequence, then new_tokens single-token steps, timed.

    Returns (tok/s of wall time, tok/s per thread-second of CPU time)."""
    rt.clear()
    prompt = [(i * 7919) % 250 + 3 for i in range(PROMPT_LEN)]
    toks, pos, seqs = [], [], []
    for s in range(batch):
        toks += prompt
        pos += list(range(PROMPT_LEN))
        seqs += [s] * PROMPT_LEN
    rt.decode(toks, pos, seqs, [p == PROMPT_LEN - 1 for p in pos])

    def steps() -> None:
        for step in range(new_tokens):
            rt.decode([(step * 31 + s) % 250 + 3 for s in range(batch)], [PROMPT_LEN + step] * batch,
                      list(range(batch)), [True] * batch)

    wall, cpu = _timed(steps)
    return batch * new_tokens / wall, batch * new_tokens / (cpu / rt.threads)


def engine_tok_s(model, rt, batch: int, new_tokens: int) -> float:
    """LlamaCppEndModel.decode (numpy greedy sampling and log-probs included), no early stop.

    tok/s = b·(N−1) ÷ (time of decode − time of its prefill): the N−1 single-token steps."""
    import numpy as np

    prompts = [[(i * 7919 + 13 * s) % 250 + 3 for i in range(PROMPT_LEN)] for s in range(batch)]
    spent = []
    prefill = model._prefill

    def timed_prefill(*args, **kw):
        t = time.perf_counter()
        try:
            return prefill(*args, **kw)
        finally:
            spent.append(time.perf_counter() - t)

    model._prefill = timed_prefill  # an instance attribute shadows the method for this call only
    try:
        wall, _ = _timed(lambda: model.decode(rt, prompts, max_new_tokens=new_tokens, temperature=0.0, top_p=1.0,
                                              rng=np.random.default_rng(0), stop=False))
    finally:
        del model._prefill
    return batch * (new_tokens - 1) / (wall - spent[0])


def child(files: dict[str, str], batches: list[int], new_tokens: int, repeats: int, threads: list[int]) -> dict:
    import resource

    from endcloud.end.gguf import decode_bytes
    from endcloud.runtime.llamacpp import LlamaCppEndModel

    models = {t: LlamaCppEndModel.load(p, threads=threads[0], max_batch=max(batches), max_input_len=PROMPT_LEN + 8,
                                       max_new_tokens_limit=new_tokens + 8) for t, p in files.items()}
    for m in models.values():  # warm-up: page the weights in
        raw_decode_tok_s(m.variant.handle.rt, 1, 2)
    res: dict = {"bandwidth": {str(n): [] for n in threads}, "rows": {},
                 "decode_bytes": {t: decode_bytes(p) for t, p in files.items()},
                 "file_bytes": {t: os.path.getsize(p) for t, p in files.items()}, "load": [os.getloadavg()[0]],
                 "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}

    def keep(key: str, v: float) -> None:
        res["rows"][key] = max(res["rows"].get(key, 0.0), v)

    for r in range(repeats):
        for n in threads:
            bw = read_bandwidth(n)
            time.sleep(0.5)  # let torch's OpenMP workers stop spinning before llama.cpp's threads run
            res["bandwidth"][str(n)].append(bw)
            each = ", ".join(f"{k} {v:.1f}" for k, v in bw["each"].items())
            print(f"  round {r + 1}, {n} threads: bandwidth GB/s {each} (CPU basis: x.sum() {bw['cpu']['x.sum()']:.1f}, "
                  f"mat-vec {bw['cpu']['mat-vec']:.1f}); load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
            for t, m in models.items():
                rt = m.variant.handle.rt
                rt.set_threads(n)
                for b in batches:
                    wall, cpu = raw_decode_tok_s(rt, b, new_tokens)
                    eng = engine_tok_s(m, rt, b, new_tokens)
                    keep(f"{t}|{b}|llama.cpp|{n}", wall)
                    keep(f"{t}|{b}|cpu|{n}", cpu)
                    keep(f"{t}|{b}|engine|{n}", eng)
                    print(f"    {t} b={b}: llama.cpp {wall:.1f} tok/s ({cpu:.1f} per CPU-basis second), engine "
                          f"{eng:.1f} tok/s", file=sys.stderr, flush=True)
        res["load"].append(os.getloadavg()[0])
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


# ---- the parent -------------------------------------------------------------------------------------
def export_all(base: Path, workdir: Path, types: list[str]) -> tuple[dict[str, str], dict[str, float]]:
    files, secs = {}, {}
    for t in types:
        out = workdir / f"qwen0.5b-{t}.gguf"
        if not out.exists():
            code = ("import sys, time; from endcloud.end.gguf import export_gguf; t = time.perf_counter(); "
                    f"export_gguf({str(base)!r}, {str(out)!r}, gguf_type={t!r}); print(time.perf_counter() - t)")
            proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, check=True,
                                  cwd=ROOT, timeout=3600)
            secs[t] = float(proc.stdout.strip().splitlines()[-1])
            print(f"exported {t}: {secs[t]:.1f} s, {out.stat().st_size / 2**20:.0f} MiB", flush=True)
        files[t] = str(out)
    return files, secs


def table(res: dict, batches: list[int], export_s: dict[str, float]) -> str:
    lines = []
    bound_bw, cpu_bw = {}, {}
    for n, rounds in res["bandwidth"].items():
        best = {k: max(b["each"][k] for b in rounds) for k in rounds[0]["each"]}
        bound_bw[n] = max(best.values())
        cpu_bw[n] = max(max(b["cpu"].values()) for b in rounds)
        lines.append(f"read bandwidth, {n} threads, best over rounds (GB/s, 1 GiB fp32): "
                     + ", ".join(f"{k} {v:.1f}" for k, v in best.items())
                     + f" -> the bound uses {bound_bw[n]:.1f} GB/s ({max(best, key=best.get)}); CPU basis "
                     f"{cpu_bw[n]:.1f} GB/s")
    # For comparison with bench_decode.py's int8 rows: tok/s against the bound of the same model in bf16.
    bf16_bytes = res["decode_bytes"].get("bf16")
    lines += ["", "| format | MiB read/token | threads | batch | llama.cpp tok/s | **% of bound** | engine tok/s | "
              "engine % | bound tok/s | × bf16 bound | CPU-basis % | export s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, bw in bound_bw.items():
        for t, nbytes in res["decode_bytes"].items():
            for b in batches:
                bound = b * bw * 1e9 / nbytes
                raw = res["rows"][f"{t}|{b}|llama.cpp|{n}"]
                eng = res["rows"][f"{t}|{b}|engine|{n}"]
                # CPU basis only for one thread: with two, a spinning OpenMP thread burns CPU while it waits
                cpu = (f"{100 * res['rows'][f'{t}|{b}|cpu|{n}'] / (b * cpu_bw[n] * 1e9 / nbytes):.0f}%" if n == "1"
                       else "–")
                ex = f"{export_s[t]:.0f}" if t in export_s else "(cached)"
                vs_bf16 = f"{raw / (b * bw * 1e9 / bf16_bytes):.2f}" if bf16_bytes else "–"
                lines.append(f"| {t} | {nbytes / 2**20:.0f} | {n} | {b} | {raw:.1f} | **{100 * raw / bound:.0f}%** | "
                             f"{eng:.1f} | {100 * eng / bound:.0f}% | {bound:.1f} | {vs_bf16} | {cpu} | {ex} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--types", default="bf16,f16,q8_0,q4_0", help="GGUF weight types to export and time")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; every figure is the best round")
    ap.add_argument("--threads", default="2", help="llama.cpp and bandwidth threads; a list (1,2) measures each")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the model and GGUF files here (reused if present)")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    ap.add_argument("--omp-passive", action="store_true",
                    help="OMP_WAIT_POLICY=PASSIVE in the measuring process: OpenMP threads sleep at barriers instead "
                         "of spinning (on a loaded machine a spinning thread waits for a descheduled sibling)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    batches = [int(x) for x in a.batches.split(",")]
    if a.child:
        print(json.dumps(child(json.loads(a.child), batches, a.new_tokens, a.repeats,
                               [int(x) for x in a.threads.split(",")])))
        return 0
    print(f"load average at start: {os.getloadavg()}", flush=True)
    tmp = None
    if a.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-gguf-")
        workdir = Path(tmp.name)
    else:
        workdir = a.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        base = workdir / "qwen0.5b-bf16"
        if not (base / "config.json").exists():
            subprocess.run([sys.executable, str(ROOT / "bench" / "bench_decode.py"), "--save-model", "qwen0.5b", "bf16",
                            str(base)], check=True, timeout=1800)
        files, export_s = export_all(base, workdir, a.types.split(","))
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(files), "--batches", a.batches,
                               "--new-tokens", str(a.new_tokens), "--repeats", str(a.repeats), "--threads",
                               str(a.threads)], stdout=subprocess.PIPE, text=True, check=True, timeout=3600,
                              env={**os.environ, **({"OMP_WAIT_POLICY": "PASSIVE"} if a.omp_passive else {})})
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        print(table(res, batches, export_s))
        print(f"\nOMP_WAIT_POLICY={res['omp_wait_policy']}; child peak RSS {res['peak_rss_mb']:.0f} MB (all formats loaded at once); 1-min load average "
              f"after each round: {', '.join(f'{x:.1f}' for x in res['load'])}; at end: {os.getloadavg()}")
        if a.json:
            a.json.write_text(json.dumps({"export_s": export_s, **res}, indent=1))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
