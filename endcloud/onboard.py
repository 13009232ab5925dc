"""`endcloud shop onboard`: everything a shop needs to serve its own pack, in one resumable run.

    result = onboard("my-shop/", "endcloud-work", steps=300)        # then: endcloud serve -w endcloud-work
    result.passed, result.report["evaluate"]["adapter"]["facts"]

A shop that brings its pack (catalog, FAQ, policies) and maybe its chat logs gets a fine-tuned
end model, checked on questions it never trained on, registered and activated:

    pack       copy the pack into WORKSPACE/shop                      key: the pack's content hash
    questions  --logs: `corpus prepare` and their pairs; else the questions customers would ask
               of this pack (`kb.questions.customer_questions`), a share held out
    labels     the teacher answers each one (`cloud.default_teacher`: the offline reference
               teacher, or the real cloud through the privacy gate in the Table II prompt),
               every answer cached, a real cloud capped by --budget (`cloud.distill.adistill`)
    base       the workspace's base/, else --base, else the shop reader (`end.reader`), linked
               into WORKSPACE/base so `endcloud serve` finds it
    train      a PEFT adapter on the labelled questions, each grounded in the snippets retrieval
               finds for it exactly as serving does (`kb.prompt.ground`); a budget in steps
    evaluate   held-out fact accuracy (replies stating every expected fact) of the base before
               and of the adapter after, through the same runtime that serves them
    publish    register the adapter; activate it only if it clears --min-facts
    report     WORKSPACE/reports/onboard.json and onboard.txt

Each stage is recorded in WORKSPACE/onboard/state.json with a hash of everything it was built
from (its settings and the hashes of the stages before it). A rerun skips every stage whose
hash is unchanged, and a changed pack (a new price in catalog.csv) changes the pack's hash and
so reruns what depends on it; teacher requests already answered come from the cache, so a
rerun after an interruption or a budget stop asks the cloud only what it has not answered.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from endcloud.config import DEFAULT_ADAPTER, Workspace
from endcloud.errors import BudgetExceeded, ConfigError, DataError
from endcloud.fileio import read_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic

PACK_FILES = ("shop.yaml", "catalog.csv", "faq.jsonl", "policies.md", "orders.csv")
STATE = "state.json"
# Held-out questions with facts below which the logs' own eval pairs are topped up with the
# pack's held-out questions (a quality bar on three questions would be noise).
MIN_JUDGED = 10
NO_BASE = ("no base model to fine-tune from: {ws} has no base/, no --base was given, and this install has no shop "
           "reader (endcloud.end.reader.reader_base() is None). Pass --base PATH to a local Hugging Face model folder "
           "(e.g. Qwen2.5-0.5B-Instruct), or build one in the workspace with `endcloud demo -w {ws}` / "
           "`endcloud pretrain ... -o {ws}/base`")


@dataclass
class OnboardSettings:
    """What an onboarding run does; every field is a flag of `endcloud shop onboard`."""

    logs: Sequence[str | os.PathLike[str]] = ()  # chat logs (ECD, JDDC, JSONL, CSV): their pairs are the questions
    lang: str | None = None  # zh | en: write the questions in this language only (default: the shop's)
    questions: int = 400  # questions written from the pack (without logs)
    max_pairs: int = 2000  # log pairs labelled and trained on at most
    heldout: float = 0.2  # share of the questions kept for evaluation
    seed: int = 0
    teacher: str | None = None  # reference | openai | None: the real cloud when ENDCLOUD_CLOUD_* is set
    budget: float | None = None  # US dollars a real cloud may cost this run
    concurrency: int = 8
    base: str | os.PathLike[str] | None = None
    method: str = "lora"
    target_modules: str | None = None  # LoRA's layers: None = the attention projections; "all-linear" = the MLP too
    steps: int = 300  # training budget in optimizer steps (never seconds: the result must not depend on the machine)
    lr: float = 1e-3
    batch_size: int = 8
    max_new_tokens: int = 64
    min_facts: float = 0.5  # held-out fact accuracy the adapter must reach to be activated
    adapter: str = DEFAULT_ADAPTER
    engine: str = "transformers"

    def validate(self) -> None:
        if self.lang not in (None, "zh", "en"):
            raise ConfigError(f"--lang must be zh or en, got {self.lang!r}")
        if self.target_modules is not None and (self.method != "lora" or not self.target_modules.strip(" ,")):
            raise ConfigError(f"--target-modules names LoRA's layers: it needs --method lora and a name "
                              f"(all-linear, or e.g. q_proj,v_proj), got {self.target_modules!r} with {self.method!r}")
        for name, v in (("--steps", self.steps), ("--questions", self.questions), ("--batch-size", self.batch_size),
                        ("--max-pairs", self.max_pairs), ("--concurrency", self.concurrency)):
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive whole number, got {v!r}")
        if not 0.0 <= self.min_facts <= 1.0:
            raise ConfigError(f"--min-facts must be in [0, 1] (a share of held-out questions), got {self.min_facts!r}")
        if not 0.0 < self.heldout < 1.0:
            raise ConfigError(f"--heldout must be in (0, 1), got {self.heldout!r}")
        if self.budget is not None and self.budget <= 0:
            raise ConfigError(f"--budget must be a positive number of US dollars, got {self.budget!r}")
        for p in self.logs:
            if not Path(p).is_file():
                raise ConfigError(f"--logs {str(p)!r} is not a file")


@dataclass
class OnboardResult:
    report: dict[str, Any]
    passed: bool
    reason: str | None
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# ---- the run ------------------------------------------------------------------------------
def onboard(pack: str | os.PathLike[str], workspace: str | os.PathLike[str] | Workspace, *,
            settings: OnboardSettings | None = None, echo: Callable[[str], None] = print,
            progress: bool = False) -> OnboardResult:
    """Run (or resume) every stage; write the report; return it with whether the bar was met."""
    s = settings or OnboardSettings()
    s.validate()
    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    ws.ensure()
    stages = _Stages(ws.root / "onboard" / STATE, echo)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"workspace": str(ws.root), "pack": str(Path(pack).resolve())}

    pack_out = stages.run("pack", _digest(pack_hash(pack), str(ws.shop)), lambda: _stage_pack(Path(pack), ws))
    from endcloud.kb import KnowledgeBase, ShopPack
    from endcloud.privacy import use_public_values

    shop = ShopPack.load(ws.shop)
    kb = KnowledgeBase(shop)
    use_public_values(p.sku for p in shop.products)  # SKUs are the shop's, not personal data
    report["shop"] = pack_out

    logs = [str(Path(p).resolve()) for p in s.logs]
    q_key = _digest(pack_out["hash"], [(p, _file_hash(p)) for p in logs], s.lang, s.questions, s.max_pairs, s.heldout,
                    s.seed)
    report["questions"] = stages.run("questions", q_key, lambda: _stage_questions(ws, shop, s, logs),
                                     valid=lambda out: _unchanged(ws.root / "onboard" / "questions.jsonl", out["hash"]))
    items = [Item.from_json(d) for d in read_jsonl(ws.root / "onboard" / "questions.jsonl")]

    teacher = _teacher(ws, shop, s, logs)
    l_key = _digest(q_key, teacher.fingerprint, s.teacher)
    report["labels"] = stages.run("labels", l_key, lambda: _stage_labels(ws, kb, items, teacher, s, echo, progress),
                                  valid=lambda out: _unchanged(ws.root / "onboard" / "labels.jsonl", out["hash"]))
    labels = {d["id"]: d for d in read_jsonl(ws.root / "onboard" / "labels.jsonl")}

    base, late = _resolve_base(ws, s)
    b_key = _digest(_dir_stamp(base), late)
    report["base"] = {"path": str(base), "late_system": late}

    t_key = _digest(pack_out["hash"], report["labels"]["hash"], b_key, s.method, s.steps, s.lr, s.batch_size, s.seed,
                    # only when set, so a workspace onboarded before the flag existed keeps its trained stage
                    *(() if s.target_modules is None else (s.target_modules,)))
    report["train"] = stages.run("train", t_key, lambda: _stage_train(ws, kb, items, labels, base, late, s, t_key,
                                                                       progress),
                                 valid=lambda out: (Path(out["adapter_dir"]) / "adapter_config.json").exists())
    heldout = [it for it in items if it.heldout and it.expect and it.id in labels]
    e_base_key = _digest(pack_out["hash"], b_key, report["labels"]["hash"], s.max_new_tokens, s.engine)
    e_key = _digest(t_key, e_base_key)
    evaluation = {
        "base": stages.run("evaluate-base", e_base_key,
                           lambda: _evaluate(s.engine, base, None, kb, heldout, labels, s, "base", progress)),
        "adapter": stages.run("evaluate", e_key,
                              lambda: _evaluate(s.engine, base, report["train"]["adapter_dir"], kb, heldout, labels, s,
                                                "adapter", progress)),
        "teacher": report["labels"].get("teacher_heldout"),
    }
    report["evaluate"] = evaluation
    p_key = _digest(e_key, s.min_facts, s.adapter)
    report["publish"] = stages.run("publish", p_key, lambda: _stage_publish(ws, report, s))
    report["stages"] = {"ran": stages.ran, "skipped": stages.skipped, "seconds": stages.seconds}
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    report["serve"] = f"endcloud serve -w {ws.root}"
    passed, reason = report["publish"]["passed"], report["publish"].get("reason")
    _write_report(ws, report)
    return OnboardResult(report=report, passed=passed, reason=reason, ran=stages.ran, skipped=stages.skipped)


# ---- stages -------------------------------------------------------------------------------
class _Stages:
    """Runs a stage unless state.json says it finished with the same key."""

    def __init__(self, path: Path, echo: Callable[[str], None]):
        self.path, self.echo = path, echo
        self.state: dict[str, Any] = {}
        if path.exists():
            try:
                self.state = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                self.state = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.seconds: dict[str, float] = {}

    def run(self, name: str, key: str, fn: Callable[[], dict[str, Any]],
            valid: Callable[[dict[str, Any]], bool] = lambda out: True) -> dict[str, Any]:
        """`fn()` unless this stage finished with `key` and its output is still `valid`."""
        prev = self.state.get(name)
        if isinstance(prev, dict) and prev.get("key") == key and isinstance(prev.get("out"), dict) and valid(prev["out"]):
            self.skipped.append(name)
            self.echo(f"  = {name}: up to date")
            return prev["out"]
        self.echo(f"▶ {name} …")
        t0 = time.perf_counter()
        out = fn()
        dt = round(time.perf_counter() - t0, 1)
        self.seconds[name] = dt
        self.ran.append(name)
        self.state[name] = {"key": key, "out": out, "seconds": dt,
                            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json_atomic(self.path, self.state)
        self.echo(f"  ✓ {name} ({dt:.1f} s)")
        return out


def pack_hash(pack: str | os.PathLike[str]) -> str:
    """sha256 over the pack's knowledge files (names and bytes): what "the pack changed" means."""
    root = Path(pack)
    if not (root / "shop.yaml").exists():
        raise DataError("not a shop pack (no shop.yaml); see `endcloud shop new --help` for the format", path=str(root))
    h = hashlib.sha256()
    for name in PACK_FILES:
        p = root / name
        if p.exists():
            h.update(name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _stage_pack(src: Path, ws: Workspace) -> dict[str, Any]:
    from endcloud.kb import KnowledgeBase, ShopPack

    shop = ShopPack.load(src)  # validate before touching the workspace
    if src.resolve() != ws.shop.resolve():
        ws.shop.mkdir(parents=True, exist_ok=True)
        for name in PACK_FILES:
            if (src / name).exists():
                tmp = ws.shop / (".tmp-" + name)
                shutil.copyfile(src / name, tmp)
                os.replace(tmp, ws.shop / name)
            elif (ws.shop / name).exists():
                (ws.shop / name).unlink()  # a file the pack no longer has
    return {"hash": pack_hash(ws.shop), "name": shop.name, "language": shop.language, "products": len(shop.products),
            "faq": len(shop.faq), "policies": len(shop.policies), "snippets": len(KnowledgeBase(shop))}


@dataclass
class Item:
    """One conversation to label: customer `turns` (answers go between them) or, from logs, a
    fixed `context` (the human agent's replies kept) and the question."""

    id: str
    turns: list[str]
    kind: str
    lang: str
    expect: list[str]
    heldout: bool
    context: list[dict[str, str]] | None = None

    def conversation(self, answers: dict[str, str]) -> list[dict[str, str]] | None:
        """Messages up to the last question, earlier turns answered (None: an answer is missing)."""
        if self.context is not None:
            return [*self.context, {"role": "user", "content": self.turns[-1]}]
        out: list[dict[str, str]] = []
        for d, t in enumerate(self.turns, 1):
            out.append({"role": "user", "content": t})
            if d < len(self.turns):
                a = answers.get(self.prefix_id(d))
                if a is None:
                    return None
                out.append({"role": "assistant", "content": a})
        return out

    def prefix_id(self, depth: int) -> str:
        return self.id if depth == len(self.turns) else f"{self.id}@{depth}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "turns": self.turns, "kind": self.kind, "lang": self.lang, "expect": self.expect,
                "heldout": self.heldout, **({"context": self.context} if self.context is not None else {})}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Item":
        return cls(id=d["id"], turns=list(d["turns"]), kind=d["kind"], lang=d.get("lang", "en"),
                   expect=list(d.get("expect") or []), heldout=bool(d.get("heldout")), context=d.get("context"))


