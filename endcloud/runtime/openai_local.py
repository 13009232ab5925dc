"""The local OpenAI-compatible engines: one client, three servers the shop may run itself.

    engine         server                                   how a LoRA adapter is served
    vllm           vllm serve --enable-lora                 POST /v1/load_lora_adapter at a swap; requests name it
    sglang         python -m sglang.launch_server           POST /load_lora_adapter at a swap; requests name
                     --enable-lora                            "<base>:<adapter>"
    llama-server   llama-server -m base.gguf                the server loads every adapter at start; each request
                     --lora shop-v3.gguf                      carries "lora": [{"id": i, "scale": 1.0}] (the others
                     --lora-init-without-apply                get scale 0 for that request), so a swap loads nothing

All three batch continuously and cache prompt prefixes on the server; the client is
`runtime.vllm.VLLMEndModel` (concurrent requests, bounded retries, confidence from the
server's logprobs, the loopback/private-address guard: the end model sees raw customer text),
and these subclasses say only how an adapter is loaded and named. Each reads its own
environment (`ENDCLOUD_SGLANG_*`, `ENDCLOUD_LLAMA_SERVER_*`: BASE_URL, MODEL, API_KEY, TIMEOUT,
ALLOW_REMOTE).

Prefix / P-tuning v2 adapters are learned key/values in front of every layer's cache; no
server has a slot for them, so all three refuse them before any request and say to serve them
with `--engine transformers` (endcloud's own engine, CPU or GPU), or to train LoRA.

llama-server's adapters are GGUF files: `endcloud export lora --adapter adapters/shop/v3`
writes `adapters/shop/v3/adapter.gguf` beside the peft files (`end/gguf.py`). A swap looks the
adapter up in the server's `GET /lora-adapters` by that path; an adapter the server was not
started with is refused, naming the flag to add:

    llama-server -m shop-base-q8_0.gguf --lora adapters/shop/v3/adapter.gguf --lora-init-without-apply \\
        --host 127.0.0.1 --port 8080 -np 16 --cont-batching
    ENDCLOUD_LLAMA_SERVER_BASE_URL=http://127.0.0.1:8080/v1 endcloud serve --engine llama-server
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from endcloud.errors import ModelError
from endcloud.runtime.protocol import Variant
from endcloud.runtime.vllm import VLLMEndModel, VLLMError, lora_name_for

LORA_GGUF = "adapter.gguf"  # what `endcloud export lora` writes into an adapter folder


def _root(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port (where SGLang and llama-server keep their own routes)."""
    u = urlsplit(base_url)
    path = u.path[:-3] if u.path.endswith("/v1") else u.path
    return urlunsplit((u.scheme, u.netloc, path.rstrip("/"), "", ""))


class SGLangEndModel(VLLMEndModel):
    """A shop-local SGLang server (`--enable-lora`): adapters loaded at a swap, requests name
    `<base>:<adapter>`."""

    env_base_url, env_model, env_api_key, env_timeout, env_allow_remote = (
        "ENDCLOUD_SGLANG_BASE_URL", "ENDCLOUD_SGLANG_MODEL", "ENDCLOUD_SGLANG_API_KEY", "ENDCLOUD_SGLANG_TIMEOUT",
        "ENDCLOUD_SGLANG_ALLOW_REMOTE")
    server_name = "SGLang"

    def _route(self, variant: Variant) -> tuple[str, dict]:
        if variant.adapter_dir is None:
            return self.model, {}
        return f"{self.model}:{variant.name}", {}

    def _load(self, lora_name: str, path: Path) -> None:
        hints = {404: "start SGLang with --enable-lora (and --max-lora-rank >= the adapter's r)",
                 400: "check that the adapter folder exists on the SGLang server"}
        try:
            self._request("POST", _root(self.base_url) + "/load_lora_adapter",
                          {"lora_name": lora_name, "lora_path": str(path)}, hints=hints)
        except VLLMError as e:
            if e.status == 400 and "already" in str(e).lower():
                return
            raise VLLMError(f"cannot load adapter {str(path)!r} into SGLang (still serving {self.name!r}): {e}",
                            status=e.status) from e

    def _unload(self, lora_name: str) -> None:
        self._request("POST", _root(self.base_url) + "/unload_lora_adapter", {"lora_name": lora_name})


class LlamaServerEndModel(VLLMEndModel):
    """A shop-local llama.cpp `llama-server`: per-request LoRA among the adapters it started with."""

    env_base_url, env_model, env_api_key, env_timeout, env_allow_remote = (
        "ENDCLOUD_LLAMA_SERVER_BASE_URL", "ENDCLOUD_LLAMA_SERVER_MODEL", "ENDCLOUD_LLAMA_SERVER_API_KEY",
        "ENDCLOUD_LLAMA_SERVER_TIMEOUT", "ENDCLOUD_LLAMA_SERVER_ALLOW_REMOTE")
    server_name = "llama-server"
    model_required = False  # it serves the one model it loaded, whatever a request names

    def __init__(self, *, model: str = "llama-server", **kw: Any):
        super().__init__(model=model, **kw)

    def adapters(self) -> list[dict]:
        """What `GET /lora-adapters` lists: [{id, path, scale, ...}] (the server's load order)."""
        resp = self._request("GET", _root(self.base_url) + "/lora-adapters", None,
                             hints={404: "this llama-server is too old for per-request LoRA (build b4000 or newer)"})
        try:
            rows = resp.json()
            return [{**r, "id": int(r["id"]), "path": str(r["path"])} for r in rows]
        except (ValueError, KeyError, TypeError):
            raise VLLMError(f"malformed /lora-adapters reply from {self.base_url}: {resp.text[:120]!r}") from None

    def _route(self, variant: Variant) -> tuple[str, dict]:
        # every adapter not named runs at scale 0 for this request: [] is the bare base
        lora = [] if variant.handle is None else [{"id": int(variant.handle), "scale": 1.0}]
        return self.model, {"lora": lora}

    def _lora_variant(self, ad: Path, path: Path) -> Variant:
        gguf = path / LORA_GGUF
        loaded = self.adapters()
        found = [r for r in loaded if _same_file(r["path"], gguf)]
        if not found:
            listed = ", ".join(r["path"] for r in loaded) or "none"
            raise ModelError(
                f"llama-server was not started with adapter {str(ad)!r} (it has: {listed}). Export it with "
                f"`endcloud export lora --adapter {ad}` (writes {gguf}), then restart llama-server with "
                f"--lora {gguf} --lora-init-without-apply; it loads adapters only at start"
            )
        return Variant(lora_name_for(ad), path, "lora", handle=found[0]["id"])

    def _load(self, lora_name: str, path: Path) -> None:
        """Nothing to load: the adapter is resident since the server started (`_lora_variant` found it)."""

    def _unload(self, lora_name: str) -> None:
        """Nothing to unload: a request that does not name an adapter runs it at scale 0."""


def _same_file(listed: str, ours: Path) -> bool:
    """Whether the server's adapter path is our file: the same resolved path where this machine
    sees it, else the same last three components (<name>/<version>/adapter.gguf), for a server
    that mounts the workspace elsewhere."""
    p = Path(listed)
    try:
        if p.exists() and ours.exists():
            return p.resolve() == ours.resolve()
    except OSError:
        pass
    return p.parts[-3:] == ours.parts[-3:]


__all__ = ["LORA_GGUF", "LlamaServerEndModel", "SGLangEndModel"]
