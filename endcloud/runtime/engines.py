"""Choosing the end model's engine by name: the `ENGINES` registry and `load_end_model`.

    m = load_end_model("transformers", base_dir="endcloud-work/base", adapter_dir=None)
    m = load_end_model("vllm", adapter_dir="endcloud-work/adapters/shop/v3")    # ENDCLOUD_VLLM_* name the server
    m = load_end_model("llamacpp", base_dir="endcloud-work/base")               # GGUF, optional extra
    m = load_end_model("transformers-cb", base_dir=..., device="cuda")         # transformers' continuous batching
    m = load_end_model("llama-server")            # or "sglang": a server the shop runs (runtime.openai_local)

Which engines serve prefix / P-tuning v2 adapters: "transformers" only (endcloud's own, CPU or
GPU); the others refuse them before loading anything, saying so.

Each entry returns a `runtime.protocol.ServedModel`. The factories import their backend
only when called, so naming the engines (settings, `--help`) loads neither torch nor
llama.cpp nor an HTTP client.
"""

from __future__ import annotations

from typing import Any, Callable

from endcloud.registry import Registry

ENGINES: Registry[Callable[..., Any]] = Registry("end-model engine")
# Engines whose server loaded its own base: the shop's workspace needs no base/ for them.
SERVER_HELD_BASE = frozenset({"vllm", "sglang", "llama-server"})


def needs_local_base(kind: str) -> bool:
    """Whether engine `kind` loads the base from a local folder (every engine but a server's)."""
    ENGINES.get(kind)  # an unknown name fails here, listing the valid ones
    return kind not in SERVER_HELD_BASE


@ENGINES.register("transformers")
def _load_transformers(*, base_dir, adapter_dir=None, **kw: Any) -> Any:
    """The in-process engine (torch on this machine): `EndModel.load(base_dir, adapter_dir, **kw)`."""
    from endcloud.runtime.model import EndModel

    return EndModel.load(base_dir, adapter_dir, **kw)


@ENGINES.register("transformers-cb")
def _load_transformers_cb(*, base_dir, adapter_dir=None, **kw: Any) -> Any:
    """transformers' own continuous batching in this process (`runtime.hfbatch`): streaming for
    architectures outside our fast path and for models on a GPU; base and LoRA variants."""
    from endcloud.runtime.hfbatch import ContinuousHFModel

    return ContinuousHFModel.load(base_dir, adapter_dir, **kw)


@ENGINES.register("vllm")
def _load_vllm(*, adapter_dir=None, base_dir=None, **kw: Any) -> Any:
    """A shop-local vLLM server (`VLLMEndModel` keywords; missing ones from ENDCLOUD_VLLM_*).

    `base_dir` is accepted and ignored: the server loaded its base when it started."""
    from endcloud.runtime.vllm import VLLMEndModel

    m = VLLMEndModel.from_env(**kw)
    if adapter_dir is not None:
        try:
            m.swap_adapter(adapter_dir)
        except BaseException:
            m.close()
            raise
    return m


def _local_server(cls_name: str):
    def load(*, adapter_dir=None, base_dir=None, **kw: Any) -> Any:
        from endcloud.runtime import openai_local

        m = getattr(openai_local, cls_name).from_env(**{k: v for k, v in kw.items() if k not in ("device", "dtype")})
        if adapter_dir is not None:
            try:
                m.swap_adapter(adapter_dir)
            except BaseException:
                m.close()
                raise
        return m

    load.__doc__ = f"A shop-local server behind `runtime.openai_local.{cls_name}` (its ENDCLOUD_* variables name it)."
    return load


ENGINES.add("sglang", _local_server("SGLangEndModel"))
ENGINES.add("llama-server", _local_server("LlamaServerEndModel"))


@ENGINES.register("llamacpp")
def _load_llamacpp(*, base_dir, adapter_dir=None, **kw: Any) -> Any:
    """llama.cpp on this machine (the optional `endcloud[llamacpp]` extra): `base_dir` is an HF
    directory (exported to GGUF on first use, LoRA merged) or a `.gguf` file."""
    from endcloud.runtime.llamacpp import LlamaCppEndModel

    return LlamaCppEndModel.load(base_dir, adapter_dir, **kw)


def load_end_model(kind: str = "transformers", **kw: Any) -> Any:
    """An end model by engine name (`ENGINES.names()`); unknown names list the valid ones."""
    return ENGINES.get(kind)(**kw)
