"""GGUF export (end/gguf.py) and the llama.cpp engine (runtime/llamacpp.py) on tiny models.

The export tests need gguf-py, the engine tests llama-cpp-python: both come with the
optional extra `endcloud[llamacpp]`, which CI's default install lacks, so each group
skips with the reason when its package is absent. What is checked:
- the file: qwen2 metadata, llama.cpp tensor names and types, tokenizer keys, q8_0 values
  that dequantize back to the HF weights;
- llama.cpp on the exported file gives HF's logits (f32, f16, bf16, q8_0; Qwen2 and a Llama,
  whose q/k rows are permuted; a merged LoRA adapter), and tokenizes zh+en text as HF does;
- the engine: prompts, batched decode against a teacher-forced forward, confidences,
  seeds, adapter swaps through the export cache, loading a bare .gguf file.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from endcloud.errors import ConfigError, DataError, ModelError, RegistryError
from tests.runtime.test_model import CONVS  # llama.cpp is checked on the engine's own conversations

HAVE_GGUF = importlib.util.find_spec("gguf") is not None
HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_gguf = pytest.mark.skipif(not HAVE_GGUF, reason="gguf (gguf-py) is not installed: pip install 'endcloud[llamacpp]'")
needs_llama = pytest.mark.skipif(not (HAVE_GGUF and HAVE_LLAMA),
                                 reason="llama-cpp-python is not installed: pip install 'endcloud[llamacpp]'")

# zh + en with digits, full-width and ASCII punctuation, runs of spaces, newlines, and text
# the tokenizer never saw (unseen CJK characters, emoji, Japanese kana).
TOKENIZE_TEXTS = [
    "亲，在的，请问有什么可以帮您？", "Hello, how can I help you today?",
    "默认发中通快递，下午4点前下单当天发货。We ship with ZTO Express by default.",
    "  这款毛巾是纯棉的，20x20厘米  ， 干湿两用!!  ", "订单号 1234567890，coupon SAVE10 -> 10% off\n\n谢谢",
    "退货请在签收后7天内申请\n运费由我们承担。Returns within 7 days.\t(ok)", "龘靐齉 🙂 ありがとう ＡＢＣ１２３",
    "Sorry for the wait, your parcel is on its way. 亲~ 😀😀", "x" * 40 + " " + "好" * 20,
]


pytestmark = pytest.mark.usefixtures("few_threads")


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_base_dir):
    """A LoRA adapter with random (non-zero) A and B, so merging it changes the logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "gate_proj", "down_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    out = tmp_path_factory.mktemp("gguf-adapters") / "shop" / "v1"
    get_peft_model(model, cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def prefix_dir(tmp_path_factory, tiny_base_dir):
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    out = tmp_path_factory.mktemp("gguf-prefix") / "shop" / "v1"
    get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama_base_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny random Llama (rope over head halves in HF: the exporter must permute q/k)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, eos_token_id=tiny_tokenizer.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tiny_tokenizer.pad_token_id, bos_token_id=None)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger weights than the 0.02 init: logits spread, so a wrong rope shows
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


