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

Numbers a business publishes are not personal and survive: toll-free, shared-cost, premium
and universal-access numbers (400 820 8820, 1-800-555-0199, 0800 …) by `phonenumbers`' type
and by their well-known prefixes. When digits run on after a number (`+44 7700 900123 2 pcs`)
the longest prefix of whole groups that is a possible number is taken.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterator

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

    def __init__(self) -> None:
        digit = r"[ \t]*[+＋(（]?[ \t]*[0-9０-９]"
        text = (re.compile(r"[+＋][ \t]?\(?[1-9１-９]"),
                re.compile(r"[0０][0０][ \t]?\(?[1-9１-９]"),
                re.compile(r"[0０][1-9１-９][0-9０-９]{0,4}\)?[ \t.\-/]"))
        wide = (re.compile(r"(?:手机|电话|联系方式|座机)[^0-9０-９\x00]{0,4}[0-9０-９+＋(（]"),)
        # a phone word needs a number soon after it ("call 0…", "phone number: +44…")
        lower = (re.compile(r"(?:tel|phone|mobile|mob|cell|call|text|sms|whatsapp|viber|contact number)[^0-9０-９\x00]{0,14}?"
                            r"[0-9０-９+＋(（]"),)
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
            if not any(c in m.group(0) for c in " \t.-/()") or _DATE.search(m.group(0)):
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
