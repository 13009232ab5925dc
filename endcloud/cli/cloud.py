"""CLI commands of the `cloud` room: `endcloud distill` (teacher labels for training pairs) and
`endcloud teacher ask` (one question, to check a teacher and its configuration).

    endcloud teacher ask "能发顺丰吗？" --teacher reference --shop shop/
    endcloud distill corpus/pairs.jsonl -o labels/labels.jsonl --teacher reference
    ENDCLOUD_CLOUD_BASE_URL=... ENDCLOUD_CLOUD_MODEL=gemini-1.5-pro ENDCLOUD_CLOUD_API_KEY=... \\
        endcloud distill corpus/pairs.jsonl -o labels/labels.jsonl --teacher openai --budget 5
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def distill_cmd(
    pairs: Path = typer.Argument(..., help="Pairs JSONL to label (endcloud corpus output; `response` optional)."),
    out: Path = typer.Option(..., "-o", "--out", help="Where to write the labels JSONL (Label.to_json per line)."),
    teacher: str = typer.Option("reference", "--teacher", help="Teacher: reference (offline, from the shop pack) or openai (ENDCLOUD_CLOUD_* env)."),
    shots: int = typer.Option(500, "--shots", help="Table II: question-answer examples in the prompt (N; capped by --budget-tokens)."),
    concurrency: int = typer.Option(8, "--concurrency", help="Requests in flight at once."),
    budget: Optional[float] = typer.Option(None, "--budget", help="Stop cleanly once this many US dollars are spent (needs a known price)."),
    price: Optional[str] = typer.Option(None, "--price", help="Price of the model as 'IN,OUT' dollars per million tokens."),
    examples: Optional[Path] = typer.Option(None, "--examples", help="Pairs JSONL whose human answers are the prompt's examples (default: PAIRS itself, each pair's own left out)."),
    budget_tokens: int = typer.Option(30_000, "--budget-tokens", help="Context budget of the prompt in tokens (examples are chosen to fit)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="SQLite reply cache (default: cache.sqlite beside the output); makes runs resumable."),
    shop: Optional[Path] = typer.Option(None, "--shop", help="Shop pack folder for the reference teacher (default: WORKSPACE/shop)."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", help="Workspace root (default: $ENDCLOUD_HOME or ./endcloud-work); the audit log goes here."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> int:
    """Label each query with the cloud teacher's reply (resumable; see the summary for cost)."""
    from endcloud.cloud import CostLedger, PriceTable, make_teacher
    from endcloud.cloud.distill import adistill, read_pairs
    from endcloud.cloud.ledger import parse_price
    from endcloud.cloud.teacher import run_sync
    from endcloud.errors import ConfigError
    from endcloud.fileio import write_jsonl_atomic

    if concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {concurrency!r}")
    items = read_pairs(pairs)
    cache_path = cache or out.parent / "cache.sqlite"
    kw: dict = {"shop": shop, "workspace": workspace, "cache": cache_path}
    if teacher == "openai":
        import os

        from endcloud.cloud.ledger import ENV_PRICE
        from endcloud.cloud.openai_backend import ENV_MODEL

        prices = PriceTable.from_env()
        given = price or os.environ.get(ENV_PRICE)
        if given:
            prices.prices[os.environ.get(ENV_MODEL, "")] = parse_price(given, source="--price" if price else ENV_PRICE)
        kw.update(
            examples=read_pairs(examples) if examples else items, shots=shots, budget_tokens=budget_tokens,
            concurrency=concurrency, ledger=CostLedger(prices=prices, budget=budget),
        )
    elif budget is not None or price is not None:
        raise ConfigError(f"--budget/--price apply to paid teachers; the {teacher!r} teacher costs nothing")
    t = make_teacher(teacher, **kw)

    bar = None
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("distill"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       transient=True, console=Console(stderr=True))
    task = bar.add_task("distill", total=len(items)) if bar else None

    def tick(_pair, _label) -> None:
        if bar is not None:
            bar.advance(task)

    if bar:
        bar.start()
    try:
        labels, summary = run_sync(lambda: adistill(items, t, concurrency=concurrency, on_label=tick))
    except KeyboardInterrupt:
        typer.echo(f"interrupted: every answer so far is in {cache_path}; run the same command again to resume", err=True)
        raise
    finally:
        if bar:
            bar.stop()
    write_jsonl_atomic(out, (lab.to_json() for lab in labels))
    for line in summary.lines():
        typer.echo(line)
    typer.echo(f"labels: {out}  cache: {cache_path}")
    if summary.stopped:
        from endcloud.errors import BudgetExceeded

        raise BudgetExceeded(f"{summary.labelled} of {summary.total} labels saved to {out}; {summary.stopped}")
    return 1 if summary.failures else 0


def ask_cmd(
    question: list[str] = typer.Argument(..., help="The customer's message (earlier turns first: customer, agent, customer, ...)."),
    teacher: str = typer.Option("reference", "--teacher", help="Teacher: reference (offline, from the shop pack) or openai (ENDCLOUD_CLOUD_* env)."),
    shop: Optional[Path] = typer.Option(None, "--shop", help="Shop pack folder for the reference teacher (default: WORKSPACE/shop)."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", help="Workspace root (the audit log of what left goes here)."),
    examples: Optional[Path] = typer.Option(None, "--examples", help="openai only: pairs JSONL for the Table II few-shot examples."),
    shots: int = typer.Option(500, "--shots", help="openai only: Table II examples in the prompt."),
) -> int:
    """Ask a teacher one question and print its reply with model, tokens and cost."""
    from endcloud.cloud import make_teacher
    from endcloud.errors import ConfigError

    if teacher != "openai" and examples is not None:
        raise ConfigError(f"--examples applies to the openai teacher, not {teacher!r}")
    kw: dict = {"shop": shop, "workspace": workspace}
    if teacher == "openai" and examples is not None:
        kw.update(examples=examples, shots=shots)
    t = make_teacher(teacher, **kw)
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": q} for i, q in enumerate(question)]
    if messages[-1]["role"] != "user":
        raise ConfigError(f"give an odd number of turns (customer last); got {len(question)}")
    reply = t.reply(messages)
    typer.echo(reply.text)
    u = reply.usage
    typer.echo(f"[{t.name} · {reply.model} · tokens in {u.prompt_tokens}, out {u.completion_tokens} · ${reply.cost:.6f}]", err=True)
    return 0


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.command("distill")(distill_cmd)
    teacher_app = typer.Typer(help="The cloud teacher: ask it a question (distill labels with `endcloud distill`).",
                              no_args_is_help=True)
    teacher_app.command("ask")(ask_cmd)
    app.add_typer(teacher_app, name="teacher")