def _hf_logits(base_dir, ids, *, adapter=None, round_to=None):
    """HF logits (float32) for one sequence; weights optionally rounded to the file's dtype first."""
    from endcloud.end.base import load_base

    model, _ = load_base(base_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if round_to is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.copy_(p.to(round_to).float())
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def _ids(tok, text="<|im_start|>user\n几天发货？ When do you ship?<|im_end|>\n<|im_start|>assistant\n"):
    return tok(text, add_special_tokens=False)["input_ids"]


# ---- export (gguf-py only) -------------------------------------------------------------------------
@needs_gguf
def test_export_writes_qwen2_metadata_tensors_and_tokenizer(tmp_path, tiny_base_dir, tiny_tokenizer):
    import gguf

    from endcloud.end.gguf import HF_JSON_KEY, decode_bytes, export_gguf

    r = export_gguf(tiny_base_dir, tmp_path / "m.gguf", gguf_type="bf16")
    assert r.path.exists() and not list(tmp_path.glob("*.partial"))
    rd = gguf.GGUFReader(str(r.path))
    f = {k: v.contents() for k, v in rd.fields.items() if k != HF_JSON_KEY}
    assert f["general.architecture"] == "qwen2"
    assert f["qwen2.block_count"] == 2 and f["qwen2.embedding_length"] == 64
    assert f["qwen2.attention.head_count"] == 4 and f["qwen2.attention.head_count_kv"] == 2
    # the pre-tokenizer of the tokenizer the end model is served with (what load_base gives)
    from endcloud.end.base import load_tokenizer
    from endcloud.end.gguf import pre_tokenizer_name

    served = json.loads(load_tokenizer(tiny_base_dir).backend_tokenizer.to_str())
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == pre_tokenizer_name(served)
    vocab = tiny_tokenizer.get_vocab()
    assert len(f["tokenizer.ggml.tokens"]) == len(tiny_tokenizer)
    assert all(f["tokenizer.ggml.tokens"][i] == t for t, i in vocab.items())
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert f["tokenizer.ggml.token_type"][im_end] == gguf.TokenType.CONTROL
    assert f["tokenizer.ggml.eos_token_id"] == im_end
    assert f["tokenizer.ggml.merges"] and all(len(m.split(" ")) == 2 for m in f["tokenizer.ggml.merges"])
    assert "<|im_start|>" in f["tokenizer.chat_template"]
    assert json.loads(rd.fields[HF_JSON_KEY].contents())["model"]["type"] == "BPE"
    types = {t.name: t.tensor_type.name for t in rd.tensors}
    assert "output.weight" not in types  # tied: llama.cpp reuses token_embd as the output head
    assert types["token_embd.weight"] == "BF16" and types["blk.1.ffn_down.weight"] == "BF16"
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_q.bias"] == "F32"
    assert len(types) == 3 + 2 * 12 - 1  # embd, output_norm + 12 per layer (qwen2 has q/k/v biases, no o bias)
    assert r.decode_bytes == decode_bytes(r.path) == sum(int(t.n_bytes) for t in rd.tensors)


@needs_gguf
def test_q8_0_dequantizes_to_the_hf_weights(tmp_path, tiny_base_dir):
    import gguf

    from endcloud.end.base import load_base
    from endcloud.end.gguf import export_gguf

    r = export_gguf(tiny_base_dir, tmp_path / "m.gguf", gguf_type="q8_0")
    tensors = {t.name: t for t in gguf.GGUFReader(str(r.path)).tensors}
    model, _ = load_base(tiny_base_dir)
    sd = model.state_dict()
    for hf, g in [("model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight"),
                  ("model.embed_tokens.weight", "token_embd.weight")]:
        t = tensors[g]
        assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(sd[hf].shape)
        ref = sd[hf].numpy()
        step = np.abs(ref).reshape(-1, 32).max(axis=1) / 127  # one q8_0 step per block of 32
        err = np.abs(w - ref).reshape(-1, 32).max(axis=1)
        # half a step of rounding, plus the f16 rounding of the scale (2^-11 relative, × up to 127 steps)
        assert (err <= step * (0.5 + 127 * 2**-11) + 1e-7).all()
        assert np.abs(w - ref).max() > 0  # really quantized


@needs_gguf
def test_q4_0_keeps_the_embedding_at_q8_0_and_is_smaller(tmp_path, tiny_base_dir):
    from endcloud.end.gguf import export_gguf

    q4 = export_gguf(tiny_base_dir, tmp_path / "q4.gguf", gguf_type="q4_0")
    q8 = export_gguf(tiny_base_dir, tmp_path / "q8.gguf", gguf_type="q8_0")
    assert q4.tensor_types["Q4_0"] == 2 * 7 and q4.tensor_types["Q8_0"] == 1
    assert q4.nbytes < q8.nbytes


@needs_gguf
def test_export_refuses_bad_input(tmp_path, tiny_base_dir, prefix_dir):
    from endcloud.end.gguf import export_gguf

    with pytest.raises(RegistryError, match="q8_0"):
        export_gguf(tiny_base_dir, tmp_path / "m.gguf", gguf_type="q3_x")
    with pytest.raises(ModelError, match="PREFIX_TUNING"):
        export_gguf(tiny_base_dir, tmp_path / "m.gguf", adapter_dir=prefix_dir)
    with pytest.raises(ModelError, match="does not exist"):
        export_gguf(tmp_path / "nope", tmp_path / "m.gguf")
    with pytest.raises(ConfigError, match="directory"):
        export_gguf(tiny_base_dir, tmp_path)
    assert not list(tmp_path.glob("*.gguf*"))  # nothing half-written left behind


def test_pre_tokenizer_names():
    from endcloud.end.gguf import QWEN2_SPLIT, pre_tokenizer_name
    from endcloud.end.tokenizer import CJK

    ours = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": CJK}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}}
    qwen = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}}
    assert pre_tokenizer_name(ours) == "gpt-2"
    assert pre_tokenizer_name(qwen) == "qwen2"
    assert pre_tokenizer_name({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}) == "gpt-2"
    with pytest.raises(ModelError, match="--pre"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Metaspace"}})


def test_sampling_rule():
    from endcloud.runtime.llamacpp import sample

    logits = np.array([[0.0, 5.0, 4.0, -1.0], [3.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    tok, lp = sample(logits, 0.0, 0.8, np.random.default_rng(0))
    assert tok.tolist() == [1, 0]
    ref = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert np.allclose(lp, [ref[0, 1], ref[1, 0]], atol=1e-6)
    # a tiny nucleus holds only the top token; the log-prob stays the raw one
    for seed in range(5):
        tok, lp = sample(logits, 1.0, 0.05, np.random.default_rng(seed))
        assert tok.tolist() == [1, 0] and np.allclose(lp, [ref[0, 1], ref[1, 0]], atol=1e-6)
    # top_p 1 samples the whole distribution: over many draws token 2 turns up
    seen = {int(sample(logits[:1], 1.0, 1.0, np.random.default_rng(s))[0][0]) for s in range(200)}
    assert {1, 2} <= seen
    # same seed, same tokens
    a = sample(np.random.default_rng(1).normal(size=(3, 1000)).astype(np.float32), 0.7, 0.9, np.random.default_rng(7))
    b = sample(np.random.default_rng(1).normal(size=(3, 1000)).astype(np.float32), 0.7, 0.9, np.random.default_rng(7))
    assert a[0].tolist() == b[0].tolist()


# ---- llama.cpp on the exported file ----------------------------------------------------------------
def _runner(path, threads=1):
    from endcloud.runtime.llamacpp import LlamaCppEndModel

    return LlamaCppEndModel.load(path, threads=threads, max_batch=4, max_input_len=64, max_new_tokens_limit=32)


@needs_llama
# measured (max |error| / max |logit|): f32 1.8e-4, f16 2.2e-4, bf16 1.1e-3 (llama.cpp also rounds the
# activations to bf16), q8_0 8.0e-3; each tolerance is ~4-5x that.
@pytest.mark.parametrize("gguf_type,round_to,tol", [("f32", None, 1e-3), ("f16", torch.float16, 1e-3),
                                                    ("bf16", torch.bfloat16, 5e-3), ("q8_0", None, 3e-2)])
def test_llamacpp_logits_match_hf(tmp_path, tiny_base_dir, tiny_tokenizer, gguf_type, round_to, tol):
    from endcloud.end.gguf import export_gguf

    r = export_gguf(tiny_base_dir, tmp_path / f"m-{gguf_type}.gguf", gguf_type=gguf_type)
    ids = _ids(tiny_tokenizer)
    ref = _hf_logits(tiny_base_dir, ids, round_to=round_to)
    with _runner(r.path) as m:
        got = m.prompt_logits(ids)
    scale = np.abs(ref).max()
    err = np.abs(got - ref).max() / scale
    assert got.shape == ref.shape
    assert err < tol, f"{gguf_type}: max |llama.cpp - HF| = {err:.2e} of max |logit|"
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


@needs_llama
def test_llama_architecture_permutes_qk(tmp_path, llama_base_dir, tiny_tokenizer):
    from endcloud.end.gguf import export_gguf

    r = export_gguf(llama_base_dir, tmp_path / "llama.gguf", gguf_type="f32")
    assert r.arch == "llama" and r.decode_bytes < r.nbytes  # untied: the embedding is read by one row
    ids = _ids(tiny_tokenizer)
    ref = _hf_logits(llama_base_dir, ids)
    with _runner(r.path) as m:
        got = m.prompt_logits(ids)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 2e-3


@needs_llama
def test_merged_lora_matches_peft(tmp_path, tiny_base_dir, tiny_tokenizer, lora_dir):
    from endcloud.end.gguf import export_gguf

    r = export_gguf(tiny_base_dir, tmp_path / "lora.gguf", adapter_dir=lora_dir, gguf_type="f32")
    ids = _ids(tiny_tokenizer)
    ref = _hf_logits(tiny_base_dir, ids, adapter=lora_dir)
    base = _hf_logits(tiny_base_dir, ids)
    with _runner(r.path) as m:
        got = m.prompt_logits(ids)
    assert np.abs(ref - base).max() > 20 * np.abs(got - ref).max()  # the adapter matters, and is what we run
    assert np.abs(got - ref).max() / np.abs(ref).max() < 2e-3


@needs_llama
@pytest.mark.parametrize("which", ["served", "trained"])
def test_llamacpp_tokenizer_agrees_with_hf(tmp_path, tiny_base_dir, tiny_tokenizer, which):
    """llama.cpp's own tokenizer on the file = HF's, token for token, on zh+en text.

    served: the tokenizer load_base gives (transformers 5 loads a qwen2 model dir's tokenizer
    as Qwen2Tokenizer, whose split regex replaces the saved one) against the default export.
    trained: the tokenizer exactly as `train_tokenizer` made it (CJK characters isolated, then
    GPT-2's split) against an export with pre="gpt-2": the mapping the exporter picks for it."""
    import llama_cpp

    from endcloud.end.base import load_tokenizer, render_chat
    from endcloud.end.gguf import export_gguf

    hf = load_tokenizer(tiny_base_dir) if which == "served" else tiny_tokenizer
    r = export_gguf(tiny_base_dir, tmp_path / "m.gguf", gguf_type="f16", pre=None if which == "served" else "gpt-2")
    texts = TOKENIZE_TEXTS + [render_chat(hf, c) for c in CONVS]
    with _runner(r.path) as m:
        vocab = m.variant.handle.rt.vocab
        for text in texts:
            raw = text.encode("utf-8")
            buf = (llama_cpp.llama_token * (len(raw) + 8))()
            n = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, len(buf), False, True)
            assert n >= 0
            assert list(buf[:n]) == _ids(hf, text), text


# ---- the engine ------------------------------------------------------------------------------------
@needs_llama
def test_engine_batched_decode_matches_teacher_forcing(tmp_path, tiny_base_dir):
    m = _runner_from_base(tiny_base_dir, tmp_path, "f32")
    try:
        gens = m.generate(CONVS, max_new_tokens=12, temperature=0.0, seed=0)
        assert len(gens) == 3 and m.method == "base" and m.adapter_dir is None
        prompts = [m.prompt_ids(c) for c in CONVS]
        rt = m.variant.handle.rt
        seqs, lps, ended = [], [], []
        for i in range(0, 3, m.max_batch):  # generate ran rows 0-1 together, then row 2
            s, lp, e = m.decode(rt, prompts[i:i + m.max_batch], max_new_tokens=12, temperature=0.0, top_p=1.0,
                                rng=np.random.default_rng(0))
            seqs, lps, ended = seqs + s, lps + lp, ended + e
        assert [g.tokens for g in gens] == [len(t) for t in seqs]
        with pytest.raises(DataError, match="max_batch"):
            m.decode(rt, prompts, max_new_tokens=2, temperature=0.0, top_p=1.0, rng=np.random.default_rng(0))
        for g, p, toks, lp, end in zip(gens, prompts, seqs, lps, ended):
            assert g.tokens == len(toks) and 0 < g.confidence <= 1
            assert math.isclose(g.logprob, sum(lp) / (len(toks) + end), rel_tol=1e-5)
            assert len(lp) == len(toks) + end  # the stop token's log-prob counts
            # every step is the argmax of a fresh, single-sequence forward over prompt + reply so far
            fed = p + toks
            full = m.prompt_logits(fed)
            logp = full - np.log(np.exp(full - full.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
                - full.max(-1, keepdims=True)
            for j, t in enumerate(toks):
                row = full[len(p) - 1 + j]
                assert row[t] >= row.max() - 1e-4
                assert abs(logp[len(p) - 1 + j, t] - lp[j]) < 1e-3
    finally:
        m.close()


def _runner_from_base(base, tmp_path, gguf_type, adapter=None):
    from endcloud.runtime.llamacpp import LlamaCppEndModel

    return LlamaCppEndModel.load(base, adapter, gguf_type=gguf_type, cache_dir=tmp_path / "cache", threads=1,
                                 max_batch=2, max_input_len=64, max_new_tokens_limit=16)


@needs_llama
def test_engine_seeds_sampling_and_limits(tmp_path, tiny_base_dir):
    m = _runner_from_base(tiny_base_dir, tmp_path, "q8_0")
    try:
        a = m.generate(CONVS, max_new_tokens=8, temperature=1.0, top_p=0.95, seed=3)  # 3 rows: batches of 2 + 1
        b = m.generate(CONVS, max_new_tokens=8, temperature=1.0, top_p=0.95, seed=3)
        assert [g.text for g in a] == [g.text for g in b] and [g.logprob for g in a] == [g.logprob for g in b]
        assert m.generate([], max_new_tokens=4) == []
        with pytest.raises(DataError, match="max_new_tokens_limit"):
            m.generate(CONVS[:1], max_new_tokens=17)
        with pytest.raises(DataError, match="top_p"):
            m.generate(CONVS[:1], top_p=0.0)
        with pytest.raises(DataError):
            m.generate([[{"role": "robot", "content": "x"}]])
        long = [{"role": "user", "content": "您好，这款毛巾是纯棉的。" * 40}]
        assert len(m.prompt_ids(long)) == 64
        assert len(m.generate([long], max_new_tokens=16, temperature=0.0)) == 1
    finally:
        m.close()


@needs_llama
def test_engine_swaps_adapters_through_the_export_cache(tmp_path, tiny_base_dir, tiny_tokenizer, lora_dir, prefix_dir):
    ids = _ids(tiny_tokenizer)
    m = _runner_from_base(tiny_base_dir, tmp_path, "f32")
    try:
        base_logits = m.prompt_logits(ids)
        m.swap_adapter(lora_dir)
        assert m.method == "lora" and m.adapter_dir == lora_dir and "shop/v1" in m.name
        ref = _hf_logits(tiny_base_dir, ids, adapter=lora_dir)
        assert np.abs(m.prompt_logits(ids) - ref).max() / np.abs(ref).max() < 2e-3
        assert len(list((tmp_path / "cache").glob("*.gguf"))) == 2
        with pytest.raises(ModelError, match="PREFIX_TUNING"):
            m.swap_adapter(prefix_dir)
        assert m.method == "lora"  # a failed swap keeps the old model serving
        m.swap_adapter(None)
        assert m.method == "base"
        assert np.abs(m.prompt_logits(ids) - base_logits).max() == 0
        m.swap_adapter(lora_dir)  # cached: no third file
        assert len(list((tmp_path / "cache").glob("*.gguf"))) == 2
        assert not list((tmp_path / "cache").glob("*.partial"))
    finally:
        m.close()


@needs_llama
def test_engine_loads_a_bare_gguf_file_with_its_own_tokenizer(tmp_path, tiny_base_dir):
    from endcloud.runtime.model import EndModel
    from endcloud.end.gguf import export_gguf
    from endcloud.runtime.llamacpp import LlamaCppEndModel, source_of

    r = export_gguf(tiny_base_dir, tmp_path / "shop.gguf", gguf_type="q4_0")
    assert source_of(r.path)["type"] == "q4_0"
    ref = EndModel.load(tiny_base_dir, max_input_len=64)
    with LlamaCppEndModel.load(r.path, threads=1, max_input_len=64) as m:
        assert m.name == "shop" and m.method == "base"
        for c in CONVS:
            assert m.prompt_ids(c, system="be brief") == ref.prompt_ids(c, system="be brief")
        assert m.tokenizer.decode(m.prompt_ids(CONVS[0]), skip_special_tokens=True) == \
            ref.tokenizer.decode(ref.prompt_ids(CONVS[0]), skip_special_tokens=True)
        [g] = m.generate(CONVS[:1], max_new_tokens=4, seed=0)
        assert isinstance(g.text, str) and 0 < g.confidence <= 1
        with pytest.raises(ConfigError, match="adapter"):
            m.swap_adapter(tmp_path)
    with pytest.raises(ConfigError, match="GGUF file"):
        LlamaCppEndModel.load(r.path, tmp_path)


# ---- CLI -------------------------------------------------------------------------------------------
def _root_app():
    """A root app with `export` registered the way endcloud.cli registers every room."""
    import typer

    from endcloud.cli.export import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """root"""

    register(app)
    return app


def test_export_cli_help():
    from typer.testing import CliRunner

    res = CliRunner().invoke(_root_app(), ["export", "gguf", "--help"])
    assert res.exit_code == 0
    for flag in ("--base", "--adapter", "--type", "-o", "--pre"):
        assert flag in res.output


@needs_gguf
def test_export_cli_writes_a_file(tmp_path, tiny_base_dir, lora_dir):
    from typer.testing import CliRunner

    out = tmp_path / "shop.gguf"
    res = CliRunner().invoke(_root_app(), ["export", "gguf", "--base", str(tiny_base_dir), "--adapter", str(lora_dir),
                                          "--type", "q8_0", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists() and "qwen2" in res.output and "adapter" in res.output
    bad = CliRunner().invoke(_root_app(), ["export", "gguf", "--base", str(tiny_base_dir), "--type", "q9", "-o", str(out)])
    assert bad.exit_code != 0
