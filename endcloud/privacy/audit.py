"""The audit log: one JSON line per request that left the shop.

Each record holds the time, the destination, the SHA-256 and byte count of the exact body sent,
and the body itself *redacted again* (so the log never becomes the leak it is meant to catch)
plus how many PII spans that second pass found: anything but 0 means something escaped the gate.
Lines are appended under a lock with O_APPEND and fsync'd before `record` returns.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Iterator

from endcloud.fileio import read_jsonl
from endcloud.privacy.redact import redact


class AuditLog:
    """Append-only JSONL at `path`: {time, destination, sha256, bytes, body, pii_spans}."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, destination: str, body: str) -> str:
        """Log one outbound `body` sent to `destination`; return the SHA-256 hex of its UTF-8 bytes."""
        raw = body.encode("utf-8")
        digest = hashlib.sha256(raw).hexdigest()
        again = redact(body)
        row = {
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
            "destination": destination,
            "sha256": digest,
            "bytes": len(raw),
            "body": again.text,
            "pii_spans": len(again.spans),
        }
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return digest

    def prune(self, before: float) -> int:
        """Drop the records written before `before` (a Unix time): the retention period has passed.
        The file is rewritten atomically under the lock; returns how many records went."""
        if not self.path.exists():
            return 0
        from endcloud.fileio import write_text_atomic

        cutoff = _dt.datetime.fromtimestamp(before, _dt.timezone.utc)
        with self._lock:
            keep, gone = [], 0
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        t = _dt.datetime.fromisoformat(json.loads(line)["time"])
                    except (ValueError, KeyError, TypeError):
                        keep.append(line)  # not ours to judge: kept as it is
                        continue
                    if t < cutoff:
                        gone += 1
                    else:
                        keep.append(line if line.endswith("\n") else line + "\n")
            if gone:
                write_text_atomic(self.path, "".join(keep))
        return gone

    def entries(self) -> Iterator[dict]:
        """The records so far (raises DataError naming the line if the file is damaged)."""
        if not self.path.exists():
            return iter(())
        return read_jsonl(self.path)
