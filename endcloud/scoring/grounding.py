"""Grounding: is every fact a reply states supported by what the turn knows?

The paper's scores (Sim, Match) say whether a reply *sounds* like the cloud's and fits the
question; neither notices "128元" where the catalog says 129. This check reads the facts a
reply states and looks each one up in the evidence of the turn: the knowledge snippets
retrieved for it, the customer's own data (their messages, the Customer system message)
and the shop's profile (name, currency, shop.yaml values).

    checker = GroundingChecker(products=["纯棉方巾"])
    g = checker.check("亲，纯棉方巾128元，三天送达", ["纯棉方巾（SKU 520401029636）价格128.00元", "发货后一般3天送达"])
    g.supported, [f.text for f in g.unsupported], g.score         # True, [], 1.0

Facts, zh + en (general regular expressions; Chinese numerals read lightly: 三天, 七天, 四十八小时):

    price     128元 ¥128 ￥1,299.00 $12.99 12.99 USD 九块        compared as numbers: 128.00 == 128
    count     82件 库存82 82 in stock, only 3 left
    duration  3天 48小时 3-5 business days 七天 half an hour     compared in minutes: 48小时 == 2天 (a business day is a day)
    percent   10% 百分之十 10 percent;  discount 9折 8.5折
    time      17:00 9:00-21:00 下午4点 4 pm                      下午4点 == 16:00; "4点" may be 4:00 or 16:00
    date      2024-06-24 6月24日 June 24(, 2024)                 the year only when both sides give one
    measure   20cm 500ml 1.5kg
    id        SKUs, order, tracking and phone numbers (6+ digits)
    product   a catalog name;  courier  顺丰 / SF Express, 中通 / ZTO, UPS, Royal Mail, ... (one id per carrier)
    placeholder  [ORDER_1] [PHONE_1] (and corpus masks like [金额x]): supported where the evidence holds them
    number    any other number (list markers and 0/1 are not facts)

A number stated with a unit is supported by the same value with the same unit in the
evidence, or by the bare number there (an orders row says "eta_days: 3"), never by the same
number with another unit (库存82件 does not support 82元; $10 off does not support 10% off).

`GroundingScorer` is the `Scorer` form (`score(replies, evidences) -> [0, 1]`, the share of a
reply's facts that are supported; 1.0 for a reply that states none), registered as
"grounding" in `CHECKS`, the registry of reply checks `endcloud eval --check` adds columns
for (a reply check is a Scorer of (reply, evidence) with `evidence_for(messages) -> str`);
"novelty" there is `endcloud.scoring.novelty`'s check of text neither the evidence nor the
end model's trained phrasing accounts for.
A checker remembers the evidence of the last `EVIDENCE_CACHE` texts it read: a turn's
snippets, the shop's profile and a chat's earlier messages come back turn after turn. `contradictions()` is the online loop's stricter question about a lesson: does it state
a number the shop's knowledge does not support, or promise "free" where the knowledge states
a fee?
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from endcloud.registry import Registry
from endcloud.scoring.base import Scorer, check_pairs, remember

KINDS = ("placeholder", "date", "time", "id", "percent", "discount", "price", "duration", "count", "measure",
         "courier", "product", "number")
# What a lesson may not get wrong (the online loop's contradiction check): the kinds a shop's
# knowledge fixes. Product names and ids are left out: a reply may recommend a product the
# question's snippets do not list, or quote the customer's own number.
CONTRADICTION_KINDS = ("date", "time", "percent", "discount", "price", "duration", "count", "measure", "courier", "number")

# ---------------------------------------------------------------------------------------------
# Carriers, zh + en: one id per carrier so 顺丰 is supported by "SF Express" and the other way round.
COURIERS: dict[str, tuple[str, ...]] = {
    "sf": ("顺丰速运", "顺丰快递", "顺丰", "SF Express", "S.F. Express"),
    "zto": ("中通快递", "中通", "ZTO Express", "ZTO"),
    "yto": ("圆通速递", "圆通快递", "圆通", "YTO Express", "YTO"),
    "yunda": ("韵达快递", "韵达", "Yunda Express", "Yunda"),
    "sto": ("申通快递", "申通", "STO Express", "STO"),
    "jd": ("京东物流", "京东快递", "京东", "JD Logistics", "JD Express"),
    "post": ("中国邮政", "邮政", "EMS", "China Post"),
    "jt": ("极兔速递", "极兔", "J&T Express", "J&T"),
    "best": ("百世快递", "百世", "Best Express"),
    "deppon": ("德邦快递", "德邦", "Deppon"),
    "ttk": ("天天快递",),
    "zjs": ("宅急送",),
    "cainiao": ("菜鸟", "Cainiao"),
    "ups": ("UPS",),
    "fedex": ("联邦快递", "FedEx"),
    "dhl": ("DHL",),
    "usps": ("USPS",),
    "royalmail": ("Royal Mail",),
    "canadapost": ("Canada Post",),
    "auspost": ("Australia Post", "AusPost"),
    "dpd": ("DPD",),
    "gls": ("GLS",),
    "evri": ("Evri", "Hermes"),
    "tnt": ("TNT",),
    "aramex": ("Aramex",),
    "ontrac": ("OnTrac",),
    "amazon": ("Amazon Logistics",),
    "yamato": ("Yamato",),
    "japanpost": ("Japan Post",),
    "yunexpress": ("YunExpress", "云途"),
    "4px": ("4PX", "递四方"),
}


def _courier_index(couriers: dict[str, tuple[str, ...]]) -> dict[str, list[tuple[str, str, bool]]]:
    """Names by their first two lower-case characters, longest first: (name, carrier id, exact
    case). All-capital acronyms (UPS, EMS, STO) count only as written: "ups" and "stock" are words."""
    index: dict[str, list[tuple[str, str, bool]]] = {}
    for cid, names in couriers.items():
        for name in names:
            exact = name.isascii() and name.upper() == name
            index.setdefault(name[:2].lower(), []).append((name, cid, exact))
    for entries in index.values():
        entries.sort(key=lambda e: -len(e[0]))
    return index


def _couriers(t: "_Text", index: dict[str, list[tuple[str, str, bool]]], ex: "_Extraction") -> None:
    w = t.work
    low = w.lower()
    i = 0
    while i < len(w) - 1:
        step = 1
        for name, cid, exact in index.get(low[i:i + 2], ()):
            n = len(name)
            if not (w.startswith(name, i) if exact else low.startswith(name.lower(), i)):
                continue
            if name.isascii() and ((i > 0 and w[i - 1].isascii() and w[i - 1].isalpha())
                                   or (i + n < len(w) and w[i + n].isascii() and w[i + n].isalpha())):
                continue  # inside a word
            if ex.free(i, i + n):
                ex.add(i, i + n, "courier", (cid,))
                step = n
            break
        i += step


# ---------------------------------------------------------------------------------------------
# Preparing a text: NFKC one character at a time (offsets map back to what was written), the
# ideographic comma kept (as "," it would glue "满99，100" into a thousands number), and
# Chinese / English number words before a unit turned into digits.

_ZH_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNIT = {"十": 10, "百": 100, "千": 1000}
_ZH_NUMERALS = "零〇一二两三四五六七八九十百千万"
_ZH_UNITS_AFTER = (r"个?工作日|个?小时|个?钟头|天|日内|周|星期|个月|年|件|套|双|条|只|份|台|瓶|盒|箱|元|块|折|点|分钟|倍|%")
_ZH_NUMBER = re.compile(f"(?:(?<=百分之)[{_ZH_NUMERALS}]+)|(?:(?<![{_ZH_NUMERALS}])[{_ZH_NUMERALS}]+(?=(?:{_ZH_UNITS_AFTER})))")
_ZH_HALF = re.compile(r"(?<![0-9零〇一二两三四五六七八九十])半(?=个?小时|天|个月|年)")
_EN_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_EN_WORDS |= {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_EN_WORD = "|".join(sorted(_EN_WORDS, key=len, reverse=True))
_EN_NUMBER = re.compile(
    rf"(?<![A-Za-z-])(?i:({_EN_WORD})(?:[- ]({_EN_WORD}))?)(?=\s+(?i:(?:business |working )?(?:days?|hours?|weeks?|"
    r"months?|years?|minutes?)|percent|per cent|dollars?|items?|pieces?|units?|left)\b)")
_EN_HALF = re.compile(r"(?i)\bhalf an? (?=hour\b)")
_KEEP_AS_IS = frozenset("，")


def zh_number(s: str) -> int | None:
    """一百二十八 -> 128, 十五 -> 15, 两 -> 2, 二零二四 -> 2024; None for what is not a number."""
    if not s:
        return None
    if all(c in _ZH_DIGIT for c in s):
        return int("".join(str(_ZH_DIGIT[c]) for c in s))
    total = section = num = 0
    for c in s:
        if c in _ZH_DIGIT:
            num = _ZH_DIGIT[c]
        elif c in _ZH_UNIT:
            section += (num or 1) * _ZH_UNIT[c]
            num = 0
        elif c == "万":
            total += (section + num) * 10000
            section = num = 0
        else:
            return None
    return total + section + num


@dataclass
class _Text:
    """A prepared text: `work` is what the patterns read; work[i] came from original[start[i]:end[i]]."""

    original: str
    work: str
    start: list[int]
    end: list[int]

    def span(self, a: int, b: int) -> str:
        return self.original[self.start[a]:self.end[b - 1]] if b > a else ""


def _prepare(text: str) -> _Text:
    # whole-text NFKC when it keeps the length (almost always): offsets map one to one
    nf = text if text.isascii() else unicodedata.normalize("NFKC", text.replace("，", "\ue000")).replace("\ue000", "，")
    if len(nf) == len(text):
        t = _Text(text, nf, list(range(len(text))), list(range(1, len(text) + 1)))
    else:
        out: list[str] = []
        start: list[int] = []
        end: list[int] = []
        for i, ch in enumerate(text):
            n = ch if ch.isascii() or ch in _KEEP_AS_IS else unicodedata.normalize("NFKC", ch)
            for c in n:
                out.append(c)
                start.append(i)
                end.append(i + 1)
        t = _Text(text, "".join(out), start, end)
    t = _rewrite(t, _ZH_NUMBER, lambda m: None if (v := zh_number(m.group(0))) is None or
                 (m.group(0) == "一" and t.work.startswith("点", m.end())) else str(v))  # 快一点 is no time
    t = _rewrite(t, _ZH_HALF, lambda m: "0.5")
    t = _rewrite(t, _EN_NUMBER, lambda m: str(_EN_WORDS[m.group(1).lower()] + (_EN_WORDS[m.group(2).lower()] if m.group(2) else 0)))
    return _rewrite(t, _EN_HALF, lambda m: "0.5 ")


def _rewrite(t: _Text, pattern: re.Pattern[str], fn: Callable[[re.Match[str]], str | None]) -> _Text:
    if not pattern.search(t.work):
        return t
    out: list[str] = []
    start: list[int] = []
    end: list[int] = []
    last = 0
    for m in pattern.finditer(t.work):
        rep = fn(m)
        if rep is None or m.end() == m.start():
            continue
        out.append(t.work[last:m.start()])
        start += t.start[last:m.start()]
        end += t.end[last:m.start()]
        out.append(rep)
        start += [t.start[m.start()]] * len(rep)
        end += [t.end[m.end() - 1]] * len(rep)
        last = m.end()
    out.append(t.work[last:])
    start += t.start[last:]
    end += t.end[last:]
    return _Text(t.original, "".join(out), start, end)


# ---------------------------------------------------------------------------------------------
# The facts.

def canonical_number(text: str) -> str:
    """'1,299.00' -> '1299', '12.50' -> '12.5', '０８' -> '8' (no exponent, no trailing zeros)."""
    try:
        d = Decimal(unicodedata.normalize("NFKC", text).replace(",", "").strip())
    except InvalidOperation:
        return text
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _scaled(number: str, factor: float) -> str:
    return canonical_number(str(Decimal(number) * Decimal(str(factor))))


@dataclass(frozen=True, slots=True)
class Fact:
    """One fact a text states. `text` is as written; `values` what it is compared by (numbers
    in a canonical unit: minutes for durations, minutes after midnight for times, y-m-d for
    dates, a carrier id, a flattened name or id); `numbers` the numbers as written (canonical),
    which a bare number in the evidence supports."""

    kind: str
    text: str
    values: tuple[str, ...]
    numbers: tuple[str, ...] = ()
    unit: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "values": list(self.values)}


_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?)"
_N = rf"(?<![A-Za-z0-9.]){_NUM}"
_RANGE = rf"(?P<a>{_N})(?:\s*(?:-|~|到|至|—|–|\bto\b)\s*(?P<b>{_NUM}))?"
_PLACEHOLDER = re.compile(r"\[[A-Z]{2,12}_\d{1,6}\]|\[[A-Z]{2,12}ID_\d{1,12}\]|\[[\u4e00-\u9fff]{1,6}x\]")
_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_MONTH = r"(?:(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|june?|july?|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)|May)\.?"
_DATES = (
    re.compile(r"(?<!\d)(?P<y>(?:19|20)\d{2})\s*(?:[-/.]|年)\s*(?P<m>\d{1,2})\s*(?:[-/.]|月)\s*(?P<d>\d{1,2})(?!\d)\s*(?:日|号)?"),
    re.compile(r"(?<!\d)(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*(?:日|号)"),
    re.compile(rf"(?=[JFMASONDjfmasond])\b(?P<mn>{_MONTH})\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(?P<y>(?:19|20)\d{{2}})\b)?"),
    re.compile(rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mn>{_MONTH})(?![a-z])(?:,?\s+(?P<y>(?:19|20)\d{{2}})\b)?"),
)
_PERIOD_ZH = {"凌晨": "am", "早上": "am", "早晨": "am", "上午": "am", "中午": "noon", "下午": "pm", "傍晚": "pm", "晚上": "pm", "夜里": "pm"}
_PERIOD_GATE = r"(?=凌晨|早上|早晨|上午|中午|下午|傍晚|晚上|夜里|\d)"
_TIMES = (
    re.compile(_PERIOD_GATE + r"(?P<p>凌晨|早上|早晨|上午|中午|下午|傍晚|晚上|夜里)?\s*(?<![\d.])(?P<h>\d{1,2})\s*[:：]\s*(?P<mi>\d{2})(?!\d)"
               r"(?:\s*(?P<ap>(?i:a\.?m\.?|p\.?m\.?))(?![A-Za-z]))?"),
    re.compile(_PERIOD_GATE + r"(?P<p>凌晨|早上|早晨|上午|中午|下午|傍晚|晚上|夜里)?\s*(?<![\d.])(?P<h>\d{1,2})\s*(?:点钟|点|时)(?!\d)(?:\s*(?P<half>半)|\s*(?P<mi>\d{1,2})\s*分)?"),
    re.compile(r"(?<![\d.])(?P<h>\d{1,2})\s*(?P<ap>(?i:a\.m\.|p\.m\.|am|pm))(?![A-Za-z])"),
)
# Ids: one run of letters/digits/dashes with 6+ digits, or 3+ digit groups apart by single spaces ("138 0013 8000").
_IDS = (re.compile(r"(?<![\d.])\d{3,4}(?: \d{2,4}){2,}(?![\d.])"),)
_ID = re.compile(r"(?<![A-Za-z0-9])(?=(?:[A-Za-z-]*\d){6})[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9]))*(?![A-Za-z0-9])")
_PERCENTS = (re.compile(rf"{_RANGE}\s*(?:%|(?i:percent|per cent)\b)"), re.compile(rf"百分之\s*(?P<a>{_NUM})"))
_DISCOUNT = re.compile(rf"{_RANGE}\s*折")
_CURRENCY_PREFIX = r"(?:(?i:us\$|hk\$|s\$|a\$|c\$)|\$|¥|€|£|(?<![A-Za-z])(?i:rmb|cny|usd|eur|gbp)(?![A-Za-z]))"
_CURRENCY_SUFFIX = (r"(?:元|块钱|块|圆|美元|美金|人民币|欧元|英镑|(?i:rmb|cny|usd|eur|gbp|yuan|dollars?|bucks?|euros?|pounds?)(?![A-Za-z]))")
_PRICES = (re.compile(rf"(?=[$¥€£UuHhSsAaCcRrEeGg]){_CURRENCY_PREFIX}\s*(?P<a>{_NUM})(?:\s*(?:-|~|到|至|—|–|\bto\b)\s*{_CURRENCY_PREFIX}?\s*(?P<b>{_NUM}))?"),
           re.compile(rf"{_RANGE}\s*{_CURRENCY_SUFFIX}"))
_DURATION_UNITS = {  # unit -> minutes; a business day is a day here ("3天" and "3个工作日" are not a contradiction)
    "工作日": 1440, "business day": 1440, "working day": 1440, "天": 1440, "日": 1440, "day": 1440,
    "小时": 60, "钟头": 60, "hour": 60, "hr": 60, "h": 60, "周": 10080, "星期": 10080, "week": 10080,
    "月": 43200, "month": 43200, "分钟": 1, "minute": 1, "min": 1, "年": 525600, "year": 525600,
}
_DURATION = re.compile(
    rf"{_RANGE}\s*个?\s*(?P<u>工作日|(?i:business days?|working days?)|天|日(?=内|之内|以内)|小时|钟头|(?i:hours?|hrs?)(?![A-Za-z])"
    r"|h(?![A-Za-z])|周|星期|月(?=内|之内|以内|后|左右)|(?i:weeks?|months?|minutes?|mins?|years?|days?)(?![A-Za-z])|分钟|年(?=内|之内|以内|质保|保修))")
_COUNTS = (
    re.compile(rf"{_RANGE}\s*(?:件|套|双|条|只|份|台|瓶|盒|箱|(?i:pcs|pieces?|units?|items?|left|in stock|available)(?![A-Za-z]))"),
    re.compile(rf"(?=[库现还仅sSiI])(?:库存|现货|还剩|仅剩|(?i:stock(?: level)?|inventory))\s*(?:为|是|有|还有|:|(?i:of))?\s*(?P<a>{_NUM})"),
)
_MEASURE_UNITS = {"厘米": "cm", "毫米": "mm", "公里": "km", "千克": "kg", "公斤": "kg", "克": "g", "毫升": "ml", "升": "l", "米": "m",
                  "寸": "inch", "码": "size", "inches": "inch", "inch": "inch", "lbs": "lb"}
_MEASURE = re.compile(rf"{_RANGE}\s*(?P<u>厘米|毫米|公里|千克|公斤|克|毫升|升|米|寸|码|(?i:cm|mm|km|kg|g|ml|l|m|oz|lbs?|inch(?:es)?)(?![A-Za-z]))")
_BARE = re.compile(_N)
_LIST_MARKER = re.compile(r"(?:^|(?<=[\s:：]))\d{1,2}\s*[.、)）](?!\d)")


def _range_numbers(m: re.Match[str]) -> tuple[str, ...]:
    out = [canonical_number(m.group("a"))]
    b = m.groupdict().get("b")
    if b:
        out.append(canonical_number(b))
    return tuple(out)


def flat(text: str) -> str:
    """NFKC, lower case, no whitespace: how names and ids are looked up."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).lower())


