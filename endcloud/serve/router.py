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
                               or the end reply is empty;
                        else end
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from endcloud.scoring.final import should_escalate

Route = Literal["end", "cloud"]
MODELS = ("endcloud", "end", "cloud")


@dataclass(slots=True)
class Signals:
    """What the fast check measured for one turn (all in [0, 1], None when not measured)."""

    match: float | None = None
    confidence: float | None = None
    frustration: float = 0.0
    empty: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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

    @classmethod
    def from_settings(cls, s) -> "Router":
        return cls(min_match=s.min_match, min_confidence=s.min_confidence, max_frustration=s.max_frustration)

    def decide(self, signals: Signals, *, model: str = "endcloud") -> Decision:
        if model == "end":
            return Decision("end", ["forced"])
        if model == "cloud":
            return Decision("cloud", ["forced"])
        reasons: list[str] = []
        if signals.empty:
            reasons.append("empty_reply")
        if signals.match is not None and should_escalate(signals.match, self.min_match):
            reasons.append(f"match {signals.match:.3f} < {self.min_match}")
        if signals.confidence is not None and should_escalate(signals.confidence, self.min_confidence):
            reasons.append(f"confidence {signals.confidence:.3f} < {self.min_confidence}")
        if signals.frustration >= self.max_frustration:
            reasons.append(f"frustration {signals.frustration:.2f} >= {self.max_frustration}")
        return Decision("cloud", reasons) if reasons else Decision("end", ["checks passed"])
