"""CLI commands of the `shop` room: make a synthetic shop pack, check a pack, search its knowledge.

    endcloud shop new shop/ --lang en --sessions 100000 --seed 1
    endcloud shop check shop/
    endcloud shop search shop/ "can I choose the courier?"
    endcloud shop onboard my-shop/ -w my-work [--logs chats.jsonl] [--steps 300]   # then: endcloud serve -w my-work
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

shop_app = typer.Typer(help="The shop: a synthetic shop pack (catalog, FAQ, policies, chat logs), its knowledge base, and onboarding a shop's own pack.",
                       no_args_is_help=True)


@shop_app.command("new")
def new(
    out: Path = typer.Argument(..., help="Folder to write the shop pack into (must be empty unless --force)."),
    lang: str = typer.Option("zh", "--lang", help="Language of the shop and its chats: zh or en."),
    sessions: int = typer.Option(2000, "--sessions", help="Number of chat sessions to write (streams; 1M is fine)."),
    products: int = typer.Option(40, "--products", help="Number of catalog products."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same bytes."),
    wrong_rate: float = typer.Option(0.18, "--wrong-rate", help="Share of human-agent replies that are unhelpful or wrong (0-1)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty OUT, replacing the generator's files."),
    workers: int = typer.Option(1, "--workers", help="Processes drawing sessions (same bytes for any number)."),
) -> None:
    """Generate a seeded fictional shop: knowledge files, customer chats (JSONL; JDDC for zh) and an eval set."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from endcloud.corpus.shopworld import generate_shop

    console = Console(stderr=True)
    with Progress(TextColumn("sessions"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=sessions < 5000) as bar:
        task = bar.add_task("sessions", total=max(sessions, 1))
        summary = generate_shop(out, lang=lang, sessions=sessions, products=products, seed=seed,
                                wrong_rate=wrong_rate, force=force, workers=workers, progress=lambda n: bar.update(task, completed=n))
    typer.echo(f"wrote {summary.out_dir}: {summary.name} ({summary.lang}), {summary.products} products, "
               f"{summary.orders} orders, {summary.faq} FAQ entries")
    typer.echo(f"  sessions {summary.sessions:,}  turns {summary.turns:,}  replies {summary.replies:,}  "
               f"wrong {summary.wrong_replies:,} ({summary.wrong_rate:.1%})  eval items {summary.eval_items}")
    typer.echo("  files: " + ", ".join(summary.files))
    if summary.intents:
        width = max(len(k) for k in summary.intents)
        top = max(summary.intents.values())
        typer.echo("  intents:")
        for intent, n in sorted(summary.intents.items(), key=lambda kv: (-kv[1], kv[0])):
            typer.echo(f"    {intent:<{width}} {n:>9,} {'#' * max(1, round(30 * n / top))}")


@shop_app.command("check")
def check(pack: Path = typer.Argument(..., help="A shop pack folder.")) -> None:
    """Load and validate a shop pack; print what it holds (errors name file and line)."""
    from endcloud.kb import KnowledgeBase, ShopPack

    p = ShopPack.load(pack)
    kb = KnowledgeBase(p)
    typer.echo(f"{p.name} ({p.language}, {p.currency}): {len(p.products)} products, {len(p.faq)} FAQ entries, "
               f"{len(p.policies)} policy sections ({', '.join(p.policies)}), {len(p.orders)} orders; {len(kb)} searchable snippets")


@shop_app.command("search")
def search(
    pack: Path = typer.Argument(..., help="A shop pack folder."),
    query: str = typer.Argument(..., help="A customer question."),
    k: int = typer.Option(3, "-k", help="Number of snippets."),
) -> None:
    """Show the knowledge snippets a reply to QUERY would draw on."""
    from endcloud.kb import KnowledgeBase, ShopPack

    kb = KnowledgeBase(ShopPack.load(pack))
    for s in kb.search(query, k=k):
        typer.echo(f"[{s.source}:{s.ref} {s.score:.2f}] {s.text}")


@shop_app.command("onboard")
def onboard_cmd(
    pack: Path = typer.Argument(..., help="The shop's pack folder (shop.yaml, catalog.csv, faq.jsonl, policies.md)."),
    workspace: Path = typer.Option(..., "-w", "--workspace", help="Workspace to build into (created; rerun to resume)."),
    logs: Optional[List[Path]] = typer.Option(None, "--logs", help="Chat logs (ECD, JDDC, JSONL, CSV); repeat for several. Their pairs are the questions; without logs the questions are written from the pack."),
    lang: Optional[str] = typer.Option(None, "--lang", help="Write the questions in zh or en only (default: the shop's language(s))."),
    steps: int = typer.Option(300, "--steps", help="Training budget in optimizer steps (steps, never seconds: the same run gives the same adapter on any machine)."),
    method: str = typer.Option("lora", "--method", help="PEFT method: lora, prefix or ptuning-v2."),
    target_modules: Optional[str] = typer.Option(None, "--target-modules", help="With lora: the layers it adapts, all-linear "
                                                 "(the MLP too) or module names (default: the attention projections)."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base model folder to fine-tune (default: the workspace's base/, else the shop reader)."),
    questions: int = typer.Option(400, "--questions", help="Questions written from the pack (without --logs)."),
    min_facts: float = typer.Option(0.5, "--min-facts", help="Held-out fact accuracy the adapter must reach to be activated (0-1)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="reference (offline) or openai (ENDCLOUD_CLOUD_*); default: openai when ENDCLOUD_CLOUD_BASE_URL is set."),
    budget: Optional[float] = typer.Option(None, "--budget", help="Stop cleanly once a paid cloud has cost this many US dollars (answers so far are cached)."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate of the adapter."),
    batch_size: int = typer.Option(8, "--batch-size", help="Examples per training step."),
    seed: int = typer.Option(0, "--seed", help="Seed of the questions, their held-out share and training."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> int:
    """Everything a shop needs to serve its own pack: questions, teacher labels, fine-tuning,
    held-out evaluation, an active adapter, and the `endcloud serve` line (resumable)."""
    import os
    import warnings

    from endcloud.onboard import OnboardSettings, onboard, summary_lines

    # one line per stage and our own bars: the libraries' loading bars and deprecation chatter would bury them
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    s = OnboardSettings(logs=list(logs or []), lang=lang, steps=steps, method=method, target_modules=target_modules,
                        base=base, questions=questions,
                        min_facts=min_facts, teacher=teacher, budget=budget, lr=lr, batch_size=batch_size, seed=seed)
    result = onboard(pack, workspace, settings=s, echo=lambda line: typer.echo(line, err=True), progress=progress)
    typer.echo("\n".join(summary_lines(result.report)))
    typer.echo(f"report: {Path(result.report['workspace']) / 'reports' / 'onboard.txt'}")
    if not result.passed:
        typer.secho(f"error: quality bar not met: {result.reason}", err=True, fg="red")
        return 1
    return 0


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.add_typer(shop_app, name="shop")
