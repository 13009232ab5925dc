"""Draw customer-service conversations from a `World`: questions, and human agents' replies.

Each exchange is one customer question (one or more consecutive customer lines, carrying
personal data where real customers type it) and the agent's reply (sometimes a "hold on"
line first). The drawer knows the true facts behind each question, so every reply comes
with `facts` (what a correct reply states) and `correct` (False for the unhelpful or wrong
replies human agents give about `wrong_rate` of the time).

    drawer = Drawer(world, random.Random(0), wrong_rate=0.18)
    for ex in drawer.session():  # list[Exchange]
        ...
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

from endcloud.corpus.shopworld.world import Item, World, address, email, phone, pick

INTENTS = (
    "greeting", "product_attr", "stock", "price", "courier", "ship_today", "delivery_time", "order_status",
    "address_change", "coupon", "return_refund", "complaint", "invoice", "after_sales", "bare_number", "chitchat",
)
# How often customers raise each topic (greeting and chit-chat are placed by the session shape).
TOPIC_WEIGHTS = {
    "product_attr": 12, "stock": 6, "price": 7, "courier": 8, "ship_today": 8, "delivery_time": 7, "order_status": 9,
    "address_change": 5, "coupon": 8, "return_refund": 8, "complaint": 5, "invoice": 4, "after_sales": 4, "bare_number": 5,
}
# Phrasings too generic to hold out ("hello", a bare number, "thanks"): chats and eval share them.
_SHARED_ASKS = frozenset({"greeting", "chitchat", "bare_sku", "bare_order", "pii_phone"})
_FOLLOW_UPS = ("product_attr", "stock", "price")
_TOPICS: list[str] = [t for t, w in TOPIC_WEIGHTS.items() for _ in range(w)]


T = TypeVar("T")
# What a question drawer returns: (reply kind, customer lines, slots, facts, wrong slots, sku).
_Question = tuple[str, list[str], dict[str, Any], list[str], dict[str, Any] | None, str | None]


class _Slots(dict):
    """Template slots of one question; shop-wide facts are looked up, not copied (hot path)."""

    __slots__ = ("base",)

    def __missing__(self, key: str) -> str:
        return self.base[key]


@dataclass(slots=True)
class Exchange:
    """One customer question and the agent's answer. `facts` are what a correct answer states."""

    intent: str
    user: list[str]
    agent: list[str]
    facts: list[str]
    correct: bool
    sku: str | None = None


def join_lines(lines: list[str], lang: str) -> str:
    """Consecutive lines of one speaker as one message ("你好，在吗" / "Hello. Where is my order?")."""
    if len(lines) == 1:
        return lines[0]
    if lang == "zh":
        return "，".join(lines)
    out = lines[0]
    for line in lines[1:]:
        out += (" " if out[-1:] in ".?!,:" else ". ") + line
    return out


def norm(text: str) -> str:
    """The fact-comparison form: NFKC, lower-case, no whitespace."""
    return "".join(unicodedata.normalize("NFKC", text).lower().split())


