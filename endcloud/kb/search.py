"""Retrieve knowledge snippets from a shop pack: BM25 plus exact SKU/name/order lookups.

The documents are the FAQ entries (question + answer), the policy paragraphs (with their
section heading) and the catalog rows rendered as a sentence (name, SKU, price, stock,
attributes). Chinese is tokenised as CJK character unigrams + bigrams (no segmenter
needed, robust to the shop's own product words), English as lower-case words with a light
suffix strip; a small table of e-commerce synonyms widens the query ("delivery service"
finds the courier policy). A mentioned order id or product is looked up and put first,
since a customer who names one wants that one.

Customers name products loosely: a SKU, the full name, part of it ("龙井" for 西湖龙井,
"iphone 15 case"), or a name-like column of the catalog (an English name of a Chinese
product). `products(text)` scores every candidate (exact SKU/name first, then the name
words the text shares, each weighted by how few product names carry it); `product(text)`
takes the best one only when it clears a floor and no other scores the same.

    kb = KnowledgeBase(ShopPack.load("shop/"))
    kb.search("can I choose the courier?", k=3)   # -> [Snippet(text, source, score, ref), ...]
    kb.product("520401029636"), kb.product("龙井多少钱"), kb.order("114-3941689-8772232")
    kb.coverage("退款多久到账", snippet.text)        # share of the question's terms (IDF-weighted) it covers
    kb.spell("which courer do u use")              # 'which courier do u use': typos against the shop's words
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from endcloud.kb.pack import Product, ShopPack
from endcloud.text import CJK_IDEOGRAPH, CJK_IDEOGRAPHS

SOURCES = ("catalog", "faq", "policy", "order")

_TOKEN = re.compile(f"[{CJK_IDEOGRAPHS}]+|" + r"[a-z0-9]+(?:[.:x][a-z0-9]+)*")
_IDLIKE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_]{3,}")
_SPACE = re.compile(r"\s+")
_DIGIT = re.compile(r"[0-9]")
_NON_WORD = re.compile(r"[^\w']+")

_EN_STOP = frozenset(
    "a an the i me my we our you your he she it its they them is am are was were be been being do does did "
    "to of in on at for with from by as and or but if so than then this that these those there here what "
    "which who whom how when where why can could would should will shall may might must have has had "
    "please pls hi hey ok okay just any some get got want need know tell us about".split()
)
# One CJK character that carries no topic (particles, pronouns, politeness).
_ZH_STOP = frozenset("的了吗呢啊吧呀哦哈嘛么亲我你您他她它们是在有就都也还和与及或这那个请问下")

# Phrase groups a customer and a shop use for the same thing; any member in a query adds the others.
_SYNONYMS_EN = (
    ("courier", "carrier", "express", "shipping company", "delivery service", "delivery company", "logistics"),
    ("discount", "coupon", "promo", "promotion", "cheaper", "deal", "voucher", "code", "off"),
    ("refund", "money back", "money", "reimburse"),
    ("return", "send back", "send it back", "exchange", "don't like", "doesn't fit"),
    ("invoice", "receipt", "vat", "bill"),
    ("ship", "dispatch", "send out", "shipping"),
    ("same day", "today", "cut-off", "when does it ship", "order now", "what time do", "order by"),
    ("arrive", "delivery", "deliver", "receive", "eta", "package", "parcel", "get here", "when will it come"),
    ("broken", "damaged", "defective", "faulty", "warranty", "repair", "problem", "issue", "defect", "leak", "cracked"),
    ("late", "delay", "delayed", "waiting", "slow", "still not", "frustrating", "forever", "chase"),
    ("stock", "available", "availability", "sold out"),
    ("price", "cost", "how much"),
    ("address", "location", "send it to", "send my order to", "ship it to", "deliver it to"),
    ("change", "update", "modify", "edit", "correct"),
    ("replace", "replacement", "swap", "new one", "send another"),
    ("opening hours", "business hours", "working hours", "office hours", "online hours", "what time do you close",
     "what time do you open", "is open", "are open", "hours"),
    ("postage", "shipping fee", "shipping cost", "delivery fee", "delivery charge", "shipping charge", "free shipping",
     "free delivery", "free postage"),
    ("pickup", "pick up", "collect", "click and collect", "come get", "in person", "in store", "self-pickup"),
    ("email", "e-mail", "mail"),
    # asking for the shop's number, not giving one's own ("call me on ...", "my phone is ..."): phrases only
    ("hotline", "your phone", "your number", "call you", "reach you", "contact you", "get in touch", "contact number",
     "customer service number", "phone number for"),
    ("cancel", "cancellation", "call off"),
    ("bulk", "wholesale", "a bunch", "large order", "quantity discount", "in quantity"),
    ("restock", "back in stock", "come back", "be back", "sold out", "pre-order", "preorder"),
    ("abroad", "overseas", "international", "internationally", "other countries", "outside the"),
    ("price protection", "price drop", "price match", "difference back", "drops in price", "price guarantee"),
    ("assemble", "assembly", "install", "installation", "put together", "set up"),
    ("gift wrap", "gift wrapping", "wrap", "wrapping", "gift box", "gift message"),
    ("expedited", "faster", "rush", "overnight", "next day", "express shipping", "express delivery", "speed up"),
)
_SYNONYMS_ZH = (
    ("快递", "物流", "配送", "顺丰", "中通", "发什么"),
    ("优惠", "便宜", "折扣", "优惠券", "打折", "券", "满减", "减价"),
    ("退款", "退钱", "钱退", "退的钱", "到账", "退回来"),
    ("退货", "退换", "换货", "寄回", "能退", "可以退", "不合适", "不喜欢"),
    ("发票", "开票", "专票", "普票", "什么票"),
    ("发货", "发出", "寄出", "出库"),
    ("到货", "送达", "几天到", "多久到", "签收", "收到货", "几天能到", "收到", "拿到", "寄到", "发到", "送到", "寄往"),
    ("下单", "付款", "拍下", "购买", "支付"),
    ("今天", "当天", "当日", "今日"),
    ("破损", "坏了", "坏的", "破了", "烂了", "质量问题", "保修", "售后", "维修", "瑕疵", "有问题", "漏水", "裂了", "不能用"),
    ("延误", "催件", "还没到", "等了", "着急", "太慢", "不更新", "不敢出门"),
    ("库存", "有货", "现货", "缺货", "没货", "补货"),
    ("价格", "多少钱", "价钱"),
    ("地址", "改地址"),
    ("修改", "更改", "改成", "换成", "换个", "改一下", "改下"),
    ("指定", "选择", "自己选", "可以选", "能选"),
    ("补发", "换新", "重发", "换一个", "再发一个"),
    ("在线时间", "工作时间", "营业时间", "客服时间", "上班", "下班", "几点上班", "几点下班", "在线"),
    ("运费", "邮费", "快递费", "包邮", "免邮", "免运费"),
    ("自提", "自取", "自己去拿", "自己拿", "自己来拿", "到店", "门店", "线下店"),
    ("邮箱", "邮件", "电子邮件"),
    # the shop's number asked for, not the customer's own given ("有事打我电话…"): no bare 电话
    ("客服电话", "热线", "联系方式", "怎么联系", "联系你们", "你们电话", "你们的电话", "电话多少", "打电话给你们"),
    ("取消", "撤销", "撤单", "不要了"),
    ("批量", "团购", "多买", "买得多", "大量", "批发", "量大"),
    ("补货", "断货", "多久能有", "什么时候有", "再上架", "预售"),
    ("价保", "降价", "退差价", "差价", "保价"),
    ("安装", "组装", "装配"),
    ("加急", "特快", "加快", "次日达", "当日达"),
    ("海外", "国外", "境外", "国际", "港澳台", "香港", "澳门", "台湾"),
    ("礼盒", "礼品包装", "包装", "送人", "贺卡"),
)


def normalise(text: str) -> str:
    """NFKC + lower-case: the form every comparison here uses."""
    return unicodedata.normalize("NFKC", text).lower()


# Irregular past forms shop talk uses ("paid before 4 pm", "I bought", "it was sent").
_IRREGULAR = {"paid": "pay", "bought": "buy", "sent": "send", "sold": "sell", "got": "get", "gotten": "get",
              "made": "make", "came": "come", "gave": "give", "took": "take", "taken": "take", "left": "leave"}


def _stem(word: str) -> str:
    # A light suffix strip so "ships/shipped/shipping" meet; enough for BM25 on a small shop.
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 5 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix) and not word.endswith("ss"):
            word = word[: -len(suffix)]
            # "shipped" -> "shipp" -> "ship"
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiousl":
                word = word[:-1]
            return word
    # "reimburse" / "reimbursed" -> "reimburs", "arrive" / "arrived" -> "arriv"
    if len(word) > 4 and word.endswith("e") and not word.endswith("ee"):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """CJK runs -> character unigrams (minus particles) + bigrams; Latin/digits -> stemmed words."""
    out: list[str] = []
    for m in _TOKEN.finditer(normalise(text)):
        run = m.group()
        if CJK_IDEOGRAPH.match(run):
            out.extend(c for c in run if c not in _ZH_STOP)
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif run not in _EN_STOP and (len(run) > 1 or run.isdigit()):
            out.append(_stem(run))
    return out


def _words(text: str) -> str:
    """Lower-case words separated by single spaces, padded: ' can i send it back '."""
    return " " + " ".join(_NON_WORD.sub(" ", normalise(text)).split()) + " "


def _synonym_table() -> tuple[dict[str, list[tuple[list[str], float]]], list[tuple[bool, str, list[str], float]]]:
    """({stemmed word: [(tokens to add, weight)]}, [(is Chinese, phrase, tokens to add, weight)])."""
    words: dict[str, list[tuple[list[str], float]]] = {}
    phrases: list[tuple[bool, str, list[str], float]] = []
    for group in _SYNONYMS_EN + _SYNONYMS_ZH:
        # English phrases expand only to the group's single words: "send it back" must not
        # make every "send" and "back" in the shop relevant.
        for phrase in group:
            others = [t for other in group if other != phrase and (" " not in other or CJK_IDEOGRAPH.search(other)) for t in tokenize(other)]
            if CJK_IDEOGRAPH.search(phrase):
                phrases.append((True, normalise(phrase), others, 0.5))  # a substring of the question
            elif " " in phrase:
                phrases.append((False, _words(phrase), others, 1.0))  # the words as written, in order: a strong hint
            else:
                for key in tokenize(phrase)[:1]:
                    words.setdefault(key, []).append((others, 0.5))  # a stemmed word
    return words, phrases


_SYNONYM_WORDS, _SYNONYM_PHRASES = _synonym_table()
_EN_SYNONYM_PHRASES = [(p, re.compile(r"(?<![a-z0-9])" + r"\W+".join(map(re.escape, p.split())) + r"(?![a-z0-9])"))
                       for p in sorted({normalise(p) for group in _SYNONYMS_EN for p in group if " " in p}, key=lambda p: (-len(p), p))]
_PHRASE = -2  # the span `_terms` gives an English synonym phrase
_PHRASE_TOKENS = {p: tokenize(p) for p, _ in _EN_SYNONYM_PHRASES}  # its words, as `coverage` finds them apart
_ZH_SYNONYM_PHRASES = sorted({normalise(p) for group in _SYNONYMS_ZH for p in group if len(p) > 1}, key=lambda p: (-len(p), p))


def _phrase_test(phrase: str):
    """How to tell that a synonym-table phrase occurs in a text: (kind, key) for `_occurs`."""
    if CJK_IDEOGRAPH.search(phrase):
        return ("sub", normalise(phrase))  # a substring of the text
    if " " in phrase:
        return ("words", _words(phrase))  # the words, in order
    tokens = tokenize(phrase)
    # a stemmed word; a word `tokenize` drops as a stop word ("when") is found as a word
    return ("token", tokens[0]) if tokens else ("words", _words(phrase))


# Each group as [(how to find the phrase, the phrase's own tokens)]: what `coverage` counts.
_SYNONYM_GROUPS = [[(_phrase_test(p), frozenset(tokenize(p))) for p in group] for group in _SYNONYMS_EN + _SYNONYMS_ZH]


def _kin_table() -> dict[str, frozenset[str]]:
    """Phrase (normalised) or stemmed single word -> the tokens of every phrase in its groups."""
    kin: dict[str, set[str]] = {}
    for group in _SYNONYMS_EN + _SYNONYMS_ZH:
        tokens = {t for p in group for t in tokenize(p)}
        for p in group:
            single = " " not in p and not CJK_IDEOGRAPH.search(p)
            key = (tokenize(p) or [""])[0] if single else normalise(p)
            kin.setdefault(key, set()).update(tokens)
    return {k: frozenset(v) for k, v in kin.items()}


# A term of the synonym table weighs like its kin: "arrive", if no snippet says it, is as
# specific as the "delivery" some snippet does say.
_KIN = _kin_table()


def _occurs(test: tuple[str, str], flat: str, words: str, tokens: set[str]) -> bool:
    kind, key = test
    if kind == "sub":
        return key in flat
    if kind == "words":
        return key in words
    return bool(key) and key in tokens


# Question words and modal verbs: with the particles of `_ZH_STOP`, what a CJK pair made with
# them only asks ("什么", "哪家", "可以", "能不能") rather than names; `coverage` leaves such pairs out.
_ZH_FUNCTION = frozenset("什哪怎谁啥要能会想可以用给")


# Words that name no topic in either language ("right now", "am I able to", "真的", "一下"):
# `coverage` does not ask a snippet to hold them.
_GENERIC_EN = ("now", "right", "really", "soon", "still", "already", "ever", "even", "also", "too", "very", "much", "many",
               "lot", "yet", "actually", "possible", "able", "like", "thing", "something", "anything", "way", "one",
               "ones", "guys", "another", "other", "different", "currently", "exactly", "honestly", "maybe")
_GENERIC_ZH = ("现在", "一下", "真的", "已经", "一直", "还是", "就是", "可能", "大概", "应该", "请问", "麻烦", "一个", "那个", "这个",
               "有没有", "是不是", "能不能", "可不可以", "会不会", "要不要", "需要", "想要", "我想", "怎么办", "怎么处理",
               "如何处理", "怎么弄", "怎么算", "怎么样", "哪家", "哪个", "哪种", "哪款", "一般", "的话")
_GENERIC = re.compile("|".join([r"\b(?:" + "|".join(_GENERIC_EN) + r")\b"] + list(_GENERIC_ZH)))


# Words that ask for a number (how long, how much, when): a text stating one may answer them,
# so against such a text they count neither way.
_QUANTITY = [_phrase_test(p) for p in ("多久", "几天", "多少", "几点", "几个", "多长时间", "时候", "多大", "几号", "几小时",
                                       "how long", "how many", "how much", "how soon", "what time", "long")]
_WHEN = [_phrase_test(p) for p in ("when", "what time", "how soon", "几时", "什么时候", "何时")]
# ... and for a day ("which day did it ship?", "哪天发的"): with `_WHEN`, what `asks_when` looks for.
_DAY = [_phrase_test(p) for p in ("what day", "which day", "date", "哪天", "哪一天", "几号", "日期")]


def content_tokens(text: str) -> list[str]:
    """The tokens of `text` that name something: `tokenize` without the words that name no
    topic, particles and question words ("有没有", "的呢", "什么") — what `coverage` weighs."""
    return [x for x in tokenize(_GENERIC.sub(" ", normalise(text))) if not _function_bigram(x)]


def _asks(text: str, tests: list[tuple[str, str]]) -> bool:
    flat, words, tokens = normalise(text), _words(text), set(tokenize(text))
    return any(_occurs(test, flat, words, tokens) for test in tests)


def asks_for_number(text: str) -> bool:
    """Whether `text` asks how long, how much, how many or when: an answer states a number."""
    return _asks(text, _QUANTITY + _WHEN)


def asks_when(text: str) -> bool:
    """Whether `text` asks when, or on which day ("when did it ship?", "哪天发的")."""
    return _asks(text, _WHEN + _DAY)


def _function_bigram(token: str) -> bool:
    """A CJK pair made with a particle or a question word, or a question word alone."""
    if CJK_IDEOGRAPH.match(token) is None:
        return False
    return token in _ZH_FUNCTION or (len(token) == 2 and any(c in _ZH_STOP or c in _ZH_FUNCTION for c in token))


# How loosely a product may be named: the words of its name a text shares must weigh at
# least what a word carried by half the catalog's names weighs (log(1 + N/df) with df = N/2),
# so "towel" alone does not pick one of twenty towels; a unit in fewer names weighs more.
def _loose_floor(n_products: int) -> float:
    return math.log(1 + min(n_products, 2)) - 1e-9


# Chinese measure words: alone ("6L×4包", "一包多少钱") they count, they do not name a product.
_MEASURE_WORDS = frozenset("包袋瓶盒罐件个只支条片张双套箱桶听枚颗粒根把台本块斤克升米份卷组对")


def _name_units(text: str, *, unigrams: bool = False) -> list[tuple[str, int, int]]:
    """The units a product name is matched by, with their spans in `normalise(text)`: CJK
    character bigrams (a one-character run is its own unit), stemmed non-stop Latin words
    and numbers. `unigrams` adds every CJK character (a question may hold a one-character
    name such as the 恤 of "T恤" inside a longer run)."""
    out: list[tuple[str, int, int]] = []
    for m in _TOKEN.finditer(normalise(text)):
        run, start = m.group(), m.start()
        if CJK_IDEOGRAPH.match(run):
            if len(run) == 1 or unigrams:
                out.extend((c, start + i, start + i + 1) for i, c in enumerate(run)
                           if c not in _ZH_STOP and c not in _MEASURE_WORDS)
            out.extend((run[i : i + 2], start + i, start + i + 2) for i in range(len(run) - 1))
        elif run not in _EN_STOP and (len(run) > 1 or run.isdigit()):
            out.append((_stem(run), start, m.end()))
    return out


def is_name_column(column: str) -> bool:
    """A catalog column that names the product another way (an English name, an alias): its
    header says "name" or 名/英文, and it is not a brand."""
    c = normalise(column)
    return ("name" in c or "名" in c or "英文" in c) and not any(b in c for b in ("brand", "品牌", "牌子"))


def without_spans(text: str, spans) -> str:
    """`normalise(text)` with each (start, end) span blanked out (what is left to ask about)."""
    chars = list(normalise(text))
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


@dataclass(frozen=True, slots=True)
class Snippet:
    """One retrieved piece of shop knowledge. `ref` is the sku, FAQ index, policy key or order id."""

    text: str
    source: str
    score: float
    ref: str


@dataclass(frozen=True, slots=True)
class ProductMatch:
    """A product a text names. `exact`: by SKU or a full name; else loosely, by `score` (the
    summed weight of the name units it shares). `spans`: where in `normalise(text)` it is named."""

    product: Product
    score: float
    exact: bool
    spans: tuple[tuple[int, int], ...]


class _BM25:
    """Okapi BM25 over pre-tokenised documents: an inverted index of numpy arrays, so a query
    costs one `bincount` over the postings of its terms (fast from 50 to 50,000 documents)."""

    def __init__(self, docs: list[list[str]], *, k1: float = 1.2, b: float = 0.75):
        self.n = len(docs)
        lengths = [len(d) for d in docs]
        avg = (sum(lengths) / self.n) if self.n else 1.0
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for i, doc in enumerate(docs):
            counts: dict[str, int] = {}
            for t in doc:
                counts[t] = counts.get(t, 0) + 1
            norm = k1 * (1 - b + b * lengths[i] / (avg or 1.0))
            for t, tf in counts.items():
                ids, parts = postings.setdefault(t, ([], []))
                ids.append(i)
                # The tf part of BM25 is fixed per (term, doc): precompute it once.
                parts.append(tf * (k1 + 1) / (tf + norm))
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for t, (ids, parts) in postings.items():
            idf = math.log(1 + (self.n - len(ids) + 0.5) / (len(ids) + 0.5))
            self.postings[t] = (np.asarray(ids, dtype=np.intp), np.asarray(parts, dtype=np.float64) * idf)

    def scores(self, weights: dict[str, float]) -> np.ndarray:
        hits = [(self.postings[t], w) for t, w in weights.items() if t in self.postings]
        if not hits:
            return np.zeros(self.n)
        ids = np.concatenate([p[0] for p, _ in hits])
        vals = np.concatenate([p[1] * w for p, w in hits])
        return np.bincount(ids, weights=vals, minlength=self.n)


# Spelling: a Latin word of a question that no snippet, name or synonym holds is compared with
# the shop's own words. Customers type fast ("courer", "cots", "warrenty"); BM25, the synonym
# table and product names only see exact (stemmed) words. Only one edit (a letter left out,
# added, changed, or two swapped: the optimal-string-alignment distance) and only words of at
# least `_SPELL_MIN` letters, whose one nearest shop word is unique: a short word is one edit
# from too many others ("cat"/"car"), and an edit of a long word seldom makes another word.
_SPELL_MIN = 4
# A word alone, not part of an id, SKU, placeholder, e-mail or web address ("[ORDER_1]", "VL-GC").
_LATIN_WORD = re.compile(r"(?<![A-Za-z0-9_\-@.])[A-Za-z]+(?![A-Za-z0-9_\-@]|\.[A-Za-z0-9])")


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def _one_edit(a: str, b: str) -> bool:
    """Whether `a` and `b` (different) are one insertion, deletion, substitution or swap of
    neighbours apart."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


