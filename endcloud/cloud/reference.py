"""The reference teacher: an offline, deterministic stand-in for the cloud, from any shop pack.

    teacher = ReferenceTeacher(pack=ShopPack.load("shop/"))
    teacher.reply([{"role": "user", "content": "龙井多少钱？"}]).text   # '亲，西湖龙井的价格是128元哦。'

It is not a language model and does not pretend to be one. It reads the customer's last
message (and the conversation for context), decides what is asked, and answers with one
short sentence from a few fixed templates, filled only with what the shop pack holds or the
conversation said — the end model is trained to imitate these replies from the same
snippets in its prompt, so they must be short, extractive and regular:

    greeting / thanks / "are you a bot"   one fixed reply each (small general phrase lists)
    an order                              its status and tracking number: an order id in the
                                          message (`kb.order`), or the customer's orders in the
                                          "Customer:" system message serving adds (privacy
                                          placeholders such as [ORDER_1] are kept verbatim)
    a product attribute                   price, stock, or any catalog column, the product
                                          named loosely (`kb.product`) or taken from an earlier
                                          turn ("它有货吗？"); "碧螺春呢？" reuses the attribute
                                          the previous question asked about; a few products
                                          tied by a loose name ("the northstar 2p": two
                                          colours) each get the fact
    the cheapest / dearest X              the card of the product priced lowest (highest) of
                                          those the question names equally loosely, else the
                                          previous message named, else of the catalog ("whats
                                          ur cheapest tent", "猫粮哪款最便宜")
    a product and words no header uses    the clause of its row that covers them ("r value of
                                          X" -> "R-value 4.2" of a notes column), else the
                                          hand-off: its price-and-stock card is only for a
                                          product asked for itself ("tell me about X", "想买X")
    a policy / FAQ question               ONE sentence, verbatim, of the snippet `kb.search`
                                          ranks and that covers most of the question's terms
                                          (`kb.coverage`, IDF-weighted); sections may be titled
                                          anything, in any language
    anything else                         a fixed hand-off reply: it never invents an answer

The customer's typos are read as the shop's words first (`kb.spell`: one edit from exactly
one word of the pack or the synonym table, "courer" -> "courier").

Replies are in the customer's language (zh or en) where the facts are structured (products,
orders); policy text is quoted in the pack's language ("亲，" before a Chinese quote). No
sampling: the same conversation always gets the same reply — `endcloud demo` uses it when no
cloud is configured, as the labeller, the judge's reference and the takeover.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from endcloud.cloud.teacher import Messages, Teacher, check_messages
from endcloud.kb import (
    KnowledgeBase, Product, asks_for_number, asks_when, content_tokens, format_number, is_name_column, normalise, tokenize,
    without_spans,
)
from endcloud.records import Reply, Usage
from endcloud.text import CJK_IDEOGRAPH, detect_lang, estimate_message_tokens, estimate_tokens

# A policy/FAQ snippet is quoted only when it holds at least this share of the question's
# terms (IDF-weighted, synonyms counted; `KnowledgeBase.coverage`), by the question's
# language (Chinese is read in characters and pairs, English in words: the shares differ).
# Tuned on generated shops only (`endcloud shop new`, seeds 0-2, zh and en): their eval
# questions and chats, 20 in-domain questions per language written for them, and 30
# off-topic ones per language, which must get the hand-off reply. Each value is the knee:
# one step (0.05) lower hands off far fewer off-topic questions (en 84/90 -> 75/90, zh
# 78/90 -> 65/90), one step higher answers far fewer of the shop's own (zh eval 91% -> 88%,
# written questions 39/60 -> 32/60) for little more (en 87/90, zh 81/90).
CONFIDENT = {"zh": 0.40, "en": 0.45}
# How many snippets of `kb.search` are read: the same number the end model's prompt carries.
SNIPPETS = 3
# How many earlier turns (newest first) are searched for the product a follow-up refers to.
LOOKBACK = 4
# A question that names up to this many products equally loosely gets the asked fact of each.
MAX_AMBIGUOUS = 3

REPLIES = {
    "greeting": {"zh": "亲，在的，请问有什么可以帮您？", "en": "Hi! How can I help you today?"},
    "thanks": {"zh": "不客气亲，有需要随时找我哦～", "en": "You're welcome! Let me know if there's anything else."},
    "bot": {"zh": "亲，我是店铺的智能客服，复杂的问题会帮您转人工哦。",
            "en": "I'm the shop's virtual assistant; I'll pass anything tricky to a colleague."},
    "unknown": {"zh": "抱歉亲，这个问题我这边没有确切信息，帮您转人工客服确认一下哦。",
                "en": "Sorry, I don't have reliable information on that. Let me pass you to a colleague who can check."},
}

# Small, general phrase lists (compared on the text without spaces and punctuation).
GREETINGS = ("你好", "您好", "你好呀", "在吗", "在不在", "在么", "有人吗", "亲", "哈喽", "嗨", "早上好", "晚上好", "在",
             "hello", "hi", "hey", "hithere", "heythere", "anyonethere", "isanyonethere", "areyouthere", "goodmorning",
             "goodafternoon", "goodevening", "hiya")
THANKS = ("谢谢", "谢谢你", "谢谢亲", "多谢", "感谢", "好的", "好", "好吧", "行", "可以", "嗯", "嗯嗯", "哦", "噢", "知道了", "明白了",
          "收到", "了解", "拜拜", "再见", "辛苦了", "ok", "okay", "thanks", "thank", "thankyou", "thx", "ty", "cheers", "great",
          "cool", "gotit", "alright", "allright", "bye", "goodbye", "perfect", "nice", "sure", "alot", "somuch", "verymuch",
          "you", "啦", "哈", "呀", "了")
BOT = ("机器人", "真人", "人工智能", "你是人吗", "是不是人", "areyouabot", "areyouarobot", "isthisabot", "realperson",
       "areyouhuman", "areyouareal", "amitalkingtoa", "humanbeing")
# Words that ask about the customer's own order when it names none (answered from the
# "Customer:" system message only).
ORDER_CUES = ("订单", "我的快递", "我的包裹", "物流", "到哪", "单号", "发货了吗", "发了吗", "到了没", "到了吗",
              "my order", "my package", "my parcel", "tracking", "where is my", "shipped yet", "order status")
# Words that refer back without asking anything ("碧螺春呢？", "and the black one?").
FILLER = ("这个", "那个", "这款", "那款", "这件", "那件", "它", "还有", "一下", "和", "跟", "款", "个", "件", "换成", "换",
          "one", "ones", "too", "also", "then", "instead", "same", "question", "quick")

# Words that ask for a product itself rather than a fact about it ("tell me about X", "想买个X",
# "X是什么东西"): a named product with only these beside it gets its price-and-stock card.
ABOUT = ("东西", "商品", "产品", "宝贝", "买", "想买", "要买", "购买", "找", "卖", "有卖", "介绍", "说说", "讲讲", "看看", "了解",
         "详情", "信息", "资料", "咨询", "问问", "链接", "sell", "buy", "item", "product", "looking", "look", "like",
         "info", "information", "detail", "details", "interested", "carry", "after", "check", "thing", "stuff", "see",
         "describe", "货号", "编号")

# Common e-commerce attributes: concept -> (zh label, en label, zh cues, en cues). A catalog
# column belongs to the concept its header names (a label or cue, in either language); a
# column of no concept is matched by its own header words.
PRICE, STOCK = "price", "stock"
ATTRIBUTES: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    PRICE: ("价格", "price", ("价格", "多少钱", "价钱", "什么价", "啥价", "价位", "几块", "卖多少", "售价", "单价", "多钱", "贵不贵", "咋卖",
                            "怎么卖"),
            ("price", "cost", "how much", "pricing")),
    STOCK: ("库存", "stock", ("有货", "库存", "现货", "缺货", "没货", "还有没有", "有没有货", "卖完", "售罄", "断货", "还有吗",
                            "能买到", "还能买", "还剩", "能拍", "可以拍", "能下单", "可以下单"),
            ("in stock", "stock", "available", "availability", "sold out", "out of stock", "still buy", "any left", "left",
             "do you have")),
    "material": ("材质", "material", ("材质", "面料", "材料", "料子", "什么做的", "什么料"),
                 ("material", "made of", "made from", "fabric")),
    "size": ("尺寸", "size", ("尺寸", "尺码", "多大", "大小", "规格", "码数", "几码", "多长", "多宽", "多高"),
             ("size", "how big", "how large", "dimension", "measurement")),
    "colour": ("颜色", "colour", ("颜色", "什么色", "色号", "配色", "几个色", "几种色"), ("colour", "color")),
    "weight": ("重量", "weight", ("重量", "多重", "重不重", "几斤", "几克", "克重", "净含量"), ("weight", "weigh", "heavy")),
    "origin": ("产地", "origin", ("产地", "哪里产", "哪产", "产自", "原产", "哪里生产", "哪里的"),
               ("origin", "made in", "where is it made", "where was it made", "where is it from", "country")),
    "brand": ("品牌", "brand", ("品牌", "牌子"), ("brand",)),
    "model": ("型号", "model", ("型号",), ("model",)),
    "capacity": ("容量", "capacity", ("容量", "多少毫升", "多少升", "装多少"),
                 ("capacity", "volume", "how much does it hold", "litre", "liter", "how many people")),
    "compatibility": ("适用", "compatibility", ("适用", "适配", "兼容", "适合", "能用在", "配什么"),
                      ("compatible", "compatibility", "fit", "work with", "works with")),
    "flavour": ("口味", "flavour", ("口味", "味道", "什么味"), ("flavour", "flavor", "taste")),
    "shelf_life": ("保质期", "shelf life", ("保质期", "保存多久", "放多久"), ("shelf life", "expiry", "expiration", "best before")),
    "ingredients": ("成分", "ingredients", ("成分", "配料", "含有"), ("ingredient", "contain")),
    "warranty": ("保修", "warranty", ("保修", "质保"), ("warranty", "guarantee")),
    "usage": ("用法", "usage", ("用法", "怎么用", "使用方法", "冲泡"), ("how to use", "usage", "direction", "instruction")),
    "grade": ("等级", "grade", ("等级", "级别"), ("grade",)),
    "style": ("款式", "style", ("款式", "风格"), ("style",)),
    "category": ("类目", "category", ("类目", "分类", "品类"), ("category",)),
    "feature": ("特点", "feature", ("特点", "卖点", "亮点", "特色", "好用吗", "怎么样", "介绍"),
                ("feature", "special", "any good", "highlight", "tell me about", "why should i buy")),
}

# Asking for the catalog's extreme of price ("your cheapest sleeping bag", "最贵的茶是哪款"): the
# product priced lowest (highest) of those the rest of the question names.
_CHEAPEST = re.compile(r"\b(?:cheapest|least expensive|lowest[- ]priced|lowest price|most affordable)\b"
                       r"|最便宜|最实惠|最低价|价格最低|价钱最低")
_DEAREST = re.compile(r"\b(?:most expensive|priciest|highest[- ]priced|highest price)\b|最贵|价格最高|价钱最高|最高价")
# Question words a superlative asks with ("whats ur cheapest X", "哪款最便宜"), beyond the stop words.
_WHICH_TOKENS = frozenset(tokenize("what whats which ur u r 哪 款 种 家 是"))

_PLACEHOLDER = re.compile(r"\[[A-Z]+_\d+\]")
_ORDER_PLACEHOLDER = re.compile(r"\[ORDER_\d+\]")
# An order number or SKU: 6+ id characters with at least one digit ("thanksalot" is no id).
_ID = re.compile(r"(?=[A-Za-z\-_]*[0-9])[A-Za-z0-9][A-Za-z0-9\-_]{5,}")
_NOT_BARE = re.compile(r"[\W_]+")
_DIGIT = re.compile(r"[0-9]")
_SHIP_DATE = re.compile(r"ship.*date|date.*ship|shipped|dispatch|发货(?:日期|时间)|发出日期")  # an orders.csv column
# A message that may ask about an order named a turn earlier ("when did it ship?", "单号发我下").
_ORDER_FOLLOW_UP = re.compile(r"(?<![a-z])(?:ship|shipped|dispatch|deliver|delivered|arrive|tracking|track|status|when)"
                              r"|发货|发了|发出|快递|物流|单号|到了|到哪|签收|状态")
_CLAUSE = re.compile(r"[;；，,、]")  # the clauses of a catalog value ("2 doors; peak height 104 cm")
_MARKUP = re.compile(r"\*\*|__|`")  # markdown emphasis, not said in a chat reply
_SENTENCE = re.compile(r"[^。！？!?]*?(?:[。！？!?]+|\.(?:\s+|$)|$)")
_CUSTOMER_ORDER = re.compile(r"^order\s+(.*)$")
# Personal data is not what a question asks about: its words must not count against the
# snippet that answers "能改成[地址]吗". Orders and tracking numbers are looked up instead.
_PII_TYPES = frozenset({"PHONE", "EMAIL", "ADDRESS", "ID", "CARD"})
_CONTACT_LABEL = re.compile(r"联系电话|手机号码?|电话号码?|电话|手机|邮箱|联系方式|打我|"
                            r"(?i:\b(?:my )?(?:phone|mobile|cell|e-?mail)(?: number| address)?(?: is)?\b|\bcall me(?: at)?\b|\bmy number is\b)")


def _bare(text: str) -> str:
    return _NOT_BARE.sub("", normalise(text))


def _phrases(words: tuple[str, ...]) -> re.Pattern[str]:
    """A bare text made of nothing but these phrases."""
    alt = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(f"(?:{alt})+")


_ONLY_GREETING = _phrases(GREETINGS)
_ONLY_SMALLTALK = _phrases(GREETINGS + THANKS)
_THANKS = _phrases(THANKS[:-4])  # a particle alone ("啦") thanks nobody
# A greeting before the question ("你好，龙井多少钱"); "亲" only as a word of its own (亲子装).
_LEADING_GREETING = re.compile(
    r"^\s*(?:你好呀|你好|您好|亲在吗|在吗|在不在|有人吗|哈喽|(?:hello|hi there|hey there|hi|hey|good (?:morning|afternoon|evening)"
    r"|(?:is )?anyone there|are you there)(?![a-z0-9])|亲(?=[\s,，~～!！。]))[\s,，.。!！?？~～]*", re.IGNORECASE)
_FILLER_TOKENS = frozenset(t for w in FILLER for t in tokenize(w))
_ABOUT_TOKENS = frozenset(t for w in ABOUT for t in tokenize(w))
# A message that follows up on the previous one ("那偏远地区呢？", "what about Alaska?").
_FOLLOW_UP = re.compile(r"^\s*(?:那|那么|还有|and\b|what about\b|how about\b|same for\b)|呢\s*[?？]?\s*$")


def _cue_pattern(cue: str) -> re.Pattern[str]:
    if CJK_IDEOGRAPH.search(cue):
        return re.compile(re.escape(cue))
    # An English cue at word boundaries, plural allowed ("colors", "dimensions").
    return re.compile(r"(?<![a-z0-9])" + re.escape(cue) + r"(?:s|es)?(?![a-z0-9])")


def _concept_of(column: str) -> str | None:
    """The attribute concept a catalog column header names, if any ("面料成分" -> material)."""
    col = normalise(column).replace("_", " ").strip()
    words = set(tokenize(col))
    for concept, (zh, en, zh_cues, en_cues) in ATTRIBUTES.items():
        if concept in (PRICE, STOCK):
            continue
        for cue in (zh, en, concept.replace("_", " ")) + zh_cues + en_cues:
            if CJK_IDEOGRAPH.search(cue):
                if cue in col:
                    return concept
            elif " " not in cue and tokenize(cue) and tokenize(cue)[0] in words or cue == col:
                return concept
    # A Chinese header in words of its own ("用料"): the concept sharing most of its characters
    # with its labels and cues, when one alone does (question words like 多/哪 and 用 do not count).
    chars = set(CJK_IDEOGRAPH.findall(col)) - set("什么多少几哪里的是吗怎样有用")
    shared = {c: len(chars & set("".join((zh, *zh_cues)))) for c, (zh, _, zh_cues, _) in ATTRIBUTES.items()
              if c not in (PRICE, STOCK)}
    best = max(shared.values(), default=0)
    winners = [c for c, n in shared.items() if n == best]
    return winners[0] if best > 0 and len(winners) == 1 else None


@dataclass(frozen=True, slots=True)
class _Slot:
    """One thing a question may ask about a product: price, stock or a catalog column."""

    key: str  # PRICE, STOCK or the column
    label_zh: str
    label_en: str
    cues: tuple[re.Pattern[str], ...]


@dataclass(slots=True)
class _Turn:
    """The customer's last message, analysed."""

    rest: str  # normalised, without the product mention, ids and placeholders: what is asked
    lang: str
    product: Product | None
    ambiguous: list[Product]  # loosely named candidates that tie (no product chosen)
    asked: list[tuple[_Slot, tuple[int, int]]]  # attribute slots asked, in order, with the cue's span in rest


