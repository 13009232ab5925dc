"""The reference teacher: an offline, deterministic stand-in for the cloud, from the shop pack.

    teacher = ReferenceTeacher(pack=ShopPack.load("shop/"))
    teacher.reply([{"role": "user", "content": "发什么快递？"}]).text   # '亲，默认发中通快递哦。'

It is not a language model and does not pretend to be one: it reads the customer's last
message (and the conversation for context), recognises what is asked (greeting, product
price/stock/attributes, courier, cut-off time, delivery days, returns, refunds, coupons,
invoices, after-sales, an order number, frustration, thanks), looks the answer up in the
shop pack (`endcloud.kb`: catalog, FAQ, policies, orders) and states the shop's true facts
briefly, e-commerce style ("亲，…" / "Hi! …"), in the customer's language where the facts
are structured (products, orders; policy text is quoted in the shop's own language). When
the pack does not hold the answer it says so instead of inventing one. No sampling: the
same conversation always gets the same reply — `endcloud demo` uses it when no cloud is
configured, as the labeller, the judge's reference and the takeover.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from endcloud.cloud.teacher import Messages, Teacher, check_messages
from endcloud.records import Reply, Usage
from endcloud.text import CJK_IDEOGRAPHS, detect_lang, estimate_message_tokens, estimate_tokens

# What a customer may be asking, in the order we test for it. Keywords are matched on the
# NFKC, lower-cased text; a message can carry two topics ("发什么快递，几天到？").
TOPICS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("invoices", ("发票", "开票", "专票", "普票", "抬头"), ("invoice", "receipt", "vat", "tax id")),
    ("refunds", ("退款", "退钱", "钱什么时候退", "退的钱", "到账"), ("refund", "money back")),
    ("returns", ("退货", "退换", "换货", "能退", "可以退", "无理由", "寄回", "不合适"), ("return", "send it back", "send back", "exchange")),
    ("after-sales", ("破损", "坏了", "质量", "瑕疵", "维修", "保修", "少件", "有问题"), ("damaged", "broken", "defect", "faulty", "warranty", "repair", "problem with")),
    ("address", ("地址", "寄到", "送到", "改成"), ("address", "send my order to", "ship it to", "deliver it to", "send it to")),
    ("coupons", ("优惠", "便宜", "折扣", "满减", "券", "打折", "首单", "减多少", "活动", "立减", "新用户", "新人", "新客", "第一次", "促销"), ("coupon", "discount", "promo", "deal", "voucher", "welcome offer", "first order", "first-order", "first-time", "new customer", "sale")),
    ("ship_today", ("今天能发", "今天发", "当天发", "当天能发", "今天能寄", "今天寄", "几点前", "今天下单", "今天付款", "今天买", "现在拍", "什么时候发", "多久发货", "几点发货", "多久能发"), ("ship today", "ships today", "go out today", "dispatched today", "same day", "same-day", "today", "when does it ship", "when will it ship", "when do you ship", "how soon do you ship")),
    ("courier_choose", ("顺丰", "指定快递", "指定", "选快递", "自己选", "选择快递", "换快递", "换一家", "加钱"), ("sf express", "choose", "pick the courier", "pick a different", "upgrade", "select the courier", "switch", "another courier", "different courier", "different shipping", "pay extra", "faster shipping")),
    ("courier", ("快递", "顺丰", "物流公司", "发货方式", "中通", "圆通", "韵达", "申通", "ems", "哪家"), ("courier", "carrier", "shipping company", "delivery company", "delivery service", "sf express", "ship with", "who delivers")),
    ("delivery", ("几天到", "多久到", "几天能到", "多久能到", "要多久", "大概几天", "需要几天", "送达", "到货", "几天"), ("how long", "how many days", "when will it arrive", "delivery time", "arrive")),
    ("price", ("多少钱", "价格", "什么价", "价钱", "几块", "卖多少"), ("how much", "price", "cost")),
    ("stock", ("有货", "库存", "现货", "缺货", "还有没有", "没货", "补货"), ("in stock", "stock", "available", "sold out", "still buy")),
    ("material", ("材质", "面料", "料子", "什么做的", "材料"), ("made of", "material", "fabric", "cotton or")),
    ("size", ("尺寸", "尺码", "多大", "大小", "规格"), ("size", "how big", "dimension")),
    ("colour", ("颜色", "色"), ("color", "colour")),
    ("feature", ("特点", "好用", "怎么样", "介绍"), ("special", "any good", "tell me about", "why should i buy")),
]
POLICY_OF = {"invoices": "invoices", "refunds": "refunds", "returns": "returns", "after-sales": "after-sales",
             "address": "shipping", "coupons": "coupons", "ship_today": "shipping", "courier": "shipping",
             "courier_choose": "shipping",
             "delivery": "delivery"}
PRODUCT_TOPICS = ("price", "stock", "material", "size", "colour", "feature")
ATTR_COLUMNS = {
    "material": ("material", "材质", "面料", "fabric"),
    "size": ("size", "尺寸", "规格", "dimensions", "sizes"),
    "colour": ("colour", "color", "colours", "colors", "颜色"),
    "feature": ("feature", "features", "特点", "卖点"),
}
GREETINGS = ("在吗", "你好", "您好", "在不在", "有人吗", "亲在吗", "亲", "hello", "hi", "hey", "hi there",
             "anyone there", "good morning", "are you there", "hi are you there", "在", "哈喽")
THANKS_ZH = ("谢谢", "好的", "知道了", "嗯嗯", "好吧", "拜拜", "行", "ok", "再见")
THANKS_EN = ("thank", "thanks", "got it", "alright", "bye", "great", "cool", "ok")
BOT_Q = ("机器人", "are you a bot", "are you a robot", "real person", "真人")
ANGRY_ZH = ("气", "着急", "一直等", "一直在家等", "不敢出门", "失望", "无语", "太慢", "怎么还没", "还没到", "还不到", "等了好", "等了好几天", "催了", "急死", "投诉", "差评", "一直不更新", "怎么回事", "！！")
ANGRY_EN = ("frustrat", "been waiting", "waited", "disappoint", "so late", "still isn't here", "stuck at home", "where is my parcel", "still not", "still hasn't", "taking forever", "annoyed", "fed up", "so slow", "late", "nobody tells",
            "hasn't moved", "angry", "ridiculous", "unacceptable", "complain", "!!", "hasn't arrived", "what is going on")
PHONE_NOTE = ("电话", "手机", "phone", "number is", "call me")
# An order number or SKU: 6+ id characters with at least one digit ("thanksalot" is no id).
_ID = re.compile(r"(?=[A-Za-z\-_]*[0-9])[A-Za-z0-9][A-Za-z0-9\-_]{5,}")
_NOT_BARE = re.compile(f"[^0-9a-z{CJK_IDEOGRAPHS}]")
NUMERIC_TOPICS = frozenset({"coupons", "delivery", "returns", "refunds", "after-sales", "ship_today", "restock"})
# Words in a policy paragraph that show it answers this topic (to pick the right paragraph).
CUES = {
    "ship_today": ("当天", "次日", "same day", "next day"),
    "courier_choose": ("顺丰", "指定", "sf express", "choose"),
    "courier": ("快递", "courier", "ship with", "express"),
    "address": ("地址", "address"),
    "delivery": ("送达", "天", "days"),
    "returns": ("退货", "return"),
    "refunds": ("退款", "refund"),
    "coupons": ("券", "减", "coupon", "off"),
    "invoices": ("发票", "invoice"),
    "after-sales": ("破损", "质量", "damaged", "defective"),
    "restock": ("补货", "restock"),
}
_NORM_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFKC", text).lower().strip()


def _has(text: str, words: tuple[str, ...]) -> bool:
    """Chinese keywords match anywhere; English ones only at the start of a word
    ("late" must not fire inside "insulated")."""
    return any(_pattern(w).search(text) if w.isascii() else w in text for w in words)


@functools.lru_cache(maxsize=None)
def _pattern(word: str) -> re.Pattern[str]:
    return re.compile((r"(?<![a-z0-9])" if word[:1].isalnum() else "") + re.escape(word))


def _bare(text: str) -> str:
    """Letters, digits and CJK only: how greetings and ids are compared."""
    return _NOT_BARE.sub("", _norm(text))


_GREETINGS = frozenset(_bare(g) for g in GREETINGS)


class ReferenceTeacher(Teacher):
    """Answers from the shop pack's knowledge, deterministically (see the module docstring)."""

    name = "reference"

    def __init__(self, *, pack: Any, kb: Any = None):
        from endcloud.kb import KnowledgeBase

        self.pack = pack
        self.kb = kb or KnowledgeBase(pack)
        self.currency = pack.currency
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """Changes whenever the pack's knowledge does (so cached answers go stale with it)."""
        if self._fingerprint is None:
            import hashlib

            digest = hashlib.sha256(self.pack.knowledge_text().encode("utf-8")).hexdigest()[:16]
            self._fingerprint = f"reference|{self.pack.name}|{digest}"
        return self._fingerprint

    async def areply(self, messages: Messages) -> Reply:
        return self.answer(messages)

    def reply(self, messages: Messages) -> Reply:
        return self.answer(messages)

    # -- the answer ------------------------------------------------------------------------
    def answer(self, messages: Messages) -> Reply:
        msgs = [m for m in check_messages(messages) if m["role"] != "system"]
        users = [m["content"] for m in msgs if m["role"] == "user"]
        last = users[-1] if users else ""
        # Order numbers and SKUs say nothing about the language; a message of nothing else
        # ("A-1001?") is answered in the shop's.
        lang = detect_lang(_ID.sub("", last), default=self.pack.language)
        text = self._compose(last, users[:-1], lang).strip()
        usage = Usage(estimate_message_tokens(msgs), estimate_tokens(text))
        return Reply(text=text, source="cloud", model=f"reference:{self.pack.name}", usage=usage)

    def _compose(self, last: str, earlier: list[str], lang: str) -> str:
        zh = lang == "zh"
        q = _norm(last)
        flat = _NORM_SPACE.sub("", q)
        hi = "亲，" if zh else "Hi! "
        if not flat:
            return "亲，请问有什么可以帮您？" if zh else "Hi! How can I help you today?"
        orders = self.kb.orders_in(last)
        context_orders = [o for u in reversed(earlier) for o in self.kb.orders_in(u)]
        product = self.kb.product(last)
        topics = [name for name, zw, ew in TOPICS if _has(q, zw) or _has(q, ew)]
        if "refunds" in topics and "delivery" in topics:  # "退款多久到账" / "when will my refund arrive"
            topics.remove("delivery")
        angry = _has(q, ANGRY_ZH) or _has(q, ANGRY_EN)
        ids = _ID.findall(q)
        # A bare number, maybe with a word around it ("订单 123…", "123… this one").
        only_id = len(ids) == 1 and len(_bare(q.replace(ids[0], ""))) <= 7

        if angry and ("delivery" in topics or orders or context_orders or not topics or "courier" in topics):
            return self._frustrated(orders or context_orders[:1], zh)
        if orders:
            return " ".join(self._order(o, zh) for o in orders[:2])
        if only_id and not topics:
            if product is not None:
                return hi + self._product_line(product, zh)
            return ("亲，没有查到这个号码对应的订单或商品，麻烦核对一下订单号哦。" if zh else
                    "Hi! I couldn't find an order or product with that number. Could you double-check it?")
        if _bare(q) in _GREETINGS:
            return "亲，在的，请问有什么可以帮您？" if zh else "Hi! How can I help you today?"
        if _has(q, BOT_Q):
            return ("亲，我是店铺的智能客服，有问题随时问我，复杂的问题会转人工哦。" if zh else
                    "Hi! I'm the shop's virtual assistant; ask me anything, and I'll pass tricky questions to a colleague.")
        if not topics and _has(q, PHONE_NOTE):
            return "好的亲，已经帮您备注了。" if zh else "Got it, I've noted that down."
        if not topics and len(flat) <= 12 and (_has(q, THANKS_ZH) if zh else _has(q, THANKS_EN)):
            return "不客气亲，有需要随时找我哦～" if zh else "You're welcome! Let me know if there's anything else."

        product_topics = [t for t in topics if t in PRODUCT_TOPICS]
        if product is None and product_topics and not any(t in POLICY_OF for t in topics):
            for u in reversed(earlier):  # "多少钱？" right after asking about a towel
                product = self.kb.product(u)
                if product is not None:
                    break
        parts: list[str] = []
        if product is not None and (product_topics or not topics):
            parts.append(self._product_answer(product, product_topics, zh))
        policy_topics = [t for t in topics if t in POLICY_OF]
        if policy_topics:
            if policy_topics[0] == "after-sales" and product is not None:
                parts = []  # a broken towel is an after-sales question, not a product one
            for t in policy_topics[:2]:
                snippet = self._policy_answer(last, t)
                if snippet and snippet not in parts:
                    parts.append(snippet)
        elif product_topics and product is None:
            return ("亲，请问您问的是哪款商品呢？发一下商品名称或编号，我帮您查哦。" if zh else
                    "Hi! Which product do you mean? Send me its name or number and I'll check.")
        if not parts:
            found = self._search_answer(last)
            if found:
                parts.append(found)
        if not parts:
            return ("亲，这个问题我这边暂时没有准确的信息，帮您转给同事核实后回复您哦。" if zh else
                    "Sorry, I don't have reliable information on that; I'll check with a colleague and get back to you.")
        # One "亲，" / "Hi!" per reply, however many facts it joins.
        parts = [parts[0]] + [p.removeprefix("亲，").removeprefix("Hi! ") for p in parts[1:]]
        body = " ".join(parts) if not zh else "".join(_end(p, zh) for p in parts)
        return (hi + body) if not body.startswith(("亲", "Hi")) else body

    # -- pieces ----------------------------------------------------------------------------
    def _money(self, p: Any, zh: bool) -> str:
        cur = self.currency.upper()
        if cur in ("CNY", "RMB"):
            return f"{p.price_text}元" if zh else f"¥{p.price_text}"
        symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(cur)
        return f"{symbol}{p.price_text}" if symbol else f"{p.price_text} {cur}"

    def _product_line(self, p: Any, zh: bool) -> str:
        attrs = [v for k, v in p.attrs.items() if k not in ("category", "类目", "url")]
        stock = (f"现在有货，库存{p.stock}件" if p.stock > 0 else "暂时缺货") if zh else \
                (f"{p.stock} in stock" if p.stock > 0 else "currently out of stock")
        if zh:
            return f"{p.name}（{p.sku}）" + ("，".join([""] + attrs) if attrs else "") + f"，价格{self._money(p, zh)}，{stock}。"
        return f"{p.name} ({p.sku})" + ("".join(f", {a}" for a in attrs)) + f", {self._money(p, zh)}, {stock}."

    def _attr(self, p: Any, topic: str) -> str | None:
        for col in ATTR_COLUMNS.get(topic, ()):
            for k, v in p.attrs.items():
                if _norm(k) == col:
                    return v
        return None

    def _product_answer(self, p: Any, topics: list[str], zh: bool) -> str:
        if not topics:  # "613292316090 this one", "tell me about X": everything we know
            return self._product_line(p, zh)
        out = []
        for t in topics:
            if t == "price":
                out.append(f"{p.name}现在{self._money(p, zh)}哦。" if zh else f"The {p.name} is {self._money(p, zh)}.")
            elif t == "stock":
                if p.stock > 0:
                    out.append(f"{p.name}有货的，现在还有{p.stock}件，可以直接拍哦。" if zh else f"Yes, the {p.name} is in stock, {p.stock} left.")
                else:
                    restock = self._policy_answer("缺货 补货" if zh else "out of stock restock", "restock", strict=True)
                    out.append((f"{p.name}暂时缺货。" if zh else f"Sorry, the {p.name} is out of stock right now. ") + (restock or ""))
            else:
                v = self._attr(p, t)
                if v:
                    names = {"material": ("材质是", "is made of"), "size": ("尺寸是", "size:"), "colour": ("颜色有", "comes in"),
                             "feature": ("的特点是", "is")}[t]
                    out.append(f"{p.name}{names[0]}{v}哦。" if zh else f"The {p.name} {names[1]} {v}.")
                else:
                    out.append(self._product_line(p, zh))
        seen: list[str] = []
        for s in out:
            if s not in seen:
                seen.append(s)
        return ("" if zh else " ").join(seen)

    def _policy_answer(self, query: str, topic: str, *, strict: bool = False) -> str | None:
        """The FAQ answer or policy paragraph of this topic that best fits the question:
        retrieval order first, but a paragraph showing the topic's cue words wins (so
        "ship today?" gets the cut-off paragraph, not the courier one). `strict`: only a
        paragraph with a cue word, else None."""
        key = POLICY_OF.get(topic, "after-sales" if topic == "restock" else topic)
        title = self.pack.policy_titles.get(key, key)
        cues = CUES.get(topic, ())
        candidates: list[str] = []
        for snip in self.kb.search(query, k=10):
            if snip.source == "policy" and snip.ref == key:
                candidates.append(_strip_title(snip.text, title))
            elif snip.source == "faq" and _faq_topic(snip.text) == key:
                candidates.append(_faq_answer(snip.text))
        candidates.extend(p for p in _paragraphs(self.pack.policies.get(key, "")) if p not in candidates)
        # Facts of these topics are numbers (days, amounts, hours): a paragraph with a
        # number beats one that only talks about the topic ("coupons cannot be combined").
        numeric = topic in NUMERIC_TOPICS
        for c in candidates:
            if _has(_norm(c), cues) and (not numeric or re.search(r"[0-9]", c)):
                return c
        for c in candidates:
            if _has(_norm(c), cues):
                return c
        if strict or not candidates:
            return None
        return candidates[0]

    def _search_answer(self, query: str) -> str | None:
        """Plain retrieval when no topic matched; only a confident hit is used."""
        from endcloud.kb import tokenize

        q = set(tokenize(query))
        if not q:
            return None
        for snip in self.kb.search(query, k=1):
            overlap = len(q & set(tokenize(snip.text))) / len(q)
            if overlap < 0.5:
                return None
            if snip.source == "faq":
                return _faq_answer(snip.text)
            if snip.source == "policy":
                return _strip_title(snip.text, self.pack.policy_titles.get(snip.ref, snip.ref))
            if snip.source == "catalog":
                p = self.kb.product(snip.ref)
                return self._product_line(p, self.pack.language == "zh") if p else snip.text
            return snip.text
        return None

    def _order(self, oid: str, zh: bool) -> str:
        row = self.kb.order(oid) or {}
        status, courier = row.get("status", ""), row.get("courier", "")
        tn, ship, eta = row.get("tracking_no", ""), row.get("ship_date", ""), row.get("eta_days", "")
        if zh:
            s = f"亲，您的订单{oid}" + (f"目前{status}" if status else "已查到")
            if courier:
                s += f"，{courier}快递" if "快递" not in courier else f"，{courier}"
            if tn:
                s += f"，运单号{tn}"
            if ship:
                s += f"，{ship}发出"
            if eta:
                s += f"，预计{eta}天送达"
            return s + "。"
        s = f"Hi! Your order {oid} is " + (status or "on record")
        if courier:
            s += f", shipped with {courier}"
        if tn:
            s += f" (tracking number {tn})"
        if ship:
            s += f" on {ship}"
        if eta:
            s += f"; expected delivery in {eta} days"
        return s + "."

    def _frustrated(self, orders: list[str], zh: bool) -> str:
        sorry = "非常抱歉让您久等了！" if zh else "I'm really sorry for the wait! "
        facts = [self._order(o, zh).removeprefix("亲，").removeprefix("Hi! ") for o in orders[:1]]
        delivery = self._policy_answer("几天送达 多久到" if zh else "how long delivery takes", "delivery")
        if delivery:
            facts.append(delivery)
        chase = "我这边马上帮您催一下快递，有进展第一时间告诉您。" if zh else "I'll chase the courier for you right away and update you as soon as I hear back."
        if zh:
            return sorry + "".join(_end(f, zh) for f in facts) + chase
        return sorry + " ".join(_end(f, zh) for f in facts) + " " + chase


