"""A tokenizer `train_tokenizer` made tokenizes the same after save -> load as when it was trained.

transformers 5 loads a qwen2 folder's tokenizer as `Qwen2Tokenizer`, which keeps the saved
vocabulary but rebuilds the normalizer and split rules ("20x20" becomes 2,0,x,2,0 where
pretraining saw 20,x,20): `load_tokenizer` must hand back the trained rules for folders
endcloud wrote (marked, or from before the mark), and leave every other folder to transformers.
"""

from __future__ import annotations

import json
import shutil

import pytest

from endcloud.end.base import load_tokenizer, render_chat
from endcloud.end.tokenizer import CHAT_TEMPLATE, FORMAT_KEY, SPECIAL_TOKENS, is_endcloud_tokenizer

pytestmark = pytest.mark.usefixtures("few_threads")

# Digits and digit runs, CJK (seen and unseen), full-width forms, English with runs of spaces,
# contractions, punctuation, emoji, kana, tabs/newlines/CRLF, a decomposed accent (NFC would
# compose it), special tokens inline, and rendered chat text.
TEXTS = [
    "20x20", "20x20厘米", "您好，这款毛巾是纯棉的，20x20厘米，干湿两用。", "1234567890", "满99减10", "4 pm",
    "Hello, how can I help you today?", "  two  spaces   and three ", "don't I'll we've THEY'RE",
    "This towel is pure cotton, 20x20 cm, and can be used wet or dry.", "a,b.c;d:e!f?g(h)[i]{j}<k>",
    "订单号 1234567890，coupon SAVE10 -> 10% off\n\n谢谢", "龘靐齉 🙂 ありがとう ＡＢＣ１２３", "亲~ 😀😀👍🏽",
    "line one\nline two\r\n\n\tindented", "\n\n\n", " ", "", "cafe\u0301 vs café", "ｶﾀｶﾅ and ﬁ ligature",
    "<|im_start|>user\n在吗<|im_end|>\n<|im_start|>assistant\n", "默认发中通快递，下午4点前下单当天发货。We ship with ZTO.",
    "x" * 40 + " " + "好" * 20,
]
CONVS = [
    [{"role": "user", "content": "毛巾是什么材质？20x20吗"}],
    [{"role": "system", "content": "You are a shop assistant."}, {"role": "user", "content": "When do you ship?"},
     {"role": "assistant", "content": "Orders before 4 pm ship today."}, {"role": "user", "content": "好的 thanks\n"}],
]


def _ids(tok, texts):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _same_ids(got, want, texts):
    diff = [(t, w, g) for t, w, g in zip(texts, want, got) if w != g]
    assert not diff, f"{len(diff)} of {len(texts)} texts tokenize differently, first: {diff[0]!r}"


def test_trained_tokenizer_merges_digit_runs(tiny_tokenizer):
    """Precondition: the fixture tokenizer learned multi-digit pieces, so a per-digit split would show."""
    assert len(tiny_tokenizer.tokenize("20x20")) == 3


def test_saved_tokenizer_loads_with_its_trained_rules(tiny_tokenizer, tiny_base_dir):
    tok = load_tokenizer(tiny_base_dir)
    assert is_endcloud_tokenizer(tiny_base_dir)
    _same_ids(_ids(tok, TEXTS), _ids(tiny_tokenizer, TEXTS), TEXTS)
    chats = [render_chat(tiny_tokenizer, c) for c in CONVS]
    _same_ids(_ids(tok, chats), _ids(tiny_tokenizer, chats), chats)
    # normalizer, pre-tokenizer, model and decoder: the very tokenizer that was trained
    assert json.loads(tok.backend_tokenizer.to_str()) == json.loads(tiny_tokenizer.backend_tokenizer.to_str())


