"""Training a byte-level BPE tokenizer for Chinese + English shop text, and recognising one on disk.

Byte-level BPE alone treats a run of Chinese characters as one "word" and learns merges
across whole sentences; splitting every CJK character (and full-width punctuation) off
first keeps merges meaningful for Chinese while English words still merge normally.
The result is saved as a normal Hugging Face tokenizer directory with a ChatML template.

Loading it back needs care (`endcloud.end.base.load_tokenizer` does it): transformers 5
picks the tokenizer class from the model's `model_type` for the types it lists in
`MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS` (qwen2 among them), ignoring the saved
`tokenizer_class`, and a class with its own `__init__` (`Qwen2Tokenizer`) takes only the
vocabulary and merges from `tokenizer.json` and rebuilds the normalizer (NFC), the split
regex (one digit per piece, so "20x20" -> 2,0,x,2,0) and the decoder from its code. A
folder written here is therefore marked (`FORMAT_KEY` in tokenizer_config.json) and is
loaded as the generic `TokenizersBackend`, which reads `tokenizer.json` whole: the rules
it was trained with. `is_endcloud_tokenizer` also recognises folders saved before the mark
existed by their pre-tokenizer, so they need no re-training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# ChatML, as Qwen2 uses: every real chat model dir brings its own template; ours is this.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Not endcloud.text's classes, on purpose: this exact string is saved in every trained
# tokenizer.json and matched by value (on loading, and in end/gguf.py), so widening it
# (extension A, compatibility ideographs) would make every existing tokenizer unrecognised.
CJK = "[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"
# tokenizer_config.json key -> version: "tokenizer.json in this folder is the whole tokenizer".
FORMAT_KEY = "endcloud_tokenizer"
FORMAT_VERSION = 1
# Classes that mean "no model-specific rules: tokenizer.json defines everything".
GENERIC_CLASSES = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 8000, min_frequency: int = 2):
    """Train a zh+en byte-level BPE on `texts`; return a transformers fast tokenizer.

    Right padding is the default: prefix-tuned models carry no rotary position for their
    virtual tokens, and learn with right padding (see docs/architecture.md, end model).
    """
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CJK), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        padding_side="right",
        chat_template=CHAT_TEMPLATE,
        **{FORMAT_KEY: FORMAT_VERSION},  # an unknown kwarg is kept in init_kwargs: saved in tokenizer_config.json
    )
    return fast


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_endcloud_tokenizer(path: str | os.PathLike[str]) -> bool:
    """Whether the folder's tokenizer was written by `train_tokenizer` (and must load from tokenizer.json as is).

    Marked folders say so in tokenizer_config.json. Folders from before the mark are
    recognised by what nobody else writes: a generic tokenizer class and `train_tokenizer`'s
    own pre-tokenizer (each CJK character isolated, then GPT-2's byte-level split).
    """
    p = Path(path)
    if not (p / "tokenizer.json").is_file():
        return False
    cfg = _read_json(p / "tokenizer_config.json") or {}
    if cfg.get("auto_map"):  # the folder ships its own tokenizer code: never second-guess it
        return False
    if cfg.get(FORMAT_KEY) is not None:
        return True
    if cfg.get("tokenizer_class") not in GENERIC_CLASSES:
        return False
    pre = (_read_json(p / "tokenizer.json") or {}).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not isinstance(steps, list) or len(steps) != 2:
        return False
    if not all(isinstance(s, dict) for s in steps):
        return False
    split, byte_level = steps
    # field by field, not the whole JSON: a newer `tokenizers` may serialise extra defaults
    return (
        split.get("type") == "Split"
        and split.get("pattern") == {"Regex": CJK}
        and str(split.get("behavior", "")).lower() == "isolated"
        and not split.get("invert")
        and byte_level.get("type") == "ByteLevel"
        and byte_level.get("use_regex", True) is True
        and not byte_level.get("add_prefix_space")
    )
