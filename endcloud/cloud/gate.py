"""The privacy gate: the only door from the shop to a remote teacher.

    teacher = PrivacyGate(OpenAITeacher.from_env(), audit=AuditLog(ws.audit))

For each request: one fresh `Vault`; every message (system prompt with its examples,
context, the customer's question) is redacted by `endcloud.privacy` into typed
placeholders ("[PHONE_1]"); the exact body the inner teacher will send is written to the
audit log with its sha256 *before* it leaves; then the inner teacher is asked, and the
placeholders in its reply are restored locally from the vault (the customer's real phone
number never left, but the reply the shop sends back to the customer has it).

Defence in depth: if `privacy.contains_pii` still fires on any outbound message after
redaction, or on the exact request body about to be sent, the gate raises `PrivacyError`
and nothing is sent (nor audited as sent). `make_teacher` puts this
gate in front of every remote teacher; nothing else in endcloud opens a connection.
"""

from __future__ import annotations

import contextvars
from dataclasses import replace
from typing import Any

from endcloud.cloud.teacher import Messages, Teacher, WrapperTeacher, check_messages
from endcloud.errors import PrivacyError
from endcloud.records import Reply

# Set while a request the gate has redacted is on its way: the remote client refuses to send
# without it, so an ungated OpenAITeacher cannot leak by accident (see `require_gate`).
THROUGH_GATE: contextvars.ContextVar[bool] = contextvars.ContextVar("endcloud_through_privacy_gate", default=False)


def _privacy():
    # Imported when first used: endcloud.privacy compiles its detectors at import.
    from endcloud import privacy

    return privacy


class PrivacyGate(WrapperTeacher):
    """A teacher that redacts what goes out, audits it, and restores what comes back."""

    def __init__(self, teacher: Teacher, *, audit: Any, destination: str | None = None):
        super().__init__(teacher)
        self.audit = audit
        inner = self.unwrap()
        self.destination = destination or f"{inner.name}:{getattr(inner, 'base_url', '')}:{getattr(inner, 'model', '')}"
        self.requests = 0
        # totals for the server's metrics: values redacted by type, requests refused (nothing sent)
        self.redactions: dict[str, int] = {}
        self.refusals = 0

    def redact(self, messages: Messages) -> tuple[list[dict[str, str]], Any]:
        """The messages as they may leave the shop, and the vault to restore the reply."""
        privacy = _privacy()
        vault = privacy.Vault()
        red = privacy.redact_messages(check_messages(messages), vault)
        red = check_messages(red)
        for i, m in enumerate(red):
            if privacy.contains_pii(m["content"]):
                kinds = sorted({s.type for s in privacy.detect(m["content"])})
                raise PrivacyError(
                    f"message {i} ({m['role']}) still holds personal data after redaction ({', '.join(kinds) or 'unknown kind'}); "
                    "nothing was sent — report this input to the privacy detectors"
                )
        return red, vault

    def outbound_body(self, messages: Messages) -> str:
        red, _ = self.redact(messages)
        return self.inner.outbound_body(red)

    async def areply(self, messages: Messages) -> Reply:
        try:
            red, vault = self.redact(messages)
            body = self.inner.outbound_body(red)
            if _privacy().contains_pii(body):  # the exact text about to leave, once more
                raise PrivacyError("the outbound request body still holds personal data after redaction; nothing was sent")
        except PrivacyError:
            self.refusals += 1
            raise
        for kind, n in vault.counts().items():
            self.redactions[kind] = self.redactions.get(kind, 0) + n
        self.audit.record(self.destination, body)
        self.requests += 1
        token = THROUGH_GATE.set(True)
        try:
            reply = await self.inner.areply(red)
        finally:
            THROUGH_GATE.reset(token)
        return replace(reply, text=vault.restore(reply.text))
