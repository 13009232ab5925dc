"""Detectors: each type in zh and en, labels, look-alikes that must survive, masked tokens."""

from __future__ import annotations

import pytest

from endcloud.privacy import PII_TYPES, Span, detect
from endcloud.privacy.detectors import id_checksum_ok, luhn_ok


def found(text: str, lang: str | None = None) -> list[tuple[str, str]]:
    return [(s.type, s.value) for s in detect(text, lang)]


POSITIVES = [
    # PHONE: every written form of a mainland mobile, landlines, NANP
    ("电话13800138000", "PHONE", "13800138000"),
    ("手机：138-0013-8000，谢谢", "PHONE", "138-0013-8000"),
    ("打 138 0013 8000 找我", "PHONE", "138 0013 8000"),
    ("号码是+86 139.1234.5678吧", "PHONE", "+86 139.1234.5678"),
    ("0086-15912345678", "PHONE", "0086-15912345678"),
    ("(+86)18600001111", "PHONE", "(+86)18600001111"),
    ("8613800138000", "PHONE", "8613800138000"),
    ("联系我＋８６　１３８－００１３－８０００好吗", "PHONE", "＋８６　１３８－００１３－８０００"),
    ("电话１３８００１３８０００", "PHONE", "１３８００１３８０００"),
    ("电话138—0013—8000", "PHONE", "138—0013—8000"),
    ("Call **13800138000** now", "PHONE", "13800138000"),
    ("号码 1 3 8 0 0 1 3 8 0 0 0 加我", "PHONE", "1 3 8 0 0 1 3 8 0 0 0"),
    ("电话 138 - 0013 - 8000", "PHONE", "138 - 0013 - 8000"),
    ("加我 一三八零零一三八零零零", "PHONE", "一三八零零一三八零零零"),
    ("电话幺三八 零零一三 八零零零", "PHONE", "幺三八 零零一三 八零零零"),
    ("座机010-62345678", "PHONE", "010-62345678"),
    ("call me at (415) 555-2671", "PHONE", "(415) 555-2671"),
    ("my phone is +1 415-555-2671.", "PHONE", "+1 415-555-2671"),
    # ID: redacted whatever the checksum says
    ("身份证号110101199003077658", "ID", "110101199003077658"),
    ("ID: 11010119900307765X please", "ID", "11010119900307765X"),
    ("身份证 110101 19900307 7658", "ID", "110101 19900307 7658"),
    # CARD
    ("卡号6222021234567890128", "CARD", "6222021234567890128"),
    ("card number 4111 1111 1111 1111", "CARD", "4111 1111 1111 1111"),
    ("退到这张卡 4111-1111-1111-1112 吧", "CARD", "4111-1111-1111-1112"),
    ("I paid with 4111111111111111", "CARD", "4111111111111111"),
    ("Amex 3714 496353 98431", "CARD", "3714 496353 98431"),
    # EMAIL
    ("邮箱zhangwei88@qq.com谢谢", "EMAIL", "zhangwei88@qq.com"),
    ("email me at john.smith+shop@mail.example.org.", "EMAIL", "john.smith+shop@mail.example.org"),
    ("邮箱ｌｉｎａ＠１６３.com", "EMAIL", "ｌｉｎａ＠１６３.com"),
    ("email: zhangwei at qq dot com", "EMAIL", "zhangwei at qq dot com"),
    ("邮箱zhangwei艾特qq点com", "EMAIL", "zhangwei艾特qq点com"),
    ("邮箱 lina#163.com 谢谢", "EMAIL", "lina#163.com"),
    # ORDER: context or a bare 10-20 digit run
    ("订单号：520401029636 还没发货", "ORDER", "520401029636"),
    ("520401029636", "ORDER", "520401029636"),
    ("my order #DD20240501123 is late", "ORDER", "DD20240501123"),
    ("order no. 7788990011", "ORDER", "7788990011"),
    ("单号是 ORD-98765432", "ORDER", "ORD-98765432"),
    # TRACKING
    ("顺丰SF1234567890123到哪了", "TRACKING", "SF1234567890123"),
    ("快递单号 YT1234567890123", "TRACKING", "YT1234567890123"),
    ("中通78912345678901", "TRACKING", "78912345678901"),
    ("tracking number 1Z999AA10123456784", "TRACKING", "1Z999AA10123456784"),
    ("the parcel EA123456789CN is stuck", "TRACKING", "EA123456789CN"),
    ("运单号：4300123456789", "TRACKING", "4300123456789"),
    # ADDRESS
    ("地址：北京市朝阳区建国路88号院3号楼502室", "ADDRESS", "北京市朝阳区建国路88号院3号楼502室"),
    ("寄到广东省深圳市南山区科技园南路15号吧", "ADDRESS", "广东省深圳市南山区科技园南路15号"),
    ("上海市浦东新区张江路123弄4号楼502室", "ADDRESS", "上海市浦东新区张江路123弄4号楼502室"),
    ("收货地址改成杭州市西湖区翠苑小区3栋2单元501室", "ADDRESS", "杭州市西湖区翠苑小区3栋2单元501室"),
    ("Ship it to 1600 Amphitheatre Pkwy, Mountain View, CA 94043", "ADDRESS", "1600 Amphitheatre Pkwy, Mountain View, CA 94043"),
    ("I live at 42 West Elm Street, Apt 4B.", "ADDRESS", "42 West Elm Street, Apt 4B"),
    ("广州市天河区天河路385号太古汇2座1001", "ADDRESS", "广州市天河区天河路385号太古汇2座1001"),
    ("内蒙古自治区呼和浩特市新城区新华大街1号", "ADDRESS", "内蒙古自治区呼和浩特市新城区新华大街1号"),
    ("江苏省南京市鼓楼区北京西路1号", "ADDRESS", "江苏省南京市鼓楼区北京西路1号"),
    ("My address is 350 Fifth Avenue, New York, NY 10118", "ADDRESS", "350 Fifth Avenue, New York, NY 10118"),
    # NAME: only where cheap and precise
    ("我叫张伟，想问下", "NAME", "张伟"),
    ("收件人：李娜，电话见下", "NAME", "李娜"),
    ("收货人欧阳小明", "NAME", "欧阳小明"),
    ("收货人：张三 13800138000", "NAME", "张三"),
    ("联系人: 赵六", "NAME", "赵六"),
    ("Send to: Jane Doe, 221B Baker Street", "NAME", "Jane Doe"),
    ("王先生您好", "NAME", "王先生"),
    ("my name is John Smith", "NAME", "John Smith"),
    ("Name: Grace O'Neil", "NAME", "Grace O'Neil"),
    ("thanks Mr. Johnson", "NAME", "Johnson"),
    # NAME without the built-in cues: honorifics, verbs of speech, field labels in either script
    ("王建国先生您好", "NAME", "王建国先生"),
    ("receiver: 张伟", "NAME", "张伟"),
    ("李娜说明天在家", "NAME", "李娜"),
    ("Emily Johnson says it never came", "NAME", "Emily Johnson"),
    ("my wife Sarah will sign for it", "NAME", "Sarah"),
    # ADDRESS: the building, unit and room after the street number; postcodes after the city
    ("北京市朝阳区建国路88号SOHO现代城5号楼1203室", "ADDRESS", "北京市朝阳区建国路88号SOHO现代城5号楼1203室"),
    ("12 Baker Street, London NW1 6XE", "ADDRESS", "12 Baker Street, London NW1 6XE"),
    # HANDLE: QQ, WeChat, social handles, nicknames (a cue word is needed)
    ("加我QQ 384756291", "HANDLE", "384756291"),
    ("微信：zhang_wei88", "HANDLE", "zhang_wei88"),
    ("昵称：小红花", "HANDLE", "小红花"),
    ("my Instagram is @emily.jones92", "HANDLE", "@emily.jones92"),
    # PHONE abroad (phonenumbers)
    ("call me on 07700 900123", "PHONE", "07700 900123"),
    ("我的英国号码是 +44 7911 123456", "PHONE", "+44 7911 123456"),
    ("Ruf mich an: +49 151 23456789", "PHONE", "+49 151 23456789"),
    # POSTCODE
    ("postcode SW1A 1AA", "POSTCODE", "SW1A 1AA"),
    ("邮编100020", "POSTCODE", "100020"),
    ("zip code 94043", "POSTCODE", "94043"),
]


