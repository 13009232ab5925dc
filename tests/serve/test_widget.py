"""The chat widget: served by the app, CORS closed unless set, and in a real headless Chromium
against a real server on 127.0.0.1 (the tiny real end model): open it on the shop's page (another
origin), ask, watch the reply stream in, vote, correct, reload and see the history.

No timing: the engine runs only the decode steps the test grants (`GatedEngine`), so "the
reply was shown while it was still being generated" is shown by the widget holding part of
the text while the worker is held.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from endcloud.errors import ConfigError
from endcloud.loopback import LoopbackServer
from endcloud.serve.app import create_app
from endcloud.serve.auth import sign_customer_token
from endcloud.serve.settings import ServeSettings
from endcloud.testing import ScriptedModel
from tests.serve.ready import wait_ready

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECRET = "widget-customer-secret-0123456789"


# ---- served, and closed by default --------------------------------------------------------
def test_widget_and_chat_page_are_served(tmp_path):
    app = create_app(ServeSettings(db_path=tmp_path / "e.db"), engine=ScriptedModel())
    with LoopbackServer(app) as srv:
        js = httpx.get(srv.url + "/widget.js", timeout=10)
        page = httpx.get(srv.url + "/chat", timeout=10)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "/v1/chat/completions" in js.text and "/v1/feedback" in js.text and "localStorage" in js.text
    assert "请输入您的问题" in js.text and "Type your question" in js.text  # zh and en
    assert page.status_code == 200 and 'src="widget.js"' in page.text and 'data-mode="inline"' in page.text


def _preflight(url, origin):
    return httpx.options(url + "/v1/chat/completions", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})


def test_cors_is_closed_by_default_and_opens_to_the_named_origin_only(tmp_path):
    closed = create_app(ServeSettings(db_path=tmp_path / "a.db"), engine=ScriptedModel())
    with LoopbackServer(closed) as srv:
        r = _preflight(srv.url, "https://shop.example.com")
        post = httpx.post(srv.url + "/v1/chat/completions", headers={"Origin": "https://shop.example.com"}, timeout=30,
                          json={"model": "end", "messages": [{"role": "user", "content": "hi"}]})
    assert "access-control-allow-origin" not in r.headers
    assert post.status_code == 200 and "access-control-allow-origin" not in post.headers  # the browser withholds it

    s = ServeSettings.from_env({"ENDCLOUD_SERVE_CORS_ORIGINS": "https://shop.example.com, http://127.0.0.1:9"},
                               db_path=tmp_path / "b.db")
    assert s.cors_origins == ("https://shop.example.com", "http://127.0.0.1:9")
    with LoopbackServer(create_app(s, engine=ScriptedModel())) as srv:
        ok = _preflight(srv.url, "https://shop.example.com")
        other = _preflight(srv.url, "https://evil.example.net")
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "x-endcloud-customer" in ok.headers["access-control-allow-headers"].lower()
    assert other.headers.get("access-control-allow-origin") != "https://evil.example.net"


def test_a_bad_cors_origin_names_the_setting():
    with pytest.raises(ConfigError, match="cors_origins.*ENDCLOUD_SERVE_CORS_ORIGINS"):
        create_app(ServeSettings(cors_origins=("shop.example.com/path",)), engine=ScriptedModel())


# ---- in Chromium ----------------------------------------------------------------------------
def _shop_site(api: dict, token: str):
    """The shop's own site: another origin than the API, one script tag (the API's address is
    read per request: the two servers need each other's address)."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    site = FastAPI()

    @site.get("/")
    async def index():
        return HTMLResponse(f"""<!doctype html><html><head><meta charset="utf-8"><title>Towel shop</title></head>
<body><h1>Towel shop</h1>
<script src="{api['url']}/widget.js" data-lang="en" data-model="end" data-token="{token}" async></script>
</body></html>""")

    return site


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test installs it)")
@pytest.mark.usefixtures("few_threads")
def test_ask_stream_vote_correct_reload_in_chromium(end_model, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.serve.test_streaming import GatedEngine

    token = sign_customer_token(SECRET, "alice", 3600)
    engine = GatedEngine(end_model, window_ms=0)
    api_address: dict = {}
    with LoopbackServer(_shop_site(api_address, token)) as shop:
        settings = ServeSettings(db_path=tmp_path / "endcloud.db", customer_secret=SECRET, cors_origins=(shop.url,),
                                 min_match=0.0, max_new_tokens=12, temperature=1.0, top_p=1.0)
        app = create_app(settings, engine=engine)
        try:
            with LoopbackServer(app) as api, sync_playwright() as p:
                api_address["url"] = api.url
                _drive(p, app, api, shop, engine)
        finally:
            engine.open()


def _drive(p, app, api, shop, engine):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    browser = _browser(p)
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(shop.url + "/")
        page.click(".launcher")
        assert page.get_attribute("textarea[name=q]", "placeholder") == "Type your question…"
        page.fill("textarea[name=q]", "Do you ship today?")
        engine.grant(3)  # admit + prefill + a couple of decode steps: part of the reply, then held
        page.click("button.send")
        # part of the reply is on screen while the engine is held mid-reply: it streamed. The
        # tiny model samples unseeded, and its first tokens may show nothing yet (part of a
        # character, a "[" held back as a possible placeholder): one more step at a time, far
        # from the 12 a whole reply may take, until a chunk shows.
        first_chunk = """() => {
            const li = document.querySelector('#endcloud-widget').shadowRoot.querySelector('li.assistant.pending');
            return li && Number(li.dataset.chunks || 0) >= 1; }"""
        for extra in range(6):
            assert engine.held()
            try:
                page.wait_for_function(first_chunk, timeout=5000 if extra < 5 else 30000)
                break
            except PlaywrightTimeout:
                if extra == 5:
                    raise
                engine.grant(1)
        assert engine.held()
        partial = page.inner_text("li.assistant.pending .text")
        engine.open()
        page.wait_for_selector("li.assistant.done[data-message-id]", timeout=60000)
        final = page.inner_text("li.assistant.done .text")
        assert final.startswith(partial.rstrip("…").strip()) and len(final) >= len(partial.rstrip("…"))
        chunks = int(page.get_attribute("li.assistant.done", "data-chunks"))
        assert chunks >= 2, chunks
        mid = page.get_attribute("li.assistant.done", "data-message-id")

        page.click("li.assistant.done button.down")
        page.wait_for_selector("li.assistant.done button.down[aria-pressed=true]")
        assert page.inner_text("li.assistant.done .note") == "Thanks for your feedback"
        page.click("li.assistant.done button.correct")
        page.fill("li.assistant.done form.correction textarea", "Yes, orders before 4 pm ship today.")
        page.click("li.assistant.done form.correction button")
        page.wait_for_function("""() => document.querySelector('#endcloud-widget').shadowRoot
            .querySelector('li.assistant.done .note').textContent.includes('correction')""")
        rows = app.state.store.feedback(mid)
        assert [(r["rating"], r["customer"]) for r in rows] == [(1, "alice"), (1, "alice")]  # 👎 is stored as 1 of 5
        assert rows[-1]["correction"] == "Yes, orders before 4 pm ship today."

        page.reload()  # the history comes back: the session id and messages were kept
        page.click(".launcher")
        page.wait_for_selector("li.msg.user")
        assert page.inner_text("li.msg.user .text") == "Do you ship today?"
        assert page.inner_text("li.assistant.done .text") == final
        assert page.get_attribute("li.assistant.done", "data-message-id") == mid
        assert page.get_attribute("li.assistant.done button.down", "aria-pressed") == "true"
        sid = page.evaluate("""() => JSON.parse(Object.entries(localStorage)
            .find(([k]) => k.startsWith('endcloud-widget|'))[1]).sid""")
        assert app.state.store.session_owner(sid) == "alice"  # the token made it alice's chat

        # the same box as a whole page, in Chinese (/chat#lang=zh)
        zh = browser.new_page()
        zh.goto(api.url + "/chat#lang=zh")
        zh.wait_for_selector("li.greeting")
        assert zh.get_attribute("textarea[name=q]", "placeholder") == "请输入您的问题…"
        assert zh.inner_text("li.greeting") == "您好！请问有什么可以帮您？"
        assert errors == []
    finally:
        browser.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test installs it)")
