"""At rest: `endcloud privacy forget` and `endcloud privacy retain` on a real SQLite workspace."""

from __future__ import annotations

import json
import time

import pytest

from endcloud.cli import main
from endcloud.privacy import AuditLog, Vault, detect, redact
from endcloud.privacy.redact import scrubber
from endcloud.store.conversations import ConversationStore, ServedReply
from endcloud.store.db import connect
from endcloud.store.forget import customer_texts, forget_customer, retain
from endcloud.store.labels import LabelStore, PseudoLabel
from endcloud.store.review import ReviewStore

U1_SECRETS = ("张伟", "13800138000", "建国路88号", "zhang_wei88")


def _turn(store: ConversationStore, customer: str, text: str, reply: str, *, sid: str | None = None) -> tuple[str, str]:
    sid = store.open_session(customer, sid)
    store.add_message(sid, "user", text)
    mid = f"msg-{customer}-{len(store.history(sid))}"
    store.record_reply(ServedReply(message_id=mid, session_id=sid, query=text, answered_by="cloud", model="m",
                                   end_text="亲，稍等", cloud_text=reply, served_text=reply))
    return sid, mid


@pytest.fixture
def ws(tmp_path):
    db = tmp_path / "endcloud.db"
    store = ConversationStore(db)
    sid1, m1 = _turn(store, "u1", "我叫张伟，电话13800138000，地址北京市朝阳区建国路88号，微信 zhang_wei88", "好的张伟，已备注",
                     sid="s-u1")
    _, m1b = _turn(store, "u1", "改一下收货人", "好的", sid="s-u1")
    _, m2 = _turn(store, "u2", "收件人：李娜，手机13912345678", "好的李娜", sid="s-u2")
    store.add_feedback(m1, "down", comment="张伟不满意", customer="u1")
    store.add_feedback(m2, "up", customer="u2")
    store.set_profile("u1", preferences={"receiver": "张伟"}, orders=[{"order_id": "ORD5433001", "item": "毛巾"}])
    store.set_profile("u2", preferences={"receiver": "李娜"}, orders=[{"order_id": "ORD7788001", "item": "茶"}])
    store.close()
    labels = LabelStore(db)
    labels.add(PseudoLabel(source_id=m1, trigger="downvote", trust="auto", query="我叫张伟，电话13800138000", label="好的张伟",
                           customer="u1"))
    labels.add(PseudoLabel(source_id=m1b, trigger="upvote", trust="auto", query="改一下收货人", label="好的", customer="u1",
                           status="used"))
    labels.add(PseudoLabel(source_id=m2, trigger="upvote", trust="auto", query="收件人：李娜", label="好的李娜", customer="u2"))
    labels.set_state(f"shadow:{m1}", {"final": 0.2, "cloud_text": "好的张伟"})
    reviews = ReviewStore(labels.conn)
    item = reviews.add_item(message_id=m1, query="我叫张伟，电话13800138000", end_reply="亲，稍等", cloud_reply="好的张伟")
    reviews.verdict(item, "edit", reviewer="lin", corrected_text="好的张伟，已为您备注")
    reviews.rate(m1, 2, rater="lin")
    reviews.add_item(message_id=m2, query="收件人：李娜", end_reply="好的", cloud_reply="好的李娜")
    vaults = tmp_path / "vaults"
    vaults.mkdir()
    v = Vault()
    redact("我叫张伟，电话13800138000", v)
    redact("收件人：李娜", v)
    (vaults / "s-u1.json").write_text(json.dumps(v.to_json(), ensure_ascii=False), encoding="utf-8")
    return tmp_path