def _flat_id(text: str) -> str:
    return re.sub(r"[\s\-]+", "", unicodedata.normalize("NFKC", text).lower())


class _Extraction:
    """Facts of one text, found in priority order; a character belongs to one fact at most."""

    def __init__(self, t: _Text):
        self.t = t
        self.taken = bytearray(len(t.work))
        self.facts: list[tuple[int, Fact]] = []

    def free(self, a: int, b: int) -> bool:
        return not any(self.taken[a:b])

    def add(self, a: int, b: int, kind: str, values: Sequence[str], numbers: Sequence[str] = (), unit: str = "") -> None:
        self.taken[a:b] = b"\x01" * (b - a)
        self.facts.append((a, Fact(kind, self.t.span(a, b).strip(), tuple(values), tuple(numbers), unit)))


def _extract(text: str, products: dict[str, list[str]] | None,
             couriers: dict[str, list[tuple[str, str, bool]]]) -> list[Fact]:
    t = _prepare(text)
    w = t.work
    ex = _Extraction(t)
    for m in _PLACEHOLDER.finditer(w):
        ex.add(m.start(), m.end(), "placeholder", (m.group(0),))
    if products:  # before the numbers: a name may hold digits ("iPhone 15") that are no fact of their own
        _products(t, products, ex)
    for rx in _DATES:
        for m in rx.finditer(w):
            if not ex.free(m.start(), m.end()):
                continue
            month = int(m.group("m")) if "m" in rx.groupindex and m.group("m") else _MONTHS.get(m.group("mn")[:3].lower(), 0)
            day = int(m.group("d"))
            if not (1 <= month <= 12 and 1 <= day <= 31):
                continue
            y = m.groupdict().get("y") or ""
            ex.add(m.start(), m.end(), "date", (f"{y}-{month}-{day}",))
    for rx in _TIMES:
        for m in rx.finditer(w):
            if not ex.free(m.start(), m.end()):
                continue
            h = int(m.group("h"))
            g = m.groupdict()
            mi = 30 if g.get("half") else int(g.get("mi") or 0)
            if h > 24 or mi > 59:
                continue
            period = (g.get("ap") or "").lower().replace(".", "") or _PERIOD_ZH.get(g.get("p") or "", "")
            if period == "pm" and h < 12:
                hours = [h + 12]
            elif period == "am":
                hours = [0 if h == 12 else h]
            elif period == "noon" or h >= 12:
                hours = [h]
            elif rx is _TIMES[0]:
                hours = [h]  # 9:00 is written as meant
            else:
                hours = [h, h + 12]  # "4点" is 4:00 or 16:00
            ex.add(m.start(), m.end(), "time", tuple(str(x * 60 + mi) for x in hours))
    for rx in (*_IDS, _ID):
        for m in rx.finditer(w):
            if ex.free(m.start(), m.end()):
                ex.add(m.start(), m.end(), "id", (_flat_id(m.group(0)),))
    for rx in _PERCENTS:
        for m in rx.finditer(w):
            if ex.free(m.start(), m.end()):
                nums = _range_numbers(m)
                ex.add(m.start(), m.end(), "percent", nums, nums)
    for m in _DISCOUNT.finditer(w):
        if ex.free(m.start(), m.end()):
            nums = _range_numbers(m)
            ex.add(m.start(), m.end(), "discount", nums, nums)
    for rx in _PRICES:
        for m in rx.finditer(w):
            if ex.free(m.start(), m.end()):
                nums = _range_numbers(m)
                ex.add(m.start(), m.end(), "price", nums, nums)
    for m in _DURATION.finditer(w):
        if not ex.free(m.start(), m.end()):
            continue
        u = m.group("u").lower().rstrip("s")
        if u in ("年",) and float(m.group("a").replace(",", "")) >= 100:
            continue  # 2024年 is a year, not a duration
        factor = _DURATION_UNITS.get(u) or _DURATION_UNITS.get(u.replace("个", "")) or _DURATION_UNITS[u[:1]]
        nums = _range_numbers(m)
        ex.add(m.start(), m.end(), "duration", tuple(_scaled(n, factor) for n in nums), nums)
    for rx in _COUNTS:
        for m in rx.finditer(w):
            if ex.free(m.start(), m.end()):
                nums = _range_numbers(m)
                ex.add(m.start(), m.end(), "count", nums, nums)
    for m in _MEASURE.finditer(w):
        if ex.free(m.start(), m.end()):
            u = m.group("u").lower()
            u = _MEASURE_UNITS.get(u, u)
            nums = _range_numbers(m)
            ex.add(m.start(), m.end(), "measure", nums, nums, unit=u)
    _couriers(t, couriers, ex)
    markers = {m.start() for m in _LIST_MARKER.finditer(w)}
    for m in _BARE.finditer(w):
        if not ex.free(m.start(), m.end()) or m.start() in markers:
            continue
        n = canonical_number(m.group(0))
        if n in ("0", "1"):
            continue
        ex.add(m.start(), m.end(), "number", (n,), (n,))
    return [f for _, f in sorted(ex.facts, key=lambda x: x[0])]


