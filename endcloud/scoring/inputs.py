"""Eval inputs: what `endcloud eval` asks the end models, read from the files that exist.

Accepted, by content:
  - the synthetic shop's `chats/eval.jsonl`: {"id","lang","intent","query","context","facts"}
  - corpus `eval.jsonl` pairs (`Pair.to_json()`, context turns as {"role","text"}), facts when known
  - chats JSONL ({"id","messages":[...]}): the last user message is the query
  - a raw chat log in any format `endcloud corpus prepare` reads (ECD, JDDC, CSV; by content):
    every agent reply that answers a customer turn, through the corpus pipeline
    (`endcloud.corpus.log_pairs`), the reply kept as the input's `reference`
  - plain text: one customer input per non-blank line

Pairs and chats carry the agent's logged reply as `reference` (the response; the assistant
message after the last user message), which `endcloud eval` scores against when no teacher
is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endcloud.errors import DataError
from endcloud.fileio import read_jsonl
from endcloud.text import detect_lang


@dataclass
class EvalInput:
    """One customer input to evaluate; `facts` (when known) are what a right reply states."""

    id: str
    query: str
    lang: str = ""
    context: list[dict[str, str]] = field(default_factory=list)
    facts: list[str] | None = None
    intent: str | None = None
    reference: str | None = None
    """The reply the shop's agent gave in the log (a pair's response), when known."""

    def __post_init__(self) -> None:
        if not self.lang:
            self.lang = detect_lang(self.query)

    def messages(self) -> list[dict[str, str]]:
        """Context + query as OpenAI-style messages."""
        return [dict(m) for m in self.context] + [{"role": "user", "content": self.query}]

    @classmethod
    def coerce(cls, item: Any, n: int) -> "EvalInput":
        """An EvalInput from an EvalInput, a string, a Pair or a dict of any accepted form."""
        if isinstance(item, EvalInput):
            return item
        if isinstance(item, str):
            return cls(id=f"q{n + 1}", query=item)
        d = item.to_json() if hasattr(item, "to_json") else dict(item)
        if "query" not in d and "messages" in d:
            msgs = [{"role": m.get("role", "user"), "content": m.get("content", m.get("text", ""))} for m in d["messages"]]
            users = [k for k, m in enumerate(msgs) if m["role"] == "user"]
            if not users:
                raise DataError(f"input #{n + 1} has messages but no user message")
            last = users[-1]
            d = {**d, "query": msgs[last]["content"], "context": msgs[:last]}
            # Facts of the assistant message answering it, when the chat carries them.
            after = d["messages"][last + 1] if last + 1 < len(d["messages"]) else {}
            d.setdefault("facts", after.get("facts"))
            d.setdefault("intent", after.get("intent"))
            if after.get("role") == "assistant" and "reference" not in d:
                d["reference"] = after.get("content", after.get("text"))
        if "query" not in d:
            raise DataError(f"input #{n + 1} has no 'query' (keys: {sorted(d)})")
        context = [{"role": t.get("role", "user"), "content": t.get("content", t.get("text", ""))} for t in d.get("context") or []]
        reference = d.get("reference", d.get("response"))
        return cls(id=str(d.get("id", f"q{n + 1}")), query=str(d["query"]), lang=d.get("lang") or "", context=context,
                   facts=list(d["facts"]) if d.get("facts") is not None else None, intent=d.get("intent"),
                   reference=str(reference) if reference is not None else None)


def load_inputs(path: str | Path, *, limit: int | None = None) -> list[EvalInput]:
    """Read eval inputs from a JSONL file (any accepted form) or a plain text file."""
    path = Path(path)
    if not path.exists():
        raise DataError("eval input file not found; pass --inputs FILE or --probes paper", path=str(path))
    from endcloud.corpus import file_kind, log_pairs

    kind = file_kind(path)
    if _starts_with_json(path):
        out = [EvalInput.coerce(d, n) for n, d in enumerate(read_jsonl(path))]
    elif kind == "chats":
        pairs = log_pairs([path])
        out = [EvalInput.coerce(d, n) for n, d in enumerate(pairs[:limit] if limit else pairs)]
    else:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        out = [EvalInput(id=f"q{n + 1}", query=q) for n, q in enumerate(x for x in lines if x)]
    if not out:
        raise DataError("no eval inputs in the file", path=str(path))
    return out[:limit] if limit else out


def _starts_with_json(path: Path) -> bool:
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith(b"{")
    return False
