"""The conversation store: sessions, replies, feedback and profiles in a real SQLite file."""

from __future__ import annotations

import pytest

from endcloud.errors import DataError
from endcloud.store.conversations import ConversationStore, ServedReply, normalise_rating


def _serve(store: ConversationStore, customer: str, query: str, answer: str, **kw) -> tuple[str, str]:
    sid = store.open_session(customer)
    store.add_message(sid, "user", query)
    mid = f"chatcmpl-{len(store.feedback())}-{query[:3]}-{answer[:3]}"
    store.record_reply(ServedReply(message_id=mid, session_id=sid, query=query, answered_by=kw.get("by", "end"), model="endcloud",
                                   end_text=answer, cloud_text=kw.get("cloud"), served_text=kw.get("cloud") or answer,
                                   scores={"match": 0.5}, decision={"route": kw.get("by", "end")}))
    return sid, mid


def test_wal_and_feedback_committed_with_full_sync(tmp_path):
    s = ConversationStore(tmp_path / "endcloud.db")
    assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    _, mid = _serve(s, "alice", "hi", "hello")
    seen: list[str] = []
    s._conn.set_trace_callback(seen.append)
    s.add_feedback(mid, "up")
    s._conn.set_trace_callback(None)
    full = next(i for i, q in enumerate(seen) if q == "PRAGMA synchronous=FULL")
    insert = next(i for i, q in enumerate(seen) if q.startswith("INSERT INTO feedback"))
    commit = next(i for i, q in enumerate(seen) if q == "COMMIT" and i > insert)
    assert full < insert < commit
    assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # back to NORMAL for per-turn rows


def test_session_reuse_and_history(tmp_path):
    s = ConversationStore(tmp_path / "db.sqlite", session_idle_s=60)
    sid, _ = _serve(s, "alice", "几天发货？", "两天内发货")
    assert s.open_session("alice") == sid  # still active
    assert s.open_session("alice", now=10**12) != sid  # idle too long: a new session
    assert s.history(sid) == [{"role": "user", "content": "几天发货？"}, {"role": "assistant", "content": "两天内发货"}]
    assert s.history(sid, limit=1) == [{"role": "assistant", "content": "两天内发货"}]
    with pytest.raises(DataError, match="another customer"):
        s.open_session("bob", sid)


@pytest.mark.parametrize("raw, value", [("up", 5), ("down", 1), ("UP", 5), (3, 3), ("4", 4), (5.0, 5)])
def test_rating_normalised(raw, value):
    assert normalise_rating(raw) == value


@pytest.mark.parametrize("raw", [0, 6, "meh", True, 2.5, None])
def test_bad_ratings_refused(raw):
    with pytest.raises(DataError, match="rating"):
        normalise_rating(raw)


def test_feedback_needs_a_served_reply(tmp_path):
    s = ConversationStore(tmp_path / "db.sqlite")
    with pytest.raises(KeyError):
        s.add_feedback("chatcmpl-nope", "up")
    _, mid = _serve(s, "alice", "hi", "hello")
    row = s.add_feedback(mid, "down", comment="wrong", correction="Hello! How can I help?")
    assert row["rating"] == 1
    assert s.feedback(mid)[0]["correction"] == "Hello! How can I help?"


def test_everything_survives_reopening(tmp_path):
    path = tmp_path / "db.sqlite"
    s = ConversationStore(path)
    sid, mid = _serve(s, "alice", "退货怎么办", "七天内可退", by="cloud", cloud="签收后7天内可以申请退货")
    s.add_feedback(mid, 5)
    s.set_profile("alice", preferences={"courier": "SF"}, orders=[{"order_id": "A1", "item": "towel", "status": "shipped"}])
    s.record_event("cloud_failed", message_id=mid, detail={"kind": "timeout"})
    s.close()
    s2 = ConversationStore(path)
    assert s2.counts() == {"sessions": 1, "messages": 2, "replies": 1, "takeovers": 1, "cloud_failed": 0, "feedback": 1}
    assert s2.reply(mid)["cloud_text"] == "签收后7天内可以申请退货"
    assert s2.session(sid)["messages"][1]["answered_by"] == "cloud"
    assert s2.profile("alice").orders[0]["order_id"] == "A1"
    assert s2.profile("alice").preferences == {"courier": "SF"}
    assert s2.events("cloud_failed")[0]["detail"] == {"kind": "timeout"}


def test_iter_replies_gives_context_and_feedback(tmp_path):
    s = ConversationStore(tmp_path / "db.sqlite")
    _serve(s, "alice", "first question", "first answer")
    _, mid = _serve(s, "alice", "second question", "second answer")
    s.add_feedback(mid, "up")
    rows = list(s.iter_replies())
    assert [r["query"] for r in rows] == ["first question", "second question"]
    assert rows[1]["context"] == [{"role": "user", "content": "first question"}, {"role": "assistant", "content": "first answer"}]
    assert rows[1]["feedback"][0]["rating"] == 5
    assert list(s.iter_replies(answered_by="cloud")) == []


def test_orders_need_an_id(tmp_path):
    s = ConversationStore(tmp_path / "db.sqlite")
    with pytest.raises(DataError, match="order_id"):
        s.set_profile("alice", orders=[{"item": "towel"}])
    csv = tmp_path / "orders.csv"
    csv.write_text("customer,order_id,item,status\nalice,O1,towel,shipped\nbob,O2,cup,paid\n", encoding="utf-8")
    assert s.import_orders_csv(csv) == 2
    assert s.profile("bob").orders[0]["item"] == "cup"
