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
    # The from-scratch base gets a fixed time budget (the LR schedule ends on time) rather than
    # a step count, so the demo stays within minutes on a slow or busy machine.
    pretrain: dict[str, Any] = field(default_factory=lambda: {"steps": 300, "max_seconds": 150.0})
    # Table IV's lr 5e-5 / batch 1 / 128 virtual tokens are for a 6B model and 30k steps; a
    # 2M-parameter base fine-tuned for ~100 steps needs larger steps and fewer virtual tokens.
    tuner_steps: dict[str, int] = field(default_factory=lambda: {"lora": 100, "prefix": 120, "ptuning-v2": 120})
    tuner_lr: dict[str, float] = field(default_factory=lambda: {"lora": 2e-3, "prefix": 1e-2, "ptuning-v2": 3e-2})
    tuner_extra: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "prefix": {"num_virtual_tokens": 32}, "ptuning-v2": {"num_virtual_tokens": 32}})
    train_batch: int = 8
    matcher_budget_s: float = 30.0
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
                    tuner_steps={"lora": 30, "prefix": 15, "ptuning-v2": 15}, matcher_budget_s=8.0, eval_inputs=8,
                    customers=12, evolve_rounds=1, evolve_min_labels=2, evolve_steps=30, max_new_tokens=24)
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
    with stage("pretrain: tokenizer + small Qwen2 base from scratch"):
        report["pretrain"] = _pretrain(ws, cfg)
    with stage("matcher: train the shop's query→reply matcher"):
        report["matcher"] = _matcher(ws, cfg)
    with stage("fine-tune: prefix, ptuning-v2, lora (Table IV methods)"):
        report["tuners"] = _tuners(ws, cfg)
    with stage("evaluate: Table VI / Fig. 3 on the paper's probes and held-out questions"):
        report["eval"] = _evaluate(ws, cfg, teacher)
    with stage("serve + customers + evolve: the online loop"):
        report["online"] = _online(ws, cfg, teacher, echo)
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


def _pretrain(ws: Workspace, cfg: DemoConfig) -> dict[str, Any]:
    from endcloud.end.pretrain import pretrain

    inputs = [ws.shop / "chats" / "chats.jsonl", ws.labels]
    res = pretrain([p for p in inputs if p.exists()], ws.base, progress=False, **cfg.pretrain)
    return _jsonable(res)


def _matcher(ws: Workspace, cfg: DemoConfig) -> dict[str, Any]:
    from endcloud.scoring import train_matcher

    rep = train_matcher(ws.pairs, ws.matcher, time_budget_s=cfg.matcher_budget_s)
    return rep.to_json()


def _examples(ws: Workspace):
    from endcloud.end.data import Example, load_labels, load_pairs

    natural = [Example.from_pair(p) for p in load_pairs(ws.pairs)]
    distilled = [Example.from_label(lab) for lab in load_labels(ws.labels)] if ws.labels.exists() else []
    return natural, distilled


def _tuners(ws: Workspace, cfg: DemoConfig) -> dict[str, Any]:
    from endcloud.end.adapters import AdapterRegistry
    from endcloud.end.train import train

    natural, distilled = _examples(ws)
    # The cloud's labels teach the shop's facts in the cloud's style; the natural replies
    # teach the shop's voice. Distilled first (the paper's point), natural as the rest.
    rng = random.Random(cfg.seed)
    examples = distilled + rng.sample(natural, min(len(natural), len(distilled)))
    held = rng.sample(natural, min(64, len(natural)))
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
                   title=f"End model vs tuners on the synthetic shop ({cfg.lang})")
    return _jsonable(getattr(rep, "summary", None) or rep)


def _customers(url: str, questions: list[dict[str, Any]], cfg: DemoConfig, tag: str, *, store: Any = None) -> dict[str, Any]:
    """Simulated customers: ask, read the reply, and (some) say when it misses the facts."""
    import concurrent.futures as cf

    import httpx

    from endcloud.scoring import fact_correct

    rng = random.Random(f"{cfg.seed}-{tag}")

    def one(i_q):
        i, q = i_q
        customer = f"{tag}-cust{i}"
        with httpx.Client(base_url=url, timeout=120) as c:
            r = c.post("/v1/chat/completions", json={"model": "endcloud", "user": customer,
                                                     "messages": [{"role": "user", "content": q["query"]}]})
            r.raise_for_status()
            body = r.json()
            ext = body.get("endcloud", {})
            text = body["choices"][0]["message"]["content"]
            right = fact_correct(text, q.get("facts")) if q.get("facts") else float("nan")
            feedback = None
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

    with cf.ThreadPoolExecutor(max_workers=8) as pool:
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
            "downvotes": sum(r["feedback"] == "down" for r in rows), "upvotes": sum(r["feedback"] == "up" for r in rows)}


def _online(ws: Workspace, cfg: DemoConfig, teacher: Any, echo: Callable[[str], None]) -> dict[str, Any]:
    from endcloud.compose import build_app_from_workspace, evolver_for_app
    from endcloud.evolve import EvolveSettings, GateSettings

    questions = [d for d in read_jsonl(ws.shop / "chats" / "eval.jsonl") if d.get("facts")]
    random.Random(cfg.seed).shuffle(questions)
    questions = questions[: cfg.customers]
    # The from-scratch base was fine-tuned without knowledge snippets in its context, so it is
    # served the same way (a real base model would read them: knowledge_snippets > 0).
    app = build_app_from_workspace(ws, teacher=teacher, knowledge_snippets=0, max_new_tokens=cfg.max_new_tokens)
    out: dict[str, Any] = {"rounds": []}
    with LoopbackServer(app, name="demo-server", start_timeout_s=120, stop_timeout_s=15) as srv:
        url = srv.url
        out["url"] = url
        store = app.state.store
        out["before"] = _customers(url, questions, cfg, "before", store=store)
        echo(f"  customers before evolution: takeover {out['before']['takeover_rate']:.0%}, facts right "
             f"{_pct(out['before']['fact_accuracy_served'])} served / {_pct(out['before']['fact_accuracy_end_draft'])} end drafts")

        settings = EvolveSettings(min_labels=cfg.evolve_min_labels, min_steps=cfg.evolve_steps,
                                  max_steps=cfg.evolve_steps, label_repeat=3, replay_ratio=0.5,
                                  gate=GateSettings(max_new_tokens=cfg.max_new_tokens, heldout_size=24))
        ev = evolver_for_app(app, ws, settings=settings, background=False)  # promotions hot-swap the running server
        for i in range(cfg.evolve_rounds):
            if i:  # a round consumes the pending labels: new customers bring the next lessons
                _customers(url, questions, cfg, f"round{i}", store=store)
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
        out["after"] = _customers(url, questions, cfg, "after", store=store)
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
    write_text_atomic(out / "report.md", "\n".join(lines))


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


def _summary(report: dict[str, Any]) -> str:
    o = report.get("online", {})
    b, a = o.get("before", {}), o.get("after", {})
    return (f"\nendcloud demo done in {report['total_seconds']} s — report: {report['workspace']}/reports/demo/report.md\n"
            f"  cloud takeover {_pct(b.get('takeover_rate'))} → {_pct(a.get('takeover_rate'))}, "
            f"end-model facts right {_pct(b.get('fact_accuracy_end_draft'))} → {_pct(a.get('fact_accuracy_end_draft'))}, "
            f"rounds promoted {sum(r['promoted'] for r in o.get('rounds', []))}/{len(o.get('rounds', []))}\n"
            f"  serve it: endcloud serve --workspace {report['workspace']}")
