"""Pairs: one context -> response example per agent turn of a cleaned dialogue.

An assistant turn makes a pair when the turn right before it is the user's: `query` is
that user turn, `context` the turns before the query (the last `max_context_turns` of
them), `response` the assistant turn. Facts and intent on the assistant turn's meta (the
synthetic shop puts them there) travel with the pair. The JSON form is exactly
`Pair.to_json()`:

    {"id", "source", "session", "lang", "context": [{"role", "text"}], "query", "response"}
    (+ "facts", "intent" when known)

`build_pairs` returns `Pair` objects; `pair_lines` is the same thing as ready JSON lines,
and `pair_lines_utf8` as UTF-8 bytes for the streaming pipeline (each turn's text is
JSON-escaped and encoded once, not once per pair it appears in), with the exact and
near-duplicate keys of each pair: exact = the same query and response after cleaning
and redaction (the context is not compared); near = the same once punctuation,
whitespace, digits and case are removed from both.
"""

from __future__ import annotations

from collections import Counter
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # the C escaper json.dumps uses
from typing import Any

from endcloud.records import Dialogue, Pair, Turn

from endcloud.corpus.clean import near_key_bytes

DEFAULT_MAX_CONTEXT_TURNS = 8


def pair_id(source: str, session: str, turn_index: int) -> str:
    return f"{source}:{session}:{turn_index}"


def _facts_intent(meta: dict[str, Any]) -> tuple[list[str] | None, str | None]:
    facts = meta.get("facts")
    intent = meta.get("intent")
    return (list(facts) if facts is not None else None), (str(intent) if intent is not None else None)


def build_pairs(dialogue: Dialogue, *, max_context_turns: int = DEFAULT_MAX_CONTEXT_TURNS, stats: Counter | None = None) -> list[Pair]:
    """Every (context, query, response) of a dialogue, as `Pair`s."""
    turns = dialogue.turns
    out: list[Pair] = []
    for i in range(1, len(turns)):
        t = turns[i]
        if t.role != "assistant":
            continue
        if turns[i - 1].role != "user":
            if stats is not None:
                stats["assistant_without_query"] += 1
            continue
        lo = max(0, i - 1 - max_context_turns)
        facts, intent = _facts_intent(t.meta)
        out.append(
            Pair(
                id=pair_id(dialogue.source, dialogue.id, i),
                source=dialogue.source,
                session=dialogue.id,
                lang=dialogue.lang,
                context=[Turn(c.role, c.text) for c in turns[lo : i - 1]],
                query=turns[i - 1].text,
                response=t.text,
                facts=facts,
                intent=intent,
            )
        )
    if stats is not None and turns and turns[0].role == "assistant":
        stats["assistant_without_query"] += 1
    return out


def pair_lines(
    dialogue: Dialogue, *, max_context_turns: int = DEFAULT_MAX_CONTEXT_TURNS, stats: Counter | None = None
) -> tuple[list[str], list[int], list[int]]:
    """The pairs of a dialogue as JSON lines (no newline), identical to
    `json.dumps(pair.to_json(), ensure_ascii=False)`, plus an exact and a near-duplicate
    key per pair (see `pair_lines_raw`)."""
    t = dialogue.turns
    return pair_lines_raw(
        dialogue.source, dialogue.id, dialogue.lang, [x.role for x in t], [x.text for x in t], [x.meta for x in t],
        max_context_turns=max_context_turns, stats=stats,
    )


def pair_lines_raw(
    source: str, session: str, lang: str, roles: list[str], texts: list[str], metas: list[dict[str, Any]] | None,
    *, max_context_turns: int = DEFAULT_MAX_CONTEXT_TURNS, stats: Counter | None = None,
) -> tuple[list[str], list[int], list[int]]:
    """`pair_lines` on parallel lists (`pair_lines_utf8`, decoded to str)."""
    lines, exact, near = pair_lines_utf8(
        source, session, lang, roles, texts, metas, max_context_turns=max_context_turns, stats=stats
    )
    return [line.decode("utf-8") for line in lines], exact, near