@pytest.mark.parametrize(("text", "typ", "value"), POSITIVES, ids=[f"{t}:{x[:14]}" for x, t, _ in POSITIVES])
def test_positive(text, typ, value):
    assert (typ, value) in found(text)


def test_every_type_has_zh_and_en_positives():
    covered = {(t, any("\u4e00" <= c <= "\u9fff" for c in x)) for x, t, _ in POSITIVES}
    for t in PII_TYPES:
        assert (t, True) in covered and (t, False) in covered, t


LOOKALIKES = [
    "¥129", "129元", "$19.99", "1,299.00", "¥1,299,000.00", "2024-05-01", "2024/05/01 16:00:00", "5月1日", "2024年5月1日",
    "16:00", "下午4点", "20x20 cm", "20×20厘米", "XL", "42码", "170/88A", "SKU-10293", "SKU 1002003004005", "货号 100203040506",
    "A1B2-339", "iPhone 15 Pro", "XR-2000", "RTX 4090", "满99减10", "满300减50元", "10% off", "SAVE10", "3件", "2 pcs", "95%",
    "客服热线400-820-8820", "call 1-800-555-0199", "5000mAh", "骁龙8 Gen 3", "1.5kg", "第3代", "7天无理由退货",
    "好的亲，这款是纯棉的哦", "Returns are accepted within 7 days of delivery.", "我是想问一下发货时间", "我是新用户",
    "这个区别很大", "超市里有卖吗", "新旧地址在同一个市内的话", "南京路步行街", "中山路", "北京市朝阳区", "一位先生",
    "Please ship to me soon", "my name is not important", "Order 3 more pcs", "We ship with ZTO Express by default",
    "2024-05-01T16:00:00Z", "20240501", "Model 300X", "3 Main features", "size 10 Medium", "#1 best seller", "订单已发货",
    "13 14 15 16 17 18 19码", "身高155 160 165 170 175", "ISBN 978-7-111-54742-6", "2024-05-01 16:00 至 2024-05-03 18:00",
    "共计3件，合计¥1,299.00，实付¥1,199.00", "胸围 100 104 108 112 116", "电话咨询：400 820 8820", "IP 192.168.100.200",
    "重量 13.5kg 尺寸 130x80x45cm", "销量 15,800 件，好评率 99.5%", "条形码 6901234567892", "一二三四五六七八九十",
    "五五五五五五五五五五五五", "第一二三名", "这件一百二十九元", "I bought it at amazon dot com", "#1 best seller, #2 in towels",
    # product and brand names that look like people, policy text
    "碧螺春", "王老吉凉茶", "黄金叶香烟", "康师傅方便面", "周末说好的发货呢", "李宁运动鞋", "Apple Watch", "Jordan 1 Retro High",
    "Gucci Bloom", "Calvin Klein jeans", "Ted Baker London", "Dr. Martens boots", "Dear Customer", "PS5 2TB", "M2 8GB",
    "call 1-800-555-0199", "电话：400-820-8820", "详细地址需精确到门牌号", "收件人姓名请与身份证一致", "line item 3",
    "the username is case-sensitive", "05/12/2024 10:30",
]


