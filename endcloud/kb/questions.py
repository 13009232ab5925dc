"""The questions customers would ask of a shop pack, written from the pack's own content.

    qs = customer_questions(ShopPack.load("shop/"), n=300, seed=0)          # the shop's language(s)
    qs[0].turns, qs[0].kind, qs[0].expect, qs[0].heldout                      # ("Is the tent in stock?",), "stock", ("in stock",), False

`endcloud shop onboard` uses them when a shop brings no chat logs: the teacher answers each
one, the end model is fine-tuned on the answered ones and judged on the held-out share (a
reply is right when it states every fact in `expect`, compared as `scoring.fact_accuracy` does).

Nothing here knows a particular shop or domain: every question is made from what any pack
holds —

    catalog  price / stock / attribute questions naming the product loosely: the full name,
             a part of it that names no other product ("the tent", "浴巾"), the SKU, or a
             name-like column (an English name, an alias, a model number)
             2-turn follow-ups: a pronoun ("Is it in stock?") and a product switch ("And the …?")
    FAQ      each question as written and paraphrased: a word dropped, two words swapped,
             a light typo, a polite opener
    policies a section's heading as a topic ("What is your returns policy?") and each sentence
             that states a number, asked with that number as the blank ("Returns are accepted
             within how many days of delivery?")
    none     questions the pack cannot answer (a gift card, a store visit …), kept only when
             none of their words occur in the pack; a right reply says it does not know

— in the pack's language, plus English (or Chinese) where the catalog carries names in the
other one; `langs` forces the set. Templates are customer phrasings, not shop facts. The
same pack and seed give the same questions in the same order.
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from endcloud.kb.pack import LANGUAGES, Product, ShopPack
from endcloud.kb.search import paragraphs
from endcloud.text import CJK_IDEOGRAPHS, detect_lang

KINDS = ("price", "stock", "attribute", "pronoun", "switch", "faq", "faq-paraphrase", "policy-topic", "policy-fact",
         "unanswerable")
DEFAULT_HELDOUT = 0.2

# ---- customer phrasings (per language) --------------------------------------------------
_T: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "price": ("How much is the {name}?", "What's the price of the {name}?", "how much for {name}", "{name} price?",
                  "What does the {name} cost?"),
        "stock": ("Is the {name} in stock?", "Do you have the {name} available?", "is {name} still available?",
                  "Can I still buy the {name}?"),
        "attribute": ("What {attr} is the {name}?", "What's the {attr} of the {name}?", "{name} {attr}?",
                      "Tell me the {attr} of the {name}."),
        "it-price": ("How much is it?", "What does it cost?", "and the price?"),
        "it-stock": ("Is it in stock?", "Do you still have it?", "is it available?"),
        "it-attribute": ("What {attr} is it?", "And its {attr}?"),
        "switch": ("And the {name}?", "What about the {name}?", "how about {name}?"),
        "topic": ("What is your {topic} policy?", "Tell me about {topic}.", "Can you explain {topic}?",
                  "question about {topic}"),
        "polite": ("Hi, ", "Hello! ", "Quick question: "),
    },
    "zh": {
        "price": ("{name}多少钱？", "{name}什么价格？", "请问{name}多少钱", "{name}价格多少", "{name}卖多少钱？"),
        "stock": ("{name}有货吗？", "{name}还有库存吗？", "{name}现在能买吗？", "请问{name}有现货吗"),
        "attribute": ("{name}的{attr}是什么？", "{name}{attr}是啥？", "请问{name}是什么{attr}", "{name}的{attr}？"),
        "it-price": ("它多少钱？", "这个多少钱？", "价格呢？"),
        "it-stock": ("它有货吗？", "这个还有货吗？", "有现货吗？"),
        "it-attribute": ("它的{attr}是什么？", "{attr}呢？"),
        "switch": ("那{name}呢？", "{name}呢？", "换成{name}呢？"),
        "topic": ("{topic}是怎么规定的？", "说一下{topic}", "你们的{topic}是怎样的？", "问下{topic}"),
        "polite": ("亲，", "你好，", "请问"),
    },
}
# Things a shop's pack usually does not cover, with the words that would show it does.
_NONE: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "en": (
        ("Do you sell gift cards?", ("gift card",)), ("Can I pay with Bitcoin?", ("bitcoin", "crypto")),
        ("Do you have a physical store I can visit?", ("store address", "physical store", "visit us")),
        ("Is there a loyalty points program?", ("loyalty", "points")), ("Do you ship to Antarctica?", ("antarctica",)),
        ("Can I book a video call with the designer?", ("video call", "designer")),
        ("Do you offer installation at home?", ("installation", "install")),
        ("What is the name of your CEO?", ("ceo", "founder")), ("Do you sell telescopes?", ("telescope",)),
        ("Do you have car tyres?", ("tyre", "tire")), ("Can I rent this instead of buying it?", ("rent", "rental")),
    ),
    "zh": (
        ("你们有礼品卡吗？", ("礼品卡",)), ("可以用比特币付款吗？", ("比特币", "加密货币")), ("你们有实体店吗？", ("实体店", "门店")),
        ("有会员积分吗？", ("积分", "会员")), ("能寄到南极吗？", ("南极",)), ("可以和设计师视频通话吗？", ("设计师", "视频")),
        ("可以上门安装吗？", ("上门", "安装")), ("你们老板叫什么名字？", ("老板", "创始人")), ("卖不卖望远镜？", ("望远镜",)),
        ("有汽车轮胎吗？", ("轮胎",)), ("这个可以租吗？", ("租",)),
    ),
}
# Attribute columns a Chinese question names in Chinese (a shop's own Chinese headers pass through).
_ZH_ATTR = {"category": "类目", "material": "材质", "size": "尺寸", "colour": "颜色", "color": "颜色", "feature": "特点",
            "brand": "品牌", "weight": "重量", "origin": "产地"}
# Columns whose value is another name of the product (an English name, an alias, a model number).
_NAME_LIKE = re.compile(r"(?:^|[_\s\-])(?:name|title|alias|model)(?:$|[_\s\-])|^(?:name|title|alias|model)|英文名|别名|型号|品名|名称")
_SKIP_ATTR = re.compile(r"url|link|image|img|图片|链接|id$", re.IGNORECASE)
_MAX_ATTR_CHARS = 40
_EN_FILLER = ("the", "a", "do", "you", "please", "can", "is", "your")
_ZH_FILLER = ("请问", "一下", "吗", "呢", "的", "可以")
_ZH_TYPO = {"吗": "嘛", "的": "得", "在": "再", "那": "哪", "做": "作", "已": "以", "么": "莫"}
_EN_STOP = frozenset("the a an and or of for to in on at with by your our you we is are be it this that from as "
                     "if can will any all not no per".split())

# A number a policy states, with its unit: what a right reply repeats.
_FACT = {
    "en": re.compile(r"[$€£¥]\s?\d+(?:[.,]\d+)?|\d+(?:[.:]\d+)?\s?(?:%|am\b|pm\b|business days?\b|working days?\b|days?\b|"
                     r"hours?\b|weeks?\b|months?\b|years?\b|minutes?\b|percent\b)?"),
    "zh": re.compile(r"[¥￥$]?\d+(?:[.:：]\d+)?\s?(?:个工作日|工作日|个小时|小时|分钟|个月|天|元|块|件|%|折|点|周|年)?"),
}
_SENTENCE = {"en": re.compile(r"(?<=[.!?;])\s+"), "zh": re.compile(r"(?<=[。！？；])")}
_CJK = re.compile(f"[{CJK_IDEOGRAPHS}]")
_CJK_RUN = re.compile(f"[{CJK_IDEOGRAPHS}]+")
# Two or more capitalised words ("ZTO Express", "SF Express"): a name a reply must repeat.
_PROPER = re.compile(r"\b[A-Z][A-Za-z0-9]*(?:\s+[A-Z][A-Za-z0-9]*)+\b")


@dataclass(frozen=True)
class Question:
    """One customer conversation to ask: `turns` are the customer's messages (the teacher's
    replies go between them), `expect` the facts a right reply to the last one states (empty:
    not judged), `heldout` whether it is kept for evaluation and never trained on."""

    id: str
    turns: tuple[str, ...]
    kind: str
    expect: tuple[str, ...] = ()
    lang: str = "en"
    heldout: bool = False
    ref: str = ""  # the SKU, FAQ index or policy key the question is about
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def query(self) -> str:
        return self.turns[-1]

    def messages(self, answers: Sequence[str] = ()) -> list[dict[str, str]]:
        """The conversation as OpenAI messages: each earlier turn followed by its answer."""
        if len(answers) < len(self.turns) - 1:
            raise ValueError(f"question {self.id!r} has {len(self.turns)} turns and needs {len(self.turns) - 1} answers, "
                             f"got {len(answers)}")
        out: list[dict[str, str]] = []
        for i, t in enumerate(self.turns):
            out.append({"role": "user", "content": t})
            if i < len(self.turns) - 1:
                out.append({"role": "assistant", "content": answers[i]})
        return out

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "turns": list(self.turns), "kind": self.kind, "expect": list(self.expect),
                "lang": self.lang, "heldout": self.heldout, "ref": self.ref}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Question":
        return cls(id=str(d["id"]), turns=tuple(d["turns"]), kind=str(d["kind"]), expect=tuple(d.get("expect") or ()),
                   lang=str(d.get("lang", "en")), heldout=bool(d.get("heldout", False)), ref=str(d.get("ref", "")))


def customer_questions(pack: ShopPack, *, n: int, seed: int = 0, langs: Sequence[str] | None = None,
                       heldout_share: float = DEFAULT_HELDOUT) -> list[Question]:
    """Up to `n` questions over every kind the pack supports (balanced: kinds take turns),
    a `heldout_share` of each kind flagged held out. Deterministic in (pack, n, seed, langs)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n!r}")
    if not 0.0 <= heldout_share < 1.0:
        raise ValueError(f"heldout_share must be in [0, 1), got {heldout_share!r}")
    langs = list(langs) if langs else shop_languages(pack)
    bad = [x for x in langs if x not in LANGUAGES]
    if bad:
        raise ValueError(f"languages must be among {LANGUAGES}, got {bad!r}")
    rng = random.Random(f"questions:{seed}")
    by_kind: dict[str, list[Question]] = {k: [] for k in KINDS}
    seen: set[tuple[str, ...]] = set()
    for lang in langs:
        for q in _all_candidates(pack, lang, rng):
            key = tuple(_key(t) for t in q.turns)
            if key in seen or not all(t.strip() for t in q.turns):
                continue
            seen.add(key)
            by_kind[q.kind].append(q)
    for qs in by_kind.values():
        rng.shuffle(qs)
    chosen: dict[str, list[Question]] = {k: [] for k in KINDS}
    total = 0
    while total < n and any(len(chosen[k]) < len(by_kind[k]) for k in KINDS):
        for k in KINDS:
            if total < n and len(chosen[k]) < len(by_kind[k]):
                chosen[k].append(by_kind[k][len(chosen[k])])
                total += 1
    out: list[Question] = []
    for k in KINDS:
        qs = chosen[k]
        held = round(heldout_share * len(qs)) if len(qs) >= 3 else 0
        if heldout_share > 0 and len(qs) >= 3:
            held = max(1, held)
        out.extend(_with(q, heldout=j < held) for j, q in enumerate(qs))
    rng.shuffle(out)
    return out


