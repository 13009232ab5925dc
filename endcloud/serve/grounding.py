"""The end reply's last step before the router: the customer's own data into its placeholders,
then every fact it states checked against what the turn knows, and its text for what neither
the turn nor the end model's trained phrasing accounts for.

    guard = ReplyGuard(settings, kb, metrics, glue=serving_glue(settings.base_dir, kb, labels))
    gen = guard.review(gen, convo, signals)            # fills "[ORDER_1]"; sets signals.grounded / .unsupported / .novel

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

Novelty (`endcloud.scoring.novelty`, setting `novelty_check`): the same evidence are the
sources; the runs of the reply found in neither them nor the glue — the phrasing the end
model was trained to write — go in `signals.novel` (each cut to `MAX_RUN_CHARS`: whatever the
model made up stays out of logs and the dashboard beyond a few characters). The glue
(`serving_glue`) is the base's glue.json (`endcloud pretrain --recipe reader` writes one
beside the shipped reader) merged with one learned at start-up from the workspace's newest
teacher labels (`endcloud.compose` reads them), each label against its retrieved knowledge:
an adapter tuned on them writes their phrasing too. A base without glue.json is not checked
— what it was trained to say is unknown, and every reply of it would look novel — nor is a
hand-off reply, nor a turn without a shop pack; `signals.novel` then stays empty.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable

from endcloud.scoring.grounding import Fact, GroundingChecker, shop_profile_text
from endcloud.scoring.novelty import Glue, NoveltyChecker

log = logging.getLogger("endcloud.serve")

# The longest placeholder a stream holds back ("[TRACKING_123456]" is 17 characters).
MAX_PLACEHOLDER_CHARS = 24
MAX_RUN_CHARS = 12  # of a novel run in a reason, a log line or the dashboard


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


def shown_run(run: str) -> str:
    """A novel run as a reason, a log line and the dashboard show it: at most `MAX_RUN_CHARS`."""
    return run if len(run) <= MAX_RUN_CHARS else run[:MAX_RUN_CHARS - 1].rstrip() + "…"


def serving_glue(base_dir: Any, kb: Any, labels: Iterable[tuple[list[dict[str, Any]], str]] = (), *,
                 snippets: int = 3) -> Glue | None:
    """The served end model's glue: `<base_dir>/glue.json`, merged with the glue of `labels`
    ((turns, label) pairs: the turns ending with the question, each read with the knowledge
    `retrieve` finds for it and the shop's profile, as a served turn is). None where the base
    has no glue.json (or it cannot be read): the novelty check then stays off."""
    from endcloud.end.reader import GLUE_NAME

    if base_dir is None:
        return None
    path = Path(base_dir) / GLUE_NAME
    if not path.is_file():
        return None
    try:
        glue = Glue.load(path)
    except Exception as e:  # a broken glue file must not stop the shop from serving
        log.warning("novelty check off: %s", e)
        return None
    labels = list(labels)
    if labels and kb is not None:
        from endcloud.kb.prompt import retrieve

        profile = shop_profile_text(kb)

        def pairs():
            for turns, label in labels:
                texts = [str(t.get("content") or "") for t in turns]
                yield texts + [sn.text for sn in retrieve(kb, turns, snippets)] + [profile], label

        glue = glue.merge(Glue.learn(pairs(), source="teacher labels"))
    return glue


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

    def __init__(self, settings: Any, kb: Any, metrics: Any = None, *, glue: Glue | None = None):
        self.kb, self.metrics = kb, metrics
        self.enabled = bool(settings.grounding_check) and kb is not None
        self.own_snippets = settings.grounding_snippets if settings.knowledge_snippets <= 0 else 0
        self.checker = GroundingChecker.for_knowledge(kb) if self.enabled else None
        use_glue = bool(settings.novelty_check) and kb is not None and glue is not None and len(glue) > 0
        self.novelty = NoveltyChecker(glue) if use_glue else None
        self.profile = shop_profile_text(kb) if kb is not None else ""

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
        """The end reply `gen` with its placeholders filled; `signals.grounded`/`.unsupported`
        and `signals.novel` set (a hand-off reply, `signals.handoff`, is not checked for novelty)."""
        text = self.fill(gen.text, convo)
        # in place: the engine hangs more on a generation than its fields (the adapter that wrote it)
        gen.text = text
        novelty = self.novelty is not None and not signals.handoff
        if not (self.enabled or novelty) or not text.strip():
            return gen
        try:
            evidence = self.evidence(convo)
        except Exception:  # a check must never cost the customer a reply
            log.exception("reading the turn's evidence failed")
            return gen
        if self.enabled:
            self._grounding(text, evidence, signals)
        if novelty:
            self._novelty(text, evidence, signals)
        return gen

    def _grounding(self, text: str, evidence: list[str], signals: Any) -> None:
        try:
            g = self.checker.check(text, evidence)
        except Exception:  # a check must never cost the customer a reply
            log.exception("grounding check failed")
            return
        signals.grounded = g.supported
        signals.unsupported = [shown(f) for f in g.unsupported]
        if g.unsupported:
            if self.metrics is not None:
                for kind in sorted({f.kind for f in g.unsupported}):
                    self.metrics.grounding_failures.labels(kind=kind).inc()
            log.info("end reply ungrounded: %s", ", ".join(signals.unsupported))

    def _novelty(self, text: str, evidence: list[str], signals: Any) -> None:
        try:
            n = self.novelty.check(text, evidence)
        except Exception:  # a check must never cost the customer a reply
            log.exception("novelty check failed")
            return
        signals.novel = [shown_run(r) for r in n.novel]
        if n.novel:
            if self.metrics is not None:
                self.metrics.novelty_failures.inc()
            log.info("end reply novel: %s", ", ".join(signals.novel))


__all__ = ["MAX_PLACEHOLDER_CHARS", "MAX_RUN_CHARS", "ReplyGuard", "StreamFiller", "serving_glue", "shown", "shown_run"]
