"""Many random shops, each a valid shop pack with customer questions and the facts that answer
them: training data for a "shop reader" end model that must answer from the knowledge snippets
in its prompt, on any shop, instead of memorising one.

    from endcloud.corpus.shopworld.varied import random_pack, random_packs
    shop = random_pack("packs/one", seed=7, lang="zh")      # -> VariedShop; shop.questions
    shops = random_packs("packs/", n=1000, seed=0)          # zh, en, zh, en, ...

Each pack draws its domain (20, none of the held-out tea / cosmetics / phone-accessory
domains), catalog columns and their header wording, product names composed from invented
brands (Chinese brands from the 3,755 GB2312 level-1 characters, so a corpus of shops shows a
model most common characters), prices, stock, 4-8 policy sections with headings and sentences
in many wordings, 4-10 FAQ pairs, a few orders, and `questions.jsonl`:

    {"turns": ["它有货吗？"...], "kind": "stock", "expect": ["23"], "ref": "PT-2031"}

`kind` is one of KINDS; `expect` holds the strings a right answer states (for a sold-out
product "缺货" / "out of stock", the one fact not copied from the pack; greetings, thanks and
unknowns expect nothing); `ref` is the product sku, the policy heading, the FAQ index (0-based)
or the order id the answer comes from, or None. Everything is drawn from RNGs seeded from
(lang, seed), so the same arguments write the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Any, Sequence

import yaml

from endcloud.corpus.shopworld.varied_lexicon import (
    ASK, ATTRS, COMMON_HANZI, DEFAULT_SPECS, DOMAIN_KEYS, DOMAINS, EN_CODAS, EN_FIRST, EN_INVOICES, EN_LAST, EN_ONSETS,
    EN_ORIGINS, EN_REGIONS, EN_STATUSES, EN_STREET_SUFFIX, EN_VOWELS, EN_WORDS, FACTS, GROUPS, HELD_OUT_MARKERS, PER_CNY,
    REGIONS, UNKNOWABLE_ATTRS, ZH_BRAND_CHARS, ZH_CITIES, ZH_DISTRICT_SUFFIX, ZH_INVOICES, ZH_ORIGINS, ZH_ROAD_SUFFIX,
    ZH_SLIPS, ZH_STATUSES, ZH_SURNAMES, Multi, Num, Pick, Special,
)
from endcloud.corpus.shopworld.world import pick
from endcloud.errors import ConfigError
from endcloud.kb.pack import LANGUAGES, format_number

KINDS = ("price", "stock", "attr", "product", "policy", "faq", "order", "greeting", "thanks", "unknown")
# How often each kind is asked; every kind a pack can answer is asked at least once.
KIND_WEIGHTS = {"price": 6, "stock": 5, "attr": 7, "product": 4, "policy": 9, "faq": 4, "order": 3, "greeting": 1, "thanks": 1, "unknown": 5}
QUESTIONS = 40
PACK_FILES = ("shop.yaml", "catalog.csv", "faq.jsonl", "policies.md", "orders.csv", "questions.jsonl")
OUT_OF_STOCK = {"zh": "缺货", "en": "out of stock"}
# A missing fact is a fair 'unknown' only if nothing near it is in the pack either
# ("买多能便宜吗" is half answered by a coupon): its policy group plus these neighbours.
_NEIGHBOURS = {"bulk": ("coupon", "new_amt", "points", "protect_days"), "coupon": ("bulk",), "new_amt": ("bulk",),
               "warranty": ("damage_hours",), "repair_days": ("damage_hours",), "damage_hours": ("warranty", "repair_days")}
_GROUP_OF = {f: g for g, spec in GROUPS.items() for f in spec["facts"]}
_REQUIRED_HEADERS = {
    "zh": {"sku": ("sku", "SKU", "商品编号", "货号", "商品ID"), "name": ("name", "商品名称", "品名", "名称"),
           "price": ("price", "价格", "售价", "单价"), "stock": ("stock", "库存", "库存数量")},
    "en": {"sku": ("sku", "SKU", "Sku"), "name": ("name", "Name", "NAME"), "price": ("price", "Price", "PRICE"), "stock": ("stock", "Stock", "STOCK")},
}
_EN_NAME_HEADERS = ("英文名", "英文名称", "English name", "en_name", "英文品名")
_ZH_VARIANTS = ("Pro", "Max", "mini", "升级款", "二代", "经典款", "豪华版", "标准版", "青春版", "旗舰款", "限定款", "礼盒装", "plus", "{L}{n}", "{n}代", "{n}号",
                "S{n}", "X{n}")
_EN_VARIANTS = ("Pro", "Max", "Mini", "Lite", "Plus", "II", "III", "{L}{n}", "Mk {n}", "Classic", "Deluxe", "Essential", "Signature", "2.0", "Gen {n}", "{L}{n}0")
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_EN_PUBLISHER = ("Press", "Books", "House", "Publishing", "& Sons", "Editions")
_ZH_PUBLISHER = ("出版社", "文艺出版社", "人民出版社", "书局", "少年儿童出版社", "科技出版社")
_EN_TOWN = ("ton", "ford", "bury", "field", "port", "ley", "wick", "mouth", "stead", "brook")


def _norm(text: str) -> str:
    """What matching compares: lower-case, no whitespace (the fact-comparison form, minus NFKC)."""
    return "".join(text.lower().split())


def _bare(text: str) -> str:
    """A question without case, spaces or punctuation: what "the same question" means."""
    return re.sub(r"[\s？?。！!，,.]", "", text.lower())


@dataclass
class VariedShop:
    """What `random_pack` wrote: the pack's headline facts and the customer questions for it."""

    out_dir: str
    seed: int
    lang: str
    domain: str
    name: str
    currency: str
    skus: list[str]
    columns: list[str]
    policy_headings: list[str]
    faq: int
    orders: list[str]
    questions: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Item:
    sku: str
    name: str
    en_name: str
    brand: str
    noun: str
    price: str
    stock: int
    cells: dict[str, str] = field(default_factory=dict)       # attribute key -> cell text
    facts: dict[str, list[str]] = field(default_factory=dict)  # attribute key -> what an answer states


@dataclass(slots=True)
class _Fact:
    key: str
    values: list[str]        # what a right answer states
    where: str               # "policy" or "faq"
    ref: str | int           # the heading or the FAQ index


