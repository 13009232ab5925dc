"""Phone numbers outside mainland China and North America, checked with `phonenumbers`.

The built-in rules know mainland mobiles and landlines and NANP numbers; a customer abroad
writes `07700 900123`, `+44 20 7946 0958`, `0049 30 1234567` or `WhatsApp 9123 4567`. Three
shapes are taken here (type PHONE):

    international   + or 00, a country code, 6-15 more digits in groups: parsed by
                    `phonenumbers` and kept when it is a possible number of that country
    national        a trunk 0, then groups with at least one separator, 9-12 digits in all
                    (UK 07700 900123, FR 06 12 34 56 78, DE 030 12345678, JP 090-1234-5678):
                    kept when it is a possible number in one of the common regions
    after a word    tel / phone / mobile / call / WhatsApp / 电话 / 手机 / 联系方式 + 7-15 digits
    in a region     the text names a country or city (Singapore, 香港, Macau, Denmark, 迪拜 ...) and
                    `phonenumbers.PhoneNumberMatcher` finds a number VALID in that region's plan,
                    written in groups (`6123 4567`, `20 12 34 56`): many plans have no trunk 0
                    and no phone word is needed once the customer said where the number lives

Numbers a business publishes are not personal and survive: toll-free, shared-cost, premium
and universal-access numbers (400 820 8820, 1-800-555-0199, 0800 …) by `phonenumbers`' type
and by their well-known prefixes. When digits run on after a number (`+44 7700 900123 2 pcs`)
the longest prefix of whole groups that is a possible number is taken. A number right after a
product word (SKU, model, part no., 型号, 商品编号) is a product code, whatever its shape, unless a
phone word says otherwise.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterator

from endcloud.privacy.detectors import _product_before
from endcloud.privacy.extra import Cand, Hints

# An explicit country code other than 86 outranks the mainland mobile rule, which would otherwise
# take the 151 23456789 out of +49 151 23456789 (a German mobile shaped like a Chinese one).
PRIO_INTL, PRIO_CTX, PRIO_NATIONAL = 76, 60, 58
# Regions tried for a number written nationally (with its trunk 0), commonest in cross-border shops first.
NATIONAL_REGIONS = ("GB", "FR", "DE", "AU", "JP", "KR", "IT", "ES", "NL", "IE", "NZ", "TW", "MY", "TH", "BE", "AT", "CH",
                    "SE", "TR", "ZA", "BR", "AR", "ID", "PH", "VN")
CONTEXT_REGIONS = ("US", "GB", "HK", "SG", "CN", "AU", "IN", "MY")

_G = r"(?:[ \t.\-/]{1,2}|\)[ \t]?|[ \t]?\()?"  # between digit groups: space, dash, dot, slash, parentheses
_INTL = re.compile(r"(?<![0-9A-Za-z+])(?:\+|00)[ \t]?\(?[1-9][0-9]{0,2}\)?(?:" + _G + r"[0-9]){6,16}(?![0-9])")
_NATIONAL = re.compile(
    r"(?<![0-9A-Za-z+.,/:\-])(?:\(0[1-9][0-9]{0,4}\)[ \t]?|0[1-9][0-9]{0,4}[ \t.\-/]{1,2})[0-9]{2,5}(?:[ \t.\-]?[0-9]{2,5}){0,3}(?![0-9])"
)
_CTX = re.compile(
    r"(?:(?<![A-Za-z])(?i:tel|telephone|phone|phone number|mobile|mob|cell|cellphone|call|text|sms|whatsapp|viber|contact number)"
    r"(?:[ \t]*(?i:no\.?|number|#))?|手机号?码?|电话号?码?|联系电话|联系方式|座机)"
    r"[ \t]*(?:[:：]|是|为|is|on|at)?[ \t]*(?P<v>\+?\(?[0-9](?:" + _G + r"[0-9]){6,14})(?![0-9])"
)
# Countries and cities a customer names next to a number, and the plan that number is checked in.
# Abbreviations are matched case-sensitively ("US", not the pronoun "us"); names and demonyms in any case.
_REGION_NAMES = {
    "SG": "singapore|singaporean|新加坡|狮城", "HK": "hong kong|hongkong|香港", "MO": "macau|macao|澳门",
    "TW": "taiwan|taiwanese|taipei|台湾|台北", "JP": "japan|japanese|tokyo|osaka|日本|东京|大阪",
    "KR": "korea|korean|seoul|韩国|首尔", "MY": "malaysia|malaysian|kuala lumpur|马来西亚|吉隆坡",
    "TH": "thailand|thai|bangkok|泰国|曼谷", "VN": "vietnam|vietnamese|hanoi|越南", "ID": "indonesia|indonesian|jakarta|印尼|印度尼西亚",
    "PH": "philippines|philippine|filipino|manila|菲律宾", "AU": "australia|australian|aussie|sydney|melbourne|澳洲|澳大利亚|悉尼|墨尔本",
    "NZ": "new zealand|auckland|新西兰", "GB": "britain|british|england|london|manchester|英国|伦敦",
    "IE": "ireland|irish|dublin|爱尔兰", "US": "america|american|new york|美国|纽约", "CA": "canada|canadian|toronto|vancouver|加拿大",
    "DE": "germany|german|berlin|munich|德国", "FR": "france|french|paris|法国|巴黎", "IT": "italy|italian|意大利",
    "ES": "spain|spanish|西班牙", "NL": "netherlands|dutch|holland|荷兰", "BE": "belgium|belgian|比利时",
    "CH": "switzerland|swiss|瑞士", "AT": "austria|austrian|奥地利", "SE": "sweden|swedish|瑞典", "NO": "norway|norwegian|挪威",
    "DK": "denmark|danish|丹麦", "PL": "poland|polish|波兰", "PT": "portugal|portuguese|葡萄牙", "IL": "israel|israeli|以色列",
    "AE": "emirates|dubai|abu dhabi|迪拜|阿联酋", "SA": "saudi|沙特", "IN": "india|indian|印度", "RU": "russia|russian|俄罗斯",
    "BR": "brazil|brazilian|巴西", "MX": "mexico|mexican|墨西哥", "ZA": "south africa|南非", "TR": "turkey|turkish|土耳其",
}
_REGION_ABBR = {"SG": "SG", "HK": "HK", "UK": "GB", "US": "US", "USA": "US", "NZ": "NZ", "KL": "MY", "UAE": "AE", "AU": "AU"}
_REGION_OF = {w: r for r, words in _REGION_NAMES.items() for w in words.split("|")}
_REGION_WORD = re.compile(r"(?<![a-z])(?:" + "|".join(sorted(map(re.escape, _REGION_OF), key=len, reverse=True)) + r")(?![a-z])")
# the pre-check tries Latin names on the lower-cased window, Chinese ones only where the window is not ASCII
_REGION_LATIN = re.compile(r"(?<![a-z])(?:" + "|".join(sorted((re.escape(w) for w in _REGION_OF if w.isascii()), key=len, reverse=True))
                           + r")(?![a-z])")
_REGION_CJK = re.compile("|".join(sorted((re.escape(w) for w in _REGION_OF if not w.isascii()), key=len, reverse=True)))
_REGION_ABBR_RE = re.compile(r"(?<![A-Za-z])(?:" + "|".join(sorted(_REGION_ABBR, key=len, reverse=True)) + r")(?![A-Za-z])")
NEAR = 40  # a region word counts for a number at most this many characters before or after it
_REACH = NEAR + max(map(len, (*_REGION_OF, *_REGION_ABBR))) + 1
# Seven digits or more with short gaps: every number the region rule takes is inside one such run.
_RUN = re.compile("[0-9０-９](?:[^0-9０-９\x00]{0,4}[0-9０-９]){6,}")


class _NearRegion:
    """The pre-check for the region rule: a run of seven digits or more (`_RUN`) with a country or city
    named at most NEAR characters before or after it, within one text (a batch joins texts with NUL).
    Quacks like a compiled pattern's `search`, which is all the pre-checks use. Digits first: a long run
    is rare in chat, while the word lists are slow to try at every position. Runs on the text as
    written and lower-cases only the window, so one pass serves the abbreviations (US, HK), the Latin
    names and the Chinese ones."""

    def search(self, string: str, pos: int = 0):
        for m in _RUN.finditer(string, pos):
            a, b = m.span()
            # NEAR plus the longest word: a word that starts or ends within reach lies wholly inside
            lo = string.rfind("\x00", max(pos, a - _REACH), a) + 1 or max(pos, a - _REACH)
            hi = string.find("\x00", b, b + _REACH)
            window = string[lo:b + _REACH if hi < 0 else hi]
            if _REGION_ABBR_RE.search(window) or (not window.isascii() and _REGION_CJK.search(window)) \
                    or _REGION_LATIN.search(window.lower()):
                return m
        return None


_MONEY_BEFORE = re.compile(r"(?:[$¥€£￥]|RM|kr|HK\$|S\$|NT\$)[ \t]*$")
_CN = re.compile(r"(?:\+|00)[ \t]?\(?86(?![0-9])")
_DATE = re.compile(r"(?<![0-9])[0-3]?[0-9][./\-][01]?[0-9][./\-](?:19|20)[0-9]{2}(?![0-9])")
_BUSINESS = re.compile(r"(?:\+?86[ \t\-]?)?[48]00|(?:\+?1[ \t.\-]?)?\(?8(?:00|88|77|66|55|44|33)\b|\+?(?:44[ \t]?|0)80[08]|1[38]00\b")


@lru_cache(maxsize=1)
def _pn():
    import phonenumbers  # imported on first use: its metadata loads lazily but the module is not small

    skip = {phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.PREMIUM_RATE,
            phonenumbers.PhoneNumberType.SHARED_COST, phonenumbers.PhoneNumberType.UAN,
            phonenumbers.PhoneNumberType.VOICEMAIL}
    return phonenumbers, skip


def _digits(s: str) -> str:
    return "".join(c for c in s if "0" <= c <= "9")


def _personal(raw: str, regions: tuple[str | None, ...]) -> bool:
    """A number of one of `regions` (None: raw has its country code) that no business publishes: a valid
    personal number anywhere wins; else a valid business number loses; else a merely possible one
    (fictional ranges such as 07700 900xxx are possible but not valid) counts as personal."""
    pn, skip = _pn()
    if _BUSINESS.match(raw.lstrip("(")):
        return False
    possible = business = False
    for region in regions:
        try:
            num = pn.parse(raw, region)
        except pn.NumberParseException:
            continue
        if not pn.is_possible_number(num):
            continue
        possible = True
        if pn.is_valid_number(num):
            if pn.number_type(num) not in skip:
                return True
            business = True
    return possible and not business


def _group_ends(s: str, start: int, end: int) -> list[int]:
    """Offsets where a digit group ends inside s[start:end], last first."""
    return [i + 1 for i in range(end - 1, start - 1, -1) if s[i].isdigit() and (i + 1 == end or not s[i + 1].isdigit())]


def _take(s: str, start: int, end: int, regions: tuple[str | None, ...], min_digits: int, prefix: str = "") -> int | None:
    for e in _group_ends(s, start, end):
        raw = s[start:e]
        if len(_digits(raw)) < min_digits:
            return None
        if _personal(prefix + raw, regions):
            return e
    return None


class PhoneDetector:
    """International, national and context-introduced phone numbers (see the module docstring)."""

    name = "phones"
    # every rule takes seven digits or more (spelled-out numerals are folded to digits before `find`)
    needs = re.compile("[0-9０-９〇零一二三四五六七八九幺两]")

    def __init__(self) -> None:
        digit = r"[ \t]*[+＋(（]?[ \t]*[0-9０-９]"
        text = (re.compile(r"[+＋][ \t]?\(?[1-9１-９]"),
                re.compile(r"[0０][0０][ \t]?\(?[1-9１-９]"),
                re.compile(r"[0０][1-9１-９][0-9０-９]{0,4}\)?[ \t.\-/]"))
        wide = (re.compile(r"(?:手机|电话|联系方式|座机)[^0-9０-９\x00]{0,4}[0-9０-９+＋(（]"),)
        # a phone word needs a number soon after it ("call 0…", "phone number: +44…")
        lower = (re.compile(r"(?:tel|phone|mobile|mob|cell|call|text|sms|whatsapp|viber|contact number)[^0-9０-９\x00]{0,14}?"
                            r"[0-9０-９+＋(（]"),)
        # a region word counts only with a digit near it: most texts naming a country hold no phone
        text += (_NearRegion(),)
        self._hints = Hints(text, lower, wide)

    def hints(self, lang: str | None) -> Hints:
        return self._hints

    def find(self, text: str, shadow: str, lang: str | None) -> Iterator[Cand]:
        s = shadow
        for m in _INTL.finditer(s):
            raw = m.group(0)
            if _CN.match(raw):
                continue  # +86: the built-in mainland rules know these better
            prefix = "+" if raw.startswith("00") else ""
            start = m.start() + (2 if prefix else 0)
            end = _take(s, start, m.end(), (None,), 8, prefix)
            if end is not None:
                yield (PRIO_INTL, m.start(), end, "PHONE", "international")
        for m in _NATIONAL.finditer(s):
            if not any(c in m.group(0) for c in " \t.-/()") or _DATE.search(m.group(0)) or _product_before(s, m.start()):
                continue
            end = _take(s, m.start(), m.end(), NATIONAL_REGIONS, 9)
            if end is not None:
                yield (PRIO_NATIONAL, m.start(), end, "PHONE", "national")
        for m in _CTX.finditer(s):
            v = m.group("v")
            regions = (None,) if v.startswith("+") else CONTEXT_REGIONS
            end = _take(s, m.start("v"), m.end("v"), regions, 7)
            if end is None and not v.startswith("+") and len(_digits(v)) >= 7 and not _BUSINESS.match(v.lstrip("(")):
                end = m.end("v")  # a number the customer calls theirs, in whatever plan
            if end is not None:
                yield (PRIO_CTX, m.start("v"), end, "PHONE", "context")
        regions = _named_regions(s)
        if regions:
            yield from _in_regions(s, regions)


def _named_regions(s: str) -> dict[str, list[tuple[int, int]]]:
    """The plans of the countries and cities `s` names (Singapore -> SG, 香港 -> HK), each with where it is named."""
    low = s.lower()
    if len(low) != len(s):
        low = s  # lower() lengthened a character: offsets would not line up; names then count as written
    found: dict[str, list[tuple[int, int]]] = {}
    for m in _REGION_WORD.finditer(low):
        found.setdefault(_REGION_OF[m.group(0)], []).append(m.span())
    for m in _REGION_ABBR_RE.finditer(s):
        found.setdefault(_REGION_ABBR[m.group(0)], []).append(m.span())
    return found


def _in_regions(s: str, regions: dict[str, list[tuple[int, int]]]) -> Iterator[Cand]:
    """Numbers valid in the plan of a region named near them, written in groups as people write phones,
    that are not prices, product codes or numbers a business publishes."""
    pn, skip = _pn()
    seen: set[tuple[int, int]] = set()
    for region, spans in regions.items():
        for m in pn.PhoneNumberMatcher(s, region, leniency=pn.Leniency.VALID, max_tries=50):
            start, end, raw = m.start, m.end, m.raw_string
            if (start, end) in seen or raw[:1] in "+＋" or raw.startswith("00"):
                continue  # with its country code: the international rule's
            if not any(0 <= start - b <= NEAR or 0 <= a - end <= NEAR for a, b in spans):
                continue
            if not any(c in raw for c in " \t.-/()") or len(_digits(raw)) < 7:
                continue  # one run of digits is an id or a quantity as often as a phone
            if not pn.is_valid_number_for_region(m.number, region) or pn.number_type(m.number) in skip:
                continue
            if _BUSINESS.match(raw.lstrip("(")) or _MONEY_BEFORE.search(s, max(0, start - 6), start) or _product_before(s, start):
                continue
            seen.add((start, end))
            yield (PRIO_NATIONAL, start, end, "PHONE", "region")
