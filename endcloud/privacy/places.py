"""Whole addresses and postcodes: what follows the street number, and what stands alone.

The built-in address rule in `detectors.py` stops where its grammar ends, which left the most
identifying part behind: `建国路88号SOHO现代城5号楼1203室` lost only `建国路88号`, and
`221B Baker Street, London NW1 6XE` kept its postcode. This detector

* extends every address candidate (`refine`) over what follows it: zh a building name of
  letters or characters plus units (号楼, 栋, 座, 单元, 层, 室, 5-1203); en an apartment or
  suite, a city, a state or county, a postcode and a country; and backwards over a leading
  `Flat 3,` / `Apt 4B,`;
* finds estates and buildings with at least a unit and a room (`阳光SOHO 3号楼1203室`), even
  without a road or an admin level;
* takes the value of an address field (`address: …`, `地址：…`, `收货地址…`) up to the end of
  the field when it holds a number or an address word;
* finds postcodes (type POSTCODE): UK anywhere (an area from the real list, the inward code's
  letters), US ZIP and Canadian codes after a state or province or a postcode word, Chinese
  six-digit codes and others after 邮编 / postcode / zip, 〒 codes.
"""

from __future__ import annotations

import re
from typing import Iterator

from endcloud.privacy import lexicon as lx
from endcloud.privacy.detectors import _PROVINCE, _cjk_without
from endcloud.privacy.extra import Cand, Hints

ADDRESS_PRIO = 30  # the built-in address priority
POSTCODE_PRIO = 25  # below an address: a postcode inside an address is part of it

# -- zh: what follows a street number ------------------------------------------------------------
_CN_NUM = "[0-9]{1,5}[A-Za-z]?|[A-Za-z][0-9]{0,4}|[一二三四五六七八九十]{1,3}"
_ZH_UNIT = "(?:号楼|号院|号门|号|栋|幢|座|单元|层|楼|室|户|房|铺|期|区|排|组|门)"
# a building name: letters, "·" and characters, but not the words of the sentence around it
_ZH_NOT_NAME = "的在是我你他她住到寄送往址与及给要想把被还请帮问说了吗呢吧啊哦收货改为和或就"
_BNAME = "[A-Za-z·" + _cjk_without(_ZH_NOT_NAME) + "]"
# a building name (letters, CJK, "·") of at most 12 characters, then number + unit; or 5-1203(室)
_ZH_TAIL_PART = (
    r"(?:" + _BNAME + r"{1,12}?)?(?:" + _CN_NUM + r")" + _ZH_UNIT
    + r"|[0-9]{1,4}-[0-9]{1,5}(?:室|号|房)?"
    + r"|(?<=[座栋幢楼层元号])[0-9]{2,5}(?![0-9])"
    + r"|[ \t][0-9]{1,5}[ \t]?号(?:院|楼)?"  # 中华南路 45 号
)
_ZH_TAIL = re.compile(r"(?:" + _ZH_TAIL_PART + r")+")
# after a comma or a space only a building-type unit continues the address (not 5号, a date)
_ZH_TAIL_SEP = re.compile(
    r"[ ，,]?(?:" + _BNAME + r"{1,12}?)?(?:" + _CN_NUM + r")(?:号楼|栋|幢|座|单元|层|室)(?:" + _ZH_TAIL_PART + r")*"
)
# a building, campus or institution named after the house number or the road: 1037号华中科技大学东区宿舍
_ZH_BUILDING = re.compile(
    _BNAME + r"{0,14}?(?:大学|学院|中学|小学|医院|大厦|中心|广场|宿舍|公寓|小区|花园|大楼|酒店|宾馆|商场|写字楼|家园|大院|校区|"
    r"园区|产业园|科技园|家属区|家属院|国际|公馆|山庄|新村)(?:[东西南北]?区|[东西南北]门)?"
)
# an admin level, a road of any kind (鹭江道, 八一路) and a house number, when the built-in grammar has no word for the road
_ZH_ADM = r"(?:" + _PROVINCE + r"|" + _BNAME + r"{1,6}?(?:市|自治州|地区|盟)|" + _BNAME + r"{1,6}?(?:区|县|旗))"
_ZH_ADM_ROAD = re.compile(
    _ZH_ADM + r"(?:" + _BNAME + r"{1,6}?(?:市|区|县|旗|街道|镇|乡))*" + _BNAME + r"{1,12}?(?:道|路|街|巷|弄|胡同|里)"
    r"[ \t]?[0-9]{1,5}[ \t]?号"
)
# estates and buildings with a unit and a room, with no road or admin level before them
_ZH_ESTATE = re.compile(
    _BNAME + r"{1,10}?(?:小区|花园|大厦|公寓|家园|新村|广场|苑|园|府|城|中心|大楼|公馆|华庭|山庄|社区|宿舍|科技园|产业园|"
    r"写字楼|SOHO|Soho|soho|国际|村)"
    r"(?:" + _CN_NUM + r")(?:号楼|栋|幢|座|单元)(?:" + _ZH_TAIL_PART + r")+"
)

