"""The continuous-batching scheduler against the static reference, `fastdecode.decode`.

Greedy rows must give decode's very tokens whatever joins or leaves the batch around them;
seeded sampled rows must give what decode gives that request alone; a learned prefix,
int8 weights and prefix-cache hits must not change the tokens.
"""

from __future__ import annotations

import pytest
import torch

from endcloud.runtime import fastdecode as fd
from endcloud.runtime.scheduler import BLOCK, PrefixCache, StepRequest, Scheduler, generate


@pytest.fixture(scope="module")
def model(tiny_base_dir):
    from endcloud.runtime.model import EndModel

    torch.set_num_threads(1)
    return EndModel.load(tiny_base_dir)


@pytest.fixture(scope="module")
def prompts(model):
    qs = ["几天发货？", "可以用优惠券吗？", "Do you ship today?", "How do I return this towel? It is too small for me.",
          "在吗", "退货运费谁出？我买了三条毛巾，有一条坏了。"]
    return [model.prompt_ids([{"role": "user", "content": q}]) for q in qs]


def reference(w, prompts, *, prefix=None, stop_ids=(), **kw):
    kw = {"max_new_tokens": 12, "temperature": 0.0, "top_p": 1.0} | kw
    return fd.decode(fd.FastRunner(w, prefix), prompts, stop_ids=list(stop_ids), generator=torch.Generator(), **kw)


def test_greedy_equals_decode_with_rows_joining_and_leaving(model, prompts):
    w = model.variant.weights
    ref = reference(w, prompts)
    # 6 prompts on 2 rows, prefilled 5 tokens at a time: rows join mid-batch and prefill in chunks
    st = Scheduler(w, stop_ids=[], max_batch=2, prefill_chunk=5)
    toks, lps, ended = generate(st, prompts, max_new_tokens=12)
    assert toks == ref[0]
    assert ended == ref[2] == [False] * len(prompts)
    for a, b in zip(lps, ref[1]):
        assert a == pytest.approx(b, abs=1e-4)
    assert st.stats.admitted == len(prompts) and st.stats.prefills > len(prompts)  # chunked
    assert 1 < st.stats.occupancy <= 2


def test_a_request_joins_a_running_batch_and_a_short_one_leaves_early(model, prompts):
    w = model.variant.weights
    st = Scheduler(w, stop_ids=[], max_batch=4)
    long_, short = StepRequest(prompts[0], 10), StepRequest(prompts[1], 2)
    st.add(long_), st.add(short)
    st.step(), st.step()
    assert short.done and len(short.tokens) == 2 and not long_.done  # left at once, the other runs on
    assert len(st.decoding) == 1
    late = StepRequest(prompts[2], 3)
    st.add(late)
    mixed = st.stats.mixed
    st.step()
    # joined: its prompt rode the running row's decode step (one forward), its first token sampled there
    assert st.stats.mixed == mixed + 1 and len(late.tokens) == 1 and len(st.decoding) == 2
    st.step()
    assert len(late.tokens) == 2
    while st.busy:
        st.step()
    for req, p in ((long_, prompts[0]), (short, prompts[1]), (late, prompts[2])):
        assert req.tokens == reference(w, [p], max_new_tokens=req.max_new_tokens)[0][0]


def test_per_row_settings(model, prompts):
    w = model.variant.weights
    reqs = [StepRequest(prompts[0], 5), StepRequest(prompts[1], 9, 0.8, 0.9, seed=7),
            StepRequest(prompts[2], 7, 1.3, 1.0, seed=3), StepRequest(prompts[3], 4, 0.5, 0.3, seed=11)]
    st = Scheduler(w, stop_ids=[], max_batch=4)
    for r in reqs:
        st.add(r)
    while st.busy:
        st.step()
    assert [len(r.tokens) for r in reqs] == [5, 9, 7, 4]
    for r in reqs:  # each as decode gives that request alone, with its own seeded generator
        ref = fd.decode(fd.FastRunner(w), [r.prompt], max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                        top_p=r.top_p, stop_ids=[], generator=torch.Generator().manual_seed(r.seed or 0))
        assert r.tokens == ref[0][0]


