"""Exports for other runtimes: llama.cpp's K-quants, a LoRA adapter as a GGUF adapter (what
llama-server hot-swaps per request), a merged Hugging Face folder with an Ollama Modelfile,
and llama.cpp's converter for architectures our GGUF writer does not map.

llama.cpp itself runs here through llama-cpp-python (the `endcloud[llamacpp]` extra): the
K-quant file and the base + GGUF adapter are checked against HF's logits. The converter
script (llama.cpp's convert_hf_to_gguf.py) is not installed; a stand-in script checks what
endcloud hands it.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from endcloud.errors import ConfigError, ModelError

HAVE_GGUF = importlib.util.find_spec("gguf") is not None
HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_gguf = pytest.mark.skipif(not HAVE_GGUF, reason="gguf (gguf-py) is not installed: pip install 'endcloud[llamacpp]'")
needs_llama = pytest.mark.skipif(not (HAVE_GGUF and HAVE_LLAMA),
                                 reason="llama-cpp-python is not installed: pip install 'endcloud[llamacpp]'")
pytestmark = pytest.mark.usefixtures("few_threads")

TEXT = "<|im_start|>user\n几天发货？ When do you ship?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def wide_base_dir(tmp_path_factory, tiny_tokenizer):
    """A Qwen2 whose rows are 256 wide: K-quant blocks fit (a 64-wide model falls back to legacy types)."""
    from endcloud.end.base import tiny_qwen2

    out = tmp_path_factory.mktemp("wide-base")
    model = tiny_qwen2(tiny_tokenizer, hidden_size=256, layers=1, heads=4, kv_heads=2, intermediate_size=512, seed=3)
    with torch.no_grad():  # spread the logits so a wrong kernel would show
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


def _lora(base_dir, out, *, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"), seed=1):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, cfg).save_pretrained(out)
    return out


def _hf_logits(base_dir, ids, adapter=None):
    from endcloud.end.base import load_base

    model, _ = load_base(base_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def _llama_logits(path, ids, lora=None):
    """llama.cpp's logits for every prompt position (llama-cpp-python's high-level Llama)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), lora_path=str(lora) if lora else None, n_ctx=128, logits_all=True,
                n_threads=1, n_batch=128, verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---- K-quants through llama.cpp's quantizer ----------------------------------------------------------
