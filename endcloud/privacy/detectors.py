"""PII detectors for Chinese and English customer-service text.

`detect(text)` returns non-overlapping, sorted `Span`s of eight types: PHONE, ID (18-character
身份证), CARD, EMAIL, ADDRESS, ORDER, TRACKING, NAME. The detectors are regular expressions
with context words and checksums, tuned for two things at once:

* recall on structured types (PHONE, ID, CARD, EMAIL, ORDER, TRACKING) is the point: a phone
  written `＋８６ １３８－００１３－８０００` must be caught, so matching runs on a *shadow copy* where
  full-width forms, odd spaces and dashes are folded to ASCII one character for one character
  (so offsets in the shadow are offsets in the original, and spans cut the ORIGINAL text);
* look-alikes must survive (prices, dates, sizes, SKUs, model numbers, coupons): over-redaction
  starves the teacher of the facts it has to talk about.

Forms people use to dodge chat filters are folded too: phones spelled in Chinese numerals
(一三八零零一三八零零零, 幺 for 1) and e-mails written `x at qq dot com` / `x艾特qq点com` / `x#qq.com`.
Names are only taken after a cue (我叫, 收件人：, my name is, Name:, 王先生) and addresses only with
a road or estate plus a house number or an admin level: cheap and precise, by design.

Overlaps are settled by priority (context words > courier prefixes > ID > phone/card shapes > bare
digit runs > address > name), so 订单号13800138000 is an ORDER and +86 1386 9075 175 a PHONE.

Checksums never decide whether something is redacted, only how it is labelled (`checksum_ok`,
`luhn_ok`, ...), except for one genuinely ambiguous case: a bare 13–19 digit run with no context
words and no card-style grouping is a CARD when it has a card prefix and passes Luhn, and an ORDER
number otherwise. Either way it is redacted.

Already-masked corpus tokens (`[订单x]`, `[ORDERID_10005629]`, `4**号`, `138****8000`) and our own
placeholders (`[PHONE_1]`) are blanked out of the shadow before matching: they are never PII and
no match can run across them, which is what makes `redact` idempotent.

Speed: the corpus pipeline pushes >100k lines/s through here, so each family of detectors is
skipped unless a cheap pre-check fires (five digits for the digit detectors, '@' for e-mail,
a road/building character for zh addresses, a keyword for names), each digit detector is
skipped when the text has fewer digits than any span it yields, and `may_contain_pii_many`
gives the union of the pre-checks for a whole batch in a few regex passes, so the pipeline
calls `detect` only for the few lines that may hold something.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Iterator, Sequence

from endcloud.privacy.public import is_public, public_values

PII_TYPES: tuple[str, ...] = ("PHONE", "ID", "CARD", "EMAIL", "ADDRESS", "ORDER", "TRACKING", "NAME", "HANDLE", "POSTCODE")
LANGS = ("zh", "en")


@dataclass(frozen=True, slots=True)
class Span:
    """One piece of personal data: `text[start:end] == value` in the ORIGINAL text."""

    start: int
    end: int
    type: str
    value: str
    label: str = ""

    def to_json(self, *, with_value: bool = True) -> dict:
        d = {"start": self.start, "end": self.end, "type": self.type, "label": self.label}
        if with_value:
            d["value"] = self.value
        return d


# ---------------------------------------------------------------------------------------------
# The shadow copy: fold width/space/dash variants to ASCII, one code point for one code point.

def _fold_table() -> dict[int, int]:
    table = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}  # full-width ASCII (NFKC does this)
    for cp in (0x3000, 0x00A0, 0x202F, 0x205F, *range(0x2000, 0x200B)):
        table[cp] = 0x20
    for cp in (*range(0x2010, 0x2016), 0x2212, 0xFE63, 0x2043):
        table[cp] = 0x2D  # hyphens and dashes people put inside phone numbers
    table[0x00B7] = 0x2E  # middle dot
    table[0x30FB] = 0x2E  # katakana middle dot
    return table


_FOLD = _fold_table()
# Phone numbers spelled in Chinese numerals (一三八零零一三八零零零, 幺 for 1) dodge platform filters;
# a run of seven or more numerals is folded to ASCII digits too (one character for one).
_ZH_DIGITS = {"〇": "0", "零": "0", "一": "1", "幺": "1", "二": "2", "两": "2", "三": "3", "四": "4", "五": "5",
              "六": "6", "七": "7", "八": "8", "九": "9"}
_FOLD_ZH = _FOLD | {ord(k): ord(v) for k, v in _ZH_DIGITS.items()}
_ZH_DIGIT_RUN = re.compile(
    "[" + "".join(_ZH_DIGITS) + r"](?:(?:\s?[.\-\u2010-\u2015\u2212\ufe63\uff0d\u00b7]\s?|\s)?[" + "".join(_ZH_DIGITS) + "]){6,}"
)
# Fold only when a full-width digit, letter, '+' or '@' is present: Chinese text is full of
# full-width punctuation (，：？) that no detector needs folded, and str.translate is slow on it.
# Unicode spaces and dashes are matched directly by the separator classes below instead.
_NEEDS_FOLD = re.compile("[０-９Ａ-Ｚａ-ｚ＋＠]")
_DASHES = "\\-\u2010-\u2015\u2212\ufe63\uff0d"
_BLANK = "\x00"

# Tokens that are already masked, in any corpus style we know, plus our own placeholders.
_MASKED = re.compile(
    r"\[[\u4e00-\u9fff]{1,6}x\]"          # JDDC: [订单x] [金额x] [身份证号x]
    r"|\[[A-Z]{2,12}ID_\d{1,12}\]"         # other JDDC releases: [ORDERID_10005629]
    r"|\[(?:" + "|".join(PII_TYPES) + r")_\d{1,6}\]"  # ours: [PHONE_1]
    r"|#E-s\[[^\[\]]{1,8}\]"              # JDDC emoticons #E-s[数字x]
    r"|[0-9]{0,4}\*{2,}[0-9]{1,4}(?![0-9])|[0-9]{1,4}\*{2,}(?=号)"  # 138****8000, 4**号 (not **13800138000**)
)


def _shadow(text: str, zh_digits: bool = False) -> str:
    if zh_digits:
        shadow = text
        for m in _ZH_DIGIT_RUN.finditer(text):
            shadow = shadow[:m.start()] + m.group(0).translate(_FOLD_ZH) + shadow[m.end():]
        if _NEEDS_FOLD.search(shadow):
            shadow = shadow.translate(_FOLD)
    else:
        shadow = text.translate(_FOLD) if _NEEDS_FOLD.search(text) else text
    if "[" in shadow or "*" in shadow:
        parts, last = [], 0
        for m in _MASKED.finditer(shadow):
            parts.append(shadow[last:m.start()])
            parts.append(_BLANK * (m.end() - m.start()))
            last = m.end()
        if parts:
            parts.append(shadow[last:])
            shadow = "".join(parts)
    return shadow


def _cjk_without(chars: str) -> str:
    """A regex character class body: the CJK block minus `chars` (re has no class subtraction)."""
    out, start = [], 0x4E00
    for cp in sorted({ord(c) for c in chars if 0x4E00 <= ord(c) <= 0x9FFF}):
        if cp > start:
            out.append(f"\\u{start:04x}-\\u{cp - 1:04x}" if cp - 1 > start else f"\\u{start:04x}")
        start = cp + 1
    out.append(f"\\u{start:04x}-\\u9fff")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Checksums (labels only).

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_checksum_ok(digits17_plus_check: str) -> bool:
    """GB 11643-1999 check character of an 18-character resident ID."""
    s = digits17_plus_check.upper()
    if len(s) != 18 or not s[:17].isdigit():
        return False
    total = sum(int(c) * w for c, w in zip(s[:17], _ID_WEIGHTS))
    return "10X98765432"[total % 11] == s[17]


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, c in enumerate(digits):
        d = ord(c) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_CARD_PREFIX = re.compile(r"4|5[1-5]|2[2-7]|3[47]|3[0689]|35|62|6011|65|60")


def _digits(s: str) -> str:
    return "".join(c for c in s if "0" <= c <= "9")


# ---------------------------------------------------------------------------------------------
# Structured detectors (run on the shadow copy; all ASCII after folding).

_SEP = "[\\s." + _DASHES + "\u00b7\u30fb]"
_GSEP = "[\\s" + _DASHES + "]"  # between digit groups of cards, IDs, landlines
# Patterns start by consuming a character (lookbehinds come after it): sre can then skip ahead
# to candidate characters instead of trying every position, several times faster on chat lines.
_PSEP = r"(?:\s?" + _SEP + r"\s?|" + _SEP + r")?"  # one separator, or one padded by spaces: 138 - 0013 - 8000
# also "1 3 8 0 0 1 3 8 0 0 0" (a space between every digit), but not "1 415-555-2671" (+1, NANP)
_MOBILE = re.compile(r"1(?<![0-9]1)(?:[3-9](?:" + _PSEP + r"[0-9]){9}|\s[3-9](?:\s[0-9]){9})(?![0-9])")
_MOBILE_CC = re.compile(  # with a country code; run only when "86" occurs
    r"(?<![0-9])(?:\(\s?(?:\+|00)?86\s?\)|(?:\+|00)?86)" + _SEP + r"{0,2}1[3-9](?:" + _PSEP + r"[0-9]){9}(?![0-9])"
)
_LANDLINE = re.compile(
    r"(?:\((?<![0-9]\()0[1-9][0-9]{1,2}\)\s?|0(?<![0-9]0)[1-9][0-9]{1,2}" + _GSEP + r")"
    r"[2-9][0-9]{2,3}" + _GSEP + r"?[0-9]{4}(?![0-9])"
)
_NANP_HINT = re.compile(r"[0-9]{3}[\s.\-\u2010-\u2015\u2212\ufe63\uff0d][0-9]{4}")
_NANP = re.compile(
    r"(?<![0-9A-Za-z+])(?:\+?1" + _SEP + r"?)?(?:\((?P<a1>[2-9][0-9]{2})\)\s?|(?P<a2>[2-9][0-9]{2})" + _SEP + r")"
    r"[2-9][0-9]{2}" + _SEP + r"[0-9]{4}(?![0-9])"
)
_TOLL_FREE = {"400", "800", "888", "877", "866", "855", "844", "833"}  # shops' hotlines, not people

_ID = re.compile(
    r"[1-8](?<![0-9][1-8])[0-9]{5}" + _GSEP + r"?(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
    + _GSEP + r"?[0-9]{3}[0-9Xx](?![0-9])"
)
_CARD_GROUPED = re.compile(
    r"[1-9](?<![0-9][1-9])(?:[0-9]{3}(?P<s>" + _GSEP + r")[0-9]{4}(?:(?P=s)[0-9]{4}){1,2}(?:(?P=s)[0-9]{1,4})?"
    r"|[0-9]{3}(?P<t>" + _GSEP + r")[0-9]{6}(?P=t)[0-9]{4,5}"
    r"|[0-9]{5}(?P<u>" + _GSEP + r")[0-9]{13})(?![0-9])"
)
_KW_SEP = r"\s*(?:(?:[:：#]|是|为|is)\s*){0,2}"  # 订单号是：123…
_CARD_CTX = re.compile(
    r"(?:卡号|银行卡号?|信用卡号?|储蓄卡号?|借记卡号?|(?i:credit\s+card|debit\s+card|card)(?i:\s*(?:number|no\.?|#))?|(?i:visa|mastercard|amex|unionpay))"
    + _KW_SEP + r"(?P<v>[0-9](?:" + _GSEP + r"?[0-9]){11,18})(?![0-9])"
)
_BARE_DIGITS = re.compile(r"[0-9](?<![0-9][0-9])[0-9]{9,19}(?![0-9])")
_ORDER_CTX = re.compile(
    r"(?:订单编号|订单号码?|订单|单号|(?i:order)(?i:\s*(?:no\.?|number|num|id|#))?|(?<![A-Za-z&])#)"
    + _KW_SEP + r"(?P<v>(?:[A-Za-z]{1,4}-?)?[0-9][0-9\-]{4,28}[0-9])(?![0-9A-Za-z])"
)
# Invoice numbers name one customer's purchase like an order number does (typed ORDER, label "invoice"):
# 发票号码 04512367, 全电发票号码 2444…, invoice no. INV-2024-00871, invoice number 2024/00456
_INVOICE_CTX = re.compile(
    r"(?:发票号码|发票号|发票代码|(?<![A-Za-z])(?i:invoice)(?i:\s*(?:no\.?|number|num|id|#))?)"
    + _KW_SEP + r"(?P<v>(?:[A-Za-z]{1,4}-?)?[0-9][0-9A-Za-z]*(?:[\-/][0-9A-Za-z]+){0,4})(?![0-9A-Za-z\-/])"
)
# Order numbers in the platforms' own shapes need no cue word: Amazon 3-7-7, Pinduoduo yymmdd-15 digits
_PLATFORM_ORDER = re.compile(r"[0-9](?<![0-9A-Za-z\-][0-9])(?:[0-9]{2}-[0-9]{7}-[0-9]{7}|[0-9]{5}-[0-9]{15})(?![0-9\-])")
_TRACK_CTX = re.compile(
    r"(?:运单号码?|快递单号|物流单号|快递号|运单|(?i:tracking|waybill)(?i:\s*(?:no\.?|number|num|id|#|code))?"
    r"|(?:顺丰|中通|圆通|韵达|申通|极兔|百世|邮政|京东|德邦|天天)(?:快递|速运|物流)?(?:单号)?"
    r"|(?:ZTO|YTO|STO|EMS|UPS|FedEx|DHL|USPS|SF Express)(?i:\s*(?:no\.?|number|#|tracking))?(?:单号|运单号?)?)"
    # USPS and others print the number in groups: a space may split it where two more digits follow
    + _KW_SEP + r"(?P<v>[A-Za-z]{0,4}[0-9](?:[0-9A-Za-z]| (?=[0-9]{2})){7,40})(?![0-9A-Za-z])"
)
_TRACK_PREFIX = re.compile(
    r"(?<![0-9])(?:[Ss][Ff][0-9]{12,15}|(?:YT|yt|JT|jt)[0-9]{13,15}|JD[A-Z]{0,2}[0-9]{11,15}"
    r"|1Z[0-9A-Z]{16}|[A-Z]{2}[0-9]{9}(?:CN|US|GB|HK|JP|DE|FR)|ZTO[0-9]{10,15})(?![0-9])"
)
_TRACK_PREFIX_HINT = re.compile(r"[A-Za-z][0-9]{9}")
_TRACK_HINT = re.compile("运单|单号|快递|物流|顺丰|中通|圆通|韵达|申通|极兔|百世|邮政|京东|德邦|天天|tracking|waybill|zto|yto|sto|ems|ups|fedex|dhl|usps|sf express")
# Starts only where a run of local-part characters starts (the lookbehind after the first character),
# so a long run of letters without '@' costs linear time, not quadratic.
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+\-](?<![A-Za-z0-9._%+\-][A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{0,63}"
    # The TLD ends at the first non-letter: in chat a phone number often runs straight on
    # ("zhangwei1@qq.com13812345678"), and refusing a digit there let the address through.
    r"@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![A-Za-z])"
)

# E-mail written to dodge filters: "zhangwei at qq dot com", "zhangwei艾特qq点com", "zhangwei#qq.com".
_EMAIL_OBF = re.compile(
    r"[A-Za-z0-9._%+\-](?<![A-Za-z0-9._%+\-][A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,63}"
    r"(?:\s*(?:\(at\)|\[at\]|艾特|＃|#)\s*|\s+(?i:at)\s+)"
    r"[A-Za-z0-9\-]{2,63}(?:\s*(?:\.|\(dot\)|\[dot\]|点)\s*|\s+(?i:dot)\s+)"
    r"(?i:com|cn|net|org|edu|io|cc)(?:(?:\s*(?:\.|点)\s*|\s+(?i:dot)\s+)(?i:cn|uk|hk))?(?![A-Za-z0-9])"
)


_OBF_NOT_USERS = frozenset(
    "it me us him her them this that these those you one buy bought sell sold shop shopped look order ordered "
    "available found sale here there price cheaper cheap listed get got find".split()
)

# A digit run right after one of these is a product code, not an order number.
_PRODUCT_CTX = re.compile(
    r"(?:SKU|sku|Sku|JAN(?:\s*(?i:code|no\.?))?|货号|型号|商品编号|商品号|商品(?:ID|id|Id)|宝贝\s*(?:ID|id|Id|编号)?|款号|条码|条形码"
    r"|(?<![A-Za-z])(?i:model|barcode|ean|gtin|isbn|upc|item|product|part|asin)(?i:\s*(?:no\.?|number|num|#|id|code))?)\s*[:：#\-=]?\s*$")
# A number in the link of a product page is the product's id (item.taobao.com/item.htm?id=…, item.jd.com/….html),
# while an order page's link (…?orderid=…) keeps its number an order's
_PRODUCT_URL = re.compile(
    r"(?i:item|product|goods|detail|/dp)[^\s\"'<>]{0,60}?(?:[?&;](?i:id|item_?id|goods_?id|product_?id|sku_?id|num_iid|spu_?id)=|/)$")
# Words that point at a product right after a bare number: 537880365077这种哦, 541468869491就是这款,
# 545712090708客官这个链接 (ECD writes a pasted item link as the item's id). Not 这个: an order is one too.
_PRODUCT_AFTER = re.compile(r"[^0-9\n]{0,6}?(?:这款|这种|同款|链接|宝贝|款式)")


def _product_before(s: str, start: int) -> bool:
    """True when the number at `start` is a product code or the id in a product page's link."""
    return (_PRODUCT_CTX.search(s, max(0, start - 16), start) is not None
            or (start > 0 and s[start - 1] in "=/" and _PRODUCT_URL.search(s, max(0, start - 90), start) is not None))


