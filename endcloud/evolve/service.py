"""Running the online loop for a workspace: beside a live server, or alone.

`evolver_for_workspace()` wires the loop to a workspace's stores, teacher, adapter registry,
frozen held-out set and replay pool. `EvolutionService` ticks it on a background thread
(rounds run in a separate process, so serving never stalls); what a promotion does (the
server hot-swaps its engine) is the caller's `on_promote`. Nothing here knows of HTTP:
`endcloud.compose` wires the loop beside a server, and a server follows promotions made by
a separate `endcloud evolve` process with `endcloud.end.adapters.ActiveWatcher`.
"""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from endcloud.config import DEFAULT_ADAPTER, Workspace
from endcloud.evolve.gate import frozen_heldout
from endcloud.evolve.loop import EvolveSettings, Evolver, ProcessRunner, run_round

log = logging.getLogger("endcloud.evolve")


def replay_pool(ws: Workspace, *, limit: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """A sample of the original training data (natural pairs + teacher labels) to replay
    in every round, against forgetting."""
    from endcloud.fileio import read_jsonl

    rows: list[dict[str, Any]] = []
    for path, key in ((ws.labels, "label"), (ws.pairs, "response")):
        if not path.exists():
            continue
        for d in read_jsonl(path):
            ctx = [{"role": t["role"], "content": t.get("text", t.get("content", ""))} for t in d.get("context", [])]
            rows.append({"messages": ctx + [{"role": "user", "content": d["query"]}], "response": d[key]})
            if len(rows) >= 4 * limit:
                break
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def evolver_for_workspace(workspace: Any = None, *, teacher: Any = None, settings: EvolveSettings | None = None,
                          adapter_name: str = DEFAULT_ADAPTER, on_promote: Callable[[Path], None] | None = None,
                          background: bool = True, evaluator: Any = None, clock: Callable[[], float] = time.time) -> Evolver:
    from endcloud.cloud import default_teacher
    from endcloud.store.conversations import ConversationStore
    from endcloud.store.labels import LabelStore
    from endcloud.store.review import ReviewStore

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    base = ws.find_base()
    teacher = teacher or default_teacher(workspace=ws)
    conversations = ConversationStore(ws.db)
    labels = LabelStore(ws.db)
    reviews = ReviewStore(ws.db)
    clean_leftovers(ws, labels)
    settings = settings or EvolveSettings()
    source = ws.eval_pairs if ws.eval_pairs.exists() else (ws.shop / "chats" / "eval.jsonl")
    heldout = frozen_heldout(ws.root / "evolve" / "heldout.jsonl", source=source, teacher=teacher,
                             size=settings.gate.heldout_size)
    if evaluator is None and not background:
        from endcloud.scoring import default_evaluator

        evaluator = default_evaluator(str(ws.root), settings.alpha, settings.theta)
    runner = ProcessRunner() if background else (lambda spec: run_round(spec, evaluator=evaluator))
    return Evolver(conversations=conversations, labels=labels, teacher=teacher, registry=ws.adapter_registry(),
                   base_dir=base, adapter_name=adapter_name, heldout=heldout, settings=settings,
                   replay_pool=replay_pool(ws), reviews=reviews, evaluator=evaluator, runner=runner,
                   on_promote=on_promote, clock=clock, workspace=str(ws.root), work_dir=ws.root / "evolve" / "rounds",
                   knowledge=shop_knowledge(ws))


def shop_knowledge(ws: Workspace) -> Any:
    """The workspace shop's KnowledgeBase, which lessons must not contradict; None without a shop."""
    if not ws.has_shop():
        return None
    from endcloud.kb import KnowledgeBase, ShopPack

    try:
        return KnowledgeBase(ShopPack.load(ws.shop))
    except Exception as e:  # a broken pack must not stop the loop; lessons then go unchecked against it
        log.warning("shop knowledge unavailable to the online loop's checks (%s)", e)
        return None


def clean_leftovers(ws: Workspace, labels: Any) -> dict[str, list]:
    """At start: what a killed loop left (kill -9 mid-round or mid-publish). Its unfinished
    rounds are marked failed ("interrupted") and their training folders removed; temp folders
    and files of dead adapter writers are removed (a live writer's are kept)."""
    rounds = labels.fail_interrupted_rounds()
    for rid in rounds:
        shutil.rmtree(ws.root / "evolve" / "rounds" / rid, ignore_errors=True)
    removed = ws.adapter_registry().clean_leftovers()
    if rounds or removed:
        log.warning("cleaned up after a killed run: %d interrupted round(s) marked failed, %d temp file(s) removed",
                    len(rounds), len(removed))
    return {"rounds": rounds, "removed": removed}


class EvolutionService:
    """Tick an Evolver every `interval_s` on a daemon thread; errors are logged, never fatal."""

    def __init__(self, evolver: Evolver, *, interval_s: float = 30.0):
        self.evolver, self.interval_s = evolver, interval_s
        self.history: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def tick(self) -> dict[str, Any]:
        with self._lock:  # one round at a time, whoever asks
            out = self.evolver.tick()
        self.history.append(out)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                out = self.tick()
                if out.get("round"):
                    log.info("evolve round %s: version %s promoted=%s", out["round"]["round_id"],
                             out["round"]["version"], out["round"]["promoted"])
            except Exception:  # the shop keeps serving; the next tick tries again
                log.exception("evolve tick failed")

    def start(self) -> "EvolutionService":
        self._thread = threading.Thread(target=self._run, name="endcloud-evolve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Bounded: a round in progress is ended first (it is marked failed), then the thread joined."""
        self._stop.set()
        runner = getattr(self.evolver, "runner", None)
        if hasattr(runner, "close"):
            runner.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
