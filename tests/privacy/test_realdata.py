"""Redaction over the real (already masked) ECD/JDDC samples in ../shared/data."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from endcloud.privacy import Vault, detect, redact

pytestmark = pytest.mark.realdata

MASK = re.compile(r"#E-s\[[^\[\]]+\]|\[[\u4e00-\u9fff]{1,6}x\]|\[[A-Z]+ID_\d+\]|\d\*+")  # corpus masks, not ours


def jddc_contents(shared_data):
    with open(shared_data / "jddc" / "jddc_chat_sample.txt", encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            yield "\t".join(fields[6:])  # a content field may itself hold tabs


def test_jddc_masked_placeholders_survive_unchanged(shared_data):
    vault = Vault()
    lines = list(jddc_contents(shared_data))
    assert len(lines) > 4000
    flagged = 0
    for text in lines:
        out = redact(text, vault).text
        assert Counter(MASK.findall(out)) == Counter(MASK.findall(text)), text
        assert redact(out, Vault()).text == out
        flagged += out != text
    # the corpus is already masked, so almost nothing is left to find: each hit is a false positive or a leak
    assert flagged <= len(lines) * 0.005, flagged
    assert sum("[订单x]" in t for t in lines) > 50  # the sample really holds masked tokens


def test_ecd_utterances_only_long_digit_ids_are_flagged(shared_data):
    with open(shared_data / "ecd" / "ecd_train_sample.txt", encoding="utf-8") as f:
        utterances = [u for line in f for u in line.rstrip("\n").split("\t")[1:]]
    types = Counter(s.type for u in utterances for s in detect(u))
    # ECD keeps bare 11-13 digit item/order ids ("520401029636"-style), nothing else personal
    assert set(types) <= {"ORDER"}
    assert types["ORDER"] > 10