def _stage_questions(ws: Workspace, shop: Any, s: OnboardSettings, logs: list[str]) -> dict[str, Any]:
    from endcloud.kb.questions import customer_questions

    items: list[Item] = []
    source = "pack"
    if logs:
        source = "logs"
        items = _log_items(ws, logs, s)
    judged = sum(1 for it in items if it.heldout and it.expect)
    if not logs or judged < MIN_JUDGED:
        qs = customer_questions(shop, n=s.questions, seed=s.seed, langs=[s.lang] if s.lang else None,
                                heldout_share=s.heldout)
        if logs:  # the logs' held-out pairs carry too few facts: judge on the pack's questions too
            qs = [q for q in qs if q.heldout]
            source = "logs+pack-heldout"
        items += [Item(id=q.id, turns=list(q.turns), kind=q.kind, lang=q.lang, expect=list(q.expect), heldout=q.heldout)
                  for q in qs]
    if not items:
        raise DataError("no questions: the pack has no products, FAQ or policies and no logs were given", path=str(ws.shop))
    path = ws.root / "onboard" / "questions.jsonl"
    write_jsonl_atomic(path, (it.to_json() for it in items))
    kinds: dict[str, int] = {}
    for it in items:
        kinds[it.kind] = kinds.get(it.kind, 0) + 1
    return {"source": source, "total": len(items), "heldout": sum(it.heldout for it in items),
            "judged_heldout": sum(1 for it in items if it.heldout and it.expect), "kinds": kinds,
            "langs": sorted({it.lang for it in items}), "hash": _file_hash(path)}


