"""The review page's API and review exports show customers' text redacted; an admin reveals one value."""

from __future__ import annotations

import json

import httpx
import pytest

from endcloud.loopback import LoopbackServer
from endcloud.store.review import ReviewStore

QUERY = "我叫张伟，电话13800138000，改地址到北京市朝阳区建国路88号"
CLOUD = "好的张伟，已改到北京市朝阳区建国路88号，有问题打13800138000"


@pytest.fixture
def store(tmp_path):
    s = ReviewStore(tmp_path / "endcloud.db")
    s.add_item(item_id="it1", message_id="m1", query=QUERY, end_reply="亲，在的", cloud_reply=CLOUD,
               context=[{"role": "user", "content": "收件人：张伟"}], score={"final": 0.2}, reason="downvote")
    s.verdict("it1", "edit", reviewer="lin", corrected_text="好的张伟，已为您修改", note="call 13800138000 if unsure")
    s.rate("m1", 2, rater="lin", comment="wrong for 张伟")
    yield s
    s.close()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_exports_are_redacted_unless_revealed(store, tmp_path, fmt):
    for kind in ("items", "verdicts", "ratings"):
        path = tmp_path / f"{kind}.{fmt}"
        assert store.export(path, kind) == 1
        text = path.read_text(encoding="utf-8")
        assert "张伟" not in text and "13800138000" not in text and "建国路88号" not in text, text
    items = json.loads((tmp_path / "items.jsonl").read_text(encoding="utf-8")) if fmt == "jsonl" else None
    if items:
        # one vault per item: the same value has the same placeholder in context, query and replies
        assert items["context"][0]["content"] == "收件人：[NAME_1]"
        assert items["query"].startswith("我叫[NAME_1]，电话[PHONE_1]") and "[PHONE_1]" in items["cloud_reply"]
    assert store.export(tmp_path / f"full.{fmt}", "items", reveal=True) == 1
    assert "13800138000" in (tmp_path / f"full.{fmt}").read_text(encoding="utf-8")


def test_review_api_shows_placeholders_and_reveals_one_value_to_an_admin(store, tmp_path):
    from fastapi import FastAPI

    from endcloud.serve.review import review_router

    app = FastAPI()
    app.include_router(review_router(db_path=tmp_path / "endcloud.db", admin_token="s3cret"))
    auth = {"Authorization": "Bearer s3cret"}
    with LoopbackServer(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        data = c.get("/api/review/items?status=all", headers=auth).json()
        item = data["items"][0]
        shown = json.dumps(item, ensure_ascii=False)
        assert "张伟" not in shown and "13800138000" not in shown
        assert item["query"].startswith("我叫[NAME_1]，电话[PHONE_1]")
        r = c.get("/api/review/items/it1/reveal", params={"placeholder": "[PHONE_1]"}, headers=auth)
        assert r.status_code == 200 and r.json()["value"] == "13800138000"
        assert c.get("/api/review/items/it1/reveal", params={"placeholder": "[PHONE_9]"}, headers=auth).status_code == 404
        assert c.get("/api/review/items/nope/reveal", params={"placeholder": "[PHONE_1]"}, headers=auth).status_code == 404
        # without the token nothing is shown, least of all a value
        assert c.get("/api/review/items/it1/reveal", params={"placeholder": "[PHONE_1]"}).status_code == 401
        # a verdict's answer shows the item redacted too
        v = c.post("/api/review/items/it1/verdict", json={"verdict": "approve", "reviewer": "amy"}, headers=auth).json()
        assert "13800138000" not in json.dumps(v, ensure_ascii=False)
    # the store itself keeps the real text: redaction is a view
    assert store.get("it1").query == QUERY
