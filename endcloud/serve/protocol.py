"""The wire formats of the chat API: request schemas, the completion body, SSE chunks.

The subset of OpenAI's chat completions the server honours (`ChatRequest`), its own
feedback and profile bodies, and how a turn's result is written: one JSON completion, or
server-sent events (`sse_chunk`, then `data: [DONE]`). The `endcloud` extension field of
a reply carries the message id, session, who answered, scores and the routing decision.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from endcloud.runtime.protocol import SEED_MAX, SEED_MIN
from endcloud.text import CJK_CHARACTERS

if TYPE_CHECKING:
    from endcloud.serve.turn import TurnResult

SESSION_HEADER = "x-endcloud-session"
MAX_SESSION_ID_CHARS = 128  # a session id, in the body (`session_id`) or in the header alike
SSE_DONE = "data: [DONE]\n\n"

# Per-request settings are checked here, at the door, strictly (no "yes" for true, no "1" for
# 1, no NaN): a value that passed would otherwise meet its limit inside a batch step shared
# with other customers (a seed past 64 bits once failed every row of the batch).
Temperature = Annotated[float, Field(ge=0.0, le=2.0, strict=True, allow_inf_nan=False)]
TopP = Annotated[float, Field(gt=0.0, le=1.0, strict=True, allow_inf_nan=False)]
TokenCount = Annotated[int, Field(ge=1, le=2**31 - 1, strict=True)]
Seed = Annotated[int, Field(ge=SEED_MIN, le=SEED_MAX, strict=True)]


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
    model: str = Field(max_length=64)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    user: str | None = Field(default=None, max_length=128)
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None  # a signed 64-bit integer
    n: StrictInt = 1
    session_id: str | None = Field(default=None, max_length=MAX_SESSION_ID_CHARS)  # extension: pin the conversation's session

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported")
        return v

    @field_validator("messages")
    @classmethod
    def _a_question(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        last = messages[-1]
        if last.role == "user" and not has_visible_text(last.text()):
            # zero-width spaces, joiners, fillers: nothing a model or a person could answer
            raise ValueError(f"the last user message (messages.{len(messages) - 1}.content) is empty or has only "
                             "invisible characters (spaces, zero-width ones); send a question")
        return messages


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_id: str = Field(min_length=1, max_length=128)
    # 'up' | 'down' | 👍 | 👎 | 1-5, checked by the store; here only what it can hold (one field for
    # the error's param: a union would name its branches)
    rating: Any = Field(json_schema_extra={"anyOf": [{"type": "integer", "minimum": 1, "maximum": 5},
                                                     {"type": "string", "maxLength": 16}]})
    comment: str | None = Field(default=None, max_length=4000)
    correction: str | None = Field(default=None, max_length=8000)
    user: str | None = Field(default=None, max_length=128)


    @field_validator("rating")
    @classmethod
    def _a_rating(cls, v: Any) -> int | str:
        bad = ValueError(f"rating must be 'up', 'down' or an integer 1-5, got {v!r:.40}")
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise bad
        if isinstance(v, int) and not -(2**31) <= v < 2**31:
            raise bad
        # '²' is a digit that int() refuses; 40 digits are no rating either
        if isinstance(v, str) and (len(v) > 16 or (v.strip().isdigit() and not v.strip().isdecimal())):
            raise bad
        return v


class ProfileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preferences: dict[str, Any] | None = None
    orders: list[dict[str, Any]] | None = None
    replace_orders: bool = False


# Characters that show nothing: format (zero-width space, joiners, BOM), controls, separators,
# marks with no base, surrogates, and the blank fillers of Hangul and Braille. (Unassigned code
# points are not among them: an emoji newer than this Python's Unicode tables reads as one.)
_INVISIBLE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Mn", "Me", "Zs", "Zl", "Zp"))
_BLANK_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def has_visible_text(text: str) -> bool:
    """Whether `text` has at least one character that shows (a question can be read)."""
    return any(not c.isspace() and c not in _BLANK_FILLERS and unicodedata.category(c) not in _INVISIBLE_CATEGORIES
               for c in text)


_PIECE = re.compile(f"[{CJK_CHARACTERS}]|[^\\s{CJK_CHARACTERS}]+\\s*|\\s+")


def stream_pieces(text: str) -> list[str]:
    """Split a reply into stream pieces: a word with its trailing space, or one CJK character."""
    return _PIECE.findall(text) or [text]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorBody(BaseModel):
    """Every error the server answers, OpenAI-shaped (never a traceback)."""

    error: ErrorDetail


# What the OpenAPI document says of each endpoint with a body: the schema it reads, and every
# status it answers besides 200 (a request the schema refuses is a 400, never FastAPI's 422).
# `endcloud.serve.app` writes these into /openapi.json; the handlers read bodies themselves.
REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("/v1/chat/completions", "post"): ChatRequest,
    ("/v1/feedback", "post"): FeedbackRequest,
    ("/v1/customers/{customer}/profile", "put"): ProfileRequest,
}
ERROR_STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("/v1/chat/completions", "post"): (400, 401, 403, 404, 413, 429, 500, 502, 503),
    ("/v1/feedback", "post"): (400, 401, 404, 413, 500),
    ("/v1/customers/{customer}/profile", "put"): (400, 401, 403, 413, 500),
}
STATUS_TEXT = {400: "Invalid request (the message names the field)", 401: "Missing or wrong credentials",
               403: "Not yours", 404: "Not found", 413: "Body over max_body_bytes", 429: "Rate limit (Retry-After)",
               500: "Internal error (logged; no details)", 502: "The cloud failed",
               503: "The end model is unavailable (/readyz: not ready yet, or stopping)"}


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