class Drawer:
    """Draws questions and sessions for one world. `heldout=True` uses only the customer
    phrasings kept back for evaluation; False uses only the others."""

    def __init__(self, world: World, rng: random.Random, *, wrong_rate: float = 0.18, heldout: bool = False):
        self.w = world
        self.rng = rng
        self.wrong_rate = wrong_rate
        self.lang = world.lang
        lex = world.lex
        self.ask = {}
        for k, v in lex["ask"].items():
            held = 2 if len(v) >= 6 else 1
            self.ask[k] = v if k in _SHARED_ASKS else (v[-held:] if heldout else v[:-held])
        self.answer = lex["answer"]
        self.wrong = lex["wrong"]
        self.unhelpful = lex["unhelpful"]
        self.base = dict(world.facts)
        self.b = self._slots()
        self.statuses = lex["statuses"]
        self.shipped = [o for o in world.orders if o["status"] != self.statuses[0]] or world.orders
        self.zh = self.lang == "zh"
        self.last_item = None
        self.list_sep = "、" if self.zh else ", "
        self._q = {
            "greeting": self._greeting, "product_attr": self._product_attr, "stock": self._stock, "price": self._price,
            "courier": self._courier, "ship_today": self._ship_today, "delivery_time": self._delivery_time,
            "order_status": self._order_status, "address_change": self._address_change, "coupon": self._coupon,
            "return_refund": self._return_refund, "complaint": self._complaint, "invoice": self._invoice,
            "after_sales": self._after_sales, "bare_number": self._bare_number, "chitchat": self._chitchat,
        }

    # --- one question ---------------------------------------------------------------------
    def exchange(self, intent: str, **kw) -> Exchange:
        """A question of `intent` and a reply (correct with probability 1 - wrong_rate).
        Product questions take `item=` and `refer=True` for a follow-up ("这个多少钱？")."""
        kind, user, slots, facts, wrong_slots, sku = self._q[intent](**kw)
        rng = self.rng
        correct = rng.random() >= self.wrong_rate
        if correct:
            reply = pick(rng, self.answer[kind]).format_map(slots)
        else:
            reply = self._wrong_reply(kind, slots, facts, wrong_slots)
        agent = [reply]
        if intent in ("order_status", "complaint", "bare_number", "stock") and rng.random() < 0.2:
            agent.insert(0, pick(rng, self.answer["hold"]))
        return Exchange(intent, user, agent, facts, correct, sku)

    def _wrong_reply(self, kind: str, slots: dict, facts: list[str], wrong_slots: dict | None) -> str:
        rng = self.rng
        templates = self.wrong.get(kind)
        if templates and rng.random() < 0.6:
            s = self._slots(**slots)
            if wrong_slots:
                s.update(wrong_slots)
            reply = pick(rng, templates).format_map(s)
            flat = norm(reply)
            # A wrong reply must not state the true facts by accident ("19" contains "9").
            if not any(norm(f) in flat for f in facts):
                return reply
        return pick(rng, self.unhelpful)

    def _fmt(self, key: str, slots: dict) -> str:
        return pick(self.rng, self.ask[key]).format_map(slots)

    def _slots(self, **kw) -> _Slots:
        s = _Slots(kw)
        s.base = self.base
        return s

    def _other(self, seq: Sequence[T], avoid: object) -> T | None:
        for _ in range(8):
            x = pick(self.rng, seq)
            if x != avoid:
                return x
        return None

    def _greeting(self) -> _Question:
        return "greeting", [self._fmt("greeting", self.b)], self.b, [], None, None

    def _product_line(self, key: str, item: Item, slots: dict, refer: bool) -> list[str]:
        self.last_item = item
        if refer:  # a follow-up about the product already under discussion
            return [self._fmt_this(key, slots)]
        # A fifth of customers paste the item id first, then ask about "this one".
        if self.rng.random() < 0.2:
            return [item.sku, self._fmt_this(key, slots)]
        return [self._fmt(key, slots)]

    def _fmt_this(self, key: str, slots: dict) -> str:
        """The question with the product named by a pronoun: "这个多少钱？" / "How much is this one?"."""
        template = pick(self.rng, self.ask[key])
        s = self._slots(**slots)
        if self.zh:
            s["name"] = "这个"
        else:
            template, s["name"] = template.replace("the {name}", "{name}"), "this one"
        return template.format_map(s)

    def _product_attr(self, item: Item | None = None, refer: bool = False) -> _Question:
        rng, w = self.rng, self.w
        item = item or pick(rng, w.items)
        attr = pick(rng, ("material", "size", "colour", "feature"))
        if attr == "colour":
            value = self.list_sep.join(item.colours)
            facts = list(item.colours)
            bad = self._other([c for it in w.items for c in it.colours if c not in item.colours] or ["?"], None)
        else:
            value = getattr(item, attr)
            facts = [value]
            other = self._other(w.items, item)
            bad = getattr(other, attr) if other is not None else None
        slots = self._slots(name=item.name, value=value, sku=item.sku)
        return attr, self._product_line(attr, item, slots, refer), slots, facts, ({"value": bad} if bad and bad != value else None), item.sku

    def _stock(self, item: Item | None = None, refer: bool = False) -> _Question:
        item = item or pick(self.rng, self.w.items)
        slots = self._slots(name=item.name, stock=str(item.stock), sku=item.sku)
        if item.stock > 0:
            return "stock_in", self._product_line("stock", item, slots, refer), slots, [str(item.stock)], None, item.sku
        return "stock_out", self._product_line("stock", item, slots, refer), slots, ["缺货" if self.zh else "out of stock"], None, item.sku

    def _price(self, item: Item | None = None, refer: bool = False) -> _Question:
        rng = self.rng
        item = item or pick(rng, self.w.items)
        slots = self._slots(name=item.name, price=item.price, sku=item.sku)
        factor = pick(rng, (0.7, 0.8, 1.25, 1.5))
        bad = f"{float(item.price) * factor:.2f}".rstrip("0").rstrip(".")
        return "price", self._product_line("price", item, slots, refer), slots, [item.price], {"price": bad}, item.sku

    def _courier(self) -> _Question:
        rng = self.rng
        kind = pick(rng, ("courier_default", "courier_choose", "courier_choose", "courier_express"))
        facts = [self.base["express"], self.base["fee"]] if kind == "courier_express" else [self.base["courier"]]
        return kind, [self._fmt(kind, self.b)], self.b, facts, {"courier": pick(rng, self.w.lex["other_couriers"])}, None

    def _ship_today(self) -> _Question:
        return "ship_today", [self._fmt("ship_today", self.b)], self.b, [self.base["cutoff"]], None, None

    def _delivery_time(self) -> _Question:
        rng, lex = self.rng, self.w.lex
        remote = rng.random() < 0.3
        place = pick(rng, lex["remote_places"] if remote else lex["normal_places"])
        days = self.base["remote_days"] if remote else self.base["days"]
        slots = self._slots(place=place, days=days)
        return "delivery_time", [self._fmt("delivery_time", slots)], slots, [days], None, None

    def _order_slots(self, order: dict) -> dict:
        return self._slots(oid=order["order_id"], status=order["status"], courier=order["courier"] or self.base["courier"],
                           tracking=order["tracking_no"], eta=order["eta_days"])

    def _order_facts(self, order: dict) -> list[str]:
        return [order["status"], order["tracking_no"]] if order["tracking_no"] else [order["status"]]

    def _wrong_order(self, order: dict) -> dict:
        other = self._other(self.shipped, order) or order
        status = self._other(self.statuses[1:], order["status"]) or order["status"]
        return {"status": status, "tracking": other["tracking_no"]}

    def _order_status(self) -> _Question:
        rng = self.rng
        order = pick(rng, self.w.orders)
        slots = self._order_slots(order)
        user = [self._fmt("order_status", slots)]
        if rng.random() < 0.15:
            user.append(self._fmt("pii_phone", {"phone": phone(rng, self.lang)}))
        kind = "order_status" if order["tracking_no"] else "order_status_wait"
        return kind, user, slots, self._order_facts(order), self._wrong_order(order), order["sku"]

    def _address_change(self) -> _Question:
        rng = self.rng
        slots = self._slots(address=address(rng, self.lang), phone=phone(rng, self.lang))
        return "address_change", [self._fmt("address_change", slots)], slots, ["发货前" if self.zh else "before shipping"], None, None

    def _coupon(self) -> _Question:
        kind = "coupon" if self.rng.random() < 0.75 else "coupon_new"
        facts = [self.base["thr"], self.base["amt"]] if kind == "coupon" else [self.base["new_amt"]]
        return kind, [self._fmt(kind, self.b)], self.b, facts, None, None

    def _return_refund(self) -> _Question:
        kind = "return_window" if self.rng.random() < 0.55 else "refund_time"
        fact = self.base["return_days"] if kind == "return_window" else self.base["refund_days"]
        return kind, [self._fmt(kind, self.b)], self.b, [fact], None, None

    def _complaint(self) -> _Question:
        rng = self.rng
        if rng.random() < 0.5:
            return "complaint", [self._fmt("complaint", self.b)], self.b, [self.base["days"]], None, None
        order = pick(rng, self.shipped)
        slots = self._order_slots(order)
        return "complaint_order", [self._fmt("complaint_order", slots)], slots, self._order_facts(order), self._wrong_order(order), order["sku"]

    def _invoice(self) -> _Question:
        slots = self._slots(email=email(self.rng, self.lang))
        return "invoice", [self._fmt("invoice", slots)], slots, [self.base["invoice"]], {"invoice": self.w.lex["wrong_invoice"]}, None

    def _after_sales(self) -> _Question:
        item = pick(self.rng, self.w.items)
        slots = self._slots(name=item.name)
        user = [self._fmt("after_sales", slots)]
        if self.rng.random() < 0.3:
            user.append(self._fmt("pii_phone", {"phone": phone(self.rng, self.lang)}))
        return "after_sales", user, slots, [self.base["hours"]], None, item.sku

    def _bare_number(self) -> _Question:
        rng = self.rng
        if rng.random() < 0.5:
            item = self.last_item = pick(rng, self.w.items)
            slots = self._slots(name=item.name, sku=item.sku, size=item.size, material=item.material, feature=item.feature)
            other = self._other(self.w.items, item)
            bad = {"material": other.material, "size": other.size} if other is not None else None
            return "bare_sku", [self._fmt("bare_sku", slots)], slots, [item.size, item.material], bad, item.sku
        order = pick(rng, self.w.orders)
        slots = self._order_slots(order)
        return "bare_order", [self._fmt("bare_order", slots)], slots, [order["status"]], {"status": self._wrong_order(order)["status"]}, order["sku"]

    def _chitchat(self) -> _Question:
        return "chitchat", [self._fmt("chitchat", self.base)], self.b, [], None, None

    # --- one session ----------------------------------------------------------------------
    def session(self) -> list[Exchange]:
        """A conversation: maybe a greeting, 1-3 questions, maybe a closing remark."""
        rng = self.rng
        out: list[Exchange] = []
        r = rng.random()
        n = 1 + (rng.random() < 0.5) + (rng.random() < 0.2)
        topics: list[str] = []
        while len(topics) < n:  # a customer asks each thing once
            t = pick(rng, _TOPICS)
            if t not in topics:
                topics.append(t)
        if r < 0.55:
            out.append(self.exchange("greeting"))
        for t in topics:
            self.last_item = None
            out.append(self.exchange(t))
            if self.last_item is not None and rng.random() < 0.35:
                # "那这个多少钱？": a follow-up that only the conversation so far makes answerable.
                follow = pick(rng, [f for f in _FOLLOW_UPS if f != t])
                out.append(self.exchange(follow, item=self.last_item, refer=True))
        if 0.55 <= r < 0.75:
            # "在吗" and the question sent as two lines before the agent answers.
            out[0].user.insert(0, self._fmt("greeting", self.b))
        if rng.random() < 0.45:
            out.append(self.exchange("chitchat"))
        return out
