"""CLI commands of the `scoring` room (registered on the root app by `register`).

    endcloud eval --workspace W [--inputs FILE | --probes paper] [--model NAME=BASE[:ADAPTER] ...]
                  [--teacher auto|reference|openai|agent] [--human RATINGS.csv] [--check grounding] -o OUTDIR
    endcloud eval --inputs CHAT_LOGS --model end=BASE:ADAPTER -o OUTDIR   (no cloud: the agents' replies are the reference)
    endcloud matcher train --pairs P -o DIR
    endcloud matcher eval --ecd TEST_FILE [--matcher DIR]      (R10@1/2/5 vs TF-IDF vs chance)
    endcloud review export|import FILE [--kind items|verdicts|ratings] [--workspace W]
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from endcloud.errors import ConfigError
from endcloud.paper import PAPER

matcher_app = typer.Typer(help="The shop's own query-reply matcher (the RocketQA role).", no_args_is_help=True)
review_app = typer.Typer(help="Human review: move ratings, verdicts and corrections in and out (CSV or JSONL).", no_args_is_help=True)


def parse_model_spec(spec: str, base_default: Path | None = None) -> tuple[str, Path, Path | None]:
    """`NAME=BASE[:ADAPTER]` -> (name, base dir, adapter dir or None). BASE may be empty
    (`lora=:adapters/lora/v1`) to mean the workspace's base."""
    if "=" not in spec:
        raise ConfigError(f"--model wants NAME=BASE[:ADAPTER], got {spec!r}; e.g. --model lora=W/base:W/adapters/lora/v1")
    name, rest = spec.split("=", 1)
    base, _, adapter = rest.partition(":")
    if not name.strip():
        raise ConfigError(f"--model {spec!r} has an empty NAME")
    if not base:
        if base_default is None:
            raise ConfigError(f"--model {spec!r} has no BASE and there is no workspace base")
        base_path = base_default
    else:
        base_path = Path(base)
    return name.strip(), base_path, Path(adapter) if adapter else None


def expand_versions(name: str, base: Path, adapter: Path | None) -> list[tuple[str, Path, Path | None]]:
    """An adapter folder holding versions (`adapters/lora/` with v1/, v2/, ...) becomes one
    model per version, `lora@v1`, `lora@v2`, ...: the paper's several checkpoints of a tuner."""
    if adapter is None or (adapter / "adapter_config.json").exists() or not adapter.is_dir():
        return [(name, base, adapter)]
    versions = sorted((d for d in adapter.iterdir() if d.is_dir() and d.name[:1] == "v" and d.name[1:].isdigit()),
                      key=lambda d: int(d.name[1:]))
    if not versions:
        return [(name, base, adapter)]
    return [(f"{name}@{d.name}", base, d) for d in versions]


def _default_models(ws) -> list[str]:
    """The workspace's base plus each adapter's active version."""
    specs = [f"original={ws.base}"]
    if ws.adapters.is_dir():
        for d in sorted(p for p in ws.adapters.iterdir() if p.is_dir()):
            active = d / "active"
            if active.exists():
                version = active.read_text(encoding="utf-8").strip()
                specs.append(f"{d.name}={ws.base}:{d / version}")
    return specs


