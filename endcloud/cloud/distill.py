"""Distillation: label each customer query with the teacher's reply (`endcloud distill`).

    labels, summary = distill(pairs, make_teacher("openai", examples=pairs, cache="labels/cache.sqlite"))

The paper (§IV-A) feeds the user side of its dataset to Gemini 1.5 pro with the Table II
prompt and keeps the replies as labels. Here a pool of `concurrency` workers walks the
pairs; every answer lands in the SQLite cache the moment it arrives (see `cache.py`), so a
run killed at any point resumes where it stopped, and a finished run repeated makes zero
calls. A pair's own example is left out of its prompt (else the teacher could copy the
human answer it is meant to replace). A failed pair (after the client's retries) is
reported and skipped; a reached budget cap stops the run cleanly with every label so far.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from endcloud.cloud.prompt import PromptedTeacher
from endcloud.cloud.teacher import Teacher, WrapperTeacher, run_sync
from endcloud.errors import BudgetExceeded, DataError, TeacherError
from endcloud.records import Label, Pair, Turn


@dataclass
class DistillSummary:
    total: int = 0
    labelled: int = 0
    calls: int = 0  # replies that came from the teacher (not the cache)
    cache_hits: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (pair id, error)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    retries: int = 0
    stopped: str | None = None  # why the run stopped early ("budget: ..."), else None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total, "labelled": self.labelled, "calls": self.calls, "cache_hits": self.cache_hits,
            "failures": len(self.failures), "failed_ids": [i for i, _ in self.failures],
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 6), "retries": self.retries, "stopped": self.stopped,
            "seconds": round(self.seconds, 2),
        }

    def lines(self) -> list[str]:
        out = [
            f"labelled {self.labelled}/{self.total} pairs in {self.seconds:.1f}s: {self.calls} teacher calls, "
            f"{self.cache_hits} cache hits, {self.retries} retries",
            f"tokens in {self.prompt_tokens:,}, out {self.completion_tokens:,}; cost ${self.cost:.4f}",
        ]
        if self.failures:
            shown = ", ".join(f"{i} ({e[:60]})" for i, e in self.failures[:3])
            out.append(f"{len(self.failures)} failed (rerun to retry them): {shown}{' …' if len(self.failures) > 3 else ''}")
        if self.stopped:
            out.append(f"stopped early: {self.stopped}")
        return out


def read_pairs(path: str | Path) -> list[Pair]:
    """Pairs JSONL (Pair.to_json); `response` may be absent when only queries are to be labelled."""
    from endcloud.fileio import read_jsonl

    pairs: list[Pair] = []
    seen: dict[str, int] = {}
    for n, d in enumerate(read_jsonl(path), 1):
        if not isinstance(d.get("query"), str) or "id" not in d:
            raise DataError(f'each line needs "id" and a string "query", got keys {sorted(d)}', path=str(path), line=n)
        pid = str(d["id"])
        if pid in seen:
            raise DataError(f"duplicate id {pid!r} (first on line {seen[pid]})", path=str(path), line=n)
        seen[pid] = n
        pairs.append(Pair.from_json({**d, "response": d.get("response") or ""}))
    return pairs


def _client_stats(teacher: Teacher) -> Any:
    inner = teacher.unwrap() if isinstance(teacher, WrapperTeacher) else teacher
    return getattr(inner, "stats", None)


async def adistill(
    pairs: Iterable[Pair],
    teacher: Teacher,
    *,
    concurrency: int = 8,
    on_label: Callable[[Pair, Label | None], None] | None = None,
) -> tuple[list[Label], DistillSummary]:
    """Label `pairs` with `teacher`; labels come back in input order (failed ones left out)."""
    pairs = list(pairs)
    summary = DistillSummary(total=len(pairs))
    stats = _client_stats(teacher)
    retries0 = stats.retries if stats is not None else 0
    t0 = time.perf_counter()
    results: list[Label | None] = [None] * len(pairs)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(pairs)):
        queue.put_nowait(i)
    stop = asyncio.Event()

    async def one(i: int) -> None:
        pair = pairs[i]
        try:
            if isinstance(teacher, PromptedTeacher):
                lang = pair.lang if pair.lang in ("zh", "en") else None
                reply = await teacher.areply(pair.messages(), exclude_ids=[pair.id], lang=lang)
            else:
                reply = await teacher.areply(pair.messages())
        except BudgetExceeded as e:
            if summary.stopped is None:
                summary.stopped = f"{e}; rerun with a higher --budget to continue (answers so far are cached)"
            stop.set()
            return
        except TeacherError as e:
            summary.failures.append((pair.id, str(e)))
            if on_label:
                on_label(pair, None)
            return
        who = reply.model if reply.model.startswith(teacher.name) else f"{teacher.name}:{reply.model}"
        label = Label(id=pair.id, query=pair.query, context=[Turn(t.role, t.text) for t in pair.context],
                      label=reply.text, teacher=who, usage=reply.usage, cached=reply.cached)
        results[i] = label
        if reply.cached:
            summary.cache_hits += 1
        else:
            summary.calls += 1
            summary.prompt_tokens += reply.usage.prompt_tokens
            summary.completion_tokens += reply.usage.completion_tokens
            summary.cost += reply.cost
        if on_label:
            on_label(pair, label)

    async def worker() -> None:
        while not stop.is_set():
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await one(i)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        await teacher.aclose()
    labels = [r for r in results if r is not None]
    summary.labelled = len(labels)
    summary.retries = (stats.retries - retries0) if stats is not None else 0
    summary.seconds = time.perf_counter() - t0
    return labels, summary


def distill(pairs: Iterable[Pair], teacher: Teacher, **kw: Any) -> tuple[list[Label], DistillSummary]:
    """Sync form of `adistill`."""
    return run_sync(lambda: adistill(pairs, teacher, **kw))