def shop_languages(pack: ShopPack) -> list[str]:
    """The pack's language, plus the other one when the catalog names products in it too."""
    langs = [pack.language]
    other = "en" if pack.language == "zh" else "zh"
    alt = [v for p in pack.products for v in _name_attrs(p)]
    if alt and sum(detect_lang(v, default=pack.language) == other for v in alt) * 2 >= len(alt):
        langs.append(other)
    return langs


# ---- candidates -------------------------------------------------------------------------
def _all_candidates(pack: ShopPack, lang: str, rng: random.Random) -> Iterable[Question]:
    yield from _product_questions(pack, lang, rng)
    yield from _faq_questions(pack, lang, rng)
    yield from _policy_questions(pack, lang, rng)
    yield from _unanswerable(pack, lang)


def _product_questions(pack: ShopPack, lang: str, rng: random.Random) -> Iterable[Question]:
    t = _T[lang]
    products = pack.products
    names = {p.sku: loose_names(p, products, lang) for p in products}
    for i, p in enumerate(products):
        variants = names[p.sku]
        for j, name in enumerate(variants):
            yield _q(lang, "price", [_pick(t["price"], rng).format(name=name)], [p.price_text], p.sku)
            yield _q(lang, "stock", [_pick(t["stock"], rng).format(name=name)], [_stock_fact(p, lang)], p.sku)
        for k, (col, value) in enumerate(_attributes(p)):
            attr = _attr_word(col, lang)
            name = variants[k % len(variants)]
            yield _q(lang, "attribute", [_pick(t["attribute"], rng).format(name=name, attr=attr)], [value], p.sku)
        # 2-turn: the product named once, then a pronoun; and a switch to another product
        first = _pick(t["price"], rng).format(name=_pick(variants, rng))
        yield _q(lang, "pronoun", [first, _pick(t["it-stock"], rng)], [_stock_fact(p, lang)], p.sku)
        attrs = _attributes(p)
        if attrs:
            col, value = attrs[rng.randrange(len(attrs))]
            first = _pick(t["stock"], rng).format(name=_pick(variants, rng))
            yield _q(lang, "pronoun", [first, _pick(t["it-attribute"], rng).format(attr=_attr_word(col, lang))], [value], p.sku)
        else:
            first = _pick(t["stock"], rng).format(name=_pick(variants, rng))
            yield _q(lang, "pronoun", [first, _pick(t["it-price"], rng)], [p.price_text], p.sku)
        if len(products) > 1:
            other = products[(i + 1 + rng.randrange(len(products) - 1)) % len(products)]
            first = _pick(t["price"], rng).format(name=_pick(variants, rng))
            then = _pick(t["switch"], rng).format(name=_pick(names[other.sku], rng))
            yield _q(lang, "switch", [first, then], [other.price_text], other.sku)