def _products(t: _Text, products: dict[str, list[str]], ex: _Extraction) -> None:
    """Catalog names the text mentions, longest first, not overlapping (spaces ignored).
    `products` holds the flattened names by their first two characters, longest first, so a
    2,000-product catalog costs a dict lookup per character, not a scan per name."""
    chars = [(i, c) for i, c in enumerate(t.work.lower()) if not c.isspace()]
    flat_text = "".join(c for _, c in chars)
    i = 0
    while i < len(flat_text) - 1:
        for key in products.get(flat_text[i:i + 2], ()):
            if flat_text.startswith(key, i):
                a, b = chars[i][0], chars[i + len(key) - 1][0] + 1
                if ex.free(a, b):
                    ex.add(a, b, "product", (key,))
                    i += len(key) - 1
                    break
        i += 1


# ---------------------------------------------------------------------------------------------
# The evidence and the check.

@dataclass
class Evidence:
    """What supports facts: every fact found in the evidence texts, and the texts flattened."""

    raw: str
    flat: str
    flat_id: str
    values: set[tuple[str, str]] = field(default_factory=set)  # (kind[:unit], value) of every fact found
    numbers: set[str] = field(default_factory=set)  # every number written anywhere (any kind)
    bare: set[str] = field(default_factory=set)  # numbers written without a unit
    dates: set[tuple[str, int, int]] = field(default_factory=set)

    @classmethod
    def merge(cls, parts: Sequence["Evidence"]) -> "Evidence":
        # "\x00" between texts: no id or name may run from one text into the next
        ev = cls(raw="\n".join(p.raw for p in parts), flat="\x00".join(p.flat for p in parts),
                 flat_id="\x00".join(p.flat_id for p in parts))
        for p in parts:
            ev.values |= p.values
            ev.numbers |= p.numbers
            ev.bare |= p.bare
            ev.dates |= p.dates
        return ev

    def supports(self, f: Fact) -> bool:
        k = f.kind
        if k == "placeholder":
            return f.values[0] in self.raw
        if k == "id":
            # "order543307238704310553" written without a space is still that order's number
            digits = max(re.findall(r"\d+", f.values[0]), key=len, default="")
            return f.values[0] in self.flat_id or (len(digits) >= 6 and digits in self.flat_id)
        if k == "product":
            return f.values[0] in self.flat
        if k == "courier":
            return ("courier", f.values[0]) in self.values
        if k == "date":
            y, m, d = _date_key(f.values[0])
            return any((m, d) == (em, ed) and (not y or not ey or y == ey) for ey, em, ed in self.dates)
        if k == "time":
            return any(("time", v) in self.values for v in f.values)
        if k == "number":
            return f.values[0] in self.numbers
        kind = f"{k}:{f.unit}" if f.unit else k
        if all((kind, v) in self.values for v in f.values):
            return True
        return bool(f.numbers) and all(n in self.bare for n in f.numbers)


