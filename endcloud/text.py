"""What Chinese text is, in one place: CJK character classes, the zh/en rule, token estimates.

    >>> from endcloud.text import detect_lang, estimate_tokens
    >>> detect_lang("订单 1234567890123 还没到"), detect_lang("Is the 毛巾 cotton? I need it for my kitchen")
    ('zh', 'en')
    >>> estimate_tokens("几天发货？ ok")
    6

Every room that asks "is this turn Chinese?" (the corpus report's `sessions_zh`, the scorers'
per-language models, the cloud prompt's role text, the reference teacher's reply language)
asks `detect_lang`, so one turn is never zh in one room and en in another. Also here: the
scorers' text normalisation (`normalise`, `clean`). A foundation module: it imports only the
standard library.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Iterable

# Ideographs (汉字): CJK Unified Ideographs Extension A (U+3400-4DBF), the Unified
# Ideographs (U+4E00-9FFF) and the Compatibility Ideographs (U+F900-FAFF). Basic plane
# only: extension B and later hold rare names and variants, hardly ever shop talk. Each
# string is a character-class body, to put between [ and ] (alone or with other ranges).
CJK_IDEOGRAPHS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# CJK Symbols and Punctuation (U+3000-303F: the ideographic space, 、。「」【】) and the
# Halfwidth and Fullwidth Forms (U+FF00-FFEF: ，！？（）, full-width letters and digits).
# Not letters, but written between Chinese words without spaces, and one token each.
CJK_PUNCTUATION = "\u3000-\u303f\uff00-\uffef"
# Both: what counts as a CJK character where spacing and token counts are concerned.
CJK_CHARACTERS = CJK_PUNCTUATION + CJK_IDEOGRAPHS

CJK_IDEOGRAPH = re.compile(f"[{CJK_IDEOGRAPHS}]")
CJK_CHARACTER = re.compile(f"[{CJK_CHARACTERS}]")
LATIN_LETTER = re.compile("[A-Za-z]")

# A turn is Chinese when ideographs are at least this share of its letters (ideographs +
# ASCII latin letters). Digits and punctuation are not letters: shop talk is full of SKUs,
# prices and order numbers, which say nothing about the language ("订单 1234567890123" is
# Chinese). A fifth rather than a half: Chinese shop talk is also full of Latin brand and
# model names ("买 iPhone 15 Pro Max 送壳吗"), and one Chinese character already rules out
# an English-only model, while an English sentence naming one Chinese product stays English.
ZH_SHARE = 0.2

# `count_letters` counts with a few C calls per text (no Python loop, no match object per
# character): the corpus pipeline asks once per session, millions of times. In UTF-16 every
# basic-plane character is two bytes, and its high byte names its block of 256 code points;
# the ideograph ranges are whole blocks (0x34-0x9F, 0xF9-0xFA) but for the Yijing hexagram
# symbols U+4DC0-4DFF, which share block 0x4D with the last extension A ideographs, so a text
# with block 0x4D (rare: extension A) is corrected by a regex. Characters outside the basic
# plane are surrogate pairs (high bytes 0xD8-0xDF): never counted, as in CJK_IDEOGRAPH.
_NOT_IDEOGRAPH_BLOCK = bytes(b for b in range(256) if not (0x34 <= b <= 0x9F or 0xF9 <= b <= 0xFA))
_YIJING_BLOCK = b"\x4d"
_YIJING = re.compile("[\u4dc0-\u4dff]")
_NOT_LATIN = bytes(b for b in range(256) if not (0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A))


def count_letters(text: str) -> tuple[int, int]:
    """(CJK ideographs, ASCII latin letters) in `text`: what `detect_lang` weighs.

    The same counts as `len(CJK_IDEOGRAPH.findall(text))` and `len(LATIN_LETTER.findall(text))`,
    several times faster."""
    if text.isascii():
        return 0, len(text.encode("ascii").translate(None, _NOT_LATIN))
    # surrogatepass: a lone surrogate (JSON can carry "\ud800") is neither letter nor ideograph.
    high = text.encode("utf-16-le", "surrogatepass")[1::2]
    ideographs = len(high.translate(None, _NOT_IDEOGRAPH_BLOCK))
    if _YIJING_BLOCK in high:
        ideographs -= len(_YIJING.findall(text))
    return ideographs, len(text.encode("ascii", "ignore").translate(None, _NOT_LATIN))


def detect_lang(*texts: str, default: str = "en", sample_chars: int | None = None) -> str:
    """"zh" when CJK ideographs are at least `ZH_SHARE` of the letters (ideographs + ASCII
    latin letters) of `texts` taken together, "en" when they are fewer, `default` when
    there are no letters at all (digits, punctuation, emoji, nothing).

    `sample_chars` looks only at the first that many characters of the joined texts (the
    corpus pipeline decides a whole dialogue on its opening). Full-width latin letters
    count only after NFKC, which the corpus cleaning and the scorers apply first."""
    joined = "".join(texts)
    if sample_chars is not None:
        joined = joined[:sample_chars]
    ideographs, latin = count_letters(joined)
    if ideographs + latin == 0:
        return default
    return "zh" if ideographs / (ideographs + latin) >= ZH_SHARE else "en"


# Per message, what chat formats add around the content (role, separators); plus the
# reply's priming once per request.
PER_MESSAGE_TOKENS = 4
REPLY_PRIMING_TOKENS = 2


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token count, good enough for budgets and rate limits: one token per
    CJK character (ideographs, CJK punctuation, full-width forms) and one per four other
    characters, rounded up.

    We cannot load every provider's tokenizer offline; one per CJK character is what the
    Gemini/GPT-4o/Qwen tokenizers give within ~30% on shop chat. It errs high on English,
    which is the safe side for a context budget."""
    cjk = len(CJK_CHARACTER.findall(text))
    return cjk + (len(text) - cjk + 3) // 4


def estimate_message_tokens(messages: Iterable[dict[str, Any]]) -> int:
    """`estimate_tokens` of each message's content, plus the per-message and per-request overhead."""
    return sum(PER_MESSAGE_TOKENS + estimate_tokens(str(m.get("content", ""))) for m in messages) + REPLY_PRIMING_TOKENS


_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, lower-case, all whitespace removed: the form facts are compared in."""
    return _SPACE.sub("", unicodedata.normalize("NFKC", text or "").lower())


def clean(text: str) -> str:
    """NFKC + lower-case, whitespace collapsed (kept: English needs word boundaries)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text or "").lower()).strip()
