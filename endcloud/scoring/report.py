"""`endcloud eval`: run inputs through end models and the cloud teacher, score, report.

    inputs ──► each end model (.generate) ──► end replies ─┐
          └──► cloud teacher (.reply) ────► cloud replies ─┼─► sim, match, cloud_match ─► Final (eq. 1)
                                                           ├─► fact accuracy (when facts are known)
                                                           └─► reply checks (`checks=("grounding",)`: CHECKS)

Writes to `out_dir`:
    table.md       Table VI-style: rows = inputs, columns = models, Final; averages, fact accuracy
    table.csv      the same table, machine-readable
    components.csv one row per (input, model): replies, sim, match, cloud_match, final, fact_correct
    scores.png     Fig. 3-style: one panel per model, Final per input
    summary.json   averages, fact accuracy, scorer names, α, Θ, Spearman vs human ratings

A reply check (`endcloud.scoring.grounding.CHECKS`, `endcloud eval --check grounding`) adds a
column per check: its score of each reply against the evidence of its input (for grounding:
the share of the reply's facts that the input's knowledge, the customer's messages and the
shop's profile support), with the facts it faulted in components.csv (`<check>_unsupported`).

`run_eval` takes any objects with the end model's `generate(conversations, ...)` and the
teacher's `reply(messages) -> .text`, so tests and `endcloud demo` can pass their own.

On a shop's chat logs no teacher is needed: with `teacher=None` the reference is what the
shop's agent replied (`references`, or each input's `reference`), in a column named `agent`
instead of `cloud`. Every model's replies also get BLEU-4 and ROUGE-L against the reference
and the diversity columns (distinct-1/2, the most common reply's share, degenerate replies:
`endcloud.scoring.textmetrics`), so a model that says one generic thing cannot look good.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from endcloud.paper import PAPER
from endcloud.errors import DataError
from endcloud.fileio import write_json_atomic, write_text_atomic
from endcloud.scoring.base import Scorer
from endcloud.scoring.evaluator import Evaluator
from endcloud.scoring.facts import fact_accuracy
from endcloud.scoring.grounding import load_check
from endcloud.scoring.inputs import EvalInput

CLOUD = "cloud"
AGENT = "agent"  # the reference column when the reference is the logged agent's reply


@dataclass
class EvalReport:
    """What `run_eval` produced; `rows` hold every (input, model) cell with its components."""

    out_dir: Path
    models: list[str]
    inputs: list[EvalInput]
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    def final(self, model: str) -> np.ndarray:
        """Final scores of one model, in input order."""
        return np.array([r["final"] for r in self.rows if r["model"] == model])

    def average(self, model: str) -> float:
        return self.summary["averages"][model]["final"]


def read_human_ratings(path: str | Path) -> list[dict[str, Any]]:
    """CSV with columns id, rating (1–5) and optionally model. Bad rows raise DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError("human ratings file not found", path=str(path))
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "rating"} <= set(reader.fieldnames):
            raise DataError(f"expected a header with 'id' and 'rating' (optional 'model'), got {reader.fieldnames!r}", path=str(path), line=1)
        for lineno, row in enumerate(reader, 2):
            try:
                rating = float(row["rating"])
            except (TypeError, ValueError):
                raise DataError(f"rating {row['rating']!r} is not a number 1–5", path=str(path), line=lineno) from None
            if not 1 <= rating <= 5:
                raise DataError(f"rating {rating!r} is outside 1–5", path=str(path), line=lineno)
            out.append({"id": row["id"].strip(), "rating": rating, "model": (row.get("model") or "").strip() or None})
    return out


def _spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None, "n": int(len(x)), "note": "needs >= 3 cells with varying values"}
    res = spearmanr(x, y)
    return {"rho": round(float(res.statistic), 4), "p": float(res.pvalue), "n": int(len(x))}


