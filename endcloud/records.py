"""The few record types that flow between every stage.

Stages talk through these and through files (JSONL of their `to_json()` form), never
through each other's internals. All are plain dataclasses: cheap to build, easy to test,
round-trippable through JSON with `to_json()` / `from_json()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(slots=True)
class Turn:
    """One message of a conversation. `meta` carries extras a source knows (e.g. the
    synthetic shop's `intent` and `facts`); it never goes to a model."""

    role: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "text": self.text}
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Turn":
        return cls(role=d["role"], text=d.get("text", d.get("content", "")), meta=d.get("meta") or {})

    def to_message(self) -> dict[str, str]:
        """OpenAI chat form."""
        return {"role": self.role, "content": self.text}


@dataclass(slots=True)
class Dialogue:
    """A whole conversation as a reader yields it (before pairs are built)."""

    id: str
    source: str
    turns: list[Turn]
    lang: str = "zh"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Pair:
    """A context -> response training/eval example: one per agent turn.

    JSON form (the corpus output contract):
    {"id","source","session","lang","context":[{"role","text"}],"query","response"}
    plus optional "facts" (list of strings a correct reply states) and "intent" when
    the source knows them (the synthetic shop does).
    """

    id: str
    source: str
    session: str
    lang: str
    context: list[Turn]
    query: str
    response: str
    facts: list[str] | None = None
    intent: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "session": self.session,
            "lang": self.lang,
            "context": [{"role": t.role, "text": t.text} for t in self.context],
            "query": self.query,
            "response": self.response,
        }
        if self.facts is not None:
            d["facts"] = self.facts
        if self.intent is not None:
            d["intent"] = self.intent
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Pair":
        return cls(
            id=str(d["id"]),
            source=d.get("source", ""),
            session=str(d.get("session", "")),
            lang=d.get("lang", "zh"),
            context=[Turn.from_json(t) for t in d.get("context", [])],
            query=d["query"],
            response=d["response"],
            facts=d.get("facts"),
            intent=d.get("intent"),
        )

    def messages(self) -> list[dict[str, str]]:
        """Context + query as OpenAI-style messages (no system prompt)."""
        return [t.to_message() for t in self.context] + [{"role": "user", "content": self.query}]


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


@dataclass(slots=True)
class Reply:
    """What a teacher or the end model answered.

    `source` is "end" or "cloud"; `confidence` is the end model's mean token
    log-probability mapped to (0, 1] (exp of the mean), None for teachers."""

    text: str
    source: str
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    confidence: float | None = None
    cached: bool = False
    cost: float = 0.0


@dataclass(slots=True)
class Label:
    """A teacher's reply used as a training label (distillation output line)."""

    id: str
    query: str
    context: list[Turn]
    label: str
    teacher: str
    usage: Usage = field(default_factory=Usage)
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "query": self.query,
            "context": [{"role": t.role, "text": t.text} for t in self.context],
            "label": self.label,
            "teacher": self.teacher,
            "usage": self.usage.to_json(),
            "cached": self.cached,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Label":
        u = d.get("usage") or {}
        return cls(
            id=str(d["id"]),
            query=d["query"],
            context=[Turn.from_json(t) for t in d.get("context", [])],
            label=d["label"],
            teacher=d.get("teacher", ""),
            usage=Usage(u.get("prompt_tokens", 0), u.get("completion_tokens", 0)),
            cached=bool(d.get("cached", False)),
        )


@dataclass(slots=True)
class Score:
    """The paper's automatic evaluation of one end reply (all in [0, 1])."""

    sim: float  # Sim(end reply, cloud reply)  -- the SimBERT role
    match: float  # Match(query, end reply)     -- the RocketQA role
    cloud_match: float  # Match(query, cloud reply), for the Θ rule
    final: float
    similarity_model: str = ""
    matching_model: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Feedback:
    """A customer's or reviewer's verdict on one served reply.

    `rating` is normalised to 1..5 (thumbs up = 5, thumbs down = 1)."""

    message_id: str
    rating: int
    comment: str | None = None
    correction: str | None = None
    customer: str | None = None
    created_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