_DATE_SHAPE = re.compile(r"(?:19|20)[0-9]{2}-?(?:0[1-9]|1[0-2])-?(?:0[1-9]|[12][0-9]|3[01])")


# ---------------------------------------------------------------------------------------------
# Addresses.

_ADMIN_SUFFIX = "省市区县旗镇乡路街巷弄号楼室栋幢村"
_PLACE = "[" + _cjk_without(_ADMIN_SUFFIX + "的在是我你他她住到寄送发往址与及给要想把被还请帮问说了吗呢吧啊哦收货改为") + "]"
_PROVINCE = (
    r"(?:(?:河北|山西|辽宁|吉林|黑龙江|江苏|浙江|安徽|福建|江西|山东|河南|湖北|湖南|广东|海南|四川|贵州|云南|陕西|甘肃|青海|台湾)省?"
    r"|(?:内蒙古|广西壮族|广西|西藏|宁夏回族|宁夏|新疆维吾尔|新疆)(?:自治区)?"
    r"|(?:北京|天津|上海|重庆)市?|(?:香港|澳门)(?:特别行政区)?)"
)
_ZH_ADDR = re.compile(
    r"(?P<adm>" + _PROVINCE + r"?"
    r"(?:" + _PLACE + r"{1,6}?(?:市|自治州|地区|盟))?"
    r"(?:" + _PLACE[:-1] + r"市楼]{1,6}?(?:区|县|旗))?"  # 市南区, 鼓楼区
    r"(?:" + _PLACE + r"{1,6}?(?:街道|镇|乡))?)"
    r"(?P<road>(?:(?:" + _PLACE[:-1] + r"0-9]{1,12}?(?:大街|大道|路|街|巷|胡同|弄)"
    r"|" + _PLACE + r"{1,10}?(?:小区|花园|大厦|公寓|家园|新村|广场|苑|园|府|村)(?:小区|花园|大厦|公寓)?)(?:[东西南北中]段)?){1,3})"
    r"(?P<sub>(?:[0-9]{1,5}(?:号院|号楼|号|弄|栋|幢|座|单元|楼|层|室|户)|[A-Za-z]座|[0-9]{1,4}-[0-9]{1,4}(?:室|号)?)*)"
    # a building after the house number: 385号太古汇2座1001 (it must end in a number or a unit word)
    r"(?:" + _PLACE + r"{1,8}?[0-9A-Za-z]{1,5}(?:号院|号楼|号|栋|幢|座|单元|楼|层|室))*(?:(?<=[座栋幢楼层元])[0-9]{2,5}(?![0-9]))?"
)
_ZH_ADDR_NEED = re.compile(r"[0-9０-９省市区县旗镇乡]|北京|天津|上海|重庆|内蒙古|广西|西藏|宁夏|新疆|香港|澳门")

