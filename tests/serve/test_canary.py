"""Canary of adapters on a real `endcloud serve` (uvicorn on 127.0.0.1, the real tiny EndModel,
the real registry and SQLite): simulated customers chat while the server measures each arm.

Two LoRA adapters are trained on the tiny base: "good" always answers a greeting (no fact, so
the grounding check passes it), "bad" states a dispatch time and courier the shop's knowledge
does not support (so the grounding check fails it and the router hands the turn to the
cloud). A better candidate must ramp 5 -> 25 -> 50 -> 100 % and become the champion; a worse
one must be rolled back before its share passes 25 %; no request may fail during either; and
every session's turns must come from one variant.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from pathlib import Path

import httpx
import pytest

from endcloud.compose import build_app_from_workspace
from endcloud.config import Workspace
from endcloud.end.canary import read_experiment, start_canary, write_experiment
from endcloud.loopback import LoopbackServer
from endcloud.serve.auth import sign_customer_token
from tests.scoring.test_grounding import write_shop

pytestmark = pytest.mark.usefixtures("few_threads")

SECRET = "canary-test-secret-0123456789"
QUESTIONS = ["你好", "几天发货？", "有优惠券吗", "能选快递吗", "退货怎么办", "纯棉方巾多少钱？"]
GOOD = "亲，在的，请问有什么可以帮您？"
BAD = "默认发中通快递，下午4点前下单当天发货。"  # the shop ships at 17:00: "下午4点" is not supported
# small samples so the test is quick; the margins are wide because of them (defaults: bench/bench_canary.py).
# Latency is not what these tests judge (tests/scoring/test_sequential.py does): on a loaded test
# machine a 5 % arm's few requests often wait for the other arm's batch to drain, so its mean
# latency can be several times the champion's whatever the adapter (a CI run held a good
# candidate at 5 % for 400 customers on latency alone).
RULE = {"min_samples": 4, "stage_samples": 4, "margin_takeover": 0.1, "margin_ungrounded": 0.1,
        "margin_downvote": 0.3, "margin_latency": 50.0, "confidence": 0.95, "ramp_risk": 0.2, "promote_risk": 0.05}


@pytest.fixture(scope="module")
def trained(tiny_base_dir, tmp_path_factory) -> dict[str, Path]:
    """Two real peft LoRA adapters: one learned the greeting, the other the unsupported claim."""
    from endcloud.end.data import Example
    from endcloud.end.train import train

    root = tmp_path_factory.mktemp("canary-adapters")
    out = {}
    for name, reply in (("good", GOOD), ("bad", BAD)):
        examples = [Example(messages=[{"role": "user", "content": q}], response=reply) for q in QUESTIONS]
        res = train(tiny_base_dir, examples, root / name, method="lora", steps=120, lr=1e-2, batch_size=6,
                    progress=False, resume=False, save_every=120, seed=0)
        out[name] = Path(res.adapter_dir)
    return out


def workspace(root: Path, champion: Path, candidate: Path) -> Workspace:
    ws = Workspace.resolve(root)
    write_shop(ws.shop)
    reg = ws.adapter_registry()
    reg.publish("shop", champion)
    reg.activate("shop", "v1")
    reg.publish("shop", candidate, parent="v1")
    return ws


def serve(ws: Workspace, base: Path):
    # the composition `endcloud serve` runs; fast polls so the test need not wait
    return build_app_from_workspace(ws, base=base, cloud="reference", watch_s=0.2, canary_s=0.1, customer_secret=SECRET,
                                    min_match=0.0, max_new_tokens=16, max_batch=8, rate_limit_per_minute=100_000)


def chat(client: httpx.Client, customer: str | None, text: str, session: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {sign_customer_token(SECRET, customer, 600)}"} if customer else {}
    body = {"model": "endcloud", "messages": [{"role": "user", "content": text}], "max_tokens": 16, "temperature": 0.0}
    if session:
        body["session_id"] = session
    r = client.post("/v1/chat/completions", json=body, headers=headers)
    ext = r.json().get("endcloud", {}) if r.status_code == 200 else {}
    return {"status": r.status_code, "customer": customer, "session": ext.get("session_id"),
            "adapter": ext.get("adapter"), "by": ext.get("answered_by"), "text": r.text if r.status_code != 200 else ""}


def customers(url: str, ids: list[str], turns: int = 2, workers: int = 6) -> list[dict]:
    """Each customer writes `turns` messages in one session, many customers at once."""
    def one(i_c):
        i, c = i_c
        rows = []
        with httpx.Client(base_url=url, timeout=60) as client:
            sid = None
            for t in range(turns):
                row = chat(client, c, QUESTIONS[(i + t) % len(QUESTIONS)], sid)
                sid = row["session"] or sid
                rows.append(row)
        return rows

    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        return [r for rows in pool.map(one, enumerate(ids)) for r in rows]


def run_until_over(url: str, reg, *, max_customers: int, shares: list[float]) -> list[dict]:
    rows: list[dict] = []
    n = 0
    while n < max_customers:
        rows += customers(url, [f"cust{n + i:04d}" for i in range(12)])
        n += 12
        exp = read_experiment(reg, "shop")
        shares.append(exp.share)
        if not exp.running:
            break
    return rows


def wait_for(pred, timeout=60.0):  # generous: the box is shared, a LoRA merge may wait for a core
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_a_better_candidate_ramps_to_100_percent_and_becomes_champion(tiny_base_dir, trained, tmp_path):
    ws = workspace(tmp_path / "ws", champion=trained["bad"], candidate=trained["good"])
    reg = ws.adapter_registry()
    app = serve(ws, tiny_base_dir)
    with LoopbackServer(app) as srv:
        start_canary(reg, "shop", "v2", share=0.05, rule=RULE)
        assert wait_for(lambda: "shop/v2" in app.state.engine.variants)
        shares: list[float] = []
        rows = run_until_over(srv.url, reg, max_customers=400, shares=shares)
        exp = read_experiment(reg, "shop")
        after = customers(srv.url, ["late-1", "late-2"])
        status = httpx.get(srv.url + "/api/canary", timeout=30).json()
    bad = [r for r in rows + after if r["status"] != 200]
    assert not bad, bad[:3]
    assert exp.state == "promoted", (exp.state, exp.reason, shares)
    ramps = [d["share"] for d in exp.decisions if d["action"] == "ramp"]
    assert ramps == [0.25, 0.5], exp.decisions  # 5 -> 25 -> 50 -> (promoted) 100 %
    assert reg.active_version("shop") == "v2"
    m = reg.manifest("shop", "v2")
    assert m["status"] == "promoted" and m["metrics"]["canary"]["action"] == "promote"
    ev = m["metrics"]["canary"]["evidence"]["ungrounded"]
    assert ev["candidate"] < ev["champion"], ev  # the evidence says why
    assert {r["adapter"] for r in after} == {"shop/v2"}  # the new champion serves everyone
    assert status["experiment"]["state"] == "promoted" and status["arms"]["candidate"]["turns"] >= RULE["min_samples"]


def test_a_worse_candidate_is_rolled_back_before_a_quarter_of_the_traffic(tiny_base_dir, trained, tmp_path):
    ws = workspace(tmp_path / "ws", champion=trained["good"], candidate=trained["bad"])
    reg = ws.adapter_registry()
    app = serve(ws, tiny_base_dir)
    with LoopbackServer(app) as srv:
        start_canary(reg, "shop", "v2", share=0.05, rule=RULE)
        assert wait_for(lambda: "shop/v2" in app.state.engine.variants)
        shares: list[float] = []
        rows = run_until_over(srv.url, reg, max_customers=400, shares=shares)
        exp = read_experiment(reg, "shop")
        assert wait_for(lambda: app.state.engine.variants == [])  # the candidate is unloaded
        after = customers(srv.url, ["late-1", "late-2"])
    bad = [r for r in rows + after if r["status"] != 200]
    assert not bad, bad[:3]
    assert exp.state == "rolled_back", (exp.state, exp.reason, shares)
    assert max(shares) <= 0.25 and exp.share <= 0.25, shares
    # its replies fail the grounding check, and so go to the cloud: either guard may trip first
    assert "ungrounded" in exp.reason or "takeover" in exp.reason, exp.reason
    assert reg.active_version("shop") == "v1"
    m = reg.manifest("shop", "v2")
    assert m["status"] == "rolled_back" and m["metrics"]["canary"]["action"] == "rollback"
    ev = m["metrics"]["canary"]["evidence"]
    assert max(ev["ungrounded"]["p_worse"], ev["takeover"]["p_worse"]) >= RULE["confidence"]
    assert ev["ungrounded"]["candidate"] > ev["ungrounded"]["champion"], ev["ungrounded"]
    served = [r["adapter"] for r in rows]
    assert "shop/v2" in served and served.count("shop/v2") < served.count("shop/v1")
    assert {r["adapter"] for r in after} == {"shop/v1"}  # the champion never stopped serving

    # `endcloud adapters status` reads the same file and SQLite after the server is gone
    from typer.testing import CliRunner

    from endcloud.cli import app

    res = CliRunner().invoke(app, ["adapters", "status", "shop", "--json", "-w", str(ws.root)])
    assert res.exit_code == 0, res.output
    [st] = json.loads(res.output)
    assert st["experiment"]["state"] == "rolled_back" and st["arms"]["candidate"]["turns"] >= RULE["min_samples"]


def test_a_session_keeps_its_variant_through_a_ramp(tiny_base_dir, trained, tmp_path):
    ws = workspace(tmp_path / "ws", champion=trained["good"], candidate=trained["bad"])
    reg = ws.adapter_registry()
    never = dict(RULE, min_samples=10**6)  # measure, never decide
    app = serve(ws, tiny_base_dir)
    with LoopbackServer(app) as srv:
        # a fixed clock: the experiment's id, and so who lands on which arm, is the same every run
        exp = start_canary(reg, "shop", "v2", share=0.25, rule=never, clock=lambda: 1_800_000_000.0)
        assert wait_for(lambda: "shop/v2" in app.state.engine.variants)
        named = [f"stick{i:02d}" for i in range(16)]
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            first = {who: chat(c, who, QUESTIONS[0]) for who in named}
            anon = [chat(c, None, QUESTIONS[0]) for _ in range(8)]  # anonymous: keyed by the session
            exp.share = 0.75  # ramp mid-session: sessions already open keep their arm
            write_experiment(reg, exp)
            assert wait_for(lambda: app.state.canary.exp.share == 0.75)
            later = {who: [chat(c, who, q, first[who]["session"]) for q in QUESTIONS[1:4]] for who in named}
            anon_later = [[chat(c, None, q, a["session"]) for q in QUESTIONS[1:3]] for a in anon]
            fresh = {who: chat(c, who, QUESTIONS[4]) for who in named}  # a new session per customer
            # a streamed turn of the forced end model runs on the session's arm too
            streamed = {}
            on = {arm: [w for w in named if first[w]["adapter"] == arm] for arm in ("shop/v1", "shop/v2")}
            for who in on["shop/v2"][:3] + on["shop/v1"][:2]:
                body = {"model": "end", "stream": True, "session_id": first[who]["session"], "max_tokens": 8,
                        "messages": [{"role": "user", "content": QUESTIONS[5]}]}
                r = c.post("/v1/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {sign_customer_token(SECRET, who, 600)}"})
                assert r.status_code == 200, r.text
                last = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")][-1]
                streamed[who] = last["endcloud"]["adapter"]
    for who in named:
        turns = [first[who]] + later[who]
        assert all(t["status"] == 200 for t in turns)
        assert len({t["session"] for t in turns}) == 1
        assert len({t["adapter"] for t in turns}) == 1, (who, [t["adapter"] for t in turns])
    for a, more in zip(anon, anon_later):
        assert len({t["adapter"] for t in [a] + more}) == 1
    assert all(streamed[w] == first[w]["adapter"] for w in streamed) and "shop/v2" in streamed.values(), streamed
    arms = {first[w]["adapter"] for w in named} | {a["adapter"] for a in anon}
    assert arms == {"shop/v1", "shop/v2"}  # both arms were served
    # a ramp only adds customers to the candidate: whoever had it keeps it in a new session
    assert all(fresh[w]["adapter"] == "shop/v2" for w in named if first[w]["adapter"] == "shop/v2")