def test_seeded_reply_does_not_depend_on_the_batch(model, prompts):
    w = model.variant.weights
    alone = generate(Scheduler(w, stop_ids=[]), prompts[:1], max_new_tokens=10, temperature=0.9, top_p=0.8, seed=5)[0]
    st = Scheduler(w, stop_ids=[], max_batch=3)
    for p in prompts[1:4]:
        st.add(StepRequest(p, 10, 0.7, 0.95))  # unseeded neighbours
    st.step()
    mine = StepRequest(prompts[0], 10, 0.9, 0.8, seed=5)
    st.add(mine)
    while st.busy:
        st.step()
    assert mine.tokens == alone[0]


@pytest.mark.parametrize("vocab", [600, 5000])
@pytest.mark.parametrize("peaked", ["flat", "peaked", "mixed"])
def test_sample_rows_is_sample_per_row(vocab, peaked):
    """Each row: fastdecode.sample on that row alone with its generator (top-k + widening
    for large vocabularies, one sort for small ones; flat logits force the widening, peaked
    ones keep the nucleus in the first 32 candidates), and the generators advance alike."""
    from endcloud.runtime.scheduler import _Row, sample_rows

    g = torch.Generator().manual_seed(vocab)
    scale = {"flat": [0.5] * 6, "peaked": [8.0] * 6, "mixed": [8.0, 0.5, 8.0, 0.5, 3.0, 8.0]}[peaked]
    logits = torch.randn(6, vocab, generator=g) * torch.tensor(scale)[:, None]
    settings = [(0.0, 1.0), (0.7, 0.8), (0.7, 0.8), (1.0, 1.0), (0.5, 0.3), (0.7, 0.8)]
    rows = [_Row(StepRequest([1], 1, t, p, seed=i), torch.Generator().manual_seed(i), 0, 0)
            for i, (t, p) in enumerate(settings)]
    refs = [torch.Generator().manual_seed(i) for i in range(len(settings))]
    for _ in range(2):  # twice: the second draw shows each generator advanced as sample's
        toks, lps = sample_rows(logits, rows)
        for i, (t, p) in enumerate(settings):
            tok, lp = fd.sample(logits[i:i + 1], t, p, refs[i])
            assert toks[i] == int(tok[0]) and lps[i] == pytest.approx(float(lp[0]), abs=1e-6)


def test_unseeded_rows_draw_from_the_nucleus():
    """Unseeded rows share one generator and draw over the first candidates only (no draw is
    promised to them): still exactly the top-p distribution, renormalised over the nucleus."""
    from endcloud.runtime.scheduler import _Row, sample_rows

    vocab, top_p = 5000, 0.8
    logits = torch.full((16, vocab), -10.0)
    logits[:, 7], logits[:, 3], logits[:, 11] = 2.0, 1.0, 0.0  # p ~ .665 .245 .090: nucleus {7, 3}
    shared = torch.Generator().manual_seed(0)
    rows = [_Row(StepRequest([1], 1, 1.0, top_p), shared, 0, 0) for _ in range(16)]
    counts = torch.zeros(vocab)
    for _ in range(200):
        toks, _ = sample_rows(logits, rows)
        counts += torch.bincount(torch.tensor(toks), minlength=vocab)
    assert set(counts.nonzero().view(-1).tolist()) == {3, 7}  # never outside the nucleus
    p7 = torch.softmax(logits[0], -1)[7] / torch.softmax(logits[0], -1)[[7, 3]].sum()
    assert float(counts[7] / counts.sum()) == pytest.approx(float(p7), abs=0.03)  # 3,200 draws: sd ~0.008