_EN_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter"
    r"|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Close|Crescent|Cres|Row|Alley|Trail|Trl|Plaza)"
)
_EN_ADDR = re.compile(
    r"[0-9](?<![0-9A-Za-z$€£¥.,][0-9])[0-9]{0,5}[A-Za-z]?\s+(?:(?:[NSEW]|North|South|East|West)\.?\s+)?"
    r"(?:[A-Z][A-Za-z'\-]*\.?\s+){0,3}?[A-Z][A-Za-z'\-]*\s+(?i:" + _EN_STREET + r")\b\.?"
    r"(?:,?\s*(?i:apt|apartment|suite|ste|unit|flat|room|rm|#)\.?\s*#?[A-Za-z0-9\-]{1,6})?"
    r"(?:,\s*[A-Z][A-Za-z]+(?:\s+[A-Z][A-Za-z]+){0,2}(?=,|\s+[0-9]{5}|\s*$|[.;!?)]))?"
    r"(?:,\s*[A-Z]{2}\.?)?(?:,?\s+[0-9]{5}(?:-[0-9]{4})?(?![0-9]))?"
)
_EN_ADDR_HINT = re.compile(r"[0-9][A-Za-z]?\s+[A-Z]")


# ---------------------------------------------------------------------------------------------
# Names: only in cheap, precise contexts.

