"""The end reply's last step before the router: the customer's own data into its placeholders,
then every fact it states checked against what the turn knows.

    guard = ReplyGuard(settings, kb, metrics)
    gen = guard.review(gen, convo, signals)            # fills "[ORDER_1]"; sets signals.grounded / .unsupported

Placeholders: the online loop learns order-status replies as templates ("您的订单[ORDER_1]已发货",
see `endcloud.evolve.checks`), so the end model writes them; they are filled here from this
conversation (the customer's messages, the Customer system message, the knowledge), numbered
as the loop numbered them (`endcloud.privacy.templates`) — the same vault restore the privacy
gate does for the cloud's replies. A placeholder the conversation cannot fill stays, and the
grounding check sends that reply to the cloud. Streamed end replies are filled as they go
(`StreamFiller` holds back an unclosed "[" until it closes).

Grounding (`endcloud.scoring.grounding`): the evidence is what the end model was given —
the customer's and the system messages of `convo` (knowledge snippets, the Customer
message) — plus the shop's profile, and, when the end model gets no snippets
(`knowledge_snippets=0`), `grounding_snippets` retrieved for the check alone. Earlier
replies are no evidence: they may be the end model's own inventions. Without a shop pack
there is nothing to check against and the signal stays None.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from endcloud.scoring.grounding import Fact, GroundingChecker, shop_profile_text

log = logging.getLogger("endcloud.serve")

# The longest placeholder a stream holds back ("[TRACKING_123456]" is 17 characters).
MAX_PLACEHOLDER_CHARS = 24


def _templates():
    # endcloud.privacy compiles its detectors at import: only a reply with a placeholder needs them
    from endcloud.privacy import templates

    return templates


def shown(fact: Fact) -> str:
    """A fact as a reason, a log line and the dashboard show it: a long id shortened, so an order
    or phone number the end model wrote does not spread into logs."""
    t = fact.text
    if fact.kind == "id" and len(t) > 6:
        return f"{t[:2]}…{t[-2:]}"
    return t


class StreamFiller:
    """Fills placeholders in a reply that arrives in pieces: text from an unclosed "[" on is
    held back until the "]" arrives (or it grows too long to be a placeholder)."""

    def __init__(self, fill: Callable[[str], str]):
        self._fill = fill
        self._held = ""

    def feed(self, piece: str) -> str:
        buf = self._held + piece
        cut = buf.rfind("[")
        if cut >= 0 and "]" not in buf[cut:] and len(buf) - cut <= MAX_PLACEHOLDER_CHARS:
            self._held, out = buf[cut:], buf[:cut]
        else:
            self._held, out = "", buf
        return self._fill(out) if out else ""

    def flush(self) -> str:
        out, self._held = self._held, ""
        return self._fill(out) if out else ""


class ReplyGuard:
    """Fills and checks end replies for one server (see the module docstring)."""

    def __init__(self, settings: Any, kb: Any, metrics: Any = None):
        self.kb, self.metrics = kb, metrics
        self.enabled = bool(settings.grounding_check) and kb is not None
        self.own_snippets = settings.grounding_snippets if settings.knowledge_snippets <= 0 else 0
        self.checker = GroundingChecker.for_knowledge(kb) if self.enabled else None
        self.profile = shop_profile_text(kb) if self.enabled else ""

    def fill(self, text: str, convo: list[dict[str, Any]]) -> str:
        """`text` with the placeholders this conversation holds values for restored."""
        t = _templates()
        if not text or not t.has_placeholder(text):
            return text
        return t.messages_vault(convo).restore(text)

    def filler(self, convo: list[dict[str, Any]]) -> StreamFiller:
        vault: list[Any] = []  # built on the first placeholder, once

        def fill(text: str) -> str:
            t = _templates()
            if not t.has_placeholder(text):
                return text
            if not vault:
                vault.append(t.messages_vault(convo))
            return vault[0].restore(text)

        return StreamFiller(fill)

    def evidence(self, convo: list[dict[str, Any]]) -> list[str]:
        texts = [m["content"] for m in convo if m.get("role") in ("user", "system") and isinstance(m.get("content"), str)]
        # the question as the models got it (order numbers the caller does not own withheld), and
        # no order rows: the customer's own orders are in the Customer message already
        question = next((m["content"] for m in reversed(convo) if m.get("role") == "user"), "")
        if self.own_snippets > 0 and question.strip():
            texts += [sn.text for sn in self.kb.search(question, k=self.own_snippets) if sn.source != "order"]
        return texts + [self.profile]

    def review(self, gen: Any, convo: list[dict[str, Any]], signals: Any) -> Any:
        """The end reply `gen` with its placeholders filled; `signals.grounded`/`.unsupported` set."""
        text = self.fill(gen.text, convo)
        # in place: the engine hangs more on a generation than its fields (the adapter that wrote it)
        gen.text = text
        if not self.enabled or not text.strip():
            return gen
        try:
            g = self.checker.check(text, self.evidence(convo))
        except Exception:  # a check must never cost the customer a reply
            log.exception("grounding check failed")
            return gen
        signals.grounded = g.supported
        signals.unsupported = [shown(f) for f in g.unsupported]
        if g.unsupported:
            if self.metrics is not None:
                for kind in sorted({f.kind for f in g.unsupported}):
                    self.metrics.grounding_failures.labels(kind=kind).inc()
            log.info("end reply ungrounded: %s", ", ".join(signals.unsupported))
        return gen


__all__ = ["MAX_PLACEHOLDER_CHARS", "ReplyGuard", "StreamFiller", "shown"]
