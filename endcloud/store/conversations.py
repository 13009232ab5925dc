"""Conversations as the server saw them: sessions, messages, replies, routing, feedback.

The serving room writes one row per customer message and one per served reply (who
answered, the end model's draft, the cloud's reply when it took over, the scores and the
routing decision); the online loop (`endcloud.evolve`) reads them back as pseudo-label
material together with the customers' feedback. Customer profiles (preferences and
orders) live here too, because the server puts them in the model's context.

    customers(id, preferences, updated_at)          one row per `user`
    orders(customer, order_id, item, status, detail, created_at)
    sessions(id, customer, created_at, updated_at)
    messages(id, session_id, seq, role, content, created_at)
    replies(message_id -> messages.id, answered_by, model, end_text, cloud_text,
            scores, decision, cloud_failed, latency_ms, ttft_ms, cloud_tokens, cloud_cost)
    events(id, message_id, kind, detail, created_at)   e.g. kind = "cloud_failed"
    feedback(id, message_id -> messages.id, rating 1..5, comment, correction, customer)

The connection is `endcloud.store.connect` (WAL). Feedback and profiles are committed with
synchronous=FULL (never lost to a power cut); the per-turn rows (sessions, messages,
replies, events) with NORMAL, which in WAL mode survives a crash of the server and costs
no fsync per turn — the next FULL commit or checkpoint makes them durable too. One `ConversationStore` is safe to share between threads (a lock
serialises writers; SQLite's WAL lets readers of other connections proceed).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from endcloud.errors import DataError
from endcloud.store.db import connect, ensure_schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id TEXT PRIMARY KEY,
    preferences TEXT NOT NULL DEFAULT '{}',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    customer TEXT NOT NULL,
    order_id TEXT NOT NULL,
    item TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    PRIMARY KEY (customer, order_id)
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_customer ON sessions(customer, updated_at);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_session ON messages(session_id, seq);
CREATE TABLE IF NOT EXISTS replies (
    message_id TEXT PRIMARY KEY REFERENCES messages(id),
    session_id TEXT NOT NULL,
    query TEXT NOT NULL,
    answered_by TEXT NOT NULL,
    model TEXT NOT NULL,
    end_text TEXT,
    cloud_text TEXT,
    scores TEXT NOT NULL DEFAULT '{}',
    decision TEXT NOT NULL DEFAULT '{}',
    cloud_failed INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL,
    ttft_ms REAL,
    cloud_tokens INTEGER NOT NULL DEFAULT 0,
    cloud_cost REAL NOT NULL DEFAULT 0,
    adapter TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS replies_created ON replies(created_at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL REFERENCES messages(id),
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment TEXT,
    correction TEXT,
    customer TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_message ON feedback(message_id);
"""

THUMBS = {"up": 5, "down": 1, "👍": 5, "👎": 1}


def normalise_rating(rating: Any) -> int:
    """'up'/'down' (or 👍/👎) -> 5/1; an integer 1..5 stays; anything else is a DataError."""
    if isinstance(rating, bool):
        raise DataError(f"rating must be 'up', 'down' or an integer 1-5, got {rating!r}")
    if isinstance(rating, str):
        key = rating.strip().lower()
        if key in THUMBS:
            return THUMBS[key]
        if key.isdigit():
            rating = int(key)
        else:
            raise DataError(f"rating must be 'up', 'down' or an integer 1-5, got {rating!r}")
    if isinstance(rating, float) and rating.is_integer():
        rating = int(rating)
    if isinstance(rating, int) and 1 <= rating <= 5:
        return rating
    raise DataError(f"rating must be 'up', 'down' or an integer 1-5, got {rating!r}")


@dataclass(slots=True)
class Profile:
    """What the shop knows about one customer: free-form preferences and recent orders."""

    customer: str
    preferences: dict[str, Any] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"customer": self.customer, "preferences": self.preferences, "orders": self.orders}

    def is_empty(self) -> bool:
        return not self.preferences and not self.orders


