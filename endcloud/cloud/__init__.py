"""The cloud teacher: the end model's teacher, judge and takeover (the paper's §IV-A, Table II).

    from endcloud.cloud import make_teacher
    teacher = make_teacher("reference", shop="shop/")          # offline, from the shop pack
    teacher = make_teacher("openai", workspace=ws, examples=pairs)   # ENDCLOUD_CLOUD_* env vars
    teacher = default_teacher(workspace=ws)    # the cloud when configured: Table II prompt, the shop's examples
    teacher.reply([{"role": "user", "content": "能发顺丰吗？"}])   # -> Reply(text, usage, cost, ...)

Modules: `teacher` (interface, registry), `openai_backend` (the only network client),
`gate` (privacy gate in front of every remote teacher), `prompt` (Table II), `reference`
(offline teacher), `cache` (SQLite, resumable), `ledger` (cost and budget), `ratelimit`,
`distill` (`endcloud distill`). The fault-injecting server double is `endcloud.testing.FaultyCloud`.
Token estimates for budgets and usage are `endcloud.text`'s.
"""

from __future__ import annotations

from typing import Any

from endcloud.cloud.cache import CachedTeacher, ResponseCache, request_key
from endcloud.cloud.gate import PrivacyGate
from endcloud.cloud.ledger import DEFAULT_PRICES, CostLedger, PriceTable
from endcloud.cloud.openai_backend import OpenAITeacher, TeacherStats
from endcloud.cloud.prompt import LIVE_BUDGET_TOKENS, ROLE_TEXT, ExampleBank, PromptedTeacher, ShopExamples, build_prompt
from endcloud.cloud.ratelimit import RateLimiter
from endcloud.cloud.reference import ReferenceTeacher
from endcloud.cloud.teacher import (
    TEACHERS,
    Teacher,
    WrapperTeacher,
    default_teacher,
    make_teacher,
    resolve_shop,
    resolve_workspace,
)

__all__ = [
    "DEFAULT_PRICES", "LIVE_BUDGET_TOKENS", "ROLE_TEXT", "TEACHERS", "CachedTeacher", "CostLedger", "ExampleBank",
    "OpenAITeacher", "PriceTable", "PrivacyGate", "PromptedTeacher", "RateLimiter", "ReferenceTeacher", "ResponseCache",
    "ShopExamples", "Teacher", "TeacherStats", "WrapperTeacher", "build_prompt", "default_teacher", "make_teacher",
    "request_key",
]


def _reference(*, shop: Any = None, workspace: Any = None, cache: Any = None, kb: Any = None, **kw: Any) -> Teacher:
    """ReferenceTeacher over the shop pack (`kb=` reuses an already built KnowledgeBase)."""
    if kw:
        from endcloud.errors import ConfigError

        raise ConfigError(f"the reference teacher takes no options {sorted(kw)}; it answers from the shop pack")
    pack = kb.pack if kb is not None and shop is None else resolve_shop(shop, workspace)
    teacher: Teacher = ReferenceTeacher(pack=pack, kb=kb)
    return CachedTeacher(teacher, _cache(cache)) if cache is not None else teacher


def _openai(
    *,
    shop: Any = None,
    workspace: Any = None,
    examples: Any = None,
    shots: int | None = None,
    lang: str | None = None,
    budget_tokens: int | None = None,
    cache: Any = None,
    audit: Any = None,
    **kw: Any,
) -> Teacher:
    """OpenAITeacher.from_env(**kw) behind the privacy gate; Table II prompt when `examples`
    (pairs JSONL path, Pairs, dicts, an ExampleBank, or a live `ShopExamples`) are given; a
    reply cache when `cache` (SQLite path) is given. The audit log defaults to the
    workspace's audit/outbound.jsonl. (`default_teacher` always gives examples.)"""
    from endcloud.privacy import AuditLog

    client = OpenAITeacher.from_env(**kw)
    if audit is None:
        audit = AuditLog(resolve_workspace(workspace).audit)
    teacher: Teacher = PrivacyGate(client, audit=audit)
    if cache is not None:
        teacher = CachedTeacher(teacher, _cache(cache))
    if examples is not None:
        from pathlib import Path

        from endcloud.paper import PAPER
        from endcloud.cloud.prompt import DEFAULT_BUDGET_TOKENS

        if isinstance(examples, (str, Path)):
            from endcloud.cloud.distill import read_pairs

            examples = read_pairs(examples)
        teacher = PromptedTeacher(teacher, examples=examples, lang=lang, shots=PAPER.shots if shots is None else shots,
                                  budget_tokens=budget_tokens or DEFAULT_BUDGET_TOKENS)
    return teacher


def _cache(cache: Any) -> ResponseCache:
    return cache if isinstance(cache, ResponseCache) else ResponseCache(cache)


TEACHERS.add("reference", _reference)
TEACHERS.add("openai", _openai)
