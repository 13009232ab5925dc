"""House rule: nothing in endcloud but endcloud.cloud opens a network connection."""

from __future__ import annotations

import ast
from pathlib import Path

import endcloud

# Client-side network libraries (a server *listening* on 127.0.0.1, as `serve` does, is fine).
NETWORK_CLIENTS = {"httpx", "requests", "urllib3", "aiohttp", "openai", "websockets", "socket", "http.client",
                   "urllib.request", "smtplib", "ftplib"}
# Reviewed exceptions: loopback only, nothing leaves the machine. Add one only with a reason.
ALLOWED = {
    ("loopback.py", "socket"): "LoopbackServer's listening socket, bound to 127.0.0.1 only",
    ("demo.py", "httpx"): "simulated customers talk to the demo's own server on 127.0.0.1",
    ("runtime/vllm.py", "httpx"): "the END model on a shop-local vLLM server; refuses non-private hosts (is_private_host)",
}


def test_only_the_cloud_package_imports_network_clients():
    root = Path(endcloud.__file__).parent
    offenders, used = [], set()
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("cloud/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if (rel, name.split(".")[0]) in ALLOWED:
                    used.add((rel, name.split(".")[0]))
                    continue
                if name in NETWORK_CLIENTS or name.split(".")[0] in NETWORK_CLIENTS - {"http", "urllib"}:
                    offenders.append(f"endcloud/{rel}:{node.lineno} imports {name}")
    assert not offenders, "only endcloud.cloud may open connections (via the privacy gate):\n" + "\n".join(offenders)
    assert used == set(ALLOWED), f"reviewed exceptions no longer needed, remove them: {sorted(set(ALLOWED) - used)}"


def test_the_test_double_listens_only_on_loopback():
    from endcloud.testing import FaultyCloud

    with FaultyCloud() as cloud:
        assert cloud.base_url.startswith("http://127.0.0.1:") and cloud.base_url.endswith("/v1")
