"""The facts of one fictional shop, drawn from a seed: catalog, policies, FAQ, orders.

A `World` is the ground truth behind every chat line: the courier, the cut-off time, the
prices, each order's status. `chats.py` draws conversations from it; `generate.py` writes
it out as a shop pack. Everything is a pure function of (lang, seed, products), so the same
seed gives the same shop byte for byte.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence, TypeVar

from endcloud.corpus.shopworld.lexicon import (
    ADJECTIVES, COLOURS, EN_AREA, EN_CITIES, EN_FIRST, EN_LAST, EN_MAIL, EN_STREETS, FAMILIES, LANG, PROBE_SKU,
    ZH_GIVEN, ZH_MAIL, ZH_MOBILE_PREFIX, ZH_PINYIN, ZH_PLACES, ZH_ROADS, ZH_SURNAMES,
)
from endcloud.kb.pack import format_number

T = TypeVar("T")
CATALOG_COLUMNS = ("sku", "name", "price", "stock", "category", "material", "size", "colour", "feature")
ORDER_COLUMNS = ("order_id", "sku", "status", "courier", "tracking_no", "ship_date", "eta_days")


def pick(rng: random.Random, seq: Sequence[T]) -> T:
    """rng.choice without its overhead (this runs millions of times for a big corpus)."""
    return seq[int(rng.random() * len(seq))]


@dataclass(slots=True)
class Item:
    sku: str
    name: str
    price: str
    stock: int
    category: str
    material: str
    size: str
    colours: list[str]
    feature: str

    def row(self, sep: str) -> list[str]:
        return [self.sku, self.name, self.price, str(self.stock), self.category, self.material, self.size, sep.join(self.colours), self.feature]


@dataclass(slots=True)
class World:
    lang: str
    seed: int
    name: str
    currency: str
    facts: dict[str, str]
    items: list[Item]
    orders: list[dict[str, str]]
    lex: dict = field(repr=False, default_factory=dict)


def build_world(lang: str, seed: int, products: int, *, orders: int | None = None) -> World:
    """Draw the shop for (lang, seed): its facts, `products` catalog items and an order export."""
    lex = LANG[lang]
    rng = random.Random(f"shopworld:{lang}:{seed}:world")
    facts = {
        "shop": pick(rng, lex["shop_names"]),
        "courier": lex["default_courier"], "express": lex["express_courier"], "remote_courier": lex["remote_courier"],
        "fee": pick(rng, ["8", "10", "12", "15"]) if lang == "zh" else pick(rng, ["8", "10", "12"]),
        "fee_std": pick(rng, ["6", "8"]) if lang == "zh" else pick(rng, ["5.99", "6.99"]),
        "free": pick(rng, ["49", "59", "69"]) if lang == "zh" else pick(rng, ["35", "49"]),
        "cutoff": pick(rng, ["15:00", "16:00", "17:00"]),
        "days": pick(rng, ["2", "3"]), "remote_days": pick(rng, ["5", "7"]), "late": "4",
        "remote": ("、" if lang == "zh" else ", ").join(lex["remote_places"]),
        "return_days": pick(rng, ["7", "15"]), "refund_days": pick(rng, ["3", "5"]),
        "invoice": lex["invoice_kind"], "invoice_days": pick(rng, ["2", "3"]),
        "hours": pick(rng, ["48", "72"]), "restock": pick(rng, ["10", "14", "20"]),
    }
    thr, amt = pick(rng, [("199", "20"), ("299", "30"), ("99", "10"), ("159", "15")] if lang == "zh" else [("99", "10"), ("150", "15"), ("200", "25")])
    facts.update(thr=thr, amt=amt, new_amt=pick(rng, ["5", "8"]) if lang == "zh" else "6")
    items = _build_items(rng, lang, products)
    n_orders = orders if orders is not None else min(2000, max(100, products * 10))
    return World(lang=lang, seed=seed, name=facts["shop"], currency=lex["currency"], facts=facts, items=items,
                 orders=_build_orders(rng, lang, items, facts, n_orders), lex=lex)


def _build_items(rng: random.Random, lang: str, n: int) -> list[Item]:
    zh = lang == "zh"
    combos = [(f, m, a) for f in range(len(FAMILIES)) for m in range(len(FAMILIES[f][5])) for a in range(len(ADJECTIVES))]
    rng.shuffle(combos)
    # The paper's probe product comes first: plain "pure cotton face towel", 20x20 cm, wet and dry use.
    first = (0, 0, 0)
    combos.remove(first)
    combos.insert(0, first)
    items: list[Item] = []
    skus = {PROBE_SKU}
    names: set[str] = set()
    for i in range(n):
        f, m, a = combos[i % len(combos)]
        fam = FAMILIES[f]
        material = fam[5][m][0 if zh else 1]
        adj = ADJECTIVES[a][0 if zh else 1]
        base = fam[0] if zh else fam[1]
        title = " ".join(w[:1].upper() + w[1:] for w in material.split())  # "EVA" stays "EVA"
        name = f"{adj}{material}{base}" if zh else " ".join(x for x in (adj, title, base) if x)
        if i >= len(combos):  # more products than combinations: number the models
            name = f"{name}{i // len(combos) + 1}号款" if zh else f"{name} No.{i // len(combos) + 1}"
        while name in names:
            name += "B"
        names.add(name)
        if i == 0:
            sku, size, feature = PROBE_SKU, fam[4][0], fam[6][0][0 if zh else 1]
        else:
            sku = PROBE_SKU
            while sku in skus:
                sku = str(rng.randrange(500_000_000_000, 700_000_000_000))
            size, feature = pick(rng, fam[4]), pick(rng, fam[6])[0 if zh else 1]
        skus.add(sku)
        lo, hi = fam[7]
        cny = rng.randint(lo, hi)
        if zh:
            price = format_number(cny - 0.1 if rng.random() < 0.3 else cny)
        else:
            price = format_number(max(2, round(cny / 5)) - 0.01)  # $x.99 pricing
        stock = 0 if (i > 0 and rng.random() < 0.12) else rng.randint(3, 500)
        k = 1 + int(rng.random() * 3)
        colours = [c[0 if zh else 1] for c in rng.sample(COLOURS, k)]
        items.append(Item(sku=sku, name=name, price=price, stock=stock, category=fam[2 if zh else 3], material=material,
                          size=size, colours=colours, feature=feature))
    return items


def _tracking(rng: random.Random, prefix: str) -> str:
    if prefix == "SF":
        return "SF" + str(rng.randrange(10**12, 10**13))
    if prefix == "E":
        return "E" + str(rng.randrange(10**8, 10**9)) + "CN"
    return "7" + str(rng.randrange(10**13, 10**14))


def order_id(rng: random.Random, lang: str) -> str:
    """A shop's order number: 18 digits (Taobao style) for zh, 3-7-7 (marketplace style) for en."""
    if lang == "zh":
        return str(rng.randrange(10**17, 10**18))
    return f"{rng.randrange(100, 1000)}-{rng.randrange(10**6, 10**7)}-{rng.randrange(10**6, 10**7)}"


