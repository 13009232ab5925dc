"""A SQLite cache of teacher replies keyed by the exact request: resumable distillation.

The key is sha256 over the teacher's fingerprint (backend, URL, model, sampling settings)
and the exact messages (the full Table II prompt included). Each answer is committed
(WAL, synchronous=FULL) the moment it arrives, so a run killed at any point loses only
the requests in flight; run again and nothing answered is asked twice. Keys are hashes
and the stored text is the reply as the shop sees it (placeholders restored) — the file
stays in the shop's workspace, like the rest of its data.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import replace

from endcloud.cloud.teacher import Messages, Teacher, WrapperTeacher, check_messages
from endcloud.records import Reply, Usage

_DDL = """
CREATE TABLE IF NOT EXISTS teacher_cache (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost REAL NOT NULL,
    created_at REAL NOT NULL
);
"""


def request_key(fingerprint: str, messages: Messages) -> str:
    canon = json.dumps({"teacher": fingerprint, "messages": check_messages(messages)},
                       ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


class ResponseCache:
    """`get(key) -> Reply | None`, `put(key, teacher, reply)`; safe across threads."""

    def __init__(self, path: str | os.PathLike[str]):
        from endcloud.store.db import connect, ensure_schema

        self.path = path
        self._conn = connect(path, check_same_thread=False)
        ensure_schema(self._conn, _DDL)
        self._lock = threading.Lock()

    def get(self, key: str) -> Reply | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT model, text, prompt_tokens, completion_tokens FROM teacher_cache WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return Reply(text=row["text"], source="cloud", model=row["model"],
                     usage=Usage(row["prompt_tokens"], row["completion_tokens"]), cached=True, cost=0.0)

    def put(self, key: str, teacher: str, reply: Reply) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO teacher_cache VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, teacher, reply.model, reply.text, reply.usage.prompt_tokens,
                 reply.usage.completion_tokens, reply.cost, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM teacher_cache").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class CachedTeacher(WrapperTeacher):
    """Answers from the cache when it can; otherwise asks `inner` and stores the answer."""

    def __init__(self, inner: Teacher, cache: ResponseCache):
        super().__init__(inner)
        self.cache = cache
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    async def areply(self, messages: Messages) -> Reply:
        key = request_key(self.inner.fingerprint, messages)
        hit = self.cache.get(key)
        if hit is not None:
            with self._lock:
                self.hits += 1
            return hit
        reply = await self.inner.areply(messages)
        self.cache.put(key, self.inner.fingerprint, reply)
        with self._lock:
            self.misses += 1
        return replace(reply, cached=False)
