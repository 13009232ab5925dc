"""The varied shops: valid packs, deterministic, diverse, questions grounded in the pack's files,
no held-out test domain."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from endcloud.corpus.shopworld import norm
from endcloud.corpus.shopworld.varied import KINDS, OUT_OF_STOCK, clean, random_pack, random_packs
from endcloud.corpus.shopworld.varied_lexicon import ATTRS, DOMAINS, FACTS, GROUPS, HELD_OUT_DOMAINS, HELD_OUT_MARKERS
from endcloud.errors import ConfigError
from endcloud.kb import ShopPack

HANZI = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """300 packs: 200 zh, 100 en (~2 s)."""
    root = tmp_path_factory.mktemp("varied")
    shops = random_packs(root, n=300, seed=11, langs=("zh", "zh", "en"))
    return [(s, ShopPack.load(s.out_dir)) for s in shops]


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def check_question(q: dict, pack: ShopPack) -> None:
    """Every expected fact is where `ref` says the answer comes from."""
    kind, expect, ref = q["kind"], q["expect"], q["ref"]
    assert kind in KINDS
    assert 1 <= len(q["turns"]) <= 3 and all(isinstance(t, str) and t.strip() for t in q["turns"]), q
    products = {p.sku: p for p in pack.products}
    facts = [norm(f) for f in expect]
    if kind in ("greeting", "thanks", "unknown"):
        assert expect == [], q
        assert ref is None or (kind == "unknown" and ref in products), q
        return
    assert expect and all(facts), q
    if kind in ("price", "stock", "attr", "product"):
        p = products[ref]
        if kind == "price":
            assert expect == [p.price_text], q
        elif kind == "stock":
            assert expect == ([str(p.stock)] if p.stock > 0 else [OUT_OF_STOCK[pack.language]]), q
        elif kind == "attr":
            cells = norm(" ".join(p.attrs.values()))
            assert all(f in cells for f in facts), q
        else:
            assert expect == [p.name], q
        return
    if kind == "policy":
        key = next(k for k, title in pack.policy_titles.items() if title == ref)
        where = norm(pack.policies[key])
    elif kind == "faq":
        where = norm(pack.faq[ref][1])
    else:
        where = norm(" ".join(pack.orders[ref].values()))
    assert all(f in where for f in facts), (q, where)


def test_packs_load_and_every_question_is_grounded(many):
    kinds: Counter[str] = Counter()
    for shop, pack in many:
        assert pack.language == shop.lang and pack.name == shop.name
        assert 5 <= len(pack.products) <= 24 and [p.sku for p in pack.products] == shop.skus
        assert 4 <= len(pack.policies) <= 8 and 4 <= len(pack.faq) <= 10 and pack.orders
        on_disk = [json.loads(line) for line in (Path(shop.out_dir) / "questions.jsonl").read_text(encoding="utf-8").splitlines()]
        assert on_disk == shop.questions and len(on_disk) == 40
        knowledge = norm(pack.knowledge_text())
        for q in shop.questions:
            check_question(q, pack)
            if not (q["kind"] == "stock" and q["expect"] == [OUT_OF_STOCK[shop.lang]]):
                assert all(norm(f) in knowledge for f in q["expect"]), q
            kinds[q["kind"]] += 1
        # Every kind a pack can answer is asked at least once.
        has_faq_only = any(q["kind"] == "faq" for q in shop.questions)
        assert {q["kind"] for q in shop.questions} >= set(KINDS) - ({"faq"} if not has_faq_only else set())
    assert set(kinds) == set(KINDS)


def test_unknown_questions_name_nothing_the_pack_has(many):
    checked = 0
    for shop, pack in many:
        for q in shop.questions:
            if q["kind"] != "unknown" or q["ref"] is not None:
                continue
            said = norm(" ".join(q["turns"]))
            assert not any(norm(p.name) in said or norm(p.sku) in said for p in pack.products), q
            assert not any(norm(oid) in said for oid in pack.orders), q
            checked += 1
    assert checked > 500


def test_policy_and_faq_questions_are_paraphrases(many):
    """A customer never asks with the pack's own FAQ question or policy sentence, word for word."""
    bare = lambda t: re.sub(r"[\s？?。！!，,.]", "", t.lower())  # noqa: E731
    for shop, pack in many:
        faq_qs = {bare(q) for q, _ in pack.faq}
        policy_text = bare(" ".join(pack.policies.values()))
        for q in shop.questions:
            if q["kind"] in ("policy", "faq"):
                asked = bare(q["turns"][-1])
                # A keyword ("运费？") may occur in a sentence; a whole question may not.
                assert asked not in faq_qs and (len(asked) < 10 or asked not in policy_text), q


