"""CLI commands of the `corpus` room: `endcloud corpus prepare INPUT... -o OUTDIR`, and
`endcloud corpus export --pairs P --format openai|sharegpt|alpaca -o OUT.jsonl` (the training
rows in the formats TRL, LLaMA-Factory and OpenAI fine-tuning read)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

corpus_app = typer.Typer(
    help="Chat logs (ECD, JDDC, JSONL, CSV) -> cleaned, redacted context/response pairs.",
    no_args_is_help=True,
)


@corpus_app.command("prepare")
def prepare_cmd(
    inputs: list[Path] = typer.Argument(..., help="Chat-log files (ECD, JDDC, JSONL or CSV), whatever their names.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: pairs.jsonl, eval.jsonl, sessions.jsonl (every training-side "
                             "session whole, for pretraining), report.json, report.txt."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="Input format: ecd, jddc, jsonl or csv (default: detected per file "
                                         "from its content)."),
    workers: int = typer.Option(2, "--workers", "-w", help="Worker processes (1 = all in this process)."),
    eval_fraction: float = typer.Option(0.05, "--eval-fraction", help="Share of sessions held out to eval.jsonl (by session hash)."),
    lang: str = typer.Option("auto", "--lang", help="Language of the pairs: zh, en or auto (detected per session)."),
    max_context_turns: int = typer.Option(8, "--max-context-turns", help="Turns of context kept before the query."),
    max_turn_chars: int = typer.Option(2000, "--max-turn-chars", help="Turns longer than this are cut at a sentence or word boundary "
                                       "(or dropped or kept whole, see --long-turns)."),
    long_turns: str = typer.Option("truncate", "--long-turns", help="What to do with a too-long turn: truncate, drop or keep."),
    url_placeholder: str = typer.Option("[URL]", "--url-placeholder", help="What a URL becomes ('' removes it)."),
    no_redact: bool = typer.Option(False, "--no-redact", help="Skip PII redaction (only for data that is already masked)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display; print only the summary."),
    shop: Optional[Path] = typer.Option(None, "--shop", help="Shop pack whose SKUs are public identifiers (never redacted)."),
) -> None:
    """Read, clean, redact (one vault per session), pair and dedupe chat logs; hold out a
    deterministic share of sessions for evaluation; write a counted report."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from endcloud.corpus import prepare

    if shop is not None:
        from endcloud.kb import ShopPack
        from endcloud.privacy import use_public_values

        use_public_values(p.sku for p in ShopPack.load(shop).products)
    console = Console(stderr=True)
    progress_cb = None
    bar = None
    if not quiet and console.is_terminal:  # a progress bar in a log file is just noise
        bar = Progress(
            TextColumn("[bold]corpus[/]"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[utts]:>12,} utterances  {task.fields[pairs]:>10,} pairs"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        task = bar.add_task("prepare", total=None, utts=0, pairs=0)

        def progress_cb(done: int, total: int, counts) -> None:
            bar.update(
                task, completed=done, total=total, utts=counts.get("utterances_in", 0),
                pairs=counts.get("pairs_written", 0) + counts.get("eval_pairs_written", 0),
            )

        bar.start()
    try:
        report = prepare(
            [str(p) for p in inputs], out, format=format, workers=workers, eval_fraction=eval_fraction, lang=lang,
            max_context_turns=max_context_turns, max_turn_chars=max_turn_chars, long_turns=long_turns,
            url_placeholder=url_placeholder, redact=not no_redact, progress=progress_cb,
        )
    finally:
        if bar is not None:
            bar.stop()
    typer.echo(report.to_text(), nl=False)


@corpus_app.command("export")
def export_cmd(
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Natural pairs JSONL (corpus prepare's pairs.jsonl)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Distilled labels JSONL (endcloud distill's output)."),
    format: str = typer.Option(..., "--format", "-f", help="openai (OpenAI fine-tuning, TRL), sharegpt or alpaca (LLaMA-Factory)."),
    out: Path = typer.Option(..., "--out", "-o", help="The JSONL file to write (a LLaMA-Factory dataset_info.json goes beside it)."),
    mix: Optional[float] = typer.Option(None, "--mix", help="Share of distilled labels, 0..1 (default 0.5 with both inputs), as `endcloud train` mixes."),
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt before every conversation."),
    shop: Optional[Path] = typer.Option(None, "--shop", help="Shop pack: put the knowledge retrieval finds for each question in its system text, as endcloud trains."),
    seed: int = typer.Option(0, "--seed", help="Seed of the mix."),
) -> None:
    """Write pairs and labels as training rows other trainers read: the examples `endcloud train` would use."""
    import json

    from endcloud.corpus.formats import FORMATS, dataset_info_entry
    from endcloud.end.data import ground_examples, read_examples
    from endcloud.errors import ConfigError
    from endcloud.fileio import write_json_atomic

    fmt = FORMATS.get(format)  # an unknown --format fails before anything is read
    if pairs is None and labels is None:
        raise ConfigError("nothing to export: pass --pairs PATH and/or --labels PATH")
    examples = read_examples(pairs, labels, mix=mix, system=system, seed=seed)
    if shop is not None:
        from endcloud.kb import KnowledgeBase, ShopPack

        # late=False: the knowledge joins the leading system text, the one place every format has
        examples = ground_examples(examples, KnowledgeBase(ShopPack.load(shop)), late=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(fmt.write(e.messages, e.response), ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(out)
    entry = dataset_info_entry(fmt.name, out.name)
    note = ""
    if entry is not None:
        info_path = out.parent / "dataset_info.json"
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
        info[out.stem] = entry
        write_json_atomic(info_path, info)
        note = f"; LLaMA-Factory: dataset {out.stem!r} in {info_path}"
    typer.echo(f"wrote {n} examples to {out} ({fmt.name}){note}")


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.add_typer(corpus_app, name="corpus")
