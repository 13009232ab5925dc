"""Intent, sentiment and grounded recommendations in serving: the router's rules, and a real
server (uvicorn on 127.0.0.1) whose end model reads in-stock catalog rows for "推荐一款…"."""

from __future__ import annotations

import httpx
import pytest

from endcloud.loopback import LoopbackServer
from endcloud.serve.app import create_app
from endcloud.serve.review import review_router
from endcloud.serve.router import Router, Signals
from endcloud.serve.settings import ServeSettings
from endcloud.testing import ScriptedModel, ScriptedTeacher

CATALOG = ("sku,name,price,stock,category,material\n"
           "1001,纯棉浴巾,59,0,毛巾,纯棉\n1002,纯棉方巾,9,10,毛巾,纯棉\n1003,长绒棉毛巾,42,5,毛巾,长绒棉\n1004,羊毛围巾,199,3,配饰,羊毛\n")
CLOUD = "亲，为您推荐：纯棉方巾（9元，有货）。"
END = {"推荐一款纯棉的毛巾": "亲，为您推荐：纯棉方巾（9元，有货）。",
       "有没有纯棉的毛巾推荐一下": "亲，推荐纯棉浴巾（59元），很好用",  # sold out: must not reach the customer
       "太差了，我要投诉": "亲，非常抱歉"}


def test_router_rules_are_off_by_default_and_name_their_reason():
    s = Signals(match=0.9, confidence=0.9, intent="complaint", sentiment="negative", sentiment_score=-0.9)
    assert Router().decide(s).route == "end"
    d = Router(cloud_intents=("complaint",)).decide(s)
    assert d.route == "cloud" and d.reasons == ["intent complaint"]
    d = Router(min_sentiment=-0.5).decide(s)
    assert d.route == "cloud" and d.reasons == ["sentiment -0.90 < -0.5"]
    assert Router(min_sentiment=-0.5).decide(Signals(match=0.9, sentiment_score=0.2)).route == "end"


def test_from_settings_reads_the_rules_where_settings_carry_them():
    class S:
        min_match, min_confidence, max_frustration = 0.1, 0.0, 0.5
        cloud_intents, min_sentiment = ["complaint"], -0.4

    r = Router.from_settings(S())
    assert r.cloud_intents == ("complaint",) and r.min_sentiment == -0.4
    assert Router.from_settings(ServeSettings()).cloud_intents == ()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    shop = root / "shop"
    shop.mkdir()
    (shop / "shop.yaml").write_text("name: 棉语\nlanguage: zh\n", encoding="utf-8")
    (shop / "catalog.csv").write_text(CATALOG, encoding="utf-8")
    model = ScriptedModel(lambda convo: END.get(next(m["content"] for m in reversed(convo) if m["role"] == "user"), "亲，在的"))
    db = root / "endcloud.db"
    app = create_app(ServeSettings(db_path=db, shop_dir=shop, min_match=0.0), engine=model, teacher=ScriptedTeacher(CLOUD),
                     extra_routers=[review_router(db_path=db)])
    with LoopbackServer(app) as srv:
        yield srv, model


def _chat(srv, text):
    r = httpx.post(srv.url + "/v1/chat/completions", json={"model": "endcloud", "messages": [{"role": "user", "content": text}]},
                   timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_recommendation_reads_in_stock_rows_and_is_answered_by_the_end_model(live):
    srv, model = live
    body = _chat(srv, "推荐一款纯棉的毛巾")
    ext = body["endcloud"]
    assert ext["answered_by"] == "end" and body["choices"][0]["message"]["content"] == END["推荐一款纯棉的毛巾"]
    assert {k["ref"] for k in ext["knowledge"]} == {"1002"}  # the cotton towel in stock; never the sold-out 1001
    seen = next(c for b in model.batches for c in b if any(m["content"] == "推荐一款纯棉的毛巾" for m in c))
    knowledge = next(m["content"] for m in seen if m["role"] == "system" and "Shop knowledge:" in m["content"])
    assert "纯棉方巾" in knowledge and "纯棉浴巾" not in knowledge
    sig = ext["decision"]["signals"]
    assert sig["intent"] == "recommend" and sig["sentiment"] == "neutral"


def test_a_reply_recommending_a_sold_out_product_goes_to_the_cloud(live):
    srv, _ = live
    ext = _chat(srv, "有没有纯棉的毛巾推荐一下")["endcloud"]
    assert ext["answered_by"] == "cloud"
    assert any(r.startswith("ungrounded:") and "out of stock: 纯棉浴巾" in r for r in ext["decision"]["reasons"])


def test_intent_and_sentiment_reach_metrics_and_dashboard(live):
    srv, _ = live
    sig = _chat(srv, "太差了，我要投诉")["endcloud"]["decision"]["signals"]
    assert sig["intent"] == "complaint" and sig["sentiment"] == "negative" and sig["sentiment_score"] < 0
    metrics = httpx.get(srv.url + "/metrics", timeout=30).text
    assert 'endcloud_intents_total{intent="complaint"} 1.0' in metrics
    assert 'endcloud_sentiment_total{sentiment="negative"} 1.0' in metrics
    summary = httpx.get(srv.url + "/api/dashboard", timeout=30).json()["summary"]
    assert summary["intents"]["recommend"] == 2 and summary["intents"]["complaint"] == 1
    assert summary["sentiments"]["negative"] == 1
    page = httpx.get(srv.url + "/dashboard", timeout=30).text
    assert 'id="dialogue"' in page
