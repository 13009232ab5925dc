"""Per-arm online metrics of canary and A/B experiments, in the workspace database.

    canary_turns     one row per end reply served during an experiment: its arm, the adapter,
                     whether the router handed it to the cloud, whether the grounding check
                     failed it, its latency and (takeovers) its shadow-scored Final
    canary_sessions  the arm each session got first: a session keeps it for its whole life

Feedback is not copied: `stats` joins the conversation store's `feedback` table (same
file) on the message id, so a 👎 given an hour later still counts for the arm that wrote
the reply. Everything is in SQLite, so a restarted server judges on all of it.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from endcloud.store.db import connect, ensure_schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS canary_turns (
    message_id TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    arm TEXT NOT NULL,
    adapter TEXT,
    session_id TEXT,
    share REAL,
    takeover INTEGER NOT NULL DEFAULT 0,
    checked INTEGER NOT NULL DEFAULT 0,
    ungrounded INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL,
    final REAL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS canary_turns_arm ON canary_turns(experiment, arm, created_at);
CREATE TABLE IF NOT EXISTS canary_sessions (
    experiment TEXT NOT NULL,
    session_id TEXT NOT NULL,
    arm TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (experiment, session_id)
);
"""

DOWNVOTE_MAX = 2  # ratings 1-2 (and 👎) are downvotes; 4-5 (and 👍) upvotes


class CanaryLog:
    """The experiments' tables in `path` (the workspace's endcloud.db)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.conn = connect(path)
        # a row per customer turn, written on the event loop: a WAL append without fsync; a
        # power cut loses the last few turns' counts, never the database
        self.conn.execute("PRAGMA synchronous=NORMAL")
        ensure_schema(self.conn, SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    def session_arm(self, experiment: str, session_id: str, arm: str, *, now: float | None = None) -> str:
        """The session's arm: the one it got first (`arm` if it has none yet)."""
        with self._lock:
            self.conn.execute("INSERT OR IGNORE INTO canary_sessions VALUES (?, ?, ?, ?)",
                              (experiment, session_id, arm, time.time() if now is None else now))
            # fetchall, never fetchone: a statement left unfinished keeps this connection's read
            # snapshot open, and its next write then fails at once with "database is locked"
            rows = self.conn.execute("SELECT arm FROM canary_sessions WHERE experiment = ? AND session_id = ?",
                                     (experiment, session_id)).fetchall()
        return rows[0]["arm"] if rows else arm

    def pinned_arm(self, experiment: str, session_id: str) -> str | None:
        """The arm `session_id` was pinned to in `experiment` (a read: never waits for a writer)."""
        with self._lock:
            rows = self.conn.execute("SELECT arm FROM canary_sessions WHERE experiment = ? AND session_id = ?",
                                     (experiment, session_id)).fetchall()
        return rows[0]["arm"] if rows else None

    @staticmethod
    def turn_row(*, message_id: str, experiment: str, arm: str, adapter: str | None, session_id: str | None,
                 share: float, takeover: bool, grounded: bool | None, latency_ms: float | None,
                 final: float | None = None, now: float | None = None) -> tuple:
        return (message_id, experiment, arm, adapter, session_id, share, int(bool(takeover)), int(grounded is not None),
                int(grounded is False), latency_ms, final, time.time() if now is None else now)

    def record(self, **turn: Any) -> None:
        self.write([self.turn_row(**turn)], [])

    def write(self, turns: list[tuple], pins: list[tuple]) -> None:
        """Many turns (`turn_row`) and session pins (experiment, session, arm, at) in one transaction:
        the server writes from its canary thread once a tick, never on a customer's turn."""
        if not turns and not pins:
            return
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany("INSERT OR REPLACE INTO canary_turns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                      turns)
                self.conn.executemany("INSERT OR IGNORE INTO canary_sessions VALUES (?, ?, ?, ?)", pins)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _has_feedback(self) -> bool:
        return bool(self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feedback'").fetchall())

    def stats(self, experiment: str, *, since: float | None = None) -> dict[str, dict[str, Any]]:
        """arm -> counts (the fields of `scoring.sequential.ArmStats`) of its turns (since `since`)."""
        fb = ("LEFT JOIN (SELECT message_id, MIN(rating) AS low, MAX(rating) AS high, "
              "MAX(correction IS NOT NULL AND correction != '') AS corrected FROM feedback GROUP BY message_id) f "
              "ON f.message_id = t.message_id") if self._has_feedback() else \
            "LEFT JOIN (SELECT NULL AS message_id, NULL AS low, NULL AS high, NULL AS corrected) f ON 0"
        sql = (f"SELECT t.arm AS arm, COUNT(*) AS turns, SUM(t.takeover) AS takeover, SUM(t.checked) AS checked, "
               f"SUM(t.ungrounded) AS ungrounded, COUNT(f.low) AS rated, "
               f"SUM(CASE WHEN f.low <= {DOWNVOTE_MAX} THEN 1 ELSE 0 END) AS downvote, "
               f"SUM(CASE WHEN f.high >= 4 THEN 1 ELSE 0 END) AS upvote, SUM(COALESCE(f.corrected, 0)) AS corrections, "
               f"COUNT(t.latency_ms) AS latency_n, SUM(t.latency_ms) AS latency_sum, "
               f"SUM(t.latency_ms * t.latency_ms) AS latency_sq, COUNT(t.final) AS final_n, SUM(t.final) AS final_sum "
               f"FROM canary_turns t {fb} WHERE t.experiment = ? AND t.created_at >= ? GROUP BY t.arm")
        with self._lock:
            rows = self.conn.execute(sql, (experiment, since or 0.0)).fetchall()
        return {r["arm"]: {k: (r[k] or 0) for k in r.keys() if k != "arm"} for r in rows}

    def curve(self, experiment: str, *, buckets: int = 20) -> list[dict[str, Any]]:
        """Per arm, the experiment's turns in `buckets` time slices: turns, takeovers, ungrounded
        (the dashboard's per-variant curves)."""
        with self._lock:
            [(lo, hi)] = self.conn.execute("SELECT MIN(created_at), MAX(created_at) FROM canary_turns WHERE experiment = ?",
                                           (experiment,)).fetchall()
            if lo is None:
                return []
            width = max((hi - lo) / buckets, 1e-6)
            rows = self.conn.execute(
                "SELECT arm, CAST((created_at - ?) / ? AS INTEGER) AS b, COUNT(*) AS turns, SUM(takeover) AS takeover, "
                "SUM(ungrounded) AS ungrounded, AVG(latency_ms) AS latency_ms FROM canary_turns WHERE experiment = ? "
                "GROUP BY arm, b ORDER BY b", (lo, width, experiment)).fetchall()
        return [{"arm": r["arm"], "t": lo + min(r["b"], buckets - 1) * width, "turns": r["turns"],
                 "takeover": r["takeover"] or 0, "ungrounded": r["ungrounded"] or 0,
                 "latency_ms": None if r["latency_ms"] is None else round(r["latency_ms"], 1)} for r in rows]


__all__ = ["CanaryLog", "DOWNVOTE_MAX", "SCHEMA"]
