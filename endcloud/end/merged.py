"""Export the end model as one plain Hugging Face folder: base + LoRA merged, for servers that
take a model directory (Ollama, TGI, SGLang, vLLM without LoRA, another machine's transformers).

    r = export_merged("endcloud-work/base", "out/shop-v3", adapter_dir="endcloud-work/adapters/shop/v3")
    endcloud export merged --base endcloud-work/base --adapter endcloud-work/adapters/shop -o out/shop-v3

What the folder holds: `model.safetensors` (peft `merge_and_unload`, then `save_pretrained`;
sharded past 5 GB), the config and generation config, the tokenizer with its chat template,
`Modelfile` (Ollama: `ollama create shop -f out/shop-v3/Modelfile`), and `endcloud-export.json`
(base, adapter, method, dtype, the commands that serve it). The weights keep the checkpoint's
precision unless `dtype` says otherwise.

Only LoRA merges: a prefix / P-tuning v2 adapter is key/values in front of every layer, not a
change of weights, so it is refused with that reason (serve it with `--engine transformers`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endcloud.errors import ConfigError, ModelError

EXPORT_RECORD = "endcloud-export.json"

# Ollama reads the Go template below; ChatML is what Qwen2/2.5 and `endcloud pretrain` use.
CHATML_OLLAMA_TEMPLATE = (
    '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n'
)


@dataclass
class MergedExport:
    """What `export_merged` wrote."""

    out_dir: Path
    adapter_dir: Path | None
    method: str  # "base" or "lora"
    dtype: str
    nbytes: int
    modelfile: Path | None


def _adapter_kind(ad: Path) -> str:
    try:
        return str(json.loads((ad / "adapter_config.json").read_text(encoding="utf-8"))["peft_type"]).upper()
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{str(ad)!r} is not a peft adapter folder (adapter_config.json): {e}") from e


def modelfile_text(tokenizer: Any, *, temperature: float = 0.6, top_p: float = 0.8) -> str:
    """An Ollama Modelfile for the folder it sits in: its ChatML template where the tokenizer
    speaks ChatML (Ollama guesses otherwise), the end-of-turn stops, the paper's sampling."""
    lines = ["# ollama create <name> -f Modelfile   (run in this folder; Ollama imports the safetensors)", "FROM .", ""]
    tmpl = str(getattr(tokenizer, "chat_template", "") or "")
    stops = [t for t in ("<|im_end|>", "<|endoftext|>") if t in tokenizer.get_vocab()]
    if "<|im_start|>" in tmpl:
        lines += [f'TEMPLATE """{CHATML_OLLAMA_TEMPLATE}"""', ""]
    else:
        lines += ["# the chat template is not ChatML: Ollama derives one from tokenizer_config.json", ""]
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += [f"PARAMETER temperature {temperature}", f"PARAMETER top_p {top_p}", ""]
    return "\n".join(lines)


def export_merged(base_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                  adapter_dir: str | os.PathLike[str] | None = None, dtype: Any = None, modelfile: bool = True,
                  trust_remote_code: bool | None = None) -> MergedExport:
    """Write base (+ LoRA merged) as a Hugging Face folder at `out_dir` (replaced when it is an
    earlier export; refused when it holds anything else). Built in a temporary sibling folder and
    renamed, so a half-written export never has the final name."""
    import torch

    from endcloud.end.base import check_model_dir, load_base
    from endcloud.end.device import dtype_name, parse_dtype

    base = check_model_dir(base_dir)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / EXPORT_RECORD).exists():
        raise ConfigError(f"-o {str(out)!r} exists and is not an earlier export; give a new folder")
    ad = Path(adapter_dir) if adapter_dir is not None else None
    if ad is not None:
        kind = _adapter_kind(ad)
        if kind != "LORA":
            raise ModelError(f"adapter {str(ad)!r} is of type {kind!r}: only LoRA merges into the weights (a prefix / "
                             "P-tuning v2 adapter is key/values in front of every layer); serve it with --engine "
                             "transformers, or train --method lora")
    stored = json.loads((base / "config.json").read_text(encoding="utf-8"))
    stored_dtype = str(stored.get("dtype") or stored.get("torch_dtype") or "float32")
    dt = parse_dtype(dtype) if dtype is not None else parse_dtype(stored_dtype)
    model, tok = load_base(base, dtype=dt, trust_remote_code=trust_remote_code)
    method = "base"
    if ad is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(ad), is_trainable=False)
        except Exception as e:  # peft raises many types for a mismatched adapter
            raise ModelError(f"cannot load the adapter {str(ad)!r} onto {str(base)!r}: {e}") from e
        with torch.inference_mode():
            model = model.merge_and_unload()
        method = "lora"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size="5GB")
        tok.save_pretrained(str(tmp))
        for extra in base.glob("*.py"):  # a custom-code base's modeling files travel with it
            shutil.copy2(extra, tmp / extra.name)
        mf = None
        if modelfile:
            mf = tmp / "Modelfile"
            mf.write_text(modelfile_text(tok), encoding="utf-8")
        nbytes = sum(f.stat().st_size for f in tmp.glob("*.safetensors"))
        record = {
            "kind": "endcloud-merged-export", "base": str(base.resolve()), "adapter": str(ad.resolve()) if ad else None,
            "method": method, "dtype": dtype_name(dt), "weights_bytes": nbytes,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "serve": {
                "ollama": f"cd {out} && ollama create shop -f Modelfile",
                "tgi": f"text-generation-launcher --model-id {out}",
                "sglang": f"python -m sglang.launch_server --model-path {out}",
                "vllm": f"vllm serve {out}",
                "endcloud": f"endcloud serve --base {out}",
            },
        }
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MergedExport(out_dir=out, adapter_dir=ad, method=method, dtype=dtype_name(dt), nbytes=nbytes,
                        modelfile=out / "Modelfile" if modelfile else None)