def eval_cmd(
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $ENDCLOUD_HOME or ./endcloud-work)."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="Eval inputs: shop chats/eval.jsonl, corpus eval.jsonl, a chat log in any format "
                                          "corpus prepare reads (every agent reply, the reply kept as the reference), or one query per line "
                                          "(default: the workspace's shop/chats/eval.jsonl, else corpus/eval.jsonl)."),
    probes: Optional[str] = typer.Option(None, "--probes", help="Built-in probe set: 'paper' (the six inputs of Table VI); with --lang."),
    lang: str = typer.Option("en", "--lang", help="Language of --probes: en, zh or both."),
    model: list[str] = typer.Option([], "--model", "-m", help="NAME=BASE[:ADAPTER], repeatable; an ADAPTER folder of versions (v1/, v2/...) gives NAME@v1, NAME@v2... "
                                   "(default: workspace base + each adapter's active version)."),
    teacher: str = typer.Option("auto", "--teacher", help="The reference replies: auto (openai when ENDCLOUD_CLOUD_BASE_URL is set, else the "
                                "offline reference teacher when the workspace has a shop pack, else the agents' logged replies in --inputs), "
                                "reference, openai, or agent (the logged replies)."),
    similarity: str = typer.Option("auto", "--similarity", help="auto, minilm, char-ngram, char-ngram-en, or a sentence-transformers dir."),
    matching: str = typer.Option("auto", "--matching", help="auto (workspace matcher, else tfidf), trained, tfidf, or a model dir."),
    human: Optional[Path] = typer.Option(None, "--human", help="Human ratings CSV (id, rating 1-5[, model]), or 'store' for the review store's ratings; reports Spearman agreement."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N inputs."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Reply length cap for the end models."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (same seed, same replies)."),
    alpha: float = typer.Option(PAPER.alpha, "--alpha", help="Eq. 1: Final = alpha*Sim + (1-alpha)*Match."),
    theta: float = typer.Option(PAPER.theta, "--theta", help="Eq. 1: where Match(query, cloud) < theta, Final = Sim."),
    check: list[str] = typer.Option([], "--check", help="Reply check to add as a column, repeatable: grounding (share of a reply's "
                                    "facts - prices, durations, times, couriers, ids, ... - that the shop's knowledge supports), novelty (share of a "
                                    "reply's text that is in the knowledge or the shipped reader's trained phrasing)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for table.md, table.csv, scores.png, summary.json."),
    device: Optional[str] = typer.Option(None, "--device", help="Where the end models run: auto, cpu, cuda or cuda:N."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="End models' precision: auto, fp32, bf16 or fp16."),
) -> None:
    """Score end models against the cloud teacher (Table VI / Fig. 3 report)."""
    from endcloud.config import Workspace
    from endcloud.end.device import apply_flags

    apply_flags(device, dtype)  # EndModel.load below reads them
    from endcloud.scoring import load_inputs, paper_probes, run_eval

    ws = Workspace.resolve(workspace)
    from endcloud.scoring.grounding import CHECKS

    for c in check:
        CHECKS.get(c)  # an unknown name fails before any model loads, listing the valid ones
    if inputs is not None and probes is not None:
        raise ConfigError("pass either --inputs or --probes, not both")
    if inputs is None and probes is None:
        # The shop's own eval questions carry the true facts; the corpus split is next best.
        inputs = next((p for p in (ws.shop / "chats" / "eval.jsonl", ws.eval_pairs) if p.exists()), None)
        if inputs is None:
            raise ConfigError(f"pass --inputs FILE or --probes paper (neither {ws.shop / 'chats' / 'eval.jsonl'} nor {ws.eval_pairs} exists)")
    if probes is not None:
        if probes != "paper":
            raise ConfigError(f"--probes knows only 'paper', got {probes!r}")
        shop_eval = ws.shop / "chats" / "eval.jsonl"
        items = paper_probes(lang, shop_eval=shop_eval if shop_eval.exists() else None)
    else:
        items = load_inputs(inputs, limit=limit)
    items = items[:limit] if limit else items

    from endcloud.cloud import make_teacher
    from endcloud.runtime.model import EndModel

    for spec in model:  # a malformed --model is one clear line before anything else is decided or loaded
        parse_model_spec(spec, ws.base)
    teacher = _choose_reference(teacher, ws, items)

    specs = model or _default_models(ws)
    models = {}
    for spec in specs:
        for name, base, adapter in expand_versions(*parse_model_spec(spec, ws.base)):
            models[name] = EndModel.load(base, adapter)
    shop = ws.shop if ws.shop.exists() else None
    t = None if teacher == "agent" else make_teacher(teacher, shop=shop, workspace=ws)
    from endcloud.scoring.evaluator import workspace_corpus

    corpus = workspace_corpus(ws)
    ratings = None
    if human is not None and str(human) == "store":
        from endcloud.store.review import ReviewStore

        store = ReviewStore(ws.db)
        try:
            ratings = [{"id": r.target_id, "rating": r.rating, "model": r.model} for r in store.ratings()]
        finally:
            store.close()
    elif human is not None:
        ratings = human
    knowledge = None
    if check and ws.has_shop():
        from endcloud.kb import KnowledgeBase, ShopPack

        knowledge = KnowledgeBase(ShopPack.load(ws.shop))
    report = run_eval(items, models, t, out_dir=out, similarity=similarity, matching=matching, workspace=ws, corpus=corpus,
                      human=ratings, max_new_tokens=max_new_tokens, seed=seed, alpha=alpha, theta=theta,
                      checks=check, knowledge=knowledge)
    s = report.summary
    typer.echo(f"similarity: {', '.join(s['similarity_used'])}; matching: {s['matching']}; teacher: {s['teacher']}")
    for m in report.models:
        fa = s["fact_accuracy"][m]
        typer.echo(f"  {m:<20} final {s['averages'][m]['final']:.3f}" + (f"  facts {fa:.3f}" if fa is not None else "")
                   + "".join(f"  {c} {s['averages'][m][c]:.3f}" for c in s.get("checks") or []))
    for m in report.models:
        tm = s["text_metrics"][m]
        bleu = "n/a" if tm["bleu4"] is None else f"{tm['bleu4']:.2f}"
        typer.echo(f"  {m:<20} vs {s['reference']}: sim {s['averages'][m]['sim']:.3f}  BLEU-4 {bleu}  ROUGE-L {tm['rouge_l'] or 0:.3f}  "
                   f"distinct-1/2 {tm['distinct_1'] or 0:.3f}/{tm['distinct_2'] or 0:.3f}  top reply {tm['top_share'] or 0:.1%}  "
                   f"degenerate {tm['degenerate'] or 0:.1%}")
    if "human" in s:
        typer.echo(f"  Spearman vs human ratings: {s['human']['rho']} (n={s['human']['n']})")
    typer.echo(f"wrote {', '.join(sorted(report.files))} to {report.out_dir}")