def test_follow_ups_lean_on_earlier_turns(many):
    """Multi-turn questions exist in both languages, including pronoun follow-ups and product switches."""
    turns = Counter(len(q["turns"]) for s, _ in many for q in s.questions)
    assert turns[2] > 2000 and turns[3] > 100
    last = [(s.lang, q["turns"][-1]) for s, _ in many for q in s.questions if len(q["turns"]) > 1]
    assert sum(1 for lang, t in last if lang == "zh" and re.match(r"^(那)?(它|这个|这款)", t)) > 50
    assert sum(1 for lang, t in last if lang == "zh" and t.rstrip("？?").endswith("呢")) > 50
    assert sum(1 for lang, t in last if lang == "en" and re.search(r"\b(it|this one|that one)\b", t, re.I)) > 30
    assert sum(1 for lang, t in last if lang == "en" and re.match(r"^(what about|and|how about|same question)", t, re.I)) > 30


def test_diversity(many):
    zh = [(s, p) for s, p in many if s.lang == "zh"]
    assert len(zh) == 200
    chars: set[str] = set()
    for s, _ in zh:
        for f in ("shop.yaml", "catalog.csv", "faq.jsonl", "policies.md", "orders.csv", "questions.jsonl"):
            chars.update(HANZI.findall((Path(s.out_dir) / f).read_text(encoding="utf-8")))
    assert len(chars) >= 1500
    assert len({s.domain for s, _ in many}) >= 12
    names = [p.name for _, pack in many for p in pack.products]
    assert len(set(names)) >= 0.98 * len(names)
    assert len({s.name for s, _ in many}) == len(many)
    headers = Counter(h for s, _ in many for h in s.columns)
    assert len(headers) >= 60
    headings = {h for s, _ in many for h in s.policy_headings}
    assert len(headings) >= 60
    currencies = {s.currency for s, _ in many}
    assert {"CNY", "USD", "GBP", "EUR"} <= currencies
    first_turns = {q["turns"][-1] for s, _ in many for q in s.questions if q["kind"] == "policy"}
    assert len(first_turns) >= 400
    stock = [p.stock for _, pack in many for p in pack.products]
    assert 0.05 < stock.count(0) / len(stock) < 0.3
    prices = [p.price for _, pack in many for p in pack.products]
    assert min(prices) < 5 and max(prices) > 2000 and any(p != int(p) for p in prices)


def test_held_out_domains_are_absent(many):
    assert not set(DOMAINS) & set(HELD_OUT_DOMAINS)
    for d in DOMAINS.values():
        for zh, en in d["nouns"]:
            assert "茶" not in zh and clean(zh) and clean(en)
    assert "tea" not in {w for d in DOMAINS.values() for _, en in d["nouns"] for w in en.lower().split()}
    for _, pack in many:
        for p in pack.products:
            text = " ".join([p.name, *p.attrs.values()])
            assert clean(text), text
    assert not clean("Sunny Tea Set") and not clean("玫瑰乌龙") and clean("Steak knife")
    assert all(m for m in HELD_OUT_MARKERS["zh"])


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_same_seed_same_bytes(tmp_path, lang):
    a = random_pack(tmp_path / "a", seed=5, lang=lang)
    b = random_pack(tmp_path / "b", seed=5, lang=lang)
    c = random_pack(tmp_path / "c", seed=6, lang=lang)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert a.questions == b.questions and a.to_json() | {"out_dir": ""} == b.to_json() | {"out_dir": ""}
    assert _digests(tmp_path / "a")["catalog.csv"] != _digests(tmp_path / "c")["catalog.csv"]
    assert set(_digests(tmp_path / "a")) == {"shop.yaml", "catalog.csv", "faq.jsonl", "policies.md", "orders.csv", "questions.jsonl"}


