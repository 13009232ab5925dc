"""Names, whole addresses, handles, foreign phones and postcodes (issue #16's drill), and what must survive.

The drill planted these in chats and every one left the shop; each must now be redacted, while
product names, brands and policy text stay as they are. The hand-written benchmark
(bench/data/redact_cases_v2.jsonl) is held to the levels measured when it was written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endcloud.privacy import Vault, detect, redact
from endcloud.privacy.detectors import may_contain_pii, may_contain_pii_many

V2 = Path(__file__).resolve().parents[2] / "bench" / "data" / "redact_cases_v2.jsonl"


def found(text: str, lang: str | None = None) -> list[tuple[str, str]]:
    return [(s.type, s.value) for s in detect(text, lang)]


DRILL = [
    # (text, the value that leaked, the type it must get)
    ("王建国先生您好，您的快递到了", "王建国", "NAME"),
    ("Customer:\norder 5433, item: towel, receiver: 张伟", "张伟", "NAME"),
    ("李娜说她明天不在家", "李娜", "NAME"),
    ("Emily Johnson says the box was crushed", "Emily Johnson", "NAME"),
    ("地址：北京市朝阳区建国路88号SOHO现代城5号楼1203室", "SOHO现代城5号楼1203室", "ADDRESS"),
    ("有事加我QQ 384756291", "384756291", "HANDLE"),
    ("call me on 07700 900123 after six", "07700 900123", "PHONE"),
    ("12 Baker Street, London NW1 6XE", "NW1 6XE", "ADDRESS"),
    ("昵称：小红花，评价是我写的", "小红花", "HANDLE"),
]


@pytest.mark.parametrize(("text", "value", "typ"), DRILL, ids=[d[1] for d in DRILL])
def test_drill_values_are_redacted_with_their_type(text, value, typ):
    r = redact(text, Vault())
    assert value not in r.text, r.text
    start = text.index(value)
    assert any(s.type == typ and s.start <= start and s.end >= start + len(value) for s in r.spans), r.spans


SURVIVE = [
    "碧螺春明前特级 250g", "王老吉凉茶 24 罐", "黄金叶（天叶）", "康师傅红烧牛肉面", "李宁韦德之道 10", "戴森吹风机 HD15",
    "周末说好的发货怎么还没发", "马上说一下退货流程", "请问说明书在哪里下载", "谢谢亲，好的呢",
    "Apple Watch Series 9", "Air Jordan 1 Retro High OG", "Gucci Bloom Eau de Parfum", "Calvin Klein jeans, 3-pack",
    "Tommy Hilfiger Classic Polo", "Dr. Martens 1460 boots", "Dear Customer, thanks for your order",
    "Returns are accepted within 30 days; the recipient name must match the ID.",
    "收件人姓名请与身份证一致", "详细地址需精确到门牌号", "SKU: AB-2049-XL", "PS5 Slim 2TB", "Mac mini M2 8GB",
    "call our hotline 1-800-555-0199", "客服电话：400-820-8820", "2024-05-01 16:00", "05/12/2024 10:30",
]


@pytest.mark.parametrize("text", SURVIVE)
def test_lookalikes_survive(text):
    assert detect(text) == [], detect(text)


@pytest.mark.parametrize(("text", "typ", "value"), [
    ("王建国先生", "NAME", "王建国先生"), ("张总说可以", "NAME", "张总"), ("欧阳娜娜女士", "NAME", "欧阳娜娜女士"),
    ("寄给周杰，他在公司", "NAME", "周杰"), ("收件人写的是刘洋", "NAME", "刘洋"), ("我老婆赵敏让我问", "NAME", "赵敏"),
    ("my husband Tom will pick it up", "NAME", "Tom"), ("Thanks Olivia!", "NAME", "Olivia"),
    ("Regards,\nNatalie Brooks", "NAME", "Natalie Brooks"), ("signed for by Robert Wilson", "NAME", "Robert Wilson"),
    ("Matthew's address is wrong", "NAME", "Matthew"), ("收件人：Emily Lee", "NAME", "Emily Lee"),
])
def test_names_in_context(text, typ, value):
    assert (typ, value) in found(text), found(text)


@pytest.mark.parametrize(("text", "value"), [
    ("寄到重庆市渝中区解放碑八一路177号", "重庆市渝中区解放碑八一路177号"),
    ("福建省厦门市思明区鹭江道8号", "福建省厦门市思明区鹭江道8号"),
    ("送到杭州市西湖区文三路478号华星科技大厦A座1802", "杭州市西湖区文三路478号华星科技大厦A座1802"),
    ("湖北省武汉市洪山区珞喻路1037号华中科技大学东区宿舍", "湖北省武汉市洪山区珞喻路1037号华中科技大学东区宿舍"),
    ("Flat 3, 45 Queen's Road, Brighton BN1 3XE", "Flat 3, 45 Queen's Road, Brighton BN1 3XE"),
    ("350 Fifth Avenue, Suite 3300, New York, NY 10118", "350 Fifth Avenue, Suite 3300, New York, NY 10118"),
    ("I live at 55 Elm Grove, Apt 12, Bristol BS8 1HT", "55 Elm Grove, Apt 12, Bristol BS8 1HT"),
    ("address: 16 Mill Lane, Oxford OX1 2AB; status: shipped", "16 Mill Lane, Oxford OX1 2AB"),
])
def test_whole_addresses(text, value):
    assert ("ADDRESS", value) in found(text), found(text)


@pytest.mark.parametrize(("text", "typ", "value"), [
    ("微信：zhang_wei88", "HANDLE", "zhang_wei88"), ("vx: lina_shop520", "HANDLE", "lina_shop520"),
    ("淘宝号：小熊猫爱吃竹子", "HANDLE", "小熊猫爱吃竹子"), ("Telegram: @tom_h_2020", "HANDLE", "@tom_h_2020"),
    ("you can DM me @green_tea_fan", "HANDLE", "@green_tea_fan"), ("QQ号：1029384756", "HANDLE", "1029384756"),
    ("+44 20 7946 0958", "PHONE", "+44 20 7946 0958"), ("0049 30 12345678", "PHONE", "0049 30 12345678"),
    ("Japan mobile 090-1234-5678", "PHONE", "090-1234-5678"), ("WhatsApp 9123 4567", "PHONE", "9123 4567"),
    ("my French number is 06 12 34 56 78", "PHONE", "06 12 34 56 78"),
    ("邮政编码：200120", "POSTCODE", "200120"), ("Beverly Hills, CA 90210", "POSTCODE", "CA 90210"),
    ("postal code K1A 0B1", "POSTCODE", "K1A 0B1"), ("Dublin D02 X285", "POSTCODE", "D02 X285"),
])
def test_handles_phones_postcodes(text, typ, value):
    assert (typ, value) in found(text), found(text)


def test_email_behind_a_masked_local_part_is_not_a_handle():
    assert detect("邮箱zh***@qq.com") == []


def test_redaction_stays_idempotent_and_restorable_on_the_new_types():
    text = "收件人：张伟，微信 zhang_wei88，地址：北京市朝阳区建国路88号SOHO现代城5号楼1203室，邮编100020，Emily Johnson says hi, +44 7700 900123"
    vault = Vault()
    r = redact(text, vault)
    assert {s.type for s in r.spans} == {"NAME", "HANDLE", "ADDRESS", "POSTCODE", "PHONE"}
    assert vault.restore(r.text) == text
    assert detect(r.text) == [], r.text


def _v2():
    return [json.loads(line) for line in V2.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_hand_written_cases_hold_their_measured_levels():
    # bench/bench_redact.py reports these per category; the floors are the levels measured (see the bench)
    floors = {"NAME": 0.98, "ADDRESS": 0.98, "HANDLE": 0.98, "PHONE": 0.98, "POSTCODE": 0.98}
    accept = {"NAME": {"NAME"}, "ADDRESS": {"ADDRESS"}, "HANDLE": {"HANDLE"}, "PHONE": {"PHONE"}, "POSTCODE": {"POSTCODE", "ADDRESS"}}
    hit, total = {k: 0 for k in floors}, {k: 0 for k in floors}
    looks = kept = 0
    for c in _v2():
        spans = detect(c["text"])
        if c["category"] == "LOOKALIKE":
            looks += 1
            kept += not spans
        for g in c["gold"]:
            cov = {i for s in spans if s.type in accept[g["type"]] for i in range(s.start, s.end)}
            total[g["type"]] += 1
            hit[g["type"]] += all(i in cov for i in range(g["start"], g["end"]))
    assert looks >= 60 and all(total[k] >= 40 for k in floors), total
    assert kept / looks >= 0.98, (kept, looks)
    for k, floor in floors.items():
        assert hit[k] / total[k] >= floor, (k, hit[k], total[k])


@pytest.mark.parametrize("lang", ["zh", "en", None])
def test_the_batch_precheck_flags_every_hand_written_case_with_pii(lang):
    texts = [c["text"] for c in _v2()]
    flagged = set(may_contain_pii_many(texts, lang))
    assert {i for i, t in enumerate(texts) if detect(t, lang)} <= flagged
    assert flagged == {i for i, t in enumerate(texts) if may_contain_pii(t, lang)}
