"""`endcloud demo`: the whole end-cloud loop, offline, in one command.

    shop ─► corpus ─► distil (reference teacher) ─► pretrain base ─► matcher
         ─► fine-tune lora | prefix | ptuning-v2 ─► evaluate (Table VI, Fig. 3)
         ─► serve (real uvicorn on 127.0.0.1) ─► simulated customers (some unhappy)
         ─► evolve rounds (pseudo-labels → train → gate → hot-swap) ─► customers again ─► report

With `ENDCLOUD_CLOUD_*` set, the teacher is the real cloud (behind the privacy gate);
otherwise the reference teacher, which answers from the shop's own knowledge. Every stage
writes into the workspace (see endcloud.config), so each can be re-run or inspected alone,
and `endcloud serve` afterwards serves what the demo built.
"""

from __future__ import annotations

import json
import os
import random
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from endcloud.config import DEFAULT_ADAPTER, Workspace
from endcloud.fileio import read_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic
from endcloud.loopback import LoopbackServer

TUNERS_SHOWN = ("prefix", "ptuning-v2", "lora")


@dataclass
class DemoConfig:
    """Sizes of each stage. `full` fits ~10 minutes on 2 cores; `quick` is for tests."""

    lang: str = "zh"
    seed: int = 0
    sessions: int = 1500
    products: int = 30
    distill_pairs: int = 800
    # The base: the shipped shop reader (endcloud.end.reader) when this install has one, else a
    # small Qwen2 pretrained from scratch on the shop's text. Every budget is in steps or epochs,
    # never seconds: the same seed gives the same models on a quiet and on a loaded machine.
    base: str = "reader"  # "reader" | "scratch"
    pretrain: dict[str, Any] = field(default_factory=lambda: {"steps": 300})
    # Table IV's lr 5e-5 / batch 1 / 128 virtual tokens are for a 6B model and 30k steps; a
    # 2M-parameter base fine-tuned for ~100 steps needs larger steps and fewer virtual tokens.
    tuner_steps: dict[str, int] = field(default_factory=lambda: {"lora": 100, "prefix": 120, "ptuning-v2": 120})
    tuner_lr: dict[str, float] = field(default_factory=lambda: {"lora": 2e-3, "prefix": 1e-2, "ptuning-v2": 3e-2})
    tuner_extra: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "prefix": {"num_virtual_tokens": 32}, "ptuning-v2": {"num_virtual_tokens": 32}})
    train_batch: int = 8
    matcher_epochs: int = 3
    # Quality bars: a tuned end model under these (held-out fact accuracy of its own replies,
    # with the knowledge in its prompt) is reported as failed and the demo exits non-zero.
    min_end_facts: float = 0.3
    knowledge_snippets: int = 3
    # The second, unseen shop: onboarded from its pack alone (no chat logs) like a real shop.
    second_shop: bool = True
    onboard_steps: int = 150
    onboard_questions: int = 240
    eval_inputs: int = 24
    customers: int = 48
    unhappy_share: float = 0.5  # customers who say so when the reply misses the facts
    evolve_rounds: int = 3
    evolve_min_labels: int = 4
    evolve_steps: int = 120
    max_new_tokens: int = 48

    @classmethod
    def quick(cls, **kw: Any) -> "DemoConfig":
        base = dict(sessions=300, products=12, distill_pairs=150,
                    pretrain={"steps": 40, "hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 128,
                              "vocab_size": 1200, "seq_len": 128},
                    tuner_steps={"lora": 30, "prefix": 15, "ptuning-v2": 15}, matcher_epochs=1, eval_inputs=8, min_end_facts=0.0,
                    customers=12, evolve_rounds=1, evolve_min_labels=2, evolve_steps=30, max_new_tokens=24,
                    onboard_steps=20, onboard_questions=60)
        base.update(kw)
        return cls(**base)


