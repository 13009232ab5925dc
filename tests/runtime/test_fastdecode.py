"""fastdecode: the lean one-token step equals transformers' own forward and the general
forward (fp32, bf16, int8; Qwen2, Llama, Qwen3), the weight layouts keep shapes and share
the model's memory, and its rotary tables and RMSNorm are transformers' maths."""

from __future__ import annotations

import copy

import pytest
import torch

from endcloud.runtime import fastdecode as fd

PROMPTS = [[5, 9, 13, 21, 34, 55, 89], [7, 11], [3, 1, 4, 1, 5]]  # unequal: left padding is exercised
FORCED = [[10, 20, 30, 40], [50, 60, 70, 80], [90, 100, 110, 120]]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _model(kind: str = "qwen2", dtype=torch.float32, tied: bool = True):
    """A tiny random model whose norms and biases are not at their init values (ones / zeros),
    so a norm weight applied twice, dropped or misplaced changes the logits."""
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=tied)
    cls, cfg = {
        "qwen2": (tf.Qwen2ForCausalLM, lambda: tf.Qwen2Config(**common)),
        "llama": (tf.LlamaForCausalLM, lambda: tf.LlamaConfig(**common)),
        "qwen3": (tf.Qwen3ForCausalLM, lambda: tf.Qwen3Config(head_dim=8, **common)),
    }[kind]
    model = cls(cfg()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model.to(dtype)


def _full_forward(model, r: int) -> torch.Tensor:
    """Logits at the prompt's last token and at each forced token, one row, no cache."""
    ids = torch.tensor([PROMPTS[r] + FORCED[r]])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, len(PROMPTS[r]) - 1:]
    return out.float()


