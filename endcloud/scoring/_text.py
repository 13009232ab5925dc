"""Text helpers shared by the scorers: normalisation and a cheap language guess."""

from __future__ import annotations

import re
import unicodedata

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, lower-case, all whitespace removed: the form facts are compared in."""
    return _SPACE.sub("", unicodedata.normalize("NFKC", text or "").lower())


def clean(text: str) -> str:
    """NFKC + lower-case, whitespace collapsed (kept: English needs word boundaries)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text or "").lower()).strip()


def guess_lang(*texts: str) -> str:
    """"zh" when CJK characters make up at least a fifth of the letters, else "en".

    A fifth rather than a half: Chinese shop talk is full of SKUs, prices and Latin brand
    names, and one Chinese character already rules out an English-only model."""
    joined = "".join(texts)
    letters = sum(ch.isalnum() for ch in joined)
    if letters == 0:
        return "en"
    return "zh" if len(_CJK.findall(joined)) / letters >= 0.2 else "en"
