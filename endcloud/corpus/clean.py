"""Cleaning rules for one turn of text, each counted, plus language detection.

Rules, in order (the name in brackets is the counter in the corpus report):

1. Unicode NFKC: full-width letters, digits and punctuation become their plain forms
   [`nfkc_changed`].
2. JDDC emoticon codes (`#E-s[数字x]`, `#E-s12`) removed [`emoticon_removed`].
3. URLs replaced by a placeholder (`[URL]`, or removed when it is "") [`url_replaced`].
4. Whitespace normalised [`whitespace_collapsed`]: runs of spaces and tabs become one
   space, each line is stripped; line breaks are kept as "\n" (at most one blank line in
   a row), and in a text of several lines the list markers are written one way ("• x",
   "* x", "– x" -> "- x"; "1) x", "1、x" -> "1. x"), so an agent's steps and lists survive
   as lists. A one-line text is collapsed exactly as before.
5. Too-long turns (over `max_turn_chars`) cut, dropped or kept whole [`too_long_truncated`
   / `too_long_dropped`]: a cut ends at the last sentence end in the second half of the
   limit, else at a clause mark, a space, or a boundary of a CJK character
   (`cut_long`): never inside a latin word unless one "word" is longer than the limit.
6. Empty turns dropped [`empty_dropped`]; two turns of one speaker that meet after a
   drop are merged [`merged_after_clean`].

Counts are per turn (after a reader merged one speaker's consecutive messages), except
emoticons and URLs, which are counted per occurrence. Masked placeholders (`[订单x]`,
`[ORDERID_123]`, `4**号`) pass through unchanged: NFKC and the whitespace rule do not touch
ASCII brackets, letters, digits or `*`.

`clean_many` applies rules 1-5 to a whole batch (the pipeline passes a chunk's texts at
once) and gives exactly what cleaning each text alone gives; `assemble` is rule 6 for one
dialogue; `clean_lists` / `clean_turns` / `clean_text` are both for one dialogue or text.

Also here: `near_key`, what the near-duplicate check compares (no punctuation, whitespace,
digits or case; `near_keys_bytes` for a batch). A session's language (the report's
`sessions_zh` / `sessions_en`) is `endcloud.text.detect_lang`, the rule every room shares.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import Any, Iterator, Literal

from endcloud.records import Turn
from endcloud.text import CJK_CHARACTERS

_EMOTICON = re.compile(r"#E-[A-Za-z]{1,3}(?:\[[^\]\s]{1,8}\]|\d{1,3})")
# URL characters without brackets and CJK, so "点击http://a.cn/x[数字x]查看" keeps its placeholder.
_URL = re.compile(r"(?:https?://|www\.)[A-Za-z0-9\-._~:/?#@!$&'*+,;=%]+", re.IGNORECASE)
# Every whitespace character but the space (str.split's whitespace: none lies above U+3000).
_WS_NOT_SPACE = re.compile("[" + "".join(re.escape(c) for c in map(chr, range(0x3001)) if c.isspace() and c != " ") + "]")

LongTurns = Literal["truncate", "drop", "keep"]
LONG_TURNS = ("truncate", "drop", "keep")

# The full-width forms that make most Chinese chat lines fail the NFKC check, with their
# NFKC forms (one ASCII character each), most frequent first (counted on JDDC-style text).
_COMMON_NFKC = tuple((c, unicodedata.normalize("NFKC", c)) for c in "，！？～：；（）\u3000")


@dataclass(frozen=True, slots=True)
class CleanConfig:
    """How turns are cleaned (all fields are `endcloud corpus prepare` flags)."""

    max_turn_chars: int = 2000
    """Turns longer than this many characters (after cleaning) are cut, dropped or kept.
    (Chat turns are short; an agent's English answer with steps runs to 1,500 characters.)"""
    long_turns: LongTurns = "truncate"
    """What to do with a too-long turn: 'truncate' (cut at a sentence or word boundary within
    max_turn_chars), 'drop', or 'keep' (whole)."""
    url_placeholder: str = "[URL]"
    """What a URL becomes; '' removes URLs."""

    def __post_init__(self) -> None:
        if self.max_turn_chars < 1:
            raise ValueError(f"max_turn_chars must be >= 1, got {self.max_turn_chars!r}")
        if self.long_turns not in LONG_TURNS:
            raise ValueError(f"long_turns must be 'truncate', 'drop' or 'keep', got {self.long_turns!r}")


# Line breaks of every kind (str.splitlines' boundaries): each becomes "\n".
_LINE_BREAK = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# List markers at the start of a line (after NFKC and stripping): bullets, then a dash or
# star followed by a space (so "*bold*" and "-5%" are not lists), then numbers.
_BULLET = re.compile(r"^(?:[•●▪◦‣⁃∙·]\s*|[*\-–—]\s+)(?=\S)")
_NUMBERED = re.compile(r"^(?:\(?(\d{1,2})\)\s*|(\d{1,2})(?:[.)]\s+|、\s*))(?=\S)")


def normalise_whitespace(text: str) -> str:
    """Rule 4 on one text: spaces/tabs collapsed, lines stripped, line breaks kept as "\n"
    (no more than one blank line in a row), list markers of a multi-line text unified."""
    if not _LINE_BREAK.search(text):
        return " ".join(text.split())
    out: list[str] = []
    blank = False
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line:
            blank = bool(out)
            continue
        if _BULLET.match(line):
            line = _BULLET.sub("- ", line, count=1)
        else:
            m = _NUMBERED.match(line)
            if m:
                line = f"{m.group(1) or m.group(2)}. " + line[m.end():]
        if blank:
            out.append("")
            blank = False
        out.append(line)
    return "\n".join(out)


# Where a cut may end (the character before the cut), best first.
_SENTENCE_END = re.compile(r"[。！？；…\n]|[.!?;](?=\s|$)|[!?](?=[" + CJK_CHARACTERS + "])")
_CLAUSE_END = re.compile(r"[，、：,:)）」』”](?=\s|$|[^\s\w])|[，、：]")
_CJK = re.compile(f"[{CJK_CHARACTERS}]")


def cut_long(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` characters, never inside a word: after the last
    sentence end in the second half of the window, else after a clause mark there, else at
    the last space there, else at the last boundary of a CJK character or of a word
    (anywhere); a single unbroken "word" longer than the limit is cut where it must be."""
    if len(text) <= max_chars:
        return text
    window = text[:max_chars]
    half = max_chars // 2
    # Matched on one character more, so a lookahead sees what really follows ("3." of "3.5").
    peek = text[:max_chars + 1]
    for pat in (_SENTENCE_END, _CLAUSE_END):
        ends = [m.end() for m in pat.finditer(peek) if half <= m.end() <= max_chars]
        if ends:
            return window[:ends[-1]].rstrip()
    nxt = text[max_chars]
    if nxt.isspace():
        return window.rstrip()
    space = window.rfind(" ", half)
    if space < 0:
        space = window.rfind("\n", half)
    if space > 0:
        return window[:space].rstrip()
    # Chinese has no spaces: a boundary next to a CJK character is a character boundary;
    # so is any place where a letter or digit meets something else ("?a", "a,").
    for j in range(max_chars, 0, -1):
        a, b = text[j - 1], text[j]
        if _CJK.match(a) or _CJK.match(b) or not (a.isalnum() and b.isalnum()):
            return window[:j].rstrip()
    return window  # one unbroken word longer than the limit: nowhere else to cut


def clean_text(text: str, cfg: CleanConfig, stats: Counter) -> str:
    """Apply rules 1-5 to one text; return "" when nothing is left (or it was dropped)."""
    return clean_many([text], cfg, stats, count_empty=False)[0]


# The batch is joined with a separator so each rule is one C-level pass over the whole
# chunk instead of a Python-level call per text. The separator must not occur in any text
# and must be a character no rule touches: not whitespace (str.split and \s skip these),
# NFKC-stable, outside the URL class. The first control character absent from the batch
# is taken (JDDC content can never hold NUL: the reader rejects it as binary).
_SEPARATORS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0E, 0x1C))]
_SEP_EMOTICON: dict[str, re.Pattern[str]] = {}


def _emoticons(sep: str) -> re.Pattern[str]:
    """`_EMOTICON`, unable to run across `sep` (for a batch joined by it)."""
    pat = _SEP_EMOTICON.get(sep)
    if pat is None:
        pat = _SEP_EMOTICON[sep] = re.compile(r"#E-[A-Za-z]{1,3}(?:\[[^\]\s" + re.escape(sep) + r"]{1,8}\]|\d{1,3})")
    return pat


def _find_all(s: str, sub: str, shift: int = 0) -> Iterator[int]:
    i = s.find(sub)
    while i >= 0:
        yield i + shift
        i = s.find(sub, i + 1)


def _bad_whitespace(joined: str, sep: str) -> list[int]:
    """Offsets in a batch joined by `sep` that put their text among those `" ".join(t.split())`
    changes: whitespace other than a space, two spaces in a row, a space at either end of
    a text. Each is a C-level search for something rare, where a regex stopping at every
    space took most of the cleaning time."""
    hits = [m.start() for m in _WS_NOT_SPACE.finditer(joined)]
    hits += _find_all(joined, "  ")
    hits += _find_all(joined, " " + sep)
    hits += _find_all(joined, sep + " ", 1)
    if joined[:1] == " ":
        hits.append(0)
    if joined[-1:] == " ":
        hits.append(len(joined) - 1)
    hits.sort()
    return hits


def _indices(ends: list[int], positions: Iterator[int]) -> list[int]:
    """Sorted distinct indices of the texts that hold the given offsets of the joined batch
    (`ends[i]` is one past text i's separator)."""
    out: list[int] = []
    for pos in positions:
        i = bisect_right(ends, pos)
        if not out or out[-1] != i:
            out.append(i)
    return out


def clean_many(texts: list[str], cfg: CleanConfig, stats: Counter, *, count_empty: bool = True) -> list[str]:
    """Rules 1-5 on a batch of texts: the same texts and counts as cleaning each one
    alone, one output per input, "" where a text is dropped (empty, or too long with
    long_turns='drop'). Merging the neighbours of a drop is `assemble`'s job.

    The pipeline's hot loop: a whole chunk's texts are cleaned in one call. Each rule
    runs once over the joined batch where it cannot reach across texts (NFKC, emoticons,
    finding the texts with URLs or odd whitespace) and per text only where a text needs
    it; counts are per text as documented, except emoticons and URLs (per occurrence)."""
    n = len(texts)
    if n == 0:
        return []
    sep = ""
    joined = ""
    if n > 1:
        for sep in _SEPARATORS:
            joined = sep.join(texts)
            if joined.count(sep) == n - 1:
                break
        else:  # every candidate occurs somewhere: clean one at a time (never seen in practice)
            return [x for t in texts for x in clean_many([t], cfg, stats, count_empty=count_empty)]
    else:
        joined = texts[0]

    def split(j: str) -> list[str]:
        return j.split(sep) if n > 1 else [j]

    parts = texts
    nfkc = emo = url = ws = trunc = dropped = empty = 0
    # 1. NFKC. Most Chinese lines fail only on a few full-width punctuation marks: replacing
    # those (by their exact NFKC forms) is ~5x cheaper than `normalize`, which then runs only
    # if something else is left. The result is NFKC either way, and NFKC of the joined batch
    # is the join of each text's NFKC (the separator is a starter that composes with nothing).
    if not unicodedata.is_normalized("NFKC", joined):
        for fw, plain in _COMMON_NFKC:
            if fw in joined:
                joined = joined.replace(fw, plain)
        if not unicodedata.is_normalized("NFKC", joined):
            joined = unicodedata.normalize("NFKC", joined)
            if n > 1 and joined.count(sep) != n - 1:  # cannot happen (no NFKC form holds a C0 control): be sure
                return [x for t in texts for x in clean_many([t], cfg, stats, count_empty=count_empty)]
        new = split(joined)
        nfkc = sum(map(operator.ne, parts, new))
        parts = new
    # 2. Emoticon codes, counted per occurrence.
    if "#E-" in joined:
        joined, emo = (_emoticons(sep) if n > 1 else _EMOTICON).subn("", joined)
        parts = split(joined)
    # 3 and 4 find their texts on the joined batch (offsets -> indices), then work per text.
    url_idx: list[int] = []
    ws_idx: list[int] = []
    has_url = "://" in joined or "www." in joined or "WWW." in joined
    if n == 1:
        url_idx = [0] if has_url else []
        ws_idx = [0]
    else:
        ws_hits = _bad_whitespace(joined, sep)
        if has_url or ws_hits:
            ends = list(accumulate(len(p) + 1 for p in parts))
            if has_url:
                url_hits = sorted(chain(_find_all(joined, "://"), _find_all(joined, "www."), _find_all(joined, "WWW.")))
                url_idx = _indices(ends, iter(url_hits))
            ws_idx = _indices(ends, iter(ws_hits))
    if url_idx:
        parts = list(parts) if parts is texts else parts
        url_ph = cfg.url_placeholder
        for i in url_idx:
            parts[i], k = _URL.subn(url_ph, parts[i])
            url += k
        ws_idx = sorted(set(ws_idx).union(url_idx))  # a URL replaced by "" may leave two spaces
    if ws_idx:
        parts = list(parts) if parts is texts else parts
        for i in ws_idx:
            t = parts[i]
            collapsed = normalise_whitespace(t)
            if collapsed != t:
                ws += 1
                parts[i] = collapsed
    # 5. Length, then empties.
    max_chars = cfg.max_turn_chars
    if cfg.long_turns != "keep" and max(map(len, parts)) > max_chars:
        parts = list(parts) if parts is texts else parts
        drop_long = cfg.long_turns == "drop"
        for i, t in enumerate(parts):
            if len(t) > max_chars:
                if drop_long:
                    dropped += 1
                    parts[i] = ""
                else:
                    trunc += 1
                    parts[i] = cut_long(t, max_chars)
    if "" in parts:
        empty = parts.count("") - dropped
    for k, v in (("nfkc_changed", nfkc), ("emoticon_removed", emo), ("url_replaced", url),
                 ("whitespace_collapsed", ws), ("too_long_truncated", trunc), ("too_long_dropped", dropped)):
        if v:
            stats[k] += v
    if empty and count_empty:
        stats["empty_dropped"] += empty
    return parts if parts is not texts else list(texts)


def assemble(
    roles: list[str], texts: list[str], metas: list[dict[str, Any]] | None, stats: Counter,
) -> tuple[list[str], list[str], list[dict[str, Any]] | None]:
    """Rule 6 on one dialogue's cleaned texts (`clean_many`'s output): drop the empty
    ones and merge two turns of one speaker that then meet [`merged_after_clean`]."""
    if "" not in texts and not any(map(operator.eq, roles, roles[1:])):
        return roles, texts, metas  # nothing dropped, no neighbours to merge: the common case
    out_r: list[str] = []
    out_t: list[str] = []
    out_m: list[dict[str, Any]] | None = [] if metas is not None else None
    merged = 0
    for i, text in enumerate(texts):
        if not text:
            continue
        role = roles[i]
        if out_r and out_r[-1] == role:  # a drop left two turns of one speaker side by side
            out_t[-1] = f"{out_t[-1]} {text}"
            if out_m is not None and metas is not None and metas[i]:
                out_m[-1] = {**out_m[-1], **metas[i]}
            merged += 1
            continue
        out_r.append(role)
        out_t.append(text)
        if out_m is not None and metas is not None:
            out_m.append(metas[i])
    if merged:
        stats["merged_after_clean"] += merged
    return out_r, out_t, out_m


def clean_lists(
    roles: list[str], texts: list[str], metas: list[dict[str, Any]] | None, cfg: CleanConfig, stats: Counter,
    *, count_empty: bool = True,
) -> tuple[list[str], list[str], list[dict[str, Any]] | None]:
    """Clean parallel role/text(/meta) lists of one dialogue: every rule, empty drops,
    re-merging (`clean_many` then `assemble`)."""
    return assemble(roles, clean_many(texts, cfg, stats, count_empty=count_empty), metas, stats)


def clean_turns(turns: list[Turn], cfg: CleanConfig, stats: Counter) -> list[Turn]:
    """Clean every turn; drop empty ones and merge same-speaker neighbours left by a drop."""
    roles, texts, metas = clean_lists(
        [t.role for t in turns], [t.text for t in turns], [t.meta for t in turns], cfg, stats
    )
    return [Turn(r, t, dict(m or {})) for r, t, m in zip(roles, texts, metas or [])]


# Near-duplicate key: a small fixed character class for CJK punctuation that NFKC leaves
# as it is (full-width ！？，：；（） are ASCII by then), then the ASCII non-letters deleted
# from the UTF-8 bytes in one C pass (ASCII bytes never occur inside a multi-byte
# sequence). Twice as fast as a Unicode-aware `[\W\d_]` regex; this runs twice per pair.
_CJK_PUNCT = re.compile("[。、“”‘’【】《》「」『』〈〉〔〕…—·～]")
_ASCII_NOT_LETTER = bytes(b for b in range(128) if not (65 <= b <= 90 or 97 <= b <= 122))
_NOT_LETTER_KEEP: dict[int, bytes] = {}  # separator byte -> _ASCII_NOT_LETTER without it


def near_key_bytes(text: str) -> bytes:
    """`near_key` of an already NFKC-normalised text, as UTF-8 bytes (what the pipeline hashes)."""
    return _CJK_PUNCT.sub("", text).encode("utf-8").translate(None, _ASCII_NOT_LETTER).lower()


def near_keys_bytes(texts: list[str]) -> list[bytes]:
    """`near_key_bytes` of each text, in one pass over the joined batch (the pipeline's
    per-chunk call): the separator survives every step (the punctuation class and the
    byte deletion both leave it), so splitting the result gives each text's key."""
    n = len(texts)
    if n < 2:
        return [near_key_bytes(t) for t in texts]
    for sep in _SEPARATORS:
        joined = sep.join(texts)
        if joined.count(sep) == n - 1:
            break
    else:
        return [near_key_bytes(t) for t in texts]
    b = ord(sep)
    table = _NOT_LETTER_KEEP.get(b)
    if table is None:
        table = _NOT_LETTER_KEEP[b] = bytes(c for c in _ASCII_NOT_LETTER if c != b)
    return _CJK_PUNCT.sub("", joined).encode("utf-8").translate(None, table).lower().split(bytes((b,)))


def near_key(text: str) -> str:
    """The text as the near-duplicate check sees it: NFKC, then without ASCII punctuation,
    digits and whitespace, without common CJK punctuation, latin letters lower-cased."""
    return near_key_bytes(unicodedata.normalize("NFKC", text)).decode("utf-8")