@pytest.mark.parametrize("kind,tied", [("qwen2", True), ("llama", False), ("qwen3", True)])
def test_cached_steps_equal_transformers_forward(kind, tied):
    model = _model(kind, tied=tied)
    ref = copy.deepcopy(model)  # keeps its own parameters: from_model re-points the model's
    fw = fd.FastWeights.from_model(model)
    runner = fd.FastRunner(fw)
    assert runner._lean == (kind != "qwen3")  # Qwen3's q/k norms take the general forward
    steps = fd.forced_logits(runner, PROMPTS, FORCED)
    for r in range(len(PROMPTS)):
        want = _full_forward(ref, r)
        torch.testing.assert_close(steps[r], want, atol=2e-5, rtol=1e-4)
        # the model itself, now reading the fused / re-laid-out storage, is unchanged too
        torch.testing.assert_close(_full_forward(model, r), want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype,quant", [(torch.float32, None), (torch.bfloat16, None), (torch.bfloat16, "int8")])
def test_lean_step_equals_general_forward(dtype, quant):
    fw = fd.FastWeights.from_model(_model("qwen2", dtype))
    if quant:
        fw = fw.quantized(quant)
    lean = fd.FastRunner(fw)
    general = fd.FastRunner(fw)
    general._lean = False  # every step through `_forward`
    a = fd.forced_logits(lean, PROMPTS, FORCED)
    b = fd.forced_logits(general, PROMPTS, FORCED)
    tol = 1e-5 if dtype == torch.float32 else 0.03
    for x, y in zip(a, b):
        assert x.shape == (len(FORCED[0]) + 1, 300)
        scale = y.abs().max()
        assert (x - y).abs().max() <= tol * scale, (x - y).abs().max() / scale


def test_fp32_weights_are_input_major_views_of_the_models_memory():
    model = _model("qwen2", torch.float32)
    fw = fd.FastWeights.from_model(model)
    at, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    ly = fw.layers[0]
    nq, nk = at.q_proj.weight.shape[0], at.k_proj.weight.shape[0]
    assert ly.wqkv.shape == (nq + 2 * nk, 48) and ly.wqkv.t().is_contiguous()
    assert ly.wgu.shape == (2 * 96, 48) and ly.wgu.t().is_contiguous()
    assert ly.wo.t().is_contiguous() and ly.wd.t().is_contiguous() and fw.lm_head.t().is_contiguous()
    # the model's parameters are views into those tensors: laying them out cost no memory
    assert at.q_proj.weight.data_ptr() == ly.wqkv.data_ptr()
    assert at.k_proj.weight.data_ptr() == ly.wqkv[nq:].data_ptr()
    assert mlp.up_proj.weight.data_ptr() == ly.wgu[96:].data_ptr()
    assert at.o_proj.weight.data_ptr() == ly.wo.data_ptr() and mlp.down_proj.weight.data_ptr() == ly.wd.data_ptr()
    assert model.lm_head.weight.data_ptr() == fw.lm_head.data_ptr() == fw.embed.data_ptr()  # tied


def test_bf16_weights_stay_output_major():
    fw = fd.FastWeights.from_model(_model("qwen2", torch.bfloat16))
    ly = fw.layers[0]
    assert ly.wqkv.is_contiguous() and ly.wgu.is_contiguous() and ly.wo.is_contiguous()
    assert fw.lm_head.is_contiguous()


def test_rotary_tables_rotate_q_and_k_as_transformers_does():
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    model = _model("qwen2")
    fw = fd.FastWeights.from_model(model)
    nh, nkv, hd = fw.n_heads, fw.n_kv, fw.head_dim
    pos = torch.tensor([0, 3, 17, 200])
    torch.manual_seed(1)
    q, k, v = torch.randn(4, nh, 1, hd), torch.randn(4, nkv, 1, hd), torch.randn(4, nkv, 1, hd)
    cos, sin = model.model.rotary_emb(q, pos[:, None])
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    table, perm = fw.rot_tables(256)
    width = perm.shape[0]
    row = torch.cat((q.flatten(1), k.flatten(1), v.flatten(1)), 1)  # one fused q|k|v row per position
    cs = table[pos]
    out = row * cs[:, :width] + row[:, perm] * cs[:, width:]
    torch.testing.assert_close(out[:, : nh * hd], q_ref.flatten(1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[:, nh * hd:(nh + nkv) * hd], k_ref.flatten(1), atol=1e-6, rtol=1e-5)
    assert torch.equal(out[:, (nh + nkv) * hd:], v.flatten(1))  # v passes through untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_is_transformers_rmsnorm(dtype):
    model = _model("qwen2", dtype)
    norm = model.model.layers[0].input_layernorm
    torch.manual_seed(2)
    x = (torch.randn(8, 48) * torch.logspace(-3, 1, 8)[:, None]).to(dtype)  # tiny rows: eps matters
    with torch.no_grad():
        want = norm(x)
    got = fd._rms(x, norm.weight, torch.tensor(norm.variance_epsilon), 1.0 / 48)
    assert got.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    else:  # rounding to bf16 at the same point; the fp32 variance may differ in its last bit
        torch.testing.assert_close(got.float(), want.float(), atol=0, rtol=1e-2)


def test_decode_runs_to_the_limit_without_stop_ids_and_reads_logprobs():
    fw = fd.FastWeights.from_model(_model("qwen2"))
    toks, lps, ended = fd.decode(fd.FastRunner(fw), PROMPTS, max_new_tokens=7, temperature=0, top_p=1,
                                 stop_ids=[], generator=torch.Generator())
    assert [len(t) for t in toks] == [7, 7, 7] and [len(x) for x in lps] == [7, 7, 7]
    assert ended == [False, False, False]
    assert all(lp <= 0 for row in lps for lp in row)
    # greedy through the lean step = greedy through the general forward
    general = fd.FastRunner(fw)
    general._lean = False
    toks2, lps2, _ = fd.decode(general, PROMPTS, max_new_tokens=7, temperature=0, top_p=1, stop_ids=[],
                               generator=torch.Generator())
    assert toks2 == toks
    torch.testing.assert_close(torch.tensor(lps2), torch.tensor(lps), atol=1e-5, rtol=1e-5)


def _reference_top_p(logits, temperature, top_p, generator):
    """`sample`'s rule spelled out with torch.sort over the whole vocabulary (no top-k first)."""
    scaled = logits / temperature
    lse = torch.logsumexp(scaled, dim=-1, keepdim=True)
    vals, idx = torch.sort(scaled, dim=-1, descending=True)
    probs = torch.exp(vals - lse)
    cum = probs.cumsum(-1)
    choice = torch.multinomial(probs * ((cum - probs) < top_p), 1, generator=generator)
    tok = idx.gather(-1, choice)[:, 0]
    return tok, torch.log_softmax(logits, -1).gather(-1, tok[:, None])[:, 0]


@pytest.mark.parametrize("vocab", [1000, 4000])
def test_top_p_whole_vocabulary_branch_matches_a_torch_sort_reference(vocab):
    """Flat rows need more than the top-k candidates, so `sample` sorts whole rows (numpy):
    same tokens and log-probs as torch.sort would give, draw for draw."""
    g = torch.Generator().manual_seed(vocab)
    logits = torch.randn(8, vocab, generator=g) * 0.3
    for seed in range(5):
        tok, lp = fd.sample(logits, 0.7, 0.9, torch.Generator().manual_seed(seed))
        want_tok, want_lp = _reference_top_p(logits, 0.7, 0.9, torch.Generator().manual_seed(seed))
        assert torch.equal(tok, want_tok)
        torch.testing.assert_close(lp, want_lp, atol=0, rtol=0)