class Stage:
    """Prints one line per stage with its wall time, and keeps the times for the report."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo, self.times = echo, {}

    def __call__(self, name: str):
        stage = self

        class _Ctx:
            def __enter__(self_inner):
                self_inner.t0 = time.perf_counter()
                stage.echo(f"▶ {name} …")

            def __exit__(self_inner, *exc):
                dt = time.perf_counter() - self_inner.t0
                stage.times[name] = round(dt, 1)
                if exc[0] is None:
                    stage.echo(f"  ✓ {name} ({dt:.1f} s)")

        return _Ctx()


def run_demo(workspace: str | os.PathLike[str] | None = None, *, config: DemoConfig | None = None,
             echo: Callable[[str], None] = print, fresh: bool = False) -> dict[str, Any]:
    """Run every stage; return (and write) the report dict."""
    import shutil

    cfg = config or DemoConfig()
    _quiet_libraries()
    ws = Workspace.resolve(workspace)
    if fresh and ws.root.exists():
        shutil.rmtree(ws.root)
    ws.ensure()
    stage = Stage(echo)
    t_start = time.perf_counter()
    report: dict[str, Any] = {"workspace": str(ws.root), "config": asdict(cfg)}

    with stage("shop: generate the synthetic shop"):
        report["shop"] = _shop(ws, cfg)
    with stage("corpus: read, clean, redact, pairs"):
        report["corpus"] = _corpus(ws)
    from endcloud.cloud import default_teacher

    teacher = default_teacher(shop=ws.shop, workspace=ws)  # the real cloud when ENDCLOUD_CLOUD_* is set
    report["teacher"] = teacher.name
    with stage(f"distil: label queries with the {teacher.name} teacher"):
        report["distill"] = _distill(ws, cfg, teacher)
    with stage(_base_title(cfg)):
        report["pretrain"] = _base(ws, cfg)
    with stage("matcher: train the shop's query→reply matcher"):
        report["matcher"] = _matcher(ws, cfg)
    with stage("fine-tune: prefix, ptuning-v2, lora (Table IV methods)"):
        report["tuners"] = _tuners(ws, cfg)
    with stage("quality bar: the tuned end model's facts on held-out questions"):
        report["quality"] = _quality(ws, cfg, teacher)
    with stage("evaluate: Table VI / Fig. 3 on the paper's probes and held-out questions"):
        report["eval"] = _evaluate(ws, cfg, teacher)
    with stage("serve + customers + evolve: the online loop"):
        report["online"] = _online(ws, cfg, teacher, echo)
    if cfg.second_shop:
        with stage("second shop: onboard a pack never seen in training (endcloud shop onboard)"):
            ws2, report["second_shop"] = _second_shop(ws, cfg, echo)
        with stage("second shop: serve + customers + evolve"):
            teacher2 = default_teacher(shop=ws2.shop, workspace=ws2)
            qs = _pack_questions(ws.root / "second-shop" / "pack", cfg.customers, cfg.seed)
            report["second_shop"]["online"] = _online(ws2, cfg, teacher2, echo, questions=qs)
    report["stage_seconds"] = stage.times
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    _write_report(ws, report)
    echo(_summary(report))
    return report


def _quiet_libraries() -> None:
    """The demo prints one line per stage; library progress bars and deprecation chatter
    would bury them."""
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


# ---- stages ------------------------------------------------------------------------------------

def _shop(ws: Workspace, cfg: DemoConfig) -> dict[str, Any]:
    from endcloud.corpus.shopworld import generate_shop

    s = generate_shop(ws.shop, lang=cfg.lang, sessions=cfg.sessions, products=cfg.products, seed=cfg.seed, force=True)
    _declare_public_ids(ws)
    return _jsonable(s)


def _declare_public_ids(ws: Workspace) -> None:
    """The shop's SKUs are on its own pages: not personal data, never redacted."""
    from endcloud.kb import ShopPack
    from endcloud.privacy import use_public_values

    use_public_values(p.sku for p in ShopPack.load(ws.shop).products)


