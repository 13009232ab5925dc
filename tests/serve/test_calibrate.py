"""The cost dial: `endcloud route calibrate` on a workspace's logged turns.

Traffic is served by a real app on 127.0.0.1 (a scripted end model whose drafts share a
varying number of words with the question, so the lexical matcher scores them over the
whole range; a scripted cloud), logged in the workspace's real SQLite; the command picks the
thresholds, plots the curve and writes `[serve]` of `endcloud.toml`; the same traffic sent
again to a server built with the thresholds read from that file goes to the cloud in the
share asked, within 3 points."""

from __future__ import annotations

import random
import tomllib

import httpx
import pytest

from endcloud.cli import main
from endcloud.cli.config import settings_in_force
from endcloud.configfile import FILE_NAME, values
from endcloud.loopback import LoopbackServer
from endcloud.serve.app import create_app
from endcloud.serve.calibrate import LoggedTurn, calibrate, logged_turns, replay, share_for_budget, write_thresholds
from endcloud.serve.router import Router, Signals
from endcloud.serve.settings import ServeSettings
from endcloud.store.conversations import ConversationStore
from endcloud.testing import ScriptedModel, ScriptedTeacher

N = 150  # turns logged, then replayed
WORDS = ("towel cotton size price ship today blue large refund order color wash dry soft gift box week store "
         "return stock").split()


