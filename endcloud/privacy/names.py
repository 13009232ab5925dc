"""People's names beyond "我叫 / Name:": honorifics, verbs of speech, relations, greetings, field labels.

The built-in rule in `detectors.py` takes a name only right after a cue (我叫, 收件人：, my name
is, Mr). These rules add the other ways a name shows up in customer service, in both scripts:

    王建国先生 / 李老师 / 张总         surname + 0-2 given characters + an honorific or role
    李娜说 / 张伟让我 / 王芳的快递      surname + 1-2 given characters + a verb of speech or a possession
    转告张伟 / 寄给李娜                a verb that hands something to a person + the name
    receiver: 张伟 / 收件人：Emily Lee  a field label (either language) + a name (either script)
    Emily Johnson says / Mr Smith      a listed first name + a capitalised word + a verb of speech
    my wife Sarah / Dear Tom / Thanks Emily / Emily Johnson (first + listed surname)

Precision comes from the lists in `lexicon.py`: a cue-less Chinese name must be a common
surname followed by characters people give as names (so 周末说, 马上说, 王老吉, 黄金叶 survive),
and an English one needs a listed first name and, without a context word, a listed surname
that is not a product word (Jordan 1, Apple Watch, Gucci Bloom, Calvin Klein survive).
"""

from __future__ import annotations

import re
from typing import Iterator

from endcloud.privacy import lexicon as lx
from endcloud.privacy.detectors import _COMPOUND, _EN_WORD, _GIVEN, _SURNAMES_MORE, _SURNAMES_SAFE
from endcloud.privacy.extra import Cand, Gated, Hints

PRIO = 20  # the built-in name priority: any structured value wins an overlap
ALL_SURNAMES = _SURNAMES_SAFE + _SURNAMES_MORE
_GIVEN_SET = "[" + "".join(sorted(lx.ZH_GIVEN_CHARS - lx.ZH_GIVEN_NOT)) + "]"
_ANY = "(?:" + _COMPOUND + "|[" + ALL_SURNAMES + "])"
_SAFE = "(?:" + _COMPOUND + "|[" + _SURNAMES_SAFE + "])"
_COMPOUNDS = frozenset(_COMPOUND.split("|"))


