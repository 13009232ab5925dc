"""Shop tasks: the base, a chat-only adapter and a multi-task adapter, per task type, on a held-out generated shop.

    .venv/bin/python bench/bench_tasks.py                       # zh shop, the default budgets (below)
    .venv/bin/python bench/bench_tasks.py --lang en --seed 12 --out bench-tasks-en.json
    .venv/bin/python bench/bench_tasks.py --quick               # a smoke run: tiny budgets, figures meaningless

The shop is generated here (`endcloud.corpus.shopworld.generate_shop`, a seed no other bench or
the shop reader's recipe uses); the base is the shipped shop reader. Two training stages, budgets
in optimizer steps (never seconds):

    stage 1   chat        LoRA from the reader on the shop's dialogue (the questions customers ask of
                          the pack, answered by the teacher, grounded as served)      --chat-steps
    stage 2a  chat-only   stage 1 continued on dialogue only                          --task-steps
    stage 2b  multi-task  stage 1 continued on the shop's tasks + `--replay` dialogue --multi-steps
                          (default --task-steps / --replay)

    stage 3   polish      each adapter continued on dialogue alone, at a lower rate    --polish-steps
                                                                                   --polish-lr

so both adapters have the same start, see the same number of dialogue examples and end with the
same dialogue stage; the multi-task adapter sees the tasks besides, in the extra steps that costs. (With the same
steps, replay 0.3, its dialogue was a third of the chat-only adapter's and its chat facts
fell from 0.93 to 0.74: docs/benchmarks.md.)
Every adapter is a LoRA of rank `--lora-r` on every linear layer (`--targets`; `attention` for the
attention projections alone). The multiple-choice, ranking, retrieval and named-entity items also
train the ranking of their candidates (`endcloud.end.train.choice_loss`, `--choice-weight`; 0 for
the language-model loss alone).
Measured on held-out items (products, phrasings and policy sentences stage 2 never saw):

    per task / type   ShopBench's metric with its chance level; multiple choice by the options'
                      log-likelihood (`--mc`, default loglik: a 2.7M-parameter reader does not follow
                      the instruction's answer format), ranking and retrieval by the candidates'
                      log-likelihood (`--rank`, default loglik: every candidate ranked, the top 3
                      retrieved), named entities by their spans' (`--ner`, default loglik: the
                      likeliest run of up to 4 words of the title), and the other way (generate)
                      of each beside it
    chat quality      held-out dialogue questions: fact accuracy (every expected fact stated) and
                      eq. 1's Final against the teacher's reply (Sim: char n-grams for zh / MiniLM
                      for en; Match: TF-IDF over the shop's dialogue), per question kind, and the
                      multi-task adapter minus the chat-only one over the same turns with a 95 %
                      paired-bootstrap interval (`--chat-eval` judges more questions than the
                      fifth of `--chat-questions` held out, none of them trained on)
    classifiers       intent and sentiment of `endcloud.tasks.classify` (lexicon, and n-gram naive
                      Bayes trained on the task set's training items and the shop's chat logs)

Writes a JSON report (--out) and prints the tables docs/benchmarks.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def chat_quality(model, cases, evaluator) -> dict:
    from endcloud.scoring.facts import fact_correct

    replies = model.generate([c.messages for c in cases], max_new_tokens=64)
    judged = [(c, r) for c, r in zip(cases, replies) if c.expect]
    facts = [fact_correct(r, c.expect) for c, r in judged]
    comp = evaluator.components([c.query for c in cases], replies, [c.reference for c in cases])
    kinds = sorted({c.kind for c, _ in judged})
    by_kind = {k: _acc([f for (c, _), f in zip(judged, facts) if c.kind == k]) for k in kinds}
    return {"n": len(cases), "n_facts": len(judged), "facts": round(sum(facts) / max(1, len(facts)), 4),
            "final": round(float(comp["final"].mean()), 4), "facts_by_kind": by_kind,
            # per case, in the cases' order: the paired comparison between adapters reads these
            "fact_each": [int(f) for f in facts], "final_each": [round(float(x), 4) for x in comp["final"]],
            "samples": [{"q": c.query, "reply": r, "expect": c.expect} for c, r in judged[:4]]}


def paired_difference(a: list[float], b: list[float], *, seed: int = 0) -> dict:
    """Mean of a − b over paired cases, with a 95 % paired-bootstrap interval: whether two
    adapters' chat differs by more than which questions happened to be held out."""
    from endcloud.scoring.stats import paired_interval

    if len(a) != len(b) or not a:
        raise ValueError("paired_difference needs two equally long, non-empty lists")
    d = [x - y for x, y in zip(a, b)]
    lo, hi = paired_interval(d, seed=seed)
    return {"n": len(d), "mean": round(sum(d) / len(d), 4), "lo": lo, "hi": hi,
            "a_better": sum(x > 0 for x in d), "b_better": sum(x < 0 for x in d)}