# -- en: what follows "12 Baker Street" -----------------------------------------------------------
_UK_POSTCODE = r"(?P<uk>[A-Z]{1,2}[0-9][A-Z0-9]?[ \t]?[0-9][ABD-HJLNP-UW-Z]{2})(?![A-Za-z0-9])"
_US_ZIP = r"[0-9]{5}(?:-[0-9]{4})?(?![0-9])"
_CA_POSTAL = r"[ABCEGHJ-NPRSTVXY][0-9][ABCEGHJ-NPRSTV-Z][ \t]?[0-9][ABCEGHJ-NPRSTV-Z][0-9](?![A-Za-z0-9])"
_COUNTRY = r"(?:UK|U\.K\.|USA|U\.S\.A\.|US|United Kingdom|United States|England|Scotland|Wales|Northern Ireland|Ireland|Canada|Australia|New Zealand)"
_AU_STATES = r"(?:NSW|VIC|QLD|TAS|ACT|WA|SA|NT)"
_EN_UNIT = (r"(?:(?i:apt|apartment|suite|ste|unit|flat|fl|floor|room|rm|bldg|building|#)\.?[ \t]*#?[A-Za-z0-9\-]{1,6}"
            r"|[0-9]{1,3}(?:st|nd|rd|th)[ \t]+(?i:floor|fl)\.?)")
_CITY = r"[A-Z][a-z][A-Za-z'\-]*(?:[ \t]+(?:(?:upon|on|under|in|de|la|le|du|sur|am)[ \t]+)?[A-Z][a-z][A-Za-z'\-]*){0,3}(?![0-9])"
_POSTCODE_ANY = (r"(?:(?:[A-Z]{2}\.?[ \t]+)?(?:" + _US_ZIP + "|" + _CA_POSTAL + ")|" + _UK_POSTCODE.replace("?P<uk>", "")
                 + "|" + _AU_STATES + r"[ \t]+[0-9]{4}(?![0-9]))")
