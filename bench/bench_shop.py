"""Benchmark the synthetic shop and the knowledge base.

Generates a shop (zh and en) of --sessions sessions and prints sessions/s, MB/s and the
process's peak RSS growth (sampled at every chunk: flat means streaming works); then loads
the pack and prints KB queries/s and the retrieval fact-recall on the held-out eval set
(share of questions whose facts are all in the top-3 snippets — what the reference teacher
and the end model's context rely on).

    .venv/bin/python bench/bench_shop.py                    # 200k sessions per language
    .venv/bin/python bench/bench_shop.py --sessions 1000000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=200_000)
    ap.add_argument("--products", type=int, default=40)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--langs", default="zh,en")
    ap.add_argument("--keep", action="store_true", help="keep the generated packs (printed path)")
    args = ap.parse_args()

    import os

    import psutil

    from endcloud.corpus.shopworld import generate_shop, norm
    from endcloud.kb import KnowledgeBase, ShopPack

    proc = psutil.Process()
    tmp = Path(tempfile.mkdtemp(prefix="bench-shop-"))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    try:
        for lang in args.langs.split(","):
            out = tmp / lang
            base = proc.memory_info().rss
            peak = [base]

            def progress(_n: int) -> None:
                peak[0] = max(peak[0], proc.memory_info().rss)

            t, c = time.perf_counter(), time.process_time()
            s = generate_shop(out, lang=lang, sessions=args.sessions, products=args.products, workers=args.workers, progress=progress)
            dt, cpu = time.perf_counter() - t, time.process_time() - c
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            print(f"[{lang}] generate {s.sessions:,} sessions ({s.turns:,} messages, {size / 1e6:.0f} MB) in {dt:.1f} s: "
                  f"{s.sessions / dt:,.0f} sessions/s wall, {s.sessions / cpu:,.0f} per CPU-second (this process), "
                  f"{size / 1e6 / dt:.1f} MB/s; RSS growth {(peak[0] - base) / 1e6:.1f} MB; "
                  f"wrong replies {s.wrong_rate:.1%}")

            t = time.perf_counter()
            pack = ShopPack.load(out)
            kb = KnowledgeBase(pack)
            load_s = time.perf_counter() - t
            rows = [json.loads(line) for line in (out / "chats" / "eval.jsonl").read_text(encoding="utf-8").splitlines()]
            queries = [r["query"] for r in rows] * 10
            t, c = time.perf_counter(), time.process_time()
            for q in queries:
                kb.search(q, k=3)
            qdt, qcpu = time.perf_counter() - t, time.process_time() - c
            graded = [r for r in rows if r["facts"]]
            hit = sum(all(norm(f) in norm(" ".join(x.text for x in kb.search(r["query"], k=3))) for f in r["facts"]) for r in graded)
            print(f"[{lang}] kb: load+index {load_s * 1000:.0f} ms ({len(kb)} snippets, {len(pack.orders)} orders); "
                  f"{len(queries) / qdt:,.0f} queries/s wall, {len(queries) / qcpu:,.0f} per CPU-second; top-3 fact recall on eval {hit}/{len(graded)} = {hit / len(graded):.1%}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
