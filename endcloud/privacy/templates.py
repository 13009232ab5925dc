"""Reply templates: a reply that speaks of the customer's own data in placeholders, and back.

An order-status reply carries an order number, so the online loop could never learn one:
its PII check quarantined it. Learned as a template instead ("您的订单[ORDER_1]已发货"),
the end model learns the reply and not the number; when it writes the template for another
customer, the server fills the placeholder from *that* conversation before anyone reads it.

Both sides must mean the same value by "[ORDER_1]", so both number a conversation alike,
with the privacy gate's own redaction (`redact_messages`, one vault): first its turns in
order (the customer's messages, earlier replies), then the rest of what the model was
given (the customer's data, the knowledge snippets). The first order number the customer
wrote is [ORDER_1]; where they wrote none, the first of their orders the prompt lists is.

    vault = conversation_vault(turns, [customer_text, *snippets])   # the loop, for a lesson
    t = templatise(label, vault)     # t.text: "您的订单[ORDER_1]已发货"; t.unknown: PII the conversation does not hold
    vault = messages_vault(convo)    # the server, for the conversation being answered
    vault.restore("您的订单[ORDER_1]已发货")                       # "您的订单5433…0553已发货"

Only values the conversation itself holds become placeholders: personal data from anywhere
else (a phone number someone upvoted into a reply) stays in `unknown`, for the caller to
quarantine.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Sequence

from endcloud.privacy.detectors import Span, detect
from endcloud.privacy.redact import redact_messages
from endcloud.privacy.vault import PLACEHOLDER_RE, Vault


def _key(value: str) -> str:
    # "138-0013-8000" and "13800138000" are one number to the customer
    return re.sub(r"[\s\-]+", "", unicodedata.normalize("NFKC", value)).lower()


def conversation_vault(turns: Sequence[dict[str, Any] | str], extra: Sequence[str | None] = ()) -> Vault:
    """The vault of one conversation: its turns redacted in order, then the `extra` texts."""
    msgs = [t if isinstance(t, dict) else {"role": "user", "content": t} for t in turns]
    msgs += [{"role": "system", "content": x} for x in extra if x]
    vault = Vault()
    redact_messages([m for m in msgs if isinstance(m.get("content"), (str, list))], vault)
    return vault


def messages_vault(messages: Sequence[dict[str, Any]]) -> Vault:
    """The vault of the messages an end model was given: the turns first, then the system text
    (where the customer's data and the knowledge are), numbered as `conversation_vault` does."""
    turns = [m for m in messages if m.get("role") != "system"]
    extra = [m.get("content") for m in messages if m.get("role") == "system" and isinstance(m.get("content"), str)]
    return conversation_vault(turns, extra)


def has_placeholder(text: str) -> bool:
    return "[" in text and PLACEHOLDER_RE.search(text) is not None


@dataclass
class Template:
    """`text` with the conversation's own values as its placeholders; `unknown`: personal data
    in the text that the conversation does not hold (left as written)."""

    text: str
    unknown: list[Span] = field(default_factory=list)


def templatise(text: str, vault: Vault) -> Template:
    """Each personal value in `text` that `vault` holds (by value, whatever type it was detected
    as: an orders row's bare number is the same order as "订单号 …") becomes its placeholder."""
    spans = detect(text)
    if not spans:
        return Template(text)
    known: dict[str, str] = {}
    for ph, _, value in vault.items():
        known.setdefault(_key(value), ph)
    out, unknown, last = [], [], 0
    for sp in spans:
        ph = known.get(_key(sp.value))
        if ph is None:
            unknown.append(sp)
            continue
        out.append(text[last:sp.start])
        out.append(ph)
        last = sp.end
    out.append(text[last:])
    return Template("".join(out), unknown)


__all__ = ["Template", "conversation_vault", "has_placeholder", "messages_vault", "templatise"]
