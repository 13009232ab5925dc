"""CLI commands of the `shop` room: make a synthetic shop pack, check a pack, search its knowledge.

    endcloud shop new shop/ --lang en --sessions 100000 --seed 1
    endcloud shop check shop/
    endcloud shop search shop/ "can I choose the courier?"
"""

from __future__ import annotations

from pathlib import Path

import typer

shop_app = typer.Typer(help="The shop: a synthetic shop pack (catalog, FAQ, policies, chat logs) and its knowledge base.",
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


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.add_typer(shop_app, name="shop")