class ReferenceTeacher(Teacher):
    """Answers from the shop pack's knowledge, deterministically (see the module docstring)."""

    name = "reference"

    def __init__(self, *, pack: Any, kb: Any = None):
        self.pack = pack
        self.kb = kb or KnowledgeBase(pack)
        self.currency = pack.currency
        self._fingerprint: str | None = None
        self._slots = self._build_slots()

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
        msgs = check_messages(messages)
        system = [m["content"] for m in msgs if m["role"] == "system"]
        # The customer's typos against the shop's words ("courer" -> "courier"; `kb.spell`).
        turns = [dict(m, content=self.kb.spell(m["content"])) if m["role"] == "user" else m
                 for m in msgs if m["role"] in ("user", "assistant")]
        last = next((i for i in range(len(turns) - 1, -1, -1) if turns[i]["role"] == "user"), None)
        question = turns[last]["content"] if last is not None else ""
        earlier = turns[:last] if last is not None else turns
        text = self._compose(question, earlier, _customer_orders(system)).strip()
        usage = Usage(estimate_message_tokens([m for m in msgs if m["role"] != "system"]), estimate_tokens(text))
        return Reply(text=text, source="cloud", model=f"reference:{self.pack.name}", usage=usage)

    def _compose(self, question: str, earlier: list[dict[str, str]], customer_orders: list[dict[str, str]]) -> str:
        prev_users = [m["content"] for m in earlier if m["role"] == "user"]
        fallback = detect_lang(*(_PLACEHOLDER.sub(" ", _ID.sub(" ", u)) for u in prev_users[-2:]), default=self.pack.language)
        bare = _bare(question)
        lang = detect_lang(_PLACEHOLDER.sub(" ", _ID.sub(" ", question)), default=fallback)
        if not bare or _ONLY_GREETING.fullmatch(bare):
            return REPLIES["greeting"][lang]
        if _ONLY_SMALLTALK.fullmatch(bare):
            return REPLIES["thanks" if _THANKS.search(bare) else "greeting"][lang]

        # Orders first: a customer who names one wants that one.
        order_reply = self._orders(question, lang, customer_orders)
        if order_reply is None and prev_users and _ORDER_FOLLOW_UP.search(normalise(question)):
            # "when did it ship?" / "单号发我下" right after naming an order: that order
            named = [o for u in prev_users[-LOOKBACK:] for o in self.kb.orders_in(u)]
            if named:
                order_reply = self._orders(f"{named[-1]} {question}", lang, customer_orders)
        if order_reply is not None:
            return order_reply

        turn = self._analyse(question, fallback)
        lang = turn.lang
        if turn.product is None and not turn.asked and any(b in bare for b in BOT):
            return REPLIES["bot"][lang]
        extreme = self._extreme(question, prev_users[-1] if prev_users else None, lang)
        if extreme is not None:
            return extreme
        product = turn.product
        asked = turn.asked
        from_context = False
        if product is None and asked:
            product = self._context_product(earlier, turn.ambiguous)
            from_context = product is not None
        if product is not None and not asked and prev_users:
            # "碧螺春呢？" right after "龙井多少钱？": the same question about another product.
            if not _content(turn.rest):
                asked = self._analyse(prev_users[-1], fallback).asked
        if product is None and asked and 1 < len(turn.ambiguous) <= MAX_AMBIGUOUS \
                and not _content(_without_cues(turn.rest, turn.asked)) - _ABOUT_TOKENS:
            # Named loosely, a few products tie ("the northstar 2p": two colours) and nothing
            # else is asked ("when will the orange one be back?" is not): the fact for each.
            lines = [s for s in (self._attr_line(p, asked[0][0], lang) for p in turn.ambiguous) if s]
            if len(lines) == len(turn.ambiguous):
                return _joined(dict.fromkeys(lines), lang)
        if product is not None and asked:
            if from_context:
                # "运费多少钱？" after a product question asks about shipping, not about the
                # product's price: when the words beside the attribute cue make a confident
                # policy question, the policy answers.
                leftover = _without_cues(turn.rest, turn.asked)
                quoted = self._policy(question, leftover, None, lang) if _content(leftover) else None
                if quoted is not None:
                    return quoted
            lines = [s for s in (self._attr_line(product, slot, lang) for slot, _ in asked[:2]) if s]
            if lines:
                return _joined(dict.fromkeys(lines), lang)
        if product is not None and not asked and turn.product is not None:
            # A product named, nothing asked of it: a policy question about it ("X arrived
            # damaged"), the product itself ("520401029636", "tell me about X", "想买个X") —
            # or something about it the pack does not hold ("is X drop tested?", "X能机洗吗"),
            # which its price-and-stock card would not answer.
            quoted = self._policy(question, turn.rest, None, lang) if _content(turn.rest) else None
            if quoted is not None:
                return quoted
            if not _content(turn.rest) - _ABOUT_TOKENS:
                return self._summary(product, lang)
            # Asked in words no column header uses ("r value of X", "X适合多大的猫"): the part of
            # the product's row that covers them, as a policy sentence is found.
            return self._row_fact(product, turn.rest, lang) or REPLIES["unknown"][lang]
        # No product to answer about: a policy may still answer the words beside an attribute
        # cue ("运费多少钱？"), but not the cue alone ("有货吗？" of no product says nothing).
        asked_about = _without_cues(turn.rest, turn.asked) if turn.asked else turn.rest
        quoted = self._policy(question, asked_about, prev_users[-1] if prev_users else None, lang) \
            if _content(asked_about) else None
        if quoted is None and product is None and not turn.asked and _content(turn.rest) - _ABOUT_TOKENS:
            # "狗能用吗" right after a product question: the clause of that product's row, if one covers it
            earlier_product = self._context_product(earlier, turn.ambiguous)
            quoted = self._row_fact(earlier_product, turn.rest, lang) if earlier_product is not None else None
        return quoted or REPLIES["unknown"][lang]

    # -- what the message says -------------------------------------------------------------
    def _analyse(self, message: str, fallback: str) -> _Turn:
        text = _LEADING_GREETING.sub("", message, count=1) or message
        text = _blank_pii(text)
        found = self.kb.products(text)
        product = self.kb.product(text)
        spans: list[tuple[int, int]] = []
        ambiguous: list[Product] = []
        if product is not None:
            spans = list(next(m for m in found if m.product is product).spans)
        elif found and not found[0].exact:
            ambiguous = [m.product for m in _tied(found)]
            spans = [s for m in found for s in m.spans if m.product in ambiguous]
        rest = without_spans(text, spans)
        if len(rest) == len(text):  # a name is personal data too, once it cannot be a product's
            rest = _blank(rest, [(s.start, s.end) for s in _detect(text) if s.type == "NAME"])
        rest = _ID.sub(lambda m: " " * len(m.group()), rest)
        rest = _PLACEHOLDER.sub(lambda m: " " * len(m.group()), rest)
        lang = detect_lang(rest, default=fallback)
        return _Turn(rest=rest, lang=lang, product=product, ambiguous=ambiguous, asked=self._asked(rest))

    def _build_slots(self) -> list[_Slot]:
        slots = []
        for key in (PRICE, STOCK):
            zh, en, zc, ec = ATTRIBUTES[key]
            slots.append(_Slot(key, zh, en, tuple(_cue_pattern(normalise(c)) for c in zc + ec)))
        columns: list[str] = []
        for p in self.pack.products:
            columns.extend(k for k in p.attrs if k not in columns)
        header_words = {col: _cue_words(col) for col in columns}
        for col in columns:
            concept = _concept_of(col)
            cues = [normalise(col).replace("_", " ")]
            if concept is not None:
                zh, en, zc, ec = ATTRIBUTES[concept]
                cues += [zh, en, *zc, *ec]
                # The header where it is in the reply's language, else the concept's word.
                cjk = bool(CJK_IDEOGRAPH.search(col))
                label_zh, label_en = (col if cjk else zh), (en if cjk else col.replace("_", " "))
            else:
                label_zh = label_en = col.replace("_", " ")
                # "what temp is it good for" asks the "temp rating" column: each longer word of
                # a header of its own is a cue too, unless another column's header has it
                words = [w for w in header_words[col] if sum(w in ws for ws in header_words.values()) == 1]
                cues += words if len(words) > 1 else []
            slots.append(_Slot(col, label_zh, label_en, tuple(_cue_pattern(normalise(c)) for c in dict.fromkeys(cues) if c)))
        return slots

    def _asked(self, rest: str) -> list[tuple[_Slot, tuple[int, int]]]:
        """The attribute slots `rest` asks about, in order of mention, each with its cue's span
        (one slot per concept: the first column of it)."""
        hits = []
        for slot in self._slots:
            best = None
            for pat in slot.cues:
                m = pat.search(rest)
                if m and (best is None or m.start() < best[0]):
                    best = (m.start(), m.end())
            if best is not None:
                hits.append((best, slot))
        hits.sort(key=lambda h: h[0])
        out: list[tuple[_Slot, tuple[int, int]]] = []
        used: list[tuple[int, int]] = []
        for span, slot in hits:
            # One cue answers one slot ("颜色" is the colour column's, not also a "颜色分类" one's).
            if any(s <= span[0] < e for s, e in used):
                continue
            used.append(span)
            out.append((slot, span))
        return out

    def _context_product(self, earlier: list[dict[str, str]], ambiguous: list[Product]) -> Product | None:
        """The product of the most recent earlier turn (user or assistant) that names one —
        when the message named a few products loosely, only one of those."""
        for m in reversed(earlier[-LOOKBACK:]):
            p = self.kb.product(m["content"])
            if p is not None and (not ambiguous or p in ambiguous):
                return p
        return None

    # -- orders ----------------------------------------------------------------------------
    def _orders(self, question: str, lang: str, customer_orders: list[dict[str, str]]) -> str | None:
        rows: list[tuple[str, dict[str, str]]] = []
        for oid in self.kb.orders_in(question):
            rows.append((oid, self.kb.order(oid) or {}))
        by_id = {normalise(o.get("order_id", "")): o for o in customer_orders if o.get("order_id")}
        for ph in _ORDER_PLACEHOLDER.findall(question):
            row = by_id.get(normalise(ph))
            if row is None:
                return REPLIES["unknown"][lang]  # a masked order we know nothing about
            rows.append((ph, row))
        for m in _ID.finditer(normalise(question)):
            row = by_id.get(m.group())
            if row is not None and all(r is not row for _, r in rows):
                rows.append((row["order_id"], row))
        if not rows and customer_orders:
            flat = normalise(question)
            if any(c in flat for c in ORDER_CUES):
                rows.append((customer_orders[0].get("order_id", ""), customer_orders[0]))
        if not rows:
            return None
        when = asks_when(question)
        lines = [self._order_line(oid, row, lang, when=when) for oid, row in rows[:2]]
        if any(line is None for line in lines):
            return REPLIES["unknown"][lang]
        return _joined(lines, lang)  # type: ignore[arg-type]

    def _order_line(self, oid: str, row: dict[str, str], lang: str, *, when: bool = False) -> str | None:
        status = row.get("status", "").strip()
        courier = (row.get("courier") or row.get("carrier") or "").strip()
        tracking = (row.get("tracking_no") or row.get("tracking") or row.get("tracking_number") or "").strip()
        if not oid or not (status or tracking):
            return None
        # "when did it ship?": the row's shipping date, when it has one
        shipped = next((v.strip() for k, v in row.items() if v and v.strip() and _SHIP_DATE.search(normalise(k))), "") \
            if when else ""
        if lang == "zh":
            return f"亲，您的订单{oid}{status}" + (f"（{shipped}发出）" if shipped else "") + \
                (f"，{courier}运单号{tracking}" if tracking else "") + "。"
        head = f"Your order {oid} is {status}" if status else f"Your order {oid}:"
        head += f" (shipped on {shipped})" if shipped else ""
        return head + (f"{',' if status else ''} {courier + ' ' if courier else ''}tracking number {tracking}" if tracking else "") + "."

    # -- products --------------------------------------------------------------------------
    def _name(self, p: Product, lang: str) -> str:
        """The product's name, or a name-like column in the customer's language when the
        name is in the other one (an English name of a Chinese product)."""
        zh_name = bool(CJK_IDEOGRAPH.search(p.name))
        if zh_name == (lang == "zh"):
            return p.name
        for k, v in p.attrs.items():
            if v and is_name_column(k) and bool(CJK_IDEOGRAPH.search(v)) == (lang == "zh"):
                return v
        return p.name

    def _money(self, p: Product, lang: str) -> str:
        price = format_number(p.price)
        if lang == "zh" and self.currency.upper() in ("CNY", "RMB"):
            return f"{price}元"
        return f"{price} {self.currency.upper()}"

    def _attr_line(self, p: Product, slot: _Slot, lang: str) -> str | None:
        name = self._name(p, lang)
        zh = lang == "zh"
        if slot.key == PRICE:
            return f"亲，{name}的价格是{self._money(p, lang)}哦。" if zh else f"{name} is {self._money(p, lang)}."
        if slot.key == STOCK:
            if p.stock > 0:
                return f"亲，{name}有货的，库存{p.stock}件。" if zh else f"Yes, {name} is in stock ({p.stock} left)."
            return f"亲，{name}目前缺货哦。" if zh else f"Sorry, {name} is out of stock right now."
        value = p.attrs.get(slot.key, "").strip()
        if not value:
            return None
        return f"亲，{name}的{slot.label_zh}是{value}哦。" if zh else f"The {slot.label_en} of {name} is {value}."

    def _row_fact(self, p: Product, asked: str, lang: str) -> str | None:
        """The column value, or the clause of one ("peak height 104 cm" of a notes column),
        of `p`'s row that covers at least `CONFIDENT[lang]` of `asked` (with its header),
        stated with the product's name; None when none does."""
        best: tuple[tuple[float, int], str] | None = None
        for col, value in p.attrs.items():
            if not value or is_name_column(col):
                continue
            parts = [x.strip() for x in _CLAUSE.split(value) if x.strip()]
            for part in dict.fromkeys([value.strip()] + (parts if len(parts) > 1 else [])):
                cover = self.kb.coverage(asked, f"{col} {part}")
                key = (round(cover, 6), -len(part))  # the shortest text that covers as much
                if cover >= CONFIDENT[lang] and (best is None or key > best[0]):
                    best = (key, f"{col.replace('_', ' ')}: {part}" if part == value.strip() else part)
        if best is None:
            return None
        name = self._name(p, lang)
        return f"亲，{name}：{best[1]}。" if lang == "zh" else f"{name}: {best[1]}."

    def _extreme(self, question: str, previous: str | None, lang: str) -> str | None:
        """The card of the product priced lowest (or highest) among those the question names
        equally loosely ("whats ur cheapest sleeping bag", "猫粮哪款最贵"), else those the
        previous customer message named ("do you have tents?" / "which is cheapest?"), else
        the whole catalog ("what's the cheapest thing you sell"); None when no such
        superlative is asked, a product is named exactly ("is X your cheapest?"), or the
        question asks something more ("the cheapest way to ship", "cheapest tent for winter"),
        which the other rules (or the hand-off) answer."""
        if not (_CHEAPEST.search(flat := normalise(question)) or _DEAREST.search(flat)):
            return None  # the common case, before the personal-data pass (~0.25 ms a message)
        text = normalise(_blank_pii(question))
        m = _CHEAPEST.search(text)
        lowest = m is not None
        m = m or _DEAREST.search(text)
        if m is None:
            return None
        rest = _blank(text, [m.span()])
        found = self.kb.products(rest)
        if found and found[0].exact:
            return None
        group = _tied(found)
        left = without_spans(rest, [s for f in group for s in f.spans])
        asked = self._asked(left)
        if _content(_without_cues(left, asked)) - _ABOUT_TOKENS - _WHICH_TOKENS:
            return None
        if not group and previous is not None:
            earlier = self.kb.products(_blank_pii(previous))
            if earlier and not earlier[0].exact:
                group = _tied(earlier)
        candidates = [f.product for f in group] or list(self.pack.products)
        if not candidates:
            return None
        best = (min if lowest else max)(p.price for p in candidates)
        chosen = [p for p in candidates if p.price == best][:MAX_AMBIGUOUS]
        lines = [self._summary(p, lang) for p in chosen]
        lines += [s for p in chosen for slot, _ in asked[:2] if slot.key not in (PRICE, STOCK)
                  for s in [self._attr_line(p, slot, lang)] if s]
        return _joined(dict.fromkeys(lines), lang)

    def _summary(self, p: Product, lang: str) -> str:
        name = self._name(p, lang)
        if lang == "zh":
            return f"亲，{name}价格{self._money(p, lang)}，{'有货' if p.stock > 0 else '目前缺货'}。"
        return f"{name}: {self._money(p, lang)}, {'in stock' if p.stock > 0 else 'out of stock'}."

    # -- policies and FAQ ------------------------------------------------------------------
    def _policy(self, question: str, asked: str, previous: str | None, lang: str) -> str | None:
        """One sentence, verbatim, of the FAQ answer or policy paragraph that covers `asked`
        (the question's own words) best, if it covers enough; a short follow-up ("那偏远地区呢？",
        "what about Alaska?") is tried together with the previous customer message first."""
        found = None
        if previous is not None and _FOLLOW_UP.search(normalise(question)) and len(_content(asked)) <= 6:
            prev = _blank_pii(previous)
            found = self._best_sentence(f"{previous}\n{question}", f"{normalise(prev)} {asked}", lang)
        if found is None:
            found = self._best_sentence(question, asked, lang)
        if found is None:
            return None
        sentence = _MARKUP.sub("", found).strip()
        if self.pack.language == "zh" or CJK_IDEOGRAPH.search(sentence):
            return "亲，" + re.sub(r"^亲[，,\s]*", "", sentence)
        return sentence

    def _best_sentence(self, query: str, asked: str, lang: str) -> str | None:
        """Of the FAQ/policy snippets `kb.search` returns for `query`, those covering at least
        `CONFIDENT[lang]` of `asked`; of their sentences the one from the snippet covering most,
        then stating a number if `asked` asks for one (how long, when), then covering most
        itself, then with its heading (the FAQ question, the policy title), then whose heading
        alone covers most; then an FAQ answer (written as a reply), then the better-ranked
        snippet and the earlier sentence."""
        number = asks_for_number(asked)
        best: tuple[tuple, str] | None = None
        for rank, snip in enumerate(self.kb.search(query, k=SNIPPETS)):
            if snip.source not in ("faq", "policy"):
                continue
            cover = self.kb.coverage(asked, snip.text)
            if cover < CONFIDENT[lang]:
                continue
            if snip.source == "faq":
                head, body = _faq_parts(snip.text)
            else:
                head = self.pack.policy_titles.get(snip.ref, snip.ref)
                body = _strip_title(snip.text, head)
            for i, sentence in enumerate(_sentences(body)):
                key = (round(cover, 6), number and bool(_DIGIT.search(sentence)), round(self.kb.coverage(asked, sentence), 6),
                       round(self.kb.coverage(asked, f"{head}\n{sentence}"), 6), round(self.kb.coverage(asked, head), 6),
                       snip.source == "faq", -rank, -i)
                if best is None or key > best[0]:
                    best = (key, sentence)
        return best[1] if best is not None else None