@pytest.mark.parametrize("text", LOOKALIKES)
def test_lookalike_survives(text):
    assert detect(text) == []


MASKED = [
    "[订单x]还请您稍等，正在为您查询~ 大概需要[数字x]-[数字x]天.",
    "[订单编号:[订单x]，订单金额:[金额x]，下单时间:[日期x] [时间x]]",
    "收件人[姓名x]，电话[电话x]，地址[地址x]，身份证[身份证号x]，邮箱[邮箱x]",
    "订单号:[订单x]，顾客通过点击web咚咚[站点x]信息发送 #E-s[数字x]",
    "订单[ORDERID_10005629]已经出库", "住在4**号", "手机138****8000", "尾号****8000", "邮箱zh***@qq.com", "我叫[NAME_1]，电话[PHONE_1]，地址[ADDRESS_2]",
]


@pytest.mark.parametrize("text", MASKED)
def test_masked_tokens_are_not_pii(text):
    assert detect(text) == []


def test_spans_cut_the_original_text_even_with_fullwidth_forms():
    text = "Ａ：电话＋８６　１３８－００１３－８０００，邮箱ｌｉ＠qq.com，订单号５２０４０１０２９６３６"
    spans = detect(text)
    assert [s.type for s in spans] == ["PHONE", "EMAIL", "ORDER"]
    for s in spans:
        assert text[s.start:s.end] == s.value
    assert spans == sorted(spans, key=lambda s: s.start)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