def loose_names(p: Product, products: Sequence[Product], lang: str) -> list[str]:
    """Ways a customer names `p`: its name, parts of it that name no other product, name-like
    columns, its SKU; names in `lang` first, at most four before the SKU."""
    others = [_flat(q.name) for q in products if q.sku != p.sku]
    others += [_flat(v) for q in products if q.sku != p.sku for v in _name_attrs(q)]
    vocab = _pack_words(products)

    def unique(part: str) -> bool:
        f = _flat(part)
        return bool(f) and not any(f in o for o in others)

    cands: list[str] = [p.name]
    for name in [p.name, *_name_attrs(p)]:
        cands += [part for part in _name_parts(name, vocab) if unique(part)]
    cands += _name_attrs(p)
    cands = list(dict.fromkeys(cands))
    in_lang = [x for x in cands if detect_lang(x, default=lang) == lang]
    # a customer writing Chinese names the product in Chinese when the shop gives it a Chinese
    # name, and the other name only when that is all there is
    ordered = in_lang if len(in_lang) >= 2 else in_lang + [x for x in cands if x not in in_lang]
    return [*ordered[:4], p.sku]


def _name_parts(name: str, vocab: frozenset[str] = frozenset()) -> list[str]:
    """Shorter names inside `name`, ending where it ends (the head noun comes last in both
    languages): its trailing words ("Face Towel", "Towel"); for Chinese, which has no spaces,
    the tails that start where a word the catalog uses elsewhere starts or ends ("纯棉" in
    "纯棉方巾" gives "方巾"; a shared "四件套" gives "纯棉四件套")."""
    name = name.strip()
    if _CJK.search(name):
        flat = re.sub(r"\s+", "", name)
        cuts: set[int] = set()
        for w in vocab:
            for m in re.finditer(re.escape(w), flat):
                cuts.update((m.start(), m.end()))
        return [flat[c:] for c in sorted(cuts) if 0 < c <= len(flat) - 2]
    words = name.split()
    parts = [" ".join(words[k:]) for k in range(1, len(words))]
    return [x for x in parts if (len(x) >= 4 or " " in x) and x.lower() not in _EN_STOP and not x.isdigit()]