def _paragraphs(body: str) -> list[str]:
    """A policy section's paragraphs: blank-line separated, each list item on its own
    (the same units `endcloud.kb` retrieves)."""
    paras: list[str] = []
    buf: list[str] = []
    for line in body.splitlines():
        s = line.strip()
        item = re.match(r"^(?:[-*]|\d+[.)、])\s*", s)
        if not s or item:
            if buf:
                paras.append(" ".join(buf))
            buf = [s[item.end():]] if item else []
        else:
            buf.append(s)
    if buf:
        paras.append(" ".join(buf))
    return [p for p in paras if p]


def _end(text: str, zh: bool) -> str:
    text = text.strip()
    if text and text[-1] not in "。！？.!?～~":
        text += "。" if zh else "."
    return text


def _strip_title(text: str, title: str) -> str:
    for sep in ("：", ": "):
        if text.startswith(title + sep):
            return text[len(title) + len(sep):].strip()
    return text


def _faq_answer(text: str) -> str:
    for sep in ("\n答：", "\nA: "):
        if sep in text:
            return text.split(sep, 1)[1].strip()
    return text


def _faq_topic(text: str) -> str | None:
    """Which policy an FAQ entry is about, from the words of its question."""
    q = _norm(text.split("\n", 1)[0])
    for name, zw, ew in TOPICS:
        if name in POLICY_OF and (_has(q, zw) or _has(q, ew)):
            return POLICY_OF[name]
    return None
