"""Training data in the ecosystem's formats: what TRL, LLaMA-Factory and OpenAI fine-tuning read.

    FORMATS["openai"].write(messages, response)    {"messages": [{"role", "content"}, ..., {"role": "assistant", ...}]}
    FORMATS["sharegpt"].write(messages, response)  {"conversations": [{"from": "human"|"gpt", "value"}], "system"?}
    FORMATS["alpaca"].write(messages, response)    {"instruction", "input": "", "output", "system"?, "history": [[q, a]]}
    as_messages(row) -> {"messages": [...]} | None    # any of the three back to OpenAI messages (corpus readers)

    endcloud corpus export --pairs W/corpus/pairs.jsonl --labels W/labels/labels.jsonl --format sharegpt -o shop.jsonl
    endcloud corpus prepare shop-sharegpt.jsonl -o W/corpus         # the same rows read back as chat logs

Who reads what: OpenAI's fine-tuning API and TRL's `SFTTrainer` take the `messages` form;
LLaMA-Factory takes `sharegpt` and `alpaca` (a `dataset_info.json` entry naming the columns is
written beside the file: `dataset_info_entry`). One example is one conversation ending with
the reply to learn; earlier assistant turns are context.

Shapes the stricter readers demand, and what is done about them: ShareGPT and Alpaca want
strictly alternating user/assistant turns opening with the user, so consecutive turns of one
speaker are joined with a newline and an opening assistant turn (a shop's greeting) is dropped;
every system message becomes the one `system` field. OpenAI's form keeps the messages as they
are. Nothing here touches privacy: the rows hold what the pairs hold (already redacted by
`corpus prepare`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from endcloud.errors import DataError
from endcloud.registry import Registry

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass(frozen=True)
class Format:
    """One format: `write(messages, response) -> row`, `read(row) -> messages` (the reply last),
    whether a row is in this format, and the LLaMA-Factory `dataset_info.json` entry (None: not
    one of LLaMA-Factory's)."""

    name: str
    write: Callable[[list[dict[str, str]], str], dict[str, Any]]
    read: Callable[[dict[str, Any]], list[dict[str, str]]]
    is_row: Callable[[dict[str, Any]], bool]
    llamafactory: dict[str, Any] | None
    help: str


def _system_and_turns(messages: list[dict[str, str]], response: str) -> tuple[str, list[dict[str, str]]]:
    """One system text, and user/assistant turns that alternate from a user turn and end with the reply."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"].strip())
    turns: list[dict[str, str]] = []
    for m in [*(m for m in messages if m["role"] != "system"), {"role": "assistant", "content": response}]:
        if m["role"] not in ("user", "assistant"):
            raise DataError(f"role {m['role']!r} has no place in a chat example; use user, assistant or system")
        if turns and turns[-1]["role"] == m["role"]:
            turns[-1] = {"role": m["role"], "content": turns[-1]["content"] + "\n" + m["content"]}
        else:
            turns.append({"role": m["role"], "content": m["content"]})
    while turns and turns[0]["role"] != "user":
        turns.pop(0)
    if len(turns) < 2:
        raise DataError("an example needs a user turn before the reply")
    return system, turns


# ---- openai: {"messages": [...]} -------------------------------------------------------------------
def _openai_write(messages: list[dict[str, str]], response: str) -> dict[str, Any]:
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    return {"messages": msgs + [{"role": "assistant", "content": response}]}


def _openai_read(row: dict[str, Any]) -> list[dict[str, str]]:
    msgs = row.get("messages")
    if not isinstance(msgs, list):
        raise DataError(f"an OpenAI row needs a messages list, got keys {sorted(row)[:8]}")
    return [{"role": str(m.get("role")), "content": str(m.get("content", ""))} for m in msgs if isinstance(m, dict)]


# ---- sharegpt: {"conversations": [{"from", "value"}], "system"?} ------------------------------------------
def _sharegpt_write(messages: list[dict[str, str]], response: str) -> dict[str, Any]:
    system, turns = _system_and_turns(messages, response)
    row: dict[str, Any] = {"conversations": [{"from": "human" if t["role"] == "user" else "gpt", "value": t["content"]}
                                             for t in turns]}
    if system:
        row["system"] = system
    return row


def _sharegpt_read(row: dict[str, Any]) -> list[dict[str, str]]:
    conv = row.get("conversations")
    if not isinstance(conv, list):
        raise DataError(f"a ShareGPT row needs a conversations list, got keys {sorted(row)[:8]}")
    out = [{"role": "system", "content": str(row["system"])}] if row.get("system") else []
    for j, t in enumerate(conv):
        who = str(t.get("from", "")).lower() if isinstance(t, dict) else ""
        if who not in SHAREGPT_ROLES:
            raise DataError(f"ShareGPT turn {j}: from {who!r} is not human, gpt or system (tool turns are not chat)")
        out.append({"role": SHAREGPT_ROLES[who], "content": str(t.get("value", ""))})
    return out


# ---- alpaca: {"instruction", "input", "output", "system"?, "history"?} -------------------------------------
def _alpaca_write(messages: list[dict[str, str]], response: str) -> dict[str, Any]:
    system, turns = _system_and_turns(messages, response)
    history = []
    for i in range(0, len(turns) - 2, 2):
        if turns[i + 1]["role"] == "assistant":
            history.append([turns[i]["content"], turns[i + 1]["content"]])
    row: dict[str, Any] = {"instruction": turns[-2]["content"], "input": "", "output": turns[-1]["content"]}
    if system:
        row["system"] = system
    if history:
        row["history"] = history
    return row


def _alpaca_read(row: dict[str, Any]) -> list[dict[str, str]]:
    if "instruction" not in row or "output" not in row:
        raise DataError(f"an Alpaca row needs instruction and output, got keys {sorted(row)[:8]}")
    out = [{"role": "system", "content": str(row["system"])}] if row.get("system") else []
    for pair in row.get("history") or []:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise DataError(f"an Alpaca history entry is [question, answer], got {pair!r:.80}")
        out += [{"role": "user", "content": str(pair[0])}, {"role": "assistant", "content": str(pair[1])}]
    query = str(row["instruction"]) + (("\n" + str(row["input"])) if row.get("input") else "")
    return out + [{"role": "user", "content": query}, {"role": "assistant", "content": str(row["output"])}]


FORMATS: Registry[Format] = Registry("training data format")
FORMATS.add("openai", Format("openai", _openai_write, _openai_read, lambda r: isinstance(r.get("messages"), list), None,
                             "OpenAI fine-tuning / TRL SFTTrainer: {messages: [{role, content}]}"))
FORMATS.add("sharegpt", Format(
    "sharegpt", _sharegpt_write, _sharegpt_read, lambda r: isinstance(r.get("conversations"), list),
    {"formatting": "sharegpt", "columns": {"messages": "conversations", "system": "system"},
     "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}},
    "LLaMA-Factory sharegpt: {conversations: [{from: human|gpt, value}], system}"))
FORMATS.add("alpaca", Format(
    "alpaca", _alpaca_write, _alpaca_read, lambda r: "instruction" in r and "output" in r,
    {"formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                         "system": "system", "history": "history"}},
    "LLaMA-Factory alpaca: {instruction, input, output, system, history}"))


def as_messages(row: dict[str, Any]) -> dict[str, Any] | None:
    """A ShareGPT or Alpaca row as an OpenAI-messages row (other keys kept: id, lang, ...);
    None when the row is neither (an OpenAI row is already one)."""
    for name in ("sharegpt", "alpaca"):
        fmt = FORMATS.get(name)
        if fmt.is_row(row):
            keep = {k: v for k, v in row.items() if k not in ("conversations", "system", "instruction", "input",
                                                                "output", "history")}
            return {**keep, "messages": fmt.read(row), "source": row.get("source") or name}
    return None


def dataset_info_entry(fmt: str, file_name: str) -> dict[str, Any] | None:
    """LLaMA-Factory's `dataset_info.json` entry for a file written in `fmt` (None for openai)."""
    spec = FORMATS.get(fmt).llamafactory
    return None if spec is None else {"file_name": file_name, **spec}


__all__ = ["FORMATS", "Format", "as_messages", "dataset_info_entry"]