def classifier_figures(ts, logs_held, logs_train) -> dict:
    from endcloud.tasks.classify import NgramClassifier, load_classifier

    def text(it):
        return re.search(r"(?:顾客|Customer|评价|Review)[：:] ?(.*)", it.input_field).group(1)

    held = {t: [it for it in ts.heldout() if it.task_name == t] for t in ("intent", "sentiment")}
    train = {t: [it for it in ts.train() if it.task_name == t] for t in ("intent", "sentiment")}
    nb = NgramClassifier.fit([text(i) for i in train["intent"]] + [t for t, _ in logs_train],
                             [i.meta["intent"] for i in train["intent"]] + [i for _, i in logs_train],
                             [text(i) for i in train["sentiment"]], [i.meta["sentiment"] for i in train["sentiment"]])
    out = {}
    for name, clf in (("lexicon", load_classifier("lexicon")), ("ngram", nb)):
        t0 = time.perf_counter()
        r = {
            "intent_heldout_items": _acc([clf.analyse(text(i)).intent == i.meta["intent"] for i in held["intent"]]),
            "sentiment_heldout_items": _acc([clf.analyse(text(i)).sentiment == i.meta["sentiment"] for i in held["sentiment"]]),
            "intent_chat_logs": _acc([clf.analyse(t).intent == i for t, i in logs_held]),
        }
        n = len(held["intent"]) + len(held["sentiment"]) + len(logs_held)
        r["us_per_message"] = round((time.perf_counter() - t0) / max(1, n) * 1e6, 1)
        out[name] = r
    out["n"] = {"intent_items": len(held["intent"]), "sentiment_items": len(held["sentiment"]), "chat_log_turns": len(logs_held)}
    return out