def _date_key(v: str) -> tuple[str, int, int]:
    y, m, d = v.split("-")
    return y, int(m), int(d)


@dataclass
class Grounding:
    """The check of one reply: `supported` when every fact it states is; `score` the share that is."""

    facts: list[Fact]
    unsupported: list[Fact]

    @property
    def supported(self) -> bool:
        return not self.unsupported

    @property
    def score(self) -> float:
        return 1.0 if not self.facts else 1.0 - len(self.unsupported) / len(self.facts)

    def to_json(self) -> dict[str, Any]:
        return {"supported": self.supported, "score": round(self.score, 4),
                "unsupported": [f.to_json() for f in self.unsupported], "facts": len(self.facts)}


# Free of charge, zh + en, longest first ("运费全免" before "全免").
_FREE = re.compile(r"运费全免|全场免费|一律免费|免运费|免邮费|不收运费|不收邮费|不用付运费|不要运费|免费|包邮|免邮|全免|不收费|不要钱|零费用"
                   r"|(?i:\bfree\b|no (?:extra )?charge|no cost|no fee|costs? nothing|without (?:any )?charge)")
# A fee the knowledge states: a fee word in the same clause as a price.
_FEE = re.compile(r"运费|邮费|手续费|差价|收费|费用|(?i:\bfees?\b|surcharge|\bcosts?\b|\bcharge[sd]?\b)")
EVIDENCE_CACHE = 4096  # texts whose evidence a checker remembers
_CLAUSE = re.compile(r"[^，,。.;；!！?？\n]+")


