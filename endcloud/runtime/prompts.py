"""Prompts as token ids, and how a conversation's next prompt reuses the last one's ids.

A chat prompt is the model's chat template rendered over the conversation, then tokenized.
Rendered afresh each turn, the earlier turns are tokenized again, and the end model's own
reply comes back as *the tokenizer's* ids for its text, which need not be the ids the
model sampled (a random or small model often writes a sequence that re-tokenizes into
other pieces). The prompt then no longer starts with the ids the server already holds
key/values for, and the prefix cache misses on everything after the reply.

`build_prompt(..., after=transcript)` instead continues a `Transcript` (the previous
prompt's text and ids, then the reply's text and the ids the model sampled). The new
conversation is rendered as text, and the ids of the transcript are kept up to the last
special token where the two texts still agree; only the rest is tokenized:

    fresh render    = transcript.text[:p] + rest            p: where a special token starts,
    ids             = transcript.ids[:i]  + encode(rest)       at or before the texts' first
                                                               difference; i: that token's index

Tokenizers split special tokens out before anything else, so `rest` (which starts with one)
tokenizes the same on its own as inside the whole text: the ids differ from a fresh
tokenization only inside earlier replies of the model, where they are the ids it sampled.
Usually the whole transcript is kept (the conversation went on: its reply, then the next
question); when something earlier differs, the ids up to there are (the cloud wrote the
reply instead: everything before that reply).

When a conversation outgrows `max_input_len`, the oldest turns go first (then the
system message); `trim_to` drops them down to less than the limit (the server uses 3/4),
so the next few turns append to an unchanged start instead of each dropping one more turn
and changing every prompt's beginning.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class Prompt:
    """One prompt: its ids, and what a later turn needs to continue from it."""

    ids: list[int]
    text: str | None  # the rendered text the ids stand for (None: cut inside a message, not continuable)
    first: tuple[str, str] | None  # (role, content) of the first non-system message kept
    system: bool  # whether the system message was kept
    reused: int = 0  # ids taken from the transcript it continued (0: tokenized afresh)
    marks: tuple[tuple[int, int], ...] = ()  # (text offset, id index) of each special token

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
        return Transcript(self.text + reply_text, ids, self.first, self.system, self.marks)


@dataclass(frozen=True)
class Transcript:
    """A conversation as the model saw it: rendered text and exact ids, prompt and reply."""

    text: str
    ids: array  # array("l"): prompt ids, then the reply's
    first: tuple[str, str] | None
    system: bool
    marks: tuple[tuple[int, int], ...] = ()  # the prompt's special tokens: (text offset, id index)


@dataclass(frozen=True)
class Specials:
    """A tokenizer's special tokens: the strings it splits out first, and their ids."""

    texts: tuple[str, ...]
    ids: frozenset[int]
    pattern: re.Pattern | None

    @classmethod
    def of(cls, tokenizer: Any) -> "Specials":
        out = set(getattr(tokenizer, "all_special_tokens", ()) or ())
        for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
            if getattr(tok, "special", False):
                out.add(str(tok))
        texts = tuple(sorted((t for t in out if t), key=len, reverse=True))
        ids = set()
        for t in texts:
            i = tokenizer.convert_tokens_to_ids(t)
            if isinstance(i, int) and i >= 0:
                ids.add(i)
        pattern = re.compile("|".join(re.escape(t) for t in texts)) if texts else None
        return cls(texts, frozenset(ids), pattern)

    def marks(self, text: str, ids: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """(text offset, id index) of every special token; () when the two do not pair up."""
        if self.pattern is None:
            return ()
        offsets = [m.start() for m in self.pattern.finditer(text)]
        at = [i for i, t in enumerate(ids) if t in self.ids]
        return tuple(zip(offsets, at)) if len(offsets) == len(at) else ()


def build_prompt(messages: list[dict[str, str]], *, render: Callable[[list[dict]], str],
                 encode: Callable[[str], list[int]], max_input_len: int, specials: Specials | None = None,
                 after: Transcript | None = None, trim_to: int | None = None, late_system: bool = False) -> Prompt:
    """The prompt for `messages` (checked {role, content} dicts), at most `max_input_len` ids.

    The first system message is the system; later ones (the shop's knowledge for the newest
    question, say) stay where they are when `late_system` (the chat template renders a system
    message anywhere), else they join the first. `after`: continue that transcript (see the
    module docstring; needs `specials`). `trim_to`: when turns must be dropped, drop them
    until the prompt is at most this long (default: `max_input_len`). The last user message
    is never dropped; if it alone is too long only its most recent ids are kept.
    """
    sys_msgs, turns = _split_system(messages, late_system)
    if after is not None and specials is not None and specials.pattern is not None:
        p = _continue(after, sys_msgs, turns, render, encode, max_input_len, specials)
        if p is not None:
            return p
    limit = max_input_len
    last_user = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=len(turns) - 1)
    while True:
        text = render(sys_msgs + turns)
        ids = encode(text)
        if len(ids) <= limit:
            return Prompt(ids, text, _first(turns), bool(sys_msgs), 0, specials.marks(text, ids) if specials else ())
        limit = min(max_input_len, trim_to or max_input_len)  # over: trim down to trim_to
        if last_user > 0:
            turns = turns[1:]
            last_user -= 1
        elif sys_msgs:
            sys_msgs = []
        else:
            return Prompt(ids[-max_input_len:], None, None, False)


