"""Judge a reply to a held-out question: does it state the expected facts, or abstain honestly?

The held-out packs (`bench/heldout/<pack>/`) each hold `questions.jsonl`, one conversation
per line:

    {"id": "en-07", "turns": ["do u have the gan duo 45w?", "how much"],
     "expect": {"all": ["32.99"]}, "sku": "VL-GC-45W", "tags": ["price", "followup"]}
    {"id": "en-50", "turns": ["when is the 65w back in stock"], "unanswerable": true}

`turns` are the customer's messages in order; the last is the question judged (earlier
ones are sent first and the server's replies kept as the history). A row has exactly one
of `expect` and `unanswerable: true`.

An answerable reply is right when every part of `expect` holds:

    "all":   [fact, ...]           every item appears; an item may be a list of
                                   alternatives (["7天", "七天"]): one of them suffices
    "any":   [fact, ...]           at least one appears
    "none":  [fact, ...]           none appears (a neighbouring product's price, say)
    "stock": "in" | "out"          out: an out-of-stock phrase (OUT_OF_STOCK) appears;
                                   in: an in-stock phrase (IN_STOCK) and no out-of-stock one

Facts are compared after `normalise`: NFKC (full-width digits and letters become ASCII),
lower case, typographic apostrophes made plain, thousands separators and trailing ".00"
dropped from numbers, and whitespace removed (whitespace between two digits is kept as
a separator so that "2 100W" does not read as "2100W"). A fact that starts or ends with a
digit must not be glued to more digits: "19.99" is not found in "119.99", nor "20" in
"2024", but "30" is found in "30-day" and "5w" in "5W". That is the whole rule: substring
search, so a reply that lists every price of the shop also "states" the right one.

An unanswerable question (the pack does not hold the answer) is answered correctly when
the reply, by this simple, documented rule:

  1. abstains: it contains one of ABSTAIN (zh+en ways of saying "I don't know / can't find
     that / let me pass you to a colleague");
  2. invents no quantity: every number in it, with the word or CJK character right after
     it ("13 feet", "24小时"; a bare number where none follows), occurs in the pack's
     knowledge or in the customer's own turns;
  3. claims no price: no catalog price occurs in it unless the customer wrote it; and
  4. contains none of the row's optional `forbid` strings.

Anything else is a fact claim the shop cannot back: "answered anyway".

    from check import load_questions, PackFacts, judge
    facts = PackFacts.from_pack(ShopPack.load(pack_dir))
    verdict = judge(reply_text, question, facts)      # Verdict(right, reason)

Importable by path (the bench and tests/test_heldout_check.py load it with importlib); it
needs only the standard library and, for `PackFacts.from_pack`, a loaded `ShopPack`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELDOUT = Path(__file__).resolve().parent

# "I don't know / I can't see that / let me get a person": how a reply declines to make a
# fact up. Compared after `normalise`, so spaces and case do not matter. Politeness alone
# ("sorry", "抱歉") is not here: "sorry, it has no test report" is still a fact claim.
ABSTAIN = (
    # en
    "don't know", "do not know", "not sure", "no information", "don't have information", "do not have information",
    "don't have that information", "don't have details", "do not have details", "can't find", "cannot find",
    "couldn't find", "unable to", "can't confirm", "cannot confirm", "not able to", "no details", "not listed",
    "isn't listed", "not specified", "no data", "colleague", "human agent", "a person", "support team", "customer service", "transfer you", "hand you over",
    "get back to you", "check with", "contact us", "contact our",
    # zh
    "不清楚", "不确定", "不太清楚", "不知道", "没有相关", "暂无相关", "没有这方面", "查不到", "查询不到", "无法确认", "无法回答",
    "无法提供", "暂时无法", "人工", "转接", "同事", "帮您核实", "帮您确认", "帮您问", "联系客服",
    "稍后回复", "暂不清楚", "没有说明", "未说明", "没有标注", "暂无信息", "没有信息",
)
# Out-of-stock / in-stock wording, zh+en. IN_STOCK counts only when no OUT_OF_STOCK phrase
# is present ("not in stock" contains "in stock").
OUT_OF_STOCK = (
    "out of stock", "sold out", "not in stock", "no stock", "unavailable", "not available", "currently unavailable",
    "back in stock", "restock", "none left", "stock: 0", "stock 0", "0 in stock", "no longer available",
    "缺货", "售罄", "没货", "无货", "暂无库存", "没有库存", "库存为0", "库存0", "卖完", "断货", "已售完", "补货",
    "暂时没有", "没有现货",
)
IN_STOCK = (
    "in stock", "available", "we have", "we've got", "ready to ship", "left", "units",
    "有货", "现货", "有库存", "库存", "还有", "可以下单", "可以拍", "能拍", "可以购买",
)

_DIGIT_SPACE = re.compile(r"(?<=\d)\s+(?=\d)")
_SPACE = re.compile(r"\s+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TRAILING_ZEROS = re.compile(r"(?<=\d)\.0+(?![\d])")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def normalise(text: str) -> str:
    """The form replies, facts and pack text are compared in (see the module docstring)."""
    t = unicodedata.normalize("NFKC", text or "").lower().translate(_APOSTROPHES)
    t = _THOUSANDS.sub("", t)
    t = _TRAILING_ZEROS.sub("", t)
    t = _DIGIT_SPACE.sub("|", t)
    return _SPACE.sub("", t)


def _glued(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] continues a longer number on either side."""
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    if text[start].isdigit() and (before.isdigit() or (before == "." and start > 1 and text[start - 2].isdigit())):
        return True
    if text[end - 1].isdigit() and (after.isdigit() or (after == "." and end + 1 < len(text) and text[end + 1].isdigit())):
        return True
    return False


