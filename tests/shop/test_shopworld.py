"""The synthetic shop: deterministic, bilingual, every intent, facts grounded in the pack, PII, streaming."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import psutil
import pytest

from endcloud.corpus.shopworld import INTENTS, PROBES, generate_shop, norm
from endcloud.errors import ConfigError
from endcloud.kb import ShopPack

PACK_FILES = ["shop.yaml", "catalog.csv", "faq.jsonl", "policies.md", "orders.csv", "chats/chats.jsonl", "chats/eval.jsonl"]


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _knowledge(folder: Path) -> str:
    """The pack's knowledge files as one normalised text (what a fact must be found in)."""
    return norm("\n".join((folder / f).read_text(encoding="utf-8") for f in ("catalog.csv", "faq.jsonl", "policies.md", "orders.csv")))


def _replies(sessions):
    for s in sessions:
        for m in s["messages"]:
            if m["role"] == "assistant":
                yield m


@pytest.mark.parametrize("lng", ["zh", "en"])
def test_same_seed_same_bytes_other_seed_differs(tmp_path, lng):
    a = generate_shop(tmp_path / "a", lang=lng, sessions=300, products=12, seed=3)
    b = generate_shop(tmp_path / "b", lang=lng, sessions=300, products=12, seed=3)
    c = generate_shop(tmp_path / "c", lang=lng, sessions=300, products=12, seed=4)
    da, db, dc = _digests(tmp_path / "a"), _digests(tmp_path / "b"), _digests(tmp_path / "c")
    assert da == db
    assert a.to_json() | {"out_dir": ""} == b.to_json() | {"out_dir": ""}
    assert set(da) == set(dc)
    assert da["chats/chats.jsonl"] != dc["chats/chats.jsonl"]
    assert da["catalog.csv"] != dc["catalog.csv"]
    assert c.sessions == 300


def test_worker_processes_write_the_same_bytes(tmp_path):
    generate_shop(tmp_path / "one", lang="zh", sessions=2500, products=10, seed=1, eval_per_intent=1)
    generate_shop(tmp_path / "two", lang="zh", sessions=2500, products=10, seed=1, eval_per_intent=1, workers=2)
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")


def test_layout_and_pack_loads(pack_dir, summary, lang):
    for f in PACK_FILES:
        assert (pack_dir / f).is_file(), f
    assert (pack_dir / "chats" / "jddc.txt").is_file() == (lang == "zh")
    pack = ShopPack.load(pack_dir)
    assert pack.language == lang and pack.currency == ("CNY" if lang == "zh" else "USD")
    assert len(pack.products) == 40 and len(pack.orders) == summary.orders
    assert set(pack.policies) == {"shipping", "delivery", "returns", "refunds", "coupons", "invoices", "after-sales"}
    assert pack.products[0].sku == "520401029636"  # the paper's bare-number probe is a product
    # Headings are in the shop's language.
    assert bool(re.search(r"[\u4e00-\u9fff]", pack.policy_titles["shipping"])) == (lang == "zh")


def test_every_intent_in_chats_and_eval(sessions, eval_rows, summary):
    seen = Counter(m["intent"] for m in _replies(sessions))
    assert set(seen) == set(INTENTS)
    assert dict(seen) == summary.intents
    assert {r["intent"] for r in eval_rows} == set(INTENTS)
    assert len(sessions) == summary.sessions


def test_paper_probes_in_eval(eval_rows, lang, pack_dir):
    probes = [r for r in eval_rows if r.get("probe")]
    assert [(r["intent"], r["query"]) for r in probes] == PROBES[lang]
    assert {r["intent"] for r in probes} == {"greeting", "courier", "bare_number", "coupon", "complaint", "ship_today"}
    by_intent = {r["intent"]: r for r in probes}
    assert by_intent["greeting"]["facts"] == []
    assert by_intent["courier"]["facts"] == (["中通"] if lang == "zh" else ["ZTO Express"])
    assert by_intent["bare_number"]["query"] == "520401029636"
    assert set(by_intent["bare_number"]["facts"]) == ({"20x20cm", "纯棉"} if lang == "zh" else {"20x20cm", "pure cotton"})
    if lang == "en":
        assert by_intent["complaint"]["query"].startswith("This is so frustrating.")


