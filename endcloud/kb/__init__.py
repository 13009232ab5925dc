"""The shop's knowledge: load a shop pack and retrieve snippets a reply can rely on.

    from endcloud.kb import ShopPack, KnowledgeBase
    kb = KnowledgeBase(ShopPack.load("shop/"))
    kb.search("能发顺丰吗", k=3)          # [Snippet(text, source, score, ref)], source in catalog|faq|policy|order
    kb.product("520401029636")            # Product(sku, name, price, stock, attrs) or None
    kb.product("龙井多少钱")               # loosely named: part of a name, an English-name column
    kb.order("114-3941689-8772232")       # the orders.csv row or None

The pack format is in `endcloud.kb.pack`; retrieval in `endcloud.kb.search`.
"""

from endcloud.kb.pack import LANGUAGES, POLICY_KEYS, Product, ShopPack, format_number
from endcloud.kb.search import (
    SOURCES, KnowledgeBase, ProductMatch, Snippet, asks_for_number, asks_when, content_tokens, is_name_column, normalise,
    paragraphs, render_order, render_product, tokenize, without_spans,
)

__all__ = [
    "LANGUAGES", "POLICY_KEYS", "SOURCES", "KnowledgeBase", "Product", "ProductMatch", "ShopPack", "Snippet",
    "asks_for_number", "asks_when", "content_tokens", "format_number", "is_name_column", "normalise", "paragraphs",
    "render_order", "render_product", "tokenize", "without_spans",
]
