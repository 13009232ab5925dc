"""Customers can't reach each other's data (issue #16): identity, sessions, orders, feedback, admin.

Every test runs the real app on a real uvicorn on 127.0.0.1 (`LoopbackServer`) and talks to
it with the official `openai` client or httpx; the end model is `ScriptedModel`, which
records every conversation it was given, so a test can read exactly what a model saw.
"""

from __future__ import annotations

import logging
import time

import httpx
import pytest
from openai import AuthenticationError, OpenAI, PermissionDeniedError

from endcloud.cli import main
from endcloud.errors import ConfigError
from endcloud.loopback import LoopbackServer
from endcloud.serve.app import create_app
from endcloud.serve.auth import (ADMIN_COOKIE, TokenError, WITHHELD_ORDER, sign_customer_token,
                                 verify_customer_token)
from endcloud.serve.review import review_router
from endcloud.serve.settings import ServeSettings
from endcloud.testing import ScriptedModel

SECRET = "shop-secret-for-tests-0123456789"
ADMIN = "admin-token-for-tests-abcdef"
KEY = "frontend-key-for-tests-xyz"
CAROLS_ORDER, TRACKING, COURIER, SHIP_DATE = "702434972746656666", "YD8812345678901", "Yunda Express", "2024-06-02"


def token(customer: str, ttl: float = 600, secret: str = SECRET) -> str:
    return sign_customer_token(secret, customer, ttl)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def _shop(root):
    root.mkdir()
    (root / "shop.yaml").write_text("name: Towel Town\nlanguage: en\ncurrency: USD\n", encoding="utf-8")
    (root / "catalog.csv").write_text("sku,name,price,stock\nT-1,Bath towel,12.5,40\n", encoding="utf-8")
    (root / "faq.jsonl").write_text('{"question": "Which courier do you use?", "answer": "We ship with ZTO Express."}\n',
                                    encoding="utf-8")
    (root / "policies.md").write_text("## Returns\n<!-- key: returns -->\nReturns are accepted within 7 days.\n",
                                      encoding="utf-8")
    (root / "orders.csv").write_text(
        "order_id,customer,sku,status,courier,tracking_no,ship_date\n"
        f"{CAROLS_ORDER},carol,T-1,shipped,{COURIER},{TRACKING},{SHIP_DATE}\n"
        "114-3941689-8772232,dave,T-1,processing,,,\n", encoding="utf-8")
    return root


def _app(tmp_path, *, teacher=None, review=True, **settings):
    db = tmp_path / "endcloud.db"
    s = ServeSettings(db_path=db, min_match=0.0, customer_secret=SECRET, **settings)
    routers = [review_router(db_path=db, admin_token=s.admin_token)] if review else []
    model = ScriptedModel()
    return create_app(s, engine=model, teacher=teacher, extra_routers=routers), model


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return _shop(tmp_path_factory.mktemp("secure-shop") / "shop")


@pytest.fixture(scope="module")
def live(tmp_path_factory, shop):
    """The shop's server with an admin token, customer tokens and the offline reference cloud."""
    from endcloud.cloud.reference import ReferenceTeacher
    from endcloud.kb import ShopPack

    root = tmp_path_factory.mktemp("secure")
    app, model = _app(root, teacher=ReferenceTeacher(pack=ShopPack.load(shop)), admin_token=ADMIN, shop_dir=shop)
    with LoopbackServer(app) as srv:
        yield srv, app, model


def client(srv, api_key: str = "anything") -> OpenAI:
    return OpenAI(base_url=srv.url + "/v1", api_key=api_key, max_retries=0, timeout=30)


def ask(c: OpenAI, text: str, *, model: str = "end", **kw):
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def ext(resp) -> dict:
    return resp.model_extra["endcloud"]


def seen_by_model(model: ScriptedModel, text: str) -> list[dict]:
    """The conversation the end model was given for the turn whose question was `text`."""
    for batch in reversed(model.batches):
        for convo in batch:
            if any(text in m["content"] for m in convo if m["role"] == "user"):
                return convo
    raise AssertionError(f"the end model never saw {text!r}")


def flat(convo: list[dict]) -> str:
    return "\n".join(m["content"] for m in convo)