def _corpus(ws: Workspace) -> dict[str, Any]:
    from endcloud.corpus.pipeline import prepare

    rep = prepare([ws.shop / "chats" / "chats.jsonl"], ws.corpus, workers=2, eval_fraction=0.1)
    r = _jsonable(rep)
    keep = {k: r[k] for k in ("pairs", "eval_pairs", "sessions", "utterances_in", "utterances_out") if isinstance(r, dict) and k in r}
    return keep or {"report": str(ws.corpus / "report.json")}


def _distill(ws: Workspace, cfg: DemoConfig, teacher: Any) -> dict[str, Any]:
    from endcloud.cloud.distill import distill
    from endcloud.records import Pair

    pairs = [Pair.from_json(d) for d in read_jsonl(ws.pairs)]
    random.Random(cfg.seed).shuffle(pairs)
    labels, summary = distill(pairs[: cfg.distill_pairs], teacher)
    write_jsonl_atomic(ws.labels, (lab.to_json() for lab in labels))
    return summary.to_json()


def _use_reader(cfg: DemoConfig) -> bool:
    from endcloud.end.reader import reader_base

    return cfg.base == "reader" and reader_base() is not None


def _base_title(cfg: DemoConfig) -> str:
    if _use_reader(cfg):
        return "base: the shipped shop reader (checksum verified)"
    return "pretrain: tokenizer + small Qwen2 base from scratch"


def _base(ws: Workspace, cfg: DemoConfig) -> dict[str, Any]:
    """The workspace's base/: a copy of the shipped shop reader, or one pretrained here."""
    import shutil

    if _use_reader(cfg):
        from endcloud.end.reader import reader_base, verify_reader

        src = reader_base()
        record = verify_reader(src)
        if ws.base.exists():
            shutil.rmtree(ws.base)
        shutil.copytree(src, ws.base)
        return {"base": "shop-reader", "recipe": record.get("fingerprint"), "sha256": record.get("sha256"),
                "heldout": {k: record.get("heldout", {}).get(k) for k in ("facts_right", "n_facts", "by_kind")}}
    from endcloud.end.pretrain import pretrain

    inputs = [ws.shop / "chats" / "chats.jsonl", ws.labels]
    res = pretrain([p for p in inputs if p.exists()], ws.base, progress=False, seed=cfg.seed, **cfg.pretrain)
    return _jsonable(res)


def _grounder(ws: Workspace):
    """Conversation -> messages with the shop knowledge, as serving builds them (endcloud.kb.prompt)."""
    from endcloud.end.base import load_tokenizer, renders_late_system
    from endcloud.kb import KnowledgeBase, ShopPack
    from endcloud.kb.prompt import ground

    kb = KnowledgeBase(ShopPack.load(ws.shop))
    late = renders_late_system(load_tokenizer(ws.base))
    return kb, late, (lambda messages: ground(messages, kb, late=late))


def _matcher(ws: Workspace, cfg: DemoConfig) -> dict[str, Any]:
    from endcloud.scoring import train_matcher

    rep = train_matcher(ws.pairs, ws.matcher, epochs=cfg.matcher_epochs, seed=cfg.seed)
    return rep.to_json()


def _examples(ws: Workspace):
    from endcloud.end.data import Example, load_labels, load_pairs

    natural = [Example.from_pair(p) for p in load_pairs(ws.pairs)]
    distilled = [Example.from_label(lab) for lab in load_labels(ws.labels)] if ws.labels.exists() else []
    return natural, distilled


