"""The privacy gate: find personal data (zh + en), swap it for typed placeholders, restore it later.

Every byte that leaves the shop passes through here: the cloud client, the server's takeover
path and the corpus pipeline all call `redact` / `redact_messages`, and `AuditLog` keeps a
hash-stamped record of what went out.

    >>> from endcloud.privacy import Vault, redact
    >>> vault = Vault()
    >>> r = redact("我叫张伟，电话 138-0013-8000", vault)
    >>> r.text
    '我叫[NAME_1]，电话 [PHONE_1]'
    >>> vault.restore(r.text)
    '我叫张伟，电话 138-0013-8000'

Types: PHONE, ID (18-character 身份证), CARD, EMAIL, ADDRESS, ORDER, TRACKING, NAME, HANDLE (QQ,
WeChat, social handles, nicknames), POSTCODE. Names, whole addresses, postcodes, handles and
foreign phones come from the detectors registered in `endcloud.privacy.extra` (`DETECTORS`),
plus an optional NER model (`use_ner(path)` / $ENDCLOUD_PRIVACY_NER).
Already-masked corpus tokens (`[订单x]`, `[ORDERID_10005629]`, `4**号`) and our own
placeholders (`[PHONE_1]`) are not PII and survive untouched, so redaction is idempotent.
A shop's public identifiers (its SKUs, see `use_public_values`) are never redacted.
"""

from __future__ import annotations

from endcloud.privacy.audit import AuditLog
from endcloud.privacy.detectors import PII_TYPES, Span, detect
from endcloud.privacy.extra import DETECTORS, use_ner
from endcloud.privacy.public import public_values, use_public_values
from endcloud.privacy.redact import Redaction, contains_pii, ensure_clean, needs_redaction, redact, redact_messages, scrubber
from endcloud.privacy.vault import Vault

__all__ = [
    "DETECTORS",
    "PII_TYPES",
    "AuditLog",
    "Redaction",
    "Span",
    "Vault",
    "contains_pii",
    "detect",
    "ensure_clean",
    "needs_redaction",
    "redact",
    "redact_messages",
    "public_values",
    "scrubber",
    "use_ner",
    "use_public_values",
]
