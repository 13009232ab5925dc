"""The one language rule, its fast letter count, the CJK classes and the token estimates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from endcloud.text import (CJK_CHARACTER, CJK_IDEOGRAPH, LATIN_LETTER, ZH_SHARE, clean, count_letters, detect_lang,
                           estimate_message_tokens, estimate_tokens, normalise)


@pytest.mark.parametrize(
    "texts, lang",
    [
        (["你好，请问这个有货吗", "有的亲"], "zh"),
        (["Hello, do you have this in red?", "Yes, we do."], "en"),
        (["订单 1234567890123 还没到"], "zh"),  # digits are not letters: the order number does not make it English
        (["SKU A1B2C3D4E5 有货吗"], "zh"),  # 3 ideographs, 8 latin letters: above a fifth
        (["买 iPhone 15 Pro Max 送壳吗"], "zh"),
        (["[订单x]还没到 OK"], "zh"),
        (["Is the 毛巾 cotton? I need it for my kitchen, thanks a lot"], "en"),  # one Chinese brand word
        (["Do you ship 中通 to Canada?"], "en"),
        (["OK。"], "en"),  # CJK punctuation is not a letter
    ],
)
def test_the_rule_on_clear_cases(texts, lang):
    assert detect_lang(*texts) == lang


@pytest.mark.parametrize("text", ["", "   ", "1234567890123", "¥99.00 / 3 ？", "。！？", "😀👍", "\ud800"])
def test_text_without_letters_gets_the_default(text):
    assert detect_lang(text) == "en"
    assert detect_lang(text, default="zh") == "zh"


def test_the_threshold_is_one_fifth_of_the_letters():
    assert ZH_SHARE == 0.2
    assert detect_lang("中abcd") == "zh"  # exactly 1 in 5
    assert detect_lang("中" * 3 + "a" * 12) == "zh"  # exactly 3 in 15 (0.2 * 15 is not 3.0 in floating point)
    assert detect_lang("中abcde") == "en"  # 1 in 6
    assert detect_lang("中文" + "a" * 9) == "en"  # 2 in 11


def test_texts_are_weighed_together_and_sample_chars_looks_only_at_the_opening():
    assert detect_lang("中文", "abcdefgh") == "zh"  # 2 in 10
    assert detect_lang("中", "abcdefgh") == "en"  # 1 in 9
    assert detect_lang("hello", "中文中文中文", sample_chars=5) == "en"
    assert detect_lang("hello", "中文中文中文", sample_chars=8) == "zh"


# Characters at the edges of the ranges, where a byte-level count is most likely to slip.
EDGES = [
    "\u33ff", "\u3400", "\u4dbf", "\u4dc0", "\u4dff", "\u4e00", "\u9fff", "\ua000", "\uf8ff", "\uf900", "\ufaff",
    "\ufb00", "\u3000", "\u3002", "\u3042", "\u30a2", "\uff01", "\uff21", "\uff41", "\uffef", "\U00020000",
    "\ud800", "\udfff", "@", "A", "Z", "[", "`", "a", "z", "{", "é", "ß", "Ω", "й", "0", " ", "\x00", "😀",
]
MIXED = [
    "", "abc", "订单 1234567890123 还没到", "买 iPhone 15 Pro Max 送壳吗。", "㐀䶵䷀䷿一鿿豈頻", "ＡＢＣ１２３，！？",
    "カタカナ ひらがな 한국어", "café naïve 中文", "亲～在的呢[数字x]#E-s[数字x]", "".join(EDGES), "\ud800中\udfffa",
]


def _by_regex(text: str) -> tuple[int, int]:
    return len(CJK_IDEOGRAPH.findall(text)), len(LATIN_LETTER.findall(text))


@pytest.mark.parametrize("text", MIXED + EDGES)
def test_the_fast_count_agrees_with_the_regex_classes(text):
    assert count_letters(text) == _by_regex(text)


_NEAR_EDGES = st.one_of(
    st.sampled_from(EDGES),
    st.characters(min_codepoint=0x33F0, max_codepoint=0x3410),
    st.characters(min_codepoint=0x4DB0, max_codepoint=0x4E10),
    st.characters(min_codepoint=0x9FF0, max_codepoint=0xA010),
    st.characters(min_codepoint=0xF8F0, max_codepoint=0xFB10),
    st.characters(),
)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_NEAR_EDGES, max_size=60))
def test_the_fast_count_agrees_with_the_regex_classes_on_any_text(text):
    ideographs, latin = _by_regex(text)
    assert count_letters(text) == (ideographs, latin)
    expected = "zh" if ideographs and ideographs / (ideographs + latin) >= ZH_SHARE else "en"
    assert detect_lang(text, default="none") == (expected if ideographs + latin else "none")


def test_the_cjk_classes():
    assert all(CJK_IDEOGRAPH.fullmatch(c) for c in "㐀䶵一鿿豈")
    assert not any(CJK_IDEOGRAPH.fullmatch(c) for c in "䷀。，ＡあA1")
    assert all(CJK_CHARACTER.fullmatch(c) for c in "㐀一豈　。、【】，！Ａ１")
    assert not any(CJK_CHARACTER.fullmatch(c) for c in "aZ1 ,!あ")


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("", 0), ("几天发货", 4), ("abcdefgh", 2), ("abc", 1), ("abcdefghi", 3),
        ("几天发货？ ok", 6),  # 5 CJK characters (full-width ？ included) + 3 others -> 1
        ("【包邮】。、", 6), ("ＡＢ", 2), ("㐀豈", 2), ("订单 1234567890123", 6),  # 2 + ceil(14 / 4)
    ],
)
def test_estimate_tokens(text, tokens):
    assert estimate_tokens(text) == tokens


def test_estimate_message_tokens_adds_overhead_per_message_and_per_request():
    msgs = [{"role": "system", "content": "abcdefgh"}, {"role": "user", "content": "几天发货"}, {"role": "assistant"}]
    assert estimate_message_tokens(msgs) == (4 + 2) + (4 + 4) + (4 + 0) + 2
    assert estimate_message_tokens([]) == 2


def test_normalise_and_clean():
    assert normalise(" Ｈｅｌｌｏ  World，\t你 好 ") == "helloworld,你好"
    assert clean(" Ｈｅｌｌｏ  World，\t你 好 ") == "hello world, 你 好"
    assert normalise(None) == clean(None) == ""  # type: ignore[arg-type]
