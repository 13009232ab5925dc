"""What a served turn asks of the shop tasks: the message's intent and sentiment, and, for a
request for a recommendation, the catalog rows the end model should read and a check of its reply.

    assistant = ShopAssistant(kb)                      # kb may be None (no shop pack): analysis only
    assistant.analyse("推荐一款纯棉的毛巾")              # {"intent": "recommend", "sentiment": "neutral", "sentiment_score": 0.0}
    assistant.snippets(turns, snippets, k=3)           # a recommendation request: its in-stock catalog rows
    assistant.review(query, reply)                     # ["out of stock: …"] for a reply recommending what cannot ship

`endcloud.serve.turn` calls these three; the router reads the analysis from its Signals and the
dashboard counts it. A recommendation's snippets are the rows `Recommender.rank` returns (in stock,
within any budget), so the end model — trained on the same prompts by the `recommend_chat` task —
names only products the shop can ship, and `review` sends a reply that names an out-of-stock one
to the cloud like any other unsupported fact.
"""

from __future__ import annotations

from typing import Any, Sequence

from endcloud.tasks.classify import DialogueClassifier, load_classifier


class ShopAssistant:
    """Intent, sentiment and grounded recommendations for the server; never raises on a turn."""

    def __init__(self, kb: Any = None, *, classifier: DialogueClassifier | None = None):
        self.classifier = classifier or load_classifier("lexicon")
        self.recommender = None
        if kb is not None and getattr(kb, "pack", None) is not None and kb.pack.products:
            from endcloud.tasks.recommend import Recommender

            self.recommender = Recommender(kb.pack, kb)

    def analyse(self, text: str) -> dict[str, Any]:
        """The router's intent/sentiment signals for one customer message."""
        a = self.classifier.analyse(text)
        return {"intent": a.intent, "sentiment": a.sentiment, "sentiment_score": a.sentiment_score}

    def is_recommendation(self, text: str) -> bool:
        return self.recommender is not None and self.recommender.is_request(text) and bool(self.recommender.rank(text, 1))

    def snippets(self, turns: Sequence[dict[str, str]], snippets: list[Any], k: int) -> list[Any]:
        """For a recommendation request, the recommended products' catalog rows (up to `k`);
        otherwise the retrieval's snippets unchanged."""
        query = next((m["content"] for m in reversed(turns) if m.get("role") == "user"), "")
        if k <= 0 or not self.is_recommendation(query):
            return snippets
        return self.recommender.snippets(query, k=k)  # type: ignore[union-attr]

    def review(self, query: str, reply: str) -> list[str]:
        """Unsupported claims of a recommendation reply (out-of-stock products named); [] otherwise."""
        if not self.is_recommendation(query):
            return []
        return self.recommender.review(reply, query)  # type: ignore[union-attr]


__all__ = ["ShopAssistant"]
