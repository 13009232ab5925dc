"""Forgetting a customer, and keeping conversations only so long (PIPL art. 47, GDPR art. 17 and 5(1)(e)).

Everything the workspace database holds about people, and how it hangs together:

    customers, orders                      the profile: keyed by customer id
    sessions -> messages -> replies        the conversations: sessions carry the customer id
             -> events, feedback           per message (feedback also names the customer)
    pseudo_labels                          lessons: `customer`, `source_id` = a message id or "review:<item>"
    review_items -> review_verdicts        the human track: items point at a message id
    review_ratings                         `target_id` = a message id
    evolve_state "shadow:<message id>"     the cloud's shadow score of a turn, with its reply

`forget_customer(db, "u42")` and `retain(db, before=t)` find the affected rows through those
links and either delete them (`mode="delete"`, the default) or scrub them (`mode="redact"`):
every text column is passed through `scrub` (the caller passes the privacy room's redaction:
this room does not import it), the customer id becomes a random pseudonym, and the profile,
which is nothing but personal data, is deleted in both modes. Each call is one transaction.

What this cannot reach is reported, not hidden: labels already trained into an adapter
(`used_labels`: the adapter keeps what it learned until it is retrained or rolled back),
files outside the database (vaults: see `endcloud privacy forget --vault`), and what a
running server holds in memory.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from endcloud.errors import DataError
from endcloud.store.db import connect

MODES = ("delete", "redact")
Scrub = Callable[[str], str]

# table -> its free-text columns (JSON columns are scrubbed value by value)
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "messages": ("content",),
    "replies": ("query", "end_text", "cloud_text"),
    "feedback": ("comment", "correction"),
    "events": ("detail",),
    "pseudo_labels": ("query", "context", "end_reply", "cloud_reply", "label"),
    "review_items": ("query", "context", "end_reply", "cloud_reply"),
    "review_verdicts": ("corrected_text", "note"),
    "review_ratings": ("comment",),
}
JSON_COLUMNS = {("events", "detail"), ("pseudo_labels", "context"), ("review_items", "context")}


@dataclass
class ForgetReport:
    """What was deleted or scrubbed, per table; and what could not be reached."""

    mode: str
    customer: str | None = None
    pseudonym: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    used_labels: int = 0  # lessons already trained on: the adapters that learned them keep them
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "customer": self.customer, "pseudonym": self.pseudonym, "counts": self.counts,
                "total": self.total, "used_labels": self.used_labels, "notes": self.notes}


def _scrub_json(value: Any, scrub: Scrub) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_scrub_json(v, scrub) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_json(v, scrub) for k, v in value.items()}
    return value


class _Job:
    """One forget or retention pass on one connection: the affected ids in temp tables, then the edits."""

    def __init__(self, conn: sqlite3.Connection, mode: str, scrub: Scrub | None, report: ForgetReport):
        if mode not in MODES:
            raise DataError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "redact" and scrub is None:
            raise DataError("mode 'redact' needs a scrub function (the privacy room's redaction)")
        self.c, self.mode, self.scrub, self.report = conn, mode, scrub, report
        self.tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def has(self, *tables: str) -> bool:
        return all(t in self.tables for t in tables)

    def ids(self, name: str, sql: str, args: Iterable[Any] = ()) -> None:
        """Fill temp table `name` with the ids `sql` selects (de-duplicated)."""
        self.c.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (id TEXT PRIMARY KEY)")
        self.c.execute(f"DELETE FROM {name}")
        self.c.execute(f"INSERT OR IGNORE INTO {name} (id) {sql}", tuple(args))

    def count(self, n: int, table: str) -> None:
        if n:
            self.report.counts[table] = self.report.counts.get(table, 0) + n

    def apply(self, table: str, where: str, args: Iterable[Any] = (), *, key: str = "rowid") -> None:
        """Delete the rows of `table` matching `where`, or scrub their text columns."""
        if not self.has(table):
            return
        args = tuple(args)
        if self.mode == "delete":
            self.count(self.c.execute(f"DELETE FROM {table} WHERE {where}", args).rowcount, table)
            return
        cols = TEXT_COLUMNS.get(table, ())
        rows = self.c.execute(f"SELECT {key} AS k, {', '.join(cols)} FROM {table} WHERE {where}", args).fetchall()
        n = 0
        for r in rows:
            new = {}
            for col in cols:
                v = r[col]
                if v is None:
                    continue
                if (table, col) in JSON_COLUMNS:
                    try:
                        new[col] = json.dumps(_scrub_json(json.loads(v), self.scrub), ensure_ascii=False)
                    except json.JSONDecodeError:
                        new[col] = self.scrub(v)
                else:
                    new[col] = self.scrub(v)
            changed = {c: v for c, v in new.items() if v != r[c]}
            if changed:
                sets = ", ".join(f"{c} = ?" for c in changed)
                self.c.execute(f"UPDATE {table} SET {sets} WHERE {key} = ?", (*changed.values(), r["k"]))
            n += 1
        self.count(n, table)

    def conversations(self) -> None:
        """Delete or scrub everything hanging off the message ids in temp table fm (and sessions in fs)."""
        has_reviews = self.has("review_items")
        if has_reviews:
            self.ids("fi", "SELECT id FROM review_items WHERE message_id IN (SELECT id FROM fm)")
        if self.has("pseudo_labels"):
            used_where = "status = 'used' AND (source_id IN (SELECT id FROM fm)" + (
                " OR source_id IN (SELECT 'review:' || id FROM fi))" if has_reviews else ")")
            self.report.used_labels += int(self.c.execute(f"SELECT COUNT(*) FROM pseudo_labels WHERE {used_where}").fetchone()[0])
            where = "source_id IN (SELECT id FROM fm)" + (" OR source_id IN (SELECT 'review:' || id FROM fi)" if has_reviews else "")
            self.apply("pseudo_labels", where)
        if has_reviews:
            self.apply("review_verdicts", "item_id IN (SELECT id FROM fi)")
            self.apply("review_items", "id IN (SELECT id FROM fi)", key="id")
        self.apply("review_ratings", "target_id IN (SELECT id FROM fm)")
        if self.has("evolve_state"):
            # the shadow score of a turn holds the cloud's reply to it: gone in both modes
            self.count(self.c.execute("DELETE FROM evolve_state WHERE key IN (SELECT 'shadow:' || id FROM fm)").rowcount,
                       "evolve_state")
        self.apply("feedback", "message_id IN (SELECT id FROM fm)")
        self.apply("events", "message_id IN (SELECT id FROM fm)")
        self.apply("replies", "message_id IN (SELECT id FROM fm)", key="message_id")
        self.apply("messages", "id IN (SELECT id FROM fm)", key="id")


def _open(db: str | os.PathLike[str] | sqlite3.Connection) -> tuple[sqlite3.Connection, bool]:
    if isinstance(db, sqlite3.Connection):
        return db, False
    return connect(db), True


def _run(db: Any, mode: str, scrub: Scrub | None, report: ForgetReport, body: Callable[[_Job], None]) -> ForgetReport:
    conn, own = _open(db)
    try:
        if own:
            conn.execute("PRAGMA synchronous=FULL")  # a forgotten row must stay forgotten after a power cut
        conn.execute("BEGIN IMMEDIATE")
        try:
            job = _Job(conn, mode, scrub, report)
            body(job)
            for t in ("fm", "fs", "fi"):
                conn.execute(f"DROP TABLE IF EXISTS temp.{t}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        if own:
            conn.close()
    return report


def forget_customer(db: str | os.PathLike[str] | sqlite3.Connection, customer: str, *, mode: str = "delete",
                    scrub: Scrub | None = None) -> ForgetReport:
    """Delete (or scrub and pseudonymise) everything the database holds about `customer`."""
    if not customer or not str(customer).strip():
        raise DataError("forget needs a customer id, got an empty one")
    report = ForgetReport(mode=mode, customer=customer)
    if mode == "redact":
        report.pseudonym = f"forgotten-{uuid.uuid4().hex[:16]}"

    def body(job: _Job) -> None:
        c = job.c
        job.ids("fs", "SELECT NULL WHERE 0")
        job.ids("fm", "SELECT NULL WHERE 0")
        if job.has("sessions", "messages"):
            job.ids("fs", "SELECT id FROM sessions WHERE customer = ?", (customer,))
            job.ids("fm", "SELECT id FROM messages WHERE session_id IN (SELECT id FROM fs)")
            job.conversations()
            # feedback the customer gave on messages outside their sessions (none today; cheap to be sure)
            job.apply("feedback", "customer = ? AND message_id NOT IN (SELECT id FROM fm)", (customer,))
            if mode == "delete":
                job.count(c.execute("DELETE FROM sessions WHERE id IN (SELECT id FROM fs)").rowcount, "sessions")
            else:
                job.count(c.execute("UPDATE sessions SET customer = ? WHERE id IN (SELECT id FROM fs)",
                                    (report.pseudonym,)).rowcount, "sessions")
                if job.has("feedback"):
                    c.execute("UPDATE feedback SET customer = ? WHERE customer = ?", (report.pseudonym, customer))
        if job.has("pseudo_labels"):
            rest = "customer = ? AND source_id NOT IN (SELECT id FROM fm)"  # lessons not already reached through a message
            report.used_labels += int(c.execute(f"SELECT COUNT(*) FROM pseudo_labels WHERE {rest} AND status = 'used'",
                                                (customer,)).fetchone()[0])
            job.apply("pseudo_labels", rest, (customer,))
            if mode == "redact":
                c.execute("UPDATE pseudo_labels SET customer = ? WHERE customer = ?", (report.pseudonym, customer))
        # the profile is nothing but personal data: deleted in both modes
        for table, col in (("orders", "customer"), ("customers", "id")):
            if job.has(table):
                job.count(c.execute(f"DELETE FROM {table} WHERE {col} = ?", (customer,)).rowcount, table)

    _run(db, mode, scrub, report, body)
    if report.used_labels:
        report.notes.append(f"{report.used_labels} of the customer's lessons were already trained into an adapter; "
                            "retrain without them or roll back to an older version to forget what it learned")
    return report


def retain(db: str | os.PathLike[str] | sqlite3.Connection, *, days: float | None = None, before: float | None = None,
           mode: str = "delete", scrub: Scrub | None = None, now: float | None = None) -> ForgetReport:
    """Delete (or scrub) conversation messages older than `days` (or written before `before`, a Unix
    time), with their replies, feedback, events, review items and lessons; sessions left empty go too.
    Profiles (customers, orders) are the shop's records, not conversations, and are kept."""
    if (days is None) == (before is None):
        raise DataError("retain needs exactly one of days= or before=")
    if days is not None:
        if days < 0:
            raise DataError(f"--days must be >= 0, got {days!r}")
        before = (time.time() if now is None else now) - days * 86400.0
    report = ForgetReport(mode=mode)

    def body(job: _Job) -> None:
        if not job.has("sessions", "messages"):
            return
        job.ids("fm", "SELECT id FROM messages WHERE created_at < ?", (before,))
        job.conversations()
        if job.has("replies"):  # a reply row whose message is gone (an older schema's leftovers)
            job.apply("replies", "created_at < ? AND message_id NOT IN (SELECT id FROM messages)", (before,), key="message_id")
        if mode == "delete":
            n = job.c.execute("DELETE FROM sessions WHERE updated_at < ? AND id NOT IN (SELECT DISTINCT session_id FROM messages)",
                              (before,)).rowcount
            job.count(n, "sessions")

    _run(db, mode, scrub, report, body)
    if report.used_labels:
        report.notes.append(f"{report.used_labels} expired lessons were already trained into an adapter")
    return report


