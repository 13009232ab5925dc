"""Fixtures for the online loop: real SQLite stores, a real adapter registry, a teacher double."""

from __future__ import annotations

import pytest

from endcloud.records import Reply, Usage


class DictTeacher:
    """A test double for the cloud: answers from a dict (exact query match), else a default."""

    name = "dict-teacher"

    def __init__(self, answers: dict[str, str], default: str = "亲，在的，请问有什么可以帮您？"):
        self.answers, self.default, self.calls = answers, default, 0

    def reply(self, messages):
        self.calls += 1
        q = messages[-1]["content"]
        return Reply(text=self.answers.get(q, self.default), source="cloud", model="dict", usage=Usage(5, 5))


@pytest.fixture
def stores(tmp_path):
    from endcloud.store.conversations import ConversationStore
    from endcloud.store.labels import LabelStore

    db = tmp_path / "endcloud.db"
    conv = ConversationStore(db)
    labels = LabelStore(db)
    yield conv, labels
    conv.close()


def serve_turn(conv, *, customer: str, query: str, end_text: str, answered_by: str = "end", cloud_text=None,
               scores=None, rating=None, correction=None) -> str:
    """Record one served turn (as the server would) and optional feedback; return its message id."""
    from endcloud.store.conversations import ServedReply, new_id

    sid = conv.open_session(customer)
    conv.add_message(sid, "user", query)
    mid = new_id("msg")
    served = cloud_text if answered_by == "cloud" else end_text
    conv.record_reply(ServedReply(message_id=mid, session_id=sid, query=query, answered_by=answered_by, model="endcloud",
                                  end_text=end_text, cloud_text=cloud_text, served_text=served, scores=scores or {}))
    if rating is not None or correction is not None:
        conv.add_feedback(mid, rating if rating is not None else 3, correction=correction, customer=customer)
    return mid