def traffic(n: int, seed: int = 0) -> list[str]:
    """Questions of 6 shop words; one in ten angry (the frustration rule, which the dial does not move)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = " ".join(rng.sample(WORDS, 6)) + f" q{i}"
        out.append(q + (" this is ridiculous, I want a real person!!" if i % 10 == 0 else ""))
    return out


def draft(convo) -> str:
    """The end model's draft: k of the question's words (k fixed by the question) and filler."""
    q = convo[-1]["content"].split()
    k = random.Random(" ".join(q)).randint(0, 6)
    return " ".join(q[:k] + ["lorem", "ipsum", "dolor"][: 6 - k][:3])


def serve(ws, questions, **thresholds) -> list[dict]:
    settings = ServeSettings(db_path=ws / "endcloud.db", rate_limit_per_minute=100_000, grounding_check=False,
                             batch_window_ms=0.0, batch_max_wait_ms=0.0,
                             **thresholds)
    app = create_app(settings, engine=ScriptedModel(draft), teacher=ScriptedTeacher(lambda m: m[-1]["content"]))
    out = []
    with LoopbackServer(app) as srv, httpx.Client(base_url=srv.url, timeout=120) as http:
        for q in questions:
            r = http.post("/v1/chat/completions", json={"model": "endcloud", "messages": [{"role": "user", "content": q}]})
            assert r.status_code == 200, r.text
            out.append(r.json()["endcloud"])
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("calibrate-ws")
    (ws / FILE_NAME).write_text("# the shop's own settings\n[serve]\nport = 8080\n\n[evolve]\nmin_labels = 16\n")
    serve(ws, traffic(N))
    return ws


def test_calibrate_command_hits_the_share_on_replayed_traffic(workspace, capsys):
    assert main(["route", "calibrate", "-w", str(workspace), "--cloud-share", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "<- chosen" in out and "cloud share" in out
    assert (workspace / "reports" / "route-calibration.png").stat().st_size > 1000
    text = (workspace / FILE_NAME).read_text()
    conf = tomllib.loads(text)
    assert conf["serve"]["port"] == 8080 and conf["evolve"]["min_labels"] == 16  # the shop's lines kept
    assert "# the shop's own settings" in text
    # what `endcloud serve -w` reads: the workspace's file, under the environment and the flags
    path, _, resolved = settings_in_force(workspace=workspace, env={})
    source = {r.key.name: r.source for r in resolved if r.section == "serve"}
    assert path == workspace / FILE_NAME and source["min_match"] == source["min_confidence"] == "file"
    thresholds = {k: v for k, v in values(resolved, "serve").items() if k in ("min_match", "min_confidence")}
    assert thresholds == {k: conf["serve"][k] for k in ("min_match", "min_confidence")}
    # replayed: the same traffic, a fresh database, a server with the thresholds from the file
    replayed = workspace / "replay"
    replayed.mkdir()
    ext = serve(replayed, traffic(N), **thresholds)
    share = sum(e["answered_by"] == "cloud" for e in ext) / len(ext)
    assert abs(share - 0.3) <= 0.03, (share, thresholds)
    # and the log's own replay agrees with the server
    store = ConversationStore(workspace / "endcloud.db")
    turns = logged_turns(store.routing_log())
    store.close()
    assert len(turns) == N
    assert replay(turns, Router(**thresholds)) == pytest.approx(share, abs=1e-9)


def test_the_dial_trades_quality_for_offload(workspace):
    store = ConversationStore(workspace / "endcloud.db")
    turns = logged_turns(store.routing_log())
    store.close()
    low, high = calibrate(turns, cloud_share=0.15), calibrate(turns, cloud_share=0.6)
    assert 0.1 <= low.floor <= 0.15  # the angry tenth goes to the cloud at any threshold
    assert low.chosen.share <= 0.15 < high.chosen.share <= 0.6
    assert high.chosen.quality > low.chosen.quality  # the cloud's replies score higher
    shares = [p.share for p in high.curve]
    assert shares == sorted(shares) and [p.quality for p in high.curve] == sorted(p.quality for p in high.curve)
    below = calibrate(turns, cloud_share=0.02)
    assert below.notes and below.chosen.share == pytest.approx(below.floor)


def test_daily_budget_becomes_a_share():
    sig = Signals(match=0.5, confidence=0.9)
    day = 86400.0
    turns = [LoggedTurn(sig, 0.5, None, 0.01 if i % 2 else 0.0, created_at=i * day / 100) for i in range(200)]
    share, how = share_for_budget(turns, daily_budget=0.25)  # 100 turns a day x 0.01 each: 0.25 buys 25 %
    assert share == pytest.approx(0.25, rel=0.01) and "buys" in how


def test_write_thresholds_creates_or_updates_only_its_keys(tmp_path):
    path = tmp_path / "endcloud.toml"
    write_thresholds(path, {"min_match": 0.3, "min_confidence": 0.0})
    assert tomllib.loads(path.read_text())["serve"] == {"min_match": 0.3, "min_confidence": 0.0}
    path.write_text("[cloud]\nmodel = 'x'\n[serve]\nmin_match = 0.1  # old\nport = 1\n[privacy]\nretention_days = 9\n")
    write_thresholds(path, {"min_match": 0.42, "min_confidence": 0.5}, comment="test")
    conf = tomllib.loads(path.read_text())
    assert conf == {"cloud": {"model": "x"}, "serve": {"min_match": 0.42, "port": 1, "min_confidence": 0.5},
                    "privacy": {"retention_days": 9}}


def test_calibrate_needs_one_dial(workspace, capsys):
    assert main(["route", "calibrate", "-w", str(workspace)]) == 2
    assert main(["route", "calibrate", "-w", str(workspace), "--cloud-share", "0.2", "--daily-budget", "5"]) == 2
    assert main(["route", "calibrate", "-w", str(workspace), "--cloud-share", "0.2", "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out


def test_the_dashboard_shows_the_curve_the_choice_and_where_the_shop_stands(workspace, tmp_path):
    """The issue's dashboard card, in a real headless Chromium: the frontier the dial chose from,
    the chosen point, and the share the cloud takes now (from the served turns)."""
    import shutil

    from fastapi import FastAPI

    from endcloud.fileio import write_json_atomic
    from endcloud.serve.review import review_router

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    from playwright.sync_api import sync_playwright

    store = ConversationStore(workspace / "endcloud.db")
    cal = calibrate(logged_turns(store.routing_log()), cloud_share=0.3)
    store.close()
    path = tmp_path / "route-calibration.json"
    write_json_atomic(path, cal.to_json())
    app = FastAPI()
    app.include_router(review_router(db_path=workspace / "endcloud.db", calibration_path=path))
    with LoopbackServer(app) as srv:
        data = httpx.get(srv.url + "/api/dashboard", timeout=60).json()
        assert data["calibration"]["chosen"]["share"] == pytest.approx(cal.chosen.share, abs=1e-4)
        live = data["summary"]["takeover_rate"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            page = browser.new_page()
            page.goto(srv.url + "/dashboard")
            page.wait_for_selector("#dial-plot polyline", timeout=60_000)
            points = page.get_attribute("#dial-plot polyline", "points").split()
            assert len(points) == len(cal.curve) >= 2
            text = page.inner_text("#dial")
            assert f"{100 * cal.chosen.share:.1f} %" in text and f"now: {100 * live:.1f} %" in text
            assert page.locator("#dial-plot line").count() == 1  # where the shop stands now
            browser.close()
    # without a calibration the card says how to make one, and the rest of the page still works
    app2 = FastAPI()
    app2.include_router(review_router(db_path=workspace / "endcloud.db", calibration_path=tmp_path / "none.json"))
    with LoopbackServer(app2) as srv:
        assert httpx.get(srv.url + "/api/dashboard", timeout=60).json()["calibration"] is None
