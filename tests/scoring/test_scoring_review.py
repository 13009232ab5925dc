"""The human review store: items, verdicts, ratings; CSV/JSONL round trips; labels."""

from __future__ import annotations

import itertools
import sqlite3

import pytest

from endcloud.errors import DataError
from endcloud.records import Label, Score
from endcloud.store.review import ReviewStore


@pytest.fixture
def store(tmp_path):
    tick = itertools.count(1000)
    s = ReviewStore(tmp_path / "endcloud.db", clock=lambda: float(next(tick)))
    yield s
    s.close()


def _fill(store: ReviewStore) -> tuple[str, str, str]:
    score = Score(sim=0.2, match=0.9, cloud_match=0.95, final=0.34, similarity_model="char-ngram", matching_model="trained")
    a = store.add_item(message_id="m1", query="能换快递吗", end_reply="你好", cloud_reply="亲，默认中通快递哦", score=score,
                       reason="final < 0.5", context=[{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "在的"}])
    b = store.add_item(message_id="m2", query="Can I return it?", end_reply="Returns within 7 days.", score={"final": 0.7})
    c = store.add_item(message_id="m3", query="hi, 多少钱", end_reply="lol", cloud_reply="35元")
    store.verdict(a, "reject", reviewer="lin")
    store.verdict(a, "edit", reviewer="lin", corrected_text="亲，默认发中通快递，暂不支持指定哦", note="second look")
    store.verdict(b, "approve", reviewer="amy")
    store.verdict(c, "reject", reviewer="amy")
    store.rate("m1", 2, rater="lin")
    store.rate("m2", 5, rater="amy", model="lora", comment="good")
    return a, b, c


def test_items_verdicts_ratings_keep_who_and_when(store):
    a, b, c = _fill(store)
    item = store.get(a)
    assert item.status == "edit" and item.final == pytest.approx(0.34) and item.sim == pytest.approx(0.2)
    assert item.context[0] == {"role": "user", "content": "在吗"} and item.reason == "final < 0.5"
    assert [(v.verdict, v.reviewer) for v in store.verdicts(a)] == [("reject", "lin"), ("edit", "lin")]
    assert all(v.created_at >= 1000 for v in store.verdicts())
    assert [(r.target_id, r.rating, r.rater) for r in store.ratings()] == [("m1", 2, "lin"), ("m2", 5, "amy")]
    assert store.pending() == []
    d = store.add_item(query="q", end_reply="r")
    assert [i.id for i in store.pending()] == [d]


def test_corrections_become_labels(store):
    a, b, c = _fill(store)
    labels = store.corrections_as_labels()
    assert len(labels) == 1 and isinstance(labels[0], Label)
    lab = labels[0]
    assert lab.label == "亲，默认发中通快递，暂不支持指定哦" and lab.query == "能换快递吗" and lab.teacher == "human:lin"
    assert [(t.role, t.text) for t in lab.context] == [("user", "在吗"), ("assistant", "在的")]
    assert Label.from_json(lab.to_json()) == lab
    both = store.corrections_as_labels(include_approved=True)
    assert [x.label for x in both] == [lab.label, "Returns within 7 days."]  # the rejected item gives nothing


def test_bad_input_is_refused_with_a_clear_error(store):
    a = store.add_item(query="q", end_reply="r")
    with pytest.raises(DataError, match="verdict must be one of approve, edit, reject"):
        store.verdict(a, "maybe", reviewer="x")
    with pytest.raises(DataError, match="needs the corrected text"):
        store.verdict(a, "edit", reviewer="x")
    with pytest.raises(DataError, match="reviewer"):
        store.verdict(a, "approve", reviewer=" ")
    with pytest.raises(DataError, match="no review item 'nope'"):
        store.verdict("nope", "approve", reviewer="x")
    with pytest.raises(DataError, match="integer 1–5"):
        store.rate("m", 6, rater="x")
    with pytest.raises(DataError, match="integer 1–5"):
        store.rate("m", 2.5, rater="x")
    with pytest.raises(sqlite3.IntegrityError):  # the table's own check backs the API's
        store.conn.execute("INSERT INTO review_ratings (target_id, rating, rater, created_at) VALUES ('m', 0, 'x', 1)")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_import_round_trip(store, tmp_path, fmt):
    _fill(store)
    other = ReviewStore(tmp_path / f"other-{fmt}.db")
    try:
        for kind in ("items", "verdicts", "ratings"):
            path = tmp_path / f"{kind}.{fmt}"
            n = store.export(path, kind)
            assert other.import_(path, kind) == n > 0
            assert other.import_(path, kind) == 0  # idempotent
        assert other.items() == store.items()
        strip = lambda vs: [(v.item_id, v.verdict, v.reviewer, v.corrected_text, v.note, v.created_at) for v in vs]  # noqa: E731
        assert strip(other.verdicts()) == strip(store.verdicts())
        assert [(r.target_id, r.rating, r.rater, r.model, r.comment, r.created_at) for r in other.ratings()] == \
               [(r.target_id, r.rating, r.rater, r.model, r.comment, r.created_at) for r in store.ratings()]
        assert [x.to_json() for x in other.corrections_as_labels()] == [x.to_json() for x in store.corrections_as_labels()]
    finally:
        other.close()


def test_import_errors_name_file_and_line(store, tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("item_id,verdict,reviewer\nunknown-item,approve,lin\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"v\.csv:2: .*no review item 'unknown-item'"):
        store.import_(path, "verdicts")
    with pytest.raises(DataError, match=r"\.csv or \.jsonl"):
        store.export(tmp_path / "x.xlsx", "items")
    with pytest.raises(DataError, match="kind must be one of"):
        store.export(tmp_path / "x.csv", "labels")
