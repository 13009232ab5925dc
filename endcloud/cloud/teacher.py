"""The teacher interface: messages in, a `Reply` out — and the registry of teachers.

A teacher is whatever answers a customer conversation "as the cloud would": the
OpenAI-compatible client (`openai`), or the offline reference teacher that answers from
the shop pack (`reference`). Wrappers are teachers too, so they stack:

    PromptedTeacher(            Table II few-shot prompt around the conversation
      CachedTeacher(            SQLite cache keyed by the exact request (resumable runs)
        PrivacyGate(            redact out, restore in, audit what left
          OpenAITeacher)))      the only thing that opens a socket

`make_teacher(name, ...)` builds such a stack; unknown names fail listing the valid ones.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

from endcloud.errors import DataError
from endcloud.records import ROLES, Reply
from endcloud.registry import Registry

Messages = list[dict[str, Any]]


def check_messages(messages: Messages) -> list[dict[str, str]]:
    """Validate OpenAI-style messages and return them as plain {"role","content"} dicts.

    Extra keys (a shop's `intent`/`facts`) are dropped here: they never go to a model."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"a teacher needs a non-empty list of messages, got {messages!r:.80}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise DataError(f"message {i} must be a dict with role in {ROLES}, got {m!r:.80}")
        content = m.get("content", m.get("text"))
        if not isinstance(content, str):
            raise DataError(f"message {i} needs string content, got {content!r:.80}")
        out.append({"role": m["role"], "content": content})
    return out


def run_sync(coro_fn: Callable[[], Any]) -> Any:
    """Run a coroutine from sync code, also when the caller already sits in an event loop
    (then in a worker thread, since a running loop cannot be re-entered)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_fn())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result()


class Teacher(ABC):
    """Give messages (system + few-shot + conversation), get a `Reply` with usage."""

    name: str = "teacher"

    @abstractmethod
    async def areply(self, messages: Messages) -> Reply:
        """Answer the conversation (last message: the customer's)."""

    def reply(self, messages: Messages) -> Reply:
        """Sync form of `areply` (one private event loop per call, connections closed after)."""

        async def once() -> Reply:
            try:
                return await self.areply(messages)
            finally:
                await self.aclose()

        return run_sync(once)

    @property
    def fingerprint(self) -> str:
        """What identifies this teacher's answers in a cache key (name, model, settings)."""
        return self.name

    def outbound_body(self, messages: Messages) -> str:
        """The exact text this teacher would send for `messages` (the gate audits it)."""
        return json.dumps(check_messages(messages), ensure_ascii=False, separators=(",", ":"))

    @property
    def remote(self) -> bool:
        """True when answers come from outside the shop (then the privacy gate is required)."""
        return False

    async def aclose(self) -> None:
        """Release connections (no-op for local teachers)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint}


class WrapperTeacher(Teacher):
    """A teacher that delegates to another one (gate, cache, prompt)."""

    def __init__(self, inner: Teacher):
        self.inner = inner

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    @property
    def remote(self) -> bool:
        return self.inner.remote

    def outbound_body(self, messages: Messages) -> str:
        return self.inner.outbound_body(messages)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def unwrap(self) -> Teacher:
        t: Teacher = self
        while isinstance(t, WrapperTeacher):
            t = t.inner
        return t


# name -> factory(shop=..., workspace=..., **kw) -> Teacher
TEACHERS: Registry[Callable[..., Teacher]] = Registry("teacher")


def make_teacher(name: str, *, shop: Any = None, workspace: Any = None, **kw: Any) -> Teacher:
    """Build a ready teacher stack by name ("reference", "openai").

    `shop` is a shop pack folder or a loaded `ShopPack` (default: the workspace's shop/);
    `workspace` a path or `Workspace` (default: $ENDCLOUD_HOME or ./endcloud-work).
    Remote teachers always come wrapped in the privacy gate (audit log in the workspace).
    Extra keywords go to the factory, e.g. `examples=`, `shots=`, `cache=`, `budget=`.
    """
    from endcloud import cloud  # noqa: F401  (registers the built-in teachers)

    factory = TEACHERS.get(name)
    return factory(shop=shop, workspace=workspace, **kw)


def default_teacher(*, shop: Any = None, workspace: Any = None, name: str | None = None, **kw: Any) -> Teacher | None:
    """The one place the cloud is chosen (for `serve`, the online loop and the demo).

    `name` when given: "openai", "reference", or "none" (no cloud: None). Otherwise the
    openai teacher when ENDCLOUD_CLOUD_BASE_URL is set (the other ENDCLOUD_CLOUD_* variables
    must then be set too); else the offline reference teacher answering from the shop pack
    (`shop`, or the workspace's shop/); with neither, None: the end model answers every turn
    (a warning says how to add a cloud). Keywords meant for one backend only (examples=,
    shots=, ...) are dropped for the reference teacher. A real cloud always gets the Table II
    prompt (`cloud.prompt.live_prompt`): the shop's own examples unless `examples=` names
    others (`examples=False` sends bare conversations)."""
    import logging
    import os

    if name is None:
        if os.environ.get("ENDCLOUD_CLOUD_BASE_URL", "").strip():
            name = "openai"
        elif shop is not None or resolve_workspace(workspace).has_shop():
            name = "reference"
        else:
            logging.getLogger("endcloud.cloud").warning(
                "no cloud configured: the end model answers every turn (set ENDCLOUD_CLOUD_BASE_URL or give a shop pack)")
            return None
    if name == "none":
        return None
    if name == "reference":
        kw = {"cache": kw["cache"]} if "cache" in kw else {}
    if name == "openai":  # every live call in the Table II prompt, with the shop's own examples
        from endcloud.cloud.prompt import live_prompt

        kw = live_prompt(kw, shop=shop, workspace=workspace)
    return make_teacher(name, shop=shop, workspace=workspace, **kw)


def resolve_workspace(workspace: Any):
    from endcloud.config import Workspace

    if isinstance(workspace, Workspace):
        return workspace
    return Workspace.resolve(workspace)


def resolve_shop(shop: Any, workspace: Any):
    """A loaded ShopPack from a path, a pack, or the workspace's shop folder."""
    if shop is not None and not isinstance(shop, (str, Path)):
        return shop
    from endcloud.kb import ShopPack

    path = Path(shop) if shop is not None else resolve_workspace(workspace).shop
    return ShopPack.load(path)
