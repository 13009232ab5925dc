"""Waiting for an `endcloud serve` started as its own process (tests and the drills bench).

Here, not in `endcloud.testing`: it is an HTTP client, and nothing in the library but
`endcloud.cloud` may import one (tests/cloud/test_boundary.py)."""

from __future__ import annotations

import subprocess
import time


def wait_ready(url: str, proc: subprocess.Popen, *, timeout_s: float = 300.0, interval_s: float = 0.1) -> str | None:
    """Poll `url`/readyz until it answers 200 (None), the process exits, or `timeout_s` passes
    (the reason, for the caller's own message). Start-up takes seconds, or minutes on a crowded
    machine: the timeout is generous on purpose."""
    import httpx

    t0 = time.monotonic()
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            return f"endcloud serve exited with code {proc.returncode} before it was ready"
        if time.monotonic() - t0 > timeout_s:
            return f"endcloud serve did not get ready in {timeout_s:.0f} s"
        time.sleep(interval_s)
