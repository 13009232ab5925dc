"""The registry of detectors that `endcloud.privacy.detect` runs beside its built-in digit rules.

The structured detectors (phones, IDs, cards, e-mails, orders, tracking numbers) live in
`detectors.py`; people are harder, so names, whole addresses and postcodes, handles (QQ,
WeChat, nicknames) and international phones are each a small `Detector` registered here:

    DETECTORS            Registry: "names", "places", "handles", "phones", "ner"
    active_detectors()   the ones `detect` runs: the four rule sets, plus "ner" when a
                         token-classification model folder is configured ($ENDCLOUD_PRIVACY_NER
                         or `use_ner(path)`)

A detector has a cheap pre-check (`hints`: regexes that must match for it to find anything)
and `find(text, shadow, lang)`, which yields candidates `(priority, start, end, type, label)`
on the same footing as the built-in ones; `detect` settles overlaps between all of them. A
detector may also `refine` the candidate list (the address rules extend an address found by
the built-in rule over the building, unit and room that follow it). The batch pre-check
`needs_redaction` uses the same hints, so a detector can never find something in a text the
pre-check skipped. A detector may also say what every find of its needs (`needs`, a pattern such
as a digit for phone numbers): `detect` then skips its hints on a text without it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from endcloud.registry import Registry

Cand = tuple[int, int, int, str, str]  # (priority, start, end, type, label)
_LATIN_PAIR = re.compile("[a-z]{2}")  # what every `Hints.lower` pattern needs
NER_ENV = "ENDCLOUD_PRIVACY_NER"
BUILTIN = ("names", "places", "handles", "phones")


@dataclass(frozen=True)
class Hints:
    """What must occur for a detector to find anything: regexes on the text, regexes on text.lower()
    that each need two ASCII letters in a row (English words: `detect` skips them on a text whose
    lower-cased form has none, as most Chinese lines), and regexes that can only match a non-ASCII
    character (skipped at once for an ASCII-only text)."""

    text: tuple[Any, ...] = ()
    lower: tuple[Any, ...] = ()
    wide: tuple[Any, ...] = ()

    def match(self, text: str, low: str) -> bool:
        if any(p.search(text) for p in self.text) or any(p.search(low) for p in self.lower):
            return True
        return bool(self.wide) and not text.isascii() and any(p.search(text) for p in self.wide)

    @property
    def on_text(self) -> tuple[Any, ...]:
        return self.text + self.wide


class Gated:
    """A hint `pattern` searched only where a cheaper necessary condition `pre` holds: `pre` must
    match somewhere in string[pos:] whenever `pattern` does. Quacks like a compiled pattern's
    `search`, which is all the pre-checks use."""

    def __init__(self, pre: re.Pattern[str], pattern: re.Pattern[str]):
        self.pre, self.pattern = pre, pattern

    def search(self, string: str, pos: int = 0):
        if self.pre.search(string, pos) is None:
            return None
        return self.pattern.search(string, pos)


class Detector(Protocol):
    name: str

    def hints(self, lang: str | None) -> Hints: ...

    def find(self, text: str, shadow: str, lang: str | None) -> Iterable[Cand]: ...


DETECTORS: Registry[Callable[..., Detector]] = Registry("privacy detector")


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: tuple[Detector, ...] | None = None
    ner_path: str | None = None
    checked_at: float = 0.0  # when $ENDCLOUD_PRIVACY_NER was last read: os.environ costs µs per call
    hints: dict[str | None, Hints] = field(default_factory=dict)
    plans: dict[str | None, tuple] = field(default_factory=dict)


_state = _State()


def _register_builtins() -> None:
    # Imported here, not at the top: these modules import the shared character classes of
    # `detectors`, which imports this module.
    if "names" in DETECTORS:
        return
    from endcloud.privacy import handles, names, ner, phones, places

    DETECTORS.add("names", names.NameDetector)
    DETECTORS.add("places", places.PlaceDetector)
    DETECTORS.add("handles", handles.HandleDetector)
    DETECTORS.add("phones", phones.PhoneDetector)
    DETECTORS.add("ner", ner.NerDetector)


def use_ner(path: str | os.PathLike[str] | None) -> None:
    """Run the NER detector on the token-classification model in `path` (None: stop). Also
    exported as $ENDCLOUD_PRIVACY_NER, so worker processes of the corpus pipeline load it too."""
    with _state.lock:
        if path is None:
            os.environ.pop(NER_ENV, None)
        else:
            os.environ[NER_ENV] = str(path)
        _state.active = None


def active_detectors() -> tuple[Detector, ...]:
    """The detectors `detect` runs now (built once per process and NER setting; the setting is
    read again at most once a second, or at once after `use_ner`)."""
    active = _state.active
    now = time.monotonic()
    if active is not None and now - _state.checked_at < 1.0:
        return active
    want = os.environ.get(NER_ENV) or None
    _state.checked_at = now
    if active is not None and want == _state.ner_path:
        return active
    with _state.lock:
        _register_builtins()
        dets = [DETECTORS.get(n)() for n in BUILTIN]
        if want:
            dets.append(DETECTORS.get("ner")(path=want))
        _state.active, _state.ner_path, _state.hints, _state.plans = tuple(dets), want, {}, {}
        return _state.active


def hints(lang: str | None) -> Hints:
    """The union of the active detectors' hints for `lang` (what the batch pre-check adds)."""
    dets = active_detectors()
    h = _state.hints.get(lang)
    if h is None:
        parts = [d.hints(lang) for d in dets]
        h = Hints(tuple(p for x in parts for p in x.text), tuple(p for x in parts for p in x.lower),
                  tuple(p for x in parts for p in x.wide))
        _state.hints[lang] = h
    return h