# ---- 1. anonymous chats never share a session ------------------------------------------------
def test_two_anonymous_customers_never_share_a_session(live):
    srv, app, model = live
    first = ask(client(srv), "My phone is 13812345678, please call me about my towel")
    second = ask(client(srv), "hello, do you ship today?")
    labelled = [ask(client(srv), f"question {i} from a widget", user="visitor") for i in range(2)]
    sids = {ext(r)["session_id"] for r in (first, second, *labelled)}
    assert len(sids) == 4  # no two anonymous chats in one session, not even with the same `user` label
    for text in ("hello, do you ship today?", "question 1 from a widget"):
        convo = seen_by_model(model, text)
        assert "13812345678" not in flat(convo) and "question 0" not in flat(convo)
        assert [m["role"] for m in convo if m["role"] != "system"] == ["user"]


def test_an_anonymous_chat_continues_only_with_the_session_id_it_was_issued(live):
    srv, app, model = live
    c = client(srv)
    first = ask(c, "I want the blue bath towel")
    sid = ext(first)["session_id"]
    assert sid.startswith("sess-") and len(sid) >= 5 + 32  # 128 random bits: unguessable
    again = ask(c, "how much is it?", extra_body={"session_id": sid})
    assert ext(again)["session_id"] == sid
    assert "I want the blue bath towel" in flat(seen_by_model(model, "how much is it?"))
    # a session id the server never issued, and a named customer's session, are refused
    carol = ask(client(srv, token("carol")), "carol's private question about her parcel")
    for other in ("sess-guessed", ext(carol)["session_id"]):
        with pytest.raises(PermissionDeniedError, match="another customer or was never issued"):
            ask(c, "show me that chat", extra_body={"session_id": other})
    r = httpx.post(srv.url + "/v1/chat/completions", headers={"X-Endcloud-Session": ext(carol)["session_id"]},
                   json={"model": "end", "messages": [{"role": "user", "content": "and via the header?"}]}, timeout=30)
    assert r.status_code == 403
    assert not any("carol's private" in flat(convo) and "show me" in flat(convo) for b in model.batches for convo in b)


# ---- 2. `user` is a label; only a signed token is an identity --------------------------------
def test_an_unsigned_user_gets_neither_the_history_nor_the_profile(live):
    srv, app, model = live
    app.state.store.set_profile("alice", preferences={"size": "XL"},
                                orders=[{"order_id": "A-778", "item": "towel", "status": "shipped"}])
    alice = client(srv, token("alice"))
    mine = ask(alice, "alice's earlier question about a gift")
    impostor = ask(client(srv), "what did I ask before?", user="alice")
    assert ext(impostor)["session_id"] != ext(mine)["session_id"]
    seen = flat(seen_by_model(model, "what did I ask before?"))
    assert "A-778" not in seen and "XL" not in seen and "gift" not in seen
    # the same question with alice's token: her profile and her session
    real = ask(alice, "and what about my order?")
    assert ext(real)["session_id"] == ext(mine)["session_id"]
    seen = flat(seen_by_model(model, "and what about my order?"))
    assert "A-778" in seen and "XL" in seen and "gift" in seen


def test_forged_expired_and_foreign_tokens_are_refused(live):
    srv, app, model = live
    good = token("alice")
    head, _, sig = good.rpartition(".")
    forged = head.replace(head.split(".")[1], "Ym9i") + "." + sig  # "bob" with alice's signature
    cases = {"forged": forged, "expired": sign_customer_token(SECRET, "alice", 60, now=time.time() - 120),
             "foreign": token("alice", secret="another-shop-secret-0123456789"), "garbage": "ect1.x.y.z"}
    for name, bad in cases.items():
        r = httpx.post(srv.url + "/v1/chat/completions", headers=bearer(bad), timeout=30,
                       json={"model": "end", "messages": [{"role": "user", "content": f"{name} token"}]})
        assert r.status_code == 401, (name, r.text)
        assert r.json()["error"]["code"] == "invalid_customer_token" and r.headers["www-authenticate"] == "Bearer"
    assert verify_customer_token(SECRET, good) == "alice"
    with pytest.raises(TokenError, match="signature"):
        verify_customer_token(SECRET, forged)
    with pytest.raises(TokenError, match="expired"):
        verify_customer_token(SECRET, good, now=10**12)
    with pytest.raises(TokenError):
        sign_customer_token(SECRET, "anonymous", 60)  # reserved: an anonymous chat is nobody's
    with pytest.raises(ConfigError, match="customer_secret"):
        sign_customer_token("short", "alice", 60)


