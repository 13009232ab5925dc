"""A shop's real chat logs, end to end: pretrain + LoRA the end model on the training side,
then score it, TF-IDF retrieval and the most common reply against the agents' own replies
on held-out sessions; and the matcher's R10@1 against TF-IDF and chance.

    .venv/bin/python bench/bench_realdata.py [--logs ../shared/data/jddc/jddc_chat_sample.txt]
        [--pretrain-steps 1000] [--train-steps 800] [--pretrain-minutes M] [--train-minutes M]
        [--eval-limit 200] [--threads 1] [--work /tmp/bench-realdata]
        [--matcher-lm-steps 1000] [--matcher-only]

The defaults are the last run in docs/benchmarks.md (~14 min on this 2-core machine, 1 thread; the matcher's
language model is 5 of them).

Any chat log `endcloud corpus prepare` reads may be given (ECD, JDDC, CSV, messages JSONL).
Every stage is the project's own code path (`prepare`, `pretrain`, `train`, `run_eval`,
`train_matcher`), so the figures are what the commands give. Sizes are set by steps; the
optional minute limits are the commands' own `--max-minutes` (none by default; they say when
they cut a stage short).
Prints the markdown section of docs/benchmarks.md ("Real chat logs") and writes results.json.

Baselines: TF-IDF retrieval answers with the training reply whose query is most like the
question (character n-gram TF-IDF, the `tfidf` matcher's features); the most common reply
answers every question with the training side's most frequent agent reply.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


class Retrieval:
    """TF-IDF retrieval: the reply to the most similar training query."""

    name = "tfidf-retrieval"

    def __init__(self, pairs: list[dict]):
        from endcloud.scoring.similarity import CharNgramSimilarity
        from endcloud.text import detect_lang
        from sklearn.preprocessing import normalize

        self.replies = [p["response"] for p in pairs]
        langs = [detect_lang(p["query"], p["response"]) for p in pairs[:500]]
        self.vec = CharNgramSimilarity(lang=max(("zh", "en"), key=langs.count), corpus=[p["query"] for p in pairs] + self.replies)
        self._normalize = normalize
        self.index = normalize(self.vec.vectors([p["query"] for p in pairs]))

    def generate(self, conversations, **_):
        queries = [c[-1]["content"] for c in conversations]
        sims = (self._normalize(self.vec.vectors(queries)) @ self.index.T).toarray()
        return [SimpleNamespace(text=self.replies[int(i)]) for i in sims.argmax(axis=1)]


class Constant:
    """The most common training reply, whatever the question."""

    name = "most-common-reply"

    def __init__(self, pairs: list[dict]):
        self.reply = Counter(p["response"] for p in pairs).most_common(1)[0][0]

    def generate(self, conversations, **_):
        return [SimpleNamespace(text=self.reply) for _ in conversations]


def _reused_pretrain(base: Path) -> SimpleNamespace:
    """What the report needs of a pretrain run, from the base's own record (`pretrain.json`)."""
    rec = json.loads((base / "pretrain.json").read_text(encoding="utf-8"))
    print(f"[pretrain] reused {base} ({rec['steps']} steps)", flush=True)
    return SimpleNamespace(steps=rec["steps"], steps_planned=rec.get("steps_planned", rec["steps"]),
                           stopped_early=rec.get("stopped_early", False), eval_loss=rec["metrics"]["eval_loss"],
                           params=rec["model"]["params"], sources=rec.get("sources", []))