class _Speller:
    """One-edit spelling correction against a vocabulary (symmetric deletes: a word and a
    candidate that are one edit apart share a one-letter deletion or are one)."""

    def __init__(self, words: set[str]):
        self.known = frozenset(words)
        self.words = frozenset(w for w in words if len(w) >= _SPELL_MIN)  # what a typo may be of
        self.stems = frozenset(_stem(w) for w in self.known)
        self._by_delete: dict[str, set[str]] = {}
        for w in self.words:
            for d in _deletes(w) | {w}:
                self._by_delete.setdefault(d, set()).add(w)

    def correct(self, word: str) -> str | None:
        """The one shop word `word` (lower case) is a typo of, else None."""
        if len(word) < _SPELL_MIN or word in self.known or _stem(word) in self.stems:
            return None
        found = set()
        for d in _deletes(word) | {word}:
            found |= self._by_delete.get(d, set())
        found = {w for w in found if _one_edit(word, w)}
        return found.pop() if len(found) == 1 else None


class KnowledgeBase:
    """Search a `ShopPack`: `search(query, k)` for snippets, `product(text)`, `order(id)` for exact facts."""

    def __init__(self, pack: ShopPack):
        self.pack = pack
        zh = pack.language == "zh"
        self._docs: list[Snippet] = []
        tokens: list[list[str]] = []
        for p in pack.products:
            text = render_product(p, pack)
            self._docs.append(Snippet(text, "catalog", 0.0, p.sku))
            tokens.append(tokenize(text))
        for i, (q, a) in enumerate(pack.faq):
            text = f"问：{q}\n答：{a}" if zh else f"Q: {q}\nA: {a}"
            self._docs.append(Snippet(text, "faq", 0.0, str(i)))
            # The question is how customers phrase it: count it twice.
            tokens.append(tokenize(q) * 2 + tokenize(a))
        for key, body in pack.policies.items():
            title = pack.policy_titles.get(key, key)
            for para in _paragraphs(body):
                text = f"{title}：{para}" if zh else f"{title}: {para}"
                self._docs.append(Snippet(text, "policy", 0.0, key))
                tokens.append(tokenize(text))
        self._bm25 = _BM25(tokens)
        self._by_sku = {normalise(p.sku): p for p in pack.products}
        self._sku_doc = self._position = {p.sku: i for i, p in enumerate(pack.products)}
        # Names (and name-like columns: an English name, an alias) by their first two
        # characters, longest first, so "加厚纯棉浴巾" wins over "纯棉浴巾" and a 2,000-product
        # catalog is not scanned name by name for each question.
        self._names: dict[str, list[tuple[str, Product]]] = {}
        # Loose naming: name unit -> products carrying it, and the unit's weight over the names.
        units: dict[str, list[int]] = {}
        for i, p in enumerate(pack.products):
            for name_text in self.names_of(p):
                name = _SPACE.sub("", normalise(name_text))
                if name:
                    self._names.setdefault(name[:2], []).append((name, p))
                for u, _, _ in _name_units(name_text):
                    ids = units.setdefault(u, [])
                    if not ids or ids[-1] != i:
                        ids.append(i)
        for entries in self._names.values():
            entries.sort(key=lambda x: -len(x[0]))
        n = len(pack.products)
        self._units = {u: (ids, math.log(1 + n / len(ids))) for u, ids in units.items()}
        self._floor = _loose_floor(n)
        self._term_cache: dict[str, tuple] = {}
        self._text_cache: dict[str, tuple[str, str, set[str]]] = {}
        self._product_cache: dict[str, tuple[ProductMatch, ...]] = {}
        self._orders = {normalise(oid): oid for oid in pack.orders}
        self._speller: _Speller | None = None

    @property
    def speller(self) -> _Speller:
        """The shop's words (snippets, names and the synonym table) for `spell`, with the
        words that name no topic."""
        if self._speller is None:
            shop = [d.text for d in self._docs] + [n for p in self.pack.products for n in self.names_of(p)]
            shop += [p for group in _SYNONYMS_EN for p in group]
            words = {w for text in shop for w in _LATIN_WORD.findall(normalise(text))}
            # the words that name no topic are words too ("abotu" -> "about"), never corrected
            self._speller = _Speller(words | set(_EN_STOP) | set(_GENERIC_EN))
        return self._speller

    def spell(self, text: str) -> str:
        """`text` with each Latin word that is one edit from exactly one of the shop's words
        (and is none itself) replaced by it ("Which courer do you use" -> "Which courier do
        you use"); everything else as written. Ids, SKUs and numbers are left alone."""
        speller = self.speller

        def fix(m: re.Match[str]) -> str:
            return speller.correct(m.group().lower()) or m.group()

        return _LATIN_WORD.sub(fix, text)

    def __len__(self) -> int:
        return len(self._docs)

    def names_of(self, p: Product) -> list[str]:
        """The product's name, then the values of its name-like columns (`is_name_column`)."""
        return [p.name] + [v for k, v in p.attrs.items() if v and is_name_column(k)]

    def product(self, text: str) -> Product | None:
        """The product `text` names: by SKU or full name (the longest) if any, else the
        loose match of `products` when it clears the floor alone; None when none does or
        two score the same (ambiguous: "毛巾" in a shop of many towels)."""
        found = self.products(text)
        if not found:
            return None
        if found[0].exact:
            return found[0].product
        if len(found) > 1 and found[1].score >= found[0].score - 1e-9:
            return None
        return found[0].product

    def products(self, text: str) -> list[ProductMatch]:
        """Every product `text` names, best first: SKUs, then full names or name-like columns
        (longest first, a name inside a longer named one dropped), then loose matches whose
        score clears the floor (highest first; ties in catalog order)."""
        cached = self._product_cache.get(text)
        if cached is not None:
            return list(cached)
        found = self._products(text)
        if len(self._product_cache) > 1024:
            self._product_cache.clear()
        self._product_cache[text] = tuple(found)
        return found

    def _products(self, text: str) -> list[ProductMatch]:
        norm = normalise(text)
        exact: list[tuple[tuple, ProductMatch]] = []
        taken: set[str] = set()
        for m in _IDLIKE.finditer(norm):  # NFKC first: full-width "５２０…" is an id too
            p = self._by_sku.get(m.group())
            if p is not None and p.sku not in taken:
                taken.add(p.sku)
                exact.append(((0, 0, self._position[p.sku]), ProductMatch(p, math.inf, True, ((m.start(), m.end()),))))
        # Full names, compared without spaces ("纯棉 方巾"): positions map back into `norm`.
        where = [i for i, c in enumerate(norm) if not c.isspace()]
        flat = "".join(norm[i] for i in where)
        hits: list[tuple[int, int, Product]] = []
        for i in range(len(flat)):
            for name, p in self._names.get(flat[i : i + 2], ()):
                if flat.startswith(name, i):
                    hits.append((i, i + len(name), p))
                    break  # the rest of this list is shorter
        for start, end, p in sorted(hits, key=lambda h: (h[0] - h[1], self._position[h[2].sku])):
            inside = any(s <= start and end <= e and (s, e) != (start, end) for s, e, _ in hits)
            if inside or p.sku in taken:
                continue
            taken.add(p.sku)
            span = (where[start], where[end - 1] + 1)
            exact.append(((1, start - end, self._position[p.sku]), ProductMatch(p, math.inf, True, (span,))))
        out = [m for _, m in sorted(exact, key=lambda x: x[0])]
        # Loose: the name units the text shares, each weighted by how few names carry it.
        score: dict[int, float] = {}
        spans: dict[int, list[tuple[int, int]]] = {}
        digits_only: dict[int, bool] = {}
        seen: set[str] = set()
        for u, start, end in _name_units(text, unigrams=True):
            hit = self._units.get(u)
            if hit is None:
                continue
            ids, weight = hit
            for i in ids:
                spans.setdefault(i, []).append((start, end))
                if u in seen:
                    continue
                score[i] = score.get(i, 0.0) + weight
                digits_only[i] = digits_only.get(i, True) and u.isdigit()
            seen.add(u)
        loose = []
        for i, sc in score.items():
            p = self.pack.products[i]
            # A number alone ("15") names nothing; beside a name word ("iphone 15") it helps.
            if p.sku in taken or digits_only[i] or sc < self._floor:
                continue
            loose.append(ProductMatch(p, round(sc, 9), False, tuple(sorted(set(spans[i])))))
        loose.sort(key=lambda m: (-m.score, self._position[m.product.sku]))
        return out + loose

    def idf(self, term: str) -> float:
        """How rare a token (of `tokenize`) is among the snippets: BM25's idf; a token no
        snippet holds weighs most."""
        n = self._bm25.n
        posting = self._bm25.postings.get(term)
        df = len(posting[0]) if posting is not None else 0
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def coverage(self, query: str, text: str) -> float:
        """The share of the query's terms, weighted by `idf`, that `text` holds — a query
        phrase counts as held when `text` has a synonym of it ("钱什么时候退回来" vs "退款").
        0.0 for a query with no terms, or when `text` holds none but single characters (see
        `_terms` for what counts and how much)."""
        terms, groups, quantity = self._query_view(query)
        if not any(w for _, w, _, _ in terms):
            return 0.0
        t_flat, t_words, t = self._text_view(text)
        # What a synonym in `text` stands for: query spans (CJK), stemmed words and phrases (Latin).
        spans: list[tuple[int, int]] = []
        words: set[str] = set()
        phrases: set[str] = set()
        for tests, g_spans, g_words, g_phrases in groups:
            if any(_occurs(test, t_flat, t_words, t) for test in tests):
                spans += g_spans
                words |= g_words
                phrases |= g_phrases
        # Against a text that states a number, "how long" / "多久" count neither way.
        neutral_spans, neutral_words = quantity if _DIGIT.search(text) else ((), frozenset())
        held = total = 0.0
        strong = False  # one character alone (说 of 说明) is no evidence by itself
        for term, weight, start, end in terms:
            if start == _PHRASE:
                # the phrase as written, a synonym of it, or all of its words ("free ... shipping")
                ok = _words(term) in t_words or term in phrases or all(x in t for x in _PHRASE_TOKENS[term])
            elif start < 0:  # a Latin word
                if term in neutral_words:
                    continue
                ok = term in t or term in words
            else:
                if any(s <= start and end <= e for s, e in neutral_spans):
                    continue
                ok = term in t_flat or any(s <= start and end <= e for s, e in spans)
            total += weight
            if ok:
                held += weight
                strong = strong or weight > 0 and not (start >= 0 and end - start == 1)
        return held / total if total and strong else 0.0

    def _text_view(self, text: str) -> tuple[str, str, set[str]]:
        """(normalised, padded words, token set) of a text `coverage` reads; snippets recur."""
        view = self._text_cache.get(text)
        if view is None:
            if len(self._text_cache) > 4096:
                self._text_cache.clear()
            view = self._text_cache[text] = (normalise(text), _words(text), set(tokenize(text)))
        return view

    def _query_view(self, query: str):
        """What `coverage` needs of a query, once per query: its terms (`_terms`); per synonym
        group the query uses, the group's phrase tests and what it stands for in the query;
        the spans and words of the query that ask for a number."""
        view = self._term_cache.get(query)
        if view is not None:
            return view
        q_flat, q_words, q = normalise(query), _words(query), set(tokenize(query))

        def where(key: str) -> list[tuple[int, int]]:
            out, at = [], q_flat.find(key)
            while at >= 0:
                out.append((at, at + len(key)))
                at = q_flat.find(key, at + 1)
            return out

        groups = []
        for group in _SYNONYM_GROUPS:
            asked = [(test, toks) for test, toks in group if _occurs(test, q_flat, q_words, q)]
            if asked:
                groups.append(([test for test, _ in group],
                               [span for (kind, key), _ in asked if kind == "sub" for span in where(key)],
                               frozenset(t for _, toks in asked for t in toks),
                               frozenset(key.strip() for (kind, key), _ in asked if kind == "words")))
        quantity = ([span for kind, key in _QUANTITY if kind == "sub" and key in q_flat for span in where(key)],
                    frozenset(t for kind, key in _QUANTITY if kind != "sub" and _occurs((kind, key), q_flat, q_words, q)
                              for t in tokenize(key)))
        if len(self._term_cache) > 512:
            self._term_cache.clear()
        view = self._term_cache[query] = (self._terms(query), groups, quantity)
        return view

    def _kin_weight(self, phrase: str, unknown: float) -> float:
        """The weight of a synonym-table phrase or word: the largest idf among the tokens of
        its own words, else of its synonyms; `unknown` when no snippet holds any of them."""
        postings = self._bm25.postings
        own = [x for x in tokenize(phrase) if x in postings and not _function_bigram(x)]
        if own:
            return max(self.idf(x) for x in own)
        kin = [x for x in _KIN.get(phrase, ()) if x in postings and not _function_bigram(x)]
        return max((self.idf(x) for x in kin), default=unknown)

    def _terms(self, query: str) -> list[tuple[str, float, int, int]]:
        """The query's terms for `coverage`: (term, weight, start, end), the span in
        `normalise(query)` for CJK terms and -1, -1 for Latin words (stemmed).

        A term weighs its idf when some snippet holds it. Words that name no topic ("right
        now", "有没有") are left out, and so are particles and question words ("什么", "哪").
        Chinese is read as the phrases of the synonym table ("坏了"), then the character
        pairs some snippet holds ("快递", "几天"), and between them the characters no such
        pair covers: a known one is a term of half its idf (one character alone says less
        than a pair); neighbours no snippet holds are one unknown word ("公司", a name), and
        one unknown character alone weighs half an unknown word. A term
        no snippet holds is noise or a sign the shop does not know the answer: it weighs
        what the rarest term can. A number weighs nothing: the customer's own (a zip code,
        a count, a date) says nothing of the topic."""
        flat = _GENERIC.sub(lambda m: " " * len(m.group()), normalise(query))
        unknown = self.idf("")  # what a token no snippet holds weighs
        postings = self._bm25.postings
        terms: list[tuple[str, float, int, int]] = []
        # English phrases of the synonym table ("send my order to") are one term each: its
        # words say something only together, so a text holds it by a synonym, not by "send".
        taken: list[tuple[int, int]] = []
        for phrase, pattern in _EN_SYNONYM_PHRASES:
            for m in pattern.finditer(flat):
                if not any(s < m.end() and m.start() < e for s, e in taken):
                    terms.append((phrase, self._kin_weight(phrase, unknown), _PHRASE, _PHRASE))
                    taken.append(m.span())
        for m in _TOKEN.finditer(flat):
            run, at = m.group(), m.start()
            if not CJK_IDEOGRAPH.match(run):
                if any(s <= at < e for s, e in taken):
                    continue
                if run not in _EN_STOP and (len(run) > 1 or run.isdigit()):
                    word = _stem(run)
                    if word.isdigit():
                        weight = 0.0
                    else:
                        weight = self.idf(word) if word in postings else self._kin_weight(word, unknown)
                    terms.append((word, weight, -1, -1))
                continue
            paired = [False] * len(run)
            # Phrases of the synonym table first ("坏了", "到账"): a text with a synonym holds them.
            for phrase in _ZH_SYNONYM_PHRASES:
                at_p = run.find(phrase)
                while at_p >= 0:
                    end_p = at_p + len(phrase)
                    if not all(paired[at_p:end_p]):  # one inside a longer phrase is that phrase
                        terms.append((phrase, self._kin_weight(phrase, unknown), at + at_p, at + end_p))
                        paired[at_p:end_p] = [True] * len(phrase)
                    at_p = run.find(phrase, at_p + 1)
            for i in range(len(run) - 1):
                pair = run[i : i + 2]
                if pair in postings and not _function_bigram(pair) and not (paired[i] and paired[i + 1]):
                    terms.append((pair, self.idf(pair), at + i, at + i + 2))
                    paired[i] = paired[i + 1] = True
            # Then the characters between: known ones one by one, unknown neighbours as one word.
            i = 0
            while i < len(run):
                c = run[i]
                if paired[i] or c in _ZH_STOP or c in _ZH_FUNCTION:
                    i += 1
                elif c in postings:
                    terms.append((c, 0.5 * self.idf(c), at + i, at + i + 1))  # a lone character says less than a pair
                    i += 1
                else:
                    j = i
                    while j < len(run) and not paired[j] and run[j] not in postings and run[j] not in _ZH_STOP \
                            and run[j] not in _ZH_FUNCTION:
                        j += 1
                    # one unknown character alone, like a known one, says less than a word
                    terms.append((run[i:j], unknown if j - i > 1 else 0.5 * unknown, at + i, at + j))
                    i = j
        seen: set[str] = set()
        return [x for x in terms if not (x[0] in seen or seen.add(x[0]))]  # a word asked twice is asked once

    def order(self, order_id: str) -> dict[str, str] | None:
        """The orders.csv row of `order_id` (surrounding spaces and a leading '#' ignored), else None."""
        oid = self._orders.get(normalise(order_id.strip().lstrip("#")))
        return None if oid is None else self.pack.orders[oid]

    def orders_in(self, text: str) -> list[str]:
        """Order ids of this shop that `text` mentions, in order of mention."""
        found: list[str] = []
        for m in _IDLIKE.finditer(normalise(text)):
            oid = self._orders.get(m.group())
            if oid is not None and oid not in found:
                found.append(oid)
        return found

    def search(self, query: str, k: int = 3) -> list[Snippet]:
        """The k most relevant snippets, best first; exact order/product mentions lead."""
        if k <= 0:
            return []
        orders = self.orders_in(query)
        product = self.product(query)
        rest = normalise(query)
        # What the lookups found is already in hand: rank the rest of the question
        # ("... arrived damaged, what now?") so a product name does not pull in its look-alikes.
        if product is not None:
            match = next(m for m in self.products(query) if m.product is product)
            rest = without_spans(query, match.spans).replace(normalise(product.sku), " ")
        for oid in orders:
            rest = rest.replace(normalise(oid), " ")
        weights = _query_weights(rest)
        scores = self._bm25.scores(weights)
        top = float(scores.max()) if len(scores) else 0.0
        lead: list[Snippet] = []
        for oid in orders:
            lead.append(Snippet(render_order(self.pack.orders[oid], self.pack), "order", top + 2.0, oid))
        boosted = -1
        if product is not None:
            boosted = self._sku_doc[product.sku]
            doc = self._docs[boosted]
            lead.append(Snippet(doc.text, doc.source, top + 1.0, doc.ref))
        if boosted >= 0:
            scores[boosted] = 0.0
        out = lead[:k]
        need = k - len(out)
        candidates = np.flatnonzero(scores > 0)
        if need > 0 and len(candidates):
            # Best score first, ties in document order (a stable sort), so results are deterministic.
            ranked = candidates[np.argsort(-scores[candidates], kind="stable")][:need]
            for i in ranked.tolist():
                d = self._docs[i]
                out.append(Snippet(d.text, d.source, round(float(scores[i]), 6), d.ref))
        return out