def _fields(raw: str | None) -> str:
    """A JSON object as `key: value` lines, the way the server writes a profile into the prompt
    (so the privacy room's field rules read `receiver: 张伟` as they would there)."""
    try:
        obj = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return raw or ""
    if not isinstance(obj, dict):
        return raw or ""
    return "\n".join(f"{k}: {v}" for k, v in obj.items() if v not in (None, ""))


def customer_order_ids(db: str | os.PathLike[str] | sqlite3.Connection, customer: str) -> list[str]:
    """The ids of every order on the customer's profile (personal values the detectors may not know)."""
    conn, own = _open(db)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'orders'").fetchone():
            return []
        return [r[0] for r in conn.execute("SELECT order_id FROM orders WHERE customer = ?", (customer,))]
    finally:
        if own:
            conn.close()


def customer_texts(db: str | os.PathLike[str] | sqlite3.Connection, customer: str) -> list[str]:
    """Every text the database holds from or about `customer` (their messages, the replies, their
    profile's values): what the privacy room scans for values to drop from vault files."""
    conn, own = _open(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        out: list[str] = []
        if {"sessions", "messages"} <= tables:
            out += [r[0] for r in conn.execute(
                "SELECT m.content FROM messages m JOIN sessions s ON s.id = m.session_id WHERE s.customer = ?", (customer,))]
        if "customers" in tables:
            out += [_fields(r[0]) for r in conn.execute("SELECT preferences FROM customers WHERE id = ?", (customer,))]
        if "orders" in tables:
            for r in conn.execute("SELECT order_id, item, status, detail FROM orders WHERE customer = ?", (customer,)):
                out += [r[0], r[1], r[2], _fields(r[3])]
        return [t for t in out if t]
    finally:
        if own:
            conn.close()
