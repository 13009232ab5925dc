"""`endcloud export`: write the end model in other runtimes' formats (GGUF for llama.cpp).

    endcloud export gguf --base endcloud-work/base --adapter endcloud-work/adapters/shop/v3 --type q8_0 -o shop.gguf
    endcloud export gguf --base /models/Qwen2.5-0.5B-Instruct --type q4_0 -o qwen-q4_0.gguf

Needs the optional extra: pip install 'endcloud[llamacpp]'. The file runs in any llama.cpp
(llama-cli, llama-server) and in `endcloud.runtime.llamacpp.LlamaCppEndModel`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

export_app = typer.Typer(help="Export the end model for other runtimes (GGUF for llama.cpp).", no_args_is_help=True)


@export_app.command("gguf")
def gguf(
    base: Path = typer.Option(..., "--base", help="A local Hugging Face model folder (Qwen2 or Llama architecture)."),
    out: Path = typer.Option(..., "-o", "--out", help="The .gguf file to write (replaced if it exists)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A LoRA adapter to merge into the weights: "
                                           "adapters/<name>/vN, or adapters/<name> for its active version."),
    gguf_type: str = typer.Option("q8_0", "--type", help="Weight format: f32, f16, bf16, q8_0 or q4_0."),
    pre: Optional[str] = typer.Option(None, "--pre", help="llama.cpp pre-tokenizer name, when the tokenizer's own "
                                                          "splitting is not recognised (e.g. gpt-2, qwen2, llama-bpe)."),
) -> None:
    """Write base (+ merged LoRA adapter) as one GGUF file llama.cpp can run."""
    from endcloud.end.gguf import GGUF_TYPES, export_gguf

    GGUF_TYPES.get(gguf_type)  # an unknown --type fails before the model is loaded
    if adapter is not None and (adapter / "active").is_file():  # adapters/<name>: its active version
        from endcloud.end.adapters import AdapterRegistry

        adapter = AdapterRegistry(adapter.parent).active(adapter.name) or adapter
    r = export_gguf(base, out, adapter_dir=adapter, gguf_type=gguf_type, pre=pre)
    types = ", ".join(f"{k} ×{v}" for k, v in sorted(r.tensor_types.items()))
    typer.echo(f"wrote {r.path} ({r.arch}, {r.gguf_type}{', adapter ' + str(r.adapter_dir) if r.adapter_dir else ''}): "
               f"{r.n_tensors} tensors ({types}), {r.nbytes / 2**20:.1f} MiB of weights, "
               f"{r.decode_bytes / 2**20:.1f} MiB read per decoded token")


def register(app: typer.Typer) -> None:
    """Add `endcloud export ...` to the root app."""
    app.add_typer(export_app, name="export")