_EN_TAIL = re.compile(
    r"(?:[ \t]+(?:NW|NE|SW|SE|N|S|E|W)\.?(?![A-Za-z0-9]))?"  # Pennsylvania Avenue NW
    r"(?:,?[ \t]*" + _EN_UNIT + r")?"
    r"(?:,[ \t]*" + _CITY + r"){0,3}"  # localities and the city
    r"(?:,?[ \t]*[A-Z][A-Za-z]+shire)?"  # county
    r"(?:,?[ \t]*" + _POSTCODE_ANY + r")?"
    r"(?:,?[ \t]*" + _COUNTRY + r"(?![A-Za-z]))?"
)
_EN_HEAD = re.compile(r"(?:" + _EN_UNIT + r"[ \t]*,?[ \t]*)$")
# a street with a name the built-in rule does not know (Elm Grove, Kings Parade, Infinite Loop)
_EN_STREET_MORE = re.compile(
    r"(?<![0-9A-Za-z$€£¥.,])[0-9]{1,5}[A-Za-z]?[ \t]+(?:[A-Z][A-Za-z'\-]*\.?[ \t]+){0,3}?[A-Z][A-Za-z'\-]*[ \t]+"
    r"(?:Loop|Grove|Parade|Mews|Gardens|Gdns|Rise|Walk|Wharf|Quay|Embankment|Broadway|Esplanade|Promenade|Heights|Ridge|Vale|"
    r"Hill|Green|Circus|Yard|Gate|Chase|Crossing|Path|Pike|Bend|Commons|Wynd)(?![A-Za-z])"
)
# any "number + words" that a postcode closes: 150 Piccadilly, London W1J 9BR; 9 Rue de Rivoli, 75001 Paris
_EN_ANCHORED = re.compile(
    r"(?<![0-9A-Za-z$€£¥.,#])[0-9]{1,5}[A-Za-z]?[ \t]+(?:[A-Z][A-Za-z'\-]*\.?|de|du|des|la|le|von|van|der|di|da)"
    r"(?:[ \t]+(?:[A-Z][A-Za-z'\-]*\.?|de|du|des|la|le|von|van|der|di|da)){0,4}"
    r"(?:,?[ \t]*" + _EN_UNIT + r")?(?:,[ \t]*" + _CITY + r"){0,3}"
    r"(?:,?[ \t]*(?:" + _POSTCODE_ANY + r")|,[ \t]*[0-9]{5}[ \t]+" + _CITY + r"|,?[ \t]*Singapore[ \t]+[0-9]{6}(?![0-9]))"
    r"(?:,?[ \t]*(?:" + _COUNTRY + r"|[A-Z][a-z]+)(?![A-Za-z]))?"
)

# -- address fields --------------------------------------------------------------------------------
_EN_FIELD = re.compile(
    r"(?<![A-Za-z])(?i:shipping address|delivery address|billing address|home address|mailing address|address|addr)"
    r"[ \t]*[:：=][ \t]*"
    # the value ends at a line end, at the next "key:" field, or at a sentence end
    r"(?P<v>[^\n\t;；。!！?？|\x00]{4,120}?)(?=[ \t]*(?:\n|\t|;|；|。|!|！|\?|？|\||$|,[ \t]*[A-Za-z_ ]{2,20}[:：]|\.[ \t]+[A-Z]|\.$))"
)
_ZH_FIELD = re.compile(
    r"(?:收货地址|收件地址|送货地址|寄件地址|家庭地址|详细地址|通讯地址|地址|住址)[ \t]*(?:[:：=]|是|为|改成|改为)[ \t]*"
    # a value starts with a place, not with the sentence around it (地址是在同一个区的话)
    r"(?P<v>(?=" + _BNAME + r")[^\s;；。!！?？|，,\x00]{4,80})"
)
_ADDR_EVIDENCE = re.compile(
    r"[^\x00-\x7f个这那哪每各该本一同](?:省|市|区|县|镇|乡|村|路|街|巷|弄|苑|园|大厦|小区)"
    r"|[0-9一二三四五六七八九十](?:号|栋|幢|室|楼|单元|座)"
    r"|[0-9]+[A-Za-z]?[ \t]+[A-Z]|(?i:\b(?:street|road|avenue|lane|drive|close|court|flat|apt|suite|unit)\b)"
)

# -- postcodes -------------------------------------------------------------------------------------
_UK_RE = re.compile(r"(?<![A-Za-z0-9])" + _UK_POSTCODE)
_POSTCODE_CTX = re.compile(
    r"(?:(?:邮编(?:号码?)?|邮政编码|郵便番号|우편번호|(?i:post[ \t]?code|postal[ \t]code|postcode|code postal|plz|postleitzahl|"
    r"cep|c[oó]digo postal|cap))['’]?s?[ \t]*(?:[:：#]|是|为|is)?[ \t]*"
    r"(?P<v>[0-9]{3,6}(?:-[0-9]{3,4})?(?![0-9])|" + _CA_POSTAL + r"|[A-Z]{1,2}[0-9][A-Z0-9]?[ \t]?[0-9][A-Z]{2})"
    r"|(?<![A-Za-z])(?i:zip[ \t]?code|zip(?:\+4)?)['’]?s?[ \t]*(?:[:：#]|is)?[ \t]*(?P<z>" + _US_ZIP + ")"
    r"|(?<![A-Za-z])(?i:pin[ \t]?code)[ \t]*(?:[:：#]|is)?[ \t]*(?P<p>[1-9][0-9]{5})(?![0-9]))"
)
_STATE_ZIP = re.compile(r"(?<![A-Za-z])(?P<st>[A-Z]{2})\.?[ \t]+(?P<v>" + _US_ZIP + "|" + _CA_POSTAL + ")")
_JP = re.compile(r"〒[ \t]?[0-9]{3}-?[0-9]{4}(?![0-9])")
_UK_NOT_INWARD = frozenset({"GB", "TB", "PB"})  # "PS5 2TB", "M2 8GB" are storage sizes