def _choose_reference(teacher: str, ws, items) -> str:
    """What `--teacher` means: a name, or for "auto" the first of openai (a cloud is
    configured), reference (the workspace has a shop pack), agent (every input carries the
    agent's logged reply)."""
    import os

    valid = ("auto", "reference", "openai", "agent")
    if teacher not in valid:
        raise ConfigError(f"--teacher must be one of {', '.join(valid)}, got {teacher!r}")
    has_refs = bool(items) and all(it.reference is not None for it in items)
    if teacher == "agent" and not has_refs:
        raise ConfigError("--teacher agent needs the agents' replies: pass chat logs or pairs with --inputs")
    if teacher != "auto":
        return teacher
    if os.environ.get("ENDCLOUD_CLOUD_BASE_URL", "").strip():
        return "openai"
    if ws.has_shop():
        return "reference"
    if has_refs:
        return "agent"
    raise ConfigError("no reference to score against: pass chat logs or pairs with --inputs (the agents' replies are the reference), "
                      "set ENDCLOUD_CLOUD_BASE_URL for a cloud teacher, or give the workspace a shop pack")


def matcher_train_cmd(
    pairs: Path = typer.Option(..., "--pairs", help="Pairs JSONL (corpus prepare output) or a chat log in any format corpus prepare "
                               "reads (ECD, JDDC, CSV, messages JSONL; known by content), normalised the way corpus prepare does."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the matcher in (e.g. W/scoring/matcher)."),
    epochs: int = typer.Option(8, "--epochs", help="Passes over the training pairs."),
    dim: int = typer.Option(64, "--dim", help="Embedding size of each tower."),
    test_frac: float = typer.Option(0.1, "--test-frac", help="Share of sessions held out for R10@1."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    threads: int = typer.Option(2, "--threads", help="torch threads."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Optional time limit on the epochs (default: none; "
                                                "every epoch runs). The summary says when it cut them short."),
    lm_steps: int = typer.Option(1000, "--lm-steps", help="Steps of the small language model trained beside the encoder on the "
                                 "training pairs (log p(reply | query) and log p(reply) as signals; a few minutes on 2 cores). "
                                 "0: none — seconds, numpy-only inference, and on real logs a weaker matcher."),
) -> None:
    """Train the shop's matcher on its own pairs; print held-out R10@1/2/5 against TF-IDF and chance."""
    from endcloud.scoring import train_matcher

    r = train_matcher(pairs, out, epochs=epochs, dim=dim, test_frac=test_frac, seed=seed, threads=threads,
                      time_budget_s=max_minutes * 60 if max_minutes is not None else None, lm_steps=lm_steps)
    typer.echo(f"R10@1 {r.r10_at_1:.3f} (TF-IDF {r.baseline_tfidf_r10_at_1:.3f}, chance 0.100) on {r.n_test_groups} held-out groups; "
               f"{r.n_train} train pairs, {r.epochs} epochs in {r.train_seconds:.1f} s; "
               f"P(match) true {r.mean_prob_true:.2f} / sampled {r.mean_prob_false:.2f}; saved to {r.out_dir}")
    for k in (1, 2, 5):
        typer.echo(f"  R10@{k}: trained {r.recall['trained'][f'r_at_{k}']:.3f}  tfidf {r.recall['tfidf'][f'r_at_{k}']:.3f}  "
                   f"chance {r.recall['chance'][f'r_at_{k}']:.3f}")
    lo, hi = r.extra["r10_at_1_gain_over_tfidf_ci95"]
    typer.echo(f"  R10@1 gain over TF-IDF: {r.r10_at_1 - r.baseline_tfidf_r10_at_1:+.3f} (95 % paired bootstrap over the groups: "
               f"{lo:+.3f} to {hi:+.3f})")
    if "lm" in r.extra:
        lm = r.extra["lm"]
        typer.echo(f"language model: {lm['steps']} steps, {lm['params'] / 1e6:.1f}M parameters, held-out loss {lm['eval_loss']:.2f}, "
                   f"{lm['seconds']:.0f} s")
    if r.stopped_early:
        typer.echo(f"stopped early: {r.epochs} of {r.epochs_requested} epochs, to end within --max-minutes {max_minutes:g}")


def matcher_eval_cmd(
    ecd: Path = typer.Option(..., "--ecd", help="An ECD-format response-selection file: `label<TAB>context...<TAB>candidate`, "
                             "consecutive lines sharing a context (the official test file: 10 candidates, 1 true)."),
    matcher: list[str] = typer.Option([], "--matcher", "-m", help="A trained matcher folder, a CrossEncoder folder, or a registered "
                                      "name (trained = the workspace's); repeatable. TF-IDF and chance are always shown."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder (for 'trained')."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N contexts."),
) -> None:
    """Response selection on ECD-format test files: R@1, R@2, R@5 of each matcher, TF-IDF and chance."""
    from endcloud.scoring.matcher_train import ecd_recall, read_ecd
    from endcloud.scoring.matching import TfidfMatcher, load_matching

    groups = read_ecd(ecd)
    groups = groups[:limit] if limit else groups
    scorers = [("tfidf", TfidfMatcher(corpus=[t for g in groups for t in (*g["context"], *g["candidates"])]))]
    scorers += [(m, load_matching(m, workspace=workspace)) for m in matcher]
    rows = []
    for name, scorer in scorers:
        res = ecd_recall(scorer, groups)
        rows.append((name, res))
    first = rows[0][1]
    typer.echo(f"{ecd}: {first['groups']} contexts, {first['candidates']} candidates each")
    typer.echo(f"  {'scorer':<24} {'R@1':>6} {'R@2':>6} {'R@5':>6}")
    typer.echo(f"  {'chance':<24} {first['chance_r_at_1']:>6.3f} {first['chance_r_at_2']:>6.3f} {first['chance_r_at_5']:>6.3f}")
    for name, res in rows:
        typer.echo(f"  {name:<24} {res['r_at_1']:>6.3f} {res['r_at_2']:>6.3f} {res['r_at_5']:>6.3f}")


def review_export_cmd(
    path: Path = typer.Argument(..., help="Output file, .csv or .jsonl."),
    kind: str = typer.Option("verdicts", "--kind", help="items, verdicts or ratings."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder."),
) -> None:
    """Export review items, verdicts or ratings."""
    from endcloud.config import Workspace
    from endcloud.store.review import ReviewStore

    store = ReviewStore(Workspace.resolve(workspace).db)
    try:
        n = store.export(path, kind)
    finally:
        store.close()
    typer.echo(f"exported {n} {kind} to {path}")


def review_import_cmd(
    path: Path = typer.Argument(..., help="Input file, .csv or .jsonl (as written by export)."),
    kind: str = typer.Option("verdicts", "--kind", help="items, verdicts or ratings."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder."),
) -> None:
    """Import review items, verdicts or ratings (rows already present are skipped)."""
    from endcloud.config import Workspace
    from endcloud.store.review import ReviewStore

    store = ReviewStore(Workspace.resolve(workspace).db)
    try:
        n = store.import_(path, kind)
    finally:
        store.close()
    typer.echo(f"imported {n} new {kind} from {path}")


def review_labels_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Labels JSONL to write (the distillation label format)."),
    include_approved: bool = typer.Option(False, "--include-approved", help="Also use approved end replies as labels."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder."),
) -> None:
    """Write reviewers' corrections as training labels."""
    from endcloud.config import Workspace
    from endcloud.fileio import write_jsonl_atomic
    from endcloud.store.review import ReviewStore

    store = ReviewStore(Workspace.resolve(workspace).db)
    try:
        labels = store.corrections_as_labels(include_approved=include_approved)
    finally:
        store.close()
    n = write_jsonl_atomic(out, (lab.to_json() for lab in labels))
    typer.echo(f"wrote {n} labels to {out}")


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.command("eval")(eval_cmd)
    matcher_app.command("train")(matcher_train_cmd)
    matcher_app.command("eval")(matcher_eval_cmd)
    app.add_typer(matcher_app, name="matcher")
    review_app.command("export")(review_export_cmd)
    review_app.command("import")(review_import_cmd)
    review_app.command("labels")(review_labels_cmd)
    app.add_typer(review_app, name="review")
