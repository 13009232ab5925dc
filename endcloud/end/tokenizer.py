"""Training a byte-level BPE tokenizer for Chinese + English shop text.

Byte-level BPE alone treats a run of Chinese characters as one "word" and learns merges
across whole sentences; splitting every CJK character (and full-width punctuation) off
first keeps merges meaningful for Chinese while English words still merge normally.
The result is saved as a normal Hugging Face tokenizer directory with a ChatML template.
"""

from __future__ import annotations

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
CJK = "[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"


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
    )
    return fast