def _plan(lang: str | None) -> tuple:
    """Per active detector, the bound `search` methods of its hints: (detector, needs, on text, on low, wide)."""
    dets = active_detectors()
    plan = _state.plans.get(lang)
    if plan is None or plan[0] is not dets:
        rows = []
        for d in dets:
            h = d.hints(lang)
            need = getattr(d, "needs", None)  # a cheaper condition without which `find` yields nothing
            rows.append((d, need.search if need is not None else None, tuple(p.search for p in h.text),
                         tuple(p.search for p in h.lower), tuple(p.search for p in h.wide)))
        plan = _state.plans[lang] = (dets, tuple(rows))
    return plan[1]


def triggered(text: str, lang: str | None, low: str) -> list[Detector]:
    """The active detectors whose hints match `text` (the ones that may find something in it).

    The same answer as `[d for d in active_detectors() if d.hints(lang).match(text, low)]`, less the
    detectors whose `needs` pattern (optional: a condition every find of theirs requires, such as a
    digit for phone numbers) is absent; the batch pre-check leaves `needs` out and stays the plain
    union of the hints. Written as plain loops over bound methods: this runs for every line the
    corpus pipeline redacts, and the generator expressions and attribute look-ups of `Hints.match`
    cost more than most of the searches."""
    out = []
    wide_ok = None
    latin = _LATIN_PAIR.search(low) is not None
    for det, need, on_text, on_low, wide in _plan(lang):
        if need is not None and need(text) is None:
            continue
        hit = False
        for search in on_text:
            if search(text) is not None:
                hit = True
                break
        if not hit and latin:
            for search in on_low:
                if search(low) is not None:
                    hit = True
                    break
        if not hit and wide:
            if wide_ok is None:
                wide_ok = not text.isascii()
            if wide_ok:
                for search in wide:
                    if search(text) is not None:
                        hit = True
                        break
        if hit:
            out.append(det)
    return out


def candidates(text: str, shadow: str, lang: str | None, dets: Iterable[Detector]) -> list[Cand]:
    """Candidates from `dets` (see `triggered`)."""
    out: list[Cand] = []
    for d in dets:
        out.extend(d.find(text, shadow, lang))
    return out


def any_hint(text: str, lang: str | None, low: str) -> bool:
    return hints(lang).match(text, low)


def refine(cands: list[Cand], text: str, shadow: str, lang: str | None) -> None:
    """Let detectors that refine (extend, drop) candidates do so, in place."""
    for d in active_detectors():
        fn = getattr(d, "refine", None)
        if fn is not None:
            fn(cands, text, shadow, lang)