def _acc(xs) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lang", default="zh", choices=("zh", "en"))
    ap.add_argument("--seed", type=int, default=11, help="the generated shop's seed (held out: no other bench uses it)")
    ap.add_argument("--products", type=int, default=30)
    ap.add_argument("--sessions", type=int, default=400, help="chat sessions of the shop (its logs: intents for the tasks)")
    ap.add_argument("--per-task", type=int, default=64, help="items per task (a quarter held out)")
    ap.add_argument("--chat-questions", type=int, default=320, help="dialogue questions of the pack (a fifth held out)")
    ap.add_argument("--chat-eval", type=int, default=400,
                    help="more held-out dialogue questions, beyond --chat-questions (as many as the pack has, up to this), "
                         "judged but never trained on: a fifth of --chat-questions is ~60 turns, one question 1.7 points")
    ap.add_argument("--chat-steps", type=int, default=200, help="stage 1 budget (optimizer steps)")
    ap.add_argument("--task-steps", type=int, default=600, help="stage 2 budget of each adapter (optimizer steps)")
    ap.add_argument("--replay", type=float, default=0.5, help="dialogue share of the multi-task mix")
    ap.add_argument("--multi-steps", type=int, default=None,
                    help="stage 2b budget of the multi-task adapter (default: --task-steps / --replay, so it sees as "
                         "much dialogue as the chat-only adapter, and the tasks besides)")
    ap.add_argument("--polish-steps", type=int, default=300,
                    help="stage 3: both adapters continued on dialogue alone for this many steps (0: none)")
    ap.add_argument("--polish-lr", type=float, default=1e-3, help="stage 3's learning rate")
    ap.add_argument("--lora-r", type=int, default=8, help="LoRA rank of every adapter (Table IV: 8)")
    ap.add_argument("--targets", default="all-linear", choices=("all-linear", "attention"),
                    help="layers every adapter's LoRA adapts: all-linear (the MLP too; default) or the attention projections")
    ap.add_argument("--all-linear", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old commands
    ap.add_argument("--choice-weight", type=float, default=1.0,
                    help="weight of the choice loss on candidate questions (0: the language-model loss alone)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-3,
                    help="learning rate of every stage (at 1e-3 the shipped reader's LoRA barely learns the tasks)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher", default="reference", help="reference (offline) | openai")
    ap.add_argument("--mc", default="loglik", choices=("auto", "generate", "loglik", "pmi"),
                    help="how the tables answer multiple choice (the report has the other way beside it: generate, or loglik)")
    ap.add_argument("--rank", default="loglik", choices=("auto", "generate", "loglik", "pmi"),
                    help="how the tables answer ranking and retrieval (the report has the other way beside it)")
    ap.add_argument("--ner", default="loglik", choices=("auto", "generate", "loglik", "pmi"),
                    help="how the tables answer named-entity questions: loglik, the likeliest span of the title")
    ap.add_argument("--work", default=None, help="keep the shop, tasks and adapters here (default: a temp folder)")
    ap.add_argument("--out", default="bench-tasks.json")
    ap.add_argument("--quick", action="store_true", help="tiny budgets: checks the bench runs, figures meaningless")
    args = ap.parse_args(argv)
    if args.quick:
        args.products, args.sessions, args.per_task, args.chat_questions, args.chat_eval = 12, 60, 12, 40, 10
        args.chat_steps, args.task_steps, args.polish_steps = 4, 4, 2

    import torch

    from endcloud.cloud import default_teacher
    from endcloud.corpus.shopworld import generate_shop
    from endcloud.end.base import load_tokenizer, renders_late_system
    from endcloud.end.reader import reader_base
    from endcloud.end.train import train
    from endcloud.fileio import read_jsonl
    from endcloud.kb import KnowledgeBase, ShopPack
    from endcloud.scoring.evaluator import Evaluator
    from endcloud.tasks.generate import generate_tasks, log_intents
    from endcloud.tasks.items import write_items
    from endcloud.tasks.metrics import Similarities
    from endcloud.tasks.mix import chat_set, mix_with_replay
    from endcloud.tasks.shopbench import BY_CANDIDATES, HFTaskModel, run_shopbench

    torch.set_num_threads(args.threads)
    base = reader_base()
    if base is None:
        print("no shipped shop reader in this install (endcloud/assets/reader)", file=sys.stderr)
        return 2
    tmp = tempfile.TemporaryDirectory(prefix="bench-tasks-")
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    cpu_start = time.process_time()

    # -- data ----------------------------------------------------------------------------
    shop_dir = work / "shop"
    if not (shop_dir / "catalog.csv").exists():
        generate_shop(shop_dir, lang=args.lang, sessions=args.sessions, products=args.products, seed=args.seed)
    pack = ShopPack.load(shop_dir)
    kb = KnowledgeBase(pack)
    teacher = default_teacher(shop=shop_dir, name=args.teacher)
    chats = list(read_jsonl(shop_dir / "chats" / "chats.jsonl"))
    half = len(chats) // 2  # the first half of the logs feeds the tasks and the n-gram classifier; the rest judges
    ts = generate_tasks(pack, per_task=args.per_task, seed=args.seed, teacher=teacher, logs=chats[:half], kb=kb)
    write_items(work / "tasks.jsonl", ts.items)
    late = renders_late_system(load_tokenizer(base))
    cs = chat_set(pack, teacher, n=args.chat_questions, seed=args.seed, late=late, kb=kb, extra_heldout=args.chat_eval)
    _log(f"shop {pack.name} ({args.lang}, {len(pack.products)} products); tasks: {len(ts.train())} train, "
         f"{len(ts.heldout())} held out; dialogue: {len(cs.train)} train, {len(cs.heldout)} held out")

    # -- training --------------------------------------------------------------------------
    common = dict(method="lora", lr=args.lr, batch_size=args.batch_size, max_input_len=384, max_output_len=96,
                  seed=args.seed, progress=False, save_every=max(25, args.task_steps), r=args.lora_r,
                  choice_weight=args.choice_weight)
    if args.targets == "all-linear" or args.all_linear:
        common["target_modules"] = "all-linear"  # peft's shorthand: every linear layer but the output head
    runs = {}
    t0 = time.perf_counter()
    s1 = train(base, cs.train, work / "stage1-chat", steps=args.chat_steps, **common)
    runs["stage1_chat"] = {"steps": s1.steps, "seconds": round(time.perf_counter() - t0, 1), "loss_last": round(s1.losses[-1], 4)}
    _log(f"stage 1 (chat): {runs['stage1_chat']}")
    t0 = time.perf_counter()
    chat_only = train(base, cs.train, work / "chat-only", steps=args.task_steps, init_adapter=s1.adapter_dir, **common)
    runs["chat_only"] = {"steps": chat_only.steps, "seconds": round(time.perf_counter() - t0, 1),
                         "loss_last": round(chat_only.losses[-1], 4)}
    _log(f"stage 2a (chat-only): {runs['chat_only']}")
    mixed = mix_with_replay([it.to_example() for it in ts.train()], cs.train, replay=args.replay, seed=args.seed)
    t0 = time.perf_counter()
    multi_steps = args.multi_steps or (round(args.task_steps / args.replay) if args.replay > 0 else args.task_steps)
    multi = train(base, mixed, work / "multi-task", steps=multi_steps,
                  init_adapter=s1.adapter_dir, **common)
    runs["multi_task"] = {"steps": multi.steps, "seconds": round(time.perf_counter() - t0, 1),
                          "loss_last": round(multi.losses[-1], 4), "examples": len(mixed)}
    _log(f"stage 2b (multi-task): {runs['multi_task']}")
    if args.polish_steps:  # stage 3: the same short dialogue stage ends both adapters
        polished = {}
        for name, res in (("chat_only", chat_only), ("multi_task", multi)):
            t0 = time.perf_counter()
            polished[name] = train(base, cs.train, work / f"{name}-polished", steps=args.polish_steps,
                                   init_adapter=res.adapter_dir, **{**common, "lr": args.polish_lr})
            runs[f"{name}_polish"] = {"steps": polished[name].steps, "seconds": round(time.perf_counter() - t0, 1),
                                      "loss_last": round(polished[name].losses[-1], 4)}
            _log(f"stage 3 ({name} polish): {runs[f'{name}_polish']}")
        chat_only, multi = polished["chat_only"], polished["multi_task"]

    # -- evaluation --------------------------------------------------------------------------
    held = ts.heldout()
    corpus = [e.messages[-1]["content"] if e.messages[-1]["role"] == "user" else e.messages[-2]["content"] for e in cs.train]
    corpus += [e.response for e in cs.train]
    evaluator = Evaluator(similarity="auto", matching="tfidf", corpus=corpus)
    sims = Similarities()
    results = {}
    for name, adapter in (("base", None), ("chat-only", chat_only.adapter_dir), ("multi-task", multi.adapter_dir)):
        t0 = time.perf_counter()
        model = HFTaskModel.load(base, adapter, name=name, max_input_len=384)
        rep = run_shopbench(held, model, mc=args.mc, rank=args.rank, ner=args.ner, sims=sims, seed=args.seed)
        # the other way of answering multiple choice, ranking and retrieval, and named entities, beside it
        other_mc = "loglik" if args.mc != "loglik" else "generate"
        other_rank = "loglik" if args.rank != "loglik" else "generate"
        other_ner = "loglik" if args.ner != "loglik" else "generate"
        listed = [it for it in held if it.task_type in BY_CANDIDATES]
        alt = run_shopbench(listed, model, mc=other_mc, rank=other_rank, ner=other_ner, sims=sims,
                            seed=args.seed).tasks if listed else {}
        chat = chat_quality(model, cs.heldout, evaluator)
        results[name] = {"tasks": rep.tasks, "types": rep.types, "overall": rep.overall, "overall_chance": rep.overall_chance,
                         "chat": chat, "samples": rep.samples, "seconds": round(time.perf_counter() - t0, 1),
                         f"multiple_choice_by_{other_mc}": {t: r for t, r in alt.items() if r["task_type"] == "multiple-choice"},
                         f"ranking_by_{other_rank}": {t: r for t, r in alt.items() if r["task_type"] in ("ranking", "retrieval")},
                         f"entities_by_{other_ner}": {t: r for t, r in alt.items()
                                                      if r["task_type"] == "named_entity_recognition"}}
        _log(f"{name}: overall {rep.overall:.3f} (chance {rep.overall_chance:.3f}); chat facts {chat['facts']:.3f}, "
             f"Final {chat['final']:.3f}; answered by log-likelihood: "
             f"{sum(t.get('by_loglik', 0) for t in rep.tasks.values())} of {len(held)} held-out items")
        del model
    mt, co = results["multi-task"]["chat"], results["chat-only"]["chat"]
    chat_vs = {"facts": paired_difference(mt["fact_each"], co["fact_each"], seed=args.seed),
               "final": paired_difference(mt["final_each"], co["final_each"], seed=args.seed)}
    logs_held = log_intents(chats[half:])
    clf = classifier_figures(ts, logs_held, log_intents(chats[:half]))

    report = {"args": vars(args), "shop": {"name": pack.name, "lang": args.lang, "products": len(pack.products)},
              "tasks_report": ts.report, "runs": runs, "results": results, "chat_multi_minus_chat_only": chat_vs,
              "classifiers": clf,
              "similarity_models": sorted(sims.used), "wall_s": round(time.perf_counter() - t_start, 1),
              "cpu_s": round(time.process_time() - cpu_start, 1), "torch_threads": args.threads,
              "load_avg": os.getloadavg()}
    Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    print_tables(report)
    _log(f"wrote {args.out}")
    return 0


def print_tables(report: dict) -> None:
    res = report["results"]
    names = list(res)
    tasks = sorted(res[names[0]]["tasks"], key=lambda t: (res[names[0]]["tasks"][t]["task_type"], t))
    args = report["args"]
    print(f"\nanswered: multiple choice by {args['mc']} (--mc), ranking and retrieval by {args.get('rank', 'generate')} "
          f"(--rank), named entities by {args.get('ner', 'generate')} (--ner)")
    print("\n| task | type | metric | n | chance | " + " | ".join(names) + " |")
    print("| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " |")
    for t in tasks:
        row = res[names[0]]["tasks"][t]
        print(f"| {t} | {row['task_type']} | {row['metric']} | {row['n']} | {row['chance']:.3f} | "
              + " | ".join(f"{res[n]['tasks'][t]['score']:.3f}" for n in names) + " |")
    for ty in sorted(res[names[0]]["types"]):
        row = res[names[0]]["types"][ty]
        print(f"| **{ty}** | | | {row['n']} | {row['chance']:.3f} | "
              + " | ".join(f"**{res[n]['types'][ty]['score']:.3f}**" for n in names) + " |")
    print(f"| **overall** | | | | {res[names[0]]['overall_chance']:.3f} | "
          + " | ".join(f"**{res[n]['overall']:.3f}**" for n in names) + " |")
    for prefix, what in (("multiple_choice_by_", "multiple choice"), ("ranking_by_", "ranking and retrieval"),
                         ("entities_by_", "named entities")):
        alt = next((k for k in res[names[0]] if k.startswith(prefix)), None)
        if alt and res[names[0]][alt]:
            print(f"\n| {what}, {alt.replace(prefix, 'answered by ')} | chance | " + " | ".join(names) + " |")
            print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
            for t in sorted(res[names[0]][alt]):
                print(f"| {t} | {res[names[0]][alt][t]['chance']:.3f} | "
                      + " | ".join(f"{res[n][alt][t]['score']:.3f}" for n in names) + " |")
    print("\n| chat quality (held-out dialogue) | " + " | ".join(names) + " |")
    print("| --- | " + " | ".join("---" for _ in names) + " |")
    for k in ("facts", "final"):
        print(f"| {k} | " + " | ".join(f"{res[n]['chat'][k]:.3f}" for n in names) + " |")
    for k in sorted(res[names[0]]["chat"].get("facts_by_kind", {})):
        print(f"| facts: {k} | " + " | ".join(f"{res[n]['chat']['facts_by_kind'][k]:.3f}" for n in names) + " |")
    vs = report.get("chat_multi_minus_chat_only")
    if vs:
        print("\nchat, multi-task minus chat-only over the same held-out turns (95 % paired bootstrap):")
        for k, d in vs.items():
            print(f"  {k} (n={d['n']}): {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]; "
                  f"multi-task better on {d['a_better']}, chat-only on {d['b_better']}")
    c = report["classifiers"]
    print("\n| classifier | intent (held-out items) | sentiment (held-out items) | intent (chat logs) | µs/message |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("lexicon", "ngram"):
        r = c[name]
        print(f"| {name} | {r['intent_heldout_items']} | {r['sentiment_heldout_items']} | {r['intent_chat_logs']} | {r['us_per_message']} |")
    print(f"\nruns: {json.dumps(report['runs'])}\nwall {report['wall_s']} s, cpu {report['cpu_s']} s, load {report['load_avg']}")


if __name__ == "__main__":
    raise SystemExit(main())