_SURNAMES_SAFE = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗郑梁宋唐许韩冯邓曹彭曾肖董袁潘蒋蔡余杜叶程苏魏吕丁"
    "任沈姚卢姜崔钟谭陆汪范贾夏韦付邹孟熊秦邱尹薛闫段雷侯陶黎贺顾郝龚邵钱严覃戴莫孔汤倪庄聂"
)
_SURNAMES_MORE = "高田石金白江龙史毛万武欧阳方温康施牛樊葛邢齐乔伍庞颜章鲁岳翟殷詹申耿兰焦俞左柳甘祝宁符舒阮柯纪梅童凌毕裴霍涂苗谷盛翁冉骆蓝游辛靳柴鲍喻祁蒲房滕屈饶牟艾尤穆卓缪娄窦戚岑宫卜晏席卫米柏瞿桂佟臧闵苟邬卞姬栾隋刁巫寇桑郎甄丛仲虞敖巩佘池邝谢"
_COMPOUND = "欧阳|司马|上官|诸葛|东方|慕容|令狐|皇甫|尉迟|公孙|长孙|宇文|夏侯|轩辕|端木|独孤"
_GIVEN = "[" + _cjk_without(
    "的了吗呢啊吧呀哦嘛哈在是和与及或电手机话地址收件号码你我他她们这那不也都就要想还请帮问说给到从"
    "个买卖发货退换单订快递已经没有可以能会去来上下的得地着过吧么啥"
) + "]"
_SURNAME_ANY = "(?:" + _COMPOUND + r"|[" + _SURNAMES_SAFE + _SURNAMES_MORE + r"])"
_SURNAME_SAFE = "(?:" + _COMPOUND + r"|[" + _SURNAMES_SAFE + r"])"
_COMPOUND_SET = frozenset(_COMPOUND.split("|"))
# A name is found by keyword first (str.find is fast), then one anchored match after the keyword.
# (cue, the trigger character it contains): a cue is only searched for when its character occurred.
_ZH_NAME_KEYS = (("我叫", "叫"), ("名字是", "名"), ("名字叫", "名"), ("姓名", "姓"), ("收件人", "收"), ("收货人", "收"),
                 ("联系人", "联"), ("签收人", "签"), ("寄件人", "寄"), ("户名", "户"), ("持卡人", "持"), ("开户人", "开"))
