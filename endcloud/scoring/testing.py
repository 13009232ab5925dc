"""Test doubles with the end model's and the teacher's methods, for driving `run_eval`
without loading a model (shipped with the library so other rooms' tests can use them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass
class FakeGeneration:
    """Shaped like `endcloud.runtime.protocol.Generation`."""

    text: str
    confidence: float = 0.5
    tokens: int = 0
    logprob: float = 0.0


@dataclass
class FakeReply:
    text: str


class LookupEndModel:
    """`generate(conversations, ...)` answering from a dict keyed by the last user message."""

    name = "lookup-end-model"

    def __init__(self, answers: Mapping[str, str], fallback: str = "Hello"):
        self.answers, self.fallback, self.calls = dict(answers), fallback, 0

    def generate(self, conversations, *, max_new_tokens=128, temperature=0.6, top_p=0.8, seed=None, **_):
        self.calls += 1
        return [FakeGeneration(self.answers.get(c[-1]["content"], self.fallback)) for c in conversations]


class LookupTeacher:
    """`reply(messages)` answering from a dict keyed by the last user message."""

    name = "lookup-teacher"

    def __init__(self, answers: Mapping[str, str], fallback: str = "Hello"):
        self.answers, self.fallback = dict(answers), fallback

    def reply(self, messages):
        return FakeReply(self.answers.get(messages[-1]["content"], self.fallback))