def contains(text: str, fact: str, *, normalised: bool = False) -> bool:
    """Whether `fact` occurs in `text` after `normalise`, not glued to more digits."""
    t = text if normalised else normalise(text)
    f = normalise(fact)
    if not f:
        return False
    i = t.find(f)
    while i >= 0:
        if not _glued(t, i, i + len(f)):
            return True
        i = t.find(f, i + 1)
    return False


_QUANTITY = re.compile("(\\d+(?:\\.\\d+)?)\\s*([a-z%°]+|[\u4e00-\u9fff])?")


def quantities(text: str) -> list[tuple[str, str]]:
    """(number, number with its unit) for each number in a text, both normalised: the unit
    is the word or CJK character right after it ("13 feet" -> ("13", "13feet")), or none."""
    t = _SPACE.sub(" ", _TRAILING_ZEROS.sub("", _THOUSANDS.sub("", unicodedata.normalize("NFKC", text or "").lower())))
    return [(m.group(1), normalise(m.group(1) + (m.group(2) or ""))) for m in _QUANTITY.finditer(t)]


def numbers(text: str) -> list[str]:
    """The numbers in a text, as they read after `normalise` ("1,299.00" -> "1299")."""
    return _NUMBER.findall(normalise(text))


@dataclass(frozen=True)
class Question:
    """One row of questions.jsonl."""

    id: str
    turns: list[str]
    expect: dict[str, Any] | None = None
    unanswerable: bool = False
    sku: str | None = None
    forbid: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @property
    def question(self) -> str:
        return self.turns[-1]

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str = "") -> "Question":
        problems = row_problems(obj)
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))
        return cls(id=obj["id"], turns=list(obj["turns"]), expect=obj.get("expect"),
                   unanswerable=bool(obj.get("unanswerable", False)), sku=obj.get("sku"),
                   forbid=list(obj.get("forbid", [])), tags=list(obj.get("tags", [])))


EXPECT_KEYS = ("all", "any", "none", "stock")
ROW_KEYS = ("id", "turns", "expect", "unanswerable", "sku", "forbid", "tags", "note")


def row_problems(obj: Any) -> list[str]:
    """What is malformed in one questions.jsonl row (empty: it is well formed)."""
    if not isinstance(obj, dict):
        return [f"expected a JSON object, got {type(obj).__name__}"]
    out: list[str] = []
    unknown = sorted(set(obj) - set(ROW_KEYS))
    if unknown:
        out.append(f"unknown keys {unknown}; allowed: {list(ROW_KEYS)}")
    if not isinstance(obj.get("id"), str) or not obj.get("id"):
        out.append(f"id must be a non-empty string, got {obj.get('id')!r}")
    turns = obj.get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        out.append(f"turns must be a non-empty list of non-empty strings, got {turns!r}")
    expect, unanswerable = obj.get("expect"), obj.get("unanswerable", False)
    if unanswerable not in (True, False):
        out.append(f"unanswerable must be true or false, got {unanswerable!r}")
    if (expect is None) == (not unanswerable):
        out.append("a row needs exactly one of `expect` and `unanswerable: true`")
    if expect is not None:
        if not isinstance(expect, dict) or not expect:
            out.append(f"expect must be a non-empty object with keys from {list(EXPECT_KEYS)}, got {expect!r}")
        else:
            bad = sorted(set(expect) - set(EXPECT_KEYS))
            if bad:
                out.append(f"expect has unknown keys {bad}; allowed: {list(EXPECT_KEYS)}")
            for key in ("all", "any", "none"):
                v = expect.get(key)
                if v is None:
                    continue
                ok = isinstance(v, list) and v and all(
                    (isinstance(x, str) and x.strip()) or
                    (key == "all" and isinstance(x, list) and x and all(isinstance(y, str) and y.strip() for y in x))
                    for x in v)
                if not ok:
                    out.append(f"expect.{key} must be a non-empty list of strings"
                               f"{' (or lists of alternatives)' if key == 'all' else ''}, got {v!r}")
            if "stock" in expect and expect["stock"] not in ("in", "out"):
                out.append(f"expect.stock must be 'in' or 'out', got {expect['stock']!r}")
            if "stock" in expect and not obj.get("sku"):
                out.append("expect.stock needs the row's `sku` (the product whose stock is asked)")
            if not any(k in expect for k in ("all", "any", "stock")):
                out.append("expect needs at least one of all, any, stock (none alone checks nothing)")
    forbid = obj.get("forbid", [])
    if not isinstance(forbid, list) or not all(isinstance(x, str) and x.strip() for x in forbid):
        out.append(f"forbid must be a list of strings, got {forbid!r}")
    return out


