"""Each cleaning rule changes what it should, leaves the rest, and is counted."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import endcloud.text
from endcloud.corpus import CleanConfig, clean_text, clean_turns, detect_lang, join_segmented, near_key
from endcloud.corpus.clean import clean_lists, clean_many, cut_long, near_key_bytes, near_keys_bytes, normalise_whitespace
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
    assert out == "好的 亲\n请稍等"  # the line break is kept (tests/corpus/test_realdata_normalise.py)
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
    assert out == "亲" * 8 and stats["too_long_truncated"] == 1  # between two ideographs: a character boundary
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


def test_the_corpus_language_is_the_shared_rule():
    # the rule itself is tested in tests/test_text.py
    assert detect_lang is endcloud.text.detect_lang


def test_near_key_ignores_punctuation_digits_case_space():
    assert near_key("好的，亲！3天内发货。") == near_key("好的 亲 5天内发货") == "好的亲天内发货"
    assert near_key("Yes, 20 in stock!") == near_key("yes in STOCK")
    assert near_key("好的") != near_key("不好")


@given(st.text(alphabet="abcXYZ019 ，！？～：；（）\u3000好的亲ＡＢ１２\u0301e\u00e9\uff0e\u2460\u3002\t", max_size=30))
@settings(max_examples=100, deadline=None)
def test_fast_nfkc_path_equals_unicodedata(text):
    # The cheap replacements for common full-width marks must give exactly NFKC.
    out = clean_text(text, CleanConfig(max_turn_chars=10_000), Counter())
    assert out == normalise_whitespace(unicodedata.normalize("NFKC", text))


# --------------------------------------------------------------------------- batch == one by one
#
# `clean_many` cleans a whole chunk at once on a joined string; the oracle below is the
# straightforward per-text implementation it replaced. Same texts, same counts, always.

_ORACLE_EMOTICON = re.compile(r"#E-[A-Za-z]{1,3}(?:\[[^\]\s]{1,8}\]|\d{1,3})")
_ORACLE_URL = re.compile(r"(?:https?://|www\.)[A-Za-z0-9\-._~:/?#@!$&'*+,;=%]+", re.IGNORECASE)


def _oracle_clean_lists(roles, texts, metas, cfg, stats):
    out_r, out_t, out_m = [], [], ([] if metas is not None else None)
    for i, text in enumerate(texts):
        if not unicodedata.is_normalized("NFKC", text):
            text = unicodedata.normalize("NFKC", text)
            stats["nfkc_changed"] += 1
        if "#E-" in text:
            text, n = _ORACLE_EMOTICON.subn("", text)
            stats["emoticon_removed"] += n
        if "://" in text or "www." in text or "WWW." in text:
            text, n = _ORACLE_URL.subn(cfg.url_placeholder, text)
            stats["url_replaced"] += n
        collapsed = normalise_whitespace(text)
        if collapsed != text:
            stats["whitespace_collapsed"] += 1
            text = collapsed
        if len(text) > cfg.max_turn_chars:
            if cfg.long_turns == "drop":
                stats["too_long_dropped"] += 1
                continue
            if cfg.long_turns == "truncate":
                stats["too_long_truncated"] += 1
                text = cut_long(text, cfg.max_turn_chars)
        if not text:
            stats["empty_dropped"] += 1
            continue
        if out_r and out_r[-1] == roles[i]:
            out_t[-1] = f"{out_t[-1]} {text}"
            if out_m is not None and metas[i]:
                out_m[-1] = {**out_m[-1], **metas[i]}
            stats["merged_after_clean"] += 1
            continue
        out_r.append(roles[i])
        out_t.append(text)
        if out_m is not None:
            out_m.append(metas[i])
    return out_r, out_t, out_m


_PIECES = st.sampled_from([
    "好的", "亲", "，", "！", "～", "\u3000", " ", "  ", "\t", "\n", "\r", "\x0b", "\xa0", "\u2003", "\x1f", "\x85",
    "#E-s[数字x]", "#E-b12", "#E-s[a\x00b]", "#E-", "http://a.cn/x?y=1", "www.JD.com", "Www.x.cn", "WWW.X.CN", "://",
    "ＡＢ１２", "e\u0301", "\u0301", "①", "…", "ﬁ", "\x00", "\x01", "\x02", "x", "[订单x]", "138****8000", "",
])
_TEXT = st.lists(_PIECES, max_size=6).map("".join)


@given(
    texts=st.lists(_TEXT, min_size=1, max_size=12),
    roles=st.lists(st.sampled_from(["user", "assistant"]), min_size=12, max_size=12),
    max_chars=st.sampled_from([3, 8, 512]),
    long_turns=st.sampled_from(["truncate", "drop", "keep"]),
    url_placeholder=st.sampled_from(["[URL]", "", " "]),
)
@settings(max_examples=300, deadline=None)
def test_clean_many_equals_cleaning_one_by_one(texts, roles, max_chars, long_turns, url_placeholder):
    cfg = CleanConfig(max_turn_chars=max_chars, long_turns=long_turns, url_placeholder=url_placeholder)
    roles = roles[: len(texts)]
    metas = [{"i": i} if i % 3 == 0 else {} for i in range(len(texts))]
    want_stats: Counter = Counter()
    want = _oracle_clean_lists(roles, texts, metas, cfg, want_stats)
    got_stats: Counter = Counter()
    got = clean_lists(roles, list(texts), metas, cfg, got_stats)
    assert got == want
    assert +got_stats == +want_stats
    # and the batch call itself matches one call per text
    one_stats: Counter = Counter()
    one = [x for t in texts for x in clean_many([t], cfg, one_stats)]
    many_stats: Counter = Counter()
    assert clean_many(list(texts), cfg, many_stats) == one
    assert +many_stats == +one_stats


def test_clean_many_when_every_separator_occurs():
    # A batch holding every candidate separator still cleans each text on its own.
    from endcloud.corpus.clean import _SEPARATORS

    texts = ["ＡＢ " + "".join(_SEPARATORS), "  好的，亲 #E-s12 ", "www.jd.com"]
    stats: Counter = Counter()
    assert clean_many(texts, CFG, stats) == [clean_text(t, CFG, Counter()) for t in texts]
    assert clean_many(texts, CFG, Counter())[1:] == ["好的,亲", "[URL]"]


def test_near_keys_bytes_equals_near_key_bytes():
    texts = ["好的，亲！3天内发货。", "Yes, 20 in STOCK!", "", "a\x00b", "。。", "x\x01y"]
    assert near_keys_bytes(texts) == [near_key_bytes(t) for t in texts]


def test_whitespace_class_is_all_of_str_split_whitespace():
    # clean_many finds odd whitespace with a class built from U+0000..U+3000.
    assert not any(chr(c).isspace() for c in range(0x3001, 0x110000))


@pytest.mark.parametrize("texts, want", [
    (["a", "b "], ["a", "b"]),              # a space at the very end of the batch
    ([" a", "b"], ["a", "b"]),              # ... and at its very start
    (["a ", " b", "c"], ["a", "b", "c"]),    # around a separator
    (["a  b", "c\td", "e\u3000f"], ["a b", "c d", "e f"]),
    (["x http://a.cn y", "www.b.cn", "WWW.C.CN z"], ["x [URL] y", "[URL]", "[URL] z"]),
])
def test_clean_many_edges_of_the_joined_batch(texts, want):
    assert clean_many(texts, CFG, Counter()) == want