_EIRCODE = re.compile(r"(?<![A-Za-z0-9])(?:[AC-FHKNPRTV-Y][0-9]{2}|D6W)[ \t](?=[0-9AC-FHKNPRTV-Y]{4}(?![A-Za-z0-9]))"
                      r"(?=[0-9]*[AC-FHKNPRTV-Y])(?=[AC-FHKNPRTV-Y]*[0-9])[0-9AC-FHKNPRTV-Y]{4}")
_AU = re.compile(r"(?<![A-Za-z])" + _AU_STATES + r"[ \t]+[0-9]{4}(?![0-9])")
_SG = re.compile(r"(?<![A-Za-z])Singapore[ \t]+(?P<v>[0-9]{6})(?![0-9])")


def _uk_ok(code: str) -> bool:
    code = code.replace(" ", "").replace("\t", "")
    outward, inward = code[:-3], code[-3:]
    area = outward[:2] if outward[:2].isalpha() else outward[:1]
    return area in lx.UK_POSTCODE_AREAS and inward[1:] not in _UK_NOT_INWARD


def _postcodes(s: str) -> Iterator[Cand]:
    for m in _UK_RE.finditer(s):
        if _uk_ok(m.group("uk")):
            yield (POSTCODE_PRIO, m.start("uk"), m.end("uk"), "POSTCODE", "uk")
    for m in _POSTCODE_CTX.finditer(s):
        g = "v" if m.group("v") else ("z" if m.group("z") else "p")
        yield (POSTCODE_PRIO, m.start(g), m.end(g), "POSTCODE", "context")
    for m in _STATE_ZIP.finditer(s):
        if m.group("st") in lx.US_STATES or m.group("st") in lx.CA_PROVINCES:
            yield (POSTCODE_PRIO, m.start(), m.end(), "POSTCODE", "state")  # with its state: CA 90210
    for m in _AU.finditer(s):
        yield (POSTCODE_PRIO, m.start(), m.end(), "POSTCODE", "au")
    for m in _EIRCODE.finditer(s):
        yield (POSTCODE_PRIO, m.start(), m.end(), "POSTCODE", "eircode")
    for m in _SG.finditer(s):
        yield (POSTCODE_PRIO, m.start("v"), m.end("v"), "POSTCODE", "sg")
    for m in _JP.finditer(s):
        yield (POSTCODE_PRIO, m.start(), m.end(), "POSTCODE", "jp")


_EN_PART = re.compile(r"[ \t]*(?:[0-9#]|[A-Z]|(?:upon|on|de|la|le|du|van|von|der)[ \t]+[A-Z])")


def _en_parts(value: str) -> str:
    """The leading comma-separated parts of an English field value that read as address parts
    (a number, a capitalised name, a postcode): "697 West King Rd, Austin, my name is …" stops
    before "my name is"."""
    out, pos = [], 0
    for part in value.split(","):
        if not _EN_PART.match(part):
            break
        out.append(part)
        pos += len(part) + 1
    return ",".join(out)


