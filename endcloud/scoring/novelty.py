"""Novel content: text in a reply that neither the turn's sources nor the end model's own
phrasing account for.

The grounding check (`endcloud.scoring.grounding`) reads the facts a reply states — prices,
counts, ids, catalog names — and looks each one up. A small end model on a shop it has not
seen also writes things that are no fact of that kind: a product name it garbled while
copying it ("禾韩烻酰胺精华版", "ClearSlear Shield"), or an attribute value it remembers from
its training shops ("适用人群是日常训练" in a cosmetics shop). This check finds such text
without knowing what it means: whatever a reply says is either copied from its sources,
or phrasing the model was trained to write itself ("亲，", "您好", "is in stock"), or novel.

    units     the reply after NFKC + lower case, cut into CJK characters and maximal runs of
              other letters/digits ("words"); digit-only units are the grounding check's job
    covered   a word that occurs as a word in the sources; a CJK character one of whose two
              2-character windows (with the character before it, or after it) occurs in the
              sources — the same as "some window of 2..6 characters around it occurs", since
              every longer window holds one of those two
    runs      consecutive uncovered units (whitespace between them allowed; punctuation or a
              covered unit ends a run)
    glue      the phrasing the end model was trained to write: the runs of each training reply
              against its own context, kept when at least `min_count` (2) replies have it
              (`Glue.learn`); a run that is a substring of a glue fragment is accepted
    novel     the runs glue does not accept

    glue = Glue.load("endcloud/assets/reader/glue.json")
    novel_runs("亲，禾韩烻酰胺精华售价128元", ["烟酰胺精华 价格128元"], glue)   # ["禾韩烻", ...]

The sources are what the grounding check takes as evidence — the customer's and the system
messages of the turn (the knowledge snippets, the customer's data) and the shop's profile —
never the end model's earlier replies, which may be its own inventions.

`NoveltyScorer` is the `Scorer` form, registered as "novelty" in the `CHECKS` registry of
`endcloud.scoring.grounding` (`endcloud eval --check novelty`): per pair, the share of the
reply's units (digits left out) that are covered or accepted glue — 1.0 exactly when the
reply has no novel run (and for a reply with no units), lower the more of it is novel. A
share rather than a 0/1 so the column ranks models the way the grounding column does; the
decision (any novel run -> cloud) is the router's. Its glue is the shipped shop reader's
(`endcloud/assets/reader/glue.json`) unless one is passed.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from endcloud.errors import DataError
from endcloud.fileio import write_json_atomic
from endcloud.scoring.base import remember
from endcloud.scoring.grounding import ReplyCheck
from endcloud.text import CJK_IDEOGRAPHS

GLUE_VERSION = 1
MIN_COUNT = 2  # replies a run must appear in to be glue: one reply's odd phrase is no habit
SOURCE_CACHE = 4096  # texts whose normalised form and words a checker remembers

_CJK = re.compile(f"[{CJK_IDEOGRAPHS}]")
_UNIT = re.compile(f"[{CJK_IDEOGRAPHS}]|[^\\W_{CJK_IDEOGRAPHS}]+")
# Glue fragments are joined with a character no run holds (runs are letters, digits and
# whitespace), so one substring search asks "is this run inside some fragment?".
_GLUE_SEP = "\x00"


def normalize(text: str) -> str:
    """NFKC, lower case: how a reply and its sources are compared."""
    return unicodedata.normalize("NFKC", text or "").lower()


@dataclass(frozen=True, slots=True)
class Sources:
    """What a reply may copy from: the sources' normalised text (joined by newlines) and the set of their words."""

    text: str
    words: frozenset[str]

    @classmethod
    def of(cls, texts: str | Iterable[str], *, read: Callable[[str], "Sources"] | None = None) -> "Sources":
        """The sources of a text or texts, each read by `read` (default `_one`; a checker passes its cache)."""
        pieces = [texts] if isinstance(texts, str) else [t for t in texts if t]
        return cls.merge([(read or cls._one)(t) for t in pieces])

    @classmethod
    def _one(cls, text: str) -> "Sources":
        t = normalize(text)
        return cls(t, frozenset(w for w in _UNIT.findall(t) if not _CJK.match(w)))

    @classmethod
    def merge(cls, parts: Sequence["Sources"]) -> "Sources":
        if len(parts) == 1:
            return parts[0]
        return cls("\n".join(p.text for p in parts), frozenset().union(*(p.words for p in parts)))


@dataclass(frozen=True, slots=True)
class Unit:
    start: int
    end: int
    covered: bool


def units(reply: str, sources: Sources) -> tuple[str, list[Unit]]:
    """The normalised reply and its units, each marked covered or not (digit-only units count as covered)."""
    t = normalize(reply)
    src = sources.text
    out: list[Unit] = []
    for m in _UNIT.finditer(t):
        s, e = m.start(), m.end()
        u = m.group(0)
        if u.isdigit():
            ok = True
        elif e - s == 1 and _CJK.match(u):
            ok = (s > 0 and t[s - 1:e] in src) or (e < len(t) and t[s:e + 1] in src)
        else:
            ok = u in sources.words
        out.append(Unit(s, e, ok))
    return t, out


def uncovered_runs(reply: str, sources: Sources | str | Iterable[str]) -> list[str]:
    """The runs of consecutive uncovered units of `reply` (normalised), in order."""
    src = sources if isinstance(sources, Sources) else Sources.of(sources)
    return [r for r, _ in _runs(*units(reply, src))]