def _split_system(messages: list[dict[str, str]], late_system: bool) -> tuple[list[dict], list[dict]]:
    """(the system message as a list of at most one, the other messages in order)."""
    if not late_system:
        systems = [m["content"] for m in messages if m["role"] == "system"]
        sys_msgs = [{"role": "system", "content": "\n\n".join(systems)}] if systems else []
        return sys_msgs, [m for m in messages if m["role"] != "system"]
    if messages and messages[0]["role"] == "system":
        return [messages[0]], list(messages[1:])
    return [], list(messages)


def _first(turns: list[dict[str, str]]) -> tuple[str, str] | None:
    """(role, content) of the first non-system turn: where a conversation's transcript begins."""
    return next(((m["role"], m["content"]) for m in turns if m["role"] != "system"), None)


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of `a` and `b` (slice compares: C speed)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _continue(after: Transcript, sys_msgs, turns, render, encode, max_input_len: int,
              specials: Specials) -> Prompt | None:
    """`after`'s ids up to where the texts part (at a special token) + the rest tokenized."""
    if after.first is None or not after.marks:
        return None
    # the transcript began at one of these turns (the server's history window may have moved
    # since); a late system message before it (the first question's knowledge) is not history
    start = next((i for i, m in enumerate(turns) if (m["role"], m["content"]) == after.first), None)
    if start is None:
        return None
    if after.system != bool(sys_msgs):
        return None  # a system message came or went: a fresh render decides what fits
    text = render(sys_msgs + turns[start:])
    same = _common_prefix(text, after.text)
    if same == len(after.text) and text[same:].startswith(specials.texts):
        p, keep = same, len(after.ids)  # the usual case: the conversation went on from the transcript
    else:
        # the last special token that starts at or before the first difference, and is whole in the new text
        k = bisect_right(after.marks, (same, len(after.ids))) - 1
        while k >= 0 and not text.startswith(specials.texts, after.marks[k][0]):
            k -= 1
        if k < 0:
            return None
        p, keep = after.marks[k]
    rest = encode(text[p:])
    if keep + len(rest) > max_input_len:
        return None  # the caller drops turns (down to trim_to) and starts a new transcript
    ids = list(after.ids[:keep]) + rest
    # the kept part's marks, then the rest's (offsets and indexes shifted)
    marks = tuple(m for m in after.marks if m[1] < keep) + tuple((o + p, i + keep) for o, i in specials.marks(text[p:], rest))
    return Prompt(ids, text, after.first, after.system, reused=keep, marks=marks)