def test_the_token_format_is_what_the_docs_tell_a_php_or_node_site(live):
    import base64
    import hashlib
    import hmac
    import time

    srv, app, model = live
    expiry = int(time.time()) + 300
    body = "ect1." + base64.urlsafe_b64encode("carol".encode()).decode().rstrip("=") + f".{expiry}"
    sig = base64.urlsafe_b64encode(hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).digest()).decode().rstrip("=")
    assert verify_customer_token(SECRET, f"{body}.{sig}") == "carol"
    # in X-Endcloud-Customer (where a front end holding an API key puts it) as well as in the bearer
    resp = client(srv).chat.completions.create(model="end", messages=[{"role": "user", "content": "header token"}],
                                               extra_headers={"X-Endcloud-Customer": f"{body}.{sig}"})
    assert CAROLS_ORDER in flat(seen_by_model(model, "header token"))  # carol's profile: she is carol


def test_api_keys_gate_the_chat(tmp_path):
    app, model = _app(tmp_path, review=False, api_keys=(KEY, "second-frontend-key-123"))
    with LoopbackServer(app) as srv:
        app.state.store.set_profile("alice", preferences={"size": "XL"}, orders=[{"order_id": "A-778"}])
        post = lambda headers, text: httpx.post(  # noqa: E731
            srv.url + "/v1/chat/completions", headers=headers, timeout=30,
            json={"model": "end", "user": "alice", "messages": [{"role": "user", "content": text}]})
        assert post({}, "no key").status_code == 401
        assert post(bearer("wrong-key"), "wrong key").json()["error"]["code"] == "invalid_api_key"
        assert post(bearer(KEY), "right key").status_code == 200
        assert post(bearer(token("alice")), "a customer token alone").status_code == 200
        assert post(bearer(KEY) | {"X-Endcloud-Customer": token("alice")}, "both").status_code == 200
        with pytest.raises(AuthenticationError):
            ask(client(srv, "wrong-key"), "the openai client with a wrong key")
        assert ask(client(srv, KEY), "the openai client with the key").choices[0].message.content
        fb = httpx.post(srv.url + "/v1/feedback", json={"message_id": "chatcmpl-x", "rating": "up"}, timeout=30)
        assert fb.status_code == 401
    # a front end's key proves the front end, not the `user` it names: alice's profile only with her token
    assert "A-778" not in flat(seen_by_model(model, "right key"))
    assert "A-778" in flat(seen_by_model(model, "a customer token alone")) and "A-778" in flat(seen_by_model(model, "both"))


# ---- 3. admin routes ---------------------------------------------------------------------------
ADMIN_GETS = ("/v1/customers/carol/sessions", "/v1/customers/carol/profile", "/review", "/dashboard",
              "/api/review/items", "/api/dashboard", "/dashboard/plot/scores.png")


def test_the_admin_token_protects_every_admin_route(live):
    srv, app, model = live
    sid = ext(ask(client(srv, token("carol")), "carol asks something"))["session_id"]
    routes = ADMIN_GETS + (f"/v1/sessions/{sid}",)
    for path in routes:
        # loopback is no pass once a token is set: every admin route needs it
        assert httpx.get(srv.url + path, timeout=30).status_code == 401, path
        assert httpx.get(srv.url + path, headers=bearer("wrong-admin-token"), timeout=30).status_code == 401, path
        assert httpx.get(srv.url + path, headers=bearer(ADMIN), timeout=30).status_code == 200, path
        assert httpx.get(srv.url + path, headers={"X-Endcloud-Admin-Token": ADMIN}, timeout=30).status_code == 200, path
    put = httpx.put(srv.url + "/v1/customers/carol/profile", json={"preferences": {"size": "S"}}, timeout=30,
                    headers=bearer(token("carol")))
    assert put.status_code == 401  # a customer may read her profile, never write it
    verdict = {"verdict": "approve", "reviewer": "mallory"}
    assert httpx.post(srv.url + "/api/review/items/any/verdict", json=verdict, timeout=30).status_code == 401
    assert httpx.post(srv.url + "/api/review/items/any/verdict", json=verdict, headers=bearer(ADMIN),
                      timeout=30).status_code == 404  # past the check: no such item
    # /metrics: Prometheus on this machine scrapes freely; anything relayed or remote needs the token
    assert httpx.get(srv.url + "/metrics", timeout=30).status_code == 200
    relayed = {"X-Forwarded-For": "203.0.113.9"}
    assert httpx.get(srv.url + "/metrics", headers=relayed, timeout=30).status_code == 401
    assert httpx.get(srv.url + "/metrics", headers=relayed | bearer(ADMIN), timeout=30).status_code == 200


