"""Pseudo-labels of the online loop, with provenance, in the workspace database.

A pseudo-label is one thing the end model should learn: the query (and its context), what
the end model said, what the cloud said, the scores, what triggered it, who the customer
was, and the text to learn. Labels move `pending -> used` (trained on in a round) or are
`quarantined` (failed a check: PII, competitor, cap) and never trained on. Written with
synchronous=FULL: a lost label is a lost lesson.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from endcloud.store.db import connect, ensure_schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS pseudo_labels (
    id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    trust TEXT NOT NULL,
    query TEXT NOT NULL,
    context TEXT NOT NULL DEFAULT '[]',
    end_reply TEXT,
    cloud_reply TEXT,
    label TEXT NOT NULL,
    scores TEXT NOT NULL DEFAULT '{}',
    customer TEXT,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    round_id TEXT,
    created_at REAL NOT NULL,
    UNIQUE (source_id, trigger)
);
CREATE INDEX IF NOT EXISTS pseudo_labels_status ON pseudo_labels(status, created_at);
CREATE TABLE IF NOT EXISTS evolve_rounds (
    id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    labels INTEGER NOT NULL,
    candidate TEXT,
    champion TEXT,
    promoted INTEGER,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS evolve_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

STATUSES = ("pending", "quarantined", "used", "held")
TRUST_ORDER = {"human": 0, "auto": 1}  # human-reviewed corrections outrank automatic ones


@dataclass
class PseudoLabel:
    source_id: str  # the served message id or review item id it came from
    trigger: str  # downvote | low_score | takeover | correction | upvote | review
    trust: str  # human | auto
    query: str
    label: str  # the text to learn
    context: list[dict[str, str]] = field(default_factory=list)
    end_reply: str | None = None
    cloud_reply: str | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    customer: str | None = None
    status: str = "pending"
    reason: str = ""
    round_id: str | None = None
    created_at: float = 0.0
    id: str = ""

    def messages(self) -> list[dict[str, str]]:
        return list(self.context) + [{"role": "user", "content": self.query}]


class LabelStore:
    """Pseudo-labels and evolution rounds (SQLite, WAL, synchronous=FULL)."""

    def __init__(self, db: str | os.PathLike[str] | sqlite3.Connection, *, clock: Callable[[], float] = time.time):
        self.conn = db if isinstance(db, sqlite3.Connection) else connect(db)
        self.clock = clock
        ensure_schema(self.conn, SCHEMA)

    def add(self, label: PseudoLabel) -> bool:
        """Insert; False when this (source, trigger) was already recorded (idempotent steps)."""
        label.id = label.id or f"pl-{uuid.uuid4().hex[:20]}"
        label.created_at = label.created_at or self.clock()
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO pseudo_labels(id, source_id, trigger, trust, query, context, end_reply, cloud_reply, label,"
            " scores, customer, status, reason, round_id, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (label.id, label.source_id, label.trigger, label.trust, label.query, json.dumps(label.context, ensure_ascii=False),
             label.end_reply, label.cloud_reply, label.label, json.dumps(label.scores, ensure_ascii=False), label.customer,
             label.status, label.reason, label.round_id, label.created_at),
        )
        return cur.rowcount == 1

    def seen(self, source_id: str, trigger: str) -> bool:
        return self.conn.execute("SELECT 1 FROM pseudo_labels WHERE source_id=? AND trigger=?", (source_id, trigger)).fetchone() is not None

    def list(self, status: str | None = None, *, customer: str | None = None, since: float | None = None,
             newest: int | None = None) -> list[PseudoLabel]:
        """Labels oldest first; with `newest`, only that many of the newest."""
        sql, args = "SELECT * FROM pseudo_labels WHERE 1=1", []
        if status:
            sql += " AND status = ?"
            args.append(status)
        if customer is not None:
            sql += " AND customer = ?"
            args.append(customer)
        if since is not None:
            sql += " AND created_at >= ?"
            args.append(since)
        if newest is not None:
            rows = self.conn.execute(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", [*args, max(0, newest)]).fetchall()
            return [_label(r) for r in reversed(rows)]
        rows = self.conn.execute(sql + " ORDER BY created_at, id", args).fetchall()
        return [_label(r) for r in rows]

    def count_for_customer(self, customer: str, since: float, triggers: tuple[str, ...] | None = None) -> int:
        """Automatic labels credited to `customer` since `since` (not quarantined), of `triggers` only when given."""
        sql = ("SELECT COUNT(*) FROM pseudo_labels WHERE customer = ? AND created_at >= ? AND trust = 'auto' "
               "AND status != 'quarantined'")
        args: list[Any] = [customer, since]
        if triggers is not None:
            sql += f" AND trigger IN ({','.join('?' * len(triggers))})"
            args += list(triggers)
        row = self.conn.execute(sql, args).fetchone()
        return int(row[0])

    def mark(self, ids: list[str], status: str, *, round_id: str | None = None, reason: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        with self.conn:
            for i in ids:
                self.conn.execute(
                    "UPDATE pseudo_labels SET status = ?, round_id = COALESCE(?, round_id), reason = COALESCE(?, reason) WHERE id = ?",
                    (status, round_id, reason, i),
                )

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, COUNT(*) FROM pseudo_labels GROUP BY status").fetchall()
        return {s: 0 for s in STATUSES} | {r[0]: int(r[1]) for r in rows}

    # -- rounds ---------------------------------------------------------------------------
    def start_round(self, labels: int, champion: str | None) -> str:
        rid = f"round-{uuid.uuid4().hex[:12]}"
        # who runs it: a round whose process is gone was interrupted (see fail_interrupted_rounds)
        owner = {"pid": os.getpid(), "life": _LIFE}
        self.conn.execute("INSERT INTO evolve_rounds(id, started_at, labels, champion, detail) VALUES (?,?,?,?,?)",
                          (rid, self.clock(), labels, champion, json.dumps({"owner": owner})))
        return rid

    def fail_round(self, rid: str, *, reason: str, **detail: Any) -> None:
        """Mark an unfinished round failed (finished, not promoted, `detail.status` "failed")."""
        row = self.conn.execute("SELECT detail FROM evolve_rounds WHERE id = ?", (rid,)).fetchone()
        if row is None:
            return
        d = json.loads(row[0] or "{}") | detail | {"status": "failed", "reason": reason}
        self.conn.execute("UPDATE evolve_rounds SET finished_at=?, promoted=0, detail=? WHERE id=? AND finished_at IS NULL",
                          (self.clock(), json.dumps(d, ensure_ascii=False, default=str), rid))

    def fail_interrupted_rounds(self, *, stale_after_s: float = 86400.0) -> list[str]:
        """At start: rounds left unfinished by a process that is gone (killed mid-round) are
        marked failed with reason "interrupted"; a round another live process is running is
        kept. Returns the ids marked."""
        out = []
        rows = self.conn.execute("SELECT id, started_at, detail FROM evolve_rounds WHERE finished_at IS NULL").fetchall()
        for r in rows:
            owner = (json.loads(r["detail"] or "{}") or {}).get("owner") or {}
            if _owner_alive(owner) and self.clock() - float(r["started_at"]) < stale_after_s:
                continue
            self.fail_round(r["id"], reason="interrupted")
            out.append(r["id"])
        return out

    def finish_round(self, rid: str, *, candidate: str | None, promoted: bool, detail: dict[str, Any]) -> None:
        self.conn.execute("UPDATE evolve_rounds SET finished_at=?, candidate=?, promoted=?, detail=? WHERE id=?",
                          (self.clock(), candidate, int(promoted), json.dumps(detail, ensure_ascii=False, default=str), rid))

    def rounds(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM evolve_rounds ORDER BY started_at").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["detail"] = json.loads(d["detail"])
            d["promoted"] = None if d["promoted"] is None else bool(d["promoted"])
            d["status"] = "running" if d["finished_at"] is None else d["detail"].get("status", "finished")
            out.append(d)
        return out

    def get_state(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM evolve_state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_state(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT INTO evolve_state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                          (key, json.dumps(value)))


_LIFE = uuid.uuid4().hex  # this process's life: a pid that comes back after a restart is another life


def _owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the process that started a round still runs it."""
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False  # a round from before owners were recorded: nobody can be running it
    if pid == os.getpid():
        return owner.get("life") == _LIFE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _label(row: sqlite3.Row) -> PseudoLabel:
    d = dict(row)
    d["context"] = json.loads(d["context"])
    d["scores"] = json.loads(d["scores"])
    return PseudoLabel(**d)


def round_outcomes(db_path: str | os.PathLike[str]) -> dict[str, int] | None:
    """Finished online-loop rounds by outcome (promoted | rejected | failed) in a workspace
    database, read-only (a server's metrics read what an `endcloud evolve` process wrote);
    None when the database or its rounds table does not exist."""
    if str(db_path) == ":memory:" or not os.path.exists(db_path):
        return None
    conn = sqlite3.connect(f"file:{os.fspath(db_path)}?mode=ro", uri=True, timeout=1.0)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='evolve_rounds'").fetchone() is None:
            return None
        rows = conn.execute(
            "SELECT CASE WHEN promoted = 1 THEN 'promoted' WHEN json_extract(detail, '$.status') = 'failed' "
            "THEN 'failed' ELSE 'rejected' END, COUNT(*) FROM evolve_rounds WHERE finished_at IS NOT NULL GROUP BY 1"
        ).fetchall()
    finally:
        conn.close()
    return {"promoted": 0, "rejected": 0, "failed": 0} | {k: int(n) for k, n in rows}