def _dump(db) -> str:
    conn = connect(db)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def _rows(db, sql, args=()):
    conn = connect(db)
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def test_forget_deletes_everything_about_one_customer_and_nothing_else(ws, capsys):
    db = ws / "endcloud.db"
    assert main(["privacy", "forget", "--customer", "u1", "-w", str(ws), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["counts"]["messages"] == 4 and rep["counts"]["sessions"] == 1 and rep["counts"]["customers"] == 1
    assert rep["counts"]["pseudo_labels"] == 2 and rep["counts"]["review_items"] == 1 and rep["counts"]["evolve_state"] == 1
    assert rep["used_labels"] == 1 and rep["notes"]  # one lesson was already trained on: said, not hidden
    assert rep["vault_entries_removed"] == 2 and rep["vault_files"] == 1
    dump = _dump(db)
    for secret in (*U1_SECRETS, "ORD5433001", "u1"):
        assert secret not in dump, secret
    # the other customer is untouched
    assert _rows(db, "SELECT COUNT(*) FROM messages m JOIN sessions s ON s.id = m.session_id WHERE s.customer = 'u2'") == [(2,)]
    assert "李娜" in dump and "ORD7788001" in dump
    assert _rows(db, "SELECT COUNT(*) FROM pseudo_labels WHERE customer = 'u2'") == [(1,)]
    assert _rows(db, "SELECT COUNT(*) FROM review_items") == [(1,)]
    vault = Vault.from_json(json.loads((ws / "vaults" / "s-u1.json").read_text(encoding="utf-8")))
    assert [v for _, _, v in vault.items()] == ["李娜"]
    assert vault.placeholder("PHONE", "13999999999") == "[PHONE_2]"  # a forgotten placeholder is never reissued
    assert ConversationStore(db).profile("u1").is_empty()


def test_forget_in_redact_mode_keeps_turns_scrubbed_under_a_pseudonym(ws):
    db = ws / "endcloud.db"
    # what the CLI does: the customer's known values are scrubbed wherever they recur ("张伟不满意")
    known = {sp.value: sp.type for t in customer_texts(db, "u1") for sp in detect(t)}
    assert known.get("张伟") == "NAME"
    rep = forget_customer(db, "u1", mode="redact", scrub=scrubber(known))
    assert rep.pseudonym and rep.pseudonym.startswith("forgotten-")
    dump = _dump(db)
    for secret in U1_SECRETS:
        assert secret not in dump, secret
    assert "'u1'" not in dump and "ORD5433001" not in dump  # profile deleted, id replaced
    sessions = _rows(db, "SELECT customer FROM sessions ORDER BY id")
    assert sessions == [(rep.pseudonym,), ("u2",)]
    texts = [r[0] for r in _rows(db, "SELECT content FROM messages m JOIN sessions s ON s.id = m.session_id WHERE s.customer = ?",
                                 (rep.pseudonym,))]
    assert len(texts) == 4 and any("[PHONE_1]" in t and "[NAME_1]" in t for t in texts)
    ctx = _rows(db, "SELECT query FROM review_items WHERE message_id LIKE 'msg-u1-%'")
    assert ctx and "[NAME_1]" in ctx[0][0]


def test_forget_in_redact_mode_from_the_command_line(ws, capsys):
    assert main(["privacy", "forget", "--customer", "u1", "-w", str(ws), "--mode", "redact"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("scrubbed: ") and "messages 4" in out
    dump = _dump(ws / "endcloud.db")
    assert not [s for s in U1_SECRETS if s in dump]


def test_forget_refuses_bad_input(ws, capsys):
    assert main(["privacy", "forget", "--customer", "u1", "-w", str(ws), "--mode", "shred"]) == 2
    assert "--mode" in capsys.readouterr().err
    assert main(["privacy", "forget", "--customer", "u1", "-w", str(ws / "nowhere")]) == 2
    with pytest.raises(Exception, match="scrub"):
        forget_customer(ws / "endcloud.db", "u1", mode="redact")


def _age(db, days: float, customer: str) -> None:
    old = time.time() - days * 86400
    conn = connect(db)
    try:
        conn.execute("UPDATE messages SET created_at = ? WHERE session_id IN (SELECT id FROM sessions WHERE customer = ?)",
                     (old, customer))
        conn.execute("UPDATE replies SET created_at = ? WHERE session_id IN (SELECT id FROM sessions WHERE customer = ?)",
                     (old, customer))
        conn.execute("UPDATE sessions SET updated_at = ?, created_at = ? WHERE customer = ?", (old, old, customer))
    finally:
        conn.close()


def test_retain_deletes_conversations_older_than_the_period(ws, capsys, monkeypatch):
    db = ws / "endcloud.db"
    _age(db, 200, "u1")
    audit = AuditLog(ws / "audit" / "outbound.jsonl")
    audit.record("cloud", "recent body")
    with open(audit.path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"time": "2020-01-01T00:00:00.000+00:00", "destination": "cloud", "body": "old"}) + "\n")
    monkeypatch.setenv("ENDCLOUD_RETENTION_DAYS", "180")
    assert main(["privacy", "retain", "-w", str(ws), "--audit", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["counts"]["messages"] == 4 and rep["counts"]["sessions"] == 1 and rep["audit_records_removed"] == 1
    assert _rows(db, "SELECT DISTINCT s.customer FROM messages m JOIN sessions s ON s.id = m.session_id") == [("u2",)]
    assert _rows(db, "SELECT COUNT(*) FROM pseudo_labels WHERE customer = 'u1'") == [(0,)]
    assert [e["body"] for e in audit.entries()] == ["recent body"]
    # profiles are the shop's records, not conversations: kept
    assert not ConversationStore(db).profile("u1").is_empty()
    # nothing older than the period is left: a second pass finds nothing
    assert retain(db, days=180).total == 0


def test_retain_in_redact_mode_and_its_errors(ws, capsys, monkeypatch):
    db = ws / "endcloud.db"
    _age(db, 40, "u1")
    rep = retain(db, days=30, mode="redact", scrub=lambda t: redact(t).text)
    assert rep.counts["messages"] == 4
    dump = _dump(db)
    assert "13800138000" not in dump and "13912345678" in dump  # only the old turns were scrubbed
    monkeypatch.delenv("ENDCLOUD_RETENTION_DAYS", raising=False)
    assert main(["privacy", "retain", "-w", str(ws)]) == 2
    assert "ENDCLOUD_RETENTION_DAYS" in capsys.readouterr().err
    assert main(["privacy", "retain", "-w", str(ws), "--days", "-1"]) == 2