class PlaceDetector:
    """Address tails, estates, address fields and postcodes (see the module docstring)."""

    name = "places"

    def __init__(self) -> None:
        # separate passes: one alternation of these runs several times slower in `re`
        postcode = (re.compile(r"[A-Z][0-9][A-Z0-9]?[ \t]?[0-9][A-Z]{2}"),  # UK
                    re.compile(r"[A-Z]{2}\.?[ \t]+[0-9A-Z]"),  # a state or province and its code (US, CA, AU)
                    re.compile(r"[A-Z][0-9][0-9W][ \t][0-9A-Z]{4}"),  # Eircode
                    re.compile(r"Singapore"),
                    # en streets the built-in rule does not know, and addresses a postcode closes
                    re.compile(r"[0-9][A-Za-z]?[ \t]+[A-Z]"))
        lower = (re.compile(r"\b(?:post[ \t]?code|postal|zip|plz|postleitzahl|cep|c[oó]digo postal|cap|pin[ \t]?code|addr)"),)
        zh = (re.compile(r"地址|住址|[0-9A-Za-z一二三四五六七八九十](?:号楼|栋|幢|座|单元)|[道路街巷弄里][ \t]?[0-9]{1,5}[ \t]?号"),
              re.compile(r"〒|邮编|邮政编码|郵便番号|우편번호"))
        self._hints = {"zh": Hints(postcode, lower, zh), "en": Hints(postcode, lower), None: Hints(postcode, lower, zh)}

    def hints(self, lang: str | None) -> Hints:
        return self._hints[lang]

    def find(self, text: str, shadow: str, lang: str | None) -> Iterator[Cand]:
        s = shadow
        yield from _postcodes(s)
        for rx in (_EN_FIELD, _ZH_FIELD):
            for m in rx.finditer(s):
                v = m.group("v")
                if rx is _EN_FIELD:
                    v = _en_parts(v)
                v = v.rstrip(" ,，")
                if _ADDR_EVIDENCE.search(v):
                    yield (ADDRESS_PRIO, m.start("v"), m.start("v") + len(v), "ADDRESS", "field")
        if lang != "zh":
            for rx, label in ((_EN_STREET_MORE, "en"), (_EN_ANCHORED, "en")):
                for m in rx.finditer(s):
                    end = m.end()
                    while end > m.start() and s[end - 1] in " ,":
                        end -= 1
                    yield (ADDRESS_PRIO, m.start(), end, "ADDRESS", label)
        if lang != "en":
            for m in _ZH_ADM_ROAD.finditer(s):
                start = m.start()
                if s[start] == "成" and start and s[start - 1] in "改换变写填":
                    start += 1
                yield (ADDRESS_PRIO, start, m.end(), "ADDRESS", "zh")
            for m in _ZH_ESTATE.finditer(s):
                start = m.start()
                if s[start] == "成" and start and s[start - 1] in "改换变写填":  # 改成杭州… is not 成都
                    start += 1
                yield (ADDRESS_PRIO, start, m.end(), "ADDRESS", "zh_estate")

    def refine(self, cands: list[Cand], text: str, shadow: str, lang: str | None) -> None:
        """Extend every address over the building, unit, room, city and postcode that follow it."""
        s = shadow
        for i, (prio, start, end, typ, label) in enumerate(cands):
            if typ != "ADDRESS":
                continue
            new_start, new_end = start, end
            if label in ("zh", "zh_estate", "field") and lang != "en":
                building = False
                while True:
                    m = _ZH_TAIL.match(s, new_end) or _ZH_TAIL_SEP.match(s, new_end)
                    if (m is None or m.end() == new_end) and new_end and (building or s[new_end - 1] in "号路街道巷弄院区楼座"):
                        m = _ZH_BUILDING.match(s, new_end)  # a named building needs no number after a house number or road
                        building = True
                    else:
                        building = False
                    if m is None or m.end() <= new_end:
                        break
                    new_end = m.end()
            if label in ("en", "field") and lang != "zh":
                m = _EN_TAIL.match(s, new_end)
                if m is not None and m.end() > new_end:
                    new_end = m.end()
                h = _EN_HEAD.search(s, max(0, new_start - 24), new_start)
                if h is not None:
                    new_start = h.start()
            if (new_start, new_end) != (start, end):
                cands[i] = (prio, new_start, new_end, typ, label)
