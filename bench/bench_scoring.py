"""Scoring benchmarks: scorer throughput (pairs/s) on 2 cores, the matcher's R10@1 vs TF-IDF
on the synthetic shop, and how well each similarity scorer tells a paraphrase from an
unrelated reply per language.

    .venv/bin/python bench/bench_scoring.py [--sessions 1500] [--pairs 2000] [--out /tmp/bench-scoring]

Prints a markdown report (the figures of docs/bench/scoring.md) and writes results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _shop_pairs(root: Path, lang: str, sessions: int) -> Path:
    from endcloud.corpus import prepare
    from endcloud.corpus.shopworld import generate_shop

    shop = root / f"shop-{lang}"
    if not (shop / "shop.yaml").exists():
        generate_shop(shop, lang=lang, sessions=sessions, seed=0, force=True)
    corpus = root / f"corpus-{lang}"
    if not (corpus / "pairs.jsonl").exists():
        prepare([shop / "chats" / "chats.jsonl"], corpus, workers=1)
    return corpus / "pairs.jsonl"


def _throughput(scorer, a, b, repeats: int = 1) -> float:
    scorer.score(a[:8], b[:8])  # load / warm up
    t = time.perf_counter()
    for _ in range(repeats):
        scorer.score(a, b)
    return repeats * len(a) / (time.perf_counter() - t)


def _latency_ms(fn, n: int = 30) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1000


def _paraphrase_accuracy(scorer, rows, rng, n: int = 600) -> float:
    """P(sim(r, paraphrase of r) > sim(r, reply to another intent)); paraphrase = another
    reply with the same intent and the same facts but different words."""
    from endcloud.text import normalise

    by_key: dict = {}
    for r in rows:
        if r.get("intent") and r.get("facts"):
            by_key.setdefault((r["intent"], tuple(r["facts"])), []).append(r["response"])
    groups = [(key[0], list(dict.fromkeys(v))) for key, v in by_key.items()]
    groups = [(intent, g) for intent, g in groups if len(g) > 1]
    a, p, u = [], [], []
    for _ in range(n):
        intent, g = rng.choice(groups)
        x, y = rng.sample(g, 2)
        other = rng.choice(rows)
        while other.get("intent") == intent or normalise(other["response"]) == normalise(x):
            other = rng.choice(rows)
        a.append(x), p.append(y), u.append(other["response"])
    sp, su = scorer.score(a, p), scorer.score(a, u)
    return float(((sp > su) + 0.5 * (sp == su)).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1500)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-scoring"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    from endcloud.fileio import read_jsonl
    from endcloud.scoring import CharNgramSimilarity, Evaluator, TfidfMatcher, TrainedMatcher, load_similarity, train_matcher

    rng = random.Random(0)
    load_before = os.getloadavg()
    res: dict = {"cpus": os.cpu_count(), "torch_threads": 2, "load_avg_before": load_before}
    rows_by_lang = {}
    for lang in ("en", "zh"):
        pairs = _shop_pairs(args.out, lang, args.sessions)
        rows_by_lang[lang] = list(read_jsonl(pairs))
        rep = train_matcher(pairs, args.out / f"matcher-{lang}", threads=2, time_budget_s=120)
        res[f"matcher_{lang}"] = rep.to_json()

    table = []
    for lang in ("en", "zh"):
        rows = rows_by_lang[lang]
        sample = [rng.choice(rows) for _ in range(args.pairs)]
        q = [r["query"] for r in sample]
        r1 = [r["response"] for r in sample]
        r2 = [rng.choice(rows)["response"] for _ in sample]
        matcher = TrainedMatcher.load(args.out / f"matcher-{lang}")
        sims = {"minilm": load_similarity("minilm"), "char-ngram": CharNgramSimilarity(lang="zh"),
                "char-ngram-en": CharNgramSimilarity(lang="en")}
        for name, sc in sims.items():
            table.append({"lang": lang, "role": "similarity", "scorer": name, "pairs_per_s": _throughput(sc, r1, r2),
                          "paraphrase_vs_unrelated": _paraphrase_accuracy(sc, rows, rng)})
        for name, sc in {"trained": matcher, "tfidf": TfidfMatcher()}.items():
            table.append({"lang": lang, "role": "matching", "scorer": name, "pairs_per_s": _throughput(sc, q, r1),
                          "r10_at_1": res[f"matcher_{lang}"]["r10_at_1" if name == "trained" else "baseline_tfidf_r10_at_1"]})
        ev = Evaluator(similarity="auto", matching=matcher)
        res[f"score_turn_ms_{lang}"] = _latency_ms(lambda: ev.score_turns([q[0]], [r1[0]], [r2[0]]))
    res["scorers"] = table
    res["load_avg_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(res, indent=2, ensure_ascii=False))

    print(f"# scoring bench ({res['cpus']} CPUs, torch threads 2, load avg before {load_before[0]:.1f}, after {res['load_avg_after'][0]:.1f})\n")
    print("| lang | role | scorer | pairs/s | paraphrase > unrelated | R10@1 |")
    print("|---|---|---|---:|---:|---:|")
    for t in table:
        para = f"{t['paraphrase_vs_unrelated']:.3f}" if "paraphrase_vs_unrelated" in t else ""
        r10 = f"{t['r10_at_1']:.3f}" if "r10_at_1" in t else ""
        print(f"| {t['lang']} | {t['role']} | {t['scorer']} | {t['pairs_per_s']:,.0f} | {para} | {r10} |")
    for lang in ("en", "zh"):
        m = res[f"matcher_{lang}"]
        print(f"\nmatcher {lang}: R10@1 {m['r10_at_1']:.3f} vs TF-IDF {m['baseline_tfidf_r10_at_1']:.3f} "
              f"(ratio {m['r10_at_1'] / max(m['baseline_tfidf_r10_at_1'], 1e-9):.2f}x) on {m['n_test_groups']} held-out groups; "
              f"{m['n_train']} train pairs, {m['epochs']} epochs, {m['train_seconds']} s; P(match) true {m['mean_prob_true']:.2f}, "
              f"sampled {m['mean_prob_false']:.2f}")
        print(f"score_turns (1 turn, auto similarity + trained matcher), {lang}: {res[f'score_turn_ms_{lang}']:.1f} ms")


if __name__ == "__main__":
    main()
