"""Recommendations from the shop's own catalog: "推荐一款纯棉的毛巾" / "what would you recommend for …".

    rec = Recommender(ShopPack.load("shop/"))
    rec.is_request("推荐一款纯棉的毛巾")          # True
    rec.rank("推荐一款纯棉的毛巾", k=3)           # [Product, ...] in stock only, best first
    rec.answer("推荐一款纯棉的毛巾")              # '亲，为您推荐：纯棉毛巾（42元，有货）、…'
    rec.snippets("推荐一款纯棉的毛巾", k=3)       # their catalog rows, as the end model's knowledge
    rec.review(reply)                            # problems of a reply: an out-of-stock product named, …

Grounded by construction: every product recommended is a catalog row with stock > 0, and the
reply names it exactly as the catalog does. What a customer wants is read from the catalog's
own words, so nothing here knows a domain: the request's character bigrams (Chinese) or words
(English) that occur in some product's name or attribute values are the need's terms, plus a
budget ("100元以内", "under $50"). A product's relevance, the weights of the ranking task:

    1     in stock, within the budget, every term of the need in its name or attributes
    0.1   in stock, within the budget, the need's head term (its last: the kind of product in
          "纯棉的毛巾" and "dark green bedding") and maybe others
    0.01  matching, but over the budget
    0     out of stock, or no term in common
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from endcloud.kb import KnowledgeBase, Product, ShopPack, Snippet, render_product
from endcloud.tasks.lexicon import RECOMMEND_CUES
from endcloud.text import CJK_IDEOGRAPHS, detect_lang

EXACT, PARTIAL, OVER_BUDGET, NONE = 1.0, 0.1, 0.01, 0.0
_CJK_RUN = re.compile(f"[{CJK_IDEOGRAPHS}]+")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_BUDGET = (
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:元|块)?\s*(?:以内|以下|之内|内)"),
    re.compile(r"(?:预算|不超过|不到|低于)\s*(\d+(?:\.\d+)?)"),
    re.compile(r"(?:under|below|less than|at most|max|budget(?: of| is)?)\s*[$€£¥]?\s*(\d+(?:\.\d+)?)", re.I),
)
_EN_STOP = frozenset("a an the for of to in on and or with my me i you your is are be it that this what which would "
                     "can could should please some any good best buy want need looking recommend suggest suggestion "
                     "one something under below less than budget price cheap".split())
# Bigrams of the request words themselves ("推荐", "一款") are not what the customer wants.
_ZH_CUE_CHARS = frozenset("推荐款个一些哪好选挑买适合帮我有没什么的吗呢请求想要给")


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "").lower()


@dataclass(frozen=True, slots=True)
class Need:
    """What a request asks for: catalog terms it names and an optional budget (the shop's currency)."""

    terms: tuple[str, ...]
    budget: float | None
    lang: str


class Recommender:
    """Ranks the catalog for a request; only products in stock are ever recommended."""

    def __init__(self, pack: ShopPack, kb: KnowledgeBase | None = None):
        self.pack = pack
        self.kb = kb or KnowledgeBase(pack)
        self._text = {p.sku: _norm(" ".join([p.name, *p.attrs.values()])) for p in pack.products}
        self._vocab_zh: set[str] = set()
        self._vocab_en: set[str] = set()
        for t in self._text.values():
            for run in _CJK_RUN.findall(t):
                self._vocab_zh.update(run[i:i + 2] for i in range(len(run) - 1))
            self._vocab_en.update(w for w in _WORD.findall(t) if w not in _EN_STOP and len(w) > 1)

    # -- reading the request ------------------------------------------------------------
    @staticmethod
    def is_request(text: str) -> bool:
        """Whether `text` asks for a recommendation (zh or en cue words)."""
        t = _norm(text)
        return any(c in t for c in RECOMMEND_CUES["zh"]) or any(
            re.search(r"(?<![a-z])" + re.escape(c) + r"(?![a-z])", t) for c in RECOMMEND_CUES["en"])

    def need(self, text: str) -> Need:
        t = _norm(text)
        terms: list[str] = []
        for run in _CJK_RUN.findall(t):
            for i in range(len(run) - 1):
                bg = run[i:i + 2]
                if bg in self._vocab_zh and not all(c in _ZH_CUE_CHARS for c in bg) and bg not in terms:
                    terms.append(bg)
        for w in _WORD.findall(t):
            if w in self._vocab_en and not w.isdigit() and w not in terms:
                terms.append(w)
        budget = None
        for rx in _BUDGET:
            m = rx.search(t)
            if m:
                budget = float(m.group(1))
                # the budget's digits are not a term ("100元以内" names no product "100")
                terms = [x for x in terms if x not in m.group(0)]
                break
        return Need(tuple(terms), budget, detect_lang(text, default=self.pack.language))

    # -- ranking ------------------------------------------------------------------------
    def relevance(self, need: Need, p: Product) -> float:
        """The weight of `p` for `need` (see the module docstring); 0 for anything out of stock."""
        if not p.in_stock or not need.terms:
            return NONE
        text = self._text[p.sku]
        hit = sum(1 for term in need.terms if term in text)
        if hit == 0 or need.terms[-1] not in text:
            return NONE
        if need.budget is not None and p.price > need.budget:
            return OVER_BUDGET
        return EXACT if hit == len(need.terms) else PARTIAL

    def _key(self, need: Need, p: Product) -> tuple:
        text = self._text[p.sku]
        hit = sum(1 for term in need.terms if term in text)
        return (-self.relevance(need, p), -hit, p.price, self.pack.products.index(p))

    def rank(self, request: str | Need, k: int = 3, *, candidates: Sequence[Product] | None = None) -> list[Product]:
        """Up to `k` products for the request, best first: in stock and within the budget; those
        with every term of the need when there are any, else those sharing a term; [] when
        nothing in stock fits."""
        need = request if isinstance(request, Need) else self.need(request)
        pool = [p for p in (candidates if candidates is not None else self.pack.products)
                if self.relevance(need, p) >= PARTIAL]
        if any(self.relevance(need, p) == EXACT for p in pool):
            pool = [p for p in pool if self.relevance(need, p) == EXACT]
        pool.sort(key=lambda p: self._key(need, p))
        return pool[:k]

    def snippets(self, request: str, k: int = 3) -> list[Snippet]:
        """The catalog rows of `rank(request, k)`, as knowledge snippets (`kb.prompt` renders them)."""
        return [Snippet(render_product(p, self.pack), "catalog", 1.0, p.sku) for p in self.rank(request, k)]

    # -- answering and checking ---------------------------------------------------------
    def answer(self, request: str, *, k: int = 2, lang: str | None = None) -> str:
        """One short reply naming the best in-stock products with their prices, or saying none fits."""
        lang = lang or detect_lang(request, default=self.pack.language)
        found = self.rank(request, k)
        cur = self.pack.currency
        if lang == "zh":
            if not found:
                return "抱歉亲，店里暂时没有符合您需求的商品有货哦。"
            parts = [f"{p.name}（{p.price_text}元，有货）" for p in found]
            return "亲，为您推荐：" + "、".join(parts) + "。"
        if not found:
            return "Sorry, nothing in stock matches that right now."
        parts = [f"the {p.name} ({p.price_text} {cur}, in stock)" for p in found]
        return "I'd recommend " + " or ".join(parts) + "."

    def named(self, reply: str) -> list[Product]:
        """The catalog products a reply names exactly (by SKU or full name)."""
        return [m.product for m in self.kb.products(reply) if m.exact]

    def review(self, reply: str, request: str | None = None) -> list[str]:
        """What is wrong with a recommendation reply: each out-of-stock product it names, and,
        when the request has an in-stock match, naming no catalog product at all."""
        problems = [f"out of stock: {p.name}" for p in self.named(reply) if not p.in_stock]
        if request is not None and not self.named(reply) and self.rank(request, 1):
            problems.append("names no product of the catalog")
        return problems


__all__ = ["EXACT", "NONE", "OVER_BUDGET", "PARTIAL", "Need", "Recommender"]