_ZH_NAME_AFTER = re.compile(r"\s*(?:[:：]|是|为|叫)?\s*(?P<v>" + _SURNAME_ANY + _GIVEN + r"{1,2})")
_ZH_NAME_AFTER_WOSHI = re.compile(r"(?P<v>" + _SURNAME_SAFE + _GIVEN + r"{1,2})(?=[，,。.!！?？\s]|$)")
_ZH_TITLES = (("先生", "先"), ("女士", "女"), ("小姐", "姐"))
_ZH_SAFE_SET = frozenset(_SURNAMES_SAFE)

_EN_WORD = r"[A-Z](?:[a-z]+|'[A-Z][a-z]+)(?:[\-'][A-Z]?[a-z]+)?"
_EN_FULL = r"(?P<v>" + _EN_WORD + r"(?:[ \t]+" + _EN_WORD + r"){0,2})"
# (keyword, pattern right after it); keywords are matched on the lower-cased text.
_EN_NAME_KEYS = (
    ("my name is", re.compile(r"[ \t]+" + _EN_FULL)),
    ("my name's", re.compile(r"[ \t]+" + _EN_FULL)),
    ("name", re.compile(r"[ \t]*[:：][ \t]*" + _EN_FULL)),
    ("recipient", re.compile(r"(?:'s name)?[ \t]*[:：]?[ \t]*" + _EN_FULL)),
    ("ship to", re.compile(r"[ \t]*[:：][ \t]*" + _EN_FULL)),
    ("deliver to", re.compile(r"[ \t]*[:：][ \t]*" + _EN_FULL)),
    ("send to", re.compile(r"[ \t]*[:：][ \t]*" + _EN_FULL)),
    ("contact", re.compile(r"(?: person)?[ \t]*[:：][ \t]*" + _EN_FULL)),
    ("attn", re.compile(r"\.?[ \t]*[:：]?[ \t]*" + _EN_FULL)),
    ("cardholder", re.compile(r"(?: name)?[ \t]*[:：]?[ \t]*" + _EN_FULL)),
)
_EN_TITLE = re.compile(r"(?<![A-Za-z])(?:Mr|Mrs|Ms|Miss|Mx)\.?[ \t]+(?P<v>" + _EN_WORD + r"(?:[ \t]+" + _EN_WORD + r")?)")
_EN_NAME_STOP = {"Street", "Road", "Avenue", "The", "And", "Please", "Thanks", "Thank", "Order", "Customer", "Service"}


def _zh_names(s: str, chars: set[str]) -> Iterator[tuple[int, int]]:
    for key, tc in _ZH_NAME_KEYS:
        if tc not in chars:
            continue
        i = s.find(key)
        while i >= 0:
            m = _ZH_NAME_AFTER.match(s, i + len(key))
            if m:
                yield m.start("v"), m.end("v")
            i = s.find(key, i + 1)
    i = s.find("我是")
    while i >= 0:
        m = _ZH_NAME_AFTER_WOSHI.match(s, i + 2)
        if m:
            yield m.start("v"), m.end("v")
        i = s.find("我是", i + 1)
    for title, tc in _ZH_TITLES:
        if tc not in chars:
            continue
        i = s.find(title)
        while i >= 0:
            if i >= 2 and s[i - 2:i] in _COMPOUND_SET:
                yield i - 2, i + 2
            elif i >= 1 and s[i - 1] in _ZH_SAFE_SET:
                yield i - 1, i + 2
            i = s.find(title, i + 1)


def _en_names(s: str) -> Iterator[tuple[int, int]]:
    low = s.lower()
    for key, after in _EN_NAME_KEYS:
        i = low.find(key)
        while i >= 0:
            # a cue starts a word: after a non-letter, or glued to the word before it as a new
            # capitalised word ("John SmithName: John Smith", fields run together)
            if i == 0 or not low[i - 1].isalpha() or (s[i].isupper() and s[i - 1].islower()):
                m = after.match(s, i + len(key))
                if m:
                    yield _trim_en_name(m)
            i = low.find(key, i + 1)
    if "Mr" in s or "Ms" in s or "Mx" in s or "Miss" in s:
        for m in _EN_TITLE.finditer(s):
            yield _trim_en_name(m)


