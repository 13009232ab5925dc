"""Redaction: replace every detected span with its vault placeholder.

`redact` is what the corpus pipeline calls per line and what the privacy gate calls per outbound
message; `redact_messages` does a whole OpenAI-style message list with one vault, so a value
repeated across turns keeps its placeholder. Spans are found on a folded shadow copy but cut
from the original text, so `vault.restore(redact(x, vault).text) == x` always holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from endcloud.errors import PrivacyError
from endcloud.privacy.detectors import Span, detect, may_contain_pii_many
from endcloud.privacy.vault import PLACEHOLDER_RE, Vault


@dataclass(slots=True)  # not frozen: frozen __init__ costs a third of a clean line's redaction
class Redaction:
    """`text` with PII replaced; `spans` are offsets into the ORIGINAL text, `placeholders` parallel to them."""

    text: str
    spans: list[Span] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.spans)


def redact(text: str, vault: Vault | None = None, lang: str | None = None) -> Redaction:
    """Replace the PII in `text` with typed placeholders issued by `vault` (a fresh one if None)."""
    if "[" in text:
        # Placeholders already in the text (ours, from an earlier pass) must never be issued again for
        # a different value, or restore() would rewrite them: reserve them in the vault first.
        for m in PLACEHOLDER_RE.finditer(text):
            if vault is None:
                vault = Vault()
            vault.reserve(m.group(0))
    spans = detect(text, lang)
    if not spans:
        return Redaction(text)
    if vault is None:
        vault = Vault()
    out, placeholders, last = [], [], 0
    for sp in spans:
        ph = vault.placeholder(sp.type, sp.value)
        out.append(text[last:sp.start])
        out.append(ph)
        placeholders.append(ph)
        last = sp.end
    out.append(text[last:])
    return Redaction("".join(out), spans, placeholders)


def needs_redaction(texts: Sequence[str], lang: str | None = None) -> list[int]:
    """Indices (ascending) of the texts that `redact(text, vault, lang)` might change. For
    every other text `redact` returns the text unchanged with no spans and leaves the vault
    untouched, whatever the vault: `detect` can find nothing in it and it holds no
    placeholder to reserve (a placeholder holds a digit, which every gate matches).

    A few regex passes over the whole batch instead of a call per text: this is how the
    corpus pipeline skips the great majority of chat lines, which hold nothing personal."""
    return may_contain_pii_many(texts, lang)


def redact_messages(messages: list[dict], vault: Vault, lang: str | None = None) -> list[dict]:
    """A copy of OpenAI-style `messages` with every `content` string (and text part) redacted."""
    out = []
    for msg in messages:
        new = dict(msg)
        content = msg.get("content")
        if isinstance(content, str):
            new["content"] = redact(content, vault, lang).text
        elif isinstance(content, list):  # multimodal form: [{"type": "text", "text": ...}, ...]
            parts = []
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    part = {**part, "text": redact(part["text"], vault, lang).text}
                parts.append(part)
            new["content"] = parts
        out.append(new)
    return out


def scrubber(known: Mapping[str, str] | Iterable[str] = ()) -> Callable[[str], str]:
    """A function that redacts a text (fresh vault each time) and then also replaces every value in
    `known` (value -> PII type, or values, typed NAME) still in it: the values already found in the
    same customer's other texts, so a name the rules catch once ("我叫张伟") is caught everywhere
    ("张伟不满意"). For data at rest (`endcloud privacy forget --mode redact`)."""
    types = dict(known) if isinstance(known, Mapping) else {v: "NAME" for v in known}
    values = sorted((v for v in types if v and len(v) >= 2), key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def scrub(text: str) -> str:
        vault = Vault()
        out = redact(text, vault).text
        if pattern is not None:
            out = pattern.sub(lambda m: vault.placeholder(types[m.group(0)], m.group(0)), out)
        return out

    return scrub


def contains_pii(text: str) -> bool:
    """True when `detect` finds anything; placeholders and masked corpus tokens do not count."""
    return bool(detect(text))


def ensure_clean(text: str, *, where: str = "outbound text") -> None:
    """Raise PrivacyError (naming the types, never the values) if `text` still holds PII."""
    spans = detect(text)
    if spans:
        kinds = ", ".join(sorted({s.type for s in spans}))
        raise PrivacyError(f"{where} still contains personal data ({kinds}, {len(spans)} span(s)); redact it with endcloud.privacy.redact first")
