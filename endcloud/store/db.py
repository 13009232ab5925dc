"""Opening the workspace database the one right way (WAL, FULL sync, foreign keys)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def connect(path: str | os.PathLike[str], *, check_same_thread: bool = False, timeout: float = 30.0) -> sqlite3.Connection:
    """Open (creating folders) a SQLite database in WAL mode with synchronous=FULL.

    FULL rather than NORMAL: feedback, labels and reviews must survive a power cut, and
    our write rate (one row per customer turn) is far below what FULL costs.
    """
    path = Path(path)
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=timeout, check_same_thread=check_same_thread, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


def ensure_schema(conn: sqlite3.Connection, ddl: str) -> None:
    """Run idempotent `CREATE TABLE IF NOT EXISTS ...` statements in one transaction."""
    conn.executescript("BEGIN;\n" + ddl + "\nCOMMIT;")