def _trim_en_name(m: re.Match) -> tuple[int, int]:
    words = m.group("v").split()
    while words and words[-1] in _EN_NAME_STOP:
        words.pop()
    if not words or words[0] in _EN_NAME_STOP:
        return 0, 0
    start = m.start("v")
    return start, start + len(" ".join(words))


# ---------------------------------------------------------------------------------------------

# Five digits with at most three other characters between neighbours: every digit-based PII has that.
_DIGITS_GATE = re.compile(r"[0-9０-９](?:[^0-9０-９]{0,3}[0-9０-９]){4}")
_DIGIT_CHARS = frozenset("0123456789０１２３４５６７８９")
_ADDR_CHARS = frozenset("路街巷弄村苑园府厦寓")
_NAME_CHARS = frozenset("叫名姓收联签寄户持开先女姐")
_ZH_DIGIT_CHARS = frozenset("一二三四五六七八九〇零幺两")
_TRIGGER = re.compile("[" + "".join(sorted(_DIGIT_CHARS | _ADDR_CHARS | _NAME_CHARS | _ZH_DIGIT_CHARS)) + "@＠]")


def _zh_words_hint(text: str) -> bool:
    """Two-character triggers: address words without a trigger character, and 我是 (names)."""
    return "大道" in text or "胡同" in text or "小区" in text or "广场" in text or "我是" in text


def _en_name_hint(text: str, low: str) -> bool:
    if "Mr" in text or "Ms" in text or "Mx" in text or "Miss" in text:
        return True
    return "name" in low or "recipient" in low or "ship to" in low or "deliver to" in low or "send to" in low or "contact" in low or "attn" in low or "cardholder" in low


# The pre-check: a few regexes that between them match every text `detect` could find
# anything in. They are the union of the gates at the top of `detect` for one `lang` (None:
# both): digits, '@', the obfuscated-e-mail marks, and for zh the address characters and
# words, the name cues of `_zh_names` and spelled-out numerals; for en the name hints (the
# lower-case ones searched in the lower-cased text, exactly as `detect` does). They must
# stay a superset of those gates: when a gate changes, change them too
# (tests/privacy/test_gate.py checks them on every generated case and at random).
# Separate passes, because one alternation of all of them runs ~4x slower in `re`.
_GATE_ZH_CHARS = re.compile("[" + "".join(sorted(_DIGIT_CHARS | _ADDR_CHARS)) + "@＠#＃]")
_GATE_EN_CHARS = re.compile("[" + "".join(sorted(_DIGIT_CHARS)) + "@＠#＃]")
_GATE_ZH_WORDS = re.compile(
    "大道|胡同|小区|广场|我是|艾特|at\\]|\\(at\\)|"
    + "|".join(k for k, _ in _ZH_NAME_KEYS) + "|" + "|".join(t for t, _ in _ZH_TITLES)
)
_GATE_EN_WORDS = re.compile("艾特|at\\]|\\(at\\)|Mr|Ms|Mx|Miss")
_GATE_ZH_WORDS_EN_WORDS = re.compile(_GATE_ZH_WORDS.pattern + "|Mr|Ms|Mx|Miss")
_GATE_EN_LOWER = re.compile("name|recipient|ship to|deliver to|send to|contact|attn|cardholder| dot ")
# lang -> (patterns on the text, pattern on the lower-cased text or None)
_GATES: dict[str | None, tuple[tuple[re.Pattern[str], ...], re.Pattern[str] | None]] = {
    "zh": ((_GATE_ZH_CHARS, _GATE_ZH_WORDS, _ZH_DIGIT_RUN), None),
    "en": ((_GATE_EN_CHARS, _GATE_EN_WORDS), _GATE_EN_LOWER),
    None: ((_GATE_ZH_CHARS, _GATE_ZH_WORDS_EN_WORDS, _ZH_DIGIT_RUN), _GATE_EN_LOWER),
}


def may_contain_pii(text: str, lang: str | None = None) -> bool:
    """False only when `detect(text, lang)` is certainly [] (a cheap pre-check)."""
    pats, lower = _GATES[None if lang == "auto" else lang]
    if any(p.search(text) for p in pats) or (lower is not None and lower.search(text.lower()) is not None):
        return True
    return _extra.any_hint(text, None if lang == "auto" else lang, text.lower())


def may_contain_pii_many(texts: Sequence[str], lang: str | None = None) -> list[int]:
    """Indices (ascending) of the texts for which `may_contain_pii(text, lang)` holds, in a
    few regex passes over the joined batch instead of calls per text."""
    if lang not in _GATES and lang != "auto":
        raise ValueError(f"lang must be 'zh', 'en', 'auto' or None, got {lang!r}")
    n = len(texts)
    if not n:
        return []
    joined = "\x00".join(texts)
    if joined.count("\x00") != n - 1:  # a text holds NUL itself: one by one
        return [i for i, t in enumerate(texts) if may_contain_pii(t, lang)]
    pats, lower = _GATES[None if lang == "auto" else lang]
    ends: list[int] = []
    flagged: set[int] = set()

    def scan(pattern: re.Pattern[str], s: str) -> None:
        # No gate pattern can match or cross the NUL. After a hit, jump to the next text.
        m = pattern.search(s)
        while m is not None:
            if not ends:
                ends.extend(accumulate(len(t) + 1 for t in texts))
            i = bisect_right(ends, m.start())
            flagged.add(i)
            if i + 1 >= n:
                break
            m = pattern.search(s, ends[i])

    extra = _extra.hints(None if lang == "auto" else lang)  # the registered detectors' pre-checks
    for p in (*pats, *extra.on_text):
        scan(p, joined)
    lowers = ((lower,) if lower is not None else ()) + extra.lower
    if lowers:
        low = joined.lower()
        for p in lowers:
            if len(low) == len(joined):
                scan(p, low)
            else:  # lower() lengthened something (e.g. U+0130): offsets no longer line up
                flagged.update(i for i, t in enumerate(texts) if p.search(t.lower()))
    return sorted(flagged)


