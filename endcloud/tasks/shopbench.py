"""The ShopBench harness: ask a model every question of a file, parse and score its answers.

    items = read_items("development.json")                  # ShopBench's format, or a generated task set
    model = HFTaskModel.load(base_dir, adapter_dir)         # any `TaskModel`: generate + loglik
    report = run_shopbench(items, model, mc="auto", rank="auto")
    report.tasks["task5"]["score"], report.types["multiple-choice"], report.overall
    endcloud eval shopbench development.json --base B [--adapter A] [--mc auto|generate|loglik|pmi] [--rank …]

Each question goes to the model as one user message (its `input_field`; a generated item that
carries shop knowledge goes as its `messages`), the reply is parsed and scored as the starter
kit does (`endcloud.tasks.metrics`), per task (`task_name`), then averaged per task type and
overall (the mean of the task scores, as the leaderboard's track score). Beside every score
stands its chance level (`metrics.chance_level`).

Multiple choice (`mc`), and ranking and retrieval (`rank`), four ways each (`MODES`):
    generate  the model's reply, parsed as the kit parses it
    loglik    each listed candidate "i. text" scored as the reply by its mean token log-probability
              (lm-evaluation-harness style) — for a model that cannot follow the answer format at
              all; the reply is then written as the kit's parser reads it: the likeliest option
              ("2. wool"), every candidate likeliest first ("4, 1, 3, 2"), or the likeliest 3
    pmi       loglik less each candidate's log-likelihood after an empty question: how much the
              question raises it (Holtzman et al. 2021, "Surface Form Competition"). A small model
              gives a short, common option a high likelihood whatever the question; this takes
              that prior out, as the matcher's language model does (`endcloud.scoring.replylm`)
    auto      generate, and loglik where the parsed reply is not valid (default): no listed option;
              a ranking that is not `RANKING_DEPTH` distinct listed items (all, when fewer are
              listed); a retrieval that is empty, repeats an item or names one not listed

Named-entity recognition (`ner`), the same four ways, over spans instead of listed options:
every run of up to `NER_SPAN_WORDS` words of the question's text (its last line before
"Output:", less a "Title:"-style label; `ner_spans`) is scored as the reply itself, and the
likeliest is the answer (one span: a question with two entities scores its share of F1). A
small model that cannot copy a span from its prompt still ranks them; with `choices_of`,
training teaches that ranking (`endcloud.end.train.choice_loss`). Text without spaces
(unsegmented Chinese) gives fewer than two spans and is answered by generation.

The candidates of one question share its prompt, which is run once (`HFTaskModel.loglik`,
`endcloud.end.data.candidate_logprob_sums`).

The report counts per task how many answers the log-likelihood chose (`by_loglik`). An item whose
question lists no numbered candidates (or spans) is always answered by generation.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from endcloud.errors import ConfigError
from endcloud.tasks.items import TaskItem
from endcloud.tasks.metrics import (PARSERS, RANKING_DEPTH, RETRIEVAL_DEPTH, Similarities, chance_level, options_of,
                                    score_answers)

MODES = ("auto", "generate", "loglik", "pmi")
BY_LIKELIHOOD = ("loglik", "pmi")  # the modes that score the candidates instead of asking for a reply
NEUTRAL_PROMPT = [{"role": "user", "content": ""}]  # pmi's "no question"
MC_MODES = MODES  # the name before ranking and retrieval had modes too
NER_SPAN_WORDS = 4  # the longest span, in words, a named-entity question is answered from by log-likelihood
# Reply budgets by type: an option number, a few numbers, a few entities, or a sentence.
MAX_NEW_TOKENS = {"multiple-choice": 6, "retrieval": 12, "ranking": 16, "named_entity_recognition": 24}


class TaskModel(Protocol):
    """What the harness needs of a model."""

    name: str

    def generate(self, prompts: Sequence[list[dict[str, str]]], *, max_new_tokens: int) -> list[str]:
        """Greedy replies, one per prompt (OpenAI messages)."""
        ...

    def loglik(self, prompt: list[dict[str, str]], candidates: Sequence[str]) -> list[float]:
        """Mean log-probability per token of each candidate as the reply to `prompt`."""
        ...


class HFTaskModel:
    """A local Hugging Face causal LM (+ optional peft adapter) as a TaskModel, on CPU."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "model", max_input_len: int = 384,
                 batch_size: int = 16):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_input_len, self.batch_size = max_input_len, batch_size

    @classmethod
    def load(cls, base_dir: str | os.PathLike[str], adapter_dir: str | os.PathLike[str] | None = None, *,
             name: str | None = None, **kw: Any) -> "HFTaskModel":
        from endcloud.end.base import load_base
        from endcloud.end.train import load_trained

        model, tok = load_trained(base_dir, adapter_dir) if adapter_dir else load_base(base_dir)
        tok.padding_side = "left"
        return cls(model, tok, name=name or ("adapter" if adapter_dir else "base"), **kw)

    def generate(self, prompts: Sequence[list[dict[str, str]]], *, max_new_tokens: int) -> list[str]:
        from endcloud.shopreader import generate_replies

        return generate_replies(self.model, self.tokenizer, list(prompts), max_new_tokens=max_new_tokens,
                                batch_size=self.batch_size, max_input_len=self.max_input_len)

    def loglik(self, prompt: list[dict[str, str]], candidates: Sequence[str]) -> list[float]:
        import torch

        from endcloud.end.data import Encoder, Example, candidate_logprob_sums

        enc = Encoder(self.tokenizer, max_input_len=self.max_input_len, max_output_len=128)
        with torch.no_grad():  # the prompt once, its key/values shared by the candidates
            sums, counts = candidate_logprob_sums(self.model, [enc.encode(Example(prompt, c)) for c in candidates],
                                                  self.tokenizer.pad_token_id)
        return [total / max(1, n) for total, n in zip(sums.tolist(), counts.tolist())]


