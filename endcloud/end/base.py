"""Loading the end model's base: any local Hugging Face causal LM directory.

A shop points `--base` at a local folder (Qwen2.5-0.5B, ChatGLM3-6B, or the model
`endcloud pretrain` made). Nothing is fetched from a hub: a missing or broken folder is a
ModelError that says what is missing. Chat formatting comes from the tokenizer's own
template; a model without one gets ChatML (`tokenizer.CHAT_TEMPLATE`).

A folder that ships its own Python code (config.json `auto_map`: ChatGLM3, Baichuan, InternLM2…)
loads only with `trust_remote_code=True` (`--trust-remote-code`, `ENDCLOUD_TRUST_REMOTE_CODE=1`):
that code runs in this process with the shop's permissions, so the opt-in is explicit and the
refusal says which files would run. Where the weights go (`device`) and in what precision is
decided by `endcloud.end.device`; `load_in_4bit` is QLoRA's base (bitsandbytes, GPU only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from endcloud.errors import ModelError
from endcloud.end.tokenizer import CHAT_TEMPLATE, is_endcloud_tokenizer


def check_model_dir(path: str | os.PathLike[str]) -> Path:
    """Return `path` as a Path if it looks like a HF model dir, else raise ModelError."""
    p = Path(path)
    if not p.is_dir():
        raise ModelError(
            f"base model directory {str(p)!r} does not exist; pass --base PATH to a local Hugging Face "
            "model folder, or run `endcloud pretrain` to build the embedded default"
        )
    if not (p / "config.json").exists():
        raise ModelError(f"{str(p)!r} has no config.json: it is not a Hugging Face model directory")
    return p


def remote_code(path: str | os.PathLike[str]) -> list[str]:
    """The `auto_map` entries of a model folder (config.json, tokenizer_config.json): the
    classes loading it would import from the folder's own .py files ([] for a plain folder)."""
    import json

    out: list[str] = []
    for name in ("config.json", "tokenizer_config.json"):
        f = Path(path) / name
        try:
            data = json.loads(f.read_text(encoding="utf-8")) if f.exists() else {}
        except (OSError, ValueError):
            continue
        amap = data.get("auto_map") if isinstance(data, dict) else None
        if isinstance(amap, dict):
            for v in amap.values():
                out.extend(str(x) for x in (v if isinstance(v, (list, tuple)) else [v]) if x)
    return sorted(set(out))


def check_remote_code(path: str | os.PathLike[str], trust_remote_code: bool) -> bool:
    """Whether loading `path` runs its own code; a ModelError when it would and the caller did not opt in."""
    code = remote_code(path)
    if code and not trust_remote_code:
        files = sorted({c.split(".")[0] + ".py" for c in code if "--" not in c})
        raise ModelError(
            f"{str(path)!r} ships its own model code ({', '.join(code)}; files {', '.join(files) or 'on a hub'}): "
            "loading it runs that Python code with your permissions. Read it, then pass --trust-remote-code "
            "(or set ENDCLOUD_TRUST_REMOTE_CODE=1) to allow it"
        )
    return bool(code)