# Higher wins an overlap; on a tie the longer span wins.
_PRIO = {
    "email": 95, "track_ctx": 88, "order_ctx": 86, "card_ctx": 84, "track_prefix": 80, "id": 75,
    "mobile_cc": 74, "card_grouped": 72, "mobile": 70, "landline": 62, "card_bare": 55, "order_bare": 40,
    "address": 30, "name": 20,
}


def detect(text: str, lang: str | None = None) -> list[Span]:
    """All PII spans in `text`, sorted and non-overlapping. `lang`: "zh", "en" or None (both).

    Structured types run for every language; `lang` only switches the zh/en name and address rules.
    """
    if not text:
        return []
    if lang not in (None, "auto", "zh", "en"):
        raise ValueError(f"lang must be 'zh', 'en', 'auto' or None, got {lang!r}")
    zh = lang != "en"
    en = lang != "zh"
    # Cheap gates first: most chat lines have none of these and leave here in a microsecond.
    trig = _TRIGGER.findall(text)
    low = text.lower() if en else None
    en_name = en and _en_name_hint(text, low)
    zh_words = zh and _zh_words_hint(text)
    obf_email = "艾特" in text or "#" in text or "＃" in text or "at]" in text or "(at)" in text or (en and " dot " in low)
    # names in context, whole addresses, postcodes, handles, foreign phones (endcloud.privacy.extra)
    xlang = None if lang == "auto" else lang
    xlow = low if low is not None else text.lower()
    extra = _extra.triggered(text, xlang, xlow)
    if not trig and not en_name and not zh_words and not obf_email and not extra:
        return []
    chars = set(trig)
    has_digit = not chars.isdisjoint(_DIGIT_CHARS)
    digits = has_digit and (_DIGITS_GATE.search(text) is not None or "1Z" in text)
    zh_digits = zh and not chars.isdisjoint(_ZH_DIGIT_CHARS) and _ZH_DIGIT_RUN.search(text) is not None
    digits = digits or zh_digits
    at = "@" in chars or "＠" in chars
    # a zh address needs a road/estate word and, to count, an admin level or a house number
    zh_addr = zh and (not chars.isdisjoint(_ADDR_CHARS) or zh_words) and _ZH_ADDR_NEED.search(text) is not None
    zh_name = zh and (not chars.isdisjoint(_NAME_CHARS) or "我是" in text)
    en_addr = en and has_digit and _EN_ADDR_HINT.search(text) is not None
    if not (digits or at or obf_email or zh_addr or zh_name or en_addr or en_name or extra):
        return []

    s = _shadow(text, zh_digits)
    cands: list[tuple[int, int, int, str, str]] = []  # (prio, start, end, type, label)
    add = cands.append
    if at:
        for m in _EMAIL.finditer(s):
            add((_PRIO["email"], m.start(), m.end(), "EMAIL", ""))
    if obf_email:
        for m in _EMAIL_OBF.finditer(s):
            user = m.group(0).split()[0].lower()
            if user not in _OBF_NOT_USERS:  # "bought it at amazon dot com" names a shop, not a mailbox
                add((_PRIO["email"], m.start(), m.end(), "EMAIL", "obfuscated"))
    if digits:
        for item in _digit_candidates(s):
            add(item)
    if zh_addr:
        for m in _ZH_ADDR.finditer(s):
            if m.group("adm") or m.group("sub"):
                start = m.start()
                if s[start] == "成" and start and s[start - 1] in "改换变写填":  # 改成杭州市… is not 成都
                    start += 1
                add((_PRIO["address"], start, m.end(), "ADDRESS", "zh"))
    if en_addr:
        for m in _EN_ADDR.finditer(s):
            end = m.end()
            while end > m.start() and s[end - 1] in " ,":
                end -= 1
            add((_PRIO["address"], m.start(), end, "ADDRESS", "en"))
    if zh_name:
        for start, end in _zh_names(s, chars):
            add((_PRIO["name"], start, end, "NAME", "context"))
    if en_name:
        for start, end in _en_names(s):
            add((_PRIO["name"], start, end, "NAME", "context"))
    if extra:
        cands.extend(_extra.candidates(text, s, xlang, extra))
    if cands:
        _extra.refine(cands, text, s, xlang)
    if zh_digits:  # spelled-out numerals only ever make a phone number, not an order or a card
        spelled = [m.span() for m in _ZH_DIGIT_RUN.finditer(text)]
        cands = [c for c in cands if c[3] == "PHONE" or not any(c[1] < e and b < c[2] for b, e in spelled)]
    if not cands:
        return []
    spans = _resolve(text, cands)
    if public_values():  # the shop's own SKUs and hotline are not personal
        spans = [sp for sp in spans if not is_public(sp.value)]
    return spans


