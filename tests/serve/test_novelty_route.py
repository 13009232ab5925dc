"""The novelty check on a real server (uvicorn on 127.0.0.1): an end reply holding text that is
neither in the turn's evidence nor the end model's trained phrasing (the base's glue.json, plus
what the workspace's teacher labels teach) goes to the cloud with reason "novel: …"."""

from __future__ import annotations

import json

import httpx
import pytest

from endcloud.cloud.reference import REPLIES
from endcloud.compose import glue_labels
from endcloud.config import Workspace
from endcloud.end.reader import GLUE_NAME
from endcloud.kb import KnowledgeBase, ShopPack
from endcloud.loopback import LoopbackServer
from endcloud.scoring.novelty import Glue
from endcloud.serve.app import create_app
from endcloud.serve.grounding import MAX_RUN_CHARS, serving_glue, shown_run
from endcloud.serve.review import review_router
from endcloud.serve.router import MAX_REASON_RUNS, Router, Signals
from endcloud.serve.settings import ServeSettings
from endcloud.store.labels import LabelStore, PseudoLabel
from endcloud.testing import ScriptedModel, ScriptedTeacher
from tests.scoring.test_grounding import write_shop

CLOUD = "亲，纯棉方巾128元，库存82件哦"
GIFT = "赠送超级豪华限量版纪念礼盒"  # made up, longer than a reason shows
# what the scripted end model says to each question (its last user message)
END = {
    "纯棉方巾多少钱？": "亲，禾韩方巾128元哦",  # a garbled name
    "方巾什么价格？": "亲，纯棉方巾128元哦",
    "方巾有赠品吗？": f"亲，纯棉方巾128元，{GIFT}哦",
    "它多少钱？": "亲，禾韩方巾128元哦",
    "方巾还有货吗？": "亲，纯棉方巾有货，祝您生活愉快",  # the shop's teacher labels say "祝您生活愉快"
    "有汽车轮胎吗？": REPLIES["unknown"]["zh"],
}
# the base's glue: what its training replies said beside what they copied
BASE_GLUE = Glue(frozenset({"亲", "哦", "有货"}))
# teacher labels of the workspace, as (turns, label): "祝您生活愉快" in two of them is a habit
LABELS = [([{"role": "user", "content": "毛巾有货吗？"}], "亲，纯棉方巾有货，祝您生活愉快"),
          ([{"role": "user", "content": "袜子多少钱？"}], "亲，经典羊毛袜子40.9元，祝您生活愉快")]


def end_reply(convo):
    q = next(m["content"] for m in reversed(convo) if m["role"] == "user")
    return END.get(q, "亲，在的")


def make_app(root, *, labels=(), **settings):
    shop = write_shop(root / "shop")
    base = root / "base"
    base.mkdir(parents=True, exist_ok=True)
    BASE_GLUE.save(base / GLUE_NAME)
    db = root / "endcloud.db"
    # an injected engine: base_dir is read for its glue.json only
    s = ServeSettings(db_path=db, shop_dir=shop, base_dir=base, min_match=0.0, **settings)
    return create_app(s, engine=ScriptedModel(end_reply), teacher=ScriptedTeacher(CLOUD),
                      extra_routers=[review_router(db_path=db)], glue_labels=labels)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LoopbackServer(make_app(tmp_path_factory.mktemp("novelty"))) as srv:
        yield srv