def test_without_an_admin_token_admin_routes_serve_loopback_only(tmp_path):
    app, model = _app(tmp_path)
    with LoopbackServer(app) as srv:
        sid = ext(ask(client(srv), "anything"))["session_id"]
        for path in ADMIN_GETS + (f"/v1/sessions/{sid}",):
            assert httpx.get(srv.url + path, timeout=30).status_code == 200, path
            # through a reverse proxy every visitor would look local: a relayed request is not
            r = httpx.get(srv.url + path, headers={"X-Forwarded-For": "203.0.113.9"}, timeout=30)
            assert r.status_code == 403 and "ENDCLOUD_SERVE_ADMIN_TOKEN" in r.text, path


def test_a_non_loopback_host_refuses_to_start_without_an_admin_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ENDCLOUD_SERVE_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("ENDCLOUD_ADMIN_TOKEN", raising=False)
    for host in ("0.0.0.0", "::", "192.168.1.20"):
        assert main(["serve", "--workspace", str(tmp_path), "--host", host]) == 2
        err = capsys.readouterr().err
        assert "--admin-token" in err and "ENDCLOUD_SERVE_ADMIN_TOKEN" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="admin token"):
        ServeSettings.from_env({"ENDCLOUD_SERVE_HOST": "0.0.0.0"})
    s = ServeSettings.from_env({"ENDCLOUD_SERVE_HOST": "0.0.0.0", "ENDCLOUD_SERVE_ADMIN_TOKEN": ADMIN,
                                "ENDCLOUD_SERVE_API_KEYS": f"{KEY}, other-key-000", "ENDCLOUD_SERVE_CUSTOMER_SECRET": SECRET})
    assert s.admin_token == ADMIN and s.api_keys == (KEY, "other-key-000")
    assert ADMIN not in repr(s) and KEY not in repr(s) and SECRET not in repr(s)  # settings may be logged
    assert ServeSettings(host="localhost").admin_token is None and ServeSettings(host="::1").host == "::1"
    with pytest.raises(ConfigError, match="differ"):
        ServeSettings(admin_token=SECRET, customer_secret=SECRET)
    with pytest.raises(ConfigError, match="at least 16"):
        ServeSettings(customer_secret="short")


def test_a_query_token_never_reaches_the_access_log(tmp_path):
    lines: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    grab = Grab()
    access = logging.getLogger("uvicorn.access")
    app, model = _app(tmp_path, admin_token=ADMIN)
    with LoopbackServer(app, log_level="info") as srv:
        access.addHandler(grab)
        try:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                r = c.get("/dashboard?token=" + ADMIN + "&view=week")
                assert r.status_code == 303 and r.headers["location"] == "dashboard?view=week"
                cookie = c.cookies.get(ADMIN_COOKIE)
                assert cookie and cookie != ADMIN  # the cookie stands for the token, it is not the token
                assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
                assert c.get("/dashboard?view=week").status_code == 200  # the cookie now opens the pages
                assert c.get("/api/dashboard").status_code == 200
                wrong = httpx.get(srv.url + "/review?token=not-the-admin-token", timeout=30)
                assert wrong.status_code == 401
        finally:
            access.removeHandler(grab)
    assert any("/dashboard?view=week" in line for line in lines), lines  # the log works...
    assert not any(ADMIN in line or "not-the-admin-token" in line or "token=" in line for line in lines), lines


