"""The synthetic shop: a seeded, deterministic fictional shop (zh or en) written as a shop pack.

    from endcloud.corpus.shopworld import generate_shop
    summary = generate_shop("shop/", lang="en", sessions=2000, products=40, seed=0, wrong_rate=0.18)

writes `shop.yaml`, `catalog.csv`, `faq.jsonl`, `policies.md`, `orders.csv` (the knowledge),
`chats/chats.jsonl` (+ `chats/jddc.txt` for zh: customers and human agents, with each reply's
`intent`, true `facts` and whether it was `correct`) and `chats/eval.jsonl` (held-out questions
per intent and the paper's six probes). CLI: `endcloud shop new OUT`.
"""

from endcloud.corpus.shopworld.chats import INTENTS, Drawer, Exchange, norm
from endcloud.corpus.shopworld.generate import PROBES, ShopSummary, generate_shop
from endcloud.corpus.shopworld.world import World, build_world

__all__ = ["INTENTS", "PROBES", "Drawer", "Exchange", "ShopSummary", "World", "build_world", "generate_shop", "norm"]