def _runs(t: str, us: list[Unit]) -> list[tuple[str, int]]:
    """(run text, units in it) for every run of uncovered units."""
    runs: list[tuple[str, int]] = []
    start = end = n = 0
    for u in us:
        if n and (u.covered or t[end:u.start].strip()):  # a covered unit or punctuation ends a run
            runs.append((t[start:end], n))
            n = 0
        if not u.covered:
            if not n:
                start = u.start
            end, n = u.end, n + 1
    if n:
        runs.append((t[start:end], n))
    return runs


@dataclass(frozen=True)
class Glue:
    """Phrasing an end model was trained to write that is not copied from its context.

    `fragments`: the uncovered runs of its training replies that at least `min_count` of them
    share. Saved as a small JSON file (`save` / `load`, with a version field); `merge` joins
    two (a base's and one learned from a shop's teacher labels)."""

    fragments: frozenset[str] = frozenset()
    min_count: int = MIN_COUNT
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    _joined: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fragments", frozenset(self.fragments))
        if self.min_count < 1:
            raise DataError(f"glue min_count must be >= 1, got {self.min_count!r}")
        object.__setattr__(self, "_joined", _GLUE_SEP.join(sorted(self.fragments)))

    @classmethod
    def learn(cls, pairs: Iterable[tuple[str | Iterable[str], str]], *, min_count: int = MIN_COUNT,
              **meta: Any) -> "Glue":
        """The glue of (context, reply) pairs: each reply's uncovered runs against its own
        context (a text, or texts), kept when at least `min_count` replies have the run."""
        counts: Counter[str] = Counter()
        n = 0
        for context, reply in pairs:
            counts.update(set(uncovered_runs(reply, context)))
            n += 1
        return cls(frozenset(g for g, c in counts.items() if c >= min_count), min_count, {**meta, "examples": n})

    def accepts(self, run: str) -> bool:
        """Whether `run` (normalised) lies inside some fragment."""
        return bool(run) and run in self._joined

    def merge(self, other: "Glue") -> "Glue":
        return Glue(self.fragments | other.fragments, min(self.min_count, other.min_count),
                    {"merged": [self.meta, other.meta]})

    def __len__(self) -> int:
        return len(self.fragments)

    def to_json(self) -> dict[str, Any]:
        return {"version": GLUE_VERSION, "min_count": self.min_count, **self.meta, "fragments": sorted(self.fragments)}

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        write_json_atomic(p, self.to_json())
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Glue":
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read glue file {str(p)!r}: {e}") from None
        if not isinstance(d, dict) or d.get("version") != GLUE_VERSION or not isinstance(d.get("fragments"), list):
            got = d.get("version") if isinstance(d, dict) else type(d).__name__
            raise DataError(f"{str(p)!r} is not a version-{GLUE_VERSION} glue file (got version {got!r}); "
                            "rebuild it with `endcloud pretrain --recipe reader`")
        meta = {k: v for k, v in d.items() if k not in ("version", "min_count", "fragments")}
        return cls(frozenset(str(f) for f in d["fragments"]), int(d.get("min_count", MIN_COUNT)), meta)


def novel_runs(reply: str, sources: Sources | str | Iterable[str], glue: Glue) -> list[str]:
    """The runs of `reply` (normalised) that are neither in `sources` nor accepted by `glue`."""
    return [r for r in uncovered_runs(reply, sources) if not glue.accepts(r)]


@dataclass(frozen=True, slots=True)
class Novelty:
    """The check of one reply: its units (digits left out), its novel runs and their units."""

    units: int
    novel: list[str]
    novel_units: int

    @property
    def clean(self) -> bool:
        return not self.novel

    @property
    def score(self) -> float:
        return 1.0 if not self.units else 1.0 - self.novel_units / self.units


class NoveltyChecker:
    """`novel_runs` with a glue, remembering the sources it read (a turn's snippets, the
    shop's profile and the customer's messages come back turn after turn)."""

    def __init__(self, glue: Glue):
        self.glue = glue
        self._cache: dict[str, Sources] = {}

    def sources(self, texts: str | Iterable[str]) -> Sources:
        return Sources.of(texts, read=self._one)

    def _one(self, text: str) -> Sources:
        s = self._cache.get(text)
        return s if s is not None else remember(self._cache, text, Sources._one(text), SOURCE_CACHE)

    def check(self, reply: str, sources: Sources | str | Iterable[str]) -> Novelty:
        src = sources if isinstance(sources, Sources) else self.sources(sources)
        t, us = units(reply, src)
        novel = [(r, n) for r, n in _runs(t, us) if not self.glue.accepts(r)]
        counted = sum(1 for u in us if not t[u.start:u.end].isdigit())
        return Novelty(counted, [r for r, _ in novel], sum(n for _, n in novel))


def shipped_glue() -> Glue:
    """The shipped shop reader's glue; an empty glue where this install has none."""
    from endcloud.end.reader import ASSET_DIR, GLUE_NAME

    path = ASSET_DIR / GLUE_NAME
    return Glue.load(path) if path.exists() else Glue()


class NoveltyScorer(ReplyCheck):
    """score(replies, sources): per pair, the share of the reply's units that are not novel."""

    name = "novelty"

    def __init__(self, glue: Glue | None = None, *, knowledge: Any = None, snippets: int = 3):
        super().__init__(NoveltyChecker(glue if glue is not None else shipped_glue()), knowledge=knowledge, snippets=snippets)

    def explain(self, reply: str, sources: Any) -> str:
        """The novel runs of `reply`, "; "-joined."""
        return "; ".join(self.checker.check(reply, sources).novel)


__all__ = ["GLUE_VERSION", "MIN_COUNT", "Glue", "Novelty", "NoveltyChecker", "NoveltyScorer", "Sources", "novel_runs",
           "normalize", "shipped_glue", "uncovered_runs", "units"]