def load_questions(path: str | Path) -> list[Question]:
    """questions.jsonl -> questions; a malformed row raises ValueError naming file:line."""
    path = Path(path)
    out: list[Question] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
        q = Question.from_json(obj, where)
        if q.id in seen:
            raise ValueError(f"{where}: duplicate id {q.id!r}")
        seen.add(q.id)
        out.append(q)
    return out


@dataclass(frozen=True)
class PackFacts:
    """What the unanswerable rule needs from a pack: its text, its numbers, its prices."""

    text: str  # normalised knowledge text
    numbers: frozenset[str]
    prices: frozenset[str]
    stock: dict[str, int]  # sku -> stock

    @classmethod
    def from_pack(cls, pack: Any) -> "PackFacts":
        """From a loaded `endcloud.kb.ShopPack`: its `knowledge_text()` plus the raw files
        (column headers, policy headings and FAQ questions count as knowledge too)."""
        parts = [pack.knowledge_text()]
        if getattr(pack, "path", None) is not None:
            for name in ("catalog.csv", "faq.jsonl", "policies.md", "orders.csv"):
                f = Path(pack.path) / name
                if f.exists():
                    text = f.read_text(encoding="utf-8-sig")
                    parts.append(_unescape_jsonl(text) if name.endswith(".jsonl") else text)
        raw = "\n".join(parts)
        return cls(text=normalise(raw), numbers=frozenset(numbers(raw)),
                   prices=frozenset(normalise(p.price_text) for p in pack.products),
                   stock={p.sku: p.stock for p in pack.products})

    def has(self, fact: str) -> bool:
        return contains(self.text, fact, normalised=True)


def _unescape_jsonl(text: str) -> str:
    lines = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            lines.append(line)
            continue
        lines.append(" ".join(str(v) for v in obj.values()) if isinstance(obj, dict) else line)
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    right: bool
    reason: str  # why not (empty when right)


def _any_of(text: str, phrases: tuple[str, ...] | list[str]) -> str | None:
    for p in phrases:
        if contains(text, p, normalised=True):
            return p
    return None


def judge(reply: str, q: Question, facts: PackFacts | None = None) -> Verdict:
    """Whether `reply` answers `q` correctly (see the module docstring for the rule).
    `facts` is needed for unanswerable questions (rules 2 and 3)."""
    t = normalise(reply)
    if not t:
        return Verdict(False, "empty reply")
    if q.unanswerable:
        if facts is None:
            raise ValueError(f"question {q.id}: judging an unanswerable question needs the pack's facts")
        asked = normalise(" ".join(q.turns))
        asked_numbers = set(numbers(" ".join(q.turns)))
        if _any_of(t, ABSTAIN) is None:
            return Verdict(False, "states something without saying it does not know or handing over")
        for n, qty in quantities(reply):
            if n in asked_numbers:
                continue
            if n not in facts.numbers or (qty != n and not facts.has(qty) and not contains(asked, qty, normalised=True)):
                return Verdict(False, f"invented quantity {qty!r}")
            if n in facts.prices:
                return Verdict(False, f"claims a catalog price {n!r}")
        for s in q.forbid:
            if contains(t, s, normalised=True) and not contains(asked, s, normalised=True):
                return Verdict(False, f"says {s!r}")
        return Verdict(True, "")
    exp = q.expect or {}
    for item in exp.get("all", []):
        alts = item if isinstance(item, list) else [item]
        if not any(contains(t, a, normalised=True) for a in alts):
            return Verdict(False, f"missing {alts[0]!r}" + (f" (or {alts[1:]})" if len(alts) > 1 else ""))
    if "any" in exp and not any(contains(t, a, normalised=True) for a in exp["any"]):
        return Verdict(False, f"none of {exp['any']!r}")
    for s in exp.get("none", []):
        if contains(t, s, normalised=True):
            return Verdict(False, f"says {s!r}, which is wrong here")
    stock = exp.get("stock")
    if stock is not None:
        out = _any_of(t, OUT_OF_STOCK)
        if stock == "out" and out is None:
            return Verdict(False, "does not say it is out of stock")
        if stock == "in":
            if out is not None:
                return Verdict(False, f"says {out!r} of an item in stock")
            if _any_of(t, IN_STOCK) is None:
                return Verdict(False, "does not say it is in stock")
    return Verdict(True, "")


def expected_facts(q: Question) -> list[list[str]]:
    """Each group of alternatives whose presence the row expects (for validating a row
    against its pack: at least one alternative of each group must be in the pack)."""
    exp = q.expect or {}
    groups = [item if isinstance(item, list) else [item] for item in exp.get("all", [])]
    if "any" in exp:
        groups.append(list(exp["any"]))
    return groups


def packs(root: str | Path = HELDOUT) -> list[Path]:
    """The held-out pack folders (each has shop.yaml and questions.jsonl)."""
    return sorted(p for p in Path(root).iterdir() if (p / "shop.yaml").exists() and (p / "questions.jsonl").exists())
