"""Prompts as token ids, and how a conversation's next prompt reuses the last one's ids.

A chat prompt is the model's chat template rendered over the conversation, then tokenized.
Rendered afresh each turn, the earlier turns are tokenized again, and the end model's own
reply comes back as *the tokenizer's* ids for its text, which need not be the ids the
model sampled (a random or small model often writes a sequence that re-tokenizes into
other pieces). The prompt then no longer starts with the ids the server already holds
key/values for, and the prefix cache misses on everything after the reply.

`build_prompt(..., after=transcript)` instead continues a `Transcript`: the ids of the
previous prompt plus the ids the model sampled, then only the new text tokenized. It is
taken only when it says exactly what a fresh render says:

    fresh render   = transcript.text + rest          (the text check: a string prefix)
    rest           = "<|im_end|>\\n<|im_start|>user\\n..."   starts with a special token
    ids            = transcript.ids + encode(rest)

Because tokenizers split special tokens out before anything else, `rest` tokenizes the
same on its own as inside the whole text, so the ids differ from a fresh tokenization
only where the model's own reply is: there they are the ids it sampled (its own view of
its reply, which re-tokenizing would change). Anything else falls back to a fresh render:
a reply the cloud wrote instead, an edited history, a template that ends an assistant
turn without a special token, a reply whose text and ids disagree (special tokens inside,
whitespace the stored text strips).

When a conversation outgrows `max_input_len`, the oldest turns go first (then the
system message); `trim_to` drops them down to less than the limit (the server uses 3/4),
so the next few turns append to an unchanged start instead of each dropping one more turn
and changing every prompt's beginning.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class Prompt:
    """One prompt: its ids, and what a later turn needs to continue from it."""

    ids: list[int]
    text: str | None  # the rendered text the ids stand for (None: cut inside a message, not continuable)
    first: tuple[str, str] | None  # (role, content) of the first non-system message kept
    system: bool  # whether the system message was kept
    reused: int = 0  # ids taken from the transcript it continued (0: rendered afresh)

    def then(self, reply_ids: Sequence[int], reply_text: str, tokenizer: Any) -> "Transcript | None":
        """The transcript after the model replied `reply_ids` (its stop token excluded), whose
        text the conversation stores as `reply_text`; None when the two disagree."""
        if self.text is None or not reply_ids:
            return None
        special = set(getattr(tokenizer, "all_special_ids", ()) or ())
        if any(t in special for t in reply_ids):
            return None  # decode dropped them from the text: the ids say more than the history
        if tokenizer.decode(list(reply_ids), skip_special_tokens=True) != reply_text:
            return None  # the stored text was cleaned (stripped): its ids would not match it
        ids = array("l", self.ids)  # 8 bytes an id: a server keeps thousands of these
        ids.extend(int(t) for t in reply_ids)
        return Transcript(self.text + reply_text, ids, self.first, self.system)


@dataclass(frozen=True)
class Transcript:
    """A conversation as the model saw it: rendered text and exact ids, prompt and reply."""

    text: str
    ids: array  # array("l"): prompt ids, then the reply's
    first: tuple[str, str] | None
    system: bool


def special_texts(tokenizer: Any) -> tuple[str, ...]:
    """The strings the tokenizer splits out as special tokens before tokenizing the rest."""
    out = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            out.add(str(tok))
    return tuple(sorted((t for t in out if t), key=len, reverse=True))


def build_prompt(messages: list[dict[str, str]], *, render: Callable[[list[dict]], str],
                 encode: Callable[[str], list[int]], max_input_len: int, specials: Sequence[str] = (),
                 after: Transcript | None = None, trim_to: int | None = None) -> Prompt:
    """The prompt for `messages` (checked {role, content} dicts), at most `max_input_len` ids.

    `after`: continue that transcript when it is this conversation's beginning (see the
    module docstring). `trim_to`: when turns must be dropped, drop them until the prompt
    is at most this long (default: `max_input_len`). The last user message is never
    dropped; if it alone is too long only its most recent ids are kept.
    """
    sys_msgs = [m for m in messages if m["role"] == "system"][:1]
    turns = [m for m in messages if m["role"] != "system"]
    if after is not None and specials:
        p = _continue(after, sys_msgs, turns, render, encode, max_input_len, specials)
        if p is not None:
            return p
    limit = max_input_len
    last_user = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=len(turns) - 1)
    while True:
        text = render(sys_msgs + turns)
        ids = encode(text)
        if len(ids) <= limit:
            return Prompt(ids, text, _first(turns), bool(sys_msgs))
        limit = min(max_input_len, trim_to or max_input_len)  # over: trim down to trim_to
        if last_user > 0:
            turns = turns[1:]
            last_user -= 1
        elif sys_msgs:
            sys_msgs = []
        else:
            return Prompt(ids[-max_input_len:], None, None, False)


def _first(turns: list[dict[str, str]]) -> tuple[str, str] | None:
    return (turns[0]["role"], turns[0]["content"]) if turns else None


def _continue(after: Transcript, sys_msgs, turns, render, encode, max_input_len: int, specials) -> Prompt | None:
    """`after`'s ids + the new text's, when `after` is exactly how this conversation begins."""
    if after.system != bool(sys_msgs):
        return None  # a system message came or went: a fresh render decides what fits
    if after.first is None:
        return None
    # the transcript began at one of these turns (the server's history window may have moved since)
    start = next((i for i, m in enumerate(turns) if (m["role"], m["content"]) == after.first), None)
    if start is None:
        return None
    kept_sys = sys_msgs if after.system else []
    text = render(kept_sys + turns[start:])
    if not text.startswith(after.text):
        return None
    rest = text[len(after.text):]
    if not rest.startswith(tuple(specials)):
        return None  # the boundary is plain text: tokenizing across it could merge pieces
    ids = list(after.ids) + encode(rest)
    if len(ids) > max_input_len:
        return None  # the caller drops turns (down to trim_to) and starts a new transcript
    return Prompt(ids, text, after.first, after.system, reused=len(after.ids))