def load_tokenizer(path: str | os.PathLike[str], *, padding_side: str = "right", trust_remote_code: bool = False):
    """The tokenizer of a local model dir: the one it was trained with, token for token.

    A tokenizer `endcloud pretrain` wrote loads from its tokenizer.json as is: transformers 5
    would load a qwen2 folder's as `Qwen2Tokenizer`, which keeps the vocabulary but swaps in
    its own normalizer and split rules (see `endcloud.end.tokenizer`). Any other folder (a real
    Qwen2.5, ChatGLM3, ...) loads the way transformers decides, untouched.
    """
    from transformers import AutoTokenizer, TokenizersBackend

    p = check_model_dir(path)
    remote = check_remote_code(p, trust_remote_code)
    loader = TokenizersBackend if is_endcloud_tokenizer(p) else AutoTokenizer
    extra = {"trust_remote_code": True} if remote else {}
    try:
        tok = loader.from_pretrained(str(p), padding_side=padding_side, local_files_only=True, **extra)
    except Exception as e:  # transformers raises many types for a broken dir
        raise ModelError(f"cannot load a tokenizer from {str(p)!r}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHAT_TEMPLATE
    return tok


def load_base(path: str | os.PathLike[str], *, dtype: Any = None, padding_side: str = "right", device: Any = None,
              trust_remote_code: bool | None = None, load_in_4bit: bool = False):
    """Load (model, tokenizer) from a local causal-LM directory, in eval mode.

    `device`: a torch.device or flag value (None: the CPU; callers resolve "auto" with
    `endcloud.end.device`). `dtype` None: fp32. `trust_remote_code` None reads
    $ENDCLOUD_TRUST_REMOTE_CODE. `load_in_4bit`: NF4 weights with `dtype` compute (QLoRA's base;
    needs the `endcloud[qlora]` extra and a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    from endcloud.end.device import parse_dtype, trust_remote_code as trusted

    p = check_model_dir(path)
    trust = trusted(trust_remote_code)
    tok = load_tokenizer(p, padding_side=padding_side, trust_remote_code=trust)
    remote = check_remote_code(p, trust)
    dt = parse_dtype(dtype) if dtype is not None else torch.float32
    dev = torch.device(device) if device is not None else torch.device("cpu")
    kw: dict[str, Any] = {"dtype": dt, "local_files_only": True}
    if remote:
        kw["trust_remote_code"] = True
    if load_in_4bit:
        kw["quantization_config"] = bnb_4bit_config(dt, dev)
        kw["device_map"] = {"": dev}  # bitsandbytes quantizes while placing the weights on the GPU
    try:
        model = AutoModelForCausalLM.from_pretrained(str(p), **kw)
    except Exception as e:
        raise ModelError(f"cannot load a causal LM from {str(p)!r}: {e}") from e
    if not load_in_4bit and dev.type != "cpu":
        model.to(dev)
    model.eval()
    return model, tok


QLORA_HINT = "install the optional extra: pip install 'endcloud[qlora]' (bitsandbytes; its 4-bit kernels need a CUDA GPU)"


def bnb_4bit_config(compute_dtype: Any, device: Any):
    """transformers' BitsAndBytesConfig for QLoRA (NF4, double quantization, `compute_dtype`
    matmuls); a ConfigError where it cannot run: not a GPU, or bitsandbytes missing."""
    import importlib.util

    from endcloud.errors import ConfigError

    if getattr(device, "type", str(device)) != "cuda":
        raise ConfigError(f"--qlora loads the base in 4 bits with bitsandbytes, whose kernels need a CUDA GPU; the "
                          f"device is {device} (use --device cuda, or drop --qlora and train LoRA on a bf16/fp32 base)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"--qlora needs bitsandbytes; {QLORA_HINT}")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def render_chat(tokenizer, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    """Messages -> the prompt string the model was trained on (its own chat template)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def renders_late_system(tokenizer) -> bool:
    """Whether the chat template renders a system message after other turns (ChatML,
    Qwen2.5 and Llama 3 do; some templates refuse anything but a leading system message).
    Where it does, training and serving put a question's shop knowledge just before the
    answer (`endcloud.kb.prompt`), so earlier turns keep their ids and the prefix cache hits."""
    probe = "\x1flate-system-probe\x1f"
    try:
        text = render_chat(tokenizer, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                       {"role": "system", "content": probe}, {"role": "user", "content": "c"}])
        return probe in text and text.index(probe) > text.index("b")
    except Exception:  # the template raised: it wants one leading system message
        return False


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn (<|im_end|>, eos, <|endoftext|> where present)."""
    ids: set[int] = set()
    for t in ("<|im_end|>", "<|endoftext|>", tokenizer.eos_token):
        if t:
            i = tokenizer.convert_tokens_to_ids(t)
            if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id:
                ids.add(i)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def tiny_qwen2(tokenizer, *, hidden_size: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
               intermediate_size: int = 128, max_positions: int = 1024, seed: int = 0):
    """A randomly initialised Qwen2 causal LM sized for tests and the from-scratch default."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return Qwen2ForCausalLM(cfg)
