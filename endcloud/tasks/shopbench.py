"""The ShopBench harness: ask a model every question of a file, parse and score its answers.

    items = read_items("development.json")                  # ShopBench's format, or a generated task set
    model = HFTaskModel.load(base_dir, adapter_dir)         # any `TaskModel`: generate + loglik
    report = run_shopbench(items, model, mc="auto")
    report.tasks["task5"]["score"], report.types["multiple-choice"], report.overall
    endcloud eval shopbench development.json --base B [--adapter A] [--mc auto|generate|loglik]

Each question goes to the model as one user message (its `input_field`; a generated item that
carries shop knowledge goes as its `messages`), the reply is parsed and scored as the starter
kit does (`endcloud.tasks.metrics`), per task (`task_name`), then averaged per task type and
overall (the mean of the task scores, as the leaderboard's track score). Beside every score
stands its chance level (`metrics.chance_level`).

Multiple choice, three ways (`mc`):
    generate  the reply's first character is the option (the kit's parser)
    loglik    each option "i. text" scored as the reply by its mean token log-probability; the
              best one is the answer — for a model that cannot follow the instruction at all
    auto      generate, and loglik where the reply is not a valid option (default)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from endcloud.errors import ConfigError
from endcloud.tasks.items import TaskItem
from endcloud.tasks.metrics import PARSERS, Similarities, chance_level, options_of, score_answers

MC_MODES = ("auto", "generate", "loglik")
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

        from endcloud.end.data import IGNORE_INDEX, Encoder, Example, collate

        enc = Encoder(self.tokenizer, max_input_len=self.max_input_len, max_output_len=128)
        encoded = [enc.encode(Example(prompt, c)) for c in candidates]
        batch = collate(encoded, self.tokenizer.pad_token_id)
        with torch.no_grad():
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        return (picked.sum(-1) / mask.sum(-1).clamp(min=1)).tolist()


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

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "overall": self.overall, "overall_chance": self.overall_chance,
                "types": self.types, "tasks": self.tasks, "similarity_models": self.similarity_models,
                "samples": self.samples}

    def lines(self) -> list[str]:
        out = [f"{'task':<22} {'type':<26} {'metric':<24} {'n':>4} {'score':>7} {'chance':>7}"]
        for name, t in sorted(self.tasks.items()):
            out.append(f"{name:<22} {t['task_type']:<26} {t['metric']:<24} {t['n']:>4} {t['score']:>7.3f} {t['chance']:>7.3f}")
        for ty, t in sorted(self.types.items()):
            out.append(f"{'[' + ty + ']':<22} {'':<26} {'':<24} {t['n']:>4} {t['score']:>7.3f} {t['chance']:>7.3f}")
        out.append(f"{'overall':<22} {'':<26} {'':<24} {sum(t['n'] for t in self.tasks.values()):>4} "
                   f"{self.overall:>7.3f} {self.overall_chance:>7.3f}")
        if self.similarity_models:
            out.append("similarity: " + "; ".join(self.similarity_models))
        return out


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def answer_items(items: Sequence[TaskItem], model: TaskModel, *, mc: str = "auto", max_new_tokens: int = 64
                 ) -> tuple[list[str], list[bool]]:
    """The model's raw reply to every item (multiple choice per `mc`), and whether the options'
    log-likelihood chose it (rather than the model's own reply)."""
    if mc not in MC_MODES:
        raise ConfigError(f"--mc must be one of {', '.join(MC_MODES)}, got {mc!r}")
    replies: list[str | None] = [None] * len(items)
    by_budget: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        if it.task_type == "multiple-choice" and mc == "loglik":
            continue
        by_budget.setdefault(MAX_NEW_TOKENS.get(it.task_type, max_new_tokens), []).append(i)
    for budget, idx in by_budget.items():
        for i, r in zip(idx, model.generate([items[i].prompt() for i in idx], max_new_tokens=budget)):
            replies[i] = r
    by_loglik = [False] * len(items)
    for i, it in enumerate(items):
        if it.task_type != "multiple-choice":
            continue
        opts = options_of(it.input_field)
        valid = {k for k, _ in opts}
        if mc == "loglik" or (mc == "auto" and PARSERS["multiple-choice"](replies[i] or "") not in valid):
            if not opts:
                replies[i] = replies[i] or ""
                continue
            scores = model.loglik(it.prompt(), [f"{k}. {text}" for k, text in opts])
            best = max(range(len(opts)), key=lambda j: (scores[j] if not math.isnan(scores[j]) else -math.inf, -j))
            replies[i] = f"{opts[best][0]}. {opts[best][1]}"
            by_loglik[i] = True
    return [r or "" for r in replies], by_loglik


def run_shopbench(items: Sequence[TaskItem], model: TaskModel, *, mc: str = "auto", max_new_tokens: int = 64,
                  sims: Similarities | None = None, samples: int = 3, seed: int = 0) -> ShopBenchReport:
    """Ask, parse and score every item (see the module docstring)."""
    sims = sims or Similarities()
    replies, by_loglik = answer_items(items, model, mc=mc, max_new_tokens=max_new_tokens)
    return score_report(items, replies, model=getattr(model, "name", "model"), sims=sims, samples=samples, seed=seed,
                        by_loglik=by_loglik)


def score_report(items: Sequence[TaskItem], replies: Sequence[str], *, model: str = "model",
                 sims: Similarities | None = None, samples: int = 3, seed: int = 0,
                 by_loglik: Sequence[bool] | None = None) -> ShopBenchReport:
    """The report for replies already made (one per item, in order); `by_loglik` marks the
    multiple-choice answers the options' log-likelihood chose (counted per task)."""
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
        if its[0].task_type == "multiple-choice" and by_loglik is not None:
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


__all__ = ["HFTaskModel", "MC_MODES", "ShopBenchReport", "TaskModel", "answer_items", "run_shopbench", "score_report"]