def _stage(name: str, fn):
    t = time.perf_counter()
    print(f"[{name}] ...", flush=True)
    out = fn()
    dt = time.perf_counter() - t
    print(f"[{name}] {dt:.0f} s", flush=True)
    return out, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", type=Path, default=SHARED / "jddc" / "jddc_chat_sample.txt")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-realdata"))
    ap.add_argument("--eval-fraction", type=float, default=0.1)
    # 1000 + 800: the one of the three budgets in docs/benchmarks.md whose replies are not generic
    # (top reply 3.5 %); 500 + 400 has the best Sim (0.133) with a 6 % top reply
    ap.add_argument("--pretrain-steps", type=int, default=1000)
    ap.add_argument("--pretrain-minutes", type=float, default=None,
                    help="optional time limit (default none: the steps decide, so a busy machine gives the same model)")
    ap.add_argument("--train-steps", type=int, default=800)
    ap.add_argument("--train-minutes", type=float, default=None, help="optional time limit (default none)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--max-reply-repeats", type=int, default=1,
                    help="LoRA examples per identical agent reply (`endcloud train --max-reply-repeats`; 0: all)")
    ap.add_argument("--reuse-base", action="store_true",
                    help="keep a base already pretrained in --work (the LoRA, eval and matcher stages run again)")
    ap.add_argument("--lora-r", type=int, default=64)
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--matcher-epochs", type=int, default=8)
    ap.add_argument("--matcher-lm-steps", type=int, default=1000,
                    help="steps of the matcher's language model (`matcher train --lm-steps`; 0: none)")
    ap.add_argument("--matcher-only", action="store_true", help="only the matcher stage (about 6 min instead of 20)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared machine two threads "
                    "wait on each other more than they compute)")
    args = ap.parse_args()
    if not args.logs.exists():
        raise SystemExit(f"{args.logs} is absent (../shared/data is not here?): pass --logs")

    import torch

    torch.set_num_threads(args.threads)
    from endcloud.corpus import prepare
    from endcloud.end.data import Example, cap_repeated_replies, load_pairs
    from endcloud.end.pretrain import pretrain
    from endcloud.end.train import train
    from endcloud.fileio import read_jsonl
    from endcloud.runtime.model import EndModel
    from endcloud.scoring import load_inputs, run_eval

    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    if args.matcher_only:
        m, t_match = _matcher_stage(args, w)
        _print_matcher(m, t_match)
        return
    corpus = w / "corpus"
    rep, t_prep = _stage("prepare", lambda: prepare([args.logs], corpus, workers=2, eval_fraction=args.eval_fraction))
    train_pairs = list(read_jsonl(corpus / "pairs.jsonl"))

    import transformers.models.qwen2.modeling_qwen2  # noqa: F401  (imported before the clocks start)

    started = time.monotonic()
    if args.reuse_base and (w / "base" / "pretrain.json").exists():
        pre = _reused_pretrain(w / "base")
        t_pre = 0.0
    else:
        pre, t_pre = _stage("pretrain", lambda: pretrain([corpus / "pairs.jsonl"], w / "base", progress=False,
                                                         steps=args.pretrain_steps,
                                                         max_seconds=None if args.pretrain_minutes is None else args.pretrain_minutes * 60,
                                                         started_at=time.monotonic()))
    all_examples = [Example.from_pair(p) for p in load_pairs(corpus / "pairs.jsonl")]
    examples = cap_repeated_replies(all_examples, args.max_reply_repeats, seed=0)
    print(f"LoRA examples: {len(examples)} of {len(all_examples)} pairs (at most {args.max_reply_repeats or 'any'} "
          "per identical reply)", flush=True)
    held = [Example.from_pair(p) for p in load_pairs(corpus / "eval.jsonl")][:100]
    res, t_train = _stage("lora", lambda: train(
        w / "base", examples, w / "lora", method="lora", steps=args.train_steps, lr=args.lr, batch_size=8,
        max_input_len=192, max_output_len=96, eval_examples=held, resume=False, progress=False, r=args.lora_r, alpha=2 * args.lora_r,
        target_modules="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        deadline=None if args.train_minutes is None else time.monotonic() + args.train_minutes * 60))

    items = load_inputs(corpus / "eval.jsonl", limit=args.eval_limit)
    models = {"end (pretrain + LoRA)": EndModel.load(w / "base", w / "lora"), "tfidf-retrieval": Retrieval(train_pairs),
              "most-common-reply": Constant(train_pairs)}
    corpus_texts = [t for p in train_pairs for t in (p["query"], p["response"])]
    report, t_eval = _stage("eval", lambda: run_eval(items, models, None, out_dir=w / "eval", similarity="auto", matching="tfidf",
                                                      corpus=corpus_texts, max_new_tokens=args.max_new_tokens, seed=0))

    # The matcher on every pair of the logs (its own split by session: train | calib | test).
    m, t_match = _matcher_stage(args, w)
    total = time.monotonic() - started + t_prep

    s = report.summary
    rows = []
    for name in [*models, "agent"]:
        tm, av = s["text_metrics"][name], s["averages"][name]
        rows.append({"model": name, "sim": av["sim"], "final": av["final"], **{k: tm[k] for k in
                     ("bleu4", "rouge_l", "distinct_1", "distinct_2", "top_share", "distinct_replies", "degenerate", "top_reply")}})
    results = {
        "logs": str(args.logs), "pairs_train": len(train_pairs), "eval_inputs": len(items),
        "prepare": {"sessions": rep.counts.get("sessions"), "sessions_written": rep.counts.get("sessions_written"),
                    "pairs": rep.pairs, "eval_pairs": rep.eval_pairs, "seconds": round(t_prep, 1)},
        "pretrain": {"steps": pre.steps, "steps_planned": pre.steps_planned, "stopped_early": pre.stopped_early,
                     "eval_loss": round(pre.eval_loss, 3), "params_M": round(pre.params / 1e6, 2), "sources": pre.sources,
                     "seconds": round(t_pre, 1)},
        "lora": {"steps": res.steps, "stopped_early": res.stopped_early, "eval_loss_before": res.eval_loss_before,
                 "eval_loss": res.eval_loss, "seconds": round(t_train, 1)},
        "eval": {"rows": rows, "seconds": round(t_eval, 1), "similarity": s["similarity_used"]},
        "matcher": {"recall": m.recall, "n_train": m.n_train, "test_groups": m.n_test_groups, "epochs": m.epochs,
                    "combine": m.extra.get("combine"), "lm": m.extra.get("lm"),
                    "r10_at_1_gain_ci95": m.extra.get("r10_at_1_gain_over_tfidf_ci95"), "seconds": round(t_match, 1)},
        "minutes_total": round(total / 60, 1), "threads": args.threads,
    }
    (w / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")

    def f(x, d=3):
        return "—" if x is None else f"{x:.{d}f}"

    print()
    print(f"Logs: `{args.logs.name}`: {rep.counts.get('sessions')} sessions -> {rep.pairs} training pairs, "
          f"{rep.eval_pairs} held-out pairs ({len(items)} scored); pretrain read {pre.sources[0]['utterances'] if pre.sources else '?'} "
          f"utterances ({pre.sources[0]['read_as'] if pre.sources else ''}).")
    print(f"End model: {pre.params / 1e6:.2f}M-parameter Qwen2 pretrained {pre.steps}/{pre.steps_planned} steps "
          f"(held-out loss {pre.eval_loss:.2f}{', stopped early' if pre.stopped_early else ''}), then LoRA r={args.lora_r} {res.steps} steps "
          f"(held-out loss {f(res.eval_loss_before, 2)} -> {f(res.eval_loss, 2)}{', stopped early' if res.stopped_early else ''}); "
          f"sampling T=0.6, top-p 0.8, {args.max_new_tokens} new tokens.")
    print()
    print("| replies to held-out questions | Sim to agent | BLEU-4 | ROUGE-L | distinct-1 | distinct-2 | distinct replies | top-reply share | degenerate |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']}{' (the reference itself)' if r['model'] == 'agent' else ''} | {f(r['sim'])} | {f(r['bleu4'], 2)} | "
              f"{f(r['rouge_l'])} | {f(r['distinct_1'])} | {f(r['distinct_2'])} | {r['distinct_replies']} | {f(r['top_share'])} | "
              f"{f(r['degenerate'])} |")
    print()
    _print_matcher(m, t_match)
    print(f"Stage times (s): prepare {t_prep:.0f}, pretrain {t_pre:.0f}, LoRA {t_train:.0f}, eval {t_eval:.0f}, matcher {t_match:.0f}; "
          f"total {total / 60:.1f} min on {args.threads} threads. results: {w / 'results.json'}")


def _matcher_stage(args, w: Path):
    """The matcher on every pair of the logs (its own split by session: train | calib | test)."""
    from endcloud.corpus import log_pairs
    from endcloud.scoring import train_matcher

    return _stage("matcher", lambda: train_matcher(log_pairs([args.logs]), w / "matcher", epochs=args.matcher_epochs,
                                                   test_frac=0.2, threads=args.threads, lm_steps=args.matcher_lm_steps))


def _print_matcher(m, t_match: float) -> None:
    rc = m.recall
    lm = m.extra.get("lm")
    print(f"Matcher (R10@k on {m.n_test_groups} held-out groups of 1 true + 9 sampled replies, {m.n_train} training pairs, "
          f"{m.epochs} epochs" + (f", language model {lm['steps']} steps ({lm['params'] / 1e6:.1f}M parameters, "
                                   f"{lm['seconds']:.0f} s)" if lm else ", no language model") + f", {t_match:.0f} s):")
    print()
    print("| scorer | R10@1 | R10@2 | R10@5 |")
    print("|---|---:|---:|---:|")
    for name in ("trained", "tfidf", "chance"):
        print(f"| {name} | {rc[name]['r_at_1']:.3f} | {rc[name]['r_at_2']:.3f} | {rc[name]['r_at_5']:.3f} |")
    lo, hi = m.extra["r10_at_1_gain_over_tfidf_ci95"]
    print(f"\nR10@1 trained / TF-IDF: {rc['trained']['r_at_1'] / max(1e-9, rc['tfidf']['r_at_1']):.2f}x; gain "
          f"{rc['trained']['r_at_1'] - rc['tfidf']['r_at_1']:+.3f}, 95 % paired bootstrap over the groups {lo:+.3f} to {hi:+.3f}")
    print()


if __name__ == "__main__":
    main()