def _pack_words(products: Sequence[Product]) -> frozenset[str]:
    """Chinese words the catalog itself uses: attribute values, and the endings that two or
    more product names share (their head nouns)."""
    words: set[str] = set()
    for p in products:
        for v in p.attrs.values():
            words.update(run for run in _CJK_RUN.findall(v) if 2 <= len(run) <= 6)
    names = [re.sub(r"\s+", "", p.name) for p in products if _CJK.search(p.name)]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            k = 0
            while k < min(len(a), len(b)) and a[-1 - k] == b[-1 - k]:
                k += 1
            if 2 <= k < min(len(a), len(b)):
                words.add(a[-k:])
    return frozenset(words)


def _name_attrs(p: Product) -> list[str]:
    return [v for k, v in p.attrs.items() if _NAME_LIKE.search(k.lower()) and v.strip()]


def _attributes(p: Product) -> list[tuple[str, str]]:
    return [(k, v) for k, v in p.attrs.items()
            if v.strip() and len(v) <= _MAX_ATTR_CHARS and not _NAME_LIKE.search(k.lower()) and not _SKIP_ATTR.search(k)]


def _attr_word(col: str, lang: str) -> str:
    c = col.strip().replace("_", " ")
    if lang == "zh":
        return _ZH_ATTR.get(c.lower(), c)
    return c.lower() if c.isascii() else c


