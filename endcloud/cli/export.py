"""`endcloud export`: write the end model in other runtimes' formats.

    endcloud export gguf --base endcloud-work/base --adapter endcloud-work/adapters/shop/v3 --type q8_0 -o shop.gguf
    endcloud export gguf --base /models/Qwen2.5-1.5B-Instruct --type q4_k_m -o qwen-q4_k_m.gguf
    endcloud export lora --base endcloud-work/base --adapter endcloud-work/adapters/shop/v3   # -> v3/adapter.gguf
    endcloud export merged --base endcloud-work/base --adapter endcloud-work/adapters/shop -o out/shop-v3

GGUF (llama.cpp, llama-server, Ollama) needs the optional extra: pip install 'endcloud[llamacpp]'.
`export lora` writes the adapter alone as a GGUF adapter for llama-server's per-request LoRA
(`--engine llama-server`); `export merged` writes a plain Hugging Face folder with the LoRA
merged and an Ollama Modelfile, for Ollama, TGI, SGLang or vLLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

export_app = typer.Typer(help="Export the end model for other runtimes: GGUF (llama.cpp), a GGUF LoRA adapter "
                              "(llama-server), a merged Hugging Face folder (Ollama, TGI, SGLang, vLLM).",
                         no_args_is_help=True)


@export_app.command("gguf")
def gguf(
    base: Path = typer.Option(..., "--base", help="A local Hugging Face model folder (Qwen2 or Llama architecture)."),
    out: Path = typer.Option(..., "-o", "--out", help="The .gguf file to write (replaced if it exists)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A LoRA adapter to merge into the weights: "
                                           "adapters/<name>/vN, or adapters/<name> for its active version."),
    gguf_type: str = typer.Option("q8_0", "--type", help="Weight format: f32, f16, bf16, q8_0, q4_0, or llama.cpp's K-quants q4_k_m, q5_k_m, q6_k."),
    pre: Optional[str] = typer.Option(None, "--pre", help="llama.cpp pre-tokenizer name, when the tokenizer's own "
                                                          "splitting is not recognised (e.g. gpt-2, qwen2, llama-bpe)."),
) -> None:
    """Write base (+ merged LoRA adapter) as one GGUF file llama.cpp can run."""
    from endcloud.end.gguf import GGUF_TYPES, export_gguf

    GGUF_TYPES.get(gguf_type)  # an unknown --type fails before the model is loaded
    adapter = _active(adapter)
    r = export_gguf(base, out, adapter_dir=adapter, gguf_type=gguf_type, pre=pre)
    types = ", ".join(f"{k} ×{v}" for k, v in sorted(r.tensor_types.items()))
    typer.echo(f"wrote {r.path} ({r.arch}, {r.gguf_type}{', adapter ' + str(r.adapter_dir) if r.adapter_dir else ''}): "
               f"{r.n_tensors} tensors ({types}), {r.nbytes / 2**20:.1f} MiB of weights, "
               f"{r.decode_bytes / 2**20:.1f} MiB read per decoded token")


def _active(adapter: Optional[Path]) -> Optional[Path]:
    """adapters/<name> means its active version."""
    if adapter is not None and (adapter / "active").is_file():
        from endcloud.end.adapters import AdapterRegistry

        return AdapterRegistry(adapter.parent).active(adapter.name) or adapter
    return adapter


@export_app.command("lora")
def lora(
    base: Path = typer.Option(..., "--base", help="The base the adapter was trained on (Qwen2 or Llama architecture)."),
    adapter: Path = typer.Option(..., "--adapter", help="A LoRA adapter folder (adapters/<name>/vN, or adapters/<name>)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="The .gguf to write (default: <adapter>/adapter.gguf, "
                                       "where --engine llama-server looks)."),
) -> None:
    """Write a LoRA adapter as a GGUF adapter for llama-server (--lora FILE --lora-init-without-apply)."""
    from endcloud.end.gguf import export_lora_gguf

    r = export_lora_gguf(base, _active(adapter), out)
    typer.echo(f"wrote {r.path} ({r.arch} LoRA adapter, rank {r.rank}, alpha {r.alpha:g}, {r.n_tensors} tensors, "
               f"{r.nbytes / 2**20:.2f} MiB); start llama-server with --lora {r.path} --lora-init-without-apply")


@export_app.command("merged")
def merged(
    base: Path = typer.Option(..., "--base", help="A local Hugging Face model folder."),
    out: Path = typer.Option(..., "-o", "--out", help="The folder to write (replaced if it is an earlier export)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A LoRA adapter to merge (adapters/<name>/vN, or "
                                           "adapters/<name> for its active version)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Weight precision of the export: fp32, bf16 or fp16 "
                                        "(default: what the base stores)."),
    modelfile: bool = typer.Option(True, "--modelfile/--no-modelfile", help="Also write an Ollama Modelfile."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run the Python code the base folder ships (config.json auto_map); read it first."),
) -> None:
    """Write base + merged LoRA as one Hugging Face folder (safetensors) for Ollama, TGI, SGLang or vLLM."""
    from endcloud.end.merged import EXPORT_RECORD, export_merged

    r = export_merged(base, out, adapter_dir=_active(adapter), dtype=dtype, modelfile=modelfile,
                      trust_remote_code=trust_remote_code or None)
    typer.echo(f"wrote {r.out_dir} ({r.method}, {r.dtype}, {r.nbytes / 2**20:.1f} MiB of weights"
               f"{', Modelfile' if r.modelfile else ''}); serving commands in {r.out_dir / EXPORT_RECORD}")


def register(app: typer.Typer) -> None:
    """Add `endcloud export ...` to the root app."""
    app.add_typer(export_app, name="export")
