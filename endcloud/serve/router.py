"""Answer locally or hand over to the cloud: a pure decision over a turn's signals.

Shaped like RouteLLM's router: the signals are measured elsewhere (the matcher, the end
model's confidence, the frustration lexicon); `Router.decide` only compares them with the
thresholds in `ServeSettings` (`endcloud.scoring.should_escalate`, the decision the online
loop makes on a low Final) and says why. Every decision is logged with its reasons. The
paper's Final needs the cloud's reply, so the server computes it only for takeovers.

    model="end"      -> end, always            (reason "forced")
    model="cloud"    -> cloud, always          (reason "forced")
    model="endcloud" -> cloud if match < min_match
                               or confidence < min_confidence
                               or frustration >= max_frustration
                               or the end reply is empty
                               or it is a hand-off ("I don't know, a colleague will check")
                               or it states a fact nothing in the turn supports
                                  (reason "ungrounded: 99元, 5天"; see `endcloud.scoring.grounding`)
                               or it holds novel text: words in neither the turn's evidence nor the
                                  phrasing the end model was trained to write, as a garbled product
                                  name or a value remembered from training shops
                                  (reason "novel: 禾韩烻, 日常训练"; see `endcloud.scoring.novelty`)
                               or the message's intent is one of `cloud_intents`
                               or its sentiment score is below `min_sentiment`
                                  (intent and sentiment: `endcloud.tasks.classify`; both rules off by default);
                        else end
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

from endcloud.scoring.final import should_escalate

Route = Literal["end", "cloud"]
MODELS = ("endcloud", "end", "cloud")
MAX_REASON_FACTS = 3  # unsupported facts named in an "ungrounded" reason
MAX_REASON_RUNS = 3  # novel runs named in a "novel" reason


@dataclass(slots=True)
class Signals:
    """What the fast check measured for one turn (all in [0, 1], None when not measured)."""

    match: float | None = None
    confidence: float | None = None
    frustration: float = 0.0
    empty: bool = False
    # None: not checked (no shop knowledge, or grounding_check off); else whether every fact the
    # end reply states is supported by the turn's snippets, the customer's data or the shop's profile
    grounded: bool | None = None
    unsupported: list[str] = field(default_factory=list)  # those facts, as written (long ids shortened)
    # text of the end reply that is neither in the turn's evidence nor the end model's trained
    # phrasing (`endcloud.scoring.novelty`; normalised, each cut to a few characters); empty
    # where not checked (novelty_check off, no glue, a hand-off reply)
    novel: list[str] = field(default_factory=list)
    # the end model said it does not know (a hand-off reply): the cloud may know, so it gets the turn
    handoff: bool = False
    # what the customer's message wants and how it feels (`endcloud.tasks.classify`; seed 003's dialogue management)
    intent: str | None = None
    sentiment: str | None = None
    sentiment_score: float | None = None  # in [-1, 1], -1 very negative

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def is_handoff(text: str, handoffs: Sequence[str]) -> bool:
    """Whether `text` is one of the hand-off replies (compared without spaces, punctuation
    and case: a small model's reply may differ from the template there)."""
    bare = _bare(text)
    return bool(bare) and any(bare == _bare(h) for h in handoffs if h)


def _bare(text: str) -> str:
    import unicodedata

    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalnum())


@dataclass(slots=True)
class Decision:
    route: Route
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"route": self.route, "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class Router:
    """Thresholds; `decide` is pure (same signals, same decision)."""

    min_match: float = 0.25
    min_confidence: float = 0.0
    max_frustration: float = 0.5
    cloud_intents: tuple[str, ...] = ()  # intents the cloud always answers (e.g. "complaint"); none by default
    min_sentiment: float | None = None  # a sentiment score below this -> cloud; None: off

    @classmethod
    def from_settings(cls, s) -> "Router":
        # the intent/sentiment rules are read where the settings carry them (ServeSettings does not yet)
        return cls(min_match=s.min_match, min_confidence=s.min_confidence, max_frustration=s.max_frustration,
                   cloud_intents=tuple(getattr(s, "cloud_intents", ()) or ()), min_sentiment=getattr(s, "min_sentiment", None))

    def decide(self, signals: Signals, *, model: str = "endcloud") -> Decision:
        if model == "end":
            return Decision("end", ["forced"])
        if model == "cloud":
            return Decision("cloud", ["forced"])
        reasons: list[str] = []
        if signals.empty:
            reasons.append("empty_reply")
        if signals.handoff:
            reasons.append("end_handoff")
        if signals.match is not None and should_escalate(signals.match, self.min_match):
            reasons.append(f"match {signals.match:.3f} < {self.min_match}")
        if signals.confidence is not None and should_escalate(signals.confidence, self.min_confidence):
            reasons.append(f"confidence {signals.confidence:.3f} < {self.min_confidence}")
        if signals.frustration >= self.max_frustration:
            reasons.append(f"frustration {signals.frustration:.2f} >= {self.max_frustration}")
        if signals.intent is not None and signals.intent in self.cloud_intents:
            reasons.append(f"intent {signals.intent}")
        if (self.min_sentiment is not None and signals.sentiment_score is not None
                and signals.sentiment_score < self.min_sentiment):
            reasons.append(f"sentiment {signals.sentiment_score:.2f} < {self.min_sentiment}")
        if signals.unsupported:
            more = " …" if len(signals.unsupported) > MAX_REASON_FACTS else ""
            reasons.append("ungrounded: " + ", ".join(signals.unsupported[:MAX_REASON_FACTS]) + more)
        if signals.novel:
            more = " …" if len(signals.novel) > MAX_REASON_RUNS else ""
            reasons.append("novel: " + ", ".join(signals.novel[:MAX_REASON_RUNS]) + more)
        return Decision("cloud", reasons) if reasons else Decision("end", ["checks passed"])
