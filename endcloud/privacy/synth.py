"""Generated PII and look-alikes, with gold spans, for the redaction bench and property tests.

Every generator takes a `random.Random`, so the bench is reproducible from a seed and
hypothesis can drive the same code through `st.randoms()`. Nothing here is real data: numbers
are random (ID and card check characters are computed, or deliberately broken), names and
streets come from short built-in lists.

    >>> import random
    >>> case = make_case(random.Random(0), "PHONE", "zh")
    >>> all(case.text[s:e] == v for s, e, t, v in case.gold)
    True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from endcloud.privacy.detectors import PII_TYPES, _ID_WEIGHTS, luhn_ok

STRUCTURED = ("PHONE", "ID", "CARD", "EMAIL", "ORDER", "TRACKING")
# The types `make_cases` and `make_mixed_case` draw from: the first eight, so the figures in
# docs/bench/privacy.md stay comparable across versions. HANDLE and POSTCODE have their own
# templates (`make_case`) and the hand-written cases of bench/data/redact_cases_v2.jsonl.
CASE_TYPES = ("PHONE", "ID", "CARD", "EMAIL", "ADDRESS", "ORDER", "TRACKING", "NAME")

_FW = {c: chr(ord(c) + 0xFEE0) for c in "0123456789+-().@"} | {" ": "\u3000"}


def to_fullwidth(s: str) -> str:
    return "".join(_FW.get(c, c) for c in s)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


# --- structured values ------------------------------------------------------------------------

_SPELLED = {"0": "零〇", "1": "一幺", "2": "二两", "3": "三", "4": "四", "5": "五", "6": "六", "7": "七", "8": "八", "9": "九"}


def phone(rng: random.Random) -> str:
    """A mainland mobile number in one of many written forms."""
    d = "1" + rng.choice("3456789") + _digits(rng, 9)
    sep = rng.choice(["", "", " ", "-", ".", "\u3000", "－", "—", " - "])
    groups = rng.choice([(3, 4, 4), (3, 4, 4), (11,), (3, 8), (4, 4, 3), (3, 3, 5)])
    parts, i = [], 0
    for g in groups:
        parts.append(d[i:i + g])
        i += g
    body = sep.join(parts)
    if rng.random() < 0.05:  # spelled in Chinese numerals, the way people dodge chat filters
        return "".join(rng.choice(_SPELLED[c]) if c.isdigit() else c for c in body)
    prefix = rng.choice(["", "", "", "+86", "+86 ", "86", "86-", "0086 ", "+86-", "(+86) ", "(86)", "+86\u3000"])
    out = prefix + body
    if rng.random() < 0.2:
        out = to_fullwidth(out)
    return out


def landline(rng: random.Random) -> str:
    area = rng.choice(["010", "021", "020", "0755", "0571", "028"])
    local = rng.choice("2345678") + _digits(rng, 7 if len(area) == 3 else rng.choice([6, 7]))
    return rng.choice([f"{area}-{local}", f"({area}){local}", f"{area} {local}"])


def id_number(rng: random.Random, *, valid: bool | None = None) -> str:
    region = rng.choice(["110101", "310104", "440305", "330106", "510107", "420102", "320583", "370202"])
    y, m, dd = rng.randint(1950, 2008), rng.randint(1, 12), rng.randint(1, 28)
    body = f"{region}{y:04d}{m:02d}{dd:02d}{_digits(rng, 3)}"
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS)) % 11]
    if valid is None:
        valid = rng.random() < 0.8
    if not valid:
        check = rng.choice([c for c in "0123456789X" if c != check])
    if check == "X" and rng.random() < 0.3:
        check = "x"
    return body + check


def _luhn_complete(prefix_and_body: str) -> str:
    for c in "0123456789":
        if luhn_ok(prefix_and_body + c):
            return prefix_and_body + c
    raise AssertionError("unreachable")


def card_digits(rng: random.Random, *, valid: bool = True) -> str:
    prefix, n = rng.choice([("4", 16), ("51", 16), ("55", 16), ("62", 16), ("62", 19), ("37", 15), ("6011", 16)])
    d = _luhn_complete(prefix + _digits(rng, n - len(prefix) - 1))
    if not valid:
        d = d[:-1] + str((int(d[-1]) + rng.randint(1, 9)) % 10)
    return d


def card(rng: random.Random, *, valid: bool = True, grouped: bool | None = None) -> str:
    d = card_digits(rng, valid=valid)
    if grouped is None:
        grouped = rng.random() < 0.6
    if not grouped:
        return d
    sep = rng.choice([" ", "-"])
    if len(d) == 15:
        return sep.join([d[:4], d[4:10], d[10:]])
    return sep.join(d[i:i + 4] for i in range(0, len(d), 4))


_PINYIN = ["zhangwei", "lina", "wangfang", "liuyang", "chenjie", "john.smith", "jane_doe", "mike88", "amy.w", "tom-lee"]
_DOMAINS = ["qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "example.com", "sina.cn", "shop.com.cn", "mail.example.org"]


def email(rng: random.Random) -> str:
    user = rng.choice(_PINYIN) + (str(rng.randint(1, 9999)) if rng.random() < 0.5 else "")
    at = "＠" if rng.random() < 0.1 else "@"
    return f"{user}{at}{rng.choice(_DOMAINS)}"


def order_number(rng: random.Random, *, bare: bool = False) -> str:
    """Digits only, 10-20 long, never shaped like a phone (with or without 86), an ID or (when bare) a valid card."""
    while True:
        d = rng.choice("123456789") + _digits(rng, rng.randint(9, 19))
        if len(d) == 11 and d[1] in "3456789" and d[0] == "1":
            continue
        if len(d) == 13 and d.startswith("86") and d[2] == "1" and d[3] in "3456789":  # that is +86 and a mobile
            continue
        if len(d) == 18 and d[0] in "12345678" and d[6:8] in ("18", "19", "20"):
            continue
        if bare and 13 <= len(d) <= 19 and luhn_ok(d):
            continue
        if not bare and rng.random() < 0.15:
            return rng.choice(["DD", "ORD-", "PO-"]) + d
        return d


def tracking_number(rng: random.Random) -> tuple[str, bool]:
    """(number, needs_context): courier-prefixed numbers stand alone; plain digits need a context word."""
    kind = rng.choice(["SF", "YT", "JT", "JDV", "1Z", "UPU", "digits"])
    if kind == "SF":
        return "SF" + _digits(rng, rng.choice([12, 13])), False
    if kind in ("YT", "JT"):
        return kind + _digits(rng, 13), False
    if kind == "JDV":
        return "JDV" + _digits(rng, 12), False
    if kind == "1Z":
        return "1Z" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXY") for _ in range(16)), False
    if kind == "UPU":
        return rng.choice(["EA", "RR", "LX", "CP"]) + _digits(rng, 9) + rng.choice(["CN", "US", "GB"]), False
    return rng.choice("3457") + _digits(rng, rng.randint(11, 14)), True


# --- addresses and names ----------------------------------------------------------------------

_ZH_PLACES = [
    ("北京市", "", ["朝阳区", "海淀区", "东城区"]), ("上海市", "", ["浦东新区", "徐汇区", "静安区"]),
    ("广东省", "深圳市", ["南山区", "福田区"]), ("广东省", "广州市", ["天河区", "越秀区"]),
    ("浙江省", "杭州市", ["西湖区", "余杭区"]), ("江苏省", "苏州市", ["工业园区", "姑苏区"]),
    ("四川省", "成都市", ["武侯区", "锦江区"]), ("湖北省", "武汉市", ["洪山区", "江汉区"]),
    ("安徽省", "合肥市", ["蜀山区", "包河区"]), ("山东省", "青岛市", ["市南区", "黄岛区"]),
]
_ZH_ROADS = ["建国路", "中山路", "文三路", "科技园南路", "张江路", "解放大道", "人民大街", "长安街", "南京东路", "天府大道", "东方巷", "幸福里弄"]
_ZH_ESTATES = ["阳光花园", "翠苑小区", "金色家园", "时代广场", "世纪大厦", "碧桂园"]


def zh_address(rng: random.Random) -> str:
    prov, city, districts = rng.choice(_ZH_PLACES)
    head = rng.choice([prov + city, prov + city, city or prov, ""]) + rng.choice(districts)
    if rng.random() < 0.75:
        body = rng.choice(_ZH_ROADS) + f"{rng.randint(1, 999)}号"
        if rng.random() < 0.5:
            body += rng.choice(["", "院"]) + f"{rng.randint(1, 30)}号楼{rng.randint(101, 2505)}室"
    else:
        body = rng.choice(_ZH_ESTATES) + f"{rng.randint(1, 30)}栋{rng.randint(1, 6)}单元{rng.randint(101, 2505)}室"
    if rng.random() < 0.15:  # street + number only, no admin levels
        return rng.choice(_ZH_ROADS) + f"{rng.randint(1, 999)}号"
    return head + body


_EN_STREETS = ["Main", "Elm", "Oak", "Maple", "Amphitheatre", "Market", "Sunset", "Lincoln", "Park", "Cedar Hill", "King"]
_EN_SUFFIX = ["Street", "St", "Avenue", "Ave", "Road", "Rd", "Boulevard", "Blvd", "Lane", "Drive", "Dr.", "Court", "Way", "Pkwy", "Place"]
_EN_CITIES = [("Mountain View", "CA", "94043"), ("Springfield", "IL", "62704"), ("Austin", "TX", "78701"), ("Portland", "OR", "97205"), ("Boston", "MA", "02116")]


def en_address(rng: random.Random) -> str:
    out = f"{rng.randint(1, 9999)} {rng.choice(['', '', 'N ', 'West '])}{rng.choice(_EN_STREETS)} {rng.choice(_EN_SUFFIX)}"
    if rng.random() < 0.3:
        out += rng.choice([", Apt 4B", " Suite 210", ", Unit 7", " #12"])
    if rng.random() < 0.6:
        c, st, z = rng.choice(_EN_CITIES)
        out += f", {c}, {st} {z}"
    return out


_ZH_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗郑"
_ZH_GIVEN = ["伟", "娜", "芳", "敏", "静", "丽", "强", "磊", "洋", "艳", "小明", "建国", "秀英", "志强", "晓燕", "子涵", "浩然"]
_EN_FIRST = ["John", "Jane", "Michael", "Emily", "David", "Sarah", "Chris", "Olivia", "Daniel", "Grace"]
_EN_LAST = ["Smith", "Johnson", "Brown", "Taylor", "Miller", "Wilson", "Anderson", "Clark", "O'Neil", "Lee"]


def zh_name(rng: random.Random) -> str:
    return rng.choice(_ZH_SURNAMES) + rng.choice(_ZH_GIVEN)


def en_name(rng: random.Random) -> str:
    return f"{rng.choice(_EN_FIRST)} {rng.choice(_EN_LAST)}" if rng.random() < 0.8 else rng.choice(_EN_FIRST)


# --- look-alikes that must survive -------------------------------------------------------------

def lookalike(rng: random.Random, lang: str) -> str:
    """A short phrase with numbers that are NOT personal data (prices, dates, sizes, SKUs, ...)."""
    n = rng.randint
    zh = [
        lambda: f"¥{n(1, 999)}", lambda: f"{n(1, 9999)}元", lambda: f"{n(1, 9)},{n(100, 999)}.00元", lambda: f"{n(2019, 2025)}-{n(1, 12):02d}-{n(1, 28):02d}",
        lambda: f"{n(1, 12)}月{n(1, 28)}日", lambda: f"{n(2019, 2025)}年{n(1, 12)}月{n(1, 28)}日", lambda: f"{n(0, 23):02d}:{n(0, 59):02d}", lambda: f"下午{n(1, 6)}点",
        lambda: f"{n(10, 99)}x{n(10, 99)}厘米", lambda: f"{n(10, 99)}×{n(10, 99)}cm", lambda: f"{n(35, 45)}码", lambda: rng.choice(["XL", "XXL", "M码", "170/88A"]),
        lambda: f"SKU-{n(10000, 99999)}", lambda: f"型号XR-{n(1000, 9999)}", lambda: f"满{n(99, 399)}减{n(10, 50)}", lambda: f"{n(5, 95)}%", lambda: f"{n(1, 20)}件",
        lambda: f"{n(1, 5)}.{n(1, 9)}kg", lambda: f"{n(100, 999)}g", lambda: "客服热线400-820-8820", lambda: f"{n(2019, 2025)}/{n(1, 12):02d}/{n(1, 28):02d} {n(0, 23):02d}:{n(0, 59):02d}:{n(0, 59):02d}",
        lambda: f"{n(1, 7)}天无理由退货", lambda: f"第{n(1, 9)}代", lambda: f"{n(1, 300)}号仓", lambda: "[订单x]", lambda: "[金额x]", lambda: "#E-s[数字x]", lambda: f"{n(1, 9)}**号", lambda: "138****8000",
        lambda: f"iPhone {n(11, 16)} Pro", lambda: f"骁龙{n(800, 8999)}", lambda: f"{n(1000, 9999)}mAh", lambda: f"优惠券{n(5, 50)}元",
    ]
    en = [
        lambda: f"${n(1, 999)}.{n(0, 99):02d}", lambda: f"{n(1, 9)},{n(100, 999)}.00", lambda: f"{n(2019, 2025)}-{n(1, 12):02d}-{n(1, 28):02d}",
        lambda: f"{n(1, 12)}/{n(1, 28)}/{n(2019, 2025)}", lambda: f"{n(1, 12)}:{n(0, 59):02d} pm", lambda: f"{n(10, 99)}x{n(10, 99)} cm", lambda: rng.choice(["XL", "size M", "US 10.5"]),
        lambda: f"SKU-{n(10000, 99999)}", lambda: f"A{n(1, 9)}B{n(1, 9)}-{n(100, 999)}", lambda: f"iPhone {n(11, 16)} Pro", lambda: f"XR-{n(1000, 9999)}", lambda: f"RTX {n(3000, 4090)}",
        lambda: f"{n(5, 50)}% off", lambda: rng.choice(["SAVE10", "WELCOME15", "FREESHIP"]), lambda: f"{n(1, 12)} pcs", lambda: f"{n(1, 30)} days", lambda: "call 1-800-555-0199",
        lambda: f"{n(1, 5)}.{n(1, 9)} lbs", lambda: f"{n(2, 6)}-pack", lambda: f"Model {n(100, 999)}X", lambda: f"[ORDERID_{n(10000000, 99999999)}]", lambda: f"{n(100, 999)} reviews",
        lambda: f"Black Friday {n(2019, 2025)}", lambda: f"{n(1, 9)}x{n(1, 9)} ft rug",
    ]
    # only the chosen phrase is built: this runs for every generated case and every property example
    return rng.choice(zh if lang == "zh" else en)()


# --- whole cases ------------------------------------------------------------------------------

@dataclass
class Case:
    """A text and its gold spans `(start, end, type, value)`; `lang` is "zh" or "en"."""

    text: str
    lang: str
    gold: list[tuple[int, int, str, str]] = field(default_factory=list)


class _Builder:
    def __init__(self, lang: str):
        self.lang, self.parts, self.gold, self.pos = lang, [], [], 0

    def lit(self, s: str) -> "_Builder":
        self.parts.append(s)
        self.pos += len(s)
        return self

    def pii(self, typ: str, value: str) -> "_Builder":
        self.gold.append((self.pos, self.pos + len(value), typ, value))
        return self.lit(value)

    def build(self) -> Case:
        return Case("".join(self.parts), self.lang, self.gold)


_TEMPLATES: dict[tuple[str, str], list[str]] = {
    ("PHONE", "zh"): ["我的手机号是{}，麻烦联系我", "电话：{}", "打我电话{}就行", "联系方式 {} 谢谢", "{}", "换个号码吧{}，之前那个停机了"],
    ("PHONE", "en"): ["my phone is {}", "Call me at {} please", "Phone: {}", "you can text {} anytime"],
    ("ID", "zh"): ["身份证号{}", "我的身份证是 {}，请核对", "证件号码：{}", "{} 这是我身份证"],
    ("ID", "en"): ["my Chinese ID number is {}", "ID: {}"],
    ("CARD", "zh"): ["卡号{}", "退款到我的银行卡 {} 吧", "信用卡号：{}", "用这张卡{}付的"],
    ("CARD", "en"): ["card number {}", "refund to my card {} please", "Visa {}", "I paid with {}"],
    ("EMAIL", "zh"): ["邮箱{}", "发票发到{}就好", "我的邮箱是 {}，谢谢"],
    ("EMAIL", "en"): ["email me at {}", "my email is {}.", "send the invoice to {} thanks"],
    ("ORDER", "zh"): ["订单号{}", "订单号：{} 还没发货", "我的订单 {} 怎么还没到", "单号是{}", "{}"],
    ("ORDER", "en"): ["order #{}", "Order number: {} hasn't shipped", "my order {} is late", "order no. {}", "{}"],
    ("TRACKING", "zh"): ["快递单号{}", "运单号：{} 查不到物流", "中通{}", "顺丰单号 {}", "物流单号是{}吗"],
    ("TRACKING", "en"): ["tracking number {}", "Tracking #: {}", "the UPS tracking {} shows nothing", "waybill {}"],
    ("ADDRESS", "zh"): ["地址：{}", "寄到{}吧", "收货地址改成{}", "我住在{}，能送吗", "{}"],
    ("ADDRESS", "en"): ["ship it to {}", "Address: {}", "I live at {}. Can you deliver?", "my new address is {}"],
    ("NAME", "zh"): ["我叫{}", "收件人：{}", "收货人{}，谢谢", "联系人 {}", "姓名：{}"],
    ("NAME", "en"): ["my name is {}", "Name: {}", "Recipient: {}", "Ship to: {}"],
    ("HANDLE", "zh"): ["加我QQ {}", "微信：{}", "我的微信号是{}，加一下", "昵称：{}"],
    ("HANDLE", "en"): ["my WeChat ID is {}", "QQ: {}", "IG: {}", "nickname: {}"],
    ("POSTCODE", "zh"): ["邮编{}", "邮政编码：{}"],
    ("POSTCODE", "en"): ["postcode {}", "zip code {}", "Postcode: {}"],
}


def _value(rng: random.Random, typ: str, lang: str, template: str) -> str:
    if typ == "PHONE":
        return landline(rng) if rng.random() < 0.1 else phone(rng)
    if typ == "ID":
        return id_number(rng)
    if typ == "CARD":
        bare = template in ("{}", "用这张卡{}付的", "I paid with {}")
        return card(rng, valid=True, grouped=False if bare and rng.random() < 0.5 else None) if bare else card(rng, valid=rng.random() < 0.7)
    if typ == "EMAIL":
        return email(rng)
    if typ == "ORDER":
        return order_number(rng, bare=template == "{}")
    if typ == "TRACKING":
        return tracking_number(rng)[0]
    if typ == "ADDRESS":
        return zh_address(rng) if lang == "zh" else en_address(rng)
    if typ == "NAME":
        return zh_name(rng) if lang == "zh" else en_name(rng)
    if typ == "HANDLE":
        if "QQ" in template:
            return rng.choice("123456789") + _digits(rng, rng.randint(4, 10))
        if "IG" in template:
            return "@" + rng.choice(_PINYIN).replace("-", "_") + str(rng.randint(1, 99))
        if "昵称" in template or "nickname" in template:
            return rng.choice(["小红花", "快乐的鱼", "Bunny", "sunny_day", "阿狸", "Tigger88"])
        return rng.choice("abcdefghjkmnpqrstwxyz") + rng.choice(["hang", "ina", "iu_yang", "ei.lee"]).replace(".", "_") + str(rng.randint(10, 9999))
    if typ == "POSTCODE":
        if lang == "zh":
            return rng.choice("12345678") + _digits(rng, 5)
        if "zip" in template:
            return f"{rng.randint(10000, 99999)}"
        return rng.choice(["SW1A 1AA", "NW1 6XE", "EC1A 1BB", "M1 1AE", "B33 8TH", "CR2 6XH", "DN55 1PT", "W1A 0AX"])
    raise ValueError(f"unknown PII type {typ!r}")


def make_case(rng: random.Random, typ: str | None, lang: str) -> Case:
    """One case: a template holding one PII value of `typ` (None: a look-alike-only negative),
    with look-alike phrases before or after it half of the time."""
    b = _Builder(lang)
    joiner = "，" if lang == "zh" else ", "
    if rng.random() < 0.5:
        b.lit(lookalike(rng, lang) + joiner)
    if typ is None:
        b.lit(lookalike(rng, lang))
        for _ in range(rng.randint(0, 2)):
            b.lit(joiner + lookalike(rng, lang))
        return b.build()
    template = rng.choice(_TEMPLATES[(typ, lang)])
    if typ == "TRACKING":
        value, needs_ctx = tracking_number(rng)
        if needs_ctx and template in ("{}",):
            template = _TEMPLATES[(typ, lang)][0]
    else:
        value = _value(rng, typ, lang, template)
    head, _, tail = template.partition("{}")
    b.lit(head).pii(typ, value).lit(tail)
    if rng.random() < 0.5:
        b.lit(joiner + lookalike(rng, lang))
    return b.build()


def make_cases(n: int, *, seed: int = 0, negative_share: float = 0.25) -> list[Case]:
    """`n` cases over both languages: every type in turn, and `negative_share` look-alike-only ones."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lang = "zh" if i % 2 == 0 else "en"
        typ = None if rng.random() < negative_share else CASE_TYPES[(i // 2) % len(CASE_TYPES)]
        out.append(make_case(rng, typ, lang))
    return out


def make_mixed_case(rng: random.Random, lang: str, k: int = 3) -> Case:
    """Several PII values of different types in one line, joined like a customer would write them."""
    b = _Builder(lang)
    joiner = "，" if lang == "zh" else ", "
    for i, typ in enumerate(rng.sample(CASE_TYPES, k)):
        if i:
            b.lit(joiner)
        part = make_case(rng, typ, lang)
        base = b.pos
        b.lit(part.text)
        b.gold.extend((base + s, base + e, t, v) for s, e, t, v in part.gold)
    return b.build()


_CLEAN_ZH = [
    "亲，在的，请问有什么可以帮您？", "这款毛巾是纯棉的，{}，干湿两用。", "默认发中通快递，{}前下单当天发货。",
    "亲，可以领取{}的优惠券哦。", "退货请在签收后7天内申请，运费由我们承担。", "好的，已经帮您备注了，请放心。",
    "这个颜色还有货吗", "{}的话可以便宜一点吗", "尺码偏大还是偏小呀", "已经发货了吗？", "麻烦快点发货，谢谢",
    "这个和{}有什么区别", "亲，您拍下后我们这边会尽快安排的", "收到货不满意可以退吗", "好的谢谢",
]
_CLEAN_EN = [
    "Hello, how can I help you today?", "This towel is pure cotton, {}, and can be used wet or dry.",
    "Orders placed before {} ship the same day.", "You can use the coupon {} at checkout.",
    "Returns are accepted within 7 days of delivery.", "Sorry for the wait, your parcel is on its way.",
    "Is this available in {}?", "What's the difference between this and {}?", "Thanks, that's all.",
    "Can I change the color after ordering?", "The price is {} today only.",
]


def clean_line(rng: random.Random, lang: str) -> str:
    """A typical customer-service line with no PII (look-alikes slotted into some templates)."""
    template = rng.choice(_CLEAN_ZH if lang == "zh" else _CLEAN_EN)
    return template.format(lookalike(rng, lang)) if "{}" in template else template


_NOISE_CJK = "的是在不了有和人这中大为上个我以要他时来们生到作地出就分对会可主动同工也能下过子说产种面而方后多行学法所民得经之进着等部度家力里如水化高自理起小现实加量都体制机当使点从业本去把性好应它合还因由其些然前外天那社义事平形相全表间样与关各新线内数正心反你明看原又么利比或但质气第向只没结解问意建月公无军很情者最立代想已通并提直题党程展果料象员革位入常文总次品式活设及管特件长求老头基资边级少图山统接知较将组见计别她手角期根论农指区强放决西被干做必战回则任取据处研"
_NOISE_LATIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,.;!?'()-:/"


def noise(rng: random.Random, max_len: int = 16) -> str:
    """Random CJK/Latin filler without digits, '@' or numerals (so it cannot lengthen a number)."""
    alphabet = _NOISE_CJK + _NOISE_LATIN + "，。！？：　 "  # no context words' characters (运单, 卡号, 姓名...)
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))


def make_noisy_case(rng: random.Random, typ: str, lang: str) -> Case:
    """A case of `typ` with random filler glued on both sides, no spaces required."""
    inner = make_case(rng, typ, lang)
    head = noise(rng)
    b = _Builder(lang).lit(head)
    b.lit(inner.text)
    b.gold.extend((len(head) + s, len(head) + e, t, v) for s, e, t, v in inner.gold)
    b.lit(noise(rng))
    return b.build()
