"""Hot-swap under load: requests during promotion all succeed.

A real uvicorn on 127.0.0.1 serves the real tiny EndModel; many customers chat at once
while another thread swaps the served LoRA adapter back and forth (the very call the
evolution loop's `on_promote` makes), and then while an `Evolver` round promotes a new
adapter into the running server. Every reply must be a 200 with text, and the server must
show (in /healthz and in each stored reply's `adapter`) that the adapter really changed.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from pathlib import Path

import httpx
import pytest

from endcloud.evolve import EvolveSettings, Evolver
from endcloud.evolve.gate import GateSettings
from endcloud.loopback import LoopbackServer
from endcloud.serve.app import create_app
from endcloud.serve.settings import ServeSettings

from .conftest import DictTeacher

pytestmark = pytest.mark.slow

QUESTIONS = ["能选快递吗", "有优惠券吗", "Do you ship today?", "几天发货？", "Can I return it?", "这款毛巾是纯棉的吗"]
HELDOUT = [
    {"id": "h1", "query": "你好", "context": [], "facts": None, "reference": "亲，在的，请问有什么可以帮您？"},
    {"id": "h2", "query": "有优惠券吗", "context": [], "facts": ["10"], "reference": "亲，可以领取满99减10的优惠券哦。"},
]


@pytest.fixture(scope="module")
def adapters(tiny_base_dir, tmp_path_factory) -> tuple[Path, Path]:
    """Two real peft LoRA adapters on disk, trained for a few steps on different replies."""
    import torch

    from endcloud.end.data import Example
    from endcloud.end.train import train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hotswap-adapters")
    out = []
    for name, reply in (("a1", "亲，默认发中通快递。"), ("a2", "Yes, you can get a 10% discount.")):
        examples = [Example(messages=[{"role": "user", "content": q}], response=reply) for q in QUESTIONS]
        # enough steps that each adapter's greedy reply is non-empty and tells the two apart
        res = train(tiny_base_dir, examples, root / name, method="lora", steps=10, lr=2e-2, batch_size=6,
                    progress=False, resume=False, save_every=10, seed=0)
        assert (Path(res.adapter_dir) / "adapter_config.json").exists()
        out.append(Path(res.adapter_dir))
    return out[0], out[1]


def _live_app(tiny_base_dir, adapter_dir, db):
    from endcloud.runtime.model import EndModel
    from endcloud.store.conversations import ConversationStore

    store = ConversationStore(db)
    # no cloud and model "end": replies never wait on a takeover; max_batch small so the
    # load is spread over many batches for the swaps to land between
    settings = ServeSettings(db_path=db, min_match=0.0, max_new_tokens=8, max_batch=4, rate_limit_per_minute=10_000)
    app = create_app(settings, engine=EndModel.load(tiny_base_dir, adapter_dir, threads=1), teacher=None, store=store)
    app.state.engine.adapter = str(adapter_dir)
    return app, store


def _chat(client: httpx.Client, i: int) -> dict:
    q = QUESTIONS[i % len(QUESTIONS)]
    r = client.post("/v1/chat/completions", json={
        # one generation setting for all (no per-request seed): requests are batched together
        "model": "end", "user": f"load-{i}", "max_tokens": 8, "temperature": 0.0,
        "messages": [{"role": "user", "content": q}]})
    body = r.json()
    text = body["choices"][0]["message"]["content"] if r.status_code == 200 else None
    return {"status": r.status_code, "text": text, "id": body.get("id"), "q": q, "body": body}


def _fire(url: str, n: int, *, until: threading.Event | None = None, workers: int = 6) -> list[dict]:
    """`n` concurrent chats (or, with `until`, keep chatting until it is set, at least `n`)."""
    counter = iter(range(10**6))
    lock = threading.Lock()

    def worker() -> list[dict]:
        rows = []
        with httpx.Client(base_url=url, timeout=60) as c:
            while True:
                with lock:
                    i = next(counter)
                if i >= n and (until is None or until.is_set()):
                    return rows
                rows.append(_chat(c, i))

    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        return [row for rows in pool.map(lambda _: worker(), range(workers)) for row in rows]


def test_requests_during_repeated_swaps_all_succeed(tiny_base_dir, adapters, tmp_path):
    a1, a2 = adapters
    app, store = _live_app(tiny_base_dir, a1, tmp_path / "endcloud.db")
    engine = app.state.engine
    expected = {}  # greedy replies do not depend on the batch: each adapter's reply to each question
    for a in (a2, a1):
        engine.model.swap_adapter(a)
        gens = engine.model.generate([[{"role": "user", "content": q}] for q in QUESTIONS], max_new_tokens=8,
                                     temperature=0.0)
        expected[a] = {q: g.text for q, g in zip(QUESTIONS, gens)}
    assert all(t.strip() for e in expected.values() for t in e.values())
    assert expected[a1] != expected[a2]
    done = threading.Event()
    swaps, seen_health, wrong_variant = [], set(), []

    with LoopbackServer(app) as srv:
        def swapper():
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                i = 0
                while not done.is_set():
                    target = a2 if i % 2 == 0 else a1
                    engine.swap_adapter(target)  # what Evolver.on_promote does in the demo and the service
                    if engine.model.adapter_dir != target:
                        wrong_variant.append((i, engine.model.adapter_dir))
                    swaps.append(target)
                    seen_health.add(c.get("/healthz").json()["adapter"])
                    i += 1
                    done.wait(0.02)

        t = threading.Thread(target=swapper, daemon=True)
        t.start()
        rows = _fire(srv.url, 60)
        done.set()
        t.join(timeout=30)
        assert not t.is_alive()

    bad = [r for r in rows if r["status"] != 200 or not (r["text"] or "").strip()]
    assert len(rows) == 60 and not bad, bad[:3]
    assert len(swaps) >= 4 and not wrong_variant
    assert seen_health == {str(a1), str(a2)}
    # every reply is wholly one adapter's (none half-swapped), and both adapters answered
    from_a1 = [r["text"] == expected[a1][r["q"]] for r in rows]
    from_a2 = [r["text"] == expected[a2][r["q"]] for r in rows]
    assert all(x or y for x, y in zip(from_a1, from_a2)), [r["text"] for r in rows]
    assert any(x and not y for x, y in zip(from_a1, from_a2)) and any(y and not x for x, y in zip(from_a1, from_a2))
    # each stored reply names the adapter being served: both were, during this load
    served_by = {store.reply(r["id"])["adapter"] for r in rows}
    assert served_by == {str(a1), str(a2)}, served_by
    assert max(engine.batcher.batch_sizes) > 1  # concurrent customers really shared batches
    store.close()


def test_evolver_promotion_swaps_the_live_server_while_customers_chat(tiny_base_dir, adapters, tmp_path, stores):
    import torch

    from endcloud.end.adapters import AdapterRegistry
    from endcloud.scoring import Evaluator

    torch.manual_seed(0)
    conv, labels = stores  # the same SQLite file the server writes to (tmp_path/endcloud.db)
    a1, _ = adapters
    registry = AdapterRegistry(tmp_path / "adapters")
    champion = registry.publish("shop", a1, manifest={"method": "lora"})
    registry.activate("shop", champion)
    champion_dir = registry.active("shop")
    app, store = _live_app(tiny_base_dir, champion_dir, tmp_path / "endcloud.db")

    promoted: list[Path] = []

    def on_promote(path: Path) -> None:
        app.state.engine.swap_adapter(path)
        promoted.append(path)

    q, a = "能选快递吗", "亲，默认发中通快递，下午4点前下单当天发货。"
    settings = EvolveSettings(min_labels=1, label_repeat=4, min_steps=12, max_steps=12, lr=5e-3, replay_ratio=0.0,
                              gate=GateSettings(tolerance=1.0, max_new_tokens=8))  # a wide gate: this test is the swap
    ev = Evolver(conversations=conv, labels=labels, teacher=DictTeacher({q: a}), registry=registry,
                 base_dir=tiny_base_dir, adapter_name="shop", heldout=HELDOUT, settings=settings,
                 evaluator=Evaluator(similarity="char-ngram", matching="tfidf"), on_promote=on_promote,
                 work_dir=tmp_path / "rounds")

    with LoopbackServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        # the trigger: a served turn the customer downvotes, through the real endpoints
        first = _chat(c, 0)
        assert first["status"] == 200
        r = c.post("/v1/feedback", json={"message_id": first["id"], "rating": "down", "user": "load-0"})
        assert r.status_code == 200, r.text
        assert c.get("/healthz").json()["adapter"] == str(champion_dir)

        done = threading.Event()
        result: dict = {}

        def evolve():
            try:
                result["tick"] = ev.tick()
            finally:
                done.set()

        t = threading.Thread(target=evolve, daemon=True)
        t.start()
        rows = _fire(srv.url, 24, until=done, workers=4)
        t.join(timeout=60)
        after = [_chat(c, 1000 + i) for i in range(3)]
        health = c.get("/healthz").json()

    rnd = result["tick"]["round"]
    assert rnd is not None and rnd["promoted"], rnd
    new = registry.active("shop")
    assert registry.active_version("shop") == rnd["version"] != champion
    label = f"shop/{new.name}"  # registry versions are labelled NAME/vN
    assert promoted == [new] and health["adapter"] == label
    bad = [x for x in rows + after if x["status"] != 200 or not (x["text"] or "").strip()]
    assert len(rows) >= 24 and not bad, bad[:3]
    assert {store.reply(x["id"])["adapter"] for x in after} == {label}
    assert str(champion_dir) in {store.reply(x["id"])["adapter"] for x in rows}  # customers were served during the round
    store.close()
