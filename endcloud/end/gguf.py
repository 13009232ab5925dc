"""Export an end model (a local HF Qwen2/Llama directory + an optional LoRA adapter, merged) to
one GGUF file that llama.cpp runs: the fast CPU path for serving (`runtime/llamacpp.py`).

    from endcloud.end.gguf import export_gguf
    r = export_gguf("endcloud-work/base", "shop-q8_0.gguf", adapter_dir="adapters/shop/v3", gguf_type="q8_0")
    r.path, r.nbytes, r.decode_bytes       # decode_bytes: weight bytes one decode step reads

    endcloud export gguf --base endcloud-work/base --adapter adapters/shop/v3 --type q8_0 -o shop.gguf

Needs the optional extra `pip install 'endcloud[llamacpp]'` (gguf-py; llama-cpp-python to run it).

Why not llama.cpp's `convert_hf_to_gguf.py`: it identifies a tokenizer by hashing how it splits
a test string and refuses pre-tokenizers it has not seen, which includes the zh+en one
`endcloud pretrain` trains. Here the writer (gguf-py's `GGUFWriter`) is driven directly:

- Model: `qwen2` or `llama` metadata from the HF config and tensors under llama.cpp's names
  (`ARCHS`). Llama's q/k rows are permuted: HF rotates the two halves of a head, GGML's
  `llama` rope rotates adjacent pairs. Qwen2 uses GGML's NEOX rope, which is HF's layout.
- Weights (`GGUF_TYPES`): 2-D weights in the chosen type; norms and biases stay f32 (they
  are tiny and quantizing them costs accuracy for nothing); a weight whose rows are not a
  multiple of the quant block falls back to f16, as llama.cpp's converter does. `q4_0`
  keeps the token embedding at q8_0: with tied embeddings it is also the output head, whose
  error lands straight in the logits (llama.cpp's own quantizer keeps it at q6_K likewise).
- Tokenizer: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with tokens, token types,
  merges, bos/eos/pad ids and the chat template, plus the whole HF `tokenizer.json` under
  `tokenizer.huggingface.json`, so `LlamaCppEndModel` tokenizes exactly as training did.
  llama.cpp's own tokenizer needs a named pre-tokenizer (`tokenizer.ggml.pre`, a fixed list
  of split regexes compiled into llama.cpp): `PRE_TOKENIZERS` maps the HF pre-tokenizers we
  know. The tokenizer exported is the one the end model is served with (`load_base`'s): a
  real Qwen2 folder's maps to `qwen2`; `endcloud pretrain`'s loads from its tokenizer.json
  as trained (`endcloud.end.base.load_tokenizer`), and its split (each CJK
  character isolated, then GPT-2's byte-level split) maps to `gpt-2`: its merges were
  learned with CJK characters isolated, so no merge joins a CJK character to a neighbour
  and the plain GPT-2 split yields the same tokens. tests/end/test_gguf.py checks both
  against HF, token for token, on zh+en text. An unknown pre-tokenizer is refused; pass `pre=`.
- A LoRA adapter is merged into the weights before writing (peft `merge_and_unload`): the
  file is one self-contained model and a LoRA reply costs what a base reply costs. Prefix /
  P-tuning v2 adapters are key/value prefixes, which GGUF cannot express: refused.

The file is written next to the target as `*.<pid>.partial` and renamed when complete, so a
half-written file never has the final name. Tensors are converted and written one at a
time: peak memory is the loaded model plus one tensor.

K-quants (`q4_k_m`, `q5_k_m`, `q6_k`: what llama.cpp users expect) are llama.cpp's own mixes
(Q4_K_M keeps some attention/FFN tensors at Q6_K, ...), so they are made by llama.cpp's
quantizer, not re-implemented: the model is written here at the checkpoint's precision (f32,
f16 or bf16), then `llama_model_quantize` (llama-cpp-python, the same extra) or a
`llama-quantize` binary rewrites it. K-quant blocks are 256 wide: a tensor whose rows are
not falls back to a legacy type inside the quantizer, as llama.cpp decides.

Architectures outside `ARCHS` (Gemma, Phi-3, ChatGLM, ...) go through llama.cpp's own
`convert_hf_to_gguf.py` when it is available (`ENDCLOUD_LLAMACPP_CONVERT=/path/to/convert_hf_to_gguf.py`,
or the script on PATH): a LoRA adapter is merged into a temporary HF folder first, and a
K-quant is applied afterwards by the quantizer.

`export_lora_gguf` writes a LoRA adapter itself as a GGUF adapter (`general.type = adapter`,
`adapter.lora.alpha`, `blk.N.<tensor>.lora_a/lora_b`) for llama-server's per-request adapters
(`runtime.openai_local`): the base is exported once, each adapter version is a few MB.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from endcloud.errors import ConfigError, ModelError
from endcloud.registry import Registry

EXTRA_HINT = "install the optional extra: pip install 'endcloud[llamacpp]' (gguf-py and llama-cpp-python)"
HF_JSON_KEY = "tokenizer.huggingface.json"
SOURCE_KEY = "endcloud.source"  # JSON: base dir name, adapter dir, gguf type (for humans and caches)


def require_gguf():
    """The `gguf` module (gguf-py), or a ModelError naming the extra to install."""
    try:
        import gguf
    except ImportError:
        raise ModelError(f"reading or writing GGUF files needs the gguf package (gguf-py); {EXTRA_HINT}") from None
    return gguf


# ---- weight formats -------------------------------------------------------------------------
@dataclass(frozen=True)
class GGUFType:
    """One output format: the GGML type of 2-D weights, of the token embedding, and the file type."""

    name: str
    weight: str  # GGMLQuantizationType member name
    embedding: str
    file_type: str  # LlamaFileType member name
    help: str
    llama_ftype: str | None = None  # made by llama.cpp's quantizer (its LLAMA_FTYPE_* name), not by this writer


GGUF_TYPES: Registry[GGUFType] = Registry("GGUF weight type")
for _t in (
    GGUFType("f32", "F32", "F32", "ALL_F32", "32-bit floats: 4 bytes/weight, the reference"),
    GGUFType("f16", "F16", "F16", "MOSTLY_F16", "16-bit floats: 2 bytes/weight"),
    GGUFType("bf16", "BF16", "BF16", "MOSTLY_BF16", "bfloat16: 2 bytes/weight, the range of f32"),
    GGUFType("q8_0", "Q8_0", "Q8_0", "MOSTLY_Q8_0", "8-bit blocks of 32 with an f16 scale: 1.06 bytes/weight"),
    GGUFType("q4_0", "Q4_0", "Q8_0", "MOSTLY_Q4_0",
             "4-bit blocks of 32 (0.56 bytes/weight); the token embedding / tied output head stays q8_0"),
    GGUFType("q4_k_m", "F32", "F32", "MOSTLY_Q4_K_M", "llama.cpp's Q4_K_M mix (~0.6 bytes/weight), its quantizer's",
             "LLAMA_FTYPE_MOSTLY_Q4_K_M"),
    GGUFType("q5_k_m", "F32", "F32", "MOSTLY_Q5_K_M", "llama.cpp's Q5_K_M mix (~0.7 bytes/weight), its quantizer's",
             "LLAMA_FTYPE_MOSTLY_Q5_K_M"),
    GGUFType("q6_k", "F32", "F32", "MOSTLY_Q6_K", "llama.cpp's Q6_K (~0.82 bytes/weight), its quantizer's",
             "LLAMA_FTYPE_MOSTLY_Q6_K"),
):
    GGUF_TYPES.add(_t.name, _t)


# ---- architectures --------------------------------------------------------------------------
@dataclass(frozen=True)
class Arch:
    """How one HF architecture maps to a llama.cpp one."""

    gguf_arch: str
    permute_qk: bool  # HF half-rotation rope -> GGML adjacent-pair rope (llama)
    rope_dims_key: bool  # llama.cpp's llama reads `<arch>.rope.dimension_count`


ARCHS: Registry[Arch] = Registry("model architecture for GGUF export")
ARCHS.add("Qwen2ForCausalLM", Arch("qwen2", permute_qk=False, rope_dims_key=False))
ARCHS.add("LlamaForCausalLM", Arch("llama", permute_qk=True, rope_dims_key=True))

# HF parameter name (after `model.layers.{i}.`) -> llama.cpp tensor name (after `blk.{i}.`)
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.o_proj.bias": "attn_output.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


# ---- pre-tokenizers llama.cpp knows -----------------------------------------------------------
GPT2_SPLIT = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
QWEN2_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
               "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
LLAMA3_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def _cjk_split() -> str:
    from endcloud.end.tokenizer import CJK

    return CJK


# The sequence of split regexes a HF pre-tokenizer applies -> llama.cpp's `tokenizer.ggml.pre` name.
PRE_TOKENIZERS: dict[tuple[str, ...], str] = {
    (GPT2_SPLIT,): "gpt-2",
    (QWEN2_SPLIT,): "qwen2",
    (LLAMA3_SPLIT,): "llama-bpe",
}


def _split_sequence(pre: dict | None) -> tuple[str, ...]:
    """The regexes a HF `pre_tokenizer` JSON splits by, in order (ByteLevel's own regex included)."""
    if not pre:
        return ()
    if pre.get("type") == "Sequence":
        return tuple(r for p in pre.get("pretokenizers", []) for r in _split_sequence(p))
    if pre.get("type") == "ByteLevel":
        return (GPT2_SPLIT,) if pre.get("use_regex", True) else ()
    if pre.get("type") == "Split" and pre.get("behavior", "").lower() == "isolated" and not pre.get("invert"):
        pat = pre.get("pattern", {})
        return (pat.get("Regex") or pat.get("String") or "",)
    return (f"<{pre.get('type')}>",)


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for this tokenizer's pre-tokenizer, or a ModelError saying to pass `pre`."""
    seq = _split_sequence(tokenizer_json.get("pre_tokenizer"))
    if seq in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[seq]
    if seq == (_cjk_split(), GPT2_SPLIT):  # `endcloud pretrain`'s zh+en tokenizer: see the module docstring
        return "gpt-2"
    raise ModelError(
        f"llama.cpp has no pre-tokenizer known to match this tokenizer's splits {list(seq)!r:.300}; pass pre=NAME "
        f"(--pre) with the llama.cpp name that splits text the same way (e.g. gpt-2, qwen2, llama-bpe)"
    )


# ---- result -------------------------------------------------------------------------------------
@dataclass
class GGUFExport:
    """What `export_gguf` wrote."""

    path: Path
    gguf_type: str
    arch: str
    n_tensors: int
    nbytes: int  # tensor data bytes in the file
    decode_bytes: int  # weight bytes one decode step reads (an untied embedding: one row)
    tensor_types: dict[str, int] = field(default_factory=dict)  # GGML type name -> tensor count
    adapter_dir: Path | None = None


# ---- export -------------------------------------------------------------------------------------
def _hf_arch(model) -> str:
    archs = list(getattr(model.config, "architectures", None) or []) or [type(model).__name__]
    for a in archs:
        if a in ARCHS:
            return a
    raise ModelError(f"GGUF export supports {ARCHS.names()}, not {archs!r}; other architectures need "
                     "llama.cpp's convert_hf_to_gguf.py")


def _merge_adapter(model, adapter_dir: Path):
    """The base with a LoRA adapter merged in; other adapter types are refused."""
    if not adapter_dir.is_dir():
        raise ModelError(f"adapter directory {str(adapter_dir)!r} does not exist")
    cfg_path = adapter_dir / "adapter_config.json"
    try:
        kind = str(json.loads(cfg_path.read_text(encoding="utf-8"))["peft_type"]).upper()
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{str(cfg_path)!r} is not a peft adapter config (pass a folder written by peft "
                         f"save_pretrained, e.g. adapters/<name>/vN): {e}") from e
    if kind != "LORA":
        raise ModelError(
            f"adapter {str(adapter_dir)!r} is of type {kind!r}; a GGUF file holds plain weights, so only LORA adapters "
            "(merged in) can be exported — serve prefix / ptuning-v2 adapters with the transformers engine"
        )
    import torch
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except Exception as e:  # peft raises many types for a mismatched adapter
        raise ModelError(f"cannot load the adapter {str(adapter_dir)!r} onto the base: {e}") from e
    with torch.inference_mode():
        return peft_model.merge_and_unload().eval()


def _rope_theta(cfg) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    kind = params.get("rope_type", "default") if isinstance(params, dict) else "default"
    scaling = getattr(cfg, "rope_scaling", None)
    if kind not in ("default", None) or (isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type"))
                                         not in (None, "default")):
        raise ModelError(f"rope scaling {kind or scaling!r} is not supported by this exporter; use llama.cpp's "
                         "convert_hf_to_gguf.py for such models")
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta if theta is not None else getattr(cfg, "rope_theta", 10000.0))