def test_facts_are_grounded_in_the_pack(pack_dir, sessions, eval_rows):
    knowledge = _knowledge(pack_dir)
    fact_bearing = 0
    for m in _replies(sessions):
        if m["intent"] in ("greeting", "chitchat"):
            assert m["facts"] == []
            continue
        assert m["facts"], m
        fact_bearing += 1
        for fact in m["facts"]:
            assert norm(fact) in knowledge, (fact, m)
    for row in eval_rows:
        assert row["context"] == [] and row["query"]
        for fact in row["facts"]:
            assert norm(fact) in knowledge, (fact, row)
    assert fact_bearing > 1000


def test_correct_replies_state_their_facts_and_wrong_ones_do_not(sessions):
    wrong_with_facts = 0
    for m in _replies(sessions):
        text = norm(m["content"])
        if m["correct"]:
            assert all(norm(f) in text for f in m["facts"]), m
        elif m["facts"]:
            assert not all(norm(f) in text for f in m["facts"]), m
            wrong_with_facts += 1
    assert wrong_with_facts > 100


def test_follow_ups_need_the_conversation(pack_dir, sessions, lang):
    """"这个多少钱？" after a product was named: answerable from the earlier turns plus the pack."""
    from endcloud.kb import KnowledgeBase

    kb = KnowledgeBase(ShopPack.load(pack_dir))
    pronoun = "这个" if lang == "zh" else "this one"
    checked = 0
    for s in sessions:
        msgs = s["messages"]
        for i in range(1, len(msgs), 2):
            q, a = msgs[i - 1]["content"], msgs[i]
            if a["intent"] not in ("price", "stock", "product_attr") or pronoun not in q or kb.product(q):
                continue
            earlier = [kb.product(m["content"]) for m in msgs[: i - 1] if m["role"] == "user"]
            product = next(p for p in reversed(earlier) if p is not None)
            values = {product.price_text, str(product.stock), *product.attrs.values(), *product.attrs.get("colour", "").split("/")}
            if product.stock == 0:
                values.add("缺货" if lang == "zh" else "out of stock")
            assert set(a["facts"]) <= values, (q, a["facts"], product)
            checked += 1
    assert checked > 50


def test_wrong_rate_is_honoured(summary, sessions):
    replies = list(_replies(sessions))
    rate = sum(not m["correct"] for m in replies) / len(replies)
    assert 0.15 <= rate <= 0.21
    assert abs(rate - summary.wrong_rate) < 1e-9


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_wrong_rate_is_configurable(tmp_path, rate):
    s = generate_shop(tmp_path, lang="en", sessions=400, products=10, seed=1, wrong_rate=rate, eval_per_intent=1)
    assert abs(s.wrong_rate - rate) < 0.05


PII = {
    "zh": {
        "phone": re.compile(r"(?<![\d\w])(?:\+86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)"),
        "address": re.compile(r"[\u4e00-\u9fff]+市[\u4e00-\u9fff]+区[\u4e00-\u9fff]+(?:路|大道)\d+号"),
        "email": re.compile(r"[\w.]+@[\w.]+\.com"),
        "order": re.compile(r"(?<!\d)\d{18}(?!\d)"),
    },
    "en": {
        "phone": re.compile(r"(?:\(\d{3}\) |\+1 \d{3} |\d{3}[-.])555[-. ]0\d{3}"),
        "address": re.compile(r"\d+ [A-Z][a-z]+ (?:St|Ave|Rd|Ln|Dr|Blvd),(?: Apt \d+,)? [A-Z][a-z]+, [A-Z]{2} \d{5}"),
        "email": re.compile(r"[a-z]+\.[a-z]+\d+@[a-z]+\.com"),
        "order": re.compile(r"\b\d{3}-\d{7}-\d{7}\b"),
    },
}