def test_random_packs_is_deterministic_and_alternates_languages(tmp_path):
    one = random_packs(tmp_path / "one", n=6, seed=3)
    two = random_packs(tmp_path / "two", n=6, seed=3)
    other = random_packs(tmp_path / "other", n=6, seed=4)
    assert [s.lang for s in one] == ["zh", "en"] * 3
    assert [Path(s.out_dir).name for s in one] == [f"{i:05d}-{'zh' if i % 2 == 0 else 'en'}" for i in range(6)]
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")
    assert _digests(tmp_path / "one") != _digests(tmp_path / "other")
    assert len({s.seed for s in one + other}) == 12


def test_lexicon_templates_state_their_slots():
    """A policy sentence or FAQ answer that dropped a slot would leave its fact ungrounded."""
    for key, fact in FACTS.items():
        for lang in ("zh", "en"):
            spec = fact[lang]
            for template in (*spec["state"], *spec["faq_a"]):
                assert all("{" + slot + "}" in template for slot in fact["slots"]), (key, lang, template)
            assert len(spec["ask"]) >= 3 and len(spec["state"]) >= 3, key
    assert sorted(f for g in GROUPS.values() for f in g["facts"]) == sorted(FACTS)
    for key, attr in ATTRS.items():
        assert all("{name}" in t for t in (*attr["zh"], *attr["en"])), key


def test_bad_arguments_fail_naming_the_value(tmp_path):
    with pytest.raises(ConfigError, match="'fr'"):
        random_pack(tmp_path / "x", seed=1, lang="fr")
    with pytest.raises(ConfigError, match="-1"):
        random_packs(tmp_path / "y", n=-1, seed=1)
    with pytest.raises(ConfigError, match="langs"):
        random_packs(tmp_path / "z", n=2, seed=1, langs=("zh", "de"))


def test_invented_nouns_name_products_no_lexicon_knows(tmp_path):
    """The reader recipe's option: a product noun no shop's lexicon holds, so a name can only be
    copied; the pack stays grounded, a share of 0 changes nothing, the same seed the same bytes."""
    lexicon = {w for d in DOMAINS.values() for pair in d["nouns"] for w in (norm(pair[0]), norm(pair[1]))}
    invented = total = 0
    for i, lang in enumerate(("zh", "en") * 6):
        shop = random_pack(tmp_path / f"i{i}", seed=100 + i, lang=lang, invented_nouns=1.0)
        pack = ShopPack.load(shop.out_dir)
        for q in shop.questions:
            check_question(q, pack)
        for p in pack.products:
            total += 1
            invented += not any(w and w in norm(p.name) for w in lexicon)
    assert total > 50 and invented / total > 0.9, (invented, total)
    random_pack(tmp_path / "plain", seed=5, lang="zh")
    random_pack(tmp_path / "zero", seed=5, lang="zh", invented_nouns=0.0)
    random_pack(tmp_path / "half1", seed=5, lang="zh", invented_nouns=0.5)
    random_pack(tmp_path / "half2", seed=5, lang="zh", invented_nouns=0.5)
    assert _digests(tmp_path / "plain") == _digests(tmp_path / "zero")
    assert _digests(tmp_path / "half1") == _digests(tmp_path / "half2") != _digests(tmp_path / "plain")
    with pytest.raises(ConfigError, match="1.5"):
        random_pack(tmp_path / "bad", seed=1, lang="en", invented_nouns=1.5)