def _customer_orders(system: list[str]) -> list[dict[str, str]]:
    """The orders listed in a "Customer:" system message ("order order_id: A-1, status: shipped")."""
    orders = []
    for text in system:
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "Customer:":
                continue
            for entry in lines[i + 1 :]:
                m = _CUSTOMER_ORDER.match(entry.strip())
                if not m:
                    if not entry.strip().startswith("preferences:"):
                        break
                    continue
                row = {}
                for part in m.group(1).split(", "):
                    key, sep, value = part.partition(": ")
                    if sep:
                        row[key.strip()] = value.strip()
                orders.append(row)
    return orders


def _tied(found: list[Any]) -> list[Any]:
    """The product matches that score as high as the best one (`kb.products` sorts them)."""
    return [m for m in found if m.score >= found[0].score - 1e-9] if found else []


def _joined(lines, lang: str) -> str:
    """Reply lines as one reply: run together in Chinese, a space apart in English."""
    return ("" if lang == "zh" else " ").join(lines)


def _cue_words(column: str) -> list[str]:
    """The Latin words of a column header of four letters or more ("temp rating" -> temp, rating)."""
    return [w for w in re.findall(r"[a-z]{4,}", normalise(column).replace("_", " ")) if w not in ("with", "from")]


def _without_cues(text: str, asked: list[tuple[_Slot, tuple[int, int]]]) -> str:
    """`text` with every cue of the asked slots blanked: what else it asks."""
    return _blank(text, [m.span() for slot, _ in asked for pat in slot.cues for m in pat.finditer(text)])


