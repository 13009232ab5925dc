"""Benchmark federated adapters: does a shop gain from learning with others, without sharing data?

N generated shops of different domains (`endcloud.corpus.shopworld.varied`, one random domain
each; `--kind shopworld` for the home-goods generator), each with little data (`--size`
customer questions, ~70 % for training, the rest held out with the facts a right answer states
and the offline teacher's reply as the reference). One base for all: a small Qwen2 pretrained
from scratch on *other* generated shops (`endcloud.federate.simulate.public_base`). Then, with
the same step budget per shop (rounds × local steps):

    base       the base alone (no adapter)
    local      each shop trains its own LoRA on its own data only
    fedavg     Flower federation over loopback gRPC: FedAvg (weighted by examples) of the whole adapter
    personal   the same, sharing only the LoRA A matrices; each shop keeps its B (FedSA-LoRA)
    pooled     one LoRA on every shop's data together (the upper bound no shop may have), with
               the N shops' total budget
    X+gate     what each shop serves after federation X: its gate compared the federated adapter
               with its local-only one (published and active before the run) on its held-out set

Every model answers each shop's held-out questions with that shop's knowledge in the prompt
(`endcloud.kb.prompt.ground`, as serving does). Reported per shop and on the union of all
held-out questions: the paper's Final (eq. 1, the shop's default evaluator against the
teacher's reply) and fact accuracy; for the federations: held-out loss per round and the round
it converged, the gate's decision at each shop, and bytes per round per shop (the tensors, and
everything on the wire measured by a TCP relay) against the size of the shop's data.

    .venv/bin/python bench/bench_federated.py --quick                 # seconds-to-minutes smoke
    .venv/bin/python bench/bench_federated.py                         # the figures in docs/benchmarks.md
    .venv/bin/python bench/bench_federated.py --write docs/bench/federated.json

Budgets are steps, never seconds: the same arguments give the same models on a quiet machine
and a loaded one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def replies(base_dir, adapter_dir, convs, max_new_tokens):
    from endcloud.runtime.model import EndModel

    model = EndModel.load(base_dir, adapter_dir)
    return [g.text for g in model.generate(convs, max_new_tokens=max_new_tokens, temperature=0.0)]


def score_shop(shop, texts, evaluator):
    """Per held-out item: Final against the teacher's reply, and fact correctness (NaN: no facts)."""
    from endcloud.scoring import fact_accuracy

    h = shop.heldout
    finals = [s.final for s in evaluator.score_turns([x["query"] for x in h], texts, [x["reference"] for x in h])]
    facts = list(fact_accuracy(texts, [x.get("facts") for x in h]))
    return finals, facts


def mean(xs):
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else float("nan")


