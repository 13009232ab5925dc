"""Each cleaning rule changes what it should, leaves the rest, and is counted."""

from __future__ import annotations

import unicodedata
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from endcloud.corpus import CleanConfig, clean_text, clean_turns, detect_lang, join_segmented, near_key
from endcloud.records import Turn

CFG = CleanConfig()


def _clean(text: str, cfg: CleanConfig = CFG) -> tuple[str, Counter]:
    stats: Counter = Counter()
    return clean_text(text, cfg, stats), stats


def test_nfkc_fullwidth_to_plain():
    out, stats = _clean("ＡＢＣ１２３，好的！")
    assert out == "ABC123,好的!"
    assert stats == Counter(nfkc_changed=1)


def test_whitespace_collapsed_and_stripped():
    out, stats = _clean("  好的\t\t亲 \n 请稍等  ")
    assert out == "好的 亲 请稍等"
    assert stats["whitespace_collapsed"] == 1
    assert _clean("好的 亲")[1] == Counter()  # already clean: nothing counted


def test_emoticon_codes_removed():
    out, stats = _clean("好的 谢谢#E-s[数字x] #E-b12")
    assert out == "好的 谢谢"
    assert stats["emoticon_removed"] == 2


def test_urls_replaced_or_removed():
    out, stats = _clean("请点击 https://item.jd.com/100012.html?x=1[数字x]查看 或 www.example.com")
    assert out == "请点击 [URL][数字x]查看 或 [URL]"
    assert stats["url_replaced"] == 2
    out, _ = _clean("see http://a.cn/x now", CleanConfig(url_placeholder=""))
    assert out == "see now"


def test_too_long_truncated_or_dropped():
    out, stats = _clean("亲" * 20, CleanConfig(max_turn_chars=8))
    assert out == "亲" * 8 and stats["too_long_truncated"] == 1
    out, stats = _clean("亲" * 20, CleanConfig(max_turn_chars=8, long_turns="drop"))
    assert out == "" and stats["too_long_dropped"] == 1
    with pytest.raises(ValueError, match="long_turns"):
        CleanConfig(long_turns="shorten")  # type: ignore[arg-type]


def test_placeholders_survive_cleaning():
    text = "订单[ORDERID_10005629] 4**号 [订单x] [数字x]-[数字x]天 [PHONE_1]"
    assert _clean(text)[0] == text


def test_empty_turns_dropped_and_neighbours_merged():
    turns = [Turn("user", "在吗"), Turn("assistant", " #E-s[数字x] "), Turn("user", "发货了吗", {"k": 1}), Turn("assistant", "发了")]
    stats: Counter = Counter()
    out = clean_turns(turns, CFG, stats)
    assert [(t.role, t.text) for t in out] == [("user", "在吗 发货了吗"), ("assistant", "发了")]
    assert out[0].meta == {"k": 1}
    assert stats["empty_dropped"] == 1 and stats["merged_after_clean"] == 1 and stats["emoticon_removed"] == 1


def test_join_segmented_keeps_latin_spaces():
    assert join_segmented("韵达 邮政 EMS 仓库 除 EMS 外 另外 2 家") == "韵达邮政EMS仓库除EMS外另外2家"
    assert join_segmented("do you ship to Beijing") == "do you ship to Beijing"
    assert join_segmented("买 iPhone 12 pro 送 壳") == "买iPhone 12 pro送壳"


@pytest.mark.parametrize(
    "texts, lang",
    [
        (["你好，请问这个有货吗", "有的亲"], "zh"),
        (["Hello, do you have this in red?", "Yes, we do."], "en"),
        (["[订单x]还没到 OK"], "zh"),
        (["Is the 毛巾 cotton? I need it for my kitchen, thanks a lot"], "en"),
        ([""], "en"),
    ],
)
def test_detect_lang(texts, lang):
    assert detect_lang(texts) == lang


def test_near_key_ignores_punctuation_digits_case_space():
    assert near_key("好的，亲！3天内发货。") == near_key("好的 亲 5天内发货") == "好的亲天内发货"
    assert near_key("Yes, 20 in stock!") == near_key("yes in STOCK")
    assert near_key("好的") != near_key("不好")


@given(st.text(alphabet="abcXYZ019 ，！？～：；（）\u3000好的亲ＡＢ１２\u0301e\u00e9\uff0e\u2460\u3002\t", max_size=30))
@settings(max_examples=100, deadline=None)
def test_fast_nfkc_path_equals_unicodedata(text):
    # The cheap replacements for common full-width marks must give exactly NFKC.
    out = clean_text(text, CleanConfig(max_turn_chars=10_000), Counter())
    assert out == " ".join(unicodedata.normalize("NFKC", text).split())