def _content(text: str) -> set[str]:
    """The words of `text` that ask about something, beyond those that refer back ("这个", "one")."""
    return set(content_tokens(text)) - _FILLER_TOKENS


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _detect(text: str) -> list[Any]:
    from endcloud.privacy import detect

    return detect(text)


def _blank_pii(text: str) -> str:
    """`text` with phones, e-mails, addresses, ids and privacy placeholders blanked out, and
    with them the words that label them ("电话", "my number is")."""
    spans = [(s.start, s.end) for s in _detect(text) if s.type in _PII_TYPES]
    spans += [m.span() for m in _PLACEHOLDER.finditer(text) if not _ORDER_PLACEHOLDER.fullmatch(m.group())]
    if spans:
        spans += [m.span() for m in _CONTACT_LABEL.finditer(text)]
    return _blank(text, spans)


def _sentences(body: str) -> list[str]:
    """Sentences, each with its end mark: split after 。！？!? and after '. '."""
    return [s.strip() for s in _SENTENCE.findall(body) if s.strip()]


def _strip_title(text: str, title: str) -> str:
    for sep in ("：", ": "):
        if text.startswith(title + sep):
            return text[len(title) + len(sep):].strip()
    return text


def _faq_parts(text: str) -> tuple[str, str]:
    """(question, answer) of an FAQ snippet ("问：…\n答：…" / "Q: …\nA: …")."""
    for q, a in (("问：", "\n答："), ("Q: ", "\nA: ")):
        if text.startswith(q) and a in text:
            question, answer = text[len(q):].split(a, 1)
            return question.strip(), answer.strip()
    return "", text


def _faq_answer(text: str) -> str:
    for sep in ("\n答：", "\nA: "):
        if sep in text:
            return text.split(sep, 1)[1].strip()
    return text
