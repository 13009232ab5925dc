"""Readers: turn a chat-log file (ECD, JDDC, JSONL, CSV) into `Dialogue`s.

Every reader is registered in `READERS` under its format name and is called as
`READERS[name](path, stats=None) -> Iterator[Dialogue]`. A reader keeps everything the
source says and drops only what is not a message (negative ECD lines, JDDC `NULL`,
system and routing lines), counting each drop in `stats` so every input line is
accounted for. Cleaning, redaction and pairs come later (`clean.py`, `pairs.py`).

The streaming pipeline reads a file in two halves so both cores can work: the parent
cuts the raw bytes into chunks that end on a record boundary (`Reader.chunks`; for JDDC
on a *session* boundary, since consecutive lines of one speaker are merged), and a
worker parses each chunk (`Reader.parse`). The plain call does the same in one process,
so serial and parallel reads give the same dialogues.

    >>> for d in READERS["jddc"]("chats.txt"): print(d.id, len(d.turns))

Errors (missing, binary, not UTF-8, truncated or malformed lines, wrong CSV header,
unknown format) are `DataError`s naming the file and line.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from endcloud.errors import DataError
from endcloud.records import Dialogue, Turn
from endcloud.registry import Registry
from endcloud.text import CJK_CHARACTERS

Stats = Counter  # rule name -> count; readers and cleaners add to one

#: Role names each format may use, mapped to ours. "system" turns are dropped (counted).
ROLE_ALIASES: dict[str, str] = {
    "user": "user", "customer": "user", "buyer": "user", "0": "user",
    "assistant": "assistant", "agent": "assistant", "waiter": "assistant", "seller": "assistant", "1": "assistant",
    "system": "system",
}

JDDC_FIELDS = ("session_id", "user_id", "waiter_send", "is_transfer", "is_repeat", "sku", "content")
CSV_COLUMNS = ("conversation_id", "role", "text")
# A CSV of single exchanges (one question and its answer per row, e.g. Bitext's
# instruction,response): the first column of each list that the header has.
CSV_QUERY_COLUMNS = ("query", "question", "instruction", "utterance", "customer", "input", "prompt")
CSV_RESPONSE_COLUMNS = ("response", "answer", "reply", "agent", "output")

# Chinese characters and CJK punctuation: where word segmentation inserted spaces that
# Chinese does not have (ECD). Spaces between two latin words/numbers are kept.
_SEGMENT_SPACE = re.compile(f"(?<=[{CJK_CHARACTERS}]) +| +(?=[{CJK_CHARACTERS}])")

# JDDC drops: system notices and the routing line a session may open with
# ("人工客服 京东快递(移动端) 你好"); a customer mentioning 人工客服 mid-sentence is kept.
_JDDC_SYSTEM = ("系统提示", "[系统提示")
_JDDC_ROUTING = re.compile(r"^人工客服\s+\S")

_SNIFF_BYTES = 64 * 1024


def join_segmented(text: str) -> str:
    """Undo Chinese word segmentation: '打 95 折 的 EMS 快递' -> '打95折的EMS快递'."""
    return _SEGMENT_SPACE.sub("", text.strip()) if " " in text else text.strip()


# --------------------------------------------------------------------------- chunks


@dataclass(slots=True)
class Chunk:
    """A slice of an input file that a worker can parse alone."""

    path: str
    fmt: str
    first_line: int  # 1-based line number of the chunk's first line
    data: bytes | list["RawDialogue"]  # raw bytes, or dialogues already parsed (CSV)
    nbytes: int = 0  # input bytes this chunk covers (progress)
    stats: Stats | None = None  # counts made while cutting (CSV parses in the parent)


def _count_byte(data: bytes, byte: int) -> int:
    """`data.count(bytes([byte]))`, 5x faster on a megabyte (bytes.count has no fast path
    for one byte; numpy compares a vector at a time): the parent counts every line."""
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == byte))


def check_file(path: str | os.PathLike[str]) -> Path:
    """Fail early and clearly on a missing path, a folder, or a binary file."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found; check the path", path=str(p))
    if p.is_dir():
        raise DataError("is a folder; pass the chat-log files inside it", path=str(p))
    with open(p, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    _check_binary(head, str(p), 1)
    return p


def _check_binary(block: bytes, path: str, first_line: int) -> None:
    nul = block.find(b"\x00")
    if nul >= 0:
        line = first_line + block.count(b"\n", 0, nul)
        raise DataError(
            "binary data (a NUL byte), not a text chat log; pass a UTF-8 text file (ECD, JDDC, JSONL or CSV)",
            path=path, line=line,
        )


def _decode(data: bytes, path: str, first_line: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"not valid UTF-8 (byte 0x{data[e.start]:02x} at column {col}); convert the file to UTF-8, "
            "e.g. `iconv -f GBK -t UTF-8`",
            path=path, line=line,
        ) from None


def _line_blocks(path: str, block_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (first_line, bytes ending on a newline or EOF, at_eof), checking for binary data."""
    line = 1
    carry = b""
    with open(path, "rb") as f:
        first = True
        while True:
            block = f.read(block_bytes)
            if first:
                first = False
                if block.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM
                    block = block[3:]
            if not block:
                if carry:
                    yield line, carry, True
                return
            _check_binary(block, path, line + carry.count(b"\n"))
            buf = carry + block if carry else block
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                carry = buf
                continue
            out, carry = buf[:cut], buf[cut:]
            yield line, out, False
            line += _count_byte(out, 10)


def _line_chunks(path: str, fmt: str, block_bytes: int) -> Iterator[Chunk]:
    for first_line, data, _ in _line_blocks(path, block_bytes):
        yield Chunk(path, fmt, first_line, data, len(data))


def _session_chunks(path: str, fmt: str, block_bytes: int) -> Iterator[Chunk]:
    """Like line chunks, but never split the run of lines of one session (JDDC)."""
    carry = b""
    carry_line = 1
    for first_line, data, at_eof in _line_blocks(path, block_bytes):
        buf = carry + data if carry else data
        start_line = carry_line if carry else first_line
        if at_eof:
            carry = b""
            yield Chunk(path, fmt, start_line, buf, len(buf))
            continue
        # Walk back from the last line over the lines that share its session id.
        end = len(buf) - 1  # buf ends with b"\n"
        last = buf.rfind(b"\n", 0, end) + 1
        tab = buf.find(b"\t", last, end)
        sid = buf[last:tab + 1] if tab >= 0 else buf[last:end] + b"\t"
        pos = last
        while pos > 0:
            prev = buf.rfind(b"\n", 0, pos - 1) + 1
            if not buf.startswith(sid, prev):
                break
            pos = prev
        if pos == 0:  # the whole buffer is one session so far
            carry, carry_line = buf, start_line
            continue
        out, carry = buf[:pos], buf[pos:]
        carry_line = start_line + _count_byte(out, 10)
        yield Chunk(path, fmt, start_line, out, len(out))
    if carry:
        yield Chunk(path, fmt, carry_line, carry, len(carry))


# --------------------------------------------------------------------------- parsers
#
# Parsers return `RawDialogue`s (parallel lists of roles and texts): the pipeline works on
# these directly, since building a `Turn` object per message costs more than the parsing.
# `Reader.__call__` wraps them into `Dialogue`s for everyone else.


class RawDialogue(NamedTuple):
    id: str
    source: str
    lang: str  # "" when the source does not say (the pipeline detects it)
    roles: list[str]
    texts: list[str]
    metas: list[dict[str, Any]] | None  # per-turn extras (JSONL), None when there are none
    meta: dict[str, Any]

    def to_dialogue(self) -> Dialogue:
        metas = self.metas or [None] * len(self.roles)
        turns = [Turn(r, t, dict(m) if m else {}) for r, t, m in zip(self.roles, self.texts, metas)]
        return Dialogue(id=self.id, source=self.source, turns=turns, lang=self.lang, meta=dict(self.meta))


def _append(roles: list[str], texts: list[str], metas: list[dict[str, Any]] | None, role: str, text: str,
            meta: dict[str, Any] | None, stats: Stats) -> None:
    """Append a message, merging it into the previous turn when the same speaker goes on."""
    if roles and roles[-1] == role:
        texts[-1] = f"{texts[-1]} {text}" if texts[-1] else text
        if metas is not None and meta:
            metas[-1] = {**metas[-1], **meta}
        stats["merged_same_speaker"] += 1
    else:
        roles.append(role)
        texts.append(text)
        if metas is not None:
            metas.append(dict(meta) if meta else {})


def _text_lines(chunk: Chunk) -> list[str]:
    return _split_lines(_decode(chunk.data, chunk.path, chunk.first_line))  # type: ignore[arg-type]


def _split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parse_ecd(chunk: Chunk, stats: Stats) -> list[RawDialogue]:
    """ECD: `label \\t utt_1 \\t ... \\t response`; label-1 lines become dialogues whose
    turns alternate user/assistant and end on the response (the assistant). The word
    segmentation is undone (`join_segmented`)."""
    stem = Path(chunk.path).stem
    out: list[RawDialogue] = []
    blank = negative = utts = read = 0
    for lineno, line in enumerate(_text_lines(chunk), chunk.first_line):
        if line[-1:] == "\r":
            line = line[:-1]
        if not line.strip():
            blank += 1
            continue
        read += 1
        fields = line.split("\t")
        label = fields[0].strip()
        if label not in ("0", "1") or len(fields) < 3:
            raise DataError(
                f"not an ECD line: expected `label<TAB>utterance...<TAB>response` with label 0 or 1, "
                f"got {line[:60]!r}; is --format right?",
                path=chunk.path, line=lineno,
            )
        if label == "0":
            negative += 1
            continue
        n = len(fields) - 1
        utts += n
        # Roles alternate backwards from the response, which is the assistant's.
        roles = [("assistant" if (n - 1 - i) % 2 == 0 else "user") for i in range(n)]
        out.append(RawDialogue(f"{stem}:{lineno}", "ecd", "", roles, [join_segmented(u) for u in fields[1:]], None, {}))
    stats["lines_read"] += read
    stats["utterances_in"] += utts
    stats["ecd_negative_skipped"] += negative
    if blank:
        stats["blank_lines"] += blank
    return out


_JDDC_ROLE = {"0": "user", "1": "assistant"}
# How a content that may be dropped starts (NULL, system notice, routing line): every
# other non-empty content is kept without further checks.
_JDDC_DROP_START = ("N", "系", "[", "人")


def parse_jddc(chunk: Chunk, stats: Stats) -> list[RawDialogue]:
    """JDDC: 7 tab fields `session_id user_id waiter_send is_transfer is_repeat sku content`.

    waiter_send 0 = customer (user), 1 = agent (assistant); a content with tabs (8+
    fields) is joined back; consecutive messages of one speaker are merged; `NULL`,
    system notices and the opening routing line are dropped (counted). Masked
    placeholders (`[订单x]`, `[ORDERID_123]`, `4**号`) are kept exactly.

    This is the hot path, so it does the least per line: one split, one strip, one
    prefix test before any drop rule. A chunk with a blank, short or malformed
    line goes to `_parse_jddc_lines`, which gives the same dialogues and counts and
    raises the error naming the line."""
    lines = _text_lines(chunk)
    out: list[RawDialogue] = []
    sid = None
    roles: list[str] = []
    texts: list[str] = []
    last = ""  # role of the session's last kept message
    null = empty = system = routing = merged = no_messages = 0
    drop_start, role_of = _JDDC_DROP_START, _JDDC_ROLE
    try:
        for line in lines:
            s, _, ws, _, _, _, content = line.split("\t", 6)
            role = role_of[ws]
            if s != sid:
                if roles:
                    out.append(RawDialogue(sid, "jddc", "", roles, texts, None, {}))  # type: ignore[arg-type]
                elif sid is not None:
                    no_messages += 1
                sid, roles, texts, last = s, [], [], ""
            c = content.strip()
            if not c:
                empty += 1
                continue
            if c.startswith(drop_start):
                if c == "NULL":
                    null += 1
                    continue
                if c.startswith(_JDDC_SYSTEM):
                    system += 1
                    continue
                if role == "user" and c.startswith("人工客服") and _JDDC_ROUTING.match(c):
                    routing += 1
                    continue
            if role == last:
                texts[-1] = texts[-1] + " " + c
                merged += 1
            else:
                roles.append(role)
                texts.append(c)
                last = role
    except (ValueError, KeyError):  # fewer than 7 fields, or waiter_send not 0/1
        return _parse_jddc_lines(chunk, lines, stats)
    if roles:
        out.append(RawDialogue(sid, "jddc", "", roles, texts, None, {}))  # type: ignore[arg-type]
    elif sid is not None:
        no_messages += 1
    # Tabs beyond the six separators are inside contents: count the lines that have them.
    tabs = 0
    if _count_byte(chunk.data, 9) > 6 * len(lines):  # type: ignore[arg-type]
        tabs = sum(1 for line in lines if line.count("\t") > 6)
    stats["lines_read"] += len(lines)
    stats["utterances_in"] += len(lines)
    stats["jddc_null_dropped"] += null
    stats["jddc_system_dropped"] += system
    stats["jddc_routing_dropped"] += routing
    stats["merged_same_speaker"] += merged
    for k, v in (("jddc_empty_dropped", empty), ("jddc_content_with_tabs", tabs), ("sessions_without_messages", no_messages)):
        if v:
            stats[k] += v
    return out


def _parse_jddc_lines(chunk: Chunk, lines: list[str], stats: Stats) -> list[RawDialogue]:
    """`parse_jddc` line by line: any chunk, with blank lines, errors naming the line."""
    out: list[RawDialogue] = []
    sid = None
    roles: list[str] = []
    texts: list[str] = []
    lines_read = null = empty = system = routing = merged = tabs = blank = 0
    for lineno, line in enumerate(lines, chunk.first_line):
        fields = line.split("\t", 6)
        if len(fields) < 7:
            if not line.strip():
                blank += 1
                continue
            raise DataError(
                f"truncated JDDC line: expected 7 tab-separated fields ({' '.join(JDDC_FIELDS)}), "
                f"got {len(fields)}: {line[:60]!r}; is --format right?",
                path=chunk.path, line=lineno,
            )
        lines_read += 1
        s, ws, content = fields[0], fields[2], fields[6]
        if ws == "0":
            role = "user"
        elif ws == "1":
            role = "assistant"
        else:
            raise DataError(f"JDDC waiter_send (field 3) must be 0 or 1, got {ws!r}", path=chunk.path, line=lineno)
        if s != sid:
            if roles:
                out.append(RawDialogue(sid, "jddc", "", roles, texts, None, {}))  # type: ignore[arg-type]
            elif sid is not None:
                stats["sessions_without_messages"] += 1
            sid, roles, texts = s, [], []
        if "\t" in content:
            tabs += 1
        c = content.strip()
        if c == "NULL":
            null += 1
        elif not c:
            empty += 1
        elif c.startswith(_JDDC_SYSTEM):
            system += 1
        elif role == "user" and c.startswith("人工客服") and _JDDC_ROUTING.match(c):
            routing += 1
        elif roles and roles[-1] == role:
            texts[-1] = texts[-1] + " " + c
            merged += 1
        else:
            roles.append(role)
            texts.append(c)
    if roles:
        out.append(RawDialogue(sid, "jddc", "", roles, texts, None, {}))  # type: ignore[arg-type]
    elif sid is not None:
        stats["sessions_without_messages"] += 1
    stats["lines_read"] += lines_read
    stats["utterances_in"] += lines_read
    stats["jddc_null_dropped"] += null
    stats["jddc_system_dropped"] += system
    stats["jddc_routing_dropped"] += routing
    stats["merged_same_speaker"] += merged
    for k, v in (("jddc_empty_dropped", empty), ("jddc_content_with_tabs", tabs), ("blank_lines", blank)):
        if v:
            stats[k] += v
    return out


def _raw_from_messages(obj: dict[str, Any], *, path: str, line: int, stats: Stats) -> RawDialogue:
    if "messages" not in obj:  # a ShareGPT / Alpaca row (LLaMA-Factory's formats): the same dialogue
        from endcloud.corpus.formats import as_messages

        try:
            obj = as_messages(obj) or obj
        except DataError as e:
            raise DataError(str(e), path=path, line=line) from None
    msgs = obj.get("messages")
    if not isinstance(msgs, list):
        raise DataError(
            f'expected {{"messages": [{{"role", "content"}}, ...]}}, got keys {sorted(obj)[:8]}', path=path, line=line
        )
    roles: list[str] = []
    texts: list[str] = []
    metas: list[dict[str, Any]] = []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise DataError(f"message {j} is {type(m).__name__}, expected an object with role and content", path=path, line=line)
        raw_role = m.get("role")
        role = ROLE_ALIASES.get(str(raw_role).strip().lower()) if raw_role is not None else None
        if role is None:
            raise DataError(f"message {j}: unknown role {raw_role!r}; use user or assistant", path=path, line=line)
        content = m.get("content", m.get("text"))
        if content is None:
            content = ""
        elif not isinstance(content, str):
            raise DataError(f"message {j}: content must be a string, got {type(content).__name__}", path=path, line=line)
        stats["utterances_in"] += 1
        if role == "system":
            stats["system_turns_dropped"] += 1
            continue
        meta = {k: v for k, v in m.items() if k not in ("role", "content", "text")}
        if "facts" in meta and not (isinstance(meta["facts"], list) and all(isinstance(x, str) for x in meta["facts"])):
            raise DataError(f"message {j}: facts must be a list of strings", path=path, line=line)
        _append(roles, texts, metas, role, content, meta, stats)
    did = obj.get("id")
    did = str(did) if did is not None else f"{Path(path).stem}:{line}"
    lang = obj.get("lang") if obj.get("lang") in ("zh", "en") else ""
    meta = {k: v for k, v in obj.items() if k not in ("messages", "id", "lang", "source")}
    return RawDialogue(did, str(obj.get("source") or "jsonl"), lang, roles, texts, metas, meta)  # type: ignore[arg-type]


def parse_jsonl(chunk: Chunk, stats: Stats) -> list[RawDialogue]:
    """JSONL in OpenAI messages form: `{"id"?, "messages": [{"role", "content", ...}]}`.

    Extra keys on a message (e.g. the synthetic shop's `intent`, `facts`) go to `Turn.meta`."""
    out: list[RawDialogue] = []
    for lineno, line in enumerate(_text_lines(chunk), chunk.first_line):
        if not line.strip():
            continue
        stats["lines_read"] += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"not valid JSON ({e.msg} at column {e.colno}); truncated line?", path=chunk.path, line=lineno
            ) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=chunk.path, line=lineno)
        out.append(_raw_from_messages(obj, path=chunk.path, line=lineno, stats=stats))
    return out


def _csv_dialogues(path: str, stats: Stats) -> Iterator[tuple[int, RawDialogue]]:
    """CSV `conversation_id,role,text` (any column order, extra columns ignored); the
    rows of one conversation are consecutive. Yields (line of first row, dialogue)."""
    line = 1
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                raise DataError("empty CSV file; expected a header conversation_id,role,text", path=path, line=1) from None
            cols = [h.strip().lower() for h in header]
            missing = [c for c in CSV_COLUMNS if c not in cols]
            if missing and _csv_header_form(header) == "pairs":
                yield from _csv_pair_rows(path, reader, cols, stats)
                return
            if missing:
                raise DataError(
                    f"CSV header must have columns {','.join(CSV_COLUMNS)} (or a question and an answer column: "
                    f"{'/'.join(CSV_QUERY_COLUMNS[:3])}..., {'/'.join(CSV_RESPONSE_COLUMNS[:3])}...); "
                    f"got {','.join(header)[:80]!r} (missing {', '.join(missing)})",
                    path=path, line=1,
                )
            ci, ri, ti = (cols.index(c) for c in CSV_COLUMNS)
            width = max(ci, ri, ti) + 1
            cid = None
            roles: list[str] = []
            texts: list[str] = []
            start = 2
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    stats["blank_lines"] += 1
                    continue
                if len(row) < width:
                    raise DataError(
                        f"CSV row has {len(row)} fields, expected {len(header)} ({','.join(header)}); truncated line?",
                        path=path, line=line,
                    )
                stats["lines_read"] += 1
                stats["utterances_in"] += 1
                c, raw_role, content = row[ci], row[ri], row[ti]
                role = ROLE_ALIASES.get(raw_role.strip().lower())
                if role is None:
                    raise DataError(
                        f"unknown role {raw_role!r}; use user/assistant, customer/agent or 0/1", path=path, line=line
                    )
                if c != cid:
                    if roles:
                        yield start, RawDialogue(cid, "csv", "", roles, texts, None, {})  # type: ignore[arg-type]
                    cid, roles, texts, start = c, [], [], line
                if role == "system":
                    stats["system_turns_dropped"] += 1
                    continue
                _append(roles, texts, None, role, content, None, stats)
            if roles:
                yield start, RawDialogue(cid, "csv", "", roles, texts, None, {})  # type: ignore[arg-type]
    except UnicodeDecodeError as e:
        # The csv module reads text: find the failing line from the raw bytes.
        with open(path, "rb") as fb:
            _decode(fb.read(), path, 1)
        raise DataError(f"not valid UTF-8 ({e.reason})", path=path) from None
    except csv.Error as e:
        raise DataError(f"malformed CSV ({e})", path=path, line=line) from None


def _csv_pair_rows(path: str, reader: Any, cols: list[str], stats: Stats) -> Iterator[tuple[int, RawDialogue]]:
    """The rows of a question/answer CSV, each a dialogue of two turns (`<file>:<line>`);
    an `intent` column goes on the answer's meta, as the synthetic shop's chats carry it."""
    qi = cols.index(next(c for c in CSV_QUERY_COLUMNS if c in cols))
    ai = cols.index(next(c for c in CSV_RESPONSE_COLUMNS if c in cols))
    ii = cols.index("intent") if "intent" in cols else None
    width = max(qi, ai) + 1
    stem = Path(path).stem
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            stats["blank_lines"] += 1
            continue
        if len(row) < width:
            raise DataError(f"CSV row has {len(row)} fields, expected {len(cols)}; truncated line?", path=path, line=line)
        stats["lines_read"] += 1
        stats["utterances_in"] += 2
        metas = None
        if ii is not None and ii < len(row) and row[ii].strip():
            metas = [{}, {"intent": row[ii].strip()}]
        yield line, RawDialogue(f"{stem}:{line}", "csv", "", ["user", "assistant"], [row[qi], row[ai]], metas, {})


def _csv_chunks(path: str, fmt: str, block_bytes: int, dialogues_per_chunk: int = 2000) -> Iterator[Chunk]:
    # CSV fields may hold quoted newlines, so bytes cannot be cut blindly: the parent
    # parses (the C csv module is fast) and ships dialogues; workers do the rest.
    stats: Stats = Counter()
    batch: list[RawDialogue] = []
    first = 1
    for line, d in _csv_dialogues(path, stats):
        if not batch:
            first = line
        batch.append(d)
        if len(batch) >= dialogues_per_chunk:
            yield Chunk(path, fmt, first, batch, 0)
            batch = []
    if batch:
        yield Chunk(path, fmt, first, batch, 0)
    # The reading counts (and the progress in bytes) travel with an empty last chunk.
    yield Chunk(path, fmt, 0, [], os.path.getsize(path), stats)


def parse_parsed(chunk: Chunk, stats: Stats) -> list[RawDialogue]:
    """Chunks that already carry dialogues (CSV): add the counts made while cutting."""
    if chunk.stats:
        stats.update(chunk.stats)
    return list(chunk.data)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Reader:
    """A registered format: how to cut a file into chunks and how to parse one chunk.

    Calling it reads a whole file: `reader(path, stats=None) -> Iterator[Dialogue]`."""

    name: str
    chunker: Callable[[str, str, int], Iterator[Chunk]]
    parser: Callable[[Chunk, Stats], list[RawDialogue]]
    extensions: tuple[str, ...] = ()  # the usual ones, for documentation: detection reads the content
    doc: str = ""

    def chunks(self, path: str | os.PathLike[str], block_bytes: int = 1 << 20) -> Iterator[Chunk]:
        p = check_file(path)
        return self.chunker(str(p), self.name, block_bytes)

    def parse(self, chunk: Chunk, stats: Stats | None = None) -> list[RawDialogue]:
        return self.parser(chunk, stats if stats is not None else Counter())

    def __call__(self, path: str | os.PathLike[str], stats: Stats | None = None) -> Iterator[Dialogue]:
        stats = stats if stats is not None else Counter()
        for chunk in self.chunks(path):
            for raw in self.parser(chunk, stats):
                yield raw.to_dialogue()


READERS: Registry[Reader] = Registry("corpus format")
READERS.add("ecd", Reader("ecd", _line_chunks, parse_ecd, (), "Taobao E-commerce Dialogue Corpus"))
READERS.add("jddc", Reader("jddc", _session_chunks, parse_jddc, (), "JD Dialogue Corpus (7 tab fields)"))
READERS.add("jsonl", Reader("jsonl", _line_chunks, parse_jsonl, (".jsonl", ".json", ".ndjson"), "OpenAI messages JSONL"))
READERS.add("csv", Reader("csv", _csv_chunks, parse_parsed, (".csv",), "conversation_id,role,text"))


_SNIFF_LINES = 20


def _sniff_line(line: str) -> set[str]:
    """The formats one line of a file could belong to (its content only)."""
    if line.lstrip().startswith("{"):
        return {"jsonl"}
    fields = line.split("\t")
    out = set()
    if len(fields) >= 3 and fields[0].strip() in ("0", "1"):
        out.add("ecd")
    if len(fields) >= 7 and fields[2] in ("0", "1") and fields[0].strip() not in ("0", "1"):
        out.add("jddc")
    return out


def _csv_header_form(header: list[str]) -> str | None:
    """'conversation' (conversation_id, role, text), 'pairs' (a question and an answer
    column), or None: what a CSV header says the rows are."""
    cols = [h.strip().strip('"').strip().lower() for h in header]
    if all(c in cols for c in CSV_COLUMNS):
        return "conversation"
    if any(c in cols for c in CSV_QUERY_COLUMNS) and any(c in cols for c in CSV_RESPONSE_COLUMNS):
        return "pairs"
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """A file's format, from its content alone (an extension proves nothing: the official
    ECD files have none, and a JDDC dump may be called .csv).

    The first non-blank lines (up to 20) are read: a JSON object per line is JSONL; tab
    fields opening with a 0/1 label are ECD; seven tab fields with 0/1 in the third are
    JDDC; a comma header naming conversation_id, role, text (or a question and an answer
    column) is CSV. The first line decides, the others must mostly agree, so one bad line
    is reported by the reader with its number rather than making the file unknown."""
    p = check_file(path)
    with open(p, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    raw_lines = head.split(b"\n")
    if len(head) == _SNIFF_BYTES and len(raw_lines) > 1:
        raw_lines = raw_lines[:-1]  # the last line may be cut by the sniff window
    lines: list[tuple[int, str]] = []
    for lineno, raw in enumerate(raw_lines, 1):
        if raw.strip():
            lines.append((lineno, raw.decode("utf-8", errors="replace").rstrip("\r")))
            if len(lines) >= _SNIFF_LINES:
                break
    if not lines:
        raise DataError("empty file: no lines to read", path=str(p))
    first_no, first = lines[0]
    if "," in first and "\t" not in first and _csv_header_form(next(csv.reader([first]), [])) is not None:
        return "csv"
    kinds = [_sniff_line(line) for _, line in lines]
    for fmt in ("jsonl", "ecd", "jddc"):
        if fmt in kinds[0] and sum(fmt in k for k in kinds) >= 0.8 * len(kinds):
            return fmt
    if "," in first and "\t" not in first and not kinds[0]:
        raise DataError(
            f"CSV header must have columns {','.join(CSV_COLUMNS)} (or a question and an answer column: "
            f"{'/'.join(CSV_QUERY_COLUMNS[:3])}..., {'/'.join(CSV_RESPONSE_COLUMNS[:3])}...); got {first[:80]!r}",
            path=str(p), line=first_no,
        )
    raise DataError(
        f"cannot tell the format from {first[:60]!r}; pass --format (one of {', '.join(READERS.names())})",
        path=str(p), line=first_no,
    )


def read(path: str | os.PathLike[str], fmt: str | None = None, stats: Stats | None = None) -> Iterator[Dialogue]:
    """Read one file with the named reader (auto-detected when `fmt` is None)."""
    reader = READERS.get(fmt) if fmt else READERS.get(detect_format(path))
    return reader(path, stats)