def test_endcloud_serve_with_the_config_file_serves_the_widget_to_the_shops_site(tmp_path, tiny_base_dir):
    """`endcloud serve` itself, its port and CORS origin read from <workspace>/endcloud.toml (no
    flag, no variable): the shop's page, in Chromium, asks and gets a reply; a reload shows it."""
    import os
    import subprocess
    import sys
    import time

    from playwright.sync_api import sync_playwright

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "base").symlink_to(tiny_base_dir, target_is_directory=True)
    token = sign_customer_token(SECRET, "bob", 3600)
    api_address: dict = {}
    with LoopbackServer(_shop_site(api_address, token)) as shop:
        port = _free_port()
        (ws / "endcloud.toml").write_text(
            f'[serve]\nport = {port}\ncors_origins = ["{shop.url}"]\nworker = "thread"\ntorch_threads = 1\n'
            f'min_match = 0.0\ntemperature = 1.0\ntop_p = 1.0\nmax_new_tokens = 8\n', encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ENDCLOUD_SERVE_", "ENDCLOUD_CLOUD_", "ENDCLOUD_CONFIG"))}
        env["ENDCLOUD_SERVE_CUSTOMER_SECRET"] = SECRET
        proc = subprocess.Popen([sys.executable, "-m", "endcloud", "serve", "-w", str(ws), "--cloud", "none",
                                 "--log-level", "error"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = api_address["url"] = f"http://127.0.0.1:{port}"
        try:
            why = wait_ready(url, proc, timeout_s=300, interval_s=0.2)
            assert why is None, why + ("\n" + proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "")
            assert _preflight(url, shop.url).headers["access-control-allow-origin"] == shop.url
            with sync_playwright() as p:
                browser = _browser(p)
                try:
                    page = browser.new_page()
                    page.goto(shop.url + "/")
                    page.click(".launcher")
                    page.fill("textarea[name=q]", "How long does shipping take?")
                    page.click("button.send")
                    page.wait_for_selector("li.assistant.done[data-message-id]", timeout=120000)
                    assert "error" not in page.get_attribute("li.assistant.done", "class")
                    reply = page.inner_text("li.assistant.done .text")
                    page.click("li.assistant.done button.up")
                    page.wait_for_selector("li.assistant.done button.up[aria-pressed=true]")
                    page.reload()
                    page.click(".launcher")
                    page.wait_for_selector("li.msg.user")
                    assert page.inner_text("li.msg.user .text") == "How long does shipping take?"
                    assert page.inner_text("li.assistant.done .text") == reply
                    assert page.get_attribute("li.assistant.done button.up", "aria-pressed") == "true"
                finally:
                    browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    from endcloud.store.conversations import ConversationStore

    store = ConversationStore(ws / "endcloud.db")
    try:
        assert [r["rating"] for r in store.feedback()] == [5]  # 👍, in the workspace's own store
        assert store.sessions_of("bob")
    finally:
        store.close()
