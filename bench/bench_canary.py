"""Benchmark the canary: turns its decision rule needs to catch a quality drop, and what serving
two adapters at once costs against one.

    .venv/bin/python bench/bench_canary.py                   # both parts
    .venv/bin/python bench/bench_canary.py --part rule --runs 400
    .venv/bin/python bench/bench_canary.py --part serve --customers 16 --turns 4 --worker process

Part "rule" simulates the server's whole sequential procedure (`endcloud.serve.canary` +
`endcloud.scoring.sequential.judge` with the default `GuardRule`): a canary starts at 5 %,
is judged after every ~10 candidate turns, ramps 25 -> 50 -> 100 % while healthy and is rolled
back when a guard is worse beyond its margin. The champion's rates: takeover 20 %, ungrounded
5 %, downvote 2 %, latency 300 +- 100 ms; the candidate's takeover rate is raised by each
`--drops` value (0: an equal candidate). Per drop: how often it was rolled back / promoted /
still undecided after `--max-turns`, the candidate turns and all turns needed, and the share
it had reached. The equal row's rollbacks are the rule's real false-alarm rate under repeated
looks; the worse rows' promotions are its misses.

Part "serve" runs the real in-process `EndModel` (random weights, the embedded-default shape:
hidden 256 x 4 layers) on the continuous-batching `AsyncEngine` with two random LoRA adapters,
`--customers` concurrent customers x `--turns` turns each, `--max-new-tokens` tokens a reply
(random weights rarely end early): all on one adapter, then 1 customer in 16 (a 6 % canary) and
half of them (an A/B split) on the second adapter, passed per request (`variant=`). Prints
turns/s, tokens/s and time to first token p50/p95 of each, best of `--repeats`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHAMPION = {"takeover": 0.20, "ungrounded": 0.05, "downvote": 0.02}
LATENCY_MS = (300.0, 100.0)
CHECK_EVERY = 10  # candidate turns between judgements (the server judges every canary_s seconds)


# ---- part 1: the decision rule ------------------------------------------------------------
def simulate(drop: float, *, rule, rng, max_turns: int, start_share: float = 0.05, stages=(0.05, 0.25, 0.5, 1.0),
             guard: str = "takeover") -> dict:
    """One canary's life under the rule; returns how it ended and after how many turns."""
    from endcloud.scoring.sequential import ArmStats, judge

    cand_rates = dict(CHAMPION)
    cand_rates[guard] = min(1.0, cand_rates[guard] + drop)
    arms = {"champion": ArmStats(), "candidate": ArmStats()}
    share, stage_turns, total = start_share, 0, 0
    while total < max_turns:
        block = max(1, round(CHECK_EVERY / share))  # all turns until ~CHECK_EVERY more reach the candidate
        n_c = int(rng.binomial(block, share))
        counts = {"champion": block - n_c, "candidate": n_c}
        for arm, n in counts.items():
            rates = CHAMPION if arm == "champion" else cand_rates
            s = arms[arm]
            s.turns += n
            s.takeover += int(rng.binomial(n, rates["takeover"]))
            s.checked += n
            s.ungrounded += int(rng.binomial(n, rates["ungrounded"]))
            s.downvote += int(rng.binomial(n, rates["downvote"]))
            lat = rng.normal(LATENCY_MS[0], LATENCY_MS[1], n)
            s.latency_n += n
            s.latency_sum += float(lat.sum())
            s.latency_sq += float((lat * lat).sum())
        total += block
        stage_turns += n_c
        later = [x for x in stages if x > share + 1e-9]
        nxt = min(later) if later else 1.0
        v = judge(arms["champion"], arms["candidate"], rule, stage_turns=stage_turns, last_stage=nxt >= 1.0)
        if v.action == "rollback":
            return {"end": "rollback", "cand": arms["candidate"].turns, "total": total, "share": share}
        if v.action == "promote":
            return {"end": "promote", "cand": arms["candidate"].turns, "total": total, "share": 1.0}
        if v.action == "ramp":
            share, stage_turns = nxt, 0
    return {"end": "undecided", "cand": arms["candidate"].turns, "total": total, "share": share}


def part_rule(args) -> None:
    import numpy as np

    from endcloud.scoring.sequential import GuardRule

    rule = GuardRule(draws=args.draws)
    print(f"## decision rule: {args.runs} simulated canaries per row, default GuardRule "
          f"(min_samples {rule.min_samples}, stage_samples {rule.stage_samples}, margin_takeover {rule.margin_takeover}, "
          f"confidence {rule.confidence}, ramp_risk {rule.ramp_risk}, promote_risk {rule.promote_risk}; "
          f"{args.draws} Monte Carlo draws); champion takeover {CHAMPION['takeover']:.0%}, judged every "
          f"~{CHECK_EVERY} candidate turns, start 5 %")
    print("| takeover drop | rolled back | promoted | undecided | candidate turns p50 / p90 (to the verdict) | "
          "all turns p50 | rollbacks at 5 % / at <= 25 % |")
    print("|---|---|---|---|---|---|---|")
    for drop in args.drops:
        rng = np.random.default_rng(int(drop * 1000) + 1)
        t0 = time.perf_counter()
        res = [simulate(drop, rule=rule, rng=rng, max_turns=args.max_turns) for _ in range(args.runs)]
        ends = {k: sum(r["end"] == k for r in res) / len(res) for k in ("rollback", "promote", "undecided")}
        decided = [r for r in res if r["end"] != "undecided"] or res
        cand = sorted(r["cand"] for r in decided)
        total = sorted(r["total"] for r in decided)
        shares = [r["share"] for r in res if r["end"] == "rollback"]
        at = (f"{sum(s <= 0.05 for s in shares) / len(shares):.1%} / {sum(s <= 0.25 for s in shares) / len(shares):.1%}"
              if shares else "-")
        print(f"| +{drop:.2f} | {ends['rollback']:.1%} | {ends['promote']:.1%} | {ends['undecided']:.1%} | "
              f"{cand[len(cand) // 2]} / {cand[int(len(cand) * 0.9)]} | {total[len(total) // 2]} | {at} |")
        print(f"<!-- {time.perf_counter() - t0:.1f} s -->", file=sys.stderr)


