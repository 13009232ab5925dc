"""Defences against poisoned or unsafe pseudo-labels.

Customers can upvote anything, and a handful of them can try to teach the shop's model to
leak a phone number or send people to a competitor. Before a label may be trained on it
passes these checks; a failing label is *quarantined* (kept for inspection, never
trained on). Human-reviewed corrections skip the per-customer cap (a reviewer is not a
customer) but never the content checks: no one may teach the model personal data.

`vet_label` runs them all on one lesson, in order:

  template   the customer's own data in the label (the order number the customer wrote, their
             orders' numbers) becomes the conversation's placeholders, "[ORDER_1]" as the
             privacy gate writes them (`endcloud.privacy.templates`): an order-status reply is
             learned as a template, and the server fills in the next customer's number. Only
             the conversation, this customer's orders and the shop's own knowledge count: an
             order row of anyone else (the knowledge holds every customer's orders, and a teacher
             re-asked offline may quote one) is not the conversation's, so its tracking number
             stays personal data
  content    personal data from anywhere else, a competitor, empty or too long (`violations`); in a
             lesson the reason names the types found: "label_pii: PHONE,TRACKING" (placeholders and
             the shop's public ids are not personal data)
  knowledge  with the shop's knowledge at hand: a label contradicts it when it states a number,
             duration, price, time, date or carrier that the knowledge for that question (the
             snippets retrieved for the question and for the label, the customer's messages and
             orders, the shop's profile) does not support, or promises "free" where that
             knowledge states a fee ("运费全免" against "不满49元运费6元"); reason
             "contradicts_knowledge: <the facts>"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from endcloud.privacy import contains_pii, detect

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
    knowledge_snippets: int = 3  # snippets retrieved for the question, and again for the label, that a label's facts must agree with


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


def vet_label(lab: Any, settings: CheckSettings | None = None, *, knowledge: Any = None,
              orders: Sequence[dict[str, Any]] = ()) -> CheckResult:
    """Every check of one lesson (`PseudoLabel`), templating its label in place first (see the
    module docstring). `knowledge`: the shop's `KnowledgeBase` (None: no knowledge check);
    `orders`: the customer's orders as the server's prompt lists them."""
    from endcloud.kb.prompt import customer_text
    from endcloud.privacy.templates import conversation_vault, templatise

    s = settings or CheckSettings()
    turns = [dict(m) for m in lab.context or []] + [{"role": "user", "content": lab.query}]
    customer = customer_text(orders) if orders else None
    found = _search(knowledge, lab.query, s.knowledge_snippets)
    snippets = [sn.text for sn in found]
    own = {str(o.get("order_id")) for o in orders if o.get("order_id")}
    # the shop's own knowledge and this customer's orders may become placeholders; another customer's order row may not
    theirs = [sn.text for sn in found if getattr(sn, "source", "") != "order" or str(getattr(sn, "ref", "")) in own]
    vault = conversation_vault(turns, [customer, *theirs])
    template = templatise(lab.label or "", vault)
    if not template.unknown:
        lab.label = template.text
    v = violations(lab.label, s)
    if "pii" in v:
        kinds = ",".join(sorted({sp.type for sp in detect(lab.label)}))
        v[v.index("pii")] = f"label_pii: {kinds}"
    if knowledge is not None and not v:
        said = vault.restore(lab.label)
        evidence = [m["content"] for m in turns if m.get("role") != "assistant"] + [customer or ""] + snippets
        evidence += [t for t in _snippets(knowledge, said, s.knowledge_snippets) if t not in snippets]
        wrong = _checker(knowledge).contradictions(said, evidence + [_profile(knowledge)])
        if wrong:
            v.append("contradicts_knowledge: " + "; ".join(wrong[:3]) + (" …" if len(wrong) > 3 else ""))
    return CheckResult(ok=not v, reason=",".join(v))


def _search(knowledge: Any, text: str, k: int) -> list[Any]:
    if knowledge is None or k <= 0 or not (text or "").strip():
        return []
    return list(knowledge.search(text, k=k))


def _snippets(knowledge: Any, text: str, k: int) -> list[str]:
    return [sn.text for sn in _search(knowledge, text, k)]


def _checker(knowledge: Any):
    # one checker per knowledge base: it holds the catalog's names, compiled once
    from endcloud.scoring.grounding import GroundingChecker

    checker = _CHECKERS.get(id(knowledge))
    if checker is None or checker[0] is not knowledge:
        checker = _CHECKERS[id(knowledge)] = (knowledge, GroundingChecker.for_knowledge(knowledge))
    return checker[1]


def _profile(knowledge: Any) -> str:
    from endcloud.scoring.grounding import shop_profile_text

    return shop_profile_text(knowledge)


_CHECKERS: dict[int, tuple[Any, Any]] = {}
