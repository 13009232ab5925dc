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


MAX_STOP = 4  # stop sequences per request (OpenAI's limit)
MAX_STOP_CHARS = 64


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False  # one more chunk before [DONE]: `choices: []` and the turn's usage


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
    """The subset of OpenAI's chat request the server honours; fields it cannot honour are refused (400)."""

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
    stop: str | list[str] | None = None  # up to MAX_STOP strings; the reply ends before the first (finish_reason "stop")
    logprobs: StrictBool | None = None  # the end model's log-prob of each reply token (null for a cloud reply)
    top_logprobs: Annotated[int, Field(ge=0, le=20, strict=True)] | None = None  # > 0: 400 unless the engine gives them
    stream_options: StreamOptions | None = None
    # OpenAI fields the server cannot honour: a request asking for them is refused with a 400
    # naming the field, never answered as if they had been applied (a JSON-mode client would
    # otherwise parse a free-text reply; a tool-using one would wait for a call that never comes)
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    logit_bias: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str] | None:
        stops = [v] if isinstance(v, str) else v
        if stops is None:
            return None
        if len(stops) > MAX_STOP or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"stop takes at most {MAX_STOP} non-empty strings of at most {MAX_STOP_CHARS} characters")
        return stops or None

    @field_validator("stream_options")
    @classmethod
    def _only_streamed(cls, v: "StreamOptions | None", info) -> "StreamOptions | None":
        if v is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed with stream: true")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _with_logprobs(cls, v: int | None, info) -> int | None:
        if v is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return v

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and v.get("type", "text") != "text":
            raise ValueError(f"response_format {v.get('type')!r} is not supported: replies are free text for "
                             "customers (the end model is not constrained to JSON); omit it or send {'type': 'text'}")
        return v

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, v: list[Any] | None, info) -> list[Any] | None:
        if v:
            raise ValueError(f"{info.field_name} are not supported: the end model and the cloud teacher answer "
                             "customers in text and call no tools; omit the field")
        return v

    @field_validator("tool_choice", "function_call")
    @classmethod
    def _no_tool_choice(cls, v: Any, info) -> Any:
        if v is not None and v != "none":
            raise ValueError(f"{info.field_name} {v!r:.60} is not supported (no tools are called); omit it or send 'none'")
        return v

    @field_validator("logit_bias", "presence_penalty", "frequency_penalty")
    @classmethod
    def _no_bias(cls, v: Any, info) -> Any:
        if v:  # an empty map or 0 asks for nothing
            raise ValueError(f"{info.field_name} is not supported by the end model's sampler; omit it")
        return v

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


class CompletionRequest(BaseModel):
    """OpenAI's legacy completions, as a plain completion on the end model (no shop knowledge,
    no routing, no history): what a client that only speaks /v1/completions gets."""

    model_config = ConfigDict(extra="forbid")  # every field below is honoured, or refused by name
    model: Literal["end"] = "end"
    prompt: str = Field(min_length=1, max_length=16_000)
    max_tokens: TokenCount = 16
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None
    stop: str | list[str] | None = None
    logprobs: Annotated[int, Field(ge=0, le=0, strict=True)] | None = None  # the sampled token's only (0)
    stream: Literal[False] = False
    n: Literal[1] = 1
    echo: Literal[False] = False
    user: str | None = Field(default=None, max_length=128)

    _stops = field_validator("stop")(ChatRequest._stops.__func__)


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
    ("/v1/completions", "post"): CompletionRequest,
    ("/v1/feedback", "post"): FeedbackRequest,
    ("/v1/customers/{customer}/profile", "put"): ProfileRequest,
}
ERROR_STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("/v1/chat/completions", "post"): (400, 401, 403, 404, 413, 429, 500, 502, 503),
    ("/v1/completions", "post"): (400, 401, 413, 429, 500, 503),
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
        "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text}, "finish_reason": r.finish_reason,
                     "logprobs": r.logprobs}],
        "usage": r.usage,
        "endcloud": r.extension(),
    }


# Characters JSON leaves raw that some SSE clients take for line ends (httpx's line decoder
# splits like str.splitlines): escaped, the event stays one line and decodes the same.
_SSE_ESCAPES = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def sse_chunk(mid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None, *,
              logprobs: dict[str, Any] | None = None, **extra) -> str:
    """One server-sent event carrying a chat.completion.chunk (`extra`: top-level fields such as usage)."""
    body = {"id": mid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}], **extra}
    return "data: " + json.dumps(body, ensure_ascii=False).translate(_SSE_ESCAPES) + "\n\n"


def usage_chunk(mid: str, created: int, model: str, usage: dict[str, Any]) -> str:
    """`stream_options.include_usage`: the last chunk before [DONE], with no choices and the usage."""
    body = {"id": mid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
            "usage": usage}
    return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"


def cut_at_stop(text: str, stops: list[str] | None) -> tuple[str, bool]:
    """(`text` up to the earliest stop sequence, whether one was found)."""
    if not stops:
        return text, False
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


class StopFilter:
    """A streamed reply with its stop sequences cut: text pieces in, what may be shown out.

    A piece that could be the start of a stop sequence is held back until what follows
    shows it is not; once a stop sequence appears, nothing more is shown (`stopped`)."""

    def __init__(self, stops: list[str] | None):
        self.stops = stops or []
        self.held = ""
        self.shown = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if not self.stops:
            self.shown += piece
            return piece
        if self.stopped:
            return ""
        text = self.held + piece
        cut, found = cut_at_stop(text, self.stops)
        if found:
            self.stopped, self.held = True, ""
            self.shown += cut
            return cut
        keep = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        out, self.held = text[:len(text) - keep], text[len(text) - keep:]
        self.shown += out
        return out

    def flush(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        self.shown += out
        return out