# ---- part 2: two adapters at once vs one ----------------------------------------------------
def lora(base: Path, out: Path, seed: int) -> Path:
    """A random (non-zero) LoRA adapter on `base`, saved with peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out)
    return out


async def load(engine, customers: int, turns: int, max_new: int, on_candidate: set[int]) -> dict:
    from bench.bench_serve import QUESTIONS

    ttfts: list[float] = []
    tokens = 0

    async def customer(i: int) -> None:
        nonlocal tokens
        msgs: list[dict] = []
        for t in range(turns):
            msgs = msgs + [{"role": "user", "content": QUESTIONS[(i + t) % len(QUESTIONS)]}]
            t0 = time.perf_counter()
            stream = engine.stream_scored(msgs, query=None, max_new_tokens=max_new, temperature=0.0, top_p=1.0,
                                          session=f"s{i}", variant="cand" if i in on_candidate else None)
            first = None
            async for _ in stream:
                if first is None:
                    first = time.perf_counter() - t0
            gen, _ = stream.result
            ttfts.append(first if first is not None else time.perf_counter() - t0)
            tokens += gen.tokens
            msgs = msgs + [{"role": "assistant", "content": gen.text}]

    t0 = time.perf_counter()
    await asyncio.gather(*(customer(i) for i in range(customers)))
    wall = time.perf_counter() - t0
    ttfts.sort()
    return {"turns_s": customers * turns / wall, "tok_s": tokens / wall, "ttft50": ttfts[len(ttfts) // 2],
            "ttft95": ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.95))], "wall": wall}


def part_serve(args) -> None:
    import torch

    from bench.bench_serve import build_model
    from endcloud.runtime.async_engine import AsyncEngine
    from endcloud.runtime.model import EndModel

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        base = build_model(Path(tmp) / "base", args.size)
        a1, a2 = lora(base, Path(tmp) / "a1", 1), lora(base, Path(tmp) / "a2", 2)
        model = EndModel.load(base, a1, threads=args.threads)
        n = args.customers
        mixes = {"one adapter": set(), f"canary 1/{n} on a 2nd adapter": {0}, "A/B half on a 2nd adapter": set(range(0, n, 2))}

        async def run() -> dict:
            engine = AsyncEngine(model, adapter="a1", worker=args.worker, max_batch=args.max_batch)
            engine.start()
            engine.add_variant("cand", a2)
            try:
                await load(engine, n, 1, 4, set())  # warm-up: the engine process, its pools
                best: dict[str, dict] = {}
                for _ in range(args.repeats):  # interleaved: the box's noise hits every mix alike
                    for name, on in mixes.items():
                        r = await load(engine, n, args.turns, args.max_new_tokens, on)
                        if name not in best or r["turns_s"] > best[name]["turns_s"]:
                            best[name] = r
                return best
            finally:
                await engine.stop()

        best = asyncio.run(run())
    one = best["one adapter"]
    print(f"\n## serving two adapters at once vs one: {args.size} random model, {n} customers x {args.turns} turns, "
          f"{args.max_new_tokens} tokens a reply, continuous batching (worker {args.worker}, max_batch {args.max_batch}, "
          f"{args.threads} torch thread(s)), best of {args.repeats}")
    print("| mix | turns/s | tokens/s | vs one adapter | TTFT p50 | TTFT p95 |")
    print("|---|---|---|---|---|---|")
    for name, r in best.items():
        print(f"| {name} | {r['turns_s']:.2f} | {r['tok_s']:.0f} | {r['turns_s'] / one['turns_s']:.2f}x | "
              f"{r['ttft50'] * 1000:.0f} ms | {r['ttft95'] * 1000:.0f} ms |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("rule", "serve", "both"), default="both")
    ap.add_argument("--runs", type=int, default=200, help="rule: simulated canaries per drop")
    ap.add_argument("--drops", type=float, nargs="+", default=[0.0, 0.10, 0.15, 0.25],
                    help="rule: how much higher the candidate's takeover rate is")
    ap.add_argument("--max-turns", type=int, default=50_000, help="rule: all turns before a canary counts as undecided")
    ap.add_argument("--draws", type=int, default=4000, help="rule: Monte Carlo draws per guard (the server uses 20000)")
    ap.add_argument("--customers", type=int, default=16)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--size", choices=("default", "conftest"), default="default")
    ap.add_argument("--worker", choices=("thread", "process"), default="thread")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    if args.part in ("rule", "both"):
        part_rule(args)
    if args.part in ("serve", "both"):
        part_serve(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