def test_special_tokens_template_padding_and_decode_are_unchanged(tiny_tokenizer, tiny_base_dir):
    tok = load_tokenizer(tiny_base_dir)
    assert len(tok) == len(tiny_tokenizer)
    assert tok.convert_tokens_to_ids(SPECIAL_TOKENS) == tiny_tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert (tok.eos_token_id, tok.pad_token_id) == (tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id)
    assert tok.chat_template == tiny_tokenizer.chat_template == CHAT_TEMPLATE
    for conv in CONVS:
        want = tiny_tokenizer.apply_chat_template(conv, add_generation_prompt=True)["input_ids"]
        assert tok.apply_chat_template(conv, add_generation_prompt=True)["input_ids"] == want
    assert tok.padding_side == "right" and load_tokenizer(tiny_base_dir, padding_side="left").padding_side == "left"
    batch, want = tok(TEXTS[:4], padding=True), tiny_tokenizer(TEXTS[:4], padding=True)
    assert batch["input_ids"] == want["input_ids"] and batch["attention_mask"] == want["attention_mask"]
    for ids in _ids(tiny_tokenizer, TEXTS + ["<|im_start|>user\n你好<|im_end|>"]):
        for skip in (False, True):
            assert tok.decode(ids, skip_special_tokens=skip) == tiny_tokenizer.decode(ids, skip_special_tokens=skip)


def test_endmodel_serves_with_the_trained_rules(tiny_tokenizer, tiny_base_dir):
    from endcloud.runtime.model import EndModel

    m = EndModel.load(tiny_base_dir)
    assert m.tokenizer.padding_side == "left"
    _same_ids(_ids(m.tokenizer, TEXTS), _ids(tiny_tokenizer, TEXTS), TEXTS)


def test_pretrained_base_reloads_with_the_rules_in_its_tokenizer_json(train_base_dir):
    """`endcloud pretrain`'s own output folder: served ids = tokenizer.json applied as written."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(train_base_dir / "tokenizer.json"))
    want = [raw.encode(t, add_special_tokens=False).ids for t in TEXTS]
    _same_ids(_ids(load_tokenizer(train_base_dir), TEXTS), want, TEXTS)


def test_folder_saved_before_the_mark_loads_identically(tmp_path, tiny_tokenizer, tiny_base_dir):
    old = tmp_path / "old-base"
    shutil.copytree(tiny_base_dir, old)
    cfg_path = old / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop(FORMAT_KEY)  # what the earlier version wrote: no mark, tokenizer_class TokenizersBackend
    assert cfg["tokenizer_class"] == "TokenizersBackend"
    cfg_path.write_text(json.dumps(cfg))
    assert is_endcloud_tokenizer(old)
    tok = load_tokenizer(old)
    _same_ids(_ids(tok, TEXTS), _ids(tiny_tokenizer, TEXTS), TEXTS)
    assert tok.chat_template == CHAT_TEMPLATE and tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"


# ---- folders endcloud did not write keep the rules transformers gives them --------------------
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def _foreign_tokenizer(family: str):
    """A byte-level BPE trained with another family's rules (not endcloud's CJK split)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from tests.conftest import FIXTURE_TEXT

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    if family == "qwen2":  # what Qwen2.5's tokenizer.json holds
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    elif family == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:  # digits split one by one, then whitespace: a rule set no named class has
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, min_frequency=1, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(FIXTURE_TEXT, trainer=trainer)
    return tok


@pytest.mark.parametrize(("family", "tokenizer_class", "model_type"), [
    ("qwen2", "Qwen2Tokenizer", "qwen2"),  # a real Qwen2.5 folder's shape
    ("gpt2", "GPT2Tokenizer", "gpt2"),
    ("digits", "PreTrainedTokenizerFast", "qwen2"),  # generic class, but not endcloud's tokenizer.json
])
def test_other_families_load_as_transformers_loads_them(tmp_path, family, tokenizer_class, model_type):
    from transformers import AutoConfig, AutoTokenizer

    raw = _foreign_tokenizer(family)
    raw.save(str(tmp_path / "tokenizer.json"))
    AutoConfig.for_model(model_type, vocab_size=raw.get_vocab_size()).save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": tokenizer_class, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    assert not is_endcloud_tokenizer(tmp_path)

    tok = load_tokenizer(tmp_path)
    auto = AutoTokenizer.from_pretrained(str(tmp_path), padding_side="right", local_files_only=True)
    assert type(tok) is type(auto)
    assert json.loads(tok.backend_tokenizer.to_str()) == json.loads(auto.backend_tokenizer.to_str())
    if family != "digits":  # a named class rebuilds its own rules: the ones this tokenizer.json holds
        assert type(tok).__name__ == tokenizer_class
        want = [raw.encode(t, add_special_tokens=False).ids for t in TEXTS]
        _same_ids(_ids(tok, TEXTS), want, TEXTS)