def chat(srv, *texts):
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
    r = httpx.post(srv.url + "/v1/chat/completions", json={"model": "endcloud", "messages": messages}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_an_end_reply_with_a_garbled_name_goes_to_the_cloud(live):
    body = chat(live, "纯棉方巾多少钱？")
    ext = body["endcloud"]
    assert ext["answered_by"] == "cloud" and body["choices"][0]["message"]["content"] == CLOUD
    assert ext["decision"]["reasons"] == ["novel: 禾韩"]
    assert ext["decision"]["signals"]["novel"] == ["禾韩"] and ext["decision"]["signals"]["grounded"] is True
    right = chat(live, "方巾什么价格？")["endcloud"]
    assert right["answered_by"] == "end" and right["decision"]["signals"]["novel"] == []
    metrics = httpx.get(live.url + "/metrics", timeout=30).text
    assert "endcloud_novelty_failures_total 1.0" in metrics
    dash = httpx.get(live.url + "/api/dashboard", timeout=30).json()
    assert dash["summary"]["novelty_failures"] == 1
    assert dash["novelty_failures"][0]["runs"] == ["禾韩"] and dash["novelty_failures"][0]["by"] == "cloud"


def test_a_long_run_is_cut_before_it_reaches_reasons_and_records(live):
    ext = chat(live, "方巾有赠品吗？")["endcloud"]
    shown = shown_run(GIFT + "哦")
    assert ext["answered_by"] == "cloud" and ext["decision"]["reasons"] == [f"novel: {shown}"]
    assert len(shown) == MAX_RUN_CHARS and shown.endswith("…") and GIFT not in json.dumps(ext, ensure_ascii=False)


def test_an_earlier_assistant_reply_is_no_evidence(live):
    # the end model wrote the garbled name a turn earlier; repeating it does not make it the shop's
    ext = chat(live, "方巾有货吗？", "亲，禾韩方巾有货哦", "它多少钱？")["endcloud"]
    assert ext["answered_by"] == "cloud" and "novel: 禾韩" in ext["decision"]["reasons"]


def test_a_hand_off_reply_is_not_checked(live):
    ext = chat(live, "有汽车轮胎吗？")["endcloud"]
    assert ext["decision"]["reasons"] == ["end_handoff"] and ext["decision"]["signals"]["novel"] == []


def test_the_workspaces_teacher_labels_add_their_phrasing(live, tmp_path):
    assert "novel: 祝您生活愉快" in chat(live, "方巾还有货吗？")["endcloud"]["decision"]["reasons"]
    with LoopbackServer(make_app(tmp_path, labels=LABELS)) as srv:
        ext = chat(srv, "方巾还有货吗？")["endcloud"]
        assert ext["answered_by"] == "end" and ext["decision"]["signals"]["novel"] == []
        assert chat(srv, "纯棉方巾多少钱？")["endcloud"]["decision"]["reasons"] == ["novel: 禾韩"]  # the base's glue still rules


def test_the_check_can_be_turned_off(tmp_path):
    with LoopbackServer(make_app(tmp_path, novelty_check=False)) as srv:
        body = chat(srv, "纯棉方巾多少钱？")
    assert body["endcloud"]["answered_by"] == "end" and body["choices"][0]["message"]["content"] == "亲，禾韩方巾128元哦"
    assert body["endcloud"]["decision"]["signals"]["novel"] == []


def test_a_base_without_glue_is_not_checked(tmp_path):
    kb = KnowledgeBase(ShopPack.load(write_shop(tmp_path / "shop")))
    (tmp_path / "bare").mkdir()
    assert serving_glue(tmp_path / "bare", kb, LABELS) is None  # labels alone do not switch it on
    assert serving_glue(None, kb) is None
    (tmp_path / "bare" / GLUE_NAME).write_text("{not json", encoding="utf-8")
    assert serving_glue(tmp_path / "bare", kb) is None  # a broken file: off, and the shop still serves
    BASE_GLUE.save(tmp_path / "bare" / GLUE_NAME)
    assert serving_glue(tmp_path / "bare", kb).fragments == BASE_GLUE.fragments
    assert serving_glue(tmp_path / "bare", kb, LABELS).accepts("祝您生活愉快")


def test_the_router_names_the_first_novel_runs():
    d = Router(min_match=0.0).decide(Signals(novel=["禾韩", "clearslear", "日常训练", "glar"]))
    assert d.route == "cloud" and d.reasons == ["novel: 禾韩, clearslear, 日常训练 …"]
    assert MAX_REASON_RUNS == 3
    assert Router(min_match=0.0).decide(Signals(novel=[])).route == "end"
    assert Router().decide(Signals(novel=["禾韩"]), model="end").route == "end"  # forced stays forced


def test_the_workspaces_newest_teacher_labels_are_read(tmp_path):
    ws = Workspace.resolve(tmp_path / "ws").ensure()
    ws.labels.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"l{i}", "query": f"问题{i}", "context": [{"role": "user", "text": "前一句"}], "label": f"答{i}"}
            for i in range(5)]
    ws.labels.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    store = LabelStore(ws.db)
    for i, status in enumerate(["used", "used", "pending"]):
        store.add(PseudoLabel(source_id=f"m{i}", trigger="takeover", trust="auto", query=f"在线{i}", label=f"云{i}",
                              status=status, created_at=100.0 + i))
    store.conn.close()
    got = glue_labels(ws, limit=4)
    # the loop's trained labels first (a pending one is not trained on yet), then the file's last lines
    assert [label for _, label in got] == ["云0", "云1", "答3", "答4"]
    assert got[2][0] == [{"role": "user", "content": "前一句"}, {"role": "user", "content": "问题3"}]
    assert [label for _, label in glue_labels(ws, limit=1)] == ["云1"]