class GroundingChecker:
    """Extracts facts and checks them against evidence; `products` are the shop's catalog names."""

    def __init__(self, *, products: Iterable[str] = (), couriers: dict[str, tuple[str, ...]] | None = None,
                 min_name_chars: int = 2):
        keys = set()
        for name in products:
            key = flat(name)
            # a one-character name ("袜") would match inside every other word
            if len(key) >= max(2, min_name_chars) and (not key.isascii() or len(key) >= 4):
                keys.add(key)
        self.products: dict[str, list[str]] = {}
        for key in sorted(keys, key=lambda k: (-len(k), k)):
            self.products.setdefault(key[:2], []).append(key)
        self._couriers = _courier_index(couriers or COURIERS)
        self._cache: dict[str, Evidence] = {}

    @classmethod
    def for_knowledge(cls, kb: Any) -> "GroundingChecker":
        """A checker knowing the catalog names of a `KnowledgeBase` (or a `ShopPack`); None: none."""
        pack = getattr(kb, "pack", kb)
        return cls(products=[p.name for p in getattr(pack, "products", None) or []])

    def facts(self, text: str, *, products: bool = True) -> list[Fact]:
        return _extract(text or "", self.products if products else None, self._couriers)

    def evidence(self, texts: str | Iterable[str]) -> Evidence:
        """The evidence of some texts. Each text is read once and remembered: a turn's snippets,
        the shop's profile and the earlier messages of a chat come back turn after turn."""
        pieces = [texts] if isinstance(texts, str) else [t for t in texts if t]
        return Evidence.merge([self._evidence_of(t) for t in pieces])

    def _evidence_of(self, text: str) -> Evidence:
        ev = self._cache.get(text)
        if ev is not None:
            return ev
        ev = Evidence(raw=unicodedata.normalize("NFKC", text), flat=flat(text), flat_id=_flat_id(text))
        for f in self.facts(text, products=False):  # a name is looked up in the flattened text
            kind = f"{f.kind}:{f.unit}" if f.unit else f.kind
            ev.values.update((kind, v) for v in f.values)
            ev.numbers.update(f.numbers)
            if f.kind == "number":
                ev.bare.update(f.numbers)
            elif f.kind == "date":
                ev.dates.add(_date_key(f.values[0]))
        return remember(self._cache, text, ev, EVIDENCE_CACHE)

    def check(self, reply: str, evidence: Evidence | str | Iterable[str], *, kinds: Sequence[str] | None = None) -> Grounding:
        """Every fact of `reply` (of `kinds`, default all) looked up in `evidence`."""
        ev = evidence if isinstance(evidence, Evidence) else self.evidence(evidence)
        facts = [f for f in self.facts(reply) if kinds is None or f.kind in kinds]
        return Grounding(facts=facts, unsupported=[f for f in facts if not ev.supports(f)])

    def contradictions(self, text: str, evidence: Evidence | str | Iterable[str]) -> list[str]:
        """What in `text` contradicts the knowledge: a number, duration, price, time, date or
        carrier it does not support, or a free-of-charge promise where the knowledge states a
        fee (unless the promise carries a condition the knowledge has, "满49元包邮", or the
        knowledge makes the same promise, "免费补发")."""
        ev = evidence if isinstance(evidence, Evidence) else self.evidence(evidence)
        out = [f.text for f in self.check(text, ev, kinds=CONTRADICTION_KINDS).unsupported]
        if _fee_stated(ev.raw):
            out += self._unfounded_free_claims(text, ev)
        return out

    def _unfounded_free_claims(self, text: str, ev: Evidence) -> list[str]:
        out: list[str] = []
        norm = unicodedata.normalize("NFKC", text)
        ev_words = " ".join(ev.raw.lower().split())
        for clause in _CLAUSE.finditer(norm):
            c = clause.group(0)
            for m in _FREE.finditer(c):
                numeric = [f for f in self.facts(c) if f.kind in ("price", "number", "count", "percent")]
                if numeric and all(ev.supports(f) for f in numeric):
                    continue  # a condition the knowledge states: 满49元包邮, free on orders over $35
                if _said_alike(c, m, ev.flat, ev_words):
                    continue
                out.append(c.strip())
                break
        return out