class _Shop:
    """Draws one shop: catalog, policies, FAQ, orders, then the questions about them."""

    def __init__(self, lang: str, seed: int, invented_nouns: float = 0.0):
        self.lang, self.seed = lang, seed
        self.zh = lang == "zh"
        self.li = 0 if self.zh else 1
        self.rng = Random(f"varied:{lang}:{seed}")
        # Invented product nouns come from their own RNG, so a shop drawn with none is the
        # same shop as before the option existed.
        self.invented_nouns = invented_nouns
        self.noun_rng = Random(f"varied-nouns:{lang}:{seed}")
        self.ask = ASK[lang]
        self.domain = pick(self.rng, DOMAIN_KEYS)
        self.dom = DOMAINS[self.domain]
        self.region = "cn" if self.zh else pick(self.rng, EN_REGIONS)
        self.reg = REGIONS[self.region]
        self.currency = self.reg["currency"]
        self.brands = self._brand_pool()
        self.name = self._shop_name()
        self._catalog()
        self.slots, self.slot_values = self._slots()
        self._policies()
        self._faq()
        self._orders()

    # --- words --------------------------------------------------------------------------------
    def _hanzi(self, n: int) -> str:
        rng = self.rng
        return "".join(pick(rng, COMMON_HANZI) for _ in range(n))

    def _syllables(self, n: int) -> str:
        rng = self.rng
        # A coda mostly on the last syllable only: "Velora", "Kestan", not "Trayxthaick".
        word = "".join(pick(rng, EN_ONSETS) + pick(rng, EN_VOWELS) + (pick(rng, EN_CODAS) if i == n - 1 or rng.random() < 0.15 else "")
                       for i in range(n))
        return word[:1].upper() + word[1:]

    def _invented_noun(self) -> tuple[str, str]:
        """A (zh, en) product noun no lexicon holds ("绛朴", "vantor"), now and then with a
        spec in it ("20W", "500ml"): a model that has seen a word in no other shop can only
        state this product's name by copying it from the knowledge in its prompt."""
        rng = self.noun_rng
        zh = "".join(pick(rng, COMMON_HANZI) for _ in range(rng.randint(2, 3)))
        words = []
        for _ in range(1 if rng.random() < 0.7 else 2):
            n = rng.randint(1, 3)
            words.append("".join(pick(rng, EN_ONSETS) + pick(rng, EN_VOWELS) + (pick(rng, EN_CODAS) if i == n - 1 else "")
                                 for i in range(n)).lower())
        en = " ".join(words)
        if rng.random() < 0.3:
            spec = f"{pick(rng, (5, 10, 12, 20, 25, 30, 45, 65, 100, 250, 500, 1000, 5000, 10000, 20000))}" \
                   f"{pick(rng, ('W', 'mAh', 'ml', 'cm', 'mm', 'GB', 'g', 'V', 'L'))}"
            zh, en = spec + zh, f"{spec} {en}"
        return zh, en

    def _en_brand(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.7:
            return self._syllables(2 + (rng.random() < 0.3))
        if r < 0.9:
            return pick(rng, EN_WORDS) + pick(rng, EN_WORDS).lower()
        return pick(rng, EN_WORDS) + self._syllables(1).lower()

    def _zh_brand(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.55:
            return self._hanzi(2)
        if r < 0.75:
            a, b = pick(rng, ZH_BRAND_CHARS), self._hanzi(1)
            return a + b if rng.random() < 0.5 else b + a
        if r < 0.87:
            return self._hanzi(3)
        if r < 0.93:
            return pick(rng, ZH_BRAND_CHARS) + pick(rng, ZH_BRAND_CHARS)
        return self._en_brand()  # Chinese shops sell Latin-named brands too

    def _brand(self) -> str:
        for _ in range(20):
            b = self._zh_brand() if self.zh else self._en_brand()
            if clean(b):
                return b
        return "云木" if self.zh else "Northwren"

    def _brand_pool(self) -> list[str]:
        # One house brand, or a few brands: many products with fresh brands widen the inventory.
        k = 1 if self.rng.random() < 0.3 else self.rng.randint(2, 8)
        out: list[str] = []
        while len(out) < k:
            b = self._brand()
            if b not in out:
                out.append(b)
        return out

    def _shop_name(self) -> str:
        rng, dom = self.rng, self.dom
        brand = self.brands[0] if rng.random() < 0.6 else self._brand()
        if self.zh:
            suffix = pick(rng, dom["zh_shop"]) if rng.random() < 0.8 else pick(rng, ("旗舰店", "专营店", "官方店", "小铺", "生活馆", "工作室"))
            return brand + suffix
        suffix = pick(rng, dom["en_shop"]) if rng.random() < 0.8 else pick(rng, ("Store", "Shop", "Outlet", "& Co.", "Supply", "Goods"))
        return f"{brand} {suffix}"

    def _person(self) -> str:
        rng = self.rng
        if self.zh:
            return pick(rng, ZH_SURNAMES) + self._hanzi(1 + (rng.random() < 0.6))
        return f"{pick(rng, EN_FIRST)} {pick(rng, EN_LAST)}"

    def _variant(self, zh: bool) -> str:
        rng = self.rng
        v = pick(rng, _ZH_VARIANTS if zh else _EN_VARIANTS)
        return v.format(L=pick(rng, _LETTERS), n=rng.randint(1, 9))

    # --- catalog ------------------------------------------------------------------------------
    def _catalog(self) -> None:
        rng, dom = self.rng, self.dom
        attr_keys = [k for k in dom["attrs"]]
        k = min(len(attr_keys), rng.randint(2, 6))
        self.attr_keys = rng.sample(attr_keys, k)
        self.with_en = self.zh and not dom.get("titled") and rng.random() < 0.35
        self.headers = self._headers()
        self.sku_style = rng.randrange(6)
        self.price_style = rng.randrange(5)
        self.price_mark = rng.random() < 0.15
        self.cell_sep = pick(rng, ("/", "、", "，")) if self.zh else pick(rng, (", ", "/", " / "))
        n = rng.randint(5, 24)
        self.items: list[_Item] = []
        names: list[str] = []
        en_names: list[str] = []
        skus: list[str] = []
        tries = 0
        while len(self.items) < n and tries < n * 6:
            tries += 1
            noun_pair = pick(rng, dom["nouns"])
            if self.invented_nouns and self.noun_rng.random() < self.invented_nouns:
                noun_pair = self._invented_noun()
            brand = pick(rng, self.brands)
            name, en_name = self._product_name(brand, noun_pair)
            if name in names or (en_name and en_name in en_names) or not clean(name) or not clean(en_name):
                continue
            sku = self._sku()
            if sku in skus:
                continue
            item = _Item(sku=sku, name=name, en_name=en_name, brand=brand, noun=noun_pair[self.li], price=self._price(), stock=self._stock())
            for key in self.attr_keys:
                item.cells[key], item.facts[key] = self._value(key, item)
            names.append(name)
            en_names.append(en_name)
            skus.append(sku)
            self.items.append(item)

    def _headers(self) -> dict[str, str]:
        rng = self.rng
        lang = "zh" if self.zh and rng.random() < 0.5 else "en"
        heads = {c: pick(rng, opts) for c, opts in _REQUIRED_HEADERS[lang].items()}
        seen = {_norm(h) for h in heads.values()} | {"sku", "name", "price", "stock", "order_id"}
        if self.with_en:
            heads["en_name"] = pick(rng, _EN_NAME_HEADERS)
            seen.add(_norm(heads["en_name"]))
        for key in self.attr_keys:
            options = ATTRS[key]["zh_h" if self.zh else "en_h"]
            # Two columns never share a header (the loader refuses that): the first free wording.
            h = next((o for o in (pick(rng, options), *options) if _norm(o) not in seen), f"{options[0]} 2")
            if not self.zh and rng.random() < 0.4:
                h = h[:1].upper() + h[1:]
            seen.add(_norm(h))
            heads[key] = h
        return heads

    def _product_name(self, brand: str, noun: tuple[str, str]) -> tuple[str, str]:
        rng, dom = self.rng, self.dom
        mods = dom["mods"]
        chosen = rng.sample(mods, min(len(mods), int(rng.random() * 3)))
        variant = self._variant(True) if rng.random() < 0.45 else ""
        if dom.get("titled"):
            return self._book_title(noun, chosen), ""
        if self.zh:
            sep = " " if rng.random() < 0.25 else ""
            series = self._hanzi(2) + "系列" if rng.random() < 0.12 else ""
            name = brand + sep + series + "".join(m[0] for m in chosen) + noun[0] + ((" " if rng.random() < 0.5 else "") + variant if variant else "")
            en_name = ""
            if self.with_en:
                en_brand = brand if brand.isascii() else self._en_brand()
                en_variant = variant if variant.isascii() else self._variant(False) if rng.random() < 0.5 else ""
                en_name = " ".join(x for x in (en_brand, *(m[1] for m in chosen), _title(noun[1]), en_variant) if x)
            return name.strip(), en_name
        variant = self._variant(False) if rng.random() < 0.45 else ""
        return " ".join(x for x in (brand, *(m[1] for m in chosen), _title(noun[1]), variant) if x), ""

    def _book_title(self, noun: tuple[str, str], mods: list[tuple[str, str]]) -> str:
        rng = self.rng
        if self.zh:
            r = rng.random()
            title = (self._hanzi(rng.randint(2, 5)) if r < 0.6 else
                     f"{self._hanzi(2)}的{self._hanzi(2)}" if r < 0.8 else f"{self._hanzi(2)}与{self._hanzi(2)}")
            tail = "".join(m[0] for m in mods[:1]) + (noun[0] if rng.random() < 0.7 else "")
            return f"《{title}》{tail}"
        r = rng.random()
        title = (f"The {pick(rng, EN_WORDS)} {pick(rng, EN_WORDS)}" if r < 0.4 else
                 f"{self._syllables(2)} and the {pick(rng, EN_WORDS)}" if r < 0.7 else f"{pick(rng, EN_WORDS)} of {self._syllables(2)}")
        tail = f": {noun[1]}" if rng.random() < 0.7 else ""
        return title + tail + (f" ({mods[0][1]})" if mods else "")

    def _sku(self) -> str:
        rng = self.rng
        n = rng.randrange(10**6)
        style = self.sku_style
        if style == 0:
            return f"{pick(rng, _LETTERS)}{pick(rng, _LETTERS)}-{n % 10000:04d}"
        if style == 1:
            return str(rng.randrange(10**11, 10**12))
        if style == 2:
            return f"SKU{n % 100000:05d}"
        if style == 3:
            return f"{pick(rng, _LETTERS)}{n:06d}"
        if style == 4:
            return f"{pick(rng, _LETTERS)}{pick(rng, _LETTERS)}{n % 1000:03d}{pick(rng, _LETTERS)}"
        return f"{rng.randrange(10**7, 10**8)}"

    def _price(self) -> str:
        rng = self.rng
        lo, hi = self.dom["price"]
        rate = PER_CNY[self.currency]
        p = math.exp(rng.uniform(math.log(lo * rate), math.log(hi * rate)))
        style = self.price_style
        if style == 0:
            v = max(1, round(p))
        elif style == 1:  # 39, 129, 1299
            v = max(9, round(p / 10) * 10 - 1) if p > 15 else max(1, round(p))
        elif style == 2:  # 39.9
            v = math.floor(p) + 0.9
        elif style == 3:  # 12.99
            v = math.floor(p) + 0.99
        else:  # 12.5, 8.45: any cents
            v = round(max(0.1, p), 2 if rng.random() < 0.5 else 1)
        return format_number(v)

    def _stock(self) -> int:
        rng = self.rng
        return 0 if rng.random() < 0.15 else int(math.exp(rng.uniform(0, math.log(2000))))

    def _value(self, key: str, item: _Item) -> tuple[str, list[str]]:
        spec = self.dom["attrs"][key] or DEFAULT_SPECS[key]
        rng, li = self.rng, self.li
        if isinstance(spec, Pick):
            v = pick(rng, spec.options)[li]
            return v, [v]
        if isinstance(spec, Multi):
            vs = [o[li] for o in rng.sample(spec.options, rng.randint(1, spec.most))]
            return self.cell_sep.join(vs), vs
        if isinstance(spec, Num):
            nums = sorted((lo + step * rng.randint(0, int(round((hi - lo) / step))) for lo, hi, step in spec.spans), reverse=True)
            nums = [format_number(x) for x in nums]  # largest first: 120x60x45cm
            v = (spec.zh if self.zh else spec.en).format(*nums)
            return v, [v]
        if isinstance(spec, Special):
            v = self._special(spec.name, item)
            return v, [v]
        raise TypeError(f"unknown value spec {spec!r} for {key!r}")

    def _special(self, name: str, item: _Item) -> str:
        rng = self.rng
        if name == "brand":
            return item.brand
        if name == "origin":
            return pick(rng, ZH_ORIGINS if self.zh else EN_ORIGINS)
        if name == "model":
            return f"{pick(rng, _LETTERS)}{pick(rng, _LETTERS)}-{rng.randint(10, 9999)}{pick(rng, ('', '', 'S', 'X', 'Pro'))}"
        if name == "author":
            return self._person()
        if name == "publisher":
            if self.zh:
                return self._hanzi(2) + pick(rng, _ZH_PUBLISHER)
            return f"{pick(rng, EN_WORDS)} {pick(rng, _EN_PUBLISHER)}"
        raise ValueError(f"unknown special value {name!r}")

    # --- facts, policies, FAQ, orders ---------------------------------------------------------
    def _money(self, lo: float, hi: float, cents: bool) -> str:
        rng = self.rng
        v = rng.uniform(lo, hi)
        return format_number(math.floor(v) + pick(rng, (0.99, 0.95, 0.5, 0.0))) if cents else str(max(1, round(v)))

    def _slots(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        rng, zh, reg = self.rng, self.zh, self.reg
        sep = "、" if zh else ", "
        courier = pick(rng, reg["couriers"])
        express = pick(rng, [e for e in reg["express"] if e != courier])
        h, m = rng.randint(11, 18), pick(rng, (0, 0, 30))
        h12 = h - 12 if h > 12 else h
        if zh:
            noon = "下午" if h > 12 else "中午" if h == 12 else "上午"
            cutoff = pick(rng, (f"{h}:{m:02d}", f"{h}点" + ("半" if m else ""), f"{noon}{h12}点" + ("半" if m else "")))
        else:
            ampm = "pm" if h >= 12 else "am"
            cutoff = pick(rng, (f"{h}:{m:02d}", f"{h12}{':30' if m else ''}{ampm}", f"{h12}{':30' if m else ''} {ampm.upper()}"))
        a = rng.randint(1, 4)
        b = a + rng.randint(1, 3)
        days = f"{a}-{b}" if rng.random() < 0.7 else str(a + 1)
        remote = rng.sample(reg["remote"], rng.randint(2, 3))
        intl = rng.sample(reg["intl"], rng.randint(2, 4))
        s0, s1 = pick(rng, (8, 9, 10)), pick(rng, (17, 18, 20, 21, 22, 23))
        half = pick(rng, ("00", "00", "30"))
        if zh or rng.random() < 0.4:
            hours = f"{s0}:{half}-{s1}:00"
        else:
            hours = f"{s0}{':30' if half == '30' else ''}am-{s1 - 12}pm"
        brand_slug = re.sub(r"[^a-z]", "", self._en_brand().lower())[:10] or "shop"
        if zh:
            phone = (f"400-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}" if rng.random() < 0.6
                     else f"0{rng.randint(10, 999)}-{rng.randint(2000_0000, 8999_9999)}")
            email = f"{pick(rng, ('kefu', 'service', 'help', 'shop', 'vip'))}{rng.randint(1, 999) if rng.random() < 0.3 else ''}@{brand_slug}.{pick(rng, ('com', 'cn', 'com.cn'))}"
        else:
            phone = pick(rng, (f"1-800-555-0{rng.randint(100, 199)}", f"0800 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                               f"({rng.randint(200, 989)}) 555-0{rng.randint(100, 199)}", f"1300 {rng.randint(100, 999)} {rng.randint(100, 999)}"))
            email = f"{pick(rng, ('hello', 'support', 'help', 'care', 'orders'))}@{brand_slug}.{pick(rng, ('com', 'co.uk', 'com.au', 'ca', 'eu', 'shop'))}"
        if zh:
            pickup = (f"{pick(rng, ZH_CITIES)}{self._hanzi(2)}{pick(rng, ZH_DISTRICT_SUFFIX)}{self._hanzi(2)}{pick(rng, ZH_ROAD_SUFFIX)}"
                      f"{rng.randint(1, 999)}号")
        else:
            pickup = f"{rng.randint(1, 400)} {pick(rng, EN_WORDS)} {pick(rng, EN_STREET_SUFFIX)}, {pick(rng, EN_WORDS)}{pick(rng, _EN_TOWN)}"
        if zh:
            thr = pick(rng, (59, 99, 128, 159, 199, 299, 399, 499, 999))
            amt = max(3, int(thr * rng.uniform(0.05, 0.2)))
        else:
            thr = pick(rng, (30, 40, 50, 75, 100, 150, 200))
            amt = pick(rng, [x for x in (3, 5, 10, 15, 20, 25) if x < thr / 2])
        s = {
            "cur": self.reg["cur"], "courier": courier, "express": express, "cutoff": cutoff,
            "dispatch": str(pick(rng, (12, 24, 48, 72))),
            "express_fee": str(pick(rng, (5, 8, 10, 12, 15, 20))) if zh else self._money(4, 25, True),
            "days": days, "remote": sep.join(remote), "remote_one": remote[0], "remote_days": str(b + rng.randint(1, 6)),
            "intl": sep.join(intl),
            "fee": str(pick(rng, (5, 6, 8, 10, 12, 15, 18))) if zh else self._money(2, 13, True),
            "free": str(pick(rng, (39, 49, 59, 68, 79, 88, 99, 128, 199))) if zh else str(pick(rng, (25, 35, 40, 50, 60, 75, 99))),
            "return_days": str(pick(rng, (7, 10, 14, 15, 30, 45, 60, 90))), "exchange_days": str(pick(rng, (7, 14, 15, 30))),
            "damage_hours": str(pick(rng, (24, 48, 72))), "refund_days": str(rng.randint(1, 10)), "cancel_hours": str(pick(rng, (2, 6, 12, 24))),
            "warranty": str(pick(rng, (3, 6, 12, 18, 24, 36))), "repair_days": str(rng.randint(3, 15)), "service_hours": hours,
            "phone": phone, "email": email,
            "invoice": pick(rng, ZH_INVOICES if zh else EN_INVOICES), "invoice_days": str(rng.randint(1, 7)),
            "thr": str(thr), "amt": str(amt),
            "new_amt": str(pick(rng, (3, 5, 8, 10, 15, 20))) if zh else str(pick(rng, (3, 5, 10))),
            "points": str(pick(rng, (10, 20, 50, 100, 200))), "addr_hours": str(pick(rng, (2, 4, 6, 12, 24))),
            "protect_days": str(pick(rng, (7, 15, 30))), "restock_days": str(rng.randint(3, 30)), "presale_days": str(rng.randint(5, 45)),
            "wrap_fee": str(pick(rng, (2, 3, 5, 8, 10, 15, 20))) if zh else self._money(2, 8, True), "pickup": pickup,
            "bulk_n": str(pick(rng, (3, 5, 10, 20, 50))),
            "bulk_off": pick(rng, ("9折", "8.5折", "8折", "95折", "88折")) if zh else pick(rng, ("5%", "10%", "15%", "20%")),
            "assembly_fee": str(pick(rng, (30, 50, 80, 99, 100, 150, 199))) if zh else self._money(15, 80, False),
        }
        values = {k: [v] for k, v in s.items()}
        values["intl"] = intl  # an answer names each country
        return s, values

    def _eligible(self) -> list[str]:
        dom = self.dom
        out = []
        for key, spec in FACTS.items():
            if spec.get("durable") and not dom["durable"]:
                continue
            if spec.get("assembly") and not dom["assembly"]:
                continue
            if key == "warranty" and "warranty" in self.attr_keys:
                continue  # the catalog's warranty column would contradict a shop-wide one
            out.append(key)
        return out

    def _fill(self, template: str) -> str:
        return template.format_map(self.slots)

    def _policies(self) -> None:
        rng, lang = self.rng, self.lang
        self.eligible = self._eligible()
        groups = [g for g, spec in GROUPS.items() if any(f in self.eligible for f in spec["facts"])]
        chosen = rng.sample(groups, rng.randint(4, min(8, len(groups))))
        if rng.random() < 0.5:
            chosen.sort(key=list(GROUPS).index)  # many shops keep the usual order
        self.facts: dict[str, _Fact] = {}
        self.sections: list[tuple[str, str, list[str]]] = []  # (group, heading, sentences)
        for g in chosen:
            facts = [f for f in GROUPS[g]["facts"] if f in self.eligible]
            picked = rng.sample(facts, rng.randint(1, min(4, len(facts))))
            heading = pick(rng, GROUPS[g][lang])
            sentences = [self._fill(pick(rng, FACTS[f][lang]["state"])) for f in picked]
            self.sections.append((g, heading, sentences))
            for f in picked:
                self.facts[f] = _Fact(f, self._expect(f), "policy", heading)
        self.key_comments = rng.random() < 0.5
        self.policy_style = rng.randrange(4)

    def _expect(self, fact: str) -> list[str]:
        return [v for slot in FACTS[fact]["slots"] for v in self.slot_values[slot]]

    def _faq(self) -> None:
        rng, lang = self.rng, self.lang
        n = rng.randint(4, 10)
        in_policy = list(self.facts)
        others = [f for f in self.eligible if f not in self.facts]
        n_only = min(len(others), rng.randint(max(1, n // 3), n))
        chosen = rng.sample(others, n_only) + rng.sample(in_policy, min(len(in_policy), n - n_only))
        rng.shuffle(chosen)
        self.faq: list[tuple[str, str]] = []
        for i, f in enumerate(chosen):
            spec = FACTS[f][lang]
            self.faq.append((self._fill(pick(rng, spec["faq_q"])), self._fill(pick(rng, spec["faq_a"]))))
            if f not in self.facts:
                self.facts[f] = _Fact(f, self._expect(f), "faq", i)

    def order_id(self, style: int) -> str:
        rng = self.rng
        if style == 0:
            return str(rng.randrange(10**17, 10**18)) if self.zh else f"{rng.randrange(100, 1000)}-{rng.randrange(10**6, 10**7)}-{rng.randrange(10**6, 10**7)}"
        if style == 1:
            return f"{'DD' if self.zh else 'ORD-'}{rng.randrange(10**9, 10**10)}"
        if style == 2:
            return f"W{rng.randrange(10**8, 10**9)}"
        return str(rng.randrange(10**7, 10**8))

    def _tracking(self, courier: str) -> str:
        rng = self.rng
        if courier.startswith("顺丰") or courier.startswith("SF"):
            return "SF" + str(rng.randrange(10**12, 10**13))
        if courier.startswith("UPS"):
            return "1Z" + "".join(pick(rng, "0123456789ABCDEFGHJKLMNPRSTUVWXY") for _ in range(16))
        if "EMS" in courier or "邮政" in courier:
            return "E" + str(rng.randrange(10**8, 10**9)) + "CN"
        return str(rng.randrange(10**11, 10**15))

    def _orders(self) -> None:
        rng = self.rng
        stages = ZH_STATUSES if self.zh else EN_STATUSES
        words = [pick(rng, s) for s in stages]  # one wording per stage for this shop
        style = rng.randrange(4)
        self.order_style = style
        self.orders: list[dict[str, str]] = []
        seen: list[str] = []
        for _ in range(rng.randint(2, 8)):
            oid = self.order_id(style)
            if oid in seen:
                continue
            seen.append(oid)
            stage = rng.randrange(len(stages))
            shipped = stage > 0
            courier = self.slots["express"] if rng.random() < 0.15 else self.slots["courier"]
            item = pick(rng, self.items)
            self.orders.append({
                "order_id": oid, "sku": item.sku, "status": words[stage], "courier": courier if shipped else "",
                "tracking_no": self._tracking(courier) if shipped else "",
                "ship_date": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}" if shipped else "",
                "eta_days": "0" if stage == len(stages) - 1 else str(rng.randint(1, 5)),
            })

    # --- writing ------------------------------------------------------------------------------
    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "language": self.lang, "currency": self.currency,
                "generator": "endcloud.corpus.shopworld.varied", "seed": self.seed, "domain": self.domain}
        _write(out / "shop.yaml", yaml.safe_dump(meta, allow_unicode=True, sort_keys=False))
        _write(out / "catalog.csv", self._catalog_csv())
        _write(out / "faq.jsonl", "".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n" for q, a in self.faq))
        _write(out / "policies.md", self._policies_md())
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = ("order_id", "sku", "status", "courier", "tracking_no", "ship_date", "eta_days")
        w.writerow(["订单号" if self.zh and self.order_style == 0 else "order_id", *cols[1:]])
        for row in self.orders:
            w.writerow([row[c] for c in cols])
        _write(out / "orders.csv", buf.getvalue())
        _write(out / "questions.jsonl", "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in self.questions))

    def _catalog_csv(self) -> str:
        rng = self.rng
        cols = ["sku", "name", *(["en_name"] if self.with_en else []), "price", "stock", *self.attr_keys]
        if rng.random() < 0.25:
            rng.shuffle(cols)
        mark = ("¥" if self.zh else {"USD": "$", "GBP": "£", "EUR": "€"}.get(self.currency, "")) if self.price_mark else ""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([self.headers[c] for c in cols])
        for it in self.items:
            row = {"sku": it.sku, "name": it.name, "en_name": it.en_name, "price": mark + it.price, "stock": str(it.stock), **it.cells}
            w.writerow([row[c] for c in cols])
        return buf.getvalue()

    def _policies_md(self) -> str:
        rng = self.rng
        r = rng.random()
        lines = []
        if r < 0.7:
            title = (pick(rng, (f"{self.name} 店铺政策", "购物须知", f"{self.name}服务说明", "店铺公告")) if self.zh
                     else pick(rng, (f"{self.name} policies", "Store policies", f"About {self.name}", "Shop information")))
            lines += [f"# {title}", ""]
        for g, heading, sentences in self.sections:
            lines.append(f"## {heading}")
            if self.key_comments:
                lines.append(f"<!-- key: {g} -->")
            lines.append("")
            style = self.policy_style
            if style == 0:
                lines.append(("" if self.zh else " ").join(sentences))
            elif style == 1:
                lines += [f"- {s}" for s in sentences]
            elif style == 2:
                lines += [f"{i}. {s}" for i, s in enumerate(sentences, 1)]
            else:
                for s in sentences:
                    lines += [s, ""]
                lines.pop()
            lines.append("")
        return "\n".join(lines)


def clean(text: str) -> bool:
    """True if `text` holds no word of a held-out test domain (a random brand could spell one)."""
    if any(m in text for m in HELD_OUT_MARKERS["zh"]):
        return False
    return not any(w in HELD_OUT_MARKERS["en"] for w in re.findall(r"[a-z]+", text.lower()))


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _title(noun: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in noun.split())


def _plural(noun: str) -> str:
    if noun.endswith("fe"):
        return noun[:-2] + "ves"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun if noun.endswith("s") else noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


class _Asker:
    """Customer questions about one shop, with the facts a right answer states."""

    def __init__(self, shop: _Shop):
        self.s = shop
        self.rng = shop.rng
        self.lang = shop.lang
        self.zh = shop.zh
        self.a = shop.ask
        self.items = shop.items
        self.policy_facts = [f for f in shop.facts.values() if f.where == "policy"]
        self.faq_facts = [f for f in shop.facts.values() if f.where == "faq"]
        self._names = [(_norm(it.name), _norm(it.en_name), _norm(it.sku)) for it in self.items]
        self._faq_questions = {_bare(q) for q, _ in shop.faq}

    # --- phrasing -----------------------------------------------------------------------------
    def _noisy(self, template: str) -> str:
        """A template as a hurried customer types it; placeholders are left intact."""
        rng = self.rng
        if self.zh:
            if rng.random() < 0.12:
                a, b = pick(rng, ZH_SLIPS)
                template = template.replace(a, b, 1)
            if rng.random() < 0.3:
                template = template.rstrip("？?。！!")
            elif rng.random() < 0.15 and not template.endswith(("？", "?")):
                template += pick(rng, ("？", "?", "呀", "啊"))
        else:
            if rng.random() < 0.1:
                template = _typo(rng, template)
            r = rng.random()
            if r < 0.3:
                template = template.rstrip("?.! ")
            elif r < 0.4:
                template = template.rstrip("?") + "??"
            if rng.random() < 0.4 and template[:1].isalpha():
                template = template[:1].upper() + template[1:]
        if rng.random() < 0.1:
            template = pick(rng, self.a["prefixes"]) + template
        return template

    def _say(self, template: str, **slots: str) -> str:
        return self._noisy(template).format(**{**self.s.slots, **slots})

    def _plain(self, key: str) -> str:
        """A greeting or thanks: no "hi, " put before it, no typos."""
        return pick(self.rng, self.a[key])

    def _unique(self, ref: str) -> bool:
        r = _norm(ref)
        return bool(r) and sum(r in n or (e and r in e) or r == k for n, e, k in self._names) == 1

    def _ref(self, item: _Item) -> str:
        """A loose name for the product that still picks it out in this shop."""
        rng = self.rng
        options: list[str] = []
        r = rng.random()
        if r < 0.3:
            return item.name
        name = item.name
        if item.brand and item.brand in name:
            options.append(name.replace(item.brand, "", 1).strip())
            options.append(item.brand + item.noun if self.zh else f"{item.brand} {_title(item.noun)}")
        options.append(item.noun if self.zh else item.noun.lower())
        if item.en_name:
            options += [item.en_name, item.en_name.lower()]
        if not self.zh:
            words = name.split()
            options += [name.lower(), " ".join(words[-2:]).lower(), " ".join(words[1:]).lower()]
        if name.startswith("《"):
            options.append(name[1:name.index("》")])  # a book by its bare title
        if self.zh and len(name) > 4:
            options.append(name[len(item.brand):] if name.startswith(item.brand) else name[-4:])
        options.append(item.sku)
        for _ in range(4):
            ref = pick(rng, options)
            if self._unique(ref):
                return ref
        return item.name


    # --- products -----------------------------------------------------------------------------
    def _facts_of(self, kind: str, item: _Item, attr: str | None) -> list[str]:
        if kind == "price":
            return [item.price]
        if kind == "stock":
            return [str(item.stock)] if item.stock > 0 else [OUT_OF_STOCK[self.lang]]
        return list(item.facts[attr])

    def _ask_about(self, kind: str, item: _Item, attr: str | None) -> str:
        template = pick(self.rng, ATTRS[attr][self.lang] if kind == "attr" else self.a[kind])
        ref = self._ref(item)
        if attr == "brand" and item.brand in ref:  # "what brand is the Vorin bed" answers itself
            ref = next((r for r in (self._ref(item) for _ in range(3)) if item.brand not in r), item.sku)
        return self._say(template, name=ref)

    def _ask_this(self, kind: str, attr: str | None) -> str | None:
        """The question with the product named by a pronoun ("它有货吗", "is it in stock");
        None where no English phrasing reads well with one ("any {name} left?")."""
        templates = ATTRS[attr][self.lang] if kind == "attr" else self.a[kind]
        if not self.zh:
            templates = [t.replace("the {name}", "{name}") for t in templates if "the {name}" in t]
        if not templates:
            return None
        return self._say(pick(self.rng, templates), name=pick(self.rng, self.a["pronouns"]))

    def _short(self, kind: str, attr: str | None) -> str:
        """The question about the product already under discussion: "多少钱？", "and the colour?"."""
        rng = self.rng
        this = self._ask_this(kind, attr) if rng.random() < 0.4 else None
        if this is not None:
            return this
        if kind == "attr":
            return self._say(pick(rng, self.a["attr_short"]), word=ATTRS[attr]["zh_w" if self.zh else "en_w"])
        return self._say(pick(rng, self.a[f"{kind}_short"]))

    def _other_item(self, item: _Item) -> _Item | None:
        others = [it for it in self.items if it is not item]
        return pick(self.rng, others) if others else None

    def product_question(self, kind: str) -> dict[str, Any]:
        rng = self.rng
        item = pick(rng, self.items)
        attr = pick(rng, self.s.attr_keys) if kind == "attr" else None
        r = rng.random()
        if r < 0.45:
            turns = [self._ask_about(kind, item, attr)]
        elif r < 0.55:
            first = item.sku if rng.random() < 0.6 else self._say(pick(rng, self.a["sku"]), sku=item.sku)
            turns = [first, self._short(kind, attr)]
        elif r < 0.75:
            k1 = pick(rng, [k for k in ("price", "stock", "attr", "intro") if k != kind or kind == "attr"])
            a1 = attr
            if k1 == "attr":
                others = [a for a in self.s.attr_keys if a != attr]
                if not others:
                    k1 = "intro"
                else:
                    a1 = pick(rng, others)
            first = (self._say(pick(rng, self.a["intro"]), name=self._ref(item)) if k1 == "intro"
                     else self._ask_about(k1, item, a1))
            turns = [first, self._short(kind, attr)]
        elif r < 0.92 and (other := self._other_item(item)) is not None:
            # "A多少钱" -> "那B呢？": the question carries over, the product changes.
            turns = [self._ask_about(kind, other, attr), self._say(pick(rng, self.a["switch"]), name=self._ref(item))]
        else:
            turns = [self._plain("greeting"), self._ask_about(kind, item, attr)]
        if len(turns) == 2 and turns[0] != item.sku and rng.random() < 0.15:
            turns.insert(0, self._plain("greeting"))
        return {"turns": turns, "kind": kind, "expect": self._facts_of(kind, item, attr), "ref": item.sku}

    def _unique_noun_items(self) -> list[_Item]:
        counts: dict[str, int] = {}
        for it in self.items:
            counts[it.noun] = counts.get(it.noun, 0) + 1
        return [it for it in self.items if counts[it.noun] == 1 and _norm(it.noun) in _norm(it.name)]

    def _noun_ask(self, noun: str) -> str:
        return self._say(pick(self.rng, self.a["noun"]), noun=noun, nouns=noun if self.zh else _plural(noun))

    def product(self) -> dict[str, Any]:
        rng = self.rng
        r = rng.random()
        by_noun = self._unique_noun_items()
        if r < 0.35 and by_noun:
            item = pick(rng, by_noun)
            turns = [self._noun_ask(item.noun)]
        elif r < 0.6:
            item = pick(rng, self.items)
            turns = [self._say(pick(rng, self.a["sku"]), sku=item.sku)]
        else:
            item = pick(rng, self.items)
            turns = [self._say(pick(rng, self.a["intro"]), name=self._ref(item))]
        if rng.random() < 0.15:
            turns.insert(0, self._plain("greeting"))
        return {"turns": turns, "kind": "product", "expect": [item.name], "ref": item.sku}

    # --- policies, FAQ, orders ----------------------------------------------------------------
    def _fact_ask(self, fact: str) -> str:
        asks = FACTS[fact][self.lang]["ask"]
        # Never the shop's own FAQ question word for word: the reader must match a paraphrase.
        fresh = [a for a in asks if _bare(a) not in self._faq_questions] or asks
        return self._say(pick(self.rng, fresh))

    def fact_question(self, kind: str) -> dict[str, Any]:
        rng = self.rng
        pool = self.policy_facts if kind == "policy" else self.faq_facts
        fact = pick(rng, pool)
        r = rng.random()
        shorts = FACTS[fact.key][self.lang]["short"]
        others = [f for f in self.s.facts.values() if f.key != fact.key]
        if r < 0.55 or not others:
            turns = [self._fact_ask(fact.key)]
        elif r < 0.7:
            turns = [self._plain("greeting"), self._fact_ask(fact.key)]
        elif r < 0.88:
            # Two topics in a row; the second may lean on the first ("退货几天？" -> "那退款呢？").
            before = pick(rng, others)
            second = self._say(pick(rng, shorts)) if shorts and rng.random() < 0.6 else self._fact_ask(fact.key)
            turns = [self._fact_ask(before.key), second]
        else:
            turns = [self._ask_about("price", pick(rng, self.items), None), self._fact_ask(fact.key)]
        return {"turns": turns, "kind": kind, "expect": list(fact.values), "ref": fact.ref}

    def _order_turns(self, oid: str) -> list[str]:
        rng = self.rng
        if rng.random() < 0.3:
            return [self._say(pick(rng, self.a["order_intro"])), self._say(pick(rng, self.a["order_id"]), oid=oid)]
        return [self._say(pick(rng, self.a["order"]), oid=oid)]

    def order(self) -> dict[str, Any]:
        row = pick(self.rng, self.s.orders)
        expect = [row["status"]] + ([row["tracking_no"]] if row["tracking_no"] else [])
        return {"turns": self._order_turns(row["order_id"]), "kind": "order", "expect": expect, "ref": row["order_id"]}

    # --- small talk and what the pack cannot answer -------------------------------------------
    def greeting(self) -> dict[str, Any]:
        rng = self.rng
        turns = [self._plain("greeting")]
        if rng.random() < 0.2:
            turns.append(self._plain("greeting"))
        return {"turns": turns, "kind": "greeting", "expect": [], "ref": None}

    def thanks(self) -> dict[str, Any]:
        rng = self.rng
        before = (self._ask_about("price", pick(rng, self.items), None) if rng.random() < 0.5 or not self.policy_facts
                  else self._fact_ask(pick(rng, self.policy_facts).key))
        return {"turns": [before, self._plain("thanks")], "kind": "thanks", "expect": [], "ref": None}

    def _missing_facts(self) -> list[str]:
        have = self.s.facts
        out = []
        for f in FACTS:
            near = list(GROUPS[_GROUP_OF[f]]["facts"]) + list(_NEIGHBOURS.get(f, ()))
            if not any(n in have for n in near):
                out.append(f)
        return out

    def _absent_noun(self) -> str | None:
        """A product noun this shop does not sell: one of its own domain's it lacks, or another domain's."""
        rng = self.rng
        sold = {it.noun for it in self.items}
        for _ in range(10):
            noun = pick(rng, self.s.dom["nouns"] if rng.random() < 0.4 else DOMAINS[pick(rng, DOMAIN_KEYS)]["nouns"])
            zh, en = _norm(noun[0]), _norm(noun[1])
            if noun[self.s.li] in sold or any(zh in n or en in n or en in e for n, e, _ in self._names):
                continue
            return noun[self.s.li]
        return None

    def unknown(self) -> dict[str, Any]:
        rng = self.rng
        ref: str | None = None
        r = rng.random()
        missing_attrs = [a for a in UNKNOWABLE_ATTRS if a not in self.s.attr_keys]
        missing = self._missing_facts()
        noun = self._absent_noun() if r < 0.3 else None
        if noun is not None:
            turns = [self._noun_ask(noun)]
        elif r < 0.5 and missing:
            turns = [self._fact_ask(pick(rng, missing))]
        elif r < 0.65 and missing_attrs:
            item = pick(rng, self.items)
            turns = [self._ask_about("attr", item, pick(rng, missing_attrs))]
            ref = item.sku
        elif r < 0.75:
            known = {o["order_id"] for o in self.s.orders}
            oid = self.s.order_id(self.s.order_style)
            while oid in known:
                oid = self.s.order_id(self.s.order_style)
            turns = self._order_turns(oid)
        else:
            turns = [self._say(pick(rng, self.a["unknown"]))]
        if rng.random() < 0.15:
            turns.insert(0, self._plain("greeting"))
        return {"turns": turns, "kind": "unknown", "expect": [], "ref": ref}

    # --- the set ------------------------------------------------------------------------------
    def questions(self, n: int) -> list[dict[str, Any]]:
        rng = self.rng
        kinds = [k for k in KINDS if not (k == "faq" and not self.faq_facts) and not (k == "policy" and not self.policy_facts)
                 and not (k == "attr" and not self.s.attr_keys)]
        weighted = [k for k in kinds for _ in range(KIND_WEIGHTS[k])]
        plan = kinds[:n] + [pick(rng, weighted) for _ in range(max(0, n - len(kinds)))]
        rng.shuffle(plan)
        makers = {"price": lambda: self.product_question("price"), "stock": lambda: self.product_question("stock"),
                  "attr": lambda: self.product_question("attr"), "product": self.product,
                  "policy": lambda: self.fact_question("policy"), "faq": lambda: self.fact_question("faq"),
                  "order": self.order, "greeting": self.greeting, "thanks": self.thanks, "unknown": self.unknown}
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for kind in plan:
            for _ in range(3):  # a repeat wastes a training example: draw again
                q = makers[kind]()
                key = "\n".join(q["turns"])
                if key not in seen:
                    break
            seen.add(key)
            out.append(q)
        return out


def _typo(rng: Random, template: str) -> str:
    """Swap two letters, drop one or double one, in a word outside the placeholders."""
    words = template.split(" ")
    idx = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 4]
    if not idx:
        return template
    i = pick(rng, idx)
    w = words[i]
    j = rng.randint(1, len(w) - 2)
    op = rng.randrange(3)
    words[i] = (w[:j] + w[j + 1] + w[j] + w[j + 2:] if op == 0 else w[:j] + w[j + 1:] if op == 1 else w[:j] + w[j] + w[j:])
    return " ".join(words)


def random_pack(out_dir: str | Path, *, seed: int, lang: str, questions: int = QUESTIONS,
                invented_nouns: float = 0.0) -> VariedShop:
    """Draw the shop for (lang, seed), write it as a pack (+ questions.jsonl) to `out_dir`.
    `invented_nouns` is the share of products named with a made-up noun instead of one of
    the domain's (the shop reader's recipe uses it so names must be copied, not recalled)."""
    if not 0.0 <= invented_nouns <= 1.0:
        raise ConfigError(f"invented_nouns must be a share in [0, 1], got {invented_nouns!r}")
    if lang not in LANGUAGES:
        raise ConfigError(f"lang must be one of {', '.join(LANGUAGES)}, got {lang!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an int, got {seed!r}")
    if not isinstance(questions, int) or questions < 0:
        raise ConfigError(f"questions must be a whole number >= 0, got {questions!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {str(out)!r} is a file, not a folder; choose another out_dir")
    shop = _Shop(lang, seed, invented_nouns)
    shop.questions = _Asker(shop).questions(questions)
    shop.write(out)
    return VariedShop(
        out_dir=str(out), seed=seed, lang=lang, domain=shop.domain, name=shop.name, currency=shop.currency,
        skus=[it.sku for it in shop.items], columns=list(shop.headers.values()),
        policy_headings=[h for _, h, _ in shop.sections], faq=len(shop.faq), orders=[o["order_id"] for o in shop.orders],
        questions=shop.questions,
    )


def pack_seed(seed: int, index: int) -> int:
    """The seed of pack `index` of `random_packs(seed=seed)`: a hash, so no two (seed, index) share one."""
    return int.from_bytes(hashlib.blake2b(f"varied-packs:{seed}:{index}".encode(), digest_size=6).digest(), "big")


def random_packs(root: str | Path, *, n: int, seed: int, langs: Sequence[str] = ("zh", "en"),
                 questions: int = QUESTIONS) -> list[VariedShop]:
    """`n` packs under `root` (`00000-zh/`, `00001-en/`, ...), languages taken in turn from `langs`."""
    if not isinstance(n, int) or n < 0:
        raise ConfigError(f"n must be a whole number >= 0, got {n!r}")
    langs = tuple(langs)
    if not langs or any(lang not in LANGUAGES for lang in langs):
        raise ConfigError(f"langs must be a non-empty list of {', '.join(LANGUAGES)}, got {langs!r}")
    root = Path(root)
    width = max(5, len(str(max(0, n - 1))))
    return [random_pack(root / f"{i:0{width}d}-{langs[i % len(langs)]}", seed=pack_seed(seed, i), lang=langs[i % len(langs)], questions=questions)
            for i in range(n)]