_FRAGS: dict[str, bytes] = {}  # role -> format of one context turn, b'{"role": "user", "text": %s}'


def _frag(role: str) -> bytes:
    f = _FRAGS.get(role)
    if f is None:
        f = _FRAGS[role] = b'{"role": "' + role.encode("utf-8").replace(b"%", b"%%") + b'", "text": %s}'
    return f


_LINE = b'{"id": %s%d", %s%s], "query": %s, "response": %s'  # closed by facts/intent and "}"


def escape_utf8(texts: list[str]) -> list[bytes]:
    """Each text as a JSON string literal in UTF-8 bytes (`json.dumps(t, ensure_ascii=False)`),
    in three C-level passes over the batch: the escaped texts never hold a raw NUL (JSON
    writes it as \\u0000), so NUL can join and split them."""
    if not texts:
        return []
    return "\x00".join(map(encode_basestring, texts)).encode("utf-8").split(b"\x00")


def pair_lines_utf8(
    source: str, session: str, lang: str, roles: list[str], texts: list[str], metas: list[dict[str, Any]] | None,
    *, max_context_turns: int = DEFAULT_MAX_CONTEXT_TURNS, stats: Counter | None = None,
    escaped: list[bytes] | None = None, near_keys: list[bytes] | None = None,
) -> tuple[list[bytes], list[int], list[int]]:
    """The pairs of one dialogue as UTF-8 JSON lines (no newline), each equal to
    `json.dumps(pair.to_json(), ensure_ascii=False).encode()`, with their dedupe keys: the
    pipeline's hot path. Lines are built from bytes so each text is escaped and encoded
    once however many pairs quote it as context.

    `escaped` (`escape_utf8(texts)`) and `near_keys` (`near_key_bytes` of each text) may be
    passed in when the caller made them for a whole batch at once.

    Keys are Python's 64-bit `hash` of (query, response) and of their `near_key`s: fast and
    equal across the worker processes of one run (they are forked from one forkserver and
    share its hash seed) but NOT across runs — use them only inside one `prepare`."""
    n = len(roles)
    lines: list[bytes] = []
    exact: list[int] = []
    near: list[int] = []
    skipped = 1 if n and roles[0] == "assistant" else 0
    if n >= 2:
        enc = escaped if escaped is not None else escape_utf8(texts)
        frag = [_frag(r) % e for r, e in zip(roles, enc)]
        head = (
            f'"source": {encode_basestring(source)}, "session": {encode_basestring(session)}, '
            f'"lang": {encode_basestring(lang)}, "context": ['
        ).encode("utf-8")
        id_open = encode_basestring(f"{source}:{session}:")[:-1].encode("utf-8")  # '"jddc:s1:' — the number follows
        for i in range(1, n):
            if roles[i] != "assistant":
                continue
            if roles[i - 1] != "user":
                skipped += 1
                continue
            lo = i - 1 - max_context_turns
            line = _LINE % (id_open, i, head, b", ".join(frag[lo if lo > 0 else 0 : i - 1]), enc[i - 1], enc[i])
            if metas is not None and metas[i]:
                facts, intent = _facts_intent(metas[i])
                if facts is not None:
                    line += (', "facts": [' + ", ".join(encode_basestring(str(f)) for f in facts) + "]").encode("utf-8")
                if intent is not None:
                    line += f', "intent": {encode_basestring(intent)}'.encode("utf-8")
            lines.append(line + b"}")
            exact.append(hash((texts[i - 1], texts[i])))
            if near_keys is not None:
                near.append(hash((near_keys[i - 1], near_keys[i])))
            else:
                near.append(hash((near_key_bytes(texts[i - 1]), near_key_bytes(texts[i]))))
    if stats is not None and skipped:
        stats["assistant_without_query"] += skipped
    return lines, exact, near
