"""The shop's knowledge: load a shop pack and retrieve snippets a reply can rely on.

    from endcloud.kb import ShopPack, KnowledgeBase
    kb = KnowledgeBase(ShopPack.load("shop/"))
    kb.search("能发顺丰吗", k=3)          # [Snippet(text, source, score, ref)], source in catalog|faq|policy|order
    kb.product("520401029636")            # Product(sku, name, price, stock, attrs) or None
    kb.order("114-3941689-8772232")       # the orders.csv row or None

The pack format is in `endcloud.kb.pack`; retrieval in `endcloud.kb.search`.
"""

from endcloud.kb.pack import LANGUAGES, POLICY_KEYS, Product, ShopPack, format_number
from endcloud.kb.search import (
    SOURCES, KnowledgeBase, Snippet, normalise, paragraphs, render_order, render_product, tokenize,
)

__all__ = [
    "LANGUAGES", "POLICY_KEYS", "SOURCES", "KnowledgeBase", "Product", "ShopPack", "Snippet",
    "format_number", "normalise", "paragraphs", "render_order", "render_product", "tokenize",
]