def _human_agreement(rows: list[dict[str, Any]], ratings: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
    """Match ratings to cells: by (id, model), or id alone when one model was evaluated,
    or ids written `<input id>@<model>`."""
    cells = {(r["id"], r["model"]): r for r in rows}
    auto, human, unmatched = [], [], 0
    for rt in ratings:
        rid, model = rt["id"], rt["model"]
        if model is None and "@" in rid:
            rid, model = rid.split("@", 1)  # model names may hold "@" (lora@3000), input ids do not
        if model is None and len(models) == 1:
            model = models[0]
        cell = cells.get((rid, model))
        if cell is None:
            unmatched += 1
            continue
        auto.append(cell["final"])
        human.append(rt["rating"])
    return {**_spearman(auto, human), "unmatched": unmatched}


def _fmt(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _nanmean(x: Iterable[float]) -> float | None:
    arr = np.asarray(list(x), float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if len(arr) else None


def _short(text: str, n: int = 70) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def run_eval(
    inputs: Sequence[EvalInput | str | Mapping[str, Any]],
    models: Mapping[str, Any],
    teacher: Any,
    *,
    out_dir: str | Path,
    similarity: str | Scorer = "auto",
    matching: str | Scorer = "auto",
    workspace=None,
    corpus: Iterable[str] | None = None,
    human: str | Path | list[dict[str, Any]] | None = None,
    alpha: float = PAPER.alpha,
    theta: float = PAPER.theta,
    max_new_tokens: int = 128,
    temperature: float = PAPER.temperature,
    top_p: float = PAPER.top_p,
    seed: int | None = 0,
    batch_size: int = 8,
    title: str = "End model evaluation",
    evaluator: Evaluator | None = None,
    ground: Callable[[list[dict[str, str]]], list[dict[str, str]]] | None = None,
    checks: Sequence[str | Scorer] = (),
    knowledge: Any = None,
    references: Sequence[str] | None = None,
) -> EvalReport:
    """Generate, score and write the report (see the module docstring for the files).

    `models`: name -> object with `generate(conversations, *, max_new_tokens, temperature,
    top_p, seed) -> [obj with .text]`. `teacher`: object with `reply(messages) -> obj with
    .text`. `human`: a ratings CSV path or rows {"id", "rating", "model"?}. `ground`: adds the
    shop knowledge to each end-model conversation as serving does (`endcloud.kb.prompt.ground`);
    the teacher gets the bare conversation (it looks the knowledge up itself). `checks`: reply
    checks by name or Scorer, each a column ("grounding" reads `knowledge`, the shop's
    KnowledgeBase). `teacher=None`: the reference is the logged agent's reply (`references`,
    else each input's `reference`)."""
    items = [EvalInput.coerce(x, n) for n, x in enumerate(inputs)]
    if not items:
        raise DataError("run_eval got no inputs")
    if not models:
        raise DataError("run_eval got no end models; pass at least one NAME=BASE[:ADAPTER]")
    ref_col = CLOUD if teacher is not None else AGENT
    if ref_col in models:
        raise DataError(f"model name {ref_col!r} is reserved for the reference column; rename that model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev = evaluator or Evaluator(similarity=similarity, matching=matching, workspace=workspace, corpus=corpus, alpha=alpha, theta=theta)

    convs = [it.messages() for it in items]
    queries = [it.query for it in items]
    langs = [it.lang for it in items]
    if teacher is not None:
        cloud = [str(teacher.reply(c).text) for c in convs]
    else:
        refs = list(references) if references is not None else [it.reference for it in items]
        if len(refs) != len(items) or any(r is None for r in refs):
            raise DataError("no teacher and no logged agent reply for every input: pass chat logs or pairs "
                            "(--inputs LOGS), or configure a teacher")
        cloud = [str(r) for r in refs]
    replies: dict[str, list[str]] = {}
    for name, model in models.items():
        texts: list[str] = []
        for start in range(0, len(convs), batch_size):
            batch = convs[start:start + batch_size]
            if ground is not None:
                batch = [ground(c) for c in batch]
            gens = model.generate(batch, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
            texts += [str(g.text) for g in gens]
        replies[name] = texts

    facts = [it.facts for it in items]
    rows: list[dict[str, Any]] = []
    names = list(models)
    for name in names + [ref_col]:
        reps = cloud if name == ref_col else replies[name]
        comp = ev.components(queries, reps, cloud, lang=langs)
        sim_names = ev.similarity_names(reps, cloud, lang=langs)
        ok = fact_accuracy(reps, facts)
        for i, it in enumerate(items):
            rows.append({"id": it.id, "lang": it.lang, "query": it.query, "model": name, "reply": reps[i], "cloud_reply": cloud[i],
                         "sim": float(comp["sim"][i]), "match": float(comp["match"][i]), "cloud_match": float(comp["cloud_match"][i]),
                         "final": float(comp["final"][i]), "fact_correct": float(ok[i]), "similarity_model": sim_names[i]})

    check_names = _run_checks(checks, knowledge, rows, items, [ground(c) if ground is not None else c for c in convs])

    def cells(model: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["model"] == model]

    averages = {m: {k: _nanmean(r[k] for r in cells(m)) for k in ("final", "sim", "match", "cloud_match", *check_names)}
                for m in names + [ref_col]}
    fact_acc = {m: _nanmean(r["fact_correct"] for r in cells(m)) for m in names + [ref_col]}
    n_facts = sum(1 for f in facts if f)
    judged = [r for r in rows if r["model"] != ref_col and not math.isnan(r["fact_correct"])]
    from endcloud.scoring.textmetrics import reply_metrics

    text_metrics = {m: reply_metrics(replies[m], cloud, langs) for m in names}
    text_metrics[ref_col] = reply_metrics(cloud, None, langs)  # the reference's own diversity, for scale
    summary: dict[str, Any] = {
        "title": title,
        "models": names,
        "teacher": getattr(teacher, "name", type(teacher).__name__) if teacher is not None else "none (logged agent replies)",
        "reference": ref_col,
        "text_metrics": text_metrics,
        "similarity": ev.similarity.name,
        "similarity_used": sorted({r["similarity_model"] for r in rows}),
        "matching": ev.matching.name,
        "alpha": alpha,
        "theta": theta,
        "n_inputs": len(items),
        "n_inputs_with_facts": n_facts,
        "averages": averages,
        "fact_accuracy": fact_acc,
        # Does the paper's proxy agree with the ground truth? (cells with known facts)
        "final_vs_fact_spearman": _spearman([r["final"] for r in judged], [r["fact_correct"] for r in judged]),
        "generation": {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed},
        "checks": check_names,
    }
    if human is not None:
        ratings = read_human_ratings(human) if isinstance(human, (str, Path)) else list(human)
        summary["human"] = _human_agreement(rows, ratings, names)

    files = {
        "table.md": out / "table.md",
        "table.csv": out / "table.csv",
        "components.csv": out / "components.csv",
        "scores.png": out / "scores.png",
        "summary.json": out / "summary.json",
    }
    write_text_atomic(files["table.md"], _markdown(items, rows, names, summary))
    write_text_atomic(files["table.csv"], _wide_csv(items, rows, names))
    write_text_atomic(files["components.csv"], _long_csv(rows, [x for c in check_names for x in (c, f"{c}_unsupported")]))
    _plot(items, rows, names, files["scores.png"], title)
    write_json_atomic(files["summary.json"], summary)
    return EvalReport(out_dir=out, models=names, inputs=items, rows=rows, summary=summary, files=files)


def _markdown(items: list[EvalInput], rows: list[dict[str, Any]], names: list[str], summary: dict[str, Any]) -> str:
    ref = summary.get("reference", CLOUD)
    cols = names + [ref]
    by = {(r["id"], r["model"]): r for r in rows}
    lines = [f"# {summary['title']}", "",
             f"Final = {summary['alpha']}·Sim(end, cloud) + {1 - summary['alpha']:.1f}·Match(query, end); Final = Sim where "
             f"Match(query, cloud) < Θ = {summary['theta']}.  ",
             f"Similarity: {', '.join(summary['similarity_used'])} (scorer `{summary['similarity']}`). "
             f"Matching: `{summary['matching']}`. Teacher: `{summary['teacher']}`. The `{ref}` column scores the "
             + ("teacher's own reply" if ref == CLOUD else "agent's logged reply, the reference here")
             + " (Sim = 1 by construction; its Match is the Θ-rule input).", "",
             "## Final score (Table VI style)", "",
             "| id | input | " + " | ".join(cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for it in items:
        lines.append(f"| {it.id} | {_short(it.query)} | " + " | ".join(_fmt(by[(it.id, m)]["final"]) for m in cols) + " |")
    lines.append("| | **average** | " + " | ".join(_fmt(summary["averages"][m]["final"]) for m in cols) + " |")
    if summary["n_inputs_with_facts"]:
        lines.append(f"| | **fact accuracy** (n={summary['n_inputs_with_facts']}) | "
                     + " | ".join(_fmt(summary["fact_accuracy"][m]) for m in cols) + " |")
    checks = summary.get("checks") or []
    lines += ["", "## Components (averages)", "", "| model | Final | Sim(end, cloud) | Match(query, end) | Match(query, cloud) | fact accuracy |"
              + "".join(f" {c} |" for c in checks), "|---|---:|---:|---:|---:|---:|" + "---:|" * len(checks)]
    for m in cols:
        a = summary["averages"][m]
        lines.append(f"| {m} | {_fmt(a['final'])} | {_fmt(a['sim'])} | {_fmt(a['match'])} | {_fmt(a['cloud_match'])} | {_fmt(summary['fact_accuracy'][m])} |"
                     + "".join(f" {_fmt(a[c])} |" for c in checks))
    fv = summary["final_vs_fact_spearman"]
    if fv.get("rho") is not None:
        lines += ["", f"Proxy vs ground truth: Spearman(Final, fact correct) = {fv['rho']:.3f} over {fv['n']} cells."]
    if "human" in summary:
        h = summary["human"]
        rho = "n/a" if h.get("rho") is None else f"{h['rho']:.3f} (p = {h['p']:.3g})"
        lines += ["", f"Agreement with human ratings: Spearman = {rho} over {h['n']} rated cells ({h['unmatched']} ratings unmatched)."]
    tm = summary.get("text_metrics")
    if tm:
        lines += ["", f"## Against the reference ({ref}) and diversity", "",
                  "BLEU-4 (sacrebleu, 0-100) and ROUGE-L F1 against the reference; distinct-n over all of a model's replies; "
                  "top share: the most common reply's share; degenerate: empty or mostly one repeated unit.", "",
                  "| model | BLEU-4 | ROUGE-L | distinct-1 | distinct-2 | distinct replies | top share | degenerate | most common reply |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for m in cols:
            t = tm[m]
            bleu = "—" if t["bleu4"] is None else f"{t['bleu4']:.2f}"
            lines.append(f"| {m} | {bleu} | {_fmt(t['rouge_l'])} | {_fmt(t['distinct_1'])} | {_fmt(t['distinct_2'])} | "
                         f"{t['distinct_replies']} | {_fmt(t['top_share'])} | {_fmt(t['degenerate'])} | {_short(t['top_reply'], 50)} |")
    lines += ["", "## Replies", ""]
    for it in items:
        lines.append(f"- **{it.id}** {_short(it.query, 200)}")
        for m in cols:
            lines.append(f"  - {m} ({_fmt(by[(it.id, m)]['final'])}): {_short(by[(it.id, m)]['reply'], 200)}")
    return "\n".join(lines) + "\n"


def _wide_csv(items: list[EvalInput], rows: list[dict[str, Any]], names: list[str]) -> str:
    by = {(r["id"], r["model"]): r for r in rows}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    ref = next((r["model"] for r in rows if r["model"] not in names), CLOUD)
    w.writerow(["id", "query"] + names + [ref])
    for it in items:
        w.writerow([it.id, it.query] + [f"{by[(it.id, m)]['final']:.4f}" for m in names + [ref]])
    return buf.getvalue()


def _run_checks(checks: Sequence[str | Scorer], knowledge: Any, rows: list[dict[str, Any]], items: list[EvalInput],
                convs: list[list[dict[str, str]]]) -> list[str]:
    """Add each reply check's column (and `<name>_unsupported`, what it faulted) to `rows`; their names."""
    names = []
    for spec in checks:
        check = load_check(spec, knowledge=knowledge)
        evidence = [check.evidence_for(c) for c in convs]
        explain = getattr(check, "explain", None)
        for k, r in enumerate(rows):  # rows run model by model, each over every input in order
            e = evidence[k % len(items)]
            r[check.name] = float(check.score([r["reply"]], [e])[0])
            r[f"{check.name}_unsupported"] = explain(r["reply"], e) if explain is not None else ""
        names.append(check.name)
    return names


def _long_csv(rows: list[dict[str, Any]], extra: Sequence[str] = ()) -> str:
    keys = ["id", "lang", "model", "query", "reply", "cloud_reply", "sim", "match", "cloud_match", "final", "fact_correct",
            "similarity_model", *extra]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.4f}" if isinstance(r[k], float) and not math.isnan(r[k]) else ("" if isinstance(r[k], float) else r[k])) for k in keys})
    return buf.getvalue()


def _plot(items: list[EvalInput], rows: list[dict[str, Any]], names: list[str], path: Path, title: str) -> None:
    """Fig. 3 style: one panel per model, bar = Final of one input (the paper's (a)–(f))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["id"], r["model"]): r for r in rows}
    n = len(names)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False, sharey=True)
    x = np.arange(1, len(items) + 1)
    for k, name in enumerate(names):
        ax = axes[k // ncols][k % ncols]
        finals = [by[(it.id, name)]["final"] for it in items]
        ax.bar(x, finals, color="#4878a8")
        ax.set_title(f"({chr(97 + k) if k < 26 else k}) {name}", fontsize=10)
        ax.set_ylim(0, 1)
        ax.set_xlabel("input")
        if len(items) <= 20:
            ax.set_xticks(x)
        ax.axhline(float(np.mean(finals)), color="#c44e52", lw=1, ls="--")
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    for row in axes:
        row[0].set_ylabel("Final score")
    fig.suptitle(f"{title}: Final score per input (dashed line: the mean)", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    from endcloud.fileio import atomic_write

    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