def test_labels_come_from_checksums_but_never_decide_redaction():
    good, bad = "110101199003077651", "110101199003077658"
    assert id_checksum_ok(good) and not id_checksum_ok(bad)
    assert [s.label for s in detect(f"身份证{good}")] == ["checksum_ok"]
    assert [s.label for s in detect(f"身份证{bad}")] == ["checksum_bad"]
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert [s.label for s in detect("卡号4111 1111 1111 1111")] == ["luhn_ok"]
    assert [(s.type, s.label) for s in detect("卡号4111 1111 1111 1112")] == [("CARD", "luhn_bad")]


def test_bare_long_digit_run_is_card_only_with_a_card_prefix_and_luhn():
    assert [(s.type, s.label) for s in detect("4111111111111111")] == [("CARD", "luhn_ok")]
    assert [(s.type, s.label) for s in detect("4111111111111112")] == [("ORDER", "bare")]


def test_context_words_decide_between_overlapping_readings():
    # an 11-digit phone-shaped number after 订单号 is an order number
    assert found("订单号13800138000") == [("ORDER", "13800138000")]
    assert found("快递单号13800138000123") == [("TRACKING", "13800138000123")]
    # a country code makes it a phone even when grouped like a card
    assert found("０086 1386 9075 175") == [("PHONE", "０086 1386 9075 175")]


def test_an_address_glued_to_a_phone_keeps_its_street():
    assert found("天河路385号13800138000") == [("ADDRESS", "天河路385号"), ("PHONE", "13800138000")]
    assert found("我的订单号是：JD123456789012") == [("ORDER", "JD123456789012")]


def test_lang_switches_only_name_and_address_rules():
    text = "我叫张伟 my name is John Smith 13800138000"
    assert {t for t, _ in found(text, "zh")} == {"NAME", "PHONE"}
    assert ("NAME", "John Smith") not in found(text, "zh")
    assert ("NAME", "张伟") not in found(text, "en")
    assert ("PHONE", "13800138000") in found(text, "en")
    with pytest.raises(ValueError, match="'fr'"):
        detect(text, "fr")


def test_several_types_in_one_line():
    text = "收件人：李娜，手机13912345678，地址：上海市徐汇区漕溪北路100号，订单号520401029636，邮箱lina@163.com"
    assert [s.type for s in detect(text)] == ["NAME", "PHONE", "ADDRESS", "ORDER", "EMAIL"]


def test_span_json():
    s = Span(0, 3, "PHONE", "123", "mobile")
    assert s.to_json() == {"start": 0, "end": 3, "type": "PHONE", "label": "mobile", "value": "123"}
    assert "value" not in s.to_json(with_value=False)


@pytest.mark.parametrize("text, typ, label", [
    ("身份证11010519491231002X", "ID", "checksum_ok"),        # 17 digits: the fewest an ID holds
    ("卡号 4111111111118", "CARD", "luhn_bad"),                # 13 after a card word
    ("4111 1111 1111 1", "CARD", "luhn_bad"),                  # 13 in card groups
    ("电话13800138000", "PHONE", "mobile"),                    # 11 (not a bare 11-digit ORDER)
    ("+86 13800138000", "PHONE", "mobile"),                    # 13 with the country code
    ("座机 021-234 5678", "PHONE", "landline"),                # 10
    ("call (415) 555-2671", "PHONE", "nanp"),                  # 10
    ("号码1234567890", "ORDER", "bare"),                       # 10
    ("运单号 AB12345678", "TRACKING", "context"),              # 8
    ("订单号 123456", "ORDER", "context"),                     # 6
])
def test_numbers_with_the_fewest_digits_each_detector_takes(text, typ, label):
    # `_digit_candidates` skips a detector when the text has fewer digits than any span it
    # can yield; at exactly that many it must still run.
    spans = detect(text)
    assert [(s.type, s.label) for s in spans] == [(typ, label)], spans


@pytest.mark.parametrize("text", ["邮箱zhangwei1＠qq.com13812345678，谢谢", "mail me: li.na@example.com13912345678"])
def test_email_followed_directly_by_a_phone_is_redacted_too(text):
    # Found by the idempotence property test: the TLD used to refuse a digit after it, so
    # the address leaked whenever a number ran straight on.
    from endcloud.privacy.redact import redact
    from endcloud.privacy.vault import Vault

    r = redact(text, Vault())
    assert "[EMAIL_1]" in r.text and "[PHONE_1]" in r.text and "@" not in r.text and "＠" not in r.text
    assert detect(r.text) == []
