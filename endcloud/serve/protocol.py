"""The wire formats of the chat API: request schemas, the completion body, SSE chunks.

The subset of OpenAI's chat completions the server honours (`ChatRequest`), its own
feedback and profile bodies, and how a turn's result is written: one JSON completion, or
server-sent events (`sse_chunk`, then `data: [DONE]`). The `endcloud` extension field of
a reply carries the message id, session, who answered, scores and the routing decision.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from endcloud.text import CJK_CHARACTERS

if TYPE_CHECKING:
    from endcloud.serve.turn import TurnResult

SESSION_HEADER = "x-endcloud-session"
SSE_DONE = "data: [DONE]\n\n"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat request the server honours (other fields are ignored)."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = 1
    session_id: str | None = Field(default=None, max_length=128)  # extension: pin the conversation's session

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported")
        return v


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_id: str = Field(min_length=1, max_length=128)
    rating: int | str
    comment: str | None = Field(default=None, max_length=4000)
    correction: str | None = Field(default=None, max_length=8000)
    user: str | None = Field(default=None, max_length=128)


class ProfileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preferences: dict[str, Any] | None = None
    orders: list[dict[str, Any]] | None = None
    replace_orders: bool = False


_PIECE = re.compile(f"[{CJK_CHARACTERS}]|[^\\s{CJK_CHARACTERS}]+\\s*|\\s+")


def stream_pieces(text: str) -> list[str]:
    """Split a reply into stream pieces: a word with its trailing space, or one CJK character."""
    return _PIECE.findall(text) or [text]


def completion_json(r: "TurnResult") -> dict[str, Any]:
    """The non-streamed reply body (OpenAI's chat.completion, plus the `endcloud` extension)."""
    return {
        "id": r.message_id,
        "object": "chat.completion",
        "created": r.created,
        "model": r.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text}, "finish_reason": "stop", "logprobs": None}],
        "usage": r.usage,
        "endcloud": r.extension(),
    }


# Characters JSON leaves raw that some SSE clients take for line ends (httpx's line decoder
# splits like str.splitlines): escaped, the event stays one line and decodes the same.
_SSE_ESCAPES = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def sse_chunk(mid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None, **extra) -> str:
    """One server-sent event carrying a chat.completion.chunk (`extra`: top-level fields such as usage)."""
    body = {"id": mid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
    return "data: " + json.dumps(body, ensure_ascii=False).translate(_SSE_ESCAPES) + "\n\n"

