"""Retrieve knowledge snippets from a shop pack: BM25 plus exact SKU/name/order lookups.

The documents are the FAQ entries (question + answer), the policy paragraphs (with their
section heading) and the catalog rows rendered as a sentence (name, SKU, price, stock,
attributes). Chinese is tokenised as CJK character unigrams + bigrams (no segmenter
needed, robust to the shop's own product words), English as lower-case words with a light
suffix strip; a small table of e-commerce synonyms widens the query ("delivery service"
finds the courier policy). A mentioned order id or SKU/product name is looked up exactly
and put first, since a customer who names one wants that one.

    kb = KnowledgeBase(ShopPack.load("shop/"))
    kb.search("can I choose the courier?", k=3)   # -> [Snippet(text, source, score, ref), ...]
    kb.product("520401029636"), kb.order("114-3941689-8772232")
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
)
_SYNONYMS_ZH = (
    ("快递", "物流", "配送", "顺丰", "中通", "发什么"),
    ("优惠", "便宜", "折扣", "优惠券", "打折", "券", "满减", "减价"),
    ("退款", "退钱", "钱退", "退的钱", "到账", "退回来"),
    ("退货", "退换", "换货", "寄回", "能退", "可以退", "不合适", "不喜欢"),
    ("发票", "开票", "专票", "普票"),
    ("发货", "发出", "寄出", "出库"),
    ("到货", "送达", "几天到", "多久到", "签收", "收到货", "几天能到"),
    ("破损", "坏了", "坏的", "破了", "烂了", "质量问题", "保修", "售后", "维修", "瑕疵", "有问题", "漏水", "裂了", "不能用"),
    ("延误", "催件", "还没到", "等了", "着急", "太慢", "不更新", "不敢出门"),
    ("库存", "有货", "现货", "缺货", "没货", "补货"),
    ("价格", "多少钱", "价钱"),
    ("地址", "改地址"),
)


def normalise(text: str) -> str:
    """NFKC + lower-case: the form every comparison here uses."""
    return unicodedata.normalize("NFKC", text).lower()


def _stem(word: str) -> str:
    # A light suffix strip so "ships/shipped/shipping" meet; enough for BM25 on a small shop.
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


@dataclass(frozen=True, slots=True)
class Snippet:
    """One retrieved piece of shop knowledge. `ref` is the sku, FAQ index, policy key or order id."""

    text: str
    source: str
    score: float
    ref: str


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
        # Names by their first two characters, longest first, so "加厚纯棉浴巾" wins over
        # "纯棉浴巾" and a 2,000-product catalog is not scanned name by name for each question.
        self._names: dict[str, list[tuple[str, Product]]] = {}
        for p in pack.products:
            name = _SPACE.sub("", normalise(p.name))
            if name:
                self._names.setdefault(name[:2], []).append((name, p))
        for entries in self._names.values():
            entries.sort(key=lambda x: -len(x[0]))
        self._orders = {normalise(oid): oid for oid in pack.orders}

    def __len__(self) -> int:
        return len(self._docs)

    def product(self, text: str) -> Product | None:
        """The product whose SKU or full name `text` mentions, else None."""
        for m in _IDLIKE.finditer(normalise(text)):  # NFKC first: full-width "５２０…" is an id too
            p = self._by_sku.get(m.group())
            if p is not None:
                return p
        flat = _SPACE.sub("", normalise(text))
        best: tuple[int, int, Product] | None = None  # (-length, catalog position, product)
        for i in range(len(flat)):
            for name, p in self._names.get(flat[i : i + 2], ()):
                if flat.startswith(name, i):
                    cand = (-len(name), self._position[p.sku], p)
                    if best is None or cand[:2] < best[:2]:
                        best = cand
                    break  # the rest of this list is shorter
        return best[2] if best is not None else None

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
        # What the exact lookups found is already in hand: rank the rest of the question
        # ("... arrived damaged, what now?") so a product name does not pull in its look-alikes.
        for oid in orders:
            rest = rest.replace(normalise(oid), " ")
        if product is not None:
            name = normalise(product.name)
            if name in rest:
                rest = rest.replace(name, " ")
            else:  # matched ignoring spaces ("纯棉 方巾"): drop the spaces to cut it out
                rest = _SPACE.sub("", rest).replace(_SPACE.sub("", name), " ")
            rest = rest.replace(normalise(product.sku), " ")
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
