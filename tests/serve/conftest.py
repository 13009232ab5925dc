"""Fixtures of the serving room: small doubles for unit tests, a real uvicorn for end-to-end."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from endcloud.cloud.teacher import Teacher
from endcloud.errors import TeacherStatusError
from endcloud.records import Reply, Usage


@dataclass
class FakeGeneration:
    text: str
    confidence: float
    tokens: int
    logprob: float = -1.0


class ScriptedModel:
    """An end-model double: replies `reply(conversation)`; records every batch it was given."""

    def __init__(self, reply=None, *, confidence: float = 0.9):
        self.reply = reply or (lambda convo: "Reply: " + convo[-1]["content"])
        self.confidence = confidence
        self.batches: list[list[list[dict]]] = []
        self.adapters: list[Any] = []
        self.fail = False

    def generate(self, conversations, *, max_new_tokens, temperature=0.6, top_p=0.8, seed=None):
        if self.fail:
            raise RuntimeError("boom: secret internal detail")
        self.batches.append(conversations)
        return [FakeGeneration(self.reply(c), self.confidence, len(self.reply(c).split())) for c in conversations]

    def swap_adapter(self, adapter_dir):
        self.adapters.append(adapter_dir)


class ScriptedTeacher(Teacher):
    """An in-process cloud double (not remote, so no gate needed): a fixed reply, or a failure."""

    name = "scripted"

    def __init__(self, text: str = "Cloud says: we ship tomorrow.", *, fail: bool = False, delay: float = 0.0):
        self.text, self.fail, self.delay = text, fail, delay
        self.calls: list[list[dict]] = []

    async def areply(self, messages):
        self.calls.append(messages)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise TeacherStatusError("cloud down (500)", status=500)
        return Reply(text=self.text, source="cloud", model="scripted", usage=Usage(40, 10), cost=0.002)


@pytest.fixture
def scripted_model():
    return ScriptedModel()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real uvicorn on 127.0.0.1 in a thread (start/stop; `base_url` for clients)."""

    def __init__(self, app, *, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