def test_stop_token_ends_its_row_only(model, prompts):
    w = model.variant.weights
    free = reference(w, prompts[:2])[0]
    stop = free[0][3]  # what the first row generates at its 4th step
    ref = reference(w, prompts[:2], stop_ids=[stop])
    toks, lps, ended = generate(Scheduler(w, stop_ids=[stop]), prompts[:2], max_new_tokens=12)
    assert toks == ref[0] and ended == ref[2]
    assert ended[0] and toks[0] == free[0][: free[0].index(stop)]
    assert len(lps[0]) == len(toks[0]) + 1  # the stop token's log-prob counts (confidence)


def test_prefix_cache_hits_give_the_same_tokens(model):
    w = model.variant.weights
    system = "Shop knowledge: towels are pure cotton, 20x20 cm; we ship with ZTO before 4 pm; returns within 7 days."
    ps = [model.prompt_ids([{"role": "system", "content": system}, {"role": "user", "content": q}])
          for q in ("几天发货？", "Can I return it?", "有优惠吗")]
    assert min(len(p) for p in ps) > 3 * BLOCK
    ref = reference(w, ps)
    cache = PrefixCache(1 << 24)
    st = Scheduler(w, stop_ids=[], max_batch=1, prefix_cache=cache)  # one row: each prompt after the previous
    toks, _, _ = generate(st, ps, max_new_tokens=12)
    assert toks == ref[0]
    assert st.stats.cached_tokens >= 2 * 2 * BLOCK  # the 2nd and 3rd prompts reused the system part
    assert len(cache) > 0 and cache.bytes <= cache.max_bytes
    again, _, _ = generate(st, ps, max_new_tokens=12)  # now whole prompts (but their last token) hit
    assert again == ref[0]


def test_prefix_cache_stays_within_its_budget():
    cache = PrefixCache(3 * 1000)
    for i in range(10):
        cache.put(bytes([i]), torch.zeros(250))  # 1000 bytes each
    assert len(cache) == 3 and cache.bytes == 3000
    assert bytes([9]) in cache and bytes([0]) not in cache  # least recently used went first


def test_learned_prefix_kv_equals_decode(model, prompts):
    w = model.variant.weights
    g = torch.Generator().manual_seed(0)
    prefix = tuple((torch.randn(1, w.n_kv, 5, w.head_dim, generator=g), torch.randn(1, w.n_kv, 5, w.head_dim, generator=g))
                   for _ in w.layers)
    ref = reference(w, prompts[:3], prefix=prefix)
    toks, _, _ = generate(Scheduler(w, stop_ids=[], prefix=prefix, max_batch=2, prefill_chunk=7), prompts[:3],
                          max_new_tokens=12)
    assert toks == ref[0]


def test_int8_weights(model, prompts):
    wq = model.variant.weights.quantized("int8")
    ref = reference(wq, prompts[:3])
    assert generate(Scheduler(wq, stop_ids=[]), prompts[:3], max_new_tokens=12)[0] == ref[0]


def test_cancel_frees_the_row(model, prompts):
    st = Scheduler(model.variant.weights, stop_ids=[], max_batch=1)
    a, b = StepRequest(prompts[0], 50), StepRequest(prompts[1], 3)
    st.add(a), st.add(b)
    st.step()
    assert len(a.tokens) >= 1 and not b.tokens  # one row: b waits
    a.cancel()
    events = st.step()
    assert a.done and not a.ended and any(e.request is a and e.finished for e in events)
    while st.busy:
        st.step()
    assert len(b.tokens) == 3


def test_requests_that_cannot_run_are_refused(model, prompts):
    st = Scheduler(model.variant.weights, stop_ids=[], max_len=64)
    with pytest.raises(ValueError, match="no tokens"):
        st.add(StepRequest([], 4))
    with pytest.raises(ValueError, match="positions"):
        st.add(StepRequest(prompts[0], 60))
    with pytest.raises(ValueError, match="max_new_tokens"):
        st.add(StepRequest(prompts[0], 0))