@dataclass
class ShopBenchReport:
    """Scores per task, per task type and overall, each with its chance level."""

    model: str
    tasks: dict[str, dict[str, Any]]
    types: dict[str, dict[str, Any]]
    overall: float
    overall_chance: float
    similarity_models: list[str] = field(default_factory=list)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)  # {"mc": …, "rank": …} when run_shopbench made the replies

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "overall": self.overall, "overall_chance": self.overall_chance,
                "types": self.types, "tasks": self.tasks, "similarity_models": self.similarity_models,
                "modes": self.modes, "samples": self.samples}

    def lines(self) -> list[str]:
        out = [f"{'task':<22} {'type':<26} {'metric':<24} {'n':>4} {'score':>7} {'chance':>7}"]
        for name, t in sorted(self.tasks.items()):
            out.append(f"{name:<22} {t['task_type']:<26} {t['metric']:<24} {t['n']:>4} {t['score']:>7.3f} {t['chance']:>7.3f}")
        for ty, t in sorted(self.types.items()):
            out.append(f"{'[' + ty + ']':<22} {'':<26} {'':<24} {t['n']:>4} {t['score']:>7.3f} {t['chance']:>7.3f}")
        out.append(f"{'overall':<22} {'':<26} {'':<24} {sum(t['n'] for t in self.tasks.values()):>4} "
                   f"{self.overall:>7.3f} {self.overall_chance:>7.3f}")
        if self.modes:
            chosen = {n: t["by_loglik"] for n, t in sorted(self.tasks.items()) if t.get("by_loglik")}
            out.append(f"answered: multiple choice by {self.modes.get('mc')}, ranking/retrieval by "
                       f"{self.modes.get('rank')}, named entities by {self.modes.get('ner', 'generate')}; by log-likelihood: "
                       + (", ".join(f"{n} {k}/{self.tasks[n]['n']}" for n, k in chosen.items()) or "none"))
        if self.similarity_models:
            out.append("similarity: " + "; ".join(self.similarity_models))
        return out


def candidates_of(item: TaskItem) -> list[tuple[int, str]]:
    """The numbered candidates the question lists, each number once (its first listing)."""
    seen: set[int] = set()
    out = []
    for k, text in options_of(item.input_field):
        if k not in seen:
            seen.add(k)
            out.append((k, text))
    return out


