"""Loading the end model's base: any local Hugging Face causal LM directory.

A shop points `--base` at a local folder (Qwen2.5-0.5B, ChatGLM3-6B, or the model
`endcloud pretrain` made). Nothing is fetched from a hub: a missing or broken folder is a
ModelError that says what is missing. Chat formatting comes from the tokenizer's own
template; a model without one gets ChatML (`tokenizer.CHAT_TEMPLATE`).
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


def load_tokenizer(path: str | os.PathLike[str], *, padding_side: str = "right"):
    """The tokenizer of a local model dir: the one it was trained with, token for token.

    A tokenizer `endcloud pretrain` wrote loads from its tokenizer.json as is: transformers 5
    would load a qwen2 folder's as `Qwen2Tokenizer`, which keeps the vocabulary but swaps in
    its own normalizer and split rules (see `endcloud.end.tokenizer`). Any other folder (a real
    Qwen2.5, ChatGLM3, ...) loads the way transformers decides, untouched.
    """
    from transformers import AutoTokenizer, TokenizersBackend

    p = check_model_dir(path)
    loader = TokenizersBackend if is_endcloud_tokenizer(p) else AutoTokenizer
    try:
        tok = loader.from_pretrained(str(p), padding_side=padding_side, local_files_only=True)
    except Exception as e:  # transformers raises many types for a broken dir
        raise ModelError(f"cannot load a tokenizer from {str(p)!r}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHAT_TEMPLATE
    return tok


def load_base(path: str | os.PathLike[str], *, dtype: Any = None, padding_side: str = "right"):
    """Load (model, tokenizer) from a local causal-LM directory, in eval mode on CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    p = check_model_dir(path)
    tok = load_tokenizer(p, padding_side=padding_side)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype or torch.float32, local_files_only=True)
    except Exception as e:
        raise ModelError(f"cannot load a causal LM from {str(p)!r}: {e}") from e
    model.eval()
    return model, tok


def render_chat(tokenizer, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    """Messages -> the prompt string the model was trained on (its own chat template)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


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
