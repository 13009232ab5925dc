"""The audit log: one fsync'd JSON line per outbound body, hash of what was sent, body redacted again."""

from __future__ import annotations

import hashlib
import json
import threading

from endcloud.privacy import AuditLog


def test_record_appends_hash_bytes_and_redacted_body(tmp_path):
    log = AuditLog(tmp_path / "audit" / "outbound.jsonl")
    clean = '{"messages": [{"role": "user", "content": "电话[PHONE_1]"}]}'
    leaky = '{"messages": [{"role": "user", "content": "电话13800138000"}]}'
    h1 = log.record("https://api.example.com/v1/chat/completions", clean)
    h2 = log.record("https://api.example.com/v1/chat/completions", leaky)
    assert h1 == hashlib.sha256(clean.encode()).hexdigest()
    assert h2 == hashlib.sha256(leaky.encode()).hexdigest()
    rows = list(log.entries())
    assert [r["sha256"] for r in rows] == [h1, h2]
    assert rows[0]["bytes"] == len(clean.encode()) and rows[0]["body"] == clean and rows[0]["pii_spans"] == 0
    # the leak is flagged, and the log itself does not keep it
    assert rows[1]["pii_spans"] == 1 and "13800138000" not in rows[1]["body"] and "[PHONE_1]" in rows[1]["body"]
    assert "13800138000" not in (tmp_path / "audit" / "outbound.jsonl").read_text(encoding="utf-8")
    assert set(rows[0]) == {"time", "destination", "sha256", "bytes", "body", "pii_spans"}
    assert rows[0]["time"].endswith("+00:00")


def test_two_logs_on_one_file_and_threads_never_interleave(tmp_path):
    path = tmp_path / "a.jsonl"
    logs = [AuditLog(path), AuditLog(path)]

    def work(log, k):
        for i in range(50):
            log.record("dest", f"body {k} {i} " + "x" * 500)

    threads = [threading.Thread(target=work, args=(logs[k % 2], k)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 200
    assert all(json.loads(line)["destination"] == "dest" for line in lines)


def test_entries_of_missing_file_is_empty(tmp_path):
    assert list(AuditLog(tmp_path / "none.jsonl").entries()) == []
