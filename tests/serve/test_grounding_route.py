"""Grounding on a real server (uvicorn on 127.0.0.1): an end reply stating a fact the turn does
not support goes to the cloud, and a learned order template ("[ORDER_1]") reaches the customer
as their own order number."""

from __future__ import annotations

import json

import httpx
import pytest

from endcloud.loopback import LoopbackServer
from endcloud.serve.app import create_app
from endcloud.serve.auth import sign_customer_token
from endcloud.serve.grounding import StreamFiller
from endcloud.serve.review import review_router
from endcloud.serve.settings import ServeSettings
from endcloud.testing import ScriptedModel, ScriptedTeacher
from tests.scoring.test_grounding import write_shop

SECRET = "grounding-test-secret-0123456789"
CAROLS_ORDER = "206356239797693974"
CLOUD = "亲，纯棉方巾128元，库存82件哦"
# what the scripted end model says to each question (its last user message)
END = {
    "纯棉方巾多少钱？": "亲，纯棉方巾99元哦",  # the catalog says 128
    "方巾什么价格？": "亲，纯棉方巾128元哦",
    "我的订单到哪了？": "亲，您的订单[ORDER_1]已发货，中通快递",
    "订单918273645546372819到哪了？": "亲，订单[ORDER_1]已发货",
    "能打电话给我吗？": "好的，稍后致电[PHONE_1]",
}


def end_reply(convo):
    q = next(m["content"] for m in reversed(convo) if m["role"] == "user")
    return END.get(q, "亲，在的")


def make_app(root, **settings):
    shop = write_shop(root / "shop")
    (shop / "orders.csv").write_text(f"order_id,customer,sku,status,courier\n{CAROLS_ORDER},carol,520401029636,已发货,中通\n",
                                     encoding="utf-8")
    db = root / "endcloud.db"
    s = ServeSettings(db_path=db, shop_dir=shop, min_match=0.0, customer_secret=SECRET, **settings)
    return create_app(s, engine=ScriptedModel(end_reply), teacher=ScriptedTeacher(CLOUD),
                      extra_routers=[review_router(db_path=db)])


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LoopbackServer(make_app(tmp_path_factory.mktemp("grounding"))) as srv:
        yield srv


def chat(srv, text, *, model="endcloud", customer=None, stream=False):
    headers = {"Authorization": f"Bearer {sign_customer_token(SECRET, customer, 600)}"} if customer else {}
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    r = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    if not stream:
        return r.json()
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    return {"text": text, "endcloud": chunks[-1]["endcloud"]}


def test_an_end_reply_with_a_wrong_price_goes_to_the_cloud(live):
    body = chat(live, "纯棉方巾多少钱？")
    ext = body["endcloud"]
    assert ext["answered_by"] == "cloud" and body["choices"][0]["message"]["content"] == CLOUD
    assert "ungrounded: 99元" in ext["decision"]["reasons"]
    assert ext["decision"]["signals"]["grounded"] is False and ext["decision"]["signals"]["unsupported"] == ["99元"]
    right = chat(live, "方巾什么价格？")["endcloud"]
    assert right["answered_by"] == "end" and right["decision"]["signals"]["grounded"] is True
    metrics = httpx.get(live.url + "/metrics", timeout=30).text
    assert 'endcloud_grounding_failures_total{kind="price"} 1.0' in metrics
    dash = httpx.get(live.url + "/api/dashboard", timeout=30).json()
    assert dash["summary"]["grounding_failures"] >= 1
    assert any(g["facts"] == ["99元"] and g["by"] == "cloud" for g in dash["grounding_failures"])


def test_an_order_template_is_answered_with_the_customers_own_number(live):
    # the number comes from carol's orders (the Customer system message), as the online loop numbered it
    body = chat(live, "我的订单到哪了？", customer="carol")
    text = body["choices"][0]["message"]["content"]
    assert text == f"亲，您的订单{CAROLS_ORDER}已发货，中通快递"
    assert body["endcloud"]["answered_by"] == "end" and body["endcloud"]["decision"]["signals"]["grounded"] is True
    streamed = chat(live, "我的订单到哪了？", model="end", customer="carol", stream=True)
    assert streamed["text"] == text  # filled before the customer's first byte of it
    # an anonymous customer who wrote the number gets that number back
    anon = chat(live, "订单918273645546372819到哪了？")
    assert anon["choices"][0]["message"]["content"] == "亲，订单918273645546372819已发货"


def test_a_placeholder_the_conversation_cannot_fill_goes_to_the_cloud(live):
    ext = chat(live, "能打电话给我吗？")["endcloud"]
    assert ext["answered_by"] == "cloud" and "ungrounded: [PHONE_1]" in ext["decision"]["reasons"]


def test_the_check_can_be_turned_off(tmp_path):
    with LoopbackServer(make_app(tmp_path, grounding_check=False)) as srv:
        body = chat(srv, "纯棉方巾多少钱？")
    assert body["endcloud"]["answered_by"] == "end" and body["choices"][0]["message"]["content"] == "亲，纯棉方巾99元哦"
    assert body["endcloud"]["decision"]["signals"]["grounded"] is None


def test_a_stream_filler_holds_back_only_an_open_placeholder():
    f = StreamFiller(lambda s: s.replace("[ORDER_1]", "A-1"))
    pieces = [f.feed(p) for p in ("您的订单[OR", "DER_1]已", "发货 [see", " below]", " [")] + [f.flush()]
    assert pieces == ["您的订单", "A-1已", "发货 ", "[see below]", " ", "["]