def _log_items(ws: Workspace, logs: list[str], s: OnboardSettings) -> list[Item]:
    from endcloud.corpus.pipeline import prepare
    from endcloud.records import Pair

    prepare(logs, ws.corpus, workers=1, eval_fraction=0.1, lang=s.lang or "auto")
    pairs = [Pair.from_json(d) for d in read_jsonl(ws.pairs)]
    random.Random(s.seed).shuffle(pairs)
    held = [Pair.from_json(d) for d in read_jsonl(ws.eval_pairs)] if ws.eval_pairs.exists() else []

    def item(p: Pair, heldout: bool) -> Item:
        ctx = [t.to_message() for t in p.context if t.role in ("user", "assistant")]
        return Item(id=p.id, turns=[p.query], kind=p.intent or "log", lang=p.lang, expect=list(p.facts or []),
                    heldout=heldout, context=ctx)

    return [item(p, False) for p in pairs[: s.max_pairs]] + [item(p, True) for p in held[: max(50, s.max_pairs // 10)]]


def _teacher(ws: Workspace, shop: Any, s: OnboardSettings, logs: list[str]) -> Any:
    """The labeller: `default_teacher`, cached in labels/cache.sqlite. A real cloud gets a fixed
    set of Table II examples (the pack's FAQ and the logs' pairs), not the live labels file this
    run rewrites: the same question must make the same request, or the cache could not answer it."""
    from endcloud.cloud import default_teacher

    ws.labels_dir.mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = {"cache": ws.labels_dir / "cache.sqlite", "concurrency": s.concurrency}
    examples = [{"id": f"faq:{i}", "query": q, "response": a} for i, (q, a) in enumerate(shop.faq)]
    if logs and ws.pairs.exists():
        examples += [{"id": d["id"], "query": d["query"], "response": d.get("response", "")}
                     for _, d in zip(range(5000), read_jsonl(ws.pairs))]
    kw["examples"] = examples
    if s.budget is not None:
        kw["budget"] = s.budget
    teacher = default_teacher(shop=ws.shop, workspace=ws, name=s.teacher, **kw)
    if teacher is None:
        raise ConfigError("--teacher none: onboarding needs a teacher to answer the questions (reference or openai)")
    return teacher


def _stage_labels(ws: Workspace, kb: Any, items: list[Item], teacher: Any, s: OnboardSettings,
                  echo: Callable[[str], None], progress: bool) -> dict[str, Any]:
    """Ask the teacher, one depth of conversation at a time (a follow-up needs the answer to
    the turn before it), each request carrying the shop knowledge retrieval finds for it."""
    from endcloud.cloud.distill import DistillSummary, adistill
    from endcloud.cloud.teacher import run_sync
    from endcloud.kb.prompt import knowledge_text, retrieve
    from endcloud.records import Pair, Turn
    from endcloud.scoring.facts import fact_correct

    answers: dict[str, str] = {}
    total = DistillSummary()
    depth = max(len(it.turns) if it.context is None else 1 for it in items)
    with _bar(progress, "labels", sum(len(it.turns) if it.context is None else 1 for it in items)) as (bar, task):
        for d in range(1, depth + 1):
            pairs = []
            for it in items:
                n = 1 if it.context is not None else len(it.turns)
                if d > n:
                    continue
                if it.context is not None:
                    conv = it.conversation({})
                else:
                    sub = Item(it.id, it.turns[:d], it.kind, it.lang, [], False)
                    conv = sub.conversation({sub.prefix_id(k): answers.get(it.prefix_id(k), "") for k in range(1, d)})
                if conv is None or any(m["role"] == "assistant" and not m["content"] for m in conv):
                    continue  # an earlier turn went unanswered
                knowledge = knowledge_text(retrieve(kb, conv))
                ctx = ([Turn("system", knowledge)] if knowledge else []) + [Turn(m["role"], m["content"]) for m in conv[:-1]]
                pairs.append(Pair(id=it.prefix_id(d if it.context is None else 1), source="onboard", session=it.id,
                                  lang=it.lang, context=ctx, query=conv[-1]["content"], response=""))
            labels, summary = run_sync(lambda: adistill(pairs, teacher, concurrency=s.concurrency,
                                                        on_label=lambda _p, _l: bar.advance(task)))
            answers.update({lab.id: lab.label for lab in labels if lab.label.strip()})
            for k in ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "cost", "retries", "seconds"):
                setattr(total, k, getattr(total, k) + getattr(summary, k))
            total.total += summary.total
            total.labelled += summary.labelled
            total.failures += summary.failures
            if summary.stopped:
                total.stopped = summary.stopped
                break
    rows = []
    for it in items:
        conv = it.conversation(answers)
        if conv is None or it.id not in answers:
            continue
        rows.append({"id": it.id, "kind": it.kind, "heldout": it.heldout, "messages": conv, "label": answers[it.id]})
    path = ws.root / "onboard" / "labels.jsonl"
    write_jsonl_atomic(path, rows)
    for line in total.lines():
        echo("    " + line)
    if total.stopped:
        raise BudgetExceeded(f"{len(rows)} of {len(items)} questions answered (every answer is cached in "
                             f"{ws.labels_dir / 'cache.sqlite'}); {total.stopped}")
    _write_shop_labels(ws, items, rows)
    by_id = {it.id: it for it in items}
    judged = [(r, by_id[r["id"]]) for r in rows if r["heldout"] and by_id[r["id"]].expect]
    teacher_facts = (sum(fact_correct(r["label"], it.expect) for r, it in judged) / len(judged)) if judged else None
    return {"teacher": teacher.name, "answered": len(rows), "questions": len(items), **total.to_json(),
            "teacher_heldout": {"n": len(judged), "facts": None if teacher_facts is None else round(teacher_facts, 4)},
            "hash": _file_hash(path)}


def _write_shop_labels(ws: Workspace, items: list[Item], rows: list[dict[str, Any]]) -> None:
    """The training answers as the workspace's labels (the Table II examples of later live
    calls, the online loop's replay) and the held-out ones as its eval pairs (the online
    loop's gate judges on their facts). Held-out answers never go into the labels file."""
    from endcloud.records import Label, Pair, Turn

    by_id = {it.id: it for it in items}

    def context(r: dict[str, Any]) -> list[Turn]:
        return [Turn(m["role"], m["content"]) for m in r["messages"][:-1]]

    write_jsonl_atomic(ws.labels, (Label(id=r["id"], query=r["messages"][-1]["content"], context=context(r),
                                         label=r["label"], teacher="onboard").to_json() for r in rows if not r["heldout"]))
    if any(it.context is not None for it in items):
        return  # corpus prepare wrote the logs' own eval pairs
    evals = [Pair(id=r["id"], source="onboard", session=r["id"], lang=by_id[r["id"]].lang, context=context(r),
                  query=r["messages"][-1]["content"], response=r["label"], facts=by_id[r["id"]].expect or None,
                  intent=by_id[r["id"]].kind) for r in rows if r["heldout"]]
    write_jsonl_atomic(ws.eval_pairs, (p.to_json() for p in evals))
    stale = ws.root / "evolve" / "heldout.jsonl"  # the online loop's frozen copy of the old eval pairs
    if stale.exists():
        stale.unlink()


def _resolve_base(ws: Workspace, s: OnboardSettings) -> tuple[Path, bool]:
    """(base folder, whether its chat template renders a late system message); links the
    base into WORKSPACE/base when the workspace has none, so `endcloud serve` finds it."""
    from endcloud.end.base import load_tokenizer, renders_late_system
    from endcloud.end.reader import reader_base

    if s.base is not None:
        base = ws.find_base(s.base).resolve()
        if ws.base.exists() and not ws.base.is_symlink() and ws.base.resolve() != base:
            raise ConfigError(f"--base {str(s.base)!r}: {ws.base} already holds another model, which `endcloud serve` "
                              "would serve instead; drop --base to train on it, or use another workspace")
        if ws.base.is_symlink() and ws.base.resolve() != base:
            ws.base.unlink()  # a link an earlier onboarding made: follow the new --base
    elif (ws.base / "config.json").exists():
        base = ws.base
    else:
        found = reader_base()
        if found is None:
            raise ConfigError(NO_BASE.format(ws=ws.root))
        base = Path(found).resolve()
    if not (ws.base / "config.json").exists():
        if ws.base.is_symlink() or ws.base.exists():
            _remove(ws.base)
        try:
            os.symlink(base, ws.base, target_is_directory=True)
        except OSError:  # no symlinks here (some filesystems): a copy serves as well
            shutil.copytree(base, ws.base)
    return base, renders_late_system(load_tokenizer(base))


def _stage_train(ws: Workspace, kb: Any, items: list[Item], labels: dict[str, dict[str, Any]], base: Path, late: bool,
                 s: OnboardSettings, key: str, progress: bool) -> dict[str, Any]:
    from endcloud.end.data import Example
    from endcloud.end.train import train
    from endcloud.kb.prompt import ground

    def example(it: Item) -> Example | None:
        r = labels.get(it.id)
        if r is None:
            return None
        return Example(messages=ground(r["messages"], kb, late=late), response=r["label"], id=it.id, source="distilled")

    train_ex = [e for e in (example(it) for it in items if not it.heldout) if e is not None]
    held_ex = [e for e in (example(it) for it in items if it.heldout) if e is not None]
    if not train_ex:
        raise DataError("no answered training questions; see the labels stage above")
    out = ws.root / "onboard" / "runs" / key[:12]
    res = train(base, train_ex, out, method=s.method, steps=s.steps, lr=s.lr, batch_size=s.batch_size,
                **({"target_modules": s.target_modules} if s.target_modules else {}),
                eval_examples=held_ex[:64], seed=s.seed, progress=progress, resume=True,
                save_every=max(25, s.steps // 4), extra_record={"onboard": {"key": key}})
    k = max(1, len(res.losses) // 10)
    return {"adapter_dir": str(res.adapter_dir), "method": res.method, "steps": res.steps, "examples": len(train_ex),
            "loss_first": round(sum(res.losses[:k]) / k, 4), "loss_last": round(sum(res.losses[-k:]) / k, 4),
            "eval_loss_before": res.eval_loss_before, "eval_loss": res.eval_loss, "tokens": res.tokens,
            "seconds": round(res.seconds, 1)}


def _evaluate(engine: str, base: Path, adapter: str | None, kb: Any, heldout: list[Item],
              labels: dict[str, dict[str, Any]], s: OnboardSettings, what: str, progress: bool) -> dict[str, Any]:
    """Fact accuracy of the end model (base, or base + adapter) on the held-out questions, each
    asked as serving asks it: the conversation so far, grounded by `kb.prompt.ground`."""
    from endcloud.kb.prompt import ground
    from endcloud.runtime.engines import load_end_model
    from endcloud.scoring.facts import fact_correct

    if not heldout:
        return {"n": 0, "facts": None, "by_kind": {}, "samples": []}
    model = load_end_model(engine, base_dir=str(base), adapter_dir=adapter)
    late = bool(model.late_system()) if hasattr(model, "late_system") else False
    convs = [ground(labels[it.id]["messages"], kb, late=late) for it in heldout]
    replies: list[str] = []
    batch = 8
    with _bar(progress, f"evaluate {what}", len(convs)) as (bar, task):
        for i in range(0, len(convs), batch):
            gens = model.generate(convs[i:i + batch], max_new_tokens=s.max_new_tokens, temperature=0.0, seed=s.seed)
            replies += [g.text for g in gens]
            bar.advance(task, len(gens))
    right = [fact_correct(r, it.expect) for r, it in zip(replies, heldout)]
    by_kind: dict[str, list[float]] = {}
    for ok, it in zip(right, heldout):
        by_kind.setdefault(it.kind, []).append(ok)
    samples = [{"question": it.turns[-1], "expect": it.expect, "reply": r, "right": bool(ok)}
               for it, r, ok in list(zip(heldout, replies, right))[:6]]
    return {"n": len(right), "facts": round(sum(right) / len(right), 4),
            "by_kind": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_kind.items())}, "samples": samples}


def _stage_publish(ws: Workspace, report: dict[str, Any], s: OnboardSettings) -> dict[str, Any]:
    reg = ws.adapter_registry()
    ev = report["evaluate"]
    facts = ev["adapter"]["facts"]
    if facts is None:
        passed = s.min_facts <= 0
        reason = None if passed else "no held-out question has facts to judge; the quality bar cannot be checked"
    else:
        passed = facts >= s.min_facts
        reason = None if passed else (f"held-out fact accuracy {facts:.1%} < --min-facts {s.min_facts:.0%} "
                                      f"(base before: {_pct(ev['base']['facts'])}, teacher: "
                                      f"{_pct((ev.get('teacher') or {}).get('facts'))})")
    parent = reg.active_version(s.adapter) if s.adapter in reg.names() else None
    tr = report["train"]
    manifest = {
        "method": tr["method"],
        "metrics": {"heldout_facts": facts, "heldout_n": ev["adapter"]["n"], "base_facts": ev["base"]["facts"],
                    "loss_first": tr["loss_first"], "loss_last": tr["loss_last"], "eval_loss": tr["eval_loss"]},
        "onboard": {"pack_hash": report["shop"]["hash"], "questions": report["questions"]["total"],
                    "teacher": report["labels"]["teacher"], "steps": tr["steps"]},
        "quality_bar": {"min_facts": s.min_facts, "passed": passed, "reason": reason},
    }
    version = reg.publish(s.adapter, tr["adapter_dir"], manifest=manifest, parent=parent)
    if passed:
        reg.activate(s.adapter, version)
    else:
        reg.mark(s.adapter, version, "rejected")
    return {"adapter": f"{s.adapter}/{version}", "active": passed, "passed": passed, "reason": reason}


# ---- report -------------------------------------------------------------------------------
def summary_lines(report: dict[str, Any]) -> list[str]:
    sh, q, lab, ev, pub = (report["shop"], report["questions"], report["labels"], report["evaluate"], report["publish"])
    tr = report["train"]
    lines = [
        f"shop      {sh['name']} ({sh['language']}): {sh['products']} products, {sh['faq']} FAQ, {sh['policies']} policy sections",
        f"questions {q['total']} from the {q['source']} ({', '.join(q['langs'])}); {q['heldout']} held out, "
        f"{q['judged_heldout']} of them with facts to judge",
        f"labels    {lab['answered']} answered by the {lab['teacher']} teacher: {lab['calls']} calls, "
        f"{lab['cache_hits']} cache hits, ${lab['cost']:.4f}",
        f"train     {tr['method']} {tr['steps']} steps on {tr['examples']} examples: loss {tr['loss_first']} → {tr['loss_last']}",
        f"held-out  facts right: base {_pct(ev['base']['facts'])} → adapter {_pct(ev['adapter']['facts'])} "
        f"(teacher {_pct((ev.get('teacher') or {}).get('facts'))}; n={ev['adapter']['n']})",
        f"adapter   {pub['adapter']} " + ("active" if pub["active"] else f"saved, NOT activated: {pub['reason']}"),
        f"stages    ran: {', '.join(report['stages']['ran']) or 'none'}; up to date: "
        f"{', '.join(report['stages']['skipped']) or 'none'}",
    ]
    if pub["active"]:
        lines.append(f"serve it: {report['serve']}")
    return lines


def _write_report(ws: Workspace, report: dict[str, Any]) -> None:
    write_json_atomic(ws.reports / "onboard.json", report)
    write_text_atomic(ws.reports / "onboard.txt", "\n".join(summary_lines(report)) + "\n")


# ---- helpers ------------------------------------------------------------------------------
class _NoBar:
    def advance(self, *_a: Any, **_k: Any) -> None:
        pass


class _bar:
    """A rich progress bar on stderr (or nothing): `with _bar(on, "labels", n) as (bar, task)`."""

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total
        self.prog: Any = None

    def __enter__(self):
        if not self.enabled:
            return _NoBar(), None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.prog = Progress(TextColumn(f"[bold]{self.label}[/bold]"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self.prog.start()
        return self.prog, self.prog.add_task(self.label, total=max(1, self.total))

    def __exit__(self, *exc: Any) -> None:
        if self.prog is not None:
            self.prog.stop()


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _file_hash(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unchanged(path: Path, digest: str) -> bool:
    """Whether a stage's output file is still the one it wrote (not deleted or edited since)."""
    return path.exists() and _file_hash(path) == digest


def _dir_stamp(path: Path) -> list[Any]:
    """What identifies a model folder cheaply: its config and its files' names, sizes and times."""
    files = sorted(p for p in path.iterdir() if p.is_file())
    return [str(path), _file_hash(path / "config.json"),
            [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]]


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


__all__ = ["OnboardResult", "OnboardSettings", "onboard", "pack_hash", "summary_lines"]
