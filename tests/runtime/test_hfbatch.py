"""The "transformers-cb" engine: transformers' continuous batching behind the end-model protocol,
on an architecture our fast path does not cover (a tiny Phi-3, built here), on the CPU.

Greedy replies equal transformers' `generate` token for token (and their confidence its
log-probs); the server's AsyncEngine streams them ("engine" mode); a LoRA swap serves the
merged adapter; prefix adapters are refused with the reason.
"""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from endcloud.errors import ModelError

pytestmark = pytest.mark.usefixtures("few_threads")

CONVS = [
    [{"role": "user", "content": "什么时候发货"}],
    [{"role": "user", "content": "When do you ship?"}, {"role": "assistant", "content": "Today."},
     {"role": "user", "content": "Any discount?"}],
    [{"role": "user", "content": "毛巾是什么材质"}],
]


@pytest.fixture(scope="module")
def phi3_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny random Phi-3 (fused qkv_proj: outside the fast path's Llama/Qwen2 family)."""
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    eos = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    cfg = Phi3Config(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                     pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=eos, bos_token_id=None)
    out = tmp_path_factory.mktemp("phi3")
    Phi3ForCausalLM(cfg).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def cb_model(phi3_dir):
    from endcloud.runtime.engines import load_end_model

    m = load_end_model("transformers-cb", base_dir=phi3_dir, device="cpu", max_batch=8, max_new_tokens=32)
    yield m
    m.close()


def _reference(model, prompt_ids, n):
    """transformers' generate, greedy: (reply ids without the end-of-turn, mean log-prob)."""
    hf = model.variant.handle
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False, eos_token_id=list(model.stop_ids),
                          pad_token_id=model.tokenizer.pad_token_id, output_scores=True, return_dict_in_generate=True)
    toks = out.sequences[0, len(prompt_ids):].tolist()
    lps = [float(torch.log_softmax(s[0].float(), -1)[t]) for s, t in zip(out.scores, toks)]
    ended = bool(toks) and toks[-1] in model.stop_ids
    reply = toks[:-1] if ended else toks
    return reply, sum(lps) / len(lps)


def test_greedy_equals_generate_token_for_token(cb_model):
    from endcloud.runtime.fastdecode import FastWeights

    assert FastWeights.from_model(cb_model.variant.handle) is None  # outside our fast path
    gens = cb_model.generate(CONVS, max_new_tokens=24, temperature=0)
    for conv, g in zip(CONVS, gens):
        ids = cb_model.prompt_ids(conv)
        reply, mean_lp = _reference(cb_model, ids, 24)
        assert g.tokens == len(reply)
        assert g.text == cb_model.tokenizer.decode(reply, skip_special_tokens=True).strip()
        assert g.logprob == pytest.approx(mean_lp, abs=1e-4)
        assert g.confidence == pytest.approx(math.exp(mean_lp), rel=1e-4)


def test_sampled_requests_with_their_own_settings(cb_model):
    a, b = cb_model.generate(CONVS[:2], max_new_tokens=16, temperature=1.0, top_p=0.5)
    (c,) = cb_model.generate(CONVS[2:], max_new_tokens=5, temperature=0.3, top_p=1.0)
    assert 0 < a.tokens <= 16 and 0 < b.tokens <= 16 and 0 < c.tokens <= 5
    assert all(0 < g.confidence <= 1 for g in (a, b, c))
    with pytest.raises(ModelError, match="max_new_tokens 64 is above"):
        cb_model.generate(CONVS[:1], max_new_tokens=64)


def test_async_engine_streams_from_the_engine(cb_model):
    from endcloud.runtime.async_engine import AsyncEngine

    async def run():
        engine = AsyncEngine(cb_model)
        engine.start()
        assert engine.mode == "engine" and engine.streams_tokens
        streams = [engine.stream_scored(c, query=None, max_new_tokens=20, temperature=0, top_p=1.0) for c in CONVS]
        texts = []
        for s in streams:
            deltas = [d async for d in s]
            texts.append(("".join(deltas), s.result[0].text, len(deltas)))
        whole, _ = await engine.generate_scored(CONVS[0], query=None, max_new_tokens=20, temperature=0, top_p=1.0)
        left = engine.stream_scored(CONVS[1], query=None, max_new_tokens=30, temperature=1.0, top_p=1.0)
        async for _ in left:  # the customer leaves after the first piece: the row is dropped
            break
        await left.aclose()
        in_flight = engine.batcher.stats()["in_flight"]
        await engine.stop()
        return texts, whole, in_flight

    texts, whole, in_flight = asyncio.run(run())
    assert in_flight == 0
    ref = cb_model.generate(CONVS, max_new_tokens=20, temperature=0)
    for (joined, final, n), g in zip(texts, ref):
        assert joined == final == g.text
    assert any(n > 1 for _, _, n in texts if _)  # streamed in pieces, not one block
    assert whole.text == ref[0].text


def test_lora_swap_serves_the_merged_adapter_and_prefix_is_refused(cb_model, phi3_dir, tmp_path):
    from peft import PeftModel

    from endcloud.end.base import load_base

    from peft import LoraConfig, PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    ad = tmp_path / "lora"
    torch.manual_seed(1)  # random A and B (not peft's zero B), so the adapter changes the replies
    get_peft_model(AutoModelForCausalLM.from_pretrained(phi3_dir),
                   LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj"], init_lora_weights=False,
                              task_type="CAUSAL_LM")).save_pretrained(ad)
    (base_reply,) = cb_model.generate(CONVS[:1], max_new_tokens=16, temperature=0)
    cb_model.swap_adapter(ad)
    assert cb_model.variant.method == "lora"
    (g,) = cb_model.generate(CONVS[:1], max_new_tokens=16, temperature=0)
    base, _ = load_base(phi3_dir)
    merged = PeftModel.from_pretrained(base, str(ad)).merge_and_unload().eval()
    ids = cb_model.prompt_ids(CONVS[0])
    with torch.no_grad():
        out = merged.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                              eos_token_id=list(cb_model.stop_ids), pad_token_id=cb_model.tokenizer.pad_token_id)
    toks = [t for t in out[0, len(ids):].tolist() if t not in cb_model.stop_ids]
    assert g.tokens == len(toks) and g.text == cb_model.tokenizer.decode(toks, skip_special_tokens=True).strip()

    assert g.text != base_reply.text or g.logprob != base_reply.logprob  # the adapter is what answered

    px = tmp_path / "prefix"
    get_peft_model(AutoModelForCausalLM.from_pretrained(phi3_dir),
                   PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")).save_pretrained(px)
    with pytest.raises(ModelError, match="prefix.*--engine transformers"):
        cb_model.swap_adapter(px)
    assert cb_model.variant.method == "lora"  # the refused swap left the old adapter serving
    cb_model.swap_adapter(None)
    assert cb_model.variant.method == "base"
