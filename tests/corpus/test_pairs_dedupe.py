"""Pairs have exactly the contract's shape; the Bloom-filter dedupe keeps memory fixed."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from endcloud.corpus import BloomFilter, build_pairs, pair_lines
from endcloud.records import Dialogue, Pair, Turn

KEYS = ["id", "source", "session", "lang", "context", "query", "response"]


def _dialogue(n_exchanges: int = 5, **meta) -> Dialogue:
    turns = []
    for i in range(n_exchanges):
        turns.append(Turn("user", f"问题{i} \"引号\"\n换行"))
        turns.append(Turn("assistant", f"回答{i}", dict(meta) if i == 1 else {}))
    return Dialogue(id="s\"1", source="jddc", turns=turns, lang="zh")


def test_pairs_shape_and_context_cap():
    d = _dialogue(6)
    pairs = build_pairs(d, max_context_turns=3)
    assert len(pairs) == 6
    p = pairs[4]
    assert p.query == "问题4 \"引号\"\n换行" and p.response == "回答4"
    assert [(t.role, t.text) for t in p.context] == [("assistant", "回答2"), ("user", d.turns[6].text), ("assistant", "回答3")]
    assert pairs[0].context == [] and pairs[0].id == 'jddc:s"1:1'
    assert list(p.to_json()) == KEYS
    assert all(set(c) == {"role", "text"} for c in p.to_json()["context"])


def test_fast_lines_equal_pair_to_json():
    d = _dialogue(5, facts=["20", "9.90"], intent="stock")
    pairs = build_pairs(d, max_context_turns=2)
    lines, exact, near = pair_lines(d, max_context_turns=2)
    assert lines == [json.dumps(p.to_json(), ensure_ascii=False) for p in pairs]
    assert len(exact) == len(near) == len(lines) == 5
    parsed = json.loads(lines[1])
    assert list(parsed) == KEYS + ["facts", "intent"]
    assert parsed["facts"] == ["20", "9.90"] and parsed["intent"] == "stock"
    assert Pair.from_json(parsed).to_json() == parsed


def test_assistant_without_query_counted():
    d = Dialogue(id="x", source="csv", turns=[Turn("assistant", "欢迎"), Turn("user", "在吗"), Turn("assistant", "在的")])
    stats: Counter = Counter()
    lines, _, _ = pair_lines(d, stats=stats)
    assert len(lines) == 1 and stats["assistant_without_query"] == 1
    assert json.loads(lines[0])["context"] == [{"role": "assistant", "text": "欢迎"}]


def test_duplicate_keys():
    # Texts as the pipeline hands them over: already NFKC (full-width punctuation is ASCII).
    d = Dialogue(id="x", source="csv", turns=[
        Turn("user", "在吗"), Turn("assistant", "在的,亲!"),
        Turn("user", "在吗"), Turn("assistant", "在的,亲!"),   # exact duplicate
        Turn("user", "在吗?"), Turn("assistant", "在的 亲。"),   # near duplicate only
        Turn("user", "在吗"), Turn("assistant", "不在"),         # new
    ])
    _, exact, near = pair_lines(d)
    assert exact[0] == exact[1] and len(set(exact)) == 3
    assert near[0] == near[1] == near[2] and len(set(near)) == 2


def test_bloom_filter_in_batch_and_across_batches():
    bf = BloomFilter(capacity=1000, fp_rate=1e-3)
    a = np.array([5, 7, 5, 9], dtype=np.uint64)
    assert bf.check_and_add(a).tolist() == [True, True, False, True]
    assert bf.check_and_add(np.array([9, 11], dtype=np.uint64)).tolist() == [False, True]
    assert bf.added == 4


def test_bloom_filter_false_positive_rate_and_fixed_size():
    rng = np.random.default_rng(0)
    bf = BloomFilter(capacity=20_000, fp_rate=1e-2)
    size = bf.nbytes
    for _ in range(4):
        bf.check_and_add(rng.integers(0, 2**63, 5000, dtype=np.uint64))
    assert bf.nbytes == size  # never grows
    fresh = rng.integers(0, 2**63, 20_000, dtype=np.uint64)
    fp = bf.contains(fresh).mean()
    assert 0.002 < fp < 0.03  # designed for 1% at capacity
    assert 0.002 < bf.estimated_fp_rate() < 0.03
    with pytest.raises(ValueError, match="fp_rate"):
        BloomFilter(capacity=10, fp_rate=1.5)


def test_bloom_filter_matches_a_set_when_far_below_capacity():
    # Repeats inside and across batches, in order: exactly what a set says (no false positives
    # at this fill, and never a false negative).
    rng = np.random.default_rng(1)
    bf = BloomFilter(capacity=1_000_000, fp_rate=1e-6)
    seen: set[int] = set()
    for _ in range(30):
        keys = rng.integers(0, 5_000, 700).astype(np.uint64)
        want = []
        for k in keys.tolist():
            want.append(k not in seen)
            seen.add(k)
        assert bf.check_and_add(keys).tolist() == want
    assert bf.added == len(seen)


def test_bloom_filter_keys_sharing_a_block_all_stay_in():
    # Few blocks, many keys in one batch: many new keys share a block, and none may be lost.
    bf = BloomFilter(capacity=20, fp_rate=0.5)
    keys = np.arange(1, 400, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    bf.check_and_add(keys)
    assert bf.contains(keys).all()
    assert bf.nblocks < 10