def _stock_fact(p: Product, lang: str) -> str:
    if lang == "zh":
        return "有货" if p.in_stock else "缺货"
    return "in stock" if p.in_stock else "out of stock"


def _faq_questions(pack: ShopPack, lang: str, rng: random.Random) -> Iterable[Question]:
    for i, (q, a) in enumerate(pack.faq):
        if detect_lang(q, default=pack.language) != lang:
            continue
        facts = key_facts(a, lang, avoid=q)
        yield _q(lang, "faq", [q], facts, f"faq:{i}")
        for op in _PARAPHRASE[lang]:
            para = op(q, rng)
            if para and _key(para) != _key(q):
                yield _q(lang, "faq-paraphrase", [para], facts, f"faq:{i}")


def _policy_questions(pack: ShopPack, lang: str, rng: random.Random) -> Iterable[Question]:
    t = _T[lang]
    for key, body in pack.policies.items():
        title = pack.policy_titles.get(key, key)
        if detect_lang(title + body[:200], default=pack.language) != lang:
            continue
        topic = title if lang == "zh" else title.lower()
        for tpl in rng.sample(t["topic"], 2):
            yield _q(lang, "policy-topic", [tpl.format(topic=topic)], [], f"policy:{key}")
        for para in paragraphs(body):
            for sent in _sentences(para, lang):
                q = cloze(sent, lang)
                if q is not None:
                    question, fact = q
                    yield _q(lang, "policy-fact", [question], [fact], f"policy:{key}")


def _unanswerable(pack: ShopPack, lang: str) -> Iterable[Question]:
    known = _flat(pack.knowledge_text() + " " + " ".join(pack.policy_titles.values()))
    for text, words in _NONE[lang]:
        if not any(_flat(w) in known for w in words):
            yield _q(lang, "unanswerable", [text], [], "none")


# ---- facts ------------------------------------------------------------------------------
def key_facts(text: str, lang: str, *, avoid: str = "", limit: int = 2) -> list[str]:
    """What a reply repeating `text` must state: its numbers with their units ("30 days",
    "$12", "15:00"), else a name in capitals ("ZTO Express") that `avoid` (the question)
    does not already hold; [] when nothing checkable stands out (the question is then asked
    and trained on, but not judged)."""
    facts: list[str] = []
    for m in _FACT[lang].finditer(text):
        f = m.group().strip()
        if f and f not in facts and any(ch.isdigit() for ch in f):
            facts.append(f)
    if facts:
        return facts[:limit]
    avoid_f = _flat(avoid)
    names = [m.group() for m in _PROPER.finditer(text) if _flat(m.group()) not in avoid_f]
    return names[:1]


def cloze(sentence: str, lang: str) -> tuple[str, str] | None:
    """(question, fact): the sentence's first number asked for ("… within how many days …?")."""
    s = sentence.strip()
    if not s or len(s) > (90 if lang == "zh" else 160):
        return None
    m = next((m for m in _FACT[lang].finditer(s) if any(ch.isdigit() for ch in m.group())), None)
    if m is None:
        return None
    fact = m.group().strip()
    end = m.start() + len(m.group().rstrip())
    if _flat(fact) in _flat(s[end:]):
        return None  # the sentence states it twice: the question would hold its own answer
    q = (s[: m.start()] + _wh(fact, lang) + s[end:]).strip()
    q = q.rstrip("。！？；.!?;，, ")
    if lang == "en":
        q = q[:1].upper() + q[1:] + "?"
    else:
        q += "？"
    return q, fact


