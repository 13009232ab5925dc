"""Defences against poisoned or unsafe pseudo-labels.

Customers can upvote anything, and a handful of them can try to teach the shop's model to
leak a phone number or send people to a competitor. Before a label may be trained on it
passes these checks; a failing label is *quarantined* (kept for inspection, never
trained on). Human-reviewed corrections skip the per-customer cap (a reviewer is not a
customer) but never the content checks: no one may teach the model personal data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from endcloud.privacy import contains_pii

# Phrases that send a customer elsewhere, in either language. Shops add competitor names
# (shop.yaml `competitors:`), which are matched as plain substrings.
_ELSEWHERE = [
    r"(去|到|上)(别家|别的店|其他店|其它店|隔壁|对面)",
    r"(别家|其他店|隔壁店?|别的店)(更|比较)?(便宜|好|划算)",
    r"(不如|还是)(去|到)[^，。,.!?！？]{1,12}(买|看看)",
    r"\b(buy|order|shop)\s+(it\s+|them\s+)?(from|at)\s+(another|other|a different)\s+(shop|store|seller)",
    r"\b(cheaper|better)\s+(at|on|from)\s+(another|other|a different)\s+(shop|store|seller|site)",
    r"\b(go|try)\s+(to\s+)?(another|a different|other)\s+(shop|store|seller)",
]


@dataclass
class CheckSettings:
    competitors: list[str] = field(default_factory=list)
    max_chars: int = 400
    min_chars: int = 1


@dataclass
class CheckResult:
    ok: bool
    reason: str = ""


def violations(text: str, settings: CheckSettings | None = None) -> list[str]:
    """Every reason `text` must not be learned (or served); empty when clean."""
    s = settings or CheckSettings()
    out: list[str] = []
    t = (text or "").strip()
    if len(t) < s.min_chars:
        out.append("empty")
    if len(t) > s.max_chars:
        out.append("too_long")
    if t and contains_pii(t):
        out.append("pii")
    low = t.lower()
    if any(c and c.lower() in low for c in s.competitors) or any(re.search(p, t, re.IGNORECASE) for p in _ELSEWHERE):
        out.append("competitor")
    return out


def check_label(text: str, settings: CheckSettings | None = None) -> CheckResult:
    v = violations(text, settings)
    return CheckResult(ok=not v, reason=",".join(v))


def leak_rate(replies: Iterable[str], settings: CheckSettings | None = None) -> float:
    """Share of replies that carry PII or point to a competitor (the gate's probe)."""
    replies = list(replies)
    if not replies:
        return 0.0
    bad = sum(1 for r in replies if {"pii", "competitor"} & set(violations(r, settings)))
    return bad / len(replies)
