"""Cleaning rules for one turn of text, each counted, plus language detection.

Rules, in order (the name in brackets is the counter in the corpus report):

1. Unicode NFKC: full-width letters, digits and punctuation become their plain forms
   [`nfkc_changed`].
2. JDDC emoticon codes (`#E-s[数字x]`, `#E-s12`) removed [`emoticon_removed`].
3. URLs replaced by a placeholder (`[URL]`, or removed when it is "") [`url_replaced`].
4. Whitespace collapsed to single spaces and stripped [`whitespace_collapsed`].
5. Too-long turns (over `max_turn_chars`) truncated or dropped [`too_long_truncated`
   / `too_long_dropped`].
6. Empty turns dropped [`empty_dropped`]; two turns of one speaker that meet after a
   drop are merged [`merged_after_clean`].

Counts are per turn (after a reader merged one speaker's consecutive messages), except
emoticons and URLs, which are counted per occurrence. Masked placeholders (`[订单x]`,
`[ORDERID_123]`, `4**号`) pass through unchanged: NFKC and the whitespace rule do not touch
ASCII brackets, letters, digits or `*`.

Also here: `detect_lang` (zh when CJK characters are at least 30% of the letters, else en;
the report's `sessions_zh` / `sessions_en`) and `near_key`, what the near-duplicate check
compares (no punctuation, whitespace, digits or case).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from endcloud.records import Turn

_EMOTICON = re.compile(r"#E-[A-Za-z]{1,3}(?:\[[^\]\s]{1,8}\]|\d{1,3})")
# URL characters without brackets and CJK, so "点击http://a.cn/x[数字x]查看" keeps its placeholder.
_URL = re.compile(r"(?:https?://|www\.)[A-Za-z0-9\-._~:/?#@!$&'*+,;=%]+", re.IGNORECASE)

LongTurns = Literal["truncate", "drop"]

# The full-width forms that make most Chinese chat lines fail the NFKC check, with their
# NFKC forms (one ASCII character each), most frequent first (counted on JDDC-style text).
_COMMON_NFKC = tuple((c, unicodedata.normalize("NFKC", c)) for c in "，！？～：；（）\u3000")


@dataclass(frozen=True, slots=True)
class CleanConfig:
    """How turns are cleaned (all fields are `endcloud corpus prepare` flags)."""

    max_turn_chars: int = 512
    """Turns longer than this many characters (after cleaning) are truncated or dropped."""
    long_turns: LongTurns = "truncate"
    """What to do with a too-long turn: 'truncate' (keep the first max_turn_chars) or 'drop'."""
    url_placeholder: str = "[URL]"
    """What a URL becomes; '' removes URLs."""

    def __post_init__(self) -> None:
        if self.max_turn_chars < 1:
            raise ValueError(f"max_turn_chars must be >= 1, got {self.max_turn_chars!r}")
        if self.long_turns not in ("truncate", "drop"):
            raise ValueError(f"long_turns must be 'truncate' or 'drop', got {self.long_turns!r}")


def clean_text(text: str, cfg: CleanConfig, stats: Counter) -> str:
    """Apply rules 1-5 to one text; return "" when nothing is left (or it was dropped)."""
    _, texts, _ = clean_lists(["user"], [text], None, cfg, stats, count_empty=False)
    return texts[0] if texts else ""


def clean_lists(
    roles: list[str], texts: list[str], metas: list[dict[str, Any]] | None, cfg: CleanConfig, stats: Counter,
    *, count_empty: bool = True,
) -> tuple[list[str], list[str], list[dict[str, Any]] | None]:
    """Clean parallel role/text(/meta) lists: every rule, empty drops, re-merging.

    This is the pipeline's hot loop, so the rules are inlined with cheap substring
    checks before any regex, and counts are summed locally."""
    is_norm, normalize = unicodedata.is_normalized, unicodedata.normalize
    max_chars, drop_long, url_ph = cfg.max_turn_chars, cfg.long_turns == "drop", cfg.url_placeholder
    out_r: list[str] = []
    out_t: list[str] = []
    out_m: list[dict[str, Any]] | None = [] if metas is not None else None
    nfkc = emo = url = ws = trunc = dropped = empty = merged = 0
    for i, text in enumerate(texts):
        if not is_norm("NFKC", text):
            # Most Chinese lines fail only on a few full-width punctuation marks: replacing
            # those (by their exact NFKC forms) is ~5x cheaper than `normalize`, which then
            # runs only if something else is left. The result is NFKC either way.
            for fw, plain in _COMMON_NFKC:
                if fw in text:
                    text = text.replace(fw, plain)
            if not is_norm("NFKC", text):
                text = normalize("NFKC", text)
            nfkc += 1
        if "#E-" in text:
            text, n = _EMOTICON.subn("", text)
            emo += n
        if "://" in text or "www." in text or "WWW." in text:
            text, n = _URL.subn(url_ph, text)
            url += n
        collapsed = " ".join(text.split())
        if collapsed != text:
            ws += 1
            text = collapsed
        if len(text) > max_chars:
            if drop_long:
                dropped += 1
                continue
            trunc += 1
            text = text[:max_chars].rstrip()
        if not text:
            empty += 1
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
    for k, v in (("nfkc_changed", nfkc), ("emoticon_removed", emo), ("url_replaced", url),
                 ("whitespace_collapsed", ws), ("too_long_truncated", trunc), ("too_long_dropped", dropped),
                 ("merged_after_clean", merged)):
        if v:
            stats[k] += v
    if empty and count_empty:
        stats["empty_dropped"] += empty
    return out_r, out_t, out_m


def clean_turns(turns: list[Turn], cfg: CleanConfig, stats: Counter) -> list[Turn]:
    """Clean every turn; drop empty ones and merge same-speaker neighbours left by a drop."""
    roles, texts, metas = clean_lists(
        [t.role for t in turns], [t.text for t in turns], [t.meta for t in turns], cfg, stats
    )
    return [Turn(r, t, dict(m or {})) for r, t, m in zip(roles, texts, metas or [])]


# Lead bytes of UTF-8 sequences for U+3000..U+9FFF (CJK punctuation, kana, ideographs), and
# ASCII letters: counting them on the encoded sample is one C call each, not a loop.
_NOT_CJK_LEAD = bytes(b for b in range(256) if not 0xE3 <= b <= 0xE9)
_NOT_LATIN = bytes(b for b in range(256) if not (65 <= b <= 90 or 97 <= b <= 122))


def detect_lang(texts: list[str], sample_chars: int = 400) -> str:
    """'zh' when CJK characters make up at least 30% of the letters (CJK + latin), else 'en'."""
    sample = ""
    for t in texts:
        sample += t
        if len(sample) >= sample_chars:
            break
    if sample.isascii():
        return "en"
    raw = sample[:sample_chars].encode("utf-8")
    cjk = len(raw.translate(None, _NOT_CJK_LEAD))
    latin = len(raw.translate(None, _NOT_LATIN))
    return "zh" if cjk and cjk >= 0.3 * (cjk + latin) else "en"


# Near-duplicate key: a small fixed character class for CJK punctuation that NFKC leaves
# as it is (full-width ！？，：；（） are ASCII by then), then the ASCII non-letters deleted
# from the UTF-8 bytes in one C pass (ASCII bytes never occur inside a multi-byte
# sequence). Twice as fast as a Unicode-aware `[\W\d_]` regex; this runs twice per pair.
_CJK_PUNCT = re.compile("[。、“”‘’【】《》「」『』〈〉〔〕…—·～]")
_ASCII_NOT_LETTER = bytes(b for b in range(128) if not (65 <= b <= 90 or 97 <= b <= 122))


def near_key_bytes(text: str) -> bytes:
    """`near_key` of an already NFKC-normalised text, as UTF-8 bytes (what the pipeline hashes)."""
    return _CJK_PUNCT.sub("", text).encode("utf-8").translate(None, _ASCII_NOT_LETTER).lower()


def near_key(text: str) -> str:
    """The text as the near-duplicate check sees it: NFKC, then without ASCII punctuation,
    digits and whitespace, without common CJK punctuation, latin letters lower-cased."""
    return near_key_bytes(unicodedata.normalize("NFKC", text)).decode("utf-8")
