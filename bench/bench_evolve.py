"""Benchmark the online loop: trigger → promoted adapter, and quality before vs after rounds.

Builds (or reuses) an embedded-default workspace with the demo's own stages — synthetic shop,
corpus, distillation by the offline reference teacher, a from-scratch Qwen2 base, the shop's
matcher — plus an initial LoRA published and activated as `shop` in the AdapterRegistry.
Then serves it on a real uvicorn (127.0.0.1) and runs waves of the demo's simulated
customers (`endcloud.demo._customers`: they ask the shop's held-out questions and downvote
replies that miss the facts). After each wave one `Evolver.tick()` turns the downvotes (and
takeovers) into pseudo-labels, trains, gates and — when the gate agrees — hot-swaps the new
adapter into the running server; the next wave measures again.

    .venv/bin/python bench/bench_evolve.py --quick              # tiny base, ~minutes on 2 cores
    .venv/bin/python bench/bench_evolve.py --rounds 3           # the demo's default sizes
    .venv/bin/python bench/bench_evolve.py --quick --fresh --write docs/bench/evolve.md

Prints, per round: trigger → promoted/rejected seconds (the trigger is the last downvote of
the wave, already in the ConversationStore; the time covers the step — teacher calls for the
pseudo-labels — the training, the gate's two measurements and the promotion), and per wave:
cloud takeover rate, fact accuracy of the served replies and of the end model's own drafts,
and the mean Final score (paper eq. 1, the workspace's evaluator against the reference
teacher's reply) of both. The machine's load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build(ws, cfg, echo=print) -> tuple[dict, object]:
    """The embedded default, by the demo's stages (skipped when the workspace already has them);
    returns the stage times and the reference teacher of the shop."""
    from endcloud import demo
    from endcloud.cloud import make_teacher
    from endcloud.config import DEFAULT_ADAPTER
    from endcloud.end.adapters import AdapterRegistry
    from endcloud.end.train import train

    times: dict[str, float] = {}

    def stage(name, fn, done: bool):
        if done:
            echo(f"  {name}: reused")
            return
        t0 = time.perf_counter()
        fn()
        times[name] = round(time.perf_counter() - t0, 1)
        echo(f"  {name}: {times[name]} s")

    stage("shop", lambda: demo._shop(ws, cfg), (ws.shop / "shop.yaml").exists())
    teacher = make_teacher("reference", shop=ws.shop, workspace=ws)
    stage("corpus", lambda: demo._corpus(ws), ws.pairs.exists())
    stage("distil", lambda: demo._distill(ws, cfg, teacher), ws.labels.exists())
    stage("pretrain", lambda: demo._pretrain(ws, cfg), (ws.base / "config.json").exists())
    stage("matcher", lambda: demo._matcher(ws, cfg), ws.matcher.exists() and any(ws.matcher.iterdir()))

    reg = AdapterRegistry(ws.adapters)

    def lora():
        import random

        natural, distilled = demo._examples(ws)
        rng = random.Random(cfg.seed)
        examples = distilled + rng.sample(natural, min(len(natural), len(distilled)))
        res = train(ws.base, examples, ws.root / "runs" / "lora", method="lora", steps=cfg.tuner_steps["lora"],
                    lr=cfg.tuner_lr["lora"], batch_size=cfg.train_batch, progress=False, resume=False, seed=cfg.seed)
        reg.activate(DEFAULT_ADAPTER, reg.publish(DEFAULT_ADAPTER, res.adapter_dir, manifest={"method": "lora"}))

    stage("initial lora", lora, reg.active(DEFAULT_ADAPTER) is not None)
    return times, teacher


def wave_quality(store, evaluator, teacher, questions, tag: str) -> dict:
    """Fact accuracy and mean Final of the wave's served replies and of the end model's drafts."""
    from endcloud.scoring import fact_correct

    by_customer = {f"{tag}-cust{i}": q for i, q in enumerate(questions)}
    rows = []
    for row in store.iter_replies():
        sess = store.session(row["session_id"]) or {}
        # an anonymous chat's `user` is stored as a label under the anonymous owner ("~anon:<user>")
        q = by_customer.get(str(sess.get("customer") or "").removeprefix("~anon:"))
        if q is not None:
            rows.append((q, row))
    refs = [teacher.reply([{"role": "user", "content": q["query"]}]).text for q, _ in rows]
    queries = [q["query"] for q, _ in rows]
    served = [r["served_text"] or "" for _, r in rows]
    drafts = [r["end_text"] or "" for _, r in rows]
    out = {"n": len(rows)}
    for name, texts in (("served", served), ("end", drafts)):
        finals = [s.final for s in evaluator.score_turns(queries, texts, refs)] if rows else []
        facts = [fact_correct(t, q.get("facts")) for t, (q, _) in zip(texts, rows)]
        facts = [f for f in facts if not math.isnan(f)]
        out[f"final_{name}"] = round(statistics.fmean(finals), 4) if finals else None
        out[f"facts_{name}"] = round(statistics.fmean(facts), 4) if facts else None
    return out


def run(args) -> dict:
    import random

    import psutil
    import torch

    from endcloud import demo
    from endcloud.compose import build_app_from_workspace
    from endcloud.config import Workspace
    from endcloud.evolve import EvolveSettings, GateSettings
    from endcloud.evolve.service import evolver_for_workspace
    from endcloud.fileio import read_jsonl
    from endcloud.loopback import LoopbackServer
    from endcloud.scoring import default_evaluator

    torch.set_num_threads(args.threads)
    cfg = demo.DemoConfig.quick(customers=args.customers or 16) if args.quick else \
        demo.DemoConfig(customers=args.customers or 40)
    ws = Workspace.resolve(args.workspace or ("/tmp/endcloud-bench-evolve" + ("-quick" if args.quick else "")))
    if args.fresh and ws.root.exists():
        import shutil

        shutil.rmtree(ws.root)
    ws.ensure()
    load0 = os.getloadavg()
    t_all = time.perf_counter()
    print(f"workspace {ws.root} ({'quick' if args.quick else 'default'} sizes), load average {load0[0]:.1f}")
    build_times, teacher = build(ws, cfg)

    questions = [d for d in read_jsonl(ws.shop / "chats" / "eval.jsonl") if d.get("facts")]
    random.Random(cfg.seed).shuffle(questions)
    questions = questions[: cfg.customers]
    evaluator = default_evaluator(str(ws.root))
    # served as the demo serves it (see demo._online): no knowledge snippets for a from-scratch base
    app = build_app_from_workspace(ws, teacher=teacher, knowledge_snippets=0, max_new_tokens=cfg.max_new_tokens)
    promoted_at: list[float] = []

    def promote(path: Path) -> None:
        app.state.engine.swap_adapter(path)  # the hot swap, exactly as the demo and the service do it
        promoted_at.append(time.perf_counter())

    settings = EvolveSettings(min_labels=cfg.evolve_min_labels, min_steps=cfg.evolve_steps, max_steps=cfg.evolve_steps,
                              label_repeat=3, replay_ratio=0.5,
                              gate=GateSettings(max_new_tokens=cfg.max_new_tokens, heldout_size=24))
    ev = evolver_for_workspace(ws, teacher=teacher, settings=settings, on_promote=promote, background=False,
                               evaluator=evaluator)
    waves, rounds = [], []
    with LoopbackServer(app, name="bench-evolve", start_timeout_s=120, stop_timeout_s=15) as srv:
        url = srv.url
        for k in range(args.rounds + 1):
            tag = f"w{k}-{int(time.time())}"
            t0 = time.perf_counter()
            w = demo._customers(url, questions, cfg, tag)
            w["seconds"] = round(time.perf_counter() - t0, 1)
            w["adapter"] = app.state.engine.adapter
            w.update(wave_quality(app.state.store, evaluator, teacher, questions, tag))
            waves.append(w)
            print(f"wave {k}: takeover {w['takeover_rate']:.0%}, facts served {_pct(w['facts_served'])} "
                  f"(end drafts {_pct(w['facts_end'])}), Final served {w['final_served']} (end {w['final_end']}), "
                  f"downvotes {w['downvotes']}, {w['seconds']} s, adapter {w['adapter']}")
            if k == args.rounds:
                break
            t_trigger = time.perf_counter()  # the wave's last downvote is in the store now
            n_promoted = len(promoted_at)
            c0 = time.process_time()  # CPU seconds: a figure the other engineers' load distorts less
            tick = ev.tick()
            t_end = time.perf_counter()
            cpu = round(time.process_time() - c0, 1)
            rnd = tick["round"]
            row = {"round": k + 1, "cpu_seconds": cpu, "labels_new": tick["step"]["new_labels"], "teacher_calls": tick["step"]["teacher_calls"]}
            if rnd is None:
                row.update(promoted=None, seconds=round(t_end - t_trigger, 1))
                print(f"round {k + 1}: {row['labels_new']} new labels, no round due")
            else:
                done = promoted_at[-1] if len(promoted_at) > n_promoted else t_end
                row.update(version=rnd["version"], promoted=rnd["promoted"], steps=rnd["steps"],
                           labels=rnd["train"]["examples"], round_seconds=round(rnd["seconds"], 1),
                           seconds=round(done - t_trigger, 1), loss=(rnd["train"]["loss_first"], rnd["train"]["loss_last"]),
                           gate=rnd["gate"]["reasons"], cand=rnd["gate"]["candidate"], champ=rnd["gate"]["champion"])
                print(f"round {k + 1}: {rnd['version']} {'PROMOTED' if rnd['promoted'] else 'rejected'} — trigger → "
                      f"{'promoted' if rnd['promoted'] else 'decision'} {row['seconds']} s (train+gate "
                      f"{row['round_seconds']} s, {cpu} CPU-s, {rnd['steps']} steps, {row['labels_new']} new labels); gate: "
                      f"{'; '.join(rnd['gate']['reasons'])}")
            rounds.append(row)
    load1 = os.getloadavg()
    result = {"quick": args.quick, "workspace": str(ws.root), "build_seconds": build_times, "waves": waves,
              "rounds": rounds, "labels": ev.labels.counts(), "load_before": load0, "load_after": load1,
              "cpus": psutil.cpu_count(), "torch_threads": args.threads,
              "base_params": _params(ws.base), "total_seconds": round(time.perf_counter() - t_all, 1),
              "config": {"customers": cfg.customers, "evolve_steps": cfg.evolve_steps,
                         "evolve_min_labels": cfg.evolve_min_labels, "unhappy_share": cfg.unhappy_share,
                         "max_new_tokens": cfg.max_new_tokens, "pretrain": cfg.pretrain}}
    print(f"load average {load0[0]:.1f} → {load1[0]:.1f} on {result['cpus']} CPUs; total {result['total_seconds']} s")
    print(json.dumps(result, default=str)[:4000])
    return result


def _params(base: Path) -> int | None:
    try:
        cfg = json.loads((base / "config.json").read_text())
        h, n, v, i = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["intermediate_size"]
        return int(v * h + n * (4 * h * h + 3 * h * i))  # rough: embeddings + attention + MLP
    except (OSError, KeyError, ValueError):
        return None


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the demo's quick sizes (tiny base, 16 customers)")
    p.add_argument("--rounds", type=int, default=2, help="evolve rounds (a customer wave before each and after the last)")
    p.add_argument("--customers", type=int, default=None, help="customers per wave (quick 16, default 40)")
    p.add_argument("--workspace", default=None, help="workspace to build or reuse (default /tmp/endcloud-bench-evolve[-quick])")
    p.add_argument("--fresh", action="store_true", help="rebuild the workspace from scratch")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--json", default=None, help="also write the figures as JSON here")
    a = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # figures appear as they are measured, even into a file
    res = run(a)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