def _resolve(text: str, cands: list[tuple[int, int, int, str, str]]) -> list[Span]:
    cands.sort(key=lambda c: (-c[0], c[1] - c[2], c[1]))
    used = bytearray(len(text))  # 1 where an accepted span lies: overlap checks stay linear on long texts
    taken: list[tuple[int, int, str, str]] = []
    for _prio, start, end, typ, label in cands:
        if end <= start:
            continue
        hit = used.find(1, start, end)
        if hit >= 0:
            # An address or name running into a stronger span (a phone glued to the house number)
            # keeps the part before it rather than vanishing and leaking the street.
            if typ not in ("ADDRESS", "NAME", "HANDLE") or hit - start < 2:
                continue
            end = hit
        used[start:end] = b"\x01" * (end - start)
        taken.append((start, end, typ, label))
    taken.sort()
    return [Span(s, e, t, text[s:e], lb) for s, e, t, lb in taken]


def _digit_candidates(s: str) -> Iterator[tuple[int, int, int, str, str]]:
    # Each detector below yields only spans holding at least so many ASCII digits (by its
    # pattern, or by the length check on what it found): with fewer digits in the whole
    # text it cannot yield anything, and its scan is skipped. Most PII lines hold one number.
    nd = sum(map(s.count, "0123456789"))
    low = s.lower()
    if nd >= 8 and _TRACK_HINT.search(low):
        for m in _TRACK_CTX.finditer(s):
            v = m.group("v")
            if sum(c.isdigit() for c in v) >= 8:
                yield (_PRIO["track_ctx"], m.start("v"), m.end("v"), "TRACKING", "context")
    if "1Z" in s or _TRACK_PREFIX_HINT.search(s):
        for m in _TRACK_PREFIX.finditer(s):
            yield (_PRIO["track_prefix"], m.start(), m.end(), "TRACKING", "courier_prefix")
    if nd >= 6 and ("票" in s or "invoice" in low):
        for m in _INVOICE_CTX.finditer(s):
            if sum(c.isdigit() for c in m.group("v")) >= 6:
                yield (_PRIO["order_ctx"], m.start("v"), m.end("v"), "ORDER", "invoice")
    if nd >= 17 and "-" in s:
        for m in _PLATFORM_ORDER.finditer(s):
            yield (_PRIO["order_ctx"], m.start(), m.end(), "ORDER", "platform")
    if nd >= 6 and ("单" in s or "#" in s or "order" in low):
        for m in _ORDER_CTX.finditer(s):
            v = m.group("v")
            d = _digits(v)
            if len(d) < 6 or _DATE_SHAPE.fullmatch(v):
                continue
            if _PRODUCT_CTX.search(s, max(0, m.start("v") - 16), m.start("v")) and not m.group(0).lstrip().lower().startswith(("订单", "order", "单号")):
                continue
            yield (_PRIO["order_ctx"], m.start("v"), m.end("v"), "ORDER", "context")
    if nd < 10:  # everything below needs ten digits or more
        return
    if nd >= 13 and ("卡" in s or "card" in low or "visa" in low or "amex" in low or "unionpay" in low):
        for m in _CARD_CTX.finditer(s):
            d = _digits(m.group("v"))
            if 13 <= len(d) <= 19:
                yield (_PRIO["card_ctx"], m.start("v"), m.end("v"), "CARD", "luhn_ok" if luhn_ok(d) else "luhn_bad")
    for m in _ID.finditer(s) if nd >= 17 else ():
        v = _digits(m.group(0)) + (m.group(0)[-1] if m.group(0)[-1] in "Xx" else "")
        yield (_PRIO["id"], m.start(), m.end(), "ID", "checksum_ok" if id_checksum_ok(v) else "checksum_bad")
    for m in _CARD_GROUPED.finditer(s) if nd >= 13 else ():
        d = _digits(m.group(0))
        if 13 <= len(d) <= 19:
            yield (_PRIO["card_grouped"], m.start(), m.end(), "CARD", "luhn_ok" if luhn_ok(d) else "luhn_bad")
    for m in _MOBILE.finditer(s) if nd >= 11 else ():
        yield (_PRIO["mobile"], m.start(), m.end(), "PHONE", "mobile")
    if nd >= 13 and "86" in s:
        for m in _MOBILE_CC.finditer(s):
            # With a country code it is certainly a phone, even when grouped like a card.
            yield (_PRIO["mobile_cc"], m.start(), m.end(), "PHONE", "mobile")
    for m in _LANDLINE.finditer(s):
        yield (_PRIO["landline"], m.start(), m.end(), "PHONE", "landline")
    for m in _NANP.finditer(s) if _NANP_HINT.search(s) else ():
        if (m.group("a1") or m.group("a2")) not in _TOLL_FREE:
            yield (_PRIO["landline"], m.start(), m.end(), "PHONE", "nanp")
    orderish = None
    for m in _BARE_DIGITS.finditer(s):
        d = m.group(0)
        if _product_before(s, m.start()) or _PRODUCT_AFTER.match(s, m.end()):
            continue  # a barcode, a product page's id or a product pointed at, whatever its checksum
        if 13 <= len(d) <= 19 and _CARD_PREFIX.match(d) and luhn_ok(d):
            # Taobao's orders run 18-19 digits, and of cards that long only UnionPay's (62…) are common:
            # another such run in a text about an order, not a card, passed Luhn by chance (1 in 10)
            long_run = len(d) >= 17 and not d.startswith("62")
            if orderish is None and long_run:
                orderish = ("单" in s or "order" in low) and not ("卡" in s or "card" in low or "visa" in low)
            if not (long_run and orderish):
                yield (_PRIO["card_bare"], m.start(), m.end(), "CARD", "luhn_ok")
                continue
        yield (_PRIO["order_bare"], m.start(), m.end(), "ORDER", "bare")


# The registered detectors (names in context, whole addresses, postcodes, handles, foreign
# phones, an optional NER model) import the character classes above, so they come last.
from endcloud.privacy import extra as _extra  # noqa: E402
