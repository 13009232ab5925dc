"""End-model and teacher doubles that answer in process: drive the server, the online loop or
`run_eval` without loading a model or calling the cloud.

    model = ScriptedModel(lambda convo: "We ship today")     # a runtime.protocol.ServedModel
    model.generate([[{"role": "user", "content": "hi"}]])    # -> [Generation("We ship today", 0.9, 3, log 0.9)]
    model.batches, model.adapters, model.variant             # every batch given, every swap, what is served
    model.fail = True                                        # generate raises from now on

    teacher = ScriptedTeacher("Cloud: ships in 48 h", delay=0.1)   # a cloud.Teacher, not remote
    teacher.reply(messages)                                  # -> Reply(text, source="cloud", usage 40+10, cost 0.002)
    teacher.calls                                            # every conversation it was asked

    LookupEndModel({"几天发货？": "48小时内"}, fallback="Hello")   # both answer by the last message's content
    LookupTeacher({"几天发货？": "48小时内发货"})
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from endcloud.cloud.teacher import Teacher
from endcloud.errors import TeacherStatusError
from endcloud.records import Reply, Usage
from endcloud.runtime.protocol import Generation, Variant

Conversation = list[dict[str, Any]]


class ScriptedModel:
    """An end model replying `reply(conversation)` with `confidence`; records every batch it
    was given and every adapter it was swapped to; raises RuntimeError while `fail` is set."""

    name = "scripted"

    def __init__(self, reply: Callable[[Conversation], str] | None = None, *, confidence: float = 0.9):
        if not 0 < confidence <= 1:
            raise ValueError(f"confidence is exp(mean token log-prob), in (0, 1]; got {confidence!r}")
        self.reply = reply or (lambda convo: "Reply: " + convo[-1]["content"])
        self.confidence = confidence
        self.batches: list[list[Conversation]] = []
        self.adapters: list[Any] = []
        self.fail = False
        self.variant = Variant(self.name, None, "base")

    def generate(self, conversations: list[Conversation], *, max_new_tokens: int = 128, temperature: float = 0.6,
                 top_p: float = 0.8, seed: int | None = None, system: str | None = None) -> list[Generation]:
        if self.fail:
            raise RuntimeError("ScriptedModel.fail is set (a secret internal detail: no customer may see it)")
        self.batches.append(conversations)
        texts = [self.reply(c) for c in conversations]
        return [Generation(t, self.confidence, len(t.split()), math.log(self.confidence)) for t in texts]

    def swap_adapter(self, adapter_dir: Any) -> None:
        self.adapters.append(adapter_dir)
        # a new Variant on every swap, as the protocol says: `variant is not previous` means swapped
        self.variant = (Variant(self.name, None, "base") if adapter_dir is None
                        else Variant(f"{self.name}+{adapter_dir}", Path(adapter_dir), "lora"))


class LookupEndModel(ScriptedModel):
    """A ScriptedModel answering from `answers`, keyed by the last message's content, else `fallback`."""

    name = "lookup-end-model"

    def __init__(self, answers: Mapping[str, str], fallback: str = "Hello"):
        self.answers, self.fallback = dict(answers), fallback
        super().__init__(lambda convo: self.answers.get(convo[-1]["content"], self.fallback))


class ScriptedTeacher(Teacher):
    """A cloud double in process (not remote, so no privacy gate is needed): replies `text` (or
    `text(messages)`) after `delay` seconds, each reply 40+10 tokens costing 0.002; raises
    TeacherStatusError(500) while `fail` is set; records every conversation in `calls`."""

    name = "scripted"

    def __init__(self, text: str | Callable[[Conversation], str] = "Cloud says: we ship tomorrow.", *,
                 fail: bool = False, delay: float = 0.0):
        self.text, self.fail, self.delay = text, fail, delay
        self.calls: list[Conversation] = []

    async def areply(self, messages: Conversation) -> Reply:
        self.calls.append(messages)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise TeacherStatusError("cloud down (500)", status=500)
        text = self.text(messages) if callable(self.text) else self.text
        return Reply(text=text, source="cloud", model=self.name, usage=Usage(40, 10), cost=0.002)


class LookupTeacher(ScriptedTeacher):
    """A ScriptedTeacher answering from `answers`, keyed by the last message's content, else `fallback`."""

    name = "lookup-teacher"

    def __init__(self, answers: Mapping[str, str], fallback: str = "Hello"):
        self.answers, self.fallback = dict(answers), fallback
        super().__init__(lambda messages: self.answers.get(messages[-1]["content"], self.fallback))