def candidate_reply(k: int, text: str) -> str:
    """A listed candidate as the reply its log-likelihood is scored on ("2. wool")."""
    return f"{k}. {text}"


_ANSWER_CUE = re.compile(r"(?i)^(output|answer|entities|输出|答案)\s*[:：]?$")
_LABEL = re.compile(r"^[^\s:：]{1,24}\s*[:：]\s*")
_SPAN_SPLIT = re.compile(r"[,，、;；|]")


def ner_text(item: TaskItem) -> str:
    """The text a named-entity question asks spans of: its last line before the answer cue
    ("Output:"), less a leading label ("Title:", "Query:", "标题："). "" when the question has no
    line of its own for the text (an instruction alone)."""
    lines = [ln.strip() for ln in item.input_field.strip().splitlines() if ln.strip()]
    if lines and _ANSWER_CUE.match(lines[-1]):
        lines = lines[:-1]
    if len(lines) < 2:
        return ""
    return _LABEL.sub("", lines[-1], count=1).strip()


def ner_spans(item: TaskItem) -> list[tuple[int, str]]:
    """Every run of up to `NER_SPAN_WORDS` words of the question's text (`ner_text`), numbered in
    order of first appearance: the candidates a span is extracted from by log-likelihood. Words
    are whitespace-separated, and a span never crosses a comma or a semicolon (the answer's own
    separators). Fewer than two spans is no choice and gives [] (unsegmented Chinese, a question
    with no text line): such a question is left to generation."""
    seen: dict[str, None] = {}
    for chunk in _SPAN_SPLIT.split(ner_text(item)):
        words = [w.strip("()[]{}\"'“”‘’.。!！?？") for w in chunk.split()]
        words = [w for w in words if w]
        for i in range(len(words)):
            for n in range(1, min(NER_SPAN_WORDS, len(words) - i) + 1):
                seen.setdefault(" ".join(words[i:i + n]))
    return list(enumerate(seen, 1)) if len(seen) >= 2 else []


def span_reply(k: int, text: str) -> str:
    """A candidate span as the reply it is scored on: the span itself (what a NER reply is)."""
    return text


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def _valid_choice(parsed: int, listed: list[tuple[int, str]]) -> bool:
    return parsed in {k for k, _ in listed}


def _valid_ranking(parsed: list[int], listed: list[tuple[int, str]]) -> bool:
    # parse_ranking already empties a ranking with a repeat
    return set(parsed) <= {k for k, _ in listed} and len(parsed) == min(len(listed), RANKING_DEPTH)


def _valid_retrieval(parsed: list[int], listed: list[tuple[int, str]]) -> bool:
    return bool(parsed) and len(set(parsed)) == len(parsed) and set(parsed) <= {k for k, _ in listed}


def _valid_spans(parsed: list[str], listed: list[tuple[int, str]]) -> bool:
    spans = {t.casefold() for _, t in listed}
    return bool(parsed) and all(p.strip().casefold() in spans for p in parsed)


def _choice_reply(ranked: list[tuple[int, str]]) -> str:
    return candidate_reply(*ranked[0])


def _ranking_reply(ranked: list[tuple[int, str]]) -> str:
    return ", ".join(str(k) for k, _ in ranked)


def _retrieval_reply(ranked: list[tuple[int, str]]) -> str:
    return ", ".join(str(k) for k, _ in ranked[:RETRIEVAL_DEPTH])


def _span_answer(ranked: list[tuple[int, str]]) -> str:
    return ranked[0][1]  # the likeliest span alone: one right span of several still scores its share of F1


@dataclass(frozen=True)
class Candidates:
    """How a task type answered from candidates (the numbered ones its question lists, or the spans
    of its text) is answered by their log-likelihood: which mode option governs it, whether a parsed
    reply is a valid answer, how the candidates, likeliest first, are written as a reply its parser
    reads, where the candidates come from and how each is scored as a reply."""

    mode_option: str  # the argument (and CLI flag) that sets the mode: mc | rank | ner
    valid: Callable[[Any, list[tuple[int, str]]], bool]  # (the parser's output, the listed candidates)
    reply: Callable[[list[tuple[int, str]]], str]  # the listed (number, text) pairs, likeliest first
    listed: Callable[[TaskItem], list[tuple[int, str]]] = candidates_of  # the question's candidates
    as_reply: Callable[[int, str], str] = candidate_reply  # a candidate as the reply it is scored on