def _query_weights(text: str) -> dict[str, float]:
    tokens = tokenize(text)
    weights: dict[str, float] = {}
    for t in tokens:
        weights[t] = weights.get(t, 0.0) + 1.0
    flat = normalise(text)
    words = _words(text)
    extra: dict[str, float] = {}
    hits = [e for t in weights if t in _SYNONYM_WORDS for e in _SYNONYM_WORDS[t]]
    hits += [(others, w) for cjk, key, others, w in _SYNONYM_PHRASES if key in (flat if cjk else words)]
    for others, w in hits:
        for t in others:
            extra[t] = max(extra.get(t, 0.0), w)
    # Expansions count less than the customer's own words, and never add to them.
    for t, w in extra.items():
        if t not in weights:
            weights[t] = w
    return weights


def _paragraphs(body: str) -> list[str]:
    """Split a policy section into paragraphs; each list item is its own paragraph."""
    paras: list[str] = []
    buf: list[str] = []
    for line in body.splitlines():
        s = line.strip()
        if not s:
            if buf:
                paras.append(" ".join(buf))
                buf = []
        elif s[:2] in ("- ", "* ") or re.match(r"\d+[.)、] ?", s):
            if buf:
                paras.append(" ".join(buf))
            buf = [re.sub(r"^(?:[-*]|\d+[.)、]) ?", "", s)]
        else:
            buf.append(s)
    if buf:
        paras.append(" ".join(buf))
    return paras


