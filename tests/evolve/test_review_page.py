"""The review page in a real headless Chromium against a real server: approve, edit, reload."""

from __future__ import annotations

import shutil

import pytest

from endcloud.loopback import LoopbackServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test installs it)")]


@pytest.fixture
def review_app(tmp_path):
    from fastapi import FastAPI

    from endcloud.serve.review import review_router
    from endcloud.store.review import ReviewStore

    db = tmp_path / "endcloud.db"
    store = ReviewStore(db)
    ids = [store.add_item(query=q, end_reply=e, cloud_reply=c, score={"sim": 0.1, "match": 0.2, "cloud_match": 0.6, "final": 0.12},
                          reason="downvote", item_id=f"item{i}")
           for i, (q, e, c) in enumerate([("能选快递吗", "在的", "亲，默认发中通快递哦"),
                                          ("有发票吗", "嗯", "亲，支持电子发票"),
                                          ("Can I get a discount?", "Hello", "Yes: 10% off with SAVE10.")])]
    app = FastAPI()
    app.include_router(review_router(db_path=db))
    return app, store, ids


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])


def test_approve_and_edit_persist_across_reload(review_app):
    from playwright.sync_api import sync_playwright

    app, store, ids = review_app
    with LoopbackServer(app) as srv, sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page()
        page.goto(srv.url + "/review")
        page.wait_for_selector("#list li")
        assert page.locator("#list li").count() == 3
        page.fill("#reviewer", "alice")
        page.dispatch_event("#reviewer", "change")
        page.evaluate("document.activeElement.blur()")
        first_query = page.inner_text("#d-query")
        page.keyboard.press("a")  # approve the selected (first) item
        page.wait_for_function("document.querySelectorAll('#list li').length === 2")
        second_query = page.inner_text("#d-query")
        page.keyboard.press("e")  # edit it
        page.fill("#edit", "亲，可以开电子发票，下单备注抬头即可")
        page.keyboard.press("Control+Enter")
        page.wait_for_function("document.querySelectorAll('#list li').length === 1")
        page.reload()
        page.wait_for_selector("#list li")
        assert page.locator("#list li").count() == 1  # state persisted on the server
        page.select_option("#status", "all")
        page.wait_for_function("document.querySelectorAll('#list li').length === 3")
        text = page.inner_text("#list")
        assert "approve" in text and "edit" in text
        browser.close()
    by_query = {it.query: it for it in store.items()}
    assert by_query[first_query].status == "approve"
    assert by_query[second_query].status == "edit"
    edited = [v for v in store.verdicts() if v.verdict == "edit"]
    assert edited[0].reviewer == "alice" and edited[0].corrected_text == "亲，可以开电子发票，下单备注抬头即可"
    labels = store.corrections_as_labels()
    assert [lab.label for lab in labels] == ["亲，可以开电子发票，下单备注抬头即可"]


def test_dashboard_renders_plots(review_app):
    from playwright.sync_api import sync_playwright

    app, _, _ = review_app
    with LoopbackServer(app) as srv, sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page()
        page.goto(srv.url + "/dashboard")
        page.wait_for_function("['scores','takeover','cost','adapters'].every(k => {"
                               " const im = document.getElementById('p-' + k); return im.complete && im.naturalWidth > 0; })",
                               timeout=60_000)
        for k in ("scores", "takeover", "cost", "adapters"):
            assert page.evaluate(f"document.getElementById('p-{k}').naturalWidth") > 100
        assert "turns served" in page.inner_text("#cards")
        browser.close()
