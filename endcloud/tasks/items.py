"""One task question in ShopBench's published format (Amazon KDD Cup 2024), plus what training needs.

ShopBench rows (the starter kit's `data/development.json`, one JSON object per line):

    {"input_field": "…\\n0. cotton\\n1. wool\\nAnswer: ", "output_field": 1, "task_name": "task5",
     "task_type": "multiple-choice", "metric": "accuracy", "is_multiple_choice": true}

    task_type                 output_field                          metric
    multiple-choice           the right option's index (int)        accuracy
    retrieval                 the right items' numbers (list[int])  hit rate@3
    ranking                   each listed item's relevance          ndcg
                              (list[float], item 1 first)
    named_entity_recognition  the entities (list[str])              micro f1
    generation                the reference (str, or list[str])     rougel | sent-transformer |
                                                                    multilingual-sent-transformer | bleu

The shop's own generated tasks (`endcloud.tasks.generate`) are written in the same format, so
one harness (`endcloud.tasks.shopbench`, `endcloud eval shopbench FILE`) scores both, with
endcloud's extensions as extra keys a ShopBench reader ignores: `response` (the reply a model
is trained on), `messages` (the prompt as chat messages when it carries shop knowledge), `id`,
`lang`, `heldout`, `meta`; and two metrics of its own, `fact` (every expected string stated)
and `grounded-recommendation` (names a recommended in-stock product and no out-of-stock one).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from endcloud.errors import DataError

TASK_TYPES = ("multiple-choice", "generation", "retrieval", "ranking", "named_entity_recognition")
# The metric a row without one gets (ShopBench's own choice for each type).
DEFAULT_METRIC = {"multiple-choice": "accuracy", "generation": "rougel", "retrieval": "hit rate@3", "ranking": "ndcg",
                  "named_entity_recognition": "micro f1"}


@dataclass
class TaskItem:
    """One question: ShopBench's six fields, then endcloud's (all optional in a file)."""

    input_field: str
    output_field: Any
    task_name: str
    task_type: str
    metric: str
    is_multiple_choice: bool
    response: str | None = None
    messages: list[dict[str, str]] | None = None
    id: str = ""
    lang: str = ""
    heldout: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def prompt(self) -> list[dict[str, str]]:
        """What the model is given: `messages` when the item carries them, else the input as one user turn."""
        return [dict(m) for m in self.messages] if self.messages else [{"role": "user", "content": self.input_field}]

    def to_example(self):
        """The training Example (prompt -> response); DataError when the item has no response. A
        question that lists candidates carries them as the example's choices, the right ones
        marked, so training also ranks them as they are answered (`endcloud.tasks.shopbench`)."""
        from endcloud.end.data import Example
        from endcloud.tasks.shopbench import choices_of

        if not self.response:
            raise DataError(f"task item {self.id or self.task_name!r} has no `response` to train on")
        import hashlib

        fallback = f"{self.task_name}:{hashlib.sha256(self.input_field.encode('utf-8')).hexdigest()[:16]}"
        choices, answers = choices_of(self)
        return Example(self.prompt(), self.response, id=self.id or fallback, source="task", choices=tuple(choices),
                       answers=tuple(answers))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"input_field": self.input_field, "output_field": self.output_field,
                             "task_name": self.task_name, "task_type": self.task_type, "metric": self.metric,
                             "is_multiple_choice": self.is_multiple_choice}
        for k in ("response", "messages", "id", "lang", "meta"):
            v = getattr(self, k)
            if v:
                d[k] = v
        if self.heldout:
            d["heldout"] = True
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], *, where: str = "") -> "TaskItem":
        """A row of a ShopBench file (or of ours); DataError naming `where` on a bad row."""
        if not isinstance(d, dict):
            raise DataError(f"{where}expected a JSON object, got {type(d).__name__}")
        missing = [k for k in ("input_field", "output_field", "task_type") if k not in d]
        if missing:
            raise DataError(f"{where}missing field(s) {', '.join(missing)}; a ShopBench row has input_field, "
                            "output_field, task_name, task_type, metric, is_multiple_choice")
        task_type = str(d["task_type"])
        if task_type not in TASK_TYPES:
            raise DataError(f"{where}task_type must be one of {', '.join(TASK_TYPES)}, got {task_type!r}")
        if not isinstance(d["input_field"], str):
            raise DataError(f"{where}input_field must be a string, got {type(d['input_field']).__name__}")
        out = d["output_field"]
        _check_output(task_type, out, where)
        metric = str(d.get("metric") or DEFAULT_METRIC[task_type])
        return cls(input_field=d["input_field"], output_field=out, task_name=str(d.get("task_name") or task_type),
                   task_type=task_type, metric=metric,
                   is_multiple_choice=bool(d.get("is_multiple_choice", task_type == "multiple-choice")),
                   response=d.get("response"), messages=d.get("messages"), id=str(d.get("id", "")),
                   lang=str(d.get("lang", "")), heldout=bool(d.get("heldout", False)), meta=dict(d.get("meta") or {}))


def _check_output(task_type: str, out: Any, where: str) -> None:
    ok = {
        "multiple-choice": isinstance(out, int) and not isinstance(out, bool),
        "retrieval": isinstance(out, list) and all(isinstance(x, int) for x in out),
        "ranking": isinstance(out, list) and all(isinstance(x, (int, float)) for x in out),
        "named_entity_recognition": isinstance(out, list) and all(isinstance(x, str) for x in out),
        "generation": isinstance(out, (str, list, dict)),
    }[task_type]
    if not ok:
        want = {"multiple-choice": "an option index (int)", "retrieval": "a list of item numbers",
                "ranking": "a list of relevance weights", "named_entity_recognition": "a list of strings",
                "generation": "a reference string (or a list of them)"}[task_type]
        raise DataError(f"{where}output_field of a {task_type} row must be {want}, got {out!r}"[:300])


def read_items(path: str | os.PathLike[str]) -> list[TaskItem]:
    """A ShopBench file: JSON lines (the starter kit's development.json) or one JSON array."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError("file not found", path=str(p)) from None
    rows: list[tuple[int, Any]] = []
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e.msg})", path=str(p), line=e.lineno) from None
        rows = [(i + 1, r) for i, r in enumerate(data)]
        unit = "item"
    else:
        unit = "line"
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON ({e.msg} at column {e.colno}); one object per line", path=str(p),
                                line=n) from None
    items = [TaskItem.from_json(r, where=f"{p}:{unit} {n}: ") for n, r in rows]
    if not items:
        raise DataError("no questions in the file", path=str(p))
    return items


def write_items(path: str | os.PathLike[str], items: Iterable[TaskItem]) -> Path:
    from endcloud.fileio import write_jsonl_atomic

    p = Path(path)
    write_jsonl_atomic(p, (it.to_json() for it in items))
    return p


__all__ = ["DEFAULT_METRIC", "TASK_TYPES", "TaskItem", "read_items", "write_items"]