# Column names a zh rendering shows in Chinese (a shop's own Chinese headers pass through).
_ZH_ATTR = {"category": "类目", "material": "材质", "size": "尺寸", "colour": "颜色", "color": "颜色", "feature": "特点",
            "brand": "品牌", "weight": "重量", "origin": "产地"}


paragraphs = _paragraphs  # public name; `_paragraphs` stays for code already using it


def render_product(p: Product, pack: ShopPack) -> str:
    """A catalog row as a sentence a reply can quote (price, stock and every attribute)."""
    if pack.language == "zh":
        stock = f"库存{p.stock}件，有货" if p.stock > 0 else "库存0件，缺货"
        attrs = "，".join(f"{_ZH_ATTR.get(k, k)}：{v}" for k, v in p.attrs.items())
        return f"{p.name}（SKU {p.sku}）价格{p.price_text}元，{stock}" + (f"，{attrs}" if attrs else "")
    stock = f"{p.stock} in stock" if p.stock > 0 else "out of stock"
    attrs = ", ".join(f"{k}: {v}" for k, v in p.attrs.items())
    return f"{p.name} (SKU {p.sku}): price {p.price_text} {pack.currency}, {stock}" + (f", {attrs}" if attrs else "")


def render_order(row: dict[str, str], pack: ShopPack) -> str:
    """An orders.csv row as a sentence."""
    labels_zh = {"order_id": "订单号", "sku": "商品", "status": "状态", "courier": "快递", "tracking_no": "运单号",
                 "ship_date": "发货日期", "eta_days": "预计送达天数"}
    if pack.language == "zh":
        return "，".join(f"{labels_zh.get(k, k)}：{v}" for k, v in row.items() if v)
    return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in row.items() if v)
