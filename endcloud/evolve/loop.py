"""The online evolution loop (paper §III): lessons in, a better adapter out — or none.

`step()` is the pure part: given the stores, a teacher, settings and a clock, it turns new
served turns, feedback and human reviews into checked pseudo-labels, and says whether a
training round is due (and on which labels). It knows nothing of HTTP or of training
internals, so a test drives it in memory.

`run_round()` is the heavy part: fine-tune the ACTIVE adapter on the round's labels plus a
replay sample of the original data (against forgetting), measure candidate and champion on
the frozen held-out set, decide. It is a top-level function of plain data so it can run in
a background process (`ProcessRunner`) while the server keeps serving.

`Evolver.tick()` joins them: step → round → publish the candidate version → promote (hot
swap through `on_promote`) or mark it rejected — every version keeps its manifest, and
`endcloud adapters rollback` returns to the last champion.

    served turns ─┐
    feedback  ────┼─► step: triggers → teacher (missing cloud replies) → checks/caps ─► labels
    reviews  ─────┘                                                       │ enough?
                                                                           ▼
                  run_round: train(active + labels + replay) → measure cand/champ → decide
                                                                           │
                          publish vN ─► promote? ─► activate + hot-swap │ else mark rejected
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from endcloud.errors import ConfigError
from endcloud.evolve.checks import CheckSettings, vet_label
from endcloud.evolve.gate import GateSettings, decide, frozen_heldout, measure
from endcloud.evolve.triggers import TriggerSettings, from_reply, from_review
from endcloud.paper import PAPER
from endcloud.store.labels import TRUST_ORDER, LabelStore, PseudoLabel


REVIEWED = ("downvote", "low_score", "correction")


@dataclass
class EvolveSettings:
    triggers: TriggerSettings = field(default_factory=TriggerSettings)
    checks: CheckSettings = field(default_factory=CheckSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    min_labels: int = 8  # a round starts when this many trusted labels wait…
    round_interval_s: float | None = None  # …or on this schedule when at least one waits
    max_labels_per_round: int = 64
    customer_cap: int = 5  # automatic labels per customer per window (poisoning defence)
    customer_window_s: float = 86400.0
    anonymous_cap: int = 20  # customer-steered labels (corrections, upvotes) per window from all anonymous chats together
    lookback_s: float = 86400.0  # feedback may arrive after the turn: rescan this far back
    shadow_share: float = 0.0  # share of end-answered turns without a score to shadow-score now
    label_repeat: int = 3  # each label appears this often in a round (small rounds must still learn)
    replay_ratio: float = 1.0  # replay examples per label example
    steps_per_example: float = 1.5
    min_steps: int = 30
    max_steps: int = 300
    lr: float = 2e-3  # online rounds are short: far above the paper's 5e-5 for 30k steps
    method: str = "lora"  # used when there is no active adapter yet
    alpha: float = PAPER.alpha  # eq. 1 of the default evaluator (shadow scores, the gate's Final)
    theta: float = PAPER.theta
    promotion: str = "switch"  # a candidate that passes the gate: "switch" (every customer at once) or "canary" (live traffic first, see end.canary)
    canary_share: float = 0.05  # promotion "canary": the candidate's first share of customers (ramped 25 -> 50 -> 100 % while healthy)

    def __post_init__(self) -> None:
        if self.promotion not in ("switch", "canary"):
            raise ConfigError(f"evolve setting promotion must be 'switch' or 'canary', got {self.promotion!r}")


@dataclass
class StepReport:
    new_labels: int = 0
    quarantined: int = 0
    teacher_calls: int = 0
    shadow_scored: int = 0
    round_labels: list[PseudoLabel] = field(default_factory=list)

    @property
    def round_due(self) -> bool:
        return bool(self.round_labels)


def _customer_of(conversations: Any, session_id: str, cache: dict[str, str | None]) -> str | None:
    if session_id not in cache:
        s = conversations.session(session_id)
        cache[session_id] = None if s is None else s.get("customer")
    return cache[session_id]


# The owner the server stores for an anonymous chat's session is "~anon" or "~anon:<user>" (serve.auth.ANON_OWNER;
# "~" is no customer id's character); evolve may not import serve, so the prefix is repeated here.
ANONYMOUS = "~anon"


# Lessons whose text or choice the customer steers: a correction is the customer's own text, an
# upvote makes the end model's reply a lesson. The other automatic lessons are the cloud's replies
# to the customer's question (downvote, low score, takeover): a customer picks which turns, not
# what is learned, and the label checks vet the text.
CUSTOMER_STEERED = ("correction", "upvote")


def _over_cap(lab: PseudoLabel, labels: LabelStore, settings: EvolveSettings, now: float) -> bool:
    """The poisoning cap. A token-proven customer: `customer_cap` automatic lessons per window.
    All anonymous chats together: `anonymous_cap` customer-steered lessons per window; the
    cloud-written ones are not capped, so a shop whose customers chat without logging in still
    learns from its traffic (the previous pass's one bucket for every kind quarantined half the
    demo's lessons)."""
    if lab.trust != "auto" or lab.customer is None:
        return False
    since = now - settings.customer_window_s
    if lab.customer == ANONYMOUS:
        return lab.trigger in CUSTOMER_STEERED and \
            labels.count_for_customer(ANONYMOUS, since, CUSTOMER_STEERED) >= settings.anonymous_cap
    return labels.count_for_customer(lab.customer, since) >= settings.customer_cap


def lesson_owner(session_owner: str | None) -> str | None:
    """Whom a lesson's poisoning cap counts against: the token-proven customer the session belongs to,
    or ANONYMOUS for every anonymous chat together. An anonymous chat's `user` is an unsigned label
    the client picks: keyed on it, a poisoner would pick a new one per turn and never meet the cap."""
    if session_owner is None:
        return None
    return ANONYMOUS if session_owner.startswith("~") else session_owner


def step(*, conversations: Any, labels: LabelStore, teacher: Any, settings: EvolveSettings,
         clock: Callable[[], float] = time.time, reviews: Any = None, evaluator: Any = None,
         knowledge: Any = None) -> StepReport:
    """Collect lessons since the last step and decide whether a round is due. `knowledge`: the
    shop's KnowledgeBase, which a lesson must not contradict (`checks.vet_label`)."""
    now = clock()
    rep = StepReport()
    cursor = float(labels.get_state("cursor", 0.0))
    candidates: list[PseudoLabel] = []
    sessions: dict[str, str | None] = {}
    for row in conversations.iter_replies(since=max(0.0, cursor - settings.lookback_s)):
        if settings.shadow_share > 0 and row.get("answered_by") == "end" and "final" not in (row.get("scores") or {}):
            # the paper's score for a share of end-answered turns, asked of the cloud once per turn
            key = f"shadow:{row['message_id']}"
            stored = labels.get_state(key)
            if stored is not None:
                row["scores"] = stored
                row["cloud_text"] = row.get("cloud_text") or stored.get("cloud_text")
            elif evaluator is not None and _sampled(row["message_id"], settings.shadow_share):
                _shadow_score(row, teacher, evaluator)
                labels.set_state(key, row["scores"])
                rep.shadow_scored += 1
                rep.teacher_calls += 1
        customer = lesson_owner(_customer_of(conversations, row["session_id"], sessions))
        candidates += from_reply(row, customer=customer, settings=settings.triggers)
    rejected: set[str] = set()
    if reviews is not None:
        pairs = [(item, vs[-1]) for item in reviews.items() if (vs := reviews.verdicts(item.id))]
        candidates += from_review(pairs)
        rejected = {item.message_id for item, v in pairs if v.verdict == "reject" and item.message_id}

    for lab in candidates:
        if labels.seen(lab.source_id, lab.trigger):
            continue
        if not lab.label and lab.trigger in ("downvote", "low_score"):
            reply = teacher.reply(lab.messages())  # the paper: the same query goes to the cloud
            rep.teacher_calls += 1
            lab.cloud_reply = lab.label = reply.text
        verdict = vet_label(lab, settings.checks, knowledge=knowledge, orders=_orders_of(conversations, lab.customer))
        if not verdict.ok:
            lab.status, lab.reason = "quarantined", verdict.reason
        elif _over_cap(lab, labels, settings, now):
            lab.status, lab.reason = "quarantined", "customer_cap"
        if labels.add(lab):
            rep.new_labels += 1
            rep.quarantined += lab.status == "quarantined"
            if reviews is not None and lab.trust == "auto" and (lab.status == "quarantined" or lab.trigger in REVIEWED):
                # the human track sees what the loop doubts or learns from dissatisfaction
                reviews.add_item(query=lab.query, end_reply=lab.end_reply or "", cloud_reply=lab.cloud_reply,
                                 message_id=lab.source_id, score=lab.scores, context=lab.context,
                                 reason=lab.trigger if lab.status != "quarantined" else f"quarantined: {lab.reason}")
    if rejected:
        # a reviewer rejected the cloud's reply: the automatic label made from it must not be learned
        doomed = [lab.id for lab in labels.list("pending") if lab.trust == "auto" and lab.source_id in rejected]
        labels.mark(doomed, "quarantined", reason="rejected_by_reviewer")
    labels.set_state("cursor", now)

    pending = _resolve_conflicts(labels.list("pending"))
    last_round = float(labels.get_state("last_round", 0.0))
    scheduled = settings.round_interval_s is not None and now - last_round >= settings.round_interval_s
    if len(pending) >= settings.min_labels or (scheduled and pending):
        rep.round_labels = pending[: settings.max_labels_per_round]
    return rep


def _orders_of(conversations: Any, customer: str | None) -> list[dict[str, Any]]:
    """The customer's orders as the server's prompt lists them (the 3 newest), for templating."""
    if not customer or not hasattr(conversations, "profile"):
        return []
    return list(conversations.profile(customer, max_orders=3).orders)


def _resolve_conflicts(pending: list[PseudoLabel]) -> list[PseudoLabel]:
    """Human labels first; an automatic label for a query a human already labelled is dropped."""
    pending = sorted(pending, key=lambda lab: (TRUST_ORDER.get(lab.trust, 9), lab.created_at))
    human_queries = {lab.query for lab in pending if lab.trust == "human"}
    return [lab for lab in pending if lab.trust == "human" or lab.query not in human_queries]


def _sampled(message_id: str, share: float) -> bool:
    return int(hashlib.sha256(message_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def _shadow_score(row: dict[str, Any], teacher: Any, evaluator: Any) -> None:
    msgs = list(row.get("context") or []) + [{"role": "user", "content": row["query"]}]
    cloud = teacher.reply(msgs).text
    s = evaluator.score_turns([row["query"]], [row.get("end_text") or ""], [cloud])[0]
    row["scores"] = dict(row.get("scores") or {}) | {"sim": s.sim, "match": s.match, "cloud_match": s.cloud_match,
                                                      "final": s.final, "cloud_text": cloud, "shadow": True}
    row["cloud_text"] = cloud


# ---- the round ----------------------------------------------------------------------------------

@dataclass
class RoundSpec:
    """Everything a round needs, as plain data (it may cross a process boundary)."""

    round_id: str
    base_dir: str
    champion_dir: str | None
    method: str
    out_dir: str
    labels: list[dict[str, Any]]  # {"messages", "response"}
    replay: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    steps: int
    lr: float
    gate: dict[str, Any]
    checks: dict[str, Any]
    workspace: str | None = None
    seed: int = 0
    alpha: float = PAPER.alpha  # eq. 1 of the default evaluator
    theta: float = PAPER.theta


@dataclass
class RoundOutcome:
    round_id: str
    adapter_dir: str
    promote: bool
    gate: dict[str, Any]
    train: dict[str, Any]
    seconds: float


def run_round(spec: RoundSpec, *, evaluator: Any = None) -> RoundOutcome:
    """Train a candidate from the champion and measure both (see the module docstring)."""
    from endcloud.end.data import Example
    from endcloud.end.train import train
    from endcloud.runtime.model import EndModel

    t0 = time.time()
    examples = [Example(messages=x["messages"], response=x["response"], source="pseudo") for x in spec.labels]
    examples += [Example(messages=x["messages"], response=x["response"], source="replay") for x in spec.replay]
    grounder = _grounder(spec)
    if grounder is not None:  # the lessons carry their knowledge, as served turns do
        examples = [Example(grounder(e.messages), e.response, source=e.source) for e in examples]
    res = train(spec.base_dir, examples, spec.out_dir, method=spec.method, steps=spec.steps, lr=spec.lr,
                init_adapter=spec.champion_dir, progress=False, seed=spec.seed, save_every=max(spec.steps, 1),
                resume=False)
    if evaluator is None:
        from endcloud.scoring import default_evaluator

        evaluator = default_evaluator(spec.workspace, spec.alpha, spec.theta)
    gate_settings = GateSettings(**spec.gate)
    checks = CheckSettings(**spec.checks)
    targets = [(x["messages"], x["response"]) for x in _unique(spec.labels)]
    cand = EndModel.load(spec.base_dir, res.adapter_dir)
    champ = EndModel.load(spec.base_dir, spec.champion_dir)
    m_c = measure(cand, spec.heldout, evaluator, targets=targets, checks=checks, max_new_tokens=gate_settings.max_new_tokens,
                  ground=grounder)
    m_h = measure(champ, spec.heldout, evaluator, targets=targets, checks=checks, max_new_tokens=gate_settings.max_new_tokens,
                  ground=grounder)
    result = decide(m_c, m_h, gate_settings)
    return RoundOutcome(round_id=spec.round_id, adapter_dir=str(res.adapter_dir), promote=result.promote,
                        gate=result.to_json(), seconds=time.time() - t0,
                        train={"steps": res.steps, "loss_first": res.losses[0] if res.losses else None,
                               "loss_last": res.losses[-1] if res.losses else None, "examples": len(examples)})


def _grounder(spec: RoundSpec) -> Callable[[list[dict]], list[dict]] | None:
    """Conversation -> the messages with the workspace shop's knowledge, placed as serving
    places it (`endcloud.kb.prompt`); None without a shop (nothing to read)."""
    if not spec.workspace:
        return None
    from endcloud.config import Workspace
    from endcloud.end.base import load_tokenizer, renders_late_system
    from endcloud.kb import KnowledgeBase, ShopPack
    from endcloud.kb.prompt import ground

    ws = Workspace.resolve(spec.workspace)
    if not ws.has_shop():
        return None
    kb = KnowledgeBase(ShopPack.load(ws.shop))
    late = renders_late_system(load_tokenizer(spec.base_dir))
    return lambda messages: ground(messages, kb, late=late)


def _unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for x in items:
        key = (x["messages"][-1]["content"], x["response"])
        if key not in seen:
            seen.add(key)
            out.append(x)
    return out


class ProcessRunner:
    """Runs each round in a background process (spawned: a clean torch, no forked locks), so
    a round's CPU work never holds the server's GIL. `close` ends a round in progress at once
    (the server's shutdown must not wait minutes for a training run): that round fails, and
    its database row says so."""

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._closed = False

    def __call__(self, spec: RoundSpec) -> RoundOutcome:
        if self._closed:
            raise RuntimeError("the round runner is closed (the server is shutting down)")
        recv, send = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(target=_round_in_child, args=(spec, send), name="endcloud-evolve-round", daemon=True)
        proc.start()
        send.close()
        self._proc = proc
        try:
            ok, value = recv.recv()
        except EOFError:
            proc.join(5)
            raise RuntimeError(f"the round's process ended without a result (exit code {proc.exitcode})") from None
        finally:
            recv.close()
            self._proc = None
        proc.join(30)
        if not ok:
            raise value
        return value

    def close(self, timeout_s: float = 5.0) -> None:
        self._closed = True
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(timeout_s)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout_s)


def _round_in_child(spec: RoundSpec, conn: Any) -> None:
    """The round process: run it, send (True, outcome) or (False, the error)."""
    try:
        out: tuple[bool, Any] = (True, run_round(spec))
    except BaseException as e:  # noqa: BLE001 — whatever it was, the parent must hear of it
        out = (False, e)
    try:
        conn.send(out)
    except Exception:  # an error that does not pickle: its text does
        conn.send((False, RuntimeError(f"{type(out[1]).__name__}: {out[1]}")))
    finally:
        conn.close()


class Evolver:
    """Step + round + promotion for one adapter name in one workspace."""

    def __init__(self, *, conversations: Any, labels: LabelStore, teacher: Any, registry: Any, base_dir: str | Path,
                 adapter_name: str, heldout: list[dict[str, Any]], settings: EvolveSettings | None = None,
                 replay_pool: list[dict[str, Any]] | None = None, reviews: Any = None, evaluator: Any = None,
                 runner: Callable[[RoundSpec], RoundOutcome] | None = None,
                 on_promote: Callable[[Path], None] | None = None, clock: Callable[[], float] = time.time,
                 workspace: str | None = None, work_dir: str | Path | None = None, knowledge: Any = None):
        self.conversations, self.labels, self.teacher, self.registry = conversations, labels, teacher, registry
        self.base_dir, self.name, self.heldout = str(base_dir), adapter_name, heldout
        self.settings = settings or EvolveSettings()
        self.replay_pool = replay_pool or []
        self.reviews, self.evaluator, self.clock, self.workspace = reviews, evaluator, clock, workspace
        self.knowledge = knowledge  # the shop's KnowledgeBase: lessons that contradict it are quarantined
        self.runner = runner or (lambda spec: run_round(spec, evaluator=self.evaluator))
        self.on_promote = on_promote
        self.work_dir = Path(work_dir) if work_dir else Path(registry.root) / f".rounds-{adapter_name}"
        self._rng = random.Random(0)

    def tick(self) -> dict[str, Any]:
        rep = step(conversations=self.conversations, labels=self.labels, teacher=self.teacher, settings=self.settings,
                   clock=self.clock, reviews=self.reviews, evaluator=self.evaluator, knowledge=self.knowledge)
        out: dict[str, Any] = {"step": {k: v for k, v in asdict(rep).items() if k != "round_labels"},
                               "round": None}
        if rep.round_due:
            out["round"] = self._round(rep.round_labels)
        return out

    def _round(self, labs: list[PseudoLabel]) -> dict[str, Any]:
        champion_v = self.registry.active_version(self.name)
        champion_dir = self.registry.active(self.name)
        method = (self.registry.manifest(self.name, champion_v) or {}).get("method", self.settings.method) \
            if champion_v else self.settings.method
        rid = self.labels.start_round(len(labs), champion_v)
        lab_examples = [{"messages": lab.messages(), "response": lab.label} for lab in labs] * self.settings.label_repeat
        k = min(len(self.replay_pool), int(round(len(lab_examples) * self.settings.replay_ratio)))
        replay = self._rng.sample(self.replay_pool, k) if k else []
        n = len(lab_examples) + len(replay)
        steps = int(min(self.settings.max_steps, max(self.settings.min_steps, n * self.settings.steps_per_example)))
        spec = RoundSpec(round_id=rid, base_dir=self.base_dir, champion_dir=str(champion_dir) if champion_dir else None,
                         method=method, out_dir=str(self.work_dir / rid), labels=lab_examples, replay=replay,
                         heldout=self.heldout, steps=steps, lr=self.settings.lr, gate=asdict(self.settings.gate),
                         checks=asdict(self.settings.checks), workspace=self.workspace, alpha=self.settings.alpha,
                         theta=self.settings.theta)
        try:
            outcome = self.runner(spec)
            version = self.registry.publish(self.name, outcome.adapter_dir, parent=champion_v, manifest={
                "round": rid, "labels": len(labs), "gate": outcome.gate, "metrics": outcome.gate["candidate"],
                "trigger_counts": _count(lab.trigger for lab in labs)})
        except BaseException as e:  # the round is over, not "running" forever; its labels wait for the next
            self.labels.fail_round(rid, reason=f"{type(e).__name__}: {e}"[:500])
            raise
        ids = [lab.id for lab in labs]
        canary = None
        if outcome.promote and self.settings.promotion == "canary" and champion_v is not None:
            from endcloud.end.canary import start_canary

            # the held-out gate passed; live traffic decides the rest (the server ramps or rolls back)
            canary = start_canary(self.registry, self.name, version, share=self.settings.canary_share, force=True,
                                  clock=self.clock).id
            self.labels.mark(ids, "used", round_id=rid)
        elif outcome.promote:
            path = self.registry.activate(self.name, version)
            if self.on_promote is not None:
                self.on_promote(Path(path))
            self.labels.mark(ids, "used", round_id=rid)
        else:
            self.registry.mark(self.name, version, "rejected")
            self.labels.mark(ids, "held", round_id=rid, reason="gate rejected the round")
        self.labels.set_state("last_round", self.clock())
        detail = {"version": version, "gate": outcome.gate, "train": outcome.train, "seconds": outcome.seconds,
                  "steps": spec.steps, "method": method, **({"canary": canary} if canary else {})}
        self.labels.finish_round(rid, candidate=version, promoted=outcome.promote, detail=detail)
        return {"round_id": rid, "version": version, "promoted": outcome.promote, **detail}


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out