def _alt(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


# -- Chinese -------------------------------------------------------------------------------------
_ZH_TITLE = re.compile("(?P<v>" + _ANY + _GIVEN_SET + "{0,2})(?P<t>" + _alt(lx.ZH_TITLES) + ")")
_ZH_SPEECH = re.compile("(?P<v>" + _SAFE + _GIVEN_SET + "{1,2})(?P<t>" + _alt(lx.ZH_SPEECH) + ")")
_ZH_BEFORE_WORDS = lx.ZH_BEFORE + lx.ZH_RELATIONS + ("本人", "我是", "找不到", "找到", "联系不上", "联系到", "问问",
                                                   # for whom a thing is: 这个包裹是给王丽华的, 买给李娜
                                                   "是给", "买给", "带给", "拿给", "递给", "捎给")
# the name runs as far as characters people give as names do, two at most (联系王丽娟确认, 通知许文强来取件);
# a word after a two-character name may lose its first character to it (告诉王芳明天 -> 王芳明): over, never under
_ZH_BEFORE = re.compile("(?:" + _alt(_ZH_BEFORE_WORDS) + ")(?P<v>" + _SAFE + _GIVEN_SET + "{1,2})")
# the name to write on a label or form, said without the field: 签收的时候写郑凯就行, 填王芳即可
_ZH_FILL = re.compile("(?:写|填|签|留)(?P<v>" + _SAFE + _GIVEN_SET + "{1,2})(?=就行|就可以|就好|即可|吧|好了)")
# calling a person by name at the start of a sentence: 丁宁，你的包裹到了
_ZH_VOCATIVE = re.compile(r"(?:^|(?<=[。！!？?\n]))[ \t]*(?P<v>" + _SAFE + _GIVEN_SET + r"{1,2})[，,][ \t]*(?:你|您)")
_ZH_FIELD = "(?:" + _alt(lx.ZH_NAME_FIELDS) + ")"
_EN_FIELD = "(?i:" + _alt(lx.EN_NAME_FIELDS).replace("\\ ", "[ _]") + ")"
# JSON and CSV-like exports quote both sides: {"name":"Oliver Brown"}, '收货人':'黄晓明'
_Q = "[\"'“”‘’]?"
_FIELD_SEP = r"(?:" + _Q + r"[ \t]*(?:[:：=]|是|为|叫|\t)[ \t]*" + _Q + r"|[ \t]+is[ \t]+)"
# a Chinese field is often followed by how it was filled in: 收件人写的是刘洋, 收货人，改成徐晓燕
_ZH_FIELD_SEP = (r"(?:信息|姓名)?" + _Q + r"[ \t]*[，,]?[ \t]*(?:写的是|写的|写成|写|填的是|填的|填成|填|改成|改为|换成|应该是|就是|用的是|用的)?"
                 r"[ \t]*(?:[:：=]|是|为|叫)?[ \t]*" + _Q)
_ZH_NAME_VALUE = "(?P<zh>" + _ANY + _GIVEN + "{1,2})"
_EN_CAPS = r"[A-Z][A-Z'\-]*[A-Z](?:[ \t]+[A-Z][A-Z'\-]*[A-Z]){1,2}(?![A-Za-z])"
_EN_NAME_VALUE = "(?P<en>" + _EN_WORD + "(?:[ \t]+(?:[A-Z]\\.[ \t]+)?" + _EN_WORD + "){0,2}|" + _EN_CAPS + ")"
# a field label starts a word (not "username:", "rename:") and is followed by a separator
_FIELD = re.compile(
    r"(?:(?<![A-Za-z_])" + _EN_FIELD + _FIELD_SEP + "|" + _ZH_FIELD + _ZH_FIELD_SEP + ")(?:" + _ZH_NAME_VALUE + "|" + _EN_NAME_VALUE + ")"
)
# a CSV row of label, value pairs: the label fills a whole cell and a comma ends it (customer_name,Lucas Martin);
# a header row (name,phone,address) names no one: its "value" is another column's label
_CSV_FIELD = re.compile(
    r"(?:^|(?<=[,\t\n|;]))" + _Q + r"(?:" + _EN_FIELD + "|" + _ZH_FIELD + ")" + _Q + r"[ \t]*,[ \t]*" + _Q
    + "(?:" + _ZH_NAME_VALUE + "|" + _EN_NAME_VALUE + ")(?=" + _Q + r"[ \t]*(?:[,\t\n|;]|$))"
)
_COLUMN_WORDS = frozenset("phone tel mobile email e-mail address city state zip postcode country order qty quantity sku price "
                          "date id item amount total status note".split())
# labels where no separator is needed: "attn John Smith", "signed by Emily Lee", "c/o Tom Hart"
_EN_FIELD_NOSEP = re.compile(
    r"(?<![A-Za-z])(?i:attn\.?|c/o|signed (?:for )?by|picked up by|collected by|received by|care of)[ \t]+"
    "(?:" + _ZH_NAME_VALUE + "|" + _EN_NAME_VALUE + ")"
)


def _given_ok(given: str) -> bool:
    if not given:
        return True
    if len(given) == 1 and given in lx.ZH_GIVEN_NOT_ALONE:
        return False
    return all(c in lx.ZH_GIVEN_CHARS and c not in lx.ZH_GIVEN_NOT for c in given)


def _zh_ok(s: str, start: int, name: str, after: str = "") -> bool:
    """Not a listed word, place or brand, and not the second half of a doubled character (谢谢王)."""
    if name in lx.ZH_NOT_NAMES or (name + after) in lx.ZH_NOT_NAMES or name[:2] in lx.ZH_NOT_NAMES:
        return False
    if any((name + after).startswith(w) for w in lx.ZH_NOT_NAMES if len(w) > 2):
        return False
    return not (start > 0 and s[start - 1] == s[start])


def _split(name: str) -> tuple[str, str]:
    return (name[:2], name[2:]) if name[:2] in _COMPOUNDS else (name[:1], name[1:])


def _overlapping(pattern: re.Pattern[str], s: str) -> Iterator[re.Match[str]]:
    """Every match, each search starting one character after the last match's start: a name
    rejected by the checks may hide a shorter one inside it (finditer would skip it)."""
    pos = 0
    while (m := pattern.search(s, pos)) is not None:
        pos = m.start() + 1
        yield m


def _zh_title_names(s: str) -> Iterator[tuple[int, int]]:
    for m in _overlapping(_ZH_TITLE, s):
        name, title = m.group("v"), m.group("t")
        surname, given = _split(name)
        if title == "总":
            # 张总 (a boss) but not 总共/总额…, and only right after the surname
            nxt = s[m.end():m.end() + 1]
            if given or (nxt and nxt in lx.ZH_ZONG_NOT):
                continue
        if not _given_ok(given):
            continue
        if not _zh_ok(s, m.start(), name, title):
            continue
        yield m.start(), m.end()


def _zh_speech_names(s: str) -> Iterator[tuple[int, int]]:
    for m in _overlapping(_ZH_SPEECH, s):
        name, verb = m.group("v"), m.group("t")
        nxt = s[m.end():m.end() + 2]
        # 说明 is "explain", but 说明天 is "said … tomorrow"
        if nxt[:1] and nxt[:1] in lx.ZH_SPEECH_NOT_AFTER.get(verb, "") and nxt not in ("明天", "明早", "明晚", "明年", "明日"):
            continue
        surname, given = _split(name)
        if not _given_ok(given) or not _zh_ok(s, m.start(), name, verb):
            continue
        yield m.start("v"), m.end("v")


def _zh_before_names(s: str) -> Iterator[tuple[int, int]]:
    for m in (*_ZH_BEFORE.finditer(s), *_ZH_VOCATIVE.finditer(s), *_ZH_FILL.finditer(s)):
        name = m.group("v")
        surname, given = _split(name)
        if _given_ok(given) and _zh_ok(s, m.start("v"), name):
            yield m.start("v"), m.end("v")


# -- English -------------------------------------------------------------------------------------
_W = _EN_WORD
_PAIR = re.compile(r"(?<![A-Za-z'])(?P<a>" + _W + r")(?=[ \t]+(?:[A-Z]\.?[ \t]+)?(?P<b>" + _W + r")(?![A-Za-z]))")
_SPEECH = re.compile(
    r"(?<![A-Za-z'])(?P<v>" + _W + r"(?:[ \t]+" + _W + r")?),?[ \t]+(?:" + _alt(lx.EN_SPEECH) + r")(?![A-Za-z])"
)
_POSSESSIVE = re.compile(r"(?<![A-Za-z'])(?P<v>" + _W + r")['’]s[ \t]+(?:[a-z]+[ \t]+)?(?:" + _alt(lx.EN_POSSESSIONS) + r")(?![A-Za-z])")
_GREETING = re.compile(
    r"(?<![A-Za-z])(?P<g>" + _alt(w.capitalize() for w in lx.EN_GREETINGS) + "|" + _alt(lx.EN_GREETINGS) + r")"
    r"(?:[ \t]*,[ \t]*\n?[ \t]*|[ \t]*\n[ \t]*|[ \t]+)(?P<v>" + _W + r"(?:[ \t]+" + _W + r")?)(?![A-Za-z])"
)
_RELATION = re.compile(
    r"(?<![A-Za-z])(?:[Mm]y|[Hh]is|[Hh]er|[Oo]ur|[Tt]heir|MY|HIS|HER|OUR|THEIR)[ \t]+"
    r"(?:" + _alt(w for x in lx.EN_RELATIONS for w in (x, x.capitalize(), x.upper())) + r")[ \t]*,?[ \t]+"
    r"(?P<v>" + _W + r"(?:[ \t]+" + _W + r")?)(?![A-Za-z])"
)
_TITLE = re.compile(r"(?<![A-Za-z])(?P<t>Dr|Prof|Professor|Sir|Dame|Lady|Lord)\.?[ \t]+(?P<v>" + _W + r"(?:[ \t]+" + _W + r")?)")
_STOP = lx.EN_NOT_NAMES | {"The", "And", "Or", "Please", "Thanks", "Thank", "Order", "Customer", "Service", "Street", "Road",
                           "Avenue", "Team", "Support", "Store", "Shop", "I", "We", "You", "He", "She", "They", "It"}


def _brand(words: list[str]) -> bool:
    joined = " ".join(words).lower()
    return joined in lx.EN_BRAND_NAMES or " ".join(words[:2]).lower() in lx.EN_BRAND_NAMES


def _trim(words: list[str], *, strict: bool = True) -> list[str]:
    """Drop trailing stop words (and, when `strict`, product words: a field label is context enough)."""
    while words and (words[-1] in _STOP or (strict and words[-1] in lx.EN_NOT_SURNAMES)):
        words = words[:-1]
    return words


def _en_names(s: str) -> Iterator[tuple[int, int, str]]:
    for m in _PAIR.finditer(s):
        a, b = m.group("a"), m.group("b")
        if a in lx.EN_FIRST_NAMES and b in lx.EN_SURNAMES and b not in lx.EN_NOT_SURNAMES and not _brand([a, b]):
            yield m.start("a"), m.end("b"), "first_last"
    for m in _SPEECH.finditer(s):
        words = m.group("v").split()
        if len(words) == 2 and words[0] not in lx.EN_FIRST_NAMES and words[1] in lx.EN_FIRST_NAMES:
            words = words[1:]  # "Yesterday Emily said": the name is the second word
            start = m.start("v") + m.group("v").index(words[0])
            yield start, start + len(words[0]), "speech"
            continue
        if words[0] in lx.EN_FIRST_NAMES or (len(words) == 1 and words[0] in lx.EN_SURNAMES and words[0] not in lx.EN_NOT_SURNAMES):
            if words[0] in _STOP or _brand(words):
                continue
            yield m.start("v"), m.end("v"), "speech"
    for m in _GREETING.finditer(s):
        words = _trim(m.group("v").split())
        if not words or words[0] in _STOP or _brand(words):
            continue
        if words[0] in lx.EN_FIRST_NAMES or m.group("g").lower() == "dear":
            start = m.start("v")
            yield start, start + len(" ".join(words)), "greeting"
    for m in _POSSESSIVE.finditer(s):
        if m.group("v") in lx.EN_FIRST_NAMES:
            yield m.start("v"), m.end("v"), "possessive"
    for rx, label in ((_RELATION, "relation"), (_TITLE, "title")):
        for m in rx.finditer(s):
            words = _trim(m.group("v").split())
            if not words or words[0] in _STOP:
                continue
            if label == "title" and (_brand([m.group("t") + ".", *words]) or _brand([m.group("t"), *words])):
                continue
            start = m.start("v")
            yield start, start + len(" ".join(words)), label


def _letters(s: str) -> str:
    return "".join(c for c in s.lower() if "a" <= c <= "z")


def _field_names(s: str, lang: str | None) -> Iterator[tuple[int, int]]:
    for rx in (_FIELD, _EN_FIELD_NOSEP, _CSV_FIELD):
        for m in rx.finditer(s):
            if m.group("en") and lang == "zh" and s[m.start()].isascii():
                continue  # zh rules only: an English name after an English cue is the en rules' to find
            if m.group("zh"):
                name = m.group("zh")
                if name in lx.ZH_NOT_NAMES:
                    continue
                yield m.start("zh"), m.end("zh")
            else:
                words = _trim(m.group("en").split(), strict=False)
                if not words or words[0] in _STOP or _brand(words) or words[0].lower() in _COLUMN_WORDS:
                    continue
                label = s[m.start():m.start("en")]
                if (rx is _CSV_FIELD or any(q in label for q in "\"'“”‘’")) and _letters(label) == "name" \
                        and words[0] not in lx.EN_FIRST_NAMES:
                    continue  # a data file's bare "name" names products as often as people: {"name":"Face Towel"}
                start = m.start("en")
                yield start, start + len(" ".join(words))


# -- the detector ----------------------------------------------------------------------------------
_FIELD_HINT = re.compile(_ZH_FIELD)
_FIELD_HINT_LOWER = re.compile(r"(?:" + _alt(lx.EN_NAME_FIELDS).replace("\\ ", "[ _]") + r"|attn|c/o|signed|picked up by|collected by|received by|care of)")
# Split in passes that each run fast in `re`: two capitalised words (a first name and a surname, a
# middle initial, O'Neil) or a possessive; a verb of speech (on the lower-cased text); a greeting,
# relation or title before a capital.
_EN_HINT = re.compile(r"[A-Z][a-z]+(?:,?[ \t]+[A-Z](?:[a-z]|'[A-Z]|\.?[ \t]+[A-Z])|['’]s[ \t])")
_EN_HINT_SPEECH = re.compile(r"(?:" + _alt(lx.EN_SPEECH) + r")(?![a-z])")
_BEFORE_WORDS = lx.EN_GREETINGS + lx.EN_RELATIONS + ("dr", "prof", "professor", "sir", "dame", "lady", "lord")
_EN_HINT_BEFORE = Gated(
    re.compile(r"[ \t,.\n][ \t]*[A-Z]"),  # a capital after a space or a comma: what all of these end with
    re.compile(r"(?<![A-Za-z])(?:" + _alt(w for x in _BEFORE_WORDS for w in (x, x.capitalize(), x.upper()))
               + r")\.?(?:[ \t]*,[ \t]*\n?|[ \t]*\n|[ \t]+)[ \t]*[A-Z]"),
)


class NameDetector:
    """Names in context, zh and en (see the module docstring)."""

    name = "names"

    def __init__(self) -> None:
        # one pass for titles and speech (both start with a surname), a cheap one for the vocative
        title_or_speech = re.compile("(?:" + _ANY + ")" + _GIVEN_SET + "{0,2}(?:" + _alt(lx.ZH_TITLES + lx.ZH_SPEECH) + ")")
        vocative = re.compile(r"[，,][ \t]*(?:你|您)")
        zh = (title_or_speech, _ZH_BEFORE, vocative, _FIELD_HINT, _ZH_FILL)
        en = (_EN_HINT, _EN_HINT_BEFORE)
        # the zh patterns (and the zh field labels) all need a Chinese character
        self._hints = {
            "zh": Hints((), (_FIELD_HINT_LOWER,), zh),
            "en": Hints(en, (_FIELD_HINT_LOWER, _EN_HINT_SPEECH), (_FIELD_HINT,)),
            None: Hints(en, (_FIELD_HINT_LOWER, _EN_HINT_SPEECH), zh),
        }

    def hints(self, lang: str | None) -> Hints:
        return self._hints[lang]

    def find(self, text: str, shadow: str, lang: str | None) -> Iterator[Cand]:
        s = shadow
        if lang != "en":
            for start, end in _zh_title_names(s):
                yield (PRIO, start, end, "NAME", "title")
            for start, end in _zh_speech_names(s):
                yield (PRIO, start, end, "NAME", "speech")
            for start, end in _zh_before_names(s):
                yield (PRIO, start, end, "NAME", "addressee")
        if lang != "zh":
            for start, end, label in _en_names(s):
                yield (PRIO, start, end, "NAME", label)
        # field labels are precise in any language: `receiver: 张伟` in an English system prompt
        for start, end in _field_names(s, lang):
            yield (PRIO, start, end, "NAME", "field")