BY_CANDIDATES: dict[str, Candidates] = {
    "multiple-choice": Candidates("mc", _valid_choice, _choice_reply),
    "ranking": Candidates("rank", _valid_ranking, _ranking_reply),
    "retrieval": Candidates("rank", _valid_retrieval, _retrieval_reply),
    # spans of the question's text: extraction as choosing (a small model that cannot copy a span still ranks them)
    "named_entity_recognition": Candidates("ner", _valid_spans, _span_answer, ner_spans, span_reply),
}


def listed_candidates(item: TaskItem) -> list[tuple[int, str]]:
    """The candidates an item is answered from by log-likelihood ([] for a type that has none)."""
    how = BY_CANDIDATES.get(item.task_type)
    return how.listed(item) if how else []


def choices_of(item: TaskItem) -> tuple[list[str], list[int]]:
    """A candidate question's candidates as replies (`candidate_reply`; a span as itself) and the
    positions of the right ones: the chosen option, the retrieved items, the most relevant items
    of a ranking, or the spans that are entities.
    ([], []) for an item with no candidates or none right (a ranking of all-zero relevance)."""
    cands = listed_candidates(item)
    out = item.output_field
    if item.task_type == "multiple-choice":
        right = {out}
    elif item.task_type == "retrieval":
        right = set(out)
    elif item.task_type == "ranking" and out and max(out) > 0:
        right = {k + 1 for k, rel in enumerate(out) if rel == max(out)}  # relevance is listed item 1 first
    elif item.task_type == "named_entity_recognition":
        truth = {str(t).strip().casefold() for t in out}
        right = {k for k, text in cands if text.casefold() in truth}
    else:
        right = set()
    answers = [j for j, (k, _) in enumerate(cands) if k in right]
    if not answers:
        return [], []
    return [BY_CANDIDATES[item.task_type].as_reply(k, text) for k, text in cands], answers


def rank_by_loglik(model: TaskModel, item: TaskItem, cands: Sequence[tuple[int, str]], *,
                   calibrated: bool = False) -> list[tuple[int, str]]:
    """The candidates, likeliest first as the reply ("i. text"); ties and NaN scores by listed order.
    `calibrated` (the pmi mode): ranked by how much the question raises each one's log-likelihood."""
    as_reply = BY_CANDIDATES[item.task_type].as_reply if item.task_type in BY_CANDIDATES else candidate_reply
    texts = [as_reply(k, text) for k, text in cands]
    scores = model.loglik(item.prompt(), texts)
    if calibrated:
        scores = [s - p for s, p in zip(scores, model.loglik(NEUTRAL_PROMPT, texts))]
    key = [s if not math.isnan(s) else -math.inf for s in scores]
    return [cands[j] for j in sorted(range(len(cands)), key=lambda j: (-key[j], j))]


def answer_items(items: Sequence[TaskItem], model: TaskModel, *, mc: str = "auto", rank: str = "auto",
                 ner: str = "auto", max_new_tokens: int = 64) -> tuple[list[str], list[bool]]:
    """The model's raw reply to every item (multiple choice per `mc`, ranking and retrieval per
    `rank`, named entities per `ner`), and whether the candidates' log-likelihood chose it (rather
    than the model's own reply)."""
    modes = {"mc": mc, "rank": rank, "ner": ner}
    for flag, mode in modes.items():
        if mode not in MODES:
            raise ConfigError(f"--{flag} must be one of {', '.join(MODES)}, got {mode!r}")
    cands = [listed_candidates(it) for it in items]
    mode_of = ["generate" if not c else modes[BY_CANDIDATES[it.task_type].mode_option] for it, c in zip(items, cands)]
    replies = [""] * len(items)
    by_budget: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        if mode_of[i] not in BY_LIKELIHOOD:
            by_budget.setdefault(MAX_NEW_TOKENS.get(it.task_type, max_new_tokens), []).append(i)
    for budget, idx in by_budget.items():
        for i, r in zip(idx, model.generate([items[i].prompt() for i in idx], max_new_tokens=budget)):
            replies[i] = r or ""
    by_loglik = [False] * len(items)
    for i, it in enumerate(items):
        if mode_of[i] == "generate":
            continue
        how = BY_CANDIDATES[it.task_type]
        if mode_of[i] == "auto" and how.valid(PARSERS[it.task_type](replies[i]), cands[i]):
            continue
        replies[i] = how.reply(rank_by_loglik(model, it, cands[i], calibrated=mode_of[i] == "pmi"))
        by_loglik[i] = True
    return replies, by_loglik