def _permute(w, n_head: int):
    """HF q/k rows (two halves per head) -> GGML's adjacent-pair rope order (llama.cpp's `permute`)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(model, arch: Arch) -> tuple[list[tuple[str, Any]], bool]:
    """(gguf name, torch tensor) in file order, and whether the output head is the tied embedding."""
    cfg = model.config
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings().weight
    tied = emb.data_ptr() == out.data_ptr() or bool(getattr(cfg, "tie_word_embeddings", False))
    n_head, n_kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    named: list[tuple[str, Any]] = []
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue
        if name in GLOBAL_TENSORS:
            named.append((GLOBAL_TENSORS[name], t))
            continue
        parts = name.split(".", 3)
        if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in LAYER_TENSORS:
            gname = f"blk.{parts[2]}.{LAYER_TENSORS[parts[3]]}"
            if arch.permute_qk and parts[3] in ("self_attn.q_proj.weight", "self_attn.q_proj.bias"):
                t = _permute(t, n_head)
            elif arch.permute_qk and parts[3] in ("self_attn.k_proj.weight", "self_attn.k_proj.bias"):
                t = _permute(t, n_kv)
            named.append((gname, t))
            continue
        if name.endswith("rotary_emb.inv_freq"):  # recomputed by llama.cpp from rope.freq_base
            continue
        raise ModelError(f"tensor {name!r} has no llama.cpp counterpart in this exporter; the model is not a plain "
                         f"{type(model).__name__}")
    return named, tied


def _ggml_type(gname: str, shape, gtype: GGUFType, gguf) -> Any:
    Q = gguf.GGMLQuantizationType
    if len(shape) < 2:
        return Q.F32
    qt = Q[gtype.embedding if gname in ("token_embd.weight", "output.weight") else gtype.weight]
    block, _ = gguf.GGML_QUANT_SIZES[qt]
    return qt if shape[-1] % block == 0 else Q.F16


def _convert(t, qt, gguf):
    """A torch tensor -> the numpy array GGUF stores for GGML type `qt`."""
    import numpy as np
    import torch

    Q = gguf.GGMLQuantizationType
    t = t.detach()
    if qt == Q.F32:
        return t.to(torch.float32).contiguous().numpy()
    if qt == Q.F16:
        return t.to(torch.float16).contiguous().numpy()
    if qt == Q.BF16:  # torch rounds to nearest even, as ggml does; no f32 copy of the tensor
        return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint8)
    return gguf.quants.quantize(t.to(torch.float32).contiguous().numpy(), qt)


def _planned(shape, qt, gguf) -> tuple[tuple[int, ...], Any, int]:
    """(stored shape, numpy dtype, bytes) of a tensor of `shape` stored as `qt`."""
    import math

    import numpy as np

    Q = gguf.GGMLQuantizationType
    if qt in (Q.F32, Q.F16):
        dt = np.float32 if qt == Q.F32 else np.float16
        return tuple(shape), dt, math.prod(shape) * np.dtype(dt).itemsize
    bshape = gguf.quant_shape_to_byte_shape(tuple(shape), qt)
    return bshape, np.uint8, math.prod(bshape)


def _tokenizer_metadata(w, tok, vocab_size: int, pre: str | None, gguf) -> None:
    """Byte-level BPE vocabulary, merges, special ids and chat template, the way llama.cpp reads them."""
    tj = json.loads(tok.backend_tokenizer.to_str())
    model = tj.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ModelError(f"GGUF export handles byte-level BPE tokenizers (Qwen2, GPT-2, Llama 3 style); this one is "
                         f"{model.get('type')!r}{' with byte_fallback' if model.get('byte_fallback') else ''}")
    pre_name = pre or pre_tokenizer_name(tj)
    by_id: dict[int, str] = {int(i): s for s, i in model["vocab"].items()}
    added = {int(a["id"]): a for a in tj.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = a["content"]
    if by_id and max(by_id) >= vocab_size:
        raise ModelError(f"the tokenizer has token id {max(by_id)} but the model's vocab_size is {vocab_size}")
    TT = gguf.TokenType
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # the embedding has rows past the tokenizer (Qwen2.5 pads to 151936)
            tokens.append(f"[PAD{i}]")
            types.append(TT.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(TT.CONTROL if added[i].get("special") else TT.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(TT.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre_name)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if tok.bos_token_id is not None:
        w.add_bos_token_id(int(tok.bos_token_id))
    if tok.eos_token_id is not None:
        w.add_eos_token_id(int(tok.eos_token_id))
    if tok.pad_token_id is not None:
        w.add_pad_token_id(int(tok.pad_token_id))
    first = tok("a", add_special_tokens=True)["input_ids"]
    w.add_add_bos_token(bool(first) and tok.bos_token_id is not None and first[0] == tok.bos_token_id)
    w.add_add_eos_token(False)
    if getattr(tok, "chat_template", None):
        w.add_chat_template(tok.chat_template)
    w.add_string(HF_JSON_KEY, tok.backend_tokenizer.to_str())


def _load_dtype(base: Path, gtype: GGUFType):
    """The dtype to load the HF weights in: what the checkpoint stores (f32 for an f32 export)."""
    import torch

    if gtype.name == "f32":
        return torch.float32
    try:
        cfg = json.loads((base / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {str(base / 'config.json')!r}: {e}") from e
    stored = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(stored, torch.float32)


def _stored_type(base: Path) -> str:
    """The GGUF float type matching what the checkpoint stores (the quantizer's input: no precision lost)."""
    try:
        cfg = json.loads((base / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {str(base / 'config.json')!r}: {e}") from e
    stored = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return {"bfloat16": "bf16", "float16": "f16"}.get(stored, "f32")


def _config_archs(base: Path) -> list[str]:
    try:
        return list(json.loads((base / "config.json").read_text(encoding="utf-8")).get("architectures") or [])
    except (OSError, ValueError):
        return []


def _finish(out_path: Path, gtype: GGUFType, arch: str, ad: Path | None) -> GGUFExport:
    """What a file written by llama.cpp's tools holds, read back."""
    gguf = require_gguf()
    r = gguf.GGUFReader(str(out_path))
    counts: dict[str, int] = {}
    for t in r.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return GGUFExport(path=out_path, gguf_type=gtype.name, arch=arch, n_tensors=len(r.tensors),
                      nbytes=sum(int(t.n_bytes) for t in r.tensors), decode_bytes=decode_bytes(out_path),
                      tensor_types=counts, adapter_dir=ad)


def export_gguf(base_dir: str | os.PathLike[str], out: str | os.PathLike[str], *,
                adapter_dir: str | os.PathLike[str] | None = None, gguf_type: str = "q8_0", pre: str | None = None,
                name: str | None = None, progress: Callable[[int, int], None] | None = None,
                threads: int | None = None) -> GGUFExport:
    """Write base (+ merged LoRA adapter) as a GGUF file at `out`; return what was written.

    gguf_type: one of GGUF_TYPES (f32, f16, bf16, q8_0, q4_0; q4_k_m, q5_k_m, q6_k through
    llama.cpp's quantizer). pre: llama.cpp pre-tokenizer name when the tokenizer's own is not
    recognised. progress(i, n) after each tensor. An architecture outside ARCHS goes through
    llama.cpp's converter when it is available (see the module docstring).
    """
    gguf = require_gguf()
    from endcloud.end.base import check_model_dir, load_base

    gtype = GGUF_TYPES.get(gguf_type)
    base = check_model_dir(base_dir)
    out_path = Path(out)
    if out_path.is_dir():
        raise ConfigError(f"-o {str(out_path)!r} is a directory; give a file name such as model-{gguf_type}.gguf")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    archs = _config_archs(base)
    if archs and not any(a in ARCHS for a in archs):
        return _export_with_converter(base, out_path, gtype, adapter_dir, threads=threads)
    if gtype.llama_ftype:
        # our writer at the checkpoint's precision, then llama.cpp's quantizer for its K-quant mix
        src = out_path.with_name(f"{out_path.name}.{os.getpid()}.src.gguf")
        try:
            first = export_gguf(base, src, adapter_dir=adapter_dir, gguf_type=_stored_type(base), pre=pre, name=name,
                                progress=progress)
            _quantize_into(src, out_path, gtype, threads=threads)
        finally:
            src.unlink(missing_ok=True)
        return _finish(out_path, gtype, first.arch, first.adapter_dir)
    model, tok = load_base(base, dtype=_load_dtype(base, gtype))
    ad = Path(adapter_dir) if adapter_dir is not None else None
    if ad is not None:
        model = _merge_adapter(model, ad)
    hf_arch = _hf_arch(model)
    arch = ARCHS.get(hf_arch)
    cfg = model.config
    named, tied = _tensors(model, arch)

    partial = out_path.with_name(f"{out_path.name}.{os.getpid()}.partial")  # unique: two exporters never share one
    w = gguf.GGUFWriter(str(partial), arch.gguf_arch)
    try:
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        w.add_name(name or (base.name + (f"+{ad.parent.name}/{ad.name}" if ad else "")))
        w.add_string(SOURCE_KEY, json.dumps({"base": base.name, "adapter": str(ad) if ad else None,
                                             "type": gtype.name, "hf_arch": hf_arch}))
        w.add_context_length(int(cfg.max_position_embeddings))
        w.add_embedding_length(int(cfg.hidden_size))
        w.add_block_count(int(cfg.num_hidden_layers))
        w.add_feed_forward_length(int(cfg.intermediate_size))
        w.add_head_count(int(cfg.num_attention_heads))
        w.add_head_count_kv(int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads))
        w.add_rope_freq_base(_rope_theta(cfg))
        w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
        if head_dim != cfg.hidden_size // cfg.num_attention_heads:
            w.add_key_length(int(head_dim))
            w.add_value_length(int(head_dim))
        if arch.rope_dims_key:
            w.add_rope_dimension_count(int(head_dim))
            w.add_vocab_size(int(cfg.vocab_size))
        w.add_file_type(int(gguf.LlamaFileType[gtype.file_type]))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _tokenizer_metadata(w, tok, int(cfg.vocab_size), pre, gguf)

        plan = []
        for gname, t in named:
            qt = _ggml_type(gname, tuple(t.shape), gtype, gguf)
            shape, dt, nbytes = _planned(tuple(t.shape), qt, gguf)
            w.add_tensor_info(gname, shape, dt, nbytes, raw_dtype=None if qt.name in ("F32", "F16") else qt)
            plan.append((gname, t, qt, nbytes))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        counts: dict[str, int] = {}
        total = decode = 0
        for i, (gname, t, qt, nbytes) in enumerate(plan):
            arr = _convert(t, qt, gguf)
            if arr.nbytes != nbytes:  # a wrong size would only show as a corrupt file at load time
                raise ModelError(f"internal: tensor {gname!r} converted to {arr.nbytes} bytes, planned {nbytes}")
            w.write_tensor_data(arr)
            del arr
            counts[qt.name] = counts.get(qt.name, 0) + 1
            total += nbytes
            decode += nbytes // t.shape[0] if (gname == "token_embd.weight" and not tied) else nbytes
            if progress:
                progress(i + 1, len(plan))
        w.close()
        os.replace(partial, out_path)
    except BaseException:
        w.close()
        partial.unlink(missing_ok=True)
        raise
    return GGUFExport(path=out_path, gguf_type=gtype.name, arch=arch.gguf_arch, n_tensors=len(plan), nbytes=total,
                      decode_bytes=decode, tensor_types=counts, adapter_dir=ad)


# ---- llama.cpp's own tools ------------------------------------------------------------------------
CONVERT_ENV = "ENDCLOUD_LLAMACPP_CONVERT"
QUANTIZE_ENV = "ENDCLOUD_LLAMA_QUANTIZE"


def _quantize_into(src: Path, out_path: Path, gtype: GGUFType, *, threads: int | None = None) -> None:
    """llama.cpp's quantizer: `src` (f32/f16/bf16 GGUF) -> `out_path` as `gtype` (written to a
    partial name, then renamed). llama-cpp-python's binding when installed, else `llama-quantize`."""
    import shutil
    import subprocess

    partial = out_path.with_name(f"{out_path.name}.{os.getpid()}.partial")
    try:
        try:
            import llama_cpp
        except ImportError:
            llama_cpp = None
        if llama_cpp is not None:
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = int(getattr(llama_cpp, gtype.llama_ftype))
            params.nthread = int(threads or 0)
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(partial).encode(), params)
            if rc != 0:
                raise ModelError(f"llama.cpp's quantizer failed on {str(src)!r} (return code {rc})")
        else:
            exe = os.environ.get(QUANTIZE_ENV) or shutil.which("llama-quantize")
            if not exe:
                raise ModelError(f"{gtype.name} is made by llama.cpp's quantizer: {EXTRA_HINT}, or put llama.cpp's "
                                 f"llama-quantize on PATH (or name it in {QUANTIZE_ENV})")
            ftype = gtype.llama_ftype.removeprefix("LLAMA_FTYPE_MOSTLY_")
            done = subprocess.run([exe, str(src), str(partial), ftype] + ([str(threads)] if threads else []),
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise ModelError(f"llama-quantize failed ({done.returncode}): {done.stderr[-400:]}")
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)


def find_converter() -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py: ${CONVERT_ENV}, else on PATH; None when absent."""
    import shutil

    env = os.environ.get(CONVERT_ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ConfigError(f"{CONVERT_ENV}={env!r} is not a file; point it at llama.cpp's convert_hf_to_gguf.py")
        return p
    found = shutil.which("convert_hf_to_gguf.py") or shutil.which("convert_hf_to_gguf")
    return Path(found) if found else None


def _export_with_converter(base: Path, out_path: Path, gtype: GGUFType, adapter_dir, *,
                           threads: int | None = None) -> GGUFExport:
    """An architecture our writer does not map: llama.cpp's converter on the (merged) HF folder."""
    import subprocess
    import sys
    import tempfile

    conv = find_converter()
    archs = _config_archs(base)
    if conv is None:
        raise ModelError(f"GGUF export writes {ARCHS.names()} itself, not {archs!r}; for other architectures "
                         f"endcloud runs llama.cpp's convert_hf_to_gguf.py: clone llama.cpp, pip install its "
                         f"requirements, and set {CONVERT_ENV}=/path/to/llama.cpp/convert_hf_to_gguf.py")
    ad = Path(adapter_dir) if adapter_dir is not None else None
    with tempfile.TemporaryDirectory(prefix="endcloud-convert-", dir=out_path.parent) as tmp:
        src_dir = base
        if ad is not None:  # the converter reads one HF folder: merge the LoRA into a temporary one
            from endcloud.end.merged import export_merged

            src_dir = export_merged(base, Path(tmp) / "merged", adapter_dir=ad, modelfile=False).out_dir
        outtype = gtype.name if gtype.name in ("f32", "f16", "bf16", "q8_0") and not gtype.llama_ftype else \
            _stored_type(base)
        first = out_path if not gtype.llama_ftype else Path(tmp) / "src.gguf"
        cmd = [sys.executable, str(conv), str(src_dir), "--outfile", str(first), "--outtype", outtype]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not first.exists():
            raise ModelError(f"llama.cpp's converter failed on {str(src_dir)!r} ({done.returncode}): "
                             f"{(done.stderr or done.stdout)[-400:]}")
        if gtype.name == "q4_0":
            _quantize_into(first, out_path, GGUFType("q4_0", "", "", "", "", "LLAMA_FTYPE_MOSTLY_Q4_0"), threads=threads)
        elif gtype.llama_ftype:
            _quantize_into(first, out_path, gtype, threads=threads)
    arch = str(read_metadata(out_path, ["general.architecture"]).get("general.architecture", "?"))
    return _finish(out_path, gtype, arch, ad)


# ---- a LoRA adapter as a GGUF adapter (llama-server's --lora) ---------------------------------------
@dataclass
class LoraGGUFExport:
    """What `export_lora_gguf` wrote."""

    path: Path
    arch: str
    n_tensors: int
    rank: int
    alpha: float
    nbytes: int


def export_lora_gguf(base_dir: str | os.PathLike[str], adapter_dir: str | os.PathLike[str],
                     out: str | os.PathLike[str] | None = None) -> LoraGGUFExport:
    """Write a peft LoRA adapter as a llama.cpp GGUF adapter (default: `<adapter_dir>/adapter.gguf`).

    The base decides the architecture and the tensor names (Qwen2 / Llama, as `export_gguf`);
    Llama's q/k LoRA B rows are permuted like the weights they add to. llama.cpp scales the
    product by alpha / rank, as peft does; rsLoRA and DoRA adapters, whose scaling differs,
    are refused, like every adapter type but LoRA."""
    gguf = require_gguf()
    from safetensors.torch import load_file

    from endcloud.end.base import check_model_dir

    base = check_model_dir(base_dir)
    ad = Path(adapter_dir)
    cfg_path = ad / "adapter_config.json"
    try:
        acfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{str(cfg_path)!r} is not a peft adapter config: {e}") from e
    if str(acfg.get("peft_type", "")).upper() != "LORA":
        raise ModelError(f"adapter {str(ad)!r} is of type {acfg.get('peft_type')!r}; only LORA adapters become GGUF "
                         "adapters (prefix / ptuning-v2 key/values have no place in llama.cpp)")
    if acfg.get("use_rslora") or acfg.get("use_dora"):
        raise ModelError(f"adapter {str(ad)!r} uses rsLoRA/DoRA, whose scaling llama.cpp does not apply; merge it "
                         "instead (endcloud export gguf --adapter ...)")
    archs = [a for a in _config_archs(base) if a in ARCHS]
    if not archs:
        raise ModelError(f"GGUF adapters are written for {ARCHS.names()}; {_config_archs(base)!r} needs llama.cpp's "
                         "convert_lora_to_gguf.py")
    arch = ARCHS.get(archs[0])
    mcfg = json.loads((base / "config.json").read_text(encoding="utf-8"))
    n_head = int(mcfg["num_attention_heads"])
    n_kv = int(mcfg.get("num_key_value_heads") or n_head)
    wfile = ad / "adapter_model.safetensors"
    if not wfile.exists():
        raise ModelError(f"{str(ad)!r} has no adapter_model.safetensors (save the adapter with safe_serialization)")
    state = load_file(str(wfile))
    out_path = Path(out) if out is not None else ad / "adapter.gguf"
    pairs: dict[str, dict[str, Any]] = {}
    for key, t in state.items():
        # base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight
        part = next((x for x in ("lora_A", "lora_B") if f".{x}." in key), None)
        if part is None:  # embedding LoRA, modules_to_save, ...: nothing llama.cpp's adapter can hold
            raise ModelError(f"adapter {str(ad)!r} holds {key!r}, which has no llama.cpp tensor in this exporter; "
                             "target attention/MLP projections (the default targets do)")
        module = key.split(f".{part}.")[0].removeprefix("base_model.model.")
        pairs.setdefault(module, {})[part] = t
    named: list[tuple[str, Any]] = []
    rank = 0
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"lora_A", "lora_B"}:
            raise ModelError(f"adapter {str(ad)!r}: module {module!r} lacks one of lora_A / lora_B")
        parts = module.split(".", 3)
        hf = parts[3] + ".weight" if len(parts) == 4 else ""
        if parts[:2] != ["model", "layers"] or hf not in LAYER_TENSORS:
            raise ModelError(f"adapter {str(ad)!r} adapts {module!r}, which has no llama.cpp tensor in this exporter; "
                             "target attention/MLP projections (the default targets do)")
        gname = f"blk.{parts[2]}.{LAYER_TENSORS[hf]}"
        a, b = ab["lora_A"].float(), ab["lora_B"].float()
        if arch.permute_qk and hf == "self_attn.q_proj.weight":
            b = _permute(b, n_head)
        elif arch.permute_qk and hf == "self_attn.k_proj.weight":
            b = _permute(b, n_kv)
        rank = int(a.shape[0])
        named += [(gname + ".lora_a", a), (gname + ".lora_b", b)]
    if not named:
        raise ModelError(f"adapter {str(ad)!r} holds no LoRA tensors")
    alpha = float(acfg.get("lora_alpha") or rank)
    partial = out_path.with_name(f"{out_path.name}.{os.getpid()}.partial")
    w = gguf.GGUFWriter(str(partial), arch.gguf_arch)
    try:
        w.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_string(SOURCE_KEY, json.dumps({"base": base.name, "adapter": str(ad), "type": "lora-adapter"}))
        total = 0
        for gname, t in named:
            arr = t.contiguous().numpy()  # f32: a few MB even for a 7B base at r 8
            w.add_tensor(gname, arr)
            total += arr.nbytes
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(partial, out_path)
    except BaseException:
        w.close()
        partial.unlink(missing_ok=True)
        raise
    return LoraGGUFExport(path=out_path, arch=arch.gguf_arch, n_tensors=len(named), rank=rank, alpha=alpha, nbytes=total)


# ---- reading back -------------------------------------------------------------------------------
def read_metadata(path: str | os.PathLike[str], keys: list[str] | None = None) -> dict[str, Any]:
    """Scalar/string metadata of a GGUF file (`keys`: only these; arrays are skipped)."""
    gguf = require_gguf()
    r = gguf.GGUFReader(str(path))
    out: dict[str, Any] = {}
    for k, f in r.fields.items():
        if (keys is not None and k not in keys) or not f.types or f.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        out[k] = f.contents()
    return out


def decode_bytes(path: str | os.PathLike[str]) -> int:
    """Weight bytes one decode step reads from this GGUF file.

    Every tensor once; an input embedding that is not also the output head only by one row
    (a lookup), while a tied one is read whole as the output projection.
    """
    gguf = require_gguf()
    r = gguf.GGUFReader(str(path))
    names = {t.name for t in r.tensors}
    total = 0
    for t in r.tensors:
        if t.name == "token_embd.weight" and "output.weight" in names:
            total += int(t.n_bytes) // int(t.shape[-1])  # GGUF shape is (n_embd, n_vocab): one of n_vocab rows
        else:
            total += int(t.n_bytes)
    return total
