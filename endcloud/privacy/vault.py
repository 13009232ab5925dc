"""The vault: typed placeholders for personal values, and the way back.

One vault per conversation (the server persists it as JSON), so the same phone number is
`[PHONE_1]` in every message of that conversation and the cloud model can still tell two
different numbers apart. Values are kept exactly as written (`138-0013-8000` and `13800138000`
are two entries) because `restore` must give back the original text byte for byte.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from endcloud.errors import DataError
from endcloud.privacy.detectors import PII_TYPES

PLACEHOLDER_RE = re.compile(r"\[(" + "|".join(PII_TYPES) + r")_([1-9][0-9]*)\]")
_FORMAT = "endcloud.vault/1"


class Vault:
    """Maps (type, value) <-> "[TYPE_n]"; n counts per type from 1. Thread-safe."""

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._reserved: set[str] = set()
        self._lock = threading.Lock()

    def placeholder(self, type: str, value: str) -> str:  # noqa: A002 - the contract's name
        """The placeholder for `value`; the same (type, value) always gets the same one."""
        if type not in PII_TYPES:
            raise ValueError(f"unknown PII type {type!r}; valid: {', '.join(PII_TYPES)}")
        key = (type, value)
        with self._lock:
            ph = self._by_value.get(key)
            if ph is None:
                n = self._counts.get(type, 0) + 1
                self._counts[type] = n
                ph = f"[{type}_{n}]"
                self._by_value[key] = ph
                self._by_placeholder[ph] = value
            return ph

    def counts(self) -> dict[str, int]:
        """How many values of each type this vault holds (what a redaction replaced, by type;
        reserved placeholders, which stood in the text already, are not counted)."""
        out: dict[str, int] = {}
        with self._lock:
            for kind, _ in self._by_value:
                out[kind] = out.get(kind, 0) + 1
        return out

    def reserve(self, placeholder: str) -> None:
        """Mark a placeholder that already stands in some text (an earlier redaction, a corpus that used
        our style) as taken: it is never issued for a new value, so `restore` cannot rewrite it."""
        m = PLACEHOLDER_RE.fullmatch(placeholder)
        if m is None:
            raise ValueError(f"not a placeholder: {placeholder!r}")
        with self._lock:
            if placeholder in self._by_placeholder or placeholder in self._reserved:
                return
            self._reserved.add(placeholder)
            t, n = m.group(1), int(m.group(2))
            self._counts[t] = max(self._counts.get(t, 0), n)

    def forget(self, values) -> int:
        """Drop the entries holding any of `values` (a customer asked to be forgotten). Their
        placeholders stay reserved, so none is ever issued again for another value. Returns how many."""
        values = set(values)
        with self._lock:
            gone = [(t, v) for (t, v) in self._by_value if v in values]
            for key in gone:
                ph = self._by_value.pop(key)
                self._by_placeholder.pop(ph, None)
                self._reserved.add(ph)
        return len(gone)

    def value(self, placeholder: str) -> str | None:
        return self._by_placeholder.get(placeholder)

    def restore(self, text: str) -> str:
        """Put the original values back; placeholders this vault never issued are left as they are."""
        if "[" not in text:
            return text
        return PLACEHOLDER_RE.sub(lambda m: self._by_placeholder.get(m.group(0), m.group(0)), text)

    def __len__(self) -> int:
        return len(self._by_placeholder)

    def __contains__(self, placeholder: object) -> bool:
        return placeholder in self._by_placeholder

    def items(self) -> list[tuple[str, str, str]]:
        """(placeholder, type, value) in the order they were issued."""
        return [(ph, t, v) for (t, v), ph in self._by_value.items()]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "entries": [{"placeholder": ph, "type": t, "value": v} for ph, t, v in self.items()],
            "reserved": sorted(self._reserved),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Vault":
        if not isinstance(d, dict) or d.get("format") != _FORMAT or not isinstance(d.get("entries"), list):
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise DataError(f"not a vault: expected format {_FORMAT!r}, got {got!r}")
        vault = cls()
        for i, e in enumerate(d["entries"]):
            try:
                ph, t, v = e["placeholder"], e["type"], e["value"]
            except (KeyError, TypeError):
                raise DataError(f"vault entry {i} needs placeholder, type and value, got {e!r}") from None
            m = PLACEHOLDER_RE.fullmatch(ph) if isinstance(ph, str) else None
            if m is None or m.group(1) != t or not isinstance(v, str):
                raise DataError(f"vault entry {i} is inconsistent: {e!r}")
            if ph in vault._by_placeholder or (t, v) in vault._by_value:
                raise DataError(f"vault entry {i} repeats a placeholder or value: {e!r}")
            vault._by_value[(t, v)] = ph
            vault._by_placeholder[ph] = v
            vault._counts[t] = max(vault._counts.get(t, 0), int(m.group(2)))
        reserved = d.get("reserved", [])
        if not isinstance(reserved, list) or not all(isinstance(r, str) and PLACEHOLDER_RE.fullmatch(r) for r in reserved):
            raise DataError(f"vault 'reserved' must be a list of placeholders, got {reserved!r}")
        for ph in reserved:
            vault.reserve(ph)
        return vault