def _trained(out: Path, steps: int) -> bool:
    """An adapter already trained here with this step budget (a rerun reuses it)."""
    try:
        return json.loads((out / "training.json").read_text(encoding="utf-8"))["steps"] == steps
    except (OSError, ValueError, KeyError):
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shops", type=int, default=4)
    ap.add_argument("--kind", default="varied", help="varied (a random domain per shop) | shopworld")
    ap.add_argument("--lang", default="en", help="zh | en | mixed")
    ap.add_argument("--size", type=int, default=40, help="questions (varied) or sessions (shopworld) per shop")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--local-steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--base-steps", type=int, default=300, help="pretraining steps of the public base")
    ap.add_argument("--base-shops", type=int, default=8, help="other generated shops the base is pretrained on")
    ap.add_argument("--base", default=None,
                    help="the shops' common base: 'reader' (the shipped shop reader, endcloud/assets/reader) or a "
                         "model directory; default: a public base pretrained here on other generated shops")
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heldout", type=int, default=16, help="held-out questions per shop (at most)")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--seed", type=int, default=100, help="first shop seed (the base uses 10000+)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/endcloud-bench-federated")
    ap.add_argument("--fresh", action="store_true", help="rebuild shops and base")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the machinery, not the quality")
    ap.add_argument("--write", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.rounds, args.local_steps, args.base_steps = 16, 2, 4, 40
        args.hidden, args.heldout, args.max_new_tokens, args.base_shops = 48, 6, 24, 3

    import torch

    torch.set_num_threads(args.threads)
    from endcloud.end.adapters import AdapterRegistry
    from endcloud.end.data import Example
    from endcloud.end.train import train
    from endcloud.federate import _flower as fl
    from endcloud.federate.server import FederationSettings
    from endcloud.federate.shops import load_shop
    from endcloud.federate.simulate import generated_shops, make_client, public_base, simulate
    from endcloud.federate.weights import init_adapter, read_tensors
    from endcloud.scoring import default_evaluator

    fl.quiet(50)
    work = Path(args.work)
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    langs = ("zh", "en") if args.lang == "mixed" else (args.lang,)
    t0 = time.perf_counter()
    marker = work / "shops.json"
    if marker.exists():
        wss = [Path(p) for p in json.loads(marker.read_text())]
    else:
        wss = generated_shops(work / "shops", args.shops, kind=args.kind, langs=langs, size=args.size, seed=args.seed)
        marker.write_text(json.dumps([str(p) for p in wss]))
    base = work / "base"
    if args.base:
        from endcloud.end.reader import reader_base

        base = Path(reader_base()) if args.base == "reader" else Path(args.base)
    elif not (base / "config.json").exists():
        print(f"pretraining the public base ({args.base_steps} steps on {args.base_shops} other shops)...", flush=True)
        public_base(base, kind=args.kind, langs=langs, shops=args.base_shops, steps=args.base_steps,
                    hidden=args.hidden, layers=args.layers, heads=4 if args.hidden % 8 == 0 else 2, kv_heads=2,
                    intermediate=args.hidden * 2, seq_len=256)
    setup_s = time.perf_counter() - t0
    shops = [load_shop(ws, base_dir=base, heldout_size=args.heldout) for ws in wss]
    evaluators = [default_evaluator(str(ws)) for ws in wss]
    budget = args.rounds * args.local_steps
    info = []
    for ws, shop in zip(wss, shops):
        made = json.loads((ws / "generated.json").read_text(encoding="utf-8"))
        info.append({"shop": ws.name, "name": shop.name, "domain": made.get("domain"), "lang": made.get("lang"),
                     "train_examples": len(shop.train), "heldout": len(shop.heldout),
                     "heldout_with_facts": sum(1 for h in shop.heldout if h.get("facts")),
                     "data_bytes": (ws / "corpus" / "pairs.jsonl").stat().st_size})
    print(json.dumps(info, ensure_ascii=False, indent=1), flush=True)
    convs = [[shop.ground(list(h["context"]) + [{"role": "user", "content": h["query"]}]) for h in shop.heldout]
             for shop in shops]
    results: dict[str, dict] = {}
    timing: dict[str, float] = {}

    def evaluate(name, adapters):
        """adapters: one adapter dir (or None) per shop."""
        t = time.perf_counter()
        per = []
        for shop, conv, ev, ad in zip(shops, convs, evaluators, adapters):
            texts = replies(base, ad, conv, args.max_new_tokens)
            finals, facts = score_shop(shop, texts, ev)
            per.append({"final": mean(finals), "facts": mean(facts), "finals": finals, "fact_items": facts,
                        "sample": texts[:2]})
        union_f = [x for p in per for x in p["finals"]]
        union_k = [x for p in per for x in p["fact_items"]]
        results[name] = {"per_shop": [{"final": round(p["final"], 4), "facts": round(p["facts"], 4), "sample": p["sample"]}
                                      for p in per],
                         "union": {"final": round(mean(union_f), 4), "facts": round(mean(union_k), 4),
                                   "n": len(union_f), "n_facts": sum(1 for x in union_k if not math.isnan(x))}}
        timing[f"eval_{name}"] = round(time.perf_counter() - t, 1)
        u = results[name]["union"]
        print(f"{name:14s} union Final {u['final']:.3f}  facts {u['facts']:.3f}  per shop "
              + " ".join(f"{p['final']:.3f}/{p['facts']:.3f}" for p in results[name]["per_shop"]), flush=True)

    init = init_adapter(base, work / "init", seed=0, r=args.lora_r)
    evaluate("base", [None] * len(shops))

    # local-only: each shop alone, the whole budget on its own data
    t = time.perf_counter()
    local_dirs = []
    for i, shop in enumerate(shops):
        out = work / "local" / f"shop-{i}"
        if not _trained(out, budget):
            train(base, shop.train, out, method="lora", steps=budget, lr=args.lr, batch_size=args.batch_size,
                  init_adapter=init, progress=False, seed=0, save_every=budget, resume=False, max_input_len=256,
                  max_output_len=64)
        local_dirs.append(out)
    timing["train_local"] = round(time.perf_counter() - t, 1)
    evaluate("local", local_dirs)

    # pooled: one adapter on all shops' data, the shops' budgets together
    t = time.perf_counter()
    pooled = work / "pooled"
    union_train = [Example(e.messages, e.response, id=f"{i}-{e.id}", source=e.source) for i, s in enumerate(shops)
                   for e in s.train]
    if not _trained(pooled, budget * len(shops)):
        train(base, union_train, pooled, method="lora", steps=budget * len(shops), lr=args.lr,
              batch_size=args.batch_size, init_adapter=init, progress=False, seed=0, save_every=budget * len(shops),
              resume=False, max_input_len=256, max_output_len=64)
    timing["train_pooled"] = round(time.perf_counter() - t, 1)
    evaluate("pooled", [pooled] * len(shops))

    federations = {}
    for name, share in (("fedavg", "all"), ("personal", "lora_A")):
        for ws, local in zip(wss, local_dirs):  # each shop already serves its local-only adapter: the
            shutil.rmtree(ws / "adapters", ignore_errors=True)  # champion its gate compares the federated one with
            shutil.rmtree(ws / "federate", ignore_errors=True)
            reg = AdapterRegistry(ws / "adapters")
            reg.activate("shop", reg.publish("shop", local))
        settings = FederationSettings(rounds=args.rounds, local_steps=args.local_steps, lr=args.lr, share=share,
                                      aggregator="fedavg", min_clients=len(shops), lora_r=args.lora_r, eval_every=1,
                                      gate=True, seed=0)
        relays: list = []  # the wire-audit tests' byte-recording relay, counting here

        def dial(address):
            if not relays:
                from tests.federate.wiretap import WireTap

                relays.append(WireTap(address))
            return relays[0].address

        t = time.perf_counter()
        lock = threading.Lock()  # one shop trains at a time (see simulate.py)
        clients = [make_client(ws, base_dir=base, node=f"shop-{i}", lock=lock, heldout_size=args.heldout,
                               batch_size=args.batch_size, max_input_len=256, max_output_len=64)
                   for i, ws in enumerate(wss)]
        sim = simulate(wss, base_dir=base, settings=settings, out_dir=work / name, clients=clients, dial=dial)
        timing[f"federation_{name}"] = round(time.perf_counter() - t, 1)
        relays[0].close()
        rep = sim.report
        # the adapter each shop ends with: the global (+ its own B under "personal")
        adapters = []
        for i, c in enumerate(clients):
            out = work / name / f"final-shop-{i}"
            c.ensure_template(settings.fit_config())
            adapters.append(c.compose(c.template.arrays(read_tensors(rep.global_dir)), out))
        evaluate(name, adapters)
        # what each shop serves afterwards: the federated adapter where its gate passed, else its local one
        evaluate(f"{name}+gate", [AdapterRegistry(ws / "adapters").active("shop") for ws in wss])
        rounds = rep.rounds
        federations[name] = {
            "eval_loss": rep.eval_loss, "rounds_to_converge": rep.rounds_to_converge,
            "gate": {n: g.get("promoted") for n, g in rep.gate.items()},
            "gate_reasons": {c.node: c.activation.gate["reasons"] if c.activation else None for c in clients},
            "bytes_up_per_round_per_shop": sorted({b for r in rounds for b in r["bytes_up"].values()}),
            "bytes_down_per_round_per_shop": rounds[0]["bytes_down"],
            "wire_up_total": len(relays[0].up), "wire_down_total": len(relays[0].down),
            "wire_per_round_per_shop": round((len(relays[0].up) + len(relays[0].down)) / (len(rounds) * len(shops))),
            "tensor_numbers": sum(math.prod(s) for s in rep.template["shapes"]),
            "errors": [repr(e) for e in sim.errors],
        }
        print(f"{name}: eval loss by round {rep.eval_loss}, converged at round {rep.rounds_to_converge}, "
              f"gate {federations[name]['gate']}, up {federations[name]['bytes_up_per_round_per_shop']} B/round/shop, "
              f"wire {federations[name]['wire_per_round_per_shop']} B/round/shop", flush=True)

    out = {"args": vars(args), "shops": info, "results": results, "federations": federations, "timing_s": timing,
           "setup_s": round(setup_s, 1), "total_s": round(time.perf_counter() - t0, 1),
           "load_avg": os.getloadavg(), "flower": fl.FLOWER_VERSION, "step_budget_per_shop": budget}
    print(json.dumps({k: out[k] for k in ("timing_s", "setup_s", "total_s", "load_avg")}, indent=1))
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(json.dumps(out, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