def test_customer_messages_carry_pii_and_agents_do_not_leak_it(sessions, lang):
    users = [m["content"] for s in sessions for m in s["messages"] if m["role"] == "user"]
    for kind, rx in PII[lang].items():
        hits = sum(1 for u in users if rx.search(u))
        assert hits >= 20, (kind, hits)
    phones = [m for u in users for m in PII[lang]["phone"].findall(u)]
    assert len({re.sub(r"\d", "9", p) for p in phones}) >= 3  # varied formats, as real customers type them
    agents = [m["content"] for m in _replies(sessions)]
    assert not any(PII[lang]["email"].search(a) or PII[lang]["phone"].search(a) for a in agents)


def test_jddc_file_is_seven_tab_fields_matching_the_jsonl(packs):
    folder = packs["zh"][0]

    with open(folder / "chats" / "chats.jsonl", encoding="utf-8") as f:
        jsonl_ids = [json.loads(line)["id"] for line in f]
    order: list[str] = []
    speakers: list[tuple[str, str]] = []
    with open(folder / "chats" / "jddc.txt", encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            assert len(fields) == 7, line
            sid, uid, waiter, transfer, repeat, sku, content = fields
            assert re.fullmatch(r"[0-9a-f]{32}", sid) and uid.startswith("USERID_")
            assert waiter in ("0", "1") and transfer == "0" and repeat == "0" and content
            assert sku == "nan" or sku.isdigit()
            if not order or order[-1] != sid:
                order.append(sid)
            speakers.append((sid, waiter))
    assert order == jsonl_ids
    repeats = sum(1 for a, b in zip(speakers, speakers[1:]) if a == b)
    assert repeats > 100  # consecutive lines of one speaker, as in real JDDC
    with open(folder / "catalog.csv", encoding="utf-8") as f:
        skus = {row["sku"] for row in csv.DictReader(f)}
    with open(folder / "chats" / "jddc.txt", encoding="utf-8") as f:
        assert {line.split("\t")[5] for line in f} - {"nan"} <= skus


def test_streaming_keeps_memory_bounded(tmp_path):
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    calls = []

    def progress(n: int) -> None:
        calls.append(n)
        peak[0] = max(peak[0], proc.memory_info().rss)

    s = generate_shop(tmp_path, lang="zh", sessions=20_000, products=40, seed=2, progress=progress, eval_per_intent=1)
    assert s.sessions == 20_000 and calls[-1] == 20_000 and len(calls) >= 10
    size = (tmp_path / "chats" / "chats.jsonl").stat().st_size
    assert size > 5_000_000  # the corpus on disk is several MB...
    assert peak[0] - base < 40_000_000  # ...while the process grew by far less than a copy of it would need


def test_refuses_non_empty_out_and_bad_args(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--force"):
        generate_shop(tmp_path, sessions=10)
    s = generate_shop(tmp_path, sessions=10, force=True)
    assert (tmp_path / "keep.txt").read_text() == "mine" and s.sessions == 10
    with pytest.raises(ConfigError, match="--lang.*'fr'"):
        generate_shop(tmp_path / "x", lang="fr")
    with pytest.raises(ConfigError, match="--wrong-rate"):
        generate_shop(tmp_path / "y", wrong_rate=1.5)
    with pytest.raises(ConfigError, match="--products"):
        generate_shop(tmp_path / "z", products=0)


def test_many_products_stay_unique(tmp_path):
    generate_shop(tmp_path, lang="en", sessions=5, products=300, seed=5, eval_per_intent=1)
    pack = ShopPack.load(tmp_path)
    assert len({p.sku for p in pack.products}) == len({p.name for p in pack.products}) == 300