def _build_orders(rng: random.Random, lang: str, items: list[Item], facts: dict[str, str], n: int) -> list[dict[str, str]]:
    lex = LANG[lang]
    statuses = lex["statuses"]
    seen: set[str] = set()
    rows = []
    for _ in range(n):
        oid = order_id(rng, lang)
        while oid in seen:
            oid = order_id(rng, lang)
        seen.add(oid)
        item = pick(rng, items)
        status = pick(rng, statuses)
        shipped = status != statuses[0]
        courier = facts["express"] if rng.random() < 0.15 else facts["courier"]
        day = 1 + int(rng.random() * 28)
        rows.append({
            "order_id": oid, "sku": item.sku, "status": status, "courier": courier if shipped else "",
            "tracking_no": _tracking(rng, lex["tracking_prefix"][courier]) if shipped else "",
            "ship_date": f"2024-06-{day:02d}" if shipped else "",
            "eta_days": "0" if status == statuses[-1] else (facts["days"] if not shipped else str(1 + int(rng.random() * int(facts["days"])))),
        })
    return rows


# --- personal data, as customers type it ----------------------------------------------------

def phone(rng: random.Random, lang: str) -> str:
    if lang == "zh":
        p, a, b = pick(rng, ZH_MOBILE_PREFIX), rng.randrange(1000, 10000), rng.randrange(1000, 10000)
        style = int(rng.random() * 5)
        return (f"{p}{a}{b}", f"{p}-{a}-{b}", f"{p} {a} {b}", f"+86 {p}{a}{b}", f"+86-{p}-{a}-{b}")[style]
    area, tail = pick(rng, EN_AREA), rng.randrange(100, 200)
    style = int(rng.random() * 4)
    return (f"({area}) 555-0{tail}", f"{area}-555-0{tail}", f"{area}.555.0{tail}", f"+1 {area} 555 0{tail}")[style]


def address(rng: random.Random, lang: str) -> str:
    if lang == "zh":
        prov, city, districts = pick(rng, ZH_PLACES)
        addr = f"{prov}{city}{pick(rng, districts)}{pick(rng, ZH_ROADS)}{rng.randrange(1, 300)}号"
        if rng.random() < 0.6:
            addr += f"{rng.randrange(1, 30)}栋{rng.randrange(1, 30)}0{rng.randrange(1, 5)}室"
        if rng.random() < 0.4:
            addr += f" {pick(rng, ZH_SURNAMES)}{pick(rng, ZH_GIVEN)}"
        return addr
    city, state, zip3 = pick(rng, EN_CITIES)
    apt = f" Apt {rng.randrange(1, 40)}," if rng.random() < 0.4 else ","
    return f"{rng.randrange(10, 9999)} {pick(rng, EN_STREETS)},{apt} {city}, {state} {zip3}{rng.randrange(10, 100)}"


def email(rng: random.Random, lang: str) -> str:
    if lang == "zh":
        user = pick(rng, ZH_PINYIN) + str(rng.randrange(10, 9999)) if rng.random() < 0.6 else str(rng.randrange(10**7, 10**10))
        return f"{user}@{pick(rng, ZH_MAIL)}"
    return f"{pick(rng, EN_FIRST)}.{pick(rng, EN_LAST)}{rng.randrange(1, 99)}@{pick(rng, EN_MAIL)}"
