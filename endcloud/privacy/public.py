"""A shop's public identifiers: SKUs and model numbers from its own catalog, its hotline.

A bare 12-digit number in a customer's message is usually an order id (personal), but in
the paper's example ("520401029636") it is the product the customer means — and a shop's
SKUs are printed on its own pages. Values listed here are never redacted, so the teacher
can still answer "which towel is 520401029636?". The set is process-wide configuration
(like a setting); `use_public_values` also exports it through `$ENDCLOUD_PUBLIC_IDS` (a
file, one value per line) so worker processes of the corpus pipeline see the same set.
"""

from __future__ import annotations

import atexit
import os
import re
import tempfile
from typing import Iterable

ENV = "ENDCLOUD_PUBLIC_IDS"
_SEP = re.compile(r"[\s\-_.·]")
_values: frozenset[str] | None = None
_loaded_from: str | None = None


def key(value: str) -> str:
    """The form values are compared in: no separators, upper case, ASCII digits."""
    v = value.translate({c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)})  # full-width → ASCII
    return _SEP.sub("", v).upper()


def public_values() -> frozenset[str]:
    """The current set (loaded once from $ENDCLOUD_PUBLIC_IDS when that is set)."""
    global _values, _loaded_from
    path = os.environ.get(ENV)
    if _values is None or (path and path != _loaded_from):
        vals: set[str] = set()
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                vals = {key(line.strip()) for line in f if line.strip()}
        _values, _loaded_from = frozenset(vals), path
    return _values


_written: list[str] = []  # the files this process wrote: removed when it exits


def _remove_written() -> None:
    # kept until exit, not replaced in place: a worker started earlier may still read its path
    for path in _written:
        try:
            os.unlink(path)
        except OSError:
            pass


def use_public_values(values: Iterable[str]) -> frozenset[str]:
    """Declare the shop's public identifiers for this process and its workers."""
    global _values, _loaded_from
    vals = sorted({key(str(v)) for v in values if str(v).strip()})
    fd, path = tempfile.mkstemp(prefix="endcloud-public-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(vals) + "\n")
    if not _written:
        atexit.register(_remove_written)
    _written.append(path)
    os.environ[ENV] = path
    _values, _loaded_from = frozenset(vals), path
    return _values


def install(values: Iterable[str]) -> frozenset[str]:
    """Set this process's set as given, without exporting it (a worker handed the parent's set:
    a forkserver worker inherits the environment the server started with, not the parent's now)."""
    global _values, _loaded_from
    _values, _loaded_from = frozenset(key(str(v)) for v in values if str(v).strip()), os.environ.get(ENV)
    return _values


def is_public(value: str) -> bool:
    pv = public_values()
    return bool(pv) and key(value) in pv
