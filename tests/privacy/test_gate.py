"""The batch pre-check (`needs_redaction` / `may_contain_pii`) may only skip texts that
`redact` would leave alone: it must flag every text in which `detect` finds anything, for
every language, and every text holding a placeholder a vault would reserve."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from endcloud.privacy import Vault, detect, redact, synth
from endcloud.privacy.detectors import may_contain_pii, may_contain_pii_many
from endcloud.privacy.redact import needs_redaction

LANGS = ("zh", "en", None)


def _cases() -> list[str]:
    rng = random.Random(7)
    texts = [c.text for c in synth.make_cases(3000, seed=11, negative_share=0.3)]
    for typ in synth.PII_TYPES:
        for lang in ("zh", "en"):
            texts += [synth.make_noisy_case(rng, typ, lang).text for _ in range(40)]
            texts += [synth.make_mixed_case(rng, lang).text for _ in range(10)]
    texts += [synth.clean_line(rng, lang) for lang in ("zh", "en") for _ in range(300)]
    texts += [synth.lookalike(rng, lang) for lang in ("zh", "en") for _ in range(300)]
    return texts


CASES = _cases()


@pytest.mark.parametrize("lang", LANGS)
def test_every_generated_case_with_pii_is_flagged(lang):
    flagged = set(needs_redaction(CASES, lang))
    with_pii = {i for i, t in enumerate(CASES) if detect(t, lang)}
    assert len(with_pii) > 2000  # the cases do hold PII
    assert with_pii <= flagged, [CASES[i] for i in sorted(with_pii - flagged)[:5]]
    assert flagged == {i for i, t in enumerate(CASES) if may_contain_pii(t, lang)}  # batch == one by one


def test_clean_chat_lines_are_mostly_skipped():
    # What makes the pre-check worth having: lines with nothing personal are not scanned.
    rng = random.Random(3)
    clean = [synth.clean_line(rng, "zh") for _ in range(500)]
    assert not any(detect(t, "zh") for t in clean)
    assert len(needs_redaction(clean, "zh")) < 0.5 * len(clean)
    assert needs_redaction(["亲，在的", "好的呢", "这边帮您查询一下哦"], "zh") == []


# One text per branch of `detect`'s gates, each holding something `detect` finds.
BRANCHES = [
    "电话13800138000", "电话１３８００１３８０００", "邮箱 a.b@qq.com", "邮箱 a.b＠qq.com",
    "zhangwei at qq dot com", "lina艾特163点com", "amy.w#gmail.com", "tom [at] outlook [dot] com", "tom(at)qq.com",
    "一三八零零一三八零零零", "幺三八 零零一三 八零零零", "寄到北京市朝阳区建国路88号", "住在阳光小区3栋", "住朝阳区幸福胡同", "北京市阳光小区", "上海市世纪广场", "朝阳区建国大道",
    "我叫张伟", "我是张伟，", "收件人：王芳", "联系人 李娜", "张先生", "欧阳女士", "王小姐", "持卡人 刘洋",
    "Mr Smith called", "Miss Jones", "Ms. Li", "my name is John Smith", "Name: Amy Lee", "recipient: Tom Hanks",
    "ship to: John Smith", "deliver to: Jane Doe", "send to: Bob Stone", "contact: Ann Lee", "attn: Sam Wu",
    "cardholder Tom Lee", "12 Baker Street, London", "order #123456789", "运单号 SF1234567890123",
]


@pytest.mark.parametrize("text", BRANCHES)
def test_each_gate_branch(text):
    found = [lang for lang in LANGS if detect(text, lang)]
    assert found, f"{text!r}: detect finds nothing, the case tests no gate"
    for lang in found:
        assert may_contain_pii(text, lang) and needs_redaction(["好的", text, "谢谢"], lang) == [1], (text, lang)


def test_placeholders_are_flagged_so_the_vault_reserves_them():
    texts = ["好的", "改成 [PHONE_3] 吧", "谢谢"]
    assert needs_redaction(texts, "zh") == [1]
    vault = Vault()
    redact(texts[1], vault, lang="zh")
    assert vault.placeholder("PHONE", "13800138000") == "[PHONE_4]"


def test_unflagged_texts_leave_text_and_vault_alone():
    rng = random.Random(5)
    texts = [synth.clean_line(rng, lang) for lang in ("zh", "en") for _ in range(200)]
    for lang in LANGS:
        flagged = set(needs_redaction(texts, lang))
        for i, t in enumerate(texts):
            if i in flagged:
                continue
            vault = Vault()
            r = redact(t, vault, lang=lang)
            assert r.text == t and not r.spans and vault.to_json()["entries"] == [] and vault.to_json()["reserved"] == []


def test_odd_batches():
    assert needs_redaction([]) == []
    # a text holding NUL (the batch separator) is checked on its own
    assert needs_redaction(["a\x00b", "我的电话13800138000", "好"], "zh") == [1]
    # U+0130 lengthens under lower(): the en hints fall back to one text at a time
    assert needs_redaction(["İİ hello", "contact: John Smith"], "en") == [1]
    assert needs_redaction(["CONTACT: John Smith", "x"], "en") == [0]
    with pytest.raises(ValueError, match="lang"):
        may_contain_pii_many(["x"], "fr")


_ALPHABET = st.sampled_from([
    *"的一是在不了有和人这中大为上我叫名字姓收件人货联系签寄户持卡开先生女士小姐道胡同区广场艾特路街号市省区张王李伟芳",
    *"0123456789０１２３４５６７８９〇零一二三四五六七八九幺两@＠#＃.-()[]: ,，",
    "Mr", "Ms", "Miss", "name", "NAME", "Recipient", "ship to", "SEND TO", "contact", "attn", "cardholder", " dot ",
    " at ", "(at)", "[at]", "qq", "com", "Street", "St", "Rd", "Apt", "İ", "K", "ſ", "\u3000", "\t", "\n",
])


@given(st.lists(st.lists(_ALPHABET, max_size=14).map("".join), min_size=1, max_size=8))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gate_is_a_superset_of_detect_at_random(texts):
    for lang in LANGS:
        flagged = set(needs_redaction(texts, lang))
        for i, t in enumerate(texts):
            if detect(t, lang):
                assert i in flagged, (t, lang)
            assert (i in flagged) == may_contain_pii(t, lang)