def _fee_stated(text: str) -> bool:
    return any(_FEE.search(c.group(0)) and any(p.search(c.group(0)) for p in _PRICES) for c in _CLAUSE.finditer(text))


def _said_alike(clause: str, m: re.Match[str], ev_flat: str, ev_words: str) -> bool:
    """Whether the knowledge makes the same promise: the free word with its neighbours (two
    characters in Chinese, two words in English) on either side occurs in the knowledge."""
    term = m.group(0)
    if term.isascii():
        before = clause[:m.start()].lower().split()[-2:]
        after = clause[m.end():].lower().split()[:2]
        windows = [" ".join(before + [term.lower()]) if before else "", " ".join([term.lower()] + after) if after else ""]
        return any(w and w in ev_words for w in windows)
    before = re.sub(r"\s+", "", clause[:m.start()])[-2:]
    after = re.sub(r"\s+", "", clause[m.end():])[:2]
    windows = [flat(before + term) if before else "", flat(term + after) if after else ""]
    return any(w and w in ev_flat for w in windows)


# ---------------------------------------------------------------------------------------------
# The Scorer form and the registry of reply checks.

class ReplyCheck(Scorer):
    """A `CHECKS` entry: a checker (whose `check(reply, evidence)` has a `.score` in [0, 1])
    as a Scorer of (reply, evidence) pairs, with the evidence a conversation gives it."""

    def __init__(self, checker: Any, *, knowledge: Any = None, snippets: int = 3):
        self.checker, self.knowledge, self.snippets = checker, knowledge, snippets

    def score(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        replies, evidence = check_pairs(a, b)
        return np.array([self.checker.check(r, e).score for r, e in zip(replies, evidence)], dtype=np.float64)

    def check(self, reply: str, evidence: Any) -> Any:
        return self.checker.check(reply, evidence)

    def evidence_for(self, messages: Sequence[dict[str, str]]) -> str:
        return conversation_evidence(messages, self.knowledge, snippets=self.snippets)


class GroundingScorer(ReplyCheck):
    """score(replies, evidences): per pair, the share of the reply's facts the evidence supports."""

    name = "grounding"

    def __init__(self, checker: GroundingChecker | None = None, *, knowledge: Any = None, snippets: int = 3):
        super().__init__(checker or (GroundingChecker.for_knowledge(knowledge) if knowledge is not None else GroundingChecker()),
                         knowledge=knowledge, snippets=snippets)

    def explain(self, reply: str, evidence: Any) -> str:
        """The facts of `reply` the evidence does not support, as written ("99元; 5天")."""
        return "; ".join(f.text for f in self.checker.check(reply, evidence).unsupported)


def conversation_evidence(messages: Sequence[dict[str, str]], knowledge: Any = None, *, snippets: int = 3) -> str:
    """The evidence of a conversation: its customer and system messages, the knowledge
    retrieved for its last question and the shop's profile (never the assistant's replies)."""
    texts = [m.get("content") or "" for m in messages if m.get("role") in ("user", "system")]
    query = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    if knowledge is not None and query and snippets > 0:
        texts += [sn.text for sn in knowledge.search(query, k=snippets)]
    texts.append(shop_profile_text(knowledge))
    return "\n".join(t for t in texts if t)


def shop_profile_text(kb: Any) -> str:
    """The shop's own facts a reply may state: its name, currency and the scalar values of shop.yaml."""
    pack = getattr(kb, "pack", kb)
    if pack is None:
        return ""
    parts = [str(getattr(pack, "name", "") or ""), str(getattr(pack, "currency", "") or "")]
    for k, v in (getattr(pack, "meta", None) or {}).items():
        if isinstance(v, (str, int, float)) and k not in ("generator", "seed"):
            parts.append(f"{k}: {v}")
    return "\n".join(p for p in parts if p)


CHECKS: Registry[Callable[..., Scorer]] = Registry("reply check")
CHECKS.add("grounding", lambda *, knowledge=None, **kw: GroundingScorer(knowledge=knowledge, **kw))


def _novelty(*, knowledge: Any = None, **kw: Any) -> Scorer:
    from endcloud.scoring.novelty import NoveltyScorer  # it builds on this module

    return NoveltyScorer(knowledge=knowledge, **kw)


CHECKS.add("novelty", _novelty)


def load_check(spec: str | Scorer, *, knowledge: Any = None) -> Scorer:
    """A registered reply check by name ("grounding", "novelty"), or a Scorer as it is."""
    if isinstance(spec, Scorer):
        return spec
    return CHECKS.get(spec)(knowledge=knowledge)


__all__ = ["CHECKS", "CONTRADICTION_KINDS", "COURIERS", "KINDS", "Evidence", "Fact", "Grounding", "GroundingChecker",
           "GroundingScorer", "ReplyCheck", "canonical_number", "conversation_evidence", "flat", "load_check", "shop_profile_text",
           "zh_number"]