def run_shopbench(items: Sequence[TaskItem], model: TaskModel, *, mc: str = "auto", rank: str = "auto",
                  ner: str = "auto", max_new_tokens: int = 64, sims: Similarities | None = None, samples: int = 3,
                  seed: int = 0) -> ShopBenchReport:
    """Ask, parse and score every item (see the module docstring)."""
    sims = sims or Similarities()
    replies, by_loglik = answer_items(items, model, mc=mc, rank=rank, ner=ner, max_new_tokens=max_new_tokens)
    report = score_report(items, replies, model=getattr(model, "name", "model"), sims=sims, samples=samples, seed=seed,
                          by_loglik=by_loglik)
    report.modes = {"mc": mc, "rank": rank, "ner": ner}
    return report


def score_report(items: Sequence[TaskItem], replies: Sequence[str], *, model: str = "model",
                 sims: Similarities | None = None, samples: int = 3, seed: int = 0,
                 by_loglik: Sequence[bool] | None = None) -> ShopBenchReport:
    """The report for replies already made (one per item, in order); `by_loglik` marks the
    answers the candidates' log-likelihood chose (counted per multiple-choice, ranking and retrieval task)."""
    sims = sims or Similarities()
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.task_name, []).append(i)
    tasks: dict[str, dict[str, Any]] = {}
    shown: dict[str, list[dict[str, Any]]] = {}
    for name, idx in groups.items():
        its = [items[i] for i in idx]
        score, per = score_answers(its, [replies[i] for i in idx], sims)
        tasks[name] = {"task_type": its[0].task_type, "metric": its[0].metric, "n": len(its),
                       "score": round(score, 4), "chance": round(chance_level(its, sims, seed=seed), 4)}
        if its[0].task_type in BY_CANDIDATES and by_loglik is not None:
            tasks[name]["by_loglik"] = sum(1 for i in idx if by_loglik[i])
        shown[name] = [{"input": it.input_field[-240:], "reply": replies[i], "truth": it.output_field,
                        "score": s if not isinstance(s, tuple) else list(s)}
                       for it, i, s in list(zip(its, idx, per))[:samples]]
    types: dict[str, dict[str, Any]] = {}
    for t in tasks.values():
        ty = types.setdefault(t["task_type"], {"tasks": 0, "n": 0, "scores": [], "chances": []})
        ty["tasks"] += 1
        ty["n"] += t["n"]
        ty["scores"].append(t["score"])
        ty["chances"].append(t["chance"])
    for ty in types.values():
        ty["score"] = round(_mean(ty.pop("scores")), 4)
        ty["chance"] = round(_mean(ty.pop("chances")), 4)
    return ShopBenchReport(model=model, tasks=tasks, types=types,
                           overall=round(_mean([t["score"] for t in tasks.values()]), 4),
                           overall_chance=round(_mean([t["chance"] for t in tasks.values()]), 4),
                           similarity_models=sorted(sims.used), samples=shown)


__all__ = ["BY_CANDIDATES", "Candidates", "HFTaskModel", "MC_MODES", "MODES", "NER_SPAN_WORDS", "ShopBenchReport",
           "TaskModel", "answer_items", "candidate_reply", "candidates_of", "choices_of", "listed_candidates", "ner_spans",
           "ner_text", "rank_by_loglik", "run_shopbench", "score_report", "span_reply"]