@needs_llama
def test_q4_k_m_is_llamacpps_mix_and_runs(tmp_path, wide_base_dir, tiny_tokenizer):
    from endcloud.end.gguf import export_gguf, read_metadata

    q8 = export_gguf(wide_base_dir, tmp_path / "m-q8_0.gguf", gguf_type="q8_0")
    k4 = export_gguf(wide_base_dir, tmp_path / "m-q4_k_m.gguf", gguf_type="q4_k_m", threads=1)
    assert k4.tensor_types.get("Q4_K", 0) > 0  # K-quant blocks, not our legacy writer's
    assert set(k4.tensor_types) <= {"F32", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "F16"}
    assert k4.nbytes < 0.75 * q8.nbytes
    meta = read_metadata(k4.path, ["general.file_type", "endcloud.source", "tokenizer.huggingface.json"])
    assert meta["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert "endcloud.source" in meta and "tokenizer.huggingface.json" in meta  # our keys survive the quantizer
    assert not list(tmp_path.glob("*.src.gguf")) and not list(tmp_path.glob("*.partial"))
    ids = tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    ref = _hf_logits(wide_base_dir, ids)
    err_q8, err_k4 = _rel(_llama_logits(q8.path, ids), ref), _rel(_llama_logits(k4.path, ids), ref)
    got_k4 = _llama_logits(k4.path, ids)
    corr = float(np.corrcoef(got_k4.ravel(), ref.ravel())[0, 1])
    assert err_q8 < err_k4 and corr > 0.95  # 4-bit is coarser than 8-bit, and still the model (measured: 0.98)


@needs_gguf
def test_k_quant_without_a_quantizer_names_the_extra(tmp_path, tiny_base_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now fails: no binding
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-quantize either
    monkeypatch.delenv("ENDCLOUD_LLAMA_QUANTIZE", raising=False)
    from endcloud.end.gguf import export_gguf

    with pytest.raises(ModelError, match=r"quantizer.*endcloud\[llamacpp\].*llama-quantize"):
        export_gguf(tiny_base_dir, tmp_path / "x.gguf", gguf_type="q5_k_m")
    assert not list(tmp_path.glob("*.gguf*"))


# ---- LoRA as a GGUF adapter (llama-server's per-request adapters) -------------------------------------
@needs_llama
@pytest.mark.parametrize("which", ["qwen2", "llama"])
def test_lora_gguf_adapter_on_the_base_equals_the_merged_model(tmp_path, tiny_base_dir, tiny_tokenizer, which):
    from endcloud.end.gguf import export_gguf, export_lora_gguf, read_metadata

    base_dir = tiny_base_dir
    if which == "llama":  # q/k LoRA B rows must be permuted like the weights
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(2)
        cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                          tie_word_embeddings=False, pad_token_id=tiny_tokenizer.pad_token_id, bos_token_id=None,
                          eos_token_id=tiny_tokenizer.convert_tokens_to_ids("<|im_end|>"))
        base_dir = tmp_path / "llama"
        LlamaForCausalLM(cfg).save_pretrained(base_dir)
        tiny_tokenizer.save_pretrained(base_dir)
    ad = _lora(base_dir, tmp_path / "adapters" / "shop" / "v1")
    r = export_lora_gguf(base_dir, ad)
    assert r.path == ad / "adapter.gguf" and r.rank == 4 and r.alpha == 8.0 and r.arch == which
    meta = read_metadata(r.path, ["general.type", "adapter.type", "adapter.lora.alpha"])
    assert meta == {"general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": pytest.approx(8.0)}
    base = export_gguf(base_dir, tmp_path / "base.gguf", gguf_type="f32")
    ids = tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    merged = _hf_logits(base_dir, ids, adapter=ad)
    plain = _hf_logits(base_dir, ids)
    got = _llama_logits(base.path, ids, lora=r.path)
    assert np.abs(merged - plain).max() > 20 * np.abs(got - merged).max()  # the adapter matters, and is applied
    assert _rel(got, merged) < 2e-3


@needs_gguf
def test_lora_gguf_refuses_what_llamacpp_cannot_apply(tmp_path, tiny_base_dir):
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from endcloud.end.gguf import export_lora_gguf

    px = tmp_path / "prefix"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base_dir),
                   PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")).save_pretrained(px)
    with pytest.raises(ModelError, match="PREFIX_TUNING.*only LORA"):
        export_lora_gguf(tiny_base_dir, px)
    emb = _lora(tiny_base_dir, tmp_path / "emb", targets=("embed_tokens", "q_proj"))
    with pytest.raises(ModelError, match="embed_tokens.*no llama.cpp tensor"):
        export_lora_gguf(tiny_base_dir, emb)


# ---- a merged Hugging Face folder + Modelfile ------------------------------------------------------------
def test_merged_export_is_the_merged_model_with_a_modelfile(tmp_path, tiny_base_dir, tiny_tokenizer):
    from endcloud.end.base import load_base
    from endcloud.end.merged import EXPORT_RECORD, export_merged

    ad = _lora(tiny_base_dir, tmp_path / "adapters" / "shop" / "v2")
    r = export_merged(tiny_base_dir, tmp_path / "out", adapter_dir=ad)
    assert r.method == "lora" and (r.out_dir / "model.safetensors").exists()
    assert not (r.out_dir / "adapter_config.json").exists()  # plain weights: any server loads them
    ids = tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    model, tok = load_base(r.out_dir)
    with torch.no_grad():
        got = model(torch.tensor([ids])).logits[0].numpy()
    assert np.allclose(got, _hf_logits(tiny_base_dir, ids, adapter=ad), atol=1e-5)
    assert tok(TEXT, add_special_tokens=False)["input_ids"] == ids
    mf = (r.out_dir / "Modelfile").read_text()
    assert "FROM ." in mf and "<|im_start|>{{ .Role }}" in mf and 'PARAMETER stop "<|im_end|>"' in mf
    rec = json.loads((r.out_dir / EXPORT_RECORD).read_text())
    assert rec["adapter"] == str(ad.resolve()) and "text-generation-launcher" in rec["serve"]["tgi"]
    again = export_merged(tiny_base_dir, tmp_path / "out", modelfile=False, dtype="bf16")  # an earlier export: replaced
    assert again.method == "base" and again.dtype == "bf16" and not (again.out_dir / "Modelfile").exists()
    assert again.nbytes < r.nbytes