# ---- 4. orders, sessions and feedback reach only their owner -----------------------------------
@pytest.mark.parametrize("who", ["anonymous", "dave", "unsigned carol"])
def test_an_order_lookup_needs_the_order_to_be_yours(live, who):
    srv, app, model = live
    question = f"status of order {CAROLS_ORDER} please ({who})"
    c = {"anonymous": client(srv), "dave": client(srv, token("dave")), "unsigned carol": client(srv)}[who]
    kw = {"user": "carol"} if who == "unsigned carol" else {}
    cloud = ask(c, question, model="cloud", **kw)  # the reference cloud looks orders up in the shop pack
    end = ask(c, question + " again", model="end", **kw)
    for resp in (cloud, end):
        text = resp.choices[0].message.content
        assert TRACKING not in text and COURIER not in text and SHIP_DATE not in text and CAROLS_ORDER not in text
        assert all(k["source"] != "order" for k in ext(resp)["knowledge"])
    seen = flat(seen_by_model(model, WITHHELD_ORDER + " please (" + who))
    assert CAROLS_ORDER not in seen and TRACKING not in seen


def test_the_owner_gets_her_order(live):
    srv, app, model = live
    carol = client(srv, token("carol"))
    cloud = ask(carol, f"status of order {CAROLS_ORDER}", model="cloud")
    assert TRACKING in cloud.choices[0].message.content and ext(cloud)["answered_by"] == "cloud"
    end = ask(carol, f"where is {CAROLS_ORDER} now?", model="end")
    assert any(k["source"] == "order" and k["ref"] == CAROLS_ORDER for k in ext(end)["knowledge"])
    assert TRACKING in flat(seen_by_model(model, f"where is {CAROLS_ORDER} now?"))


def test_feedback_only_on_your_own_replies(live):
    srv, app, model = live
    alices = ask(client(srv, token("alice")), "alice wants feedback tested").id
    anons = ask(client(srv), "an anonymous question").id
    fb = lambda mid, headers=None, **more: httpx.post(srv.url + "/v1/feedback", headers=headers or {}, timeout=30,  # noqa: E731
                                                      json={"message_id": mid, "rating": "down", "correction": "poison"} | more)
    for headers, more in (({}, {}), (bearer(token("mallory")), {}), ({}, {"user": "alice"})):
        r = fb(alices, headers, **more)
        assert r.status_code == 404 and r.json()["error"]["code"] == "message_not_found"
    assert app.state.store.feedback(alices) == []
    assert fb(alices, bearer(token("alice"))).status_code == 200
    assert fb(alices, {"X-Endcloud-Admin-Token": ADMIN}).status_code == 200
    assert fb(anons).status_code == 200  # an anonymous reply's id is the proof: only that chat was sent it
    assert [f["rating"] for f in app.state.store.feedback(alices)] == [1, 1]


def test_sessions_and_profiles_are_readable_by_their_owner_only(live):
    srv, app, model = live
    sid = ext(ask(client(srv, token("erin")), "erin's own chat"))["session_id"]
    get = lambda path, who: httpx.get(srv.url + path, headers=bearer(token(who)), timeout=30)  # noqa: E731
    assert get(f"/v1/sessions/{sid}", "erin").json()["messages"][0]["content"] == "erin's own chat"
    assert get("/v1/customers/erin/sessions", "erin").json()["sessions"] == [sid]
    assert get("/v1/customers/erin/profile", "erin").status_code == 200
    for path in (f"/v1/sessions/{sid}", "/v1/customers/erin/sessions", "/v1/customers/erin/profile"):
        r = get(path, "mallory")
        assert r.status_code == 404 and "erin" not in r.text, path


def test_the_cli_signs_a_token_the_server_accepts(monkeypatch, capsys):
    monkeypatch.setenv("ENDCLOUD_SERVE_CUSTOMER_SECRET", SECRET)
    assert main(["serve", "token", "--customer", "carol", "--ttl", "120"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("ect1.") and verify_customer_token(SECRET, printed) == "carol"
    monkeypatch.delenv("ENDCLOUD_SERVE_CUSTOMER_SECRET")
    assert main(["serve", "token", "--customer", "carol"]) == 2
    assert "ENDCLOUD_SERVE_CUSTOMER_SECRET" in capsys.readouterr().err