@dataclass(slots=True)
class ServedReply:
    """Everything recorded about one reply the server sent."""

    message_id: str
    session_id: str
    query: str
    answered_by: str  # "end" | "cloud"
    model: str  # the model name the client asked for
    end_text: str | None
    cloud_text: str | None
    served_text: str
    scores: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)
    cloud_failed: bool = False
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cloud_tokens: int = 0
    cloud_cost: float = 0.0
    adapter: str | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class ConversationStore:
    """Sessions, messages, replies, decisions, feedback and profiles in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, session_idle_s: float = 1800.0):
        self.path = Path(path) if str(path) != ":memory:" else Path(":memory:")
        self.session_idle_s = session_idle_s
        self._conn = connect(path, check_same_thread=False)
        self._lock = threading.RLock()
        ensure_schema(self._conn, SCHEMA)
        self._conn.execute("PRAGMA synchronous=NORMAL")

    # -- plumbing ---------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _tx(self, *, durable: bool = False):
        return _Tx(self, durable=durable)

    # -- sessions and messages ----------------------------------------------------------
    def open_session(self, customer: str, session_id: str | None = None, *, now: float | None = None) -> str:
        """Return `session_id` (created if new, refused if it belongs to another customer)
        or else the customer's latest session when it was active within `session_idle_s`,
        or a new one."""
        now = time.time() if now is None else now
        with self._lock:
            if session_id is not None:
                row = self._conn.execute("SELECT customer FROM sessions WHERE id = ?", (session_id,)).fetchone()
                if row is not None:
                    if row["customer"] != customer:
                        raise DataError(f"session {session_id!r} belongs to another customer")
                    return session_id
                self._conn.execute(
                    "INSERT INTO sessions(id, customer, created_at, updated_at) VALUES (?, ?, ?, ?)",
                    (session_id, customer, now, now),
                )
                return session_id
            row = self._conn.execute(
                "SELECT id, updated_at FROM sessions WHERE customer = ? ORDER BY updated_at DESC LIMIT 1", (customer,)
            ).fetchone()
            if row is not None and now - row["updated_at"] <= self.session_idle_s:
                return row["id"]
            sid = new_id("sess")
            self._conn.execute(
                "INSERT INTO sessions(id, customer, created_at, updated_at) VALUES (?, ?, ?, ?)", (sid, customer, now, now)
            )
            return sid

    def add_message(self, session_id: str, role: str, content: str, *, message_id: str | None = None) -> str:
        mid = message_id or new_id("msg")
        now = time.time()
        with self._tx() as c:
            seq = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?", (session_id,)).fetchone()[0]
            c.execute(
                "INSERT INTO messages(id, session_id, seq, role, content, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (mid, session_id, seq, role, content, now),
            )
            c.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id))
        return mid

    def history(self, session_id: str, *, limit: int | None = None) -> list[dict[str, str]]:
        """The session's messages, oldest first, in OpenAI form (the last `limit` only)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT role, content FROM messages WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
                (session_id, -1 if limit is None else int(limit)),
            ).fetchall()
        return [{"role": r["role"], "content": r["content"]} for r in reversed(rows)]

    def history_tail(self, session_id: str, limit: int) -> tuple[int, list[dict[str, str]]]:
        """(how many messages the session has, its last `limit` messages oldest first)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, role, content FROM messages WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
                (session_id, int(limit)),
            ).fetchall()
            n = rows[0]["seq"] if rows else 0
        return n, [{"role": r["role"], "content": r["content"]} for r in reversed(rows)]

    def session(self, session_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                return None
            msgs = self._conn.execute(
                "SELECT m.id, m.role, m.content, m.created_at, r.answered_by FROM messages m "
                "LEFT JOIN replies r ON r.message_id = m.id WHERE m.session_id = ? ORDER BY m.seq",
                (session_id,),
            ).fetchall()
        return {
            "id": row["id"],
            "customer": row["customer"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "messages": [
                {k: m[k] for k in ("id", "role", "content", "created_at")} | ({"answered_by": m["answered_by"]} if m["answered_by"] else {})
                for m in msgs
            ],
        }

    # -- ownership (who may reach what: endcloud.serve.auth) -----------------------------
    def session_owner(self, session_id: str) -> str | None:
        """The customer (or anonymous owner) of `session_id`; None when there is no such session."""
        with self._lock:
            row = self._conn.execute("SELECT customer FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else row["customer"]

    def message_owner(self, message_id: str) -> str | None:
        """The owner of the session a message belongs to; None for an unknown message."""
        with self._lock:
            row = self._conn.execute(
                "SELECT s.customer FROM messages m JOIN sessions s ON s.id = m.session_id WHERE m.id = ?", (message_id,)
            ).fetchone()
        return None if row is None else row["customer"]

    def order_ids_of(self, customer: str) -> list[str]:
        """Every order id on the customer's profile (not only the recent ones the prompt shows)."""
        with self._lock:
            rows = self._conn.execute("SELECT order_id FROM orders WHERE customer = ?", (customer,)).fetchall()
        return [r["order_id"] for r in rows]

    def sessions_of(self, customer: str) -> list[str]:
        with self._lock:
            rows = self._conn.execute("SELECT id FROM sessions WHERE customer = ? ORDER BY created_at", (customer,)).fetchall()
        return [r["id"] for r in rows]

    # -- replies, decisions, events ----------------------------------------------------
    def record_reply(self, r: ServedReply) -> None:
        """Store the served reply as an assistant message plus its routing record, atomically."""
        now = time.time()
        with self._tx() as c:
            seq = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?", (r.session_id,)).fetchone()[0]
            c.execute(
                "INSERT INTO messages(id, session_id, seq, role, content, created_at) VALUES (?, ?, ?, 'assistant', ?, ?)",
                (r.message_id, r.session_id, seq, r.served_text, now),
            )
            c.execute(
                "INSERT INTO replies(message_id, session_id, query, answered_by, model, end_text, cloud_text, scores, decision,"
                " cloud_failed, latency_ms, ttft_ms, cloud_tokens, cloud_cost, adapter, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.message_id, r.session_id, r.query, r.answered_by, r.model, r.end_text, r.cloud_text,
                    json.dumps(r.scores, ensure_ascii=False), json.dumps(r.decision, ensure_ascii=False),
                    int(r.cloud_failed), r.latency_ms, r.ttft_ms, int(r.cloud_tokens), float(r.cloud_cost), r.adapter, now,
                ),
            )
            c.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, r.session_id))

    def record_event(self, kind: str, *, message_id: str | None = None, detail: dict[str, Any] | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO events(message_id, kind, detail, created_at) VALUES (?, ?, ?, ?)",
                (message_id, kind, json.dumps(detail or {}, ensure_ascii=False), time.time()),
            )

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if kind is None:
                rows = self._conn.execute("SELECT * FROM events ORDER BY id").fetchall()
            else:
                rows = self._conn.execute("SELECT * FROM events WHERE kind = ? ORDER BY id", (kind,)).fetchall()
        return [dict(r) | {"detail": json.loads(r["detail"])} for r in rows]

    def reply(self, message_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT r.*, m.content AS served_text FROM replies r JOIN messages m ON m.id = r.message_id WHERE r.message_id = ?",
                (message_id,),
            ).fetchone()
        return None if row is None else _reply_row(row)

    def iter_replies(self, *, since: float = 0.0, answered_by: str | None = None) -> Iterator[dict[str, Any]]:
        """Served replies (oldest first) with their context and feedback: the online loop's input.

        Each item: the reply's fields plus `context` (the messages before the query, OpenAI
        form) and `feedback` (list of {rating, comment, correction})."""
        with self._lock:
            sql = "SELECT r.*, m.content AS served_text, m.seq AS seq FROM replies r JOIN messages m ON m.id = r.message_id WHERE r.created_at >= ?"
            args: list[Any] = [since]
            if answered_by:
                sql += " AND r.answered_by = ?"
                args.append(answered_by)
            rows = self._conn.execute(sql + " ORDER BY r.created_at", args).fetchall()
            out = []
            for row in rows:
                ctx = self._conn.execute(
                    "SELECT role, content FROM messages WHERE session_id = ? AND seq < ? ORDER BY seq", (row["session_id"], row["seq"])
                ).fetchall()
                fb = self._conn.execute(
                    "SELECT rating, comment, correction FROM feedback WHERE message_id = ? ORDER BY id", (row["message_id"],)
                ).fetchall()
                d = _reply_row(row)
                # the last context message is the query itself
                d["context"] = [{"role": c["role"], "content": c["content"]} for c in ctx][:-1]
                d["feedback"] = [dict(f) for f in fb]
                out.append(d)
        yield from out

    def routing_log(self, *, since: float = 0.0) -> list[dict[str, Any]]:
        """Every reply's routing record, oldest first, without text or context (what
        `endcloud route calibrate` replays): created_at, model, answered_by, scores and
        decision (parsed), cloud_cost, cloud_failed."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT created_at, model, answered_by, scores, decision, cloud_cost, cloud_failed FROM replies "
                "WHERE created_at >= ? ORDER BY created_at", (since,)).fetchall()
        return [{"created_at": r["created_at"], "model": r["model"], "answered_by": r["answered_by"],
                 "scores": json.loads(r["scores"] or "{}"), "decision": json.loads(r["decision"] or "{}"),
                 "cloud_cost": float(r["cloud_cost"] or 0.0), "cloud_failed": bool(r["cloud_failed"])} for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            q = lambda sql: int(self._conn.execute(sql).fetchone()[0])  # noqa: E731
            return {
                "sessions": q("SELECT COUNT(*) FROM sessions"),
                "messages": q("SELECT COUNT(*) FROM messages"),
                "replies": q("SELECT COUNT(*) FROM replies"),
                "takeovers": q("SELECT COUNT(*) FROM replies WHERE answered_by = 'cloud'"),
                "cloud_failed": q("SELECT COUNT(*) FROM replies WHERE cloud_failed = 1"),
                "feedback": q("SELECT COUNT(*) FROM feedback"),
            }

    # -- feedback ----------------------------------------------------------------------
    def add_feedback(self, message_id: str, rating: Any, *, comment: str | None = None, correction: str | None = None,
                     customer: str | None = None) -> dict[str, Any]:
        """Record a verdict on a served reply. Raises KeyError for an unknown message id and
        DataError for a bad rating. Written under synchronous=FULL (durable at return)."""
        value = normalise_rating(rating)
        with self._tx(durable=True) as c:
            row = c.execute(
                "SELECT m.id FROM messages m JOIN replies r ON r.message_id = m.id WHERE m.id = ?", (message_id,)
            ).fetchone()
            if row is None:
                raise KeyError(message_id)
            cur = c.execute(
                "INSERT INTO feedback(message_id, rating, comment, correction, customer, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (message_id, value, comment, correction, customer, time.time()),
            )
            fid = int(cur.lastrowid)
        return {"id": fid, "message_id": message_id, "rating": value, "comment": comment, "correction": correction}

    def feedback(self, message_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if message_id is None:
                rows = self._conn.execute("SELECT * FROM feedback ORDER BY id").fetchall()
            else:
                rows = self._conn.execute("SELECT * FROM feedback WHERE message_id = ? ORDER BY id", (message_id,)).fetchall()
        return [dict(r) for r in rows]

    # -- customers -----------------------------------------------------------------------
    def set_profile(self, customer: str, *, preferences: dict[str, Any] | None = None,
                    orders: list[dict[str, Any]] | None = None, replace_orders: bool = False) -> Profile:
        """Merge `preferences` into the customer's and upsert `orders` (each needs `order_id`)."""
        now = time.time()
        with self._tx(durable=True) as c:
            row = c.execute("SELECT preferences FROM customers WHERE id = ?", (customer,)).fetchone()
            prefs = json.loads(row["preferences"]) if row else {}
            prefs.update(preferences or {})
            c.execute(
                "INSERT INTO customers(id, preferences, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET preferences = excluded.preferences, updated_at = excluded.updated_at",
                (customer, json.dumps(prefs, ensure_ascii=False), now),
            )
            if replace_orders:
                c.execute("DELETE FROM orders WHERE customer = ?", (customer,))
            for i, o in enumerate(orders or []):
                oid = o.get("order_id")
                if oid in (None, ""):
                    raise DataError(f"order {i} of customer {customer!r} has no 'order_id': {o!r}")
                detail = {k: v for k, v in o.items() if k not in ("order_id", "item", "status", "created_at")}
                c.execute(
                    "INSERT INTO orders(customer, order_id, item, status, detail, created_at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(customer, order_id) DO UPDATE SET item = excluded.item, status = excluded.status, "
                    "detail = excluded.detail",
                    (customer, str(oid), str(o.get("item", "")), str(o.get("status", "")),
                     json.dumps(detail, ensure_ascii=False), float(o.get("created_at") or now)),
                )
        return self.profile(customer)

    def profile(self, customer: str, *, max_orders: int = 5) -> Profile:
        with self._lock:
            row = self._conn.execute("SELECT preferences FROM customers WHERE id = ?", (customer,)).fetchone()
            orders = self._conn.execute(
                "SELECT order_id, item, status, detail, created_at FROM orders WHERE customer = ? "
                "ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (customer, max_orders),
            ).fetchall()
        return Profile(
            customer=customer,
            preferences=json.loads(row["preferences"]) if row else {},
            orders=[{"order_id": o["order_id"], "item": o["item"], "status": o["status"], **json.loads(o["detail"])} for o in orders],
        )

    def import_orders_csv(self, path: str | os.PathLike[str]) -> int:
        """Load a shop pack's `orders.csv` (columns `customer,order_id` + optional `item,status,...`)."""
        import csv

        p = Path(path)
        n = 0
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"customer", "order_id"} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"missing column(s) {sorted(missing)}; found {reader.fieldnames!r}", path=str(p), line=1)
            by_customer: dict[str, list[dict[str, Any]]] = {}
            for row in reader:
                cust = (row.pop("customer") or "").strip()
                if not cust:
                    continue
                by_customer.setdefault(cust, []).append({k: v for k, v in row.items() if k})
                n += 1
        for cust, orders in by_customer.items():
            self.set_profile(cust, orders=orders)
        return n


class _Tx:
    """`with store._tx() as conn:` — one IMMEDIATE transaction under the store's lock;
    `durable=True` commits it with synchronous=FULL."""

    def __init__(self, store: ConversationStore, *, durable: bool = False):
        self.store, self.durable = store, durable

    def __enter__(self):
        self.store._lock.acquire()
        try:
            if self.durable:
                self.store._conn.execute("PRAGMA synchronous=FULL")
            self.store._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._restore()
            raise
        return self.store._conn

    def __exit__(self, exc_type, exc, tb):
        try:
            self.store._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._restore()
        return False

    def _restore(self):
        try:
            if self.durable:
                self.store._conn.execute("PRAGMA synchronous=NORMAL")
        finally:
            self.store._lock.release()


def _reply_row(row) -> dict[str, Any]:
    d = dict(row)
    d["scores"] = json.loads(d["scores"])
    d["decision"] = json.loads(d["decision"])
    d["cloud_failed"] = bool(d["cloud_failed"])
    d.pop("seq", None)
    return d