def test_merged_export_refuses_prefix_and_foreign_folders(tmp_path, tiny_base_dir):
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from endcloud.end.merged import export_merged

    px = tmp_path / "prefix"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base_dir),
                   PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")).save_pretrained(px)
    with pytest.raises(ModelError, match="only LoRA merges.*--engine transformers"):
        export_merged(tiny_base_dir, tmp_path / "o", adapter_dir=px)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an earlier export"):
        export_merged(tiny_base_dir, busy)
    assert (busy / "notes.txt").read_text() == "mine"


# ---- other architectures: llama.cpp's converter -----------------------------------------------------------
STAND_IN = '''
import json, sys
from pathlib import Path
import gguf
args = sys.argv[1:]
src, out, outtype = Path(args[0]), args[args.index("--outfile") + 1], args[args.index("--outtype") + 1]
Path(sys.argv[0]).with_suffix(".json").write_text(json.dumps({"args": args, "files": sorted(p.name for p in src.iterdir())}))
w = gguf.GGUFWriter(out, "phi3")
w.add_tensor("token_embd.weight", __import__("numpy").zeros((4, 8), dtype="float16"))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
'''


@needs_gguf
def test_other_architectures_go_through_llamacpps_converter(tmp_path, tiny_tokenizer, monkeypatch):
    from transformers import Phi3Config, Phi3ForCausalLM

    from endcloud.end.gguf import CONVERT_ENV, export_gguf

    torch.manual_seed(0)
    base = tmp_path / "phi3"
    Phi3ForCausalLM(Phi3Config(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=4, num_key_value_heads=2, pad_token_id=tiny_tokenizer.pad_token_id,
                               bos_token_id=None, eos_token_id=None)).save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    monkeypatch.delenv(CONVERT_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match=f"Phi3ForCausalLM.*{CONVERT_ENV}"):
        export_gguf(base, tmp_path / "p.gguf", gguf_type="f16")
    script = tmp_path / "convert_hf_to_gguf.py"
    script.write_text(STAND_IN)
    monkeypatch.setenv(CONVERT_ENV, str(script))
    ad = _lora(base, tmp_path / "ad", targets=("qkv_proj",))
    r = export_gguf(base, tmp_path / "p.gguf", gguf_type="f16", adapter_dir=ad)
    seen = json.loads(script.with_suffix(".json").read_text())
    assert seen["args"][-2:] == ["--outtype", "f16"] and "model.safetensors" in seen["files"]
    assert "adapter_config.json" not in seen["files"]  # the converter got the merged folder, not the adapter
    assert r.path.exists() and r.arch == "phi3" and r.adapter_dir == ad
    monkeypatch.setenv(CONVERT_ENV, str(tmp_path / "missing.py"))
    with pytest.raises(ConfigError, match="not a file"):
        export_gguf(base, tmp_path / "p.gguf", gguf_type="f16")


# ---- the commands -------------------------------------------------------------------------------------------
def _root_app():
    import typer

    from endcloud.cli.export import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """root"""

    register(app)
    return app


@needs_gguf
def test_export_commands(tmp_path, tiny_base_dir):
    from typer.testing import CliRunner

    from endcloud.end.adapters import AdapterRegistry

    reg = AdapterRegistry(tmp_path / "adapters")
    v = reg.publish("shop", _lora(tiny_base_dir, tmp_path / "trained"), manifest={"method": "lora"})
    reg.activate("shop", v)
    ad = tmp_path / "adapters" / "shop" / v
    res = CliRunner().invoke(_root_app(), ["export", "lora", "--base", str(tiny_base_dir), "--adapter",
                                           str(tmp_path / "adapters" / "shop")])
    assert res.exit_code == 0, res.output
    assert (ad / "adapter.gguf").exists() and "--lora-init-without-apply" in res.output
    res = CliRunner().invoke(_root_app(), ["export", "merged", "--base", str(tiny_base_dir), "--adapter", str(ad),
                                           "-o", str(tmp_path / "merged")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "merged" / "Modelfile").exists() and "lora" in res.output
