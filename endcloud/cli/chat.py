"""`endcloud chat`: talk to the end model in the terminal (history kept; /reset, /quit).

    endcloud chat --base endcloud-work/base --adapter endcloud-work/adapters/shop/v3
    endcloud chat --adapter endcloud-work/adapters/shop            # its active version
    echo -e "几天发货？\\n/reset\\nhello" | endcloud chat --base DIR      # piped stdin works too

Each reply is followed by a dim line with its confidence (exp of the mean token log-prob),
its token count and how many user turns the history holds.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

import typer

from endcloud.paper import PAPER

QUIT = ("/quit", "/exit", "/q")
HELP = "commands: /reset clears the history, /quit (or Ctrl-D) ends"


class ChatSession:
    """A conversation with an EndModel: keeps the history, one `say` per user message."""

    def __init__(self, model, *, system: str | None = None, max_new_tokens: int = 128,
                 temperature: float = PAPER.temperature, top_p: float = PAPER.top_p, seed: int | None = None):
        self.model = model
        self.system = system
        self.history: list[dict[str, str]] = []
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.seed = seed
        self._turn = 0

    def reset(self) -> None:
        self.history = []

    def say(self, text: str):
        """Answer `text` given the history; the reply joins the history. Returns the Generation."""
        msgs = self.history + [{"role": "user", "content": text}]
        seed = None if self.seed is None else self.seed + self._turn
        self._turn += 1
        [gen] = self.model.generate([msgs], max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                    top_p=self.top_p, seed=seed, system=self.system)
        self.history = msgs + [{"role": "assistant", "content": gen.text}]
        return gen

    @property
    def user_turns(self) -> int:
        return sum(1 for m in self.history if m["role"] == "user")


def run_chat(session: ChatSession, lines: Iterable[str], echo: Callable[[str], None], *,
             prompt: Callable[[], None] | None = None) -> int:
    """Drive `session` from `lines` (stdin); return the number of replies given."""
    replies = 0
    if prompt:
        prompt()
    for raw in lines:
        line = raw.strip()
        if line in QUIT:
            break
        if line == "/reset":
            session.reset()
            echo("[history cleared]")
        elif line in ("/help", "/?"):
            echo(HELP)
        elif line:
            gen = session.say(line)
            replies += 1
            echo(f"bot> {gen.text}")
            echo(f"[confidence {gen.confidence:.3f} · {gen.tokens} tokens · history {session.user_turns} turns]")
        if prompt:
            prompt()
    return replies


def chat(
    base: Optional[Path] = typer.Option(None, "--base", help="Base model dir (default: <workspace>/base)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A peft adapter dir (adapters/<name>/vN)."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", help="Workspace root (default $ENDCLOUD_HOME or ./endcloud-work)."),
    system: Optional[str] = typer.Option(None, "--system", help="A system message for every turn."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, help="Longest reply, in tokens."),
    temperature: float = typer.Option(PAPER.temperature, "--temperature", min=0.0, help="0 = greedy."),
    top_p: float = typer.Option(PAPER.top_p, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for reproducible replies."),
    max_input_len: int = typer.Option(PAPER.max_input_len, "--max-input-len", help="Prompt budget in tokens (oldest turns dropped first)."),
    quant: Optional[str] = typer.Option(None, "--quant", help="'int8': weight-only int8 decode (faster on big bases)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (a GPU when torch sees one), cpu, cuda or cuda:N."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, fp32, bf16 or fp16."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run the Python code the base folder ships (config.json auto_map); read it first."),
) -> None:
    """Chat with the end model in the terminal (history kept; /reset clears it, /quit or EOF ends)."""
    from endcloud.config import Workspace
    from endcloud.runtime.model import EndModel

    base_dir = base if base is not None else Workspace.resolve(workspace).base
    if adapter is not None and (adapter / "active").is_file():  # adapters/<name>: its active version
        from endcloud.end.adapters import AdapterRegistry

        adapter = AdapterRegistry(adapter.parent).active(adapter.name) or adapter
    model = EndModel.load(base_dir, adapter, max_input_len=max_input_len, quant=quant, device=device, dtype=dtype,
                          trust_remote_code=trust_remote_code or None)
    session = ChatSession(model, system=system, max_new_tokens=max_new_tokens, temperature=temperature,
                          top_p=top_p, seed=seed)
    interactive = sys.stdin.isatty()
    if interactive:
        typer.secho(f"endcloud chat · {model.name} · {HELP}", dim=True)

    def prompt() -> None:
        typer.echo("you> ", nl=False)

    run_chat(session, sys.stdin, typer.echo, prompt=prompt if interactive else None)


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.command("chat")(chat)