def _tuners(ws: Workspace, cfg: DemoConfig) -> dict[str, Any]:
    from endcloud.end.adapters import AdapterRegistry
    from endcloud.end.train import train

    from endcloud.end.data import ground_examples

    natural, distilled = _examples(ws)
    # The cloud's labels teach the shop's facts in the cloud's style; the natural replies
    # teach the shop's voice. Distilled first (the paper's point), natural as the rest. Every
    # example carries the knowledge retrieval finds for its question, placed as serving
    # places it: the tuned model reads the shop's facts instead of memorising them.
    rng = random.Random(cfg.seed)
    examples = distilled + rng.sample(natural, min(len(natural), len(distilled) // 3))
    held = rng.sample(natural, min(64, len(natural)))
    kb, late, _ = _grounder(ws)
    examples, held = ground_examples(examples, kb, late=late), ground_examples(held, kb, late=late)
    reg = AdapterRegistry(ws.adapters)
    out: dict[str, Any] = {}
    for method in TUNERS_SHOWN:
        res = train(ws.base, examples, ws.root / "runs" / method, method=method, steps=cfg.tuner_steps[method],
                    lr=cfg.tuner_lr[method], batch_size=cfg.train_batch, eval_examples=held, progress=False,
                    resume=False, seed=cfg.seed, **cfg.tuner_extra.get(method, {}))
        name = DEFAULT_ADAPTER if method == "lora" else f"{DEFAULT_ADAPTER}-{method}"
        version = reg.publish(name, res.adapter_dir, manifest={"method": method, "metrics": {
            "eval_loss": res.eval_loss, "eval_loss_before": res.eval_loss_before}})
        reg.activate(name, version)
        k = max(1, len(res.losses) // 10)  # single steps are noisy at batch 8: average a tenth at each end
        out[method] = {"adapter": f"{name}/{version}", "steps": res.steps, "loss_first": sum(res.losses[:k]) / k,
                       "loss_last": sum(res.losses[-k:]) / k, "eval_loss_before": res.eval_loss_before, "eval_loss": res.eval_loss,
                       "tokens_per_s": round(res.tokens / max(res.seconds, 1e-9), 1), "seconds": round(res.seconds, 1)}
    return out


def _evaluate(ws: Workspace, cfg: DemoConfig, teacher: Any) -> dict[str, Any]:
    from endcloud.end.adapters import AdapterRegistry
    from endcloud.runtime.model import EndModel
    from endcloud.scoring import load_inputs, paper_probes, run_eval

    reg = AdapterRegistry(ws.adapters)
    models = {"original": EndModel.load(ws.base)}
    for method in TUNERS_SHOWN:
        name = DEFAULT_ADAPTER if method == "lora" else f"{DEFAULT_ADAPTER}-{method}"
        models[method] = EndModel.load(ws.base, reg.active(name))
    inputs = list(paper_probes(cfg.lang))
    eval_file = ws.shop / "chats" / "eval.jsonl"
    if eval_file.exists():
        more = load_inputs(eval_file)
        random.Random(cfg.seed).shuffle(more)
        inputs += more[: cfg.eval_inputs]
    rep = run_eval(inputs, models, teacher, out_dir=ws.reports / "eval", workspace=ws, max_new_tokens=cfg.max_new_tokens,
                   title=f"End model vs tuners on the synthetic shop ({cfg.lang})", ground=_grounder(ws)[2])
    return _jsonable(getattr(rep, "summary", None) or rep)


class DemoQualityError(RuntimeError):
    """A model ended under its quality bar: the demo stops and says why (exit code 3)."""


def _quality(ws: Workspace, cfg: DemoConfig, teacher: Any) -> dict[str, Any]:
    """The tuned end model's own replies, with knowledge, on held-out questions: fact accuracy
    against the bar. A base or adapter that learned nothing must not reach the online loop."""
    from endcloud.end.adapters import AdapterRegistry
    from endcloud.runtime.model import EndModel
    from endcloud.scoring import fact_accuracy

    rows = [d for d in read_jsonl(ws.shop / "chats" / "eval.jsonl") if d.get("facts")]
    rows.sort(key=lambda d: str(d.get("id", "")))
    rng = random.Random(f"{cfg.seed}-quality")
    rng.shuffle(rows)
    rows = rows[: max(cfg.customers, 16)]
    ground = _grounder(ws)[2]
    model = EndModel.load(ws.base, AdapterRegistry(ws.adapters).active(DEFAULT_ADAPTER))
    convs = [ground([{"role": "user", "content": d["query"]}]) for d in rows]
    texts = [g.text for g in model.generate(convs, max_new_tokens=cfg.max_new_tokens, temperature=0.0)]
    acc = fact_accuracy(texts, [d["facts"] for d in rows])
    score = float(acc[acc == acc].mean()) if len(acc) else 0.0
    out = {"end_facts_heldout": round(score, 4), "n": len(rows), "bar": cfg.min_end_facts,
           "passed": score >= cfg.min_end_facts}
    if not out["passed"]:
        raise DemoQualityError(f"the tuned end model states the right fact in {score:.0%} of {len(rows)} held-out questions, "
                               f"under the bar of {cfg.min_end_facts:.0%}: it learned too little to serve customers "
                               f"(see {ws.root / 'runs' / 'lora'} for its loss curve)")
    return out


def _customers(url: str, questions: list[dict[str, Any]], cfg: DemoConfig, tag: str, *, store: Any = None,
               secret: str | None = None, kb: Any = None, api_key: str | None = None) -> dict[str, Any]:
    """Simulated customers: ask, read the reply, and (some) say when it misses the facts."""
    import concurrent.futures as cf

    import httpx

    from endcloud.serve.auth import sign_customer_token

    from endcloud.scoring import fact_correct

    def one(i_q):
        i, q = i_q
        customer = f"{tag}-cust{i}"
        # the shop's own chat widget calls with its API key; its visitors are labelled by `user`
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if store is not None and secret and kb is not None:
            owned = kb.orders_in(q["query"])
            if owned:
                # a customer asking about an order is its owner, logged in on the shop's site: the
                # site signs their token, the shop's order system put the order on their profile
                store.set_profile(customer, orders=[{"order_id": oid, **{k: v for k, v in kb.order(oid).items()
                                                                         if k != "order_id"}} for oid in owned])
                headers["Authorization"] = f"Bearer {sign_customer_token(secret, customer, ttl_s=3600)}"
        # The end model samples (the paper's temperature 0.6): an unseeded reply draws from the
        # server's own random stream, so the report would differ between two same-seed runs.
        # Each customer's request carries its own seed, as a client that wants repeatable
        # replies does through the API's `seed`.
        seed = zlib.crc32(f"{cfg.seed}-{tag}-{i}".encode())
        with httpx.Client(base_url=url, timeout=120, headers=headers) as c:
            r = c.post("/v1/chat/completions", json={"model": "endcloud", "user": customer, "seed": seed,
                                                     "messages": [{"role": "user", "content": q["query"]}]})
            r.raise_for_status()
            body = r.json()
            ext = body.get("endcloud", {})
            text = body["choices"][0]["message"]["content"]
            right = fact_correct(text, q.get("facts")) if q.get("facts") else float("nan")
            feedback = None
            rng = random.Random(f"{cfg.seed}-{tag}-{i}")  # per customer: the same choice in any order
            if right == right and rng.random() < cfg.unhappy_share:  # not NaN: the customer can tell
                feedback = "up" if right >= 1.0 else "down"
                c.post("/v1/feedback", json={"message_id": ext.get("message_id"), "rating": feedback}).raise_for_status()
        draft_right = float("nan")
        if store is not None and q.get("facts"):
            # the end model's own draft, also when the cloud took over: the honest measure of the end model
            row = store.reply(ext.get("message_id"))
            draft_right = fact_correct((row or {}).get("end_text") or "", q.get("facts"))
        return {"by": ext.get("answered_by"), "right": right, "feedback": feedback, "draft_right": draft_right,
                "final": (ext.get("scores") or {}).get("final"), "match": (ext.get("scores") or {}).get("match")}

    # One customer at a time: a batch's composition depends on timing, and batched float
    # arithmetic can flip a greedy token, so concurrent customers would make the report depend
    # on the machine's load (serving under concurrency is measured by bench/bench_serve.py).
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        rows = list(pool.map(one, enumerate(questions)))
    n = len(rows)
    rights = [r["right"] for r in rows if r["right"] == r["right"]]
    drafts = [r["draft_right"] for r in rows if r["draft_right"] == r["draft_right"]]
    matches = [r["match"] for r in rows if r["match"] is not None]
    return {"turns": n, "takeover_rate": sum(r["by"] == "cloud" for r in rows) / n if n else None,
            "end_answered": sum(r["by"] == "end" for r in rows),
            "fact_accuracy_served": sum(rights) / len(rights) if rights else None,
            "fact_accuracy_end_draft": sum(drafts) / len(drafts) if drafts else None,
            "mean_match": sum(matches) / len(matches) if matches else None,
            "cloud_calls": sum(r["by"] == "cloud" for r in rows),
            "downvotes": sum(r["feedback"] == "down" for r in rows), "upvotes": sum(r["feedback"] == "up" for r in rows)}


def _second_shop(ws: Workspace, cfg: DemoConfig, echo: Callable[[str], None]) -> tuple[Workspace, dict[str, Any]]:
    """Onboard a pack the demo never trained on (another seed, another domain) into its own
    workspace, as a shop would with `endcloud shop onboard PACK -w WS`."""
    from endcloud.corpus.shopworld.varied import random_pack
    from endcloud.onboard import OnboardSettings, onboard

    pack_dir = ws.root / "second-shop" / "pack"
    shop = random_pack(pack_dir, seed=cfg.seed + 7919, lang=cfg.lang)
    ws2 = Workspace.resolve(ws.root / "second-shop" / "workspace")
    result = onboard(pack_dir, ws2, settings=OnboardSettings(seed=cfg.seed, steps=cfg.onboard_steps,
                                                             questions=cfg.onboard_questions,
                                                             min_facts=cfg.min_end_facts),
                     echo=lambda m: None)
    ev = result.report.get("evaluate", {})
    out = {"domain": shop.domain, "name": shop.name, "products": len(shop.skus), "passed": result.passed,
           "reason": result.reason, "heldout_facts_base": (ev.get("base") or {}).get("facts"),
           "heldout_facts_adapter": (ev.get("adapter") or {}).get("facts"), "workspace": str(ws2.root)}
    echo(f"  onboarded {shop.name!r} ({shop.domain}, {len(shop.skus)} products): held-out facts right "
         f"{_pct(out['heldout_facts_base'])} (reader) → {_pct(out['heldout_facts_adapter'])} (tuned)")
    if not result.passed:
        raise DemoQualityError(f"the second shop's onboarding ended under its bar: {result.reason}")
    return ws2, out


def _pack_questions(pack_dir: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """The generated pack's own single-turn customer questions with the facts a right reply states."""
    rows = [{"id": f"q{i}", "query": q["turns"][-1], "facts": q["expect"]}
            for i, q in enumerate(read_jsonl(pack_dir / "questions.jsonl")) if len(q.get("turns") or []) == 1 and q.get("expect")]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def _online(ws: Workspace, cfg: DemoConfig, teacher: Any, echo: Callable[[str], None],
            questions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from endcloud.compose import build_app_from_workspace, evolver_for_app
    from endcloud.evolve import EvolveSettings, GateSettings

    if questions is None:
        questions = [d for d in read_jsonl(ws.shop / "chats" / "eval.jsonl") if d.get("facts")]
        questions.sort(key=lambda d: str(d.get("id", "")))
        random.Random(cfg.seed).shuffle(questions)
        questions = questions[: cfg.customers]
    import secrets

    secret = secrets.token_urlsafe(24)  # this run's customer-token key (the shop's site would hold it)
    api_key = secrets.token_urlsafe(24)  # and the key of the shop's own chat widget
    kb = _grounder(ws)[0]
    app = build_app_from_workspace(ws, teacher=teacher, knowledge_snippets=cfg.knowledge_snippets,
                                   max_new_tokens=cfg.max_new_tokens, customer_secret=secret, api_keys=(api_key,))
    out: dict[str, Any] = {"rounds": []}
    with LoopbackServer(app, name="demo-server", start_timeout_s=120, stop_timeout_s=15) as srv:
        url = srv.url
        out["url"] = url
        store = app.state.store
        out["before"] = _customers(url, questions, cfg, "before", store=store, secret=secret, kb=kb, api_key=api_key)
        echo(f"  customers before evolution: takeover {out['before']['takeover_rate']:.0%}, facts right "
             f"{_pct(out['before']['fact_accuracy_served'])} served / {_pct(out['before']['fact_accuracy_end_draft'])} end drafts")

        settings = EvolveSettings(min_labels=cfg.evolve_min_labels, min_steps=cfg.evolve_steps,
                                  max_steps=cfg.evolve_steps, label_repeat=3, replay_ratio=0.5,
                                  gate=GateSettings(max_new_tokens=cfg.max_new_tokens, heldout_size=24))
        ev = evolver_for_app(app, ws, settings=settings, background=False)  # promotions hot-swap the running server
        for i in range(cfg.evolve_rounds):
            if i:  # a round consumes the pending labels: new customers bring the next lessons
                _customers(url, questions, cfg, f"round{i}", store=store, secret=secret, kb=kb, api_key=api_key)
            t0 = time.perf_counter()
            tick = ev.tick()
            rnd = tick["round"]
            if rnd is None:
                echo(f"  evolve step {i + 1}: {tick['step']['new_labels']} new labels, no round due")
                continue
            rnd["trigger_to_decision_s"] = round(time.perf_counter() - t0, 1)
            out["rounds"].append(rnd)
            echo(f"  evolve round {i + 1}: {rnd['version']} {'promoted' if rnd['promoted'] else 'rejected'} "
                 f"in {rnd['trigger_to_decision_s']} s ({'; '.join(rnd['gate']['reasons'])})")
        out["after"] = _customers(url, questions, cfg, "after", store=store, secret=secret, kb=kb, api_key=api_key)
        echo(f"  customers after evolution: takeover {out['after']['takeover_rate']:.0%}, facts right "
             f"{_pct(out['after']['fact_accuracy_served'])} served / {_pct(out['after']['fact_accuracy_end_draft'])} end drafts")
        out["labels"] = ev.labels.counts()
    return out


# ---- report ------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _jsonable(x: Any) -> Any:
    if hasattr(x, "to_json"):
        return x.to_json()
    if hasattr(x, "__dataclass_fields__"):
        d = asdict(x)
        return json.loads(json.dumps(d, default=str))
    return json.loads(json.dumps(x, default=str))


def _write_report(ws: Workspace, report: dict[str, Any]) -> None:
    out = ws.reports / "demo"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    online = report.get("online", {})
    b, a = online.get("before", {}), online.get("after", {})
    _plot_before_after(out / "online.png", b, a)
    lines = ["# endcloud demo report", "", f"Workspace: `{report['workspace']}` · teacher: **{report['teacher']}** · "
             f"total {report['total_seconds']} s", "", "## Stages", "", "| stage | seconds |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in report.get("stage_seconds", {}).items()]
    lines += ["", "## Fine-tuning (Table IV methods)", "", "| method | steps | train loss, first → last tenth | held-out loss before → after |",
              "| --- | ---: | --- | --- |"]
    for m, r in report.get("tuners", {}).items():
        lines.append(f"| {m} | {r['steps']} | {r['loss_first']:.3f} → {r['loss_last']:.3f} | "
                     f"{_f(r.get('eval_loss_before'))} → {_f(r.get('eval_loss'))} |")
    lines += ["", "## Evaluation (Table VI / Fig. 3)", "", "See `../eval/table.md` and `../eval/scores.png`.", "",
              "## The online loop", "", "| | before evolution | after evolution |", "| --- | ---: | ---: |",
              f"| cloud takeover rate | {_pct(b.get('takeover_rate'))} | {_pct(a.get('takeover_rate'))} |",
              f"| facts right in served replies | {_pct(b.get('fact_accuracy_served'))} | {_pct(a.get('fact_accuracy_served'))} |",
              f"| facts right in the end model's own drafts | {_pct(b.get('fact_accuracy_end_draft'))} | "
              f"{_pct(a.get('fact_accuracy_end_draft'))} |",
              f"| mean Match(query, reply) | {_f(b.get('mean_match'))} | {_f(a.get('mean_match'))} |",
              f"| downvotes | {b.get('downvotes')} | {a.get('downvotes')} |", "",
              "| round | version | promoted | seconds | gate |", "| --- | --- | --- | ---: | --- |"]
    for i, r in enumerate(online.get("rounds", []), 1):
        lines.append(f"| {i} | {r['version']} | {r['promoted']} | {r.get('trigger_to_decision_s')} | "
                     f"{'; '.join(r['gate']['reasons'])} |")
    lines += ["", "![before and after](online.png)", ""]
    second = report.get("second_shop")
    if second:
        so = second.get("online", {})
        sb, sa = so.get("before", {}), so.get("after", {})
        lines += ["## A second shop, never seen in training", "",
                  f"`{second['name']}` ({second['domain']}, {second['products']} products) onboarded from its pack alone: "
                  f"held-out facts right {_pct(second.get('heldout_facts_base'))} with the shop reader as it ships, "
                  f"{_pct(second.get('heldout_facts_adapter'))} after `endcloud shop onboard`.", "",
                  "| | before evolution | after evolution |", "| --- | ---: | ---: |",
                  f"| facts right in served replies | {_pct(sb.get('fact_accuracy_served'))} | {_pct(sa.get('fact_accuracy_served'))} |",
                  f"| answered by the end model | {_pct(_share(sb))} | {_pct(_share(sa))} |",
                  f"| facts right in the end model's own drafts | {_pct(sb.get('fact_accuracy_end_draft'))} | "
                  f"{_pct(sa.get('fact_accuracy_end_draft'))} |",
                  f"| cloud calls | {sb.get('cloud_calls')} | {sa.get('cloud_calls')} |", ""]
    write_text_atomic(out / "report.md", "\n".join(lines))


def _share(side: dict[str, Any]) -> float | None:
    return side["end_answered"] / side["turns"] if side.get("turns") else None


def _f(x: Any) -> str:
    return "–" if x is None else f"{float(x):.3f}"


def _plot_before_after(path: Path, b: dict[str, Any], a: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("takeover_rate", "cloud takeover"), ("fact_accuracy_served", "facts right (served)"),
            ("fact_accuracy_end_draft", "facts right (end drafts)"), ("mean_match", "mean Match")]
    fig, ax = plt.subplots(figsize=(6, 3))
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], [b.get(k) or 0 for k, _ in keys], width=0.4, label="before evolution")
    ax.bar([x + 0.2 for x in xs], [a.get(k) or 0 for k, _ in keys], width=0.4, label="after evolution")
    ax.set_xticks(list(xs), [t for _, t in keys])
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _second_summary(second: dict[str, Any] | None) -> str:
    if not second:
        return ""
    o = second.get("online", {})
    b, a = o.get("before", {}), o.get("after", {})
    return (f"  second shop ({second['domain']}, unseen): facts right served {_pct(b.get('fact_accuracy_served'))} → "
            f"{_pct(a.get('fact_accuracy_served'))}, answered by the end model {_pct(_share(b))} → {_pct(_share(a))}\n")


def _summary(report: dict[str, Any]) -> str:
    o = report.get("online", {})
    b, a = o.get("before", {}), o.get("after", {})
    return (f"\nendcloud demo done in {report['total_seconds']} s — report: {report['workspace']}/reports/demo/report.md\n"
            f"  cloud takeover {_pct(b.get('takeover_rate'))} → {_pct(a.get('takeover_rate'))}, "
            f"end-model facts right {_pct(b.get('fact_accuracy_end_draft'))} → {_pct(a.get('fact_accuracy_end_draft'))}, "
            f"rounds promoted {sum(r['promoted'] for r in o.get('rounds', []))}/{len(o.get('rounds', []))}\n"
            + _second_summary(report.get("second_shop")) +
            f"  serve it: endcloud serve --workspace {report['workspace']}")