def _wh(fact: str, lang: str) -> str:
    f = fact.lower()
    if lang == "zh":
        if f[:1] in "¥￥$" or f.endswith(("元", "块")):
            return "多少钱"
        if ":" in f or "：" in f or f.endswith("点"):
            return "几点"
        if f.endswith("%") or f.endswith("折"):
            return "多少" + f[-1]
        unit = re.sub(r"^[¥￥$]?[\d.:：]+\s?", "", f)
        return ("几" + unit) if unit else "多少"
    if f[:1] in "$€£¥":
        return "how much"
    if ":" in f or f.endswith(("am", "pm")):
        return "what time"
    unit = re.sub(r"^[\d.,:]+\s?", "", f)
    if unit in ("%", "percent"):
        return "what percent"
    return f"how many {unit}" if unit else "how many"


def _sentences(para: str, lang: str) -> list[str]:
    return [s for s in _SENTENCE[lang].split(para) if s.strip()]


# ---- paraphrases ------------------------------------------------------------------------
def _en_drop(q: str, rng: random.Random) -> str | None:
    words = q.split()
    idx = [i for i, w in enumerate(words) if w.lower().strip("?,.!") in _EN_FILLER]
    if not idx or len(words) < 3:
        return None
    i = idx[rng.randrange(len(idx))]
    out = words[:i] + words[i + 1:]
    return " ".join(out)


def _en_swap(q: str, rng: random.Random) -> str | None:
    words = q.rstrip("?.!").split()
    if len(words) < 3:
        return None
    i = rng.randrange(len(words) - 1)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words).lower() + "?"


def _en_typo(q: str, rng: random.Random) -> str | None:
    words = q.split()
    idx = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not idx:
        return None
    i = idx[rng.randrange(len(idx))]
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def _en_polite(q: str, rng: random.Random) -> str | None:
    return _pick(_T["en"]["polite"], rng) + q[:1].lower() + q[1:]


def _zh_drop(q: str, rng: random.Random) -> str | None:
    hits = [w for w in _ZH_FILLER if w in q]
    if not hits:
        return None
    w = hits[rng.randrange(len(hits))]
    return q.replace(w, "", 1) or None


def _zh_swap(q: str, rng: random.Random) -> str | None:
    parts = [p for p in re.split(r"[，,]", q.rstrip("？?。")) if p]
    if len(parts) >= 2:
        return "，".join(parts[1:] + parts[:1]) + "？"
    return None


def _zh_typo(q: str, rng: random.Random) -> str | None:
    hits = [(i, ch) for i, ch in enumerate(q) if ch in _ZH_TYPO]
    if not hits:
        return None
    i, ch = hits[rng.randrange(len(hits))]
    return q[:i] + _ZH_TYPO[ch] + q[i + 1:]


def _zh_polite(q: str, rng: random.Random) -> str | None:
    return _pick(_T["zh"]["polite"], rng) + q.rstrip("？?") if not q.startswith(("亲", "你好", "请问")) else None


_PARAPHRASE = {"en": (_en_drop, _en_swap, _en_typo, _en_polite), "zh": (_zh_drop, _zh_swap, _zh_typo, _zh_polite)}


# ---- helpers ----------------------------------------------------------------------------
def _pick(options: Sequence[str], rng: random.Random) -> str:
    return options[rng.randrange(len(options))]


def _flat(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).lower())


def _key(text: str) -> str:
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text).lower())


def _q(lang: str, kind: str, turns: list[str], expect: Sequence[str], ref: str) -> Question:
    digest = hashlib.sha1(("\x1f".join([lang, kind, *turns])).encode("utf-8")).hexdigest()[:12]
    return Question(id=f"{kind}-{digest}", turns=tuple(turns), kind=kind, expect=tuple(expect), lang=lang, ref=ref)


def _with(q: Question, **changes: Any) -> Question:
    from dataclasses import replace

    return replace(q, **changes)


__all__ = ["DEFAULT_HELDOUT", "KINDS", "Question", "cloze", "customer_questions", "key_facts", "loose_names",
           "shop_languages"]
