"""What a server asks of a retrying client: the one parser both HTTP clients share (the
cloud teacher's and the shop-local vLLM end model's). Pure header parsing, no I/O."""

from __future__ import annotations

import email.utils
import time
from typing import Mapping


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `Retry-After` (seconds or
    an HTTP date); None when it said nothing usable."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(ra).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
