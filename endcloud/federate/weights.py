"""An adapter folder as the list of arrays Flower sends, and back.

    adapter dir (peft save_pretrained)            what crosses the wire
      adapter_config.json                           nothing (both ends hold the template)
      adapter_model.safetensors ── SHARING ──►      [lora_A, lora_B, …] float32 arrays, in name order
                                   │
                                   └── personal tensors stay in the shop (`share="lora_A"`)

The names never travel: both ends derive the order from the same template adapter (the
server's initial global adapter, which every client is given as its starting point), so a
message is only numbers — no key that could carry text. `Template.check` refuses arrays whose
count, shape or dtype differ from the template before they are used or sent.

SHARING says which tensors are federated:

    "all"     every adapter tensor (FedAvg of the whole LoRA adapter)
    "lora_A"  only the LoRA A (down-projection) matrices; each shop keeps its own B matrices.
              FedSA-LoRA (Guo et al., ICLR 2025) found that A matrices learn what clients
              share and B matrices what is client-specific: shops of different domains then
              pool the common skill while each keeps a part no other shop's data can pull
              away, and half the bytes travel.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from endcloud.errors import ConfigError, ModelError
from endcloud.registry import Registry

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"

SHARING: Registry = Registry("sharing")
SHARING.register("all")(lambda name: True)
SHARING.register("lora_A")(lambda name: ".lora_A." in name)


def shared_filter(share: str) -> Callable[[str], bool]:
    """The predicate of a SHARING name (an unknown name fails listing the valid ones)."""
    return SHARING.get(share)


def read_tensors(adapter_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a peft adapter folder, as float32 numpy arrays keyed by name."""
    from safetensors.numpy import load_file

    path = Path(adapter_dir) / WEIGHTS
    if not path.exists():
        raise ModelError(f"{str(Path(adapter_dir))!r} holds no {WEIGHTS}: not a saved LoRA adapter")
    return {k: np.asarray(v, dtype=np.float32) for k, v in load_file(str(path)).items()}


def write_adapter(template_dir: str | os.PathLike[str], tensors: dict[str, np.ndarray],
                  out_dir: str | os.PathLike[str]) -> Path:
    """A complete adapter folder: the template's config and files, with `tensors` replacing its
    weights (names missing from `tensors` keep the template's values)."""
    from safetensors.numpy import save_file

    src, out = Path(template_dir), Path(out_dir)
    merged = read_tensors(src)
    unknown = sorted(set(tensors) - set(merged))
    if unknown:
        raise ModelError(f"tensors {unknown[:3]} are not in the adapter template {str(src)!r}")
    for k, v in tensors.items():
        if v.shape != merged[k].shape:
            raise ModelError(f"tensor {k!r} has shape {v.shape}, the template {merged[k].shape}")
        merged[k] = np.ascontiguousarray(v, dtype=np.float32)
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG, "training.json"):
        if (src / name).exists() and src.resolve() != out.resolve():
            shutil.copyfile(src / name, out / name)
    save_file(merged, str(out / WEIGHTS))
    return out


@dataclass(frozen=True)
class Template:
    """The federated tensors' names, shapes and order, read from one adapter folder."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    share: str

    @classmethod
    def of(cls, adapter_dir: str | os.PathLike[str], share: str = "all") -> "Template":
        keep = shared_filter(share)
        tensors = read_tensors(adapter_dir)
        names = tuple(sorted(n for n in tensors if keep(n)))
        if not names:
            raise ConfigError(f"sharing {share!r} selects no tensor of {str(adapter_dir)!r}; choose one of {SHARING.names()}")
        return cls(names=names, shapes=tuple(tuple(tensors[n].shape) for n in names), share=share)

    @property
    def size(self) -> int:
        """Numbers per message."""
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def arrays(self, tensors: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The federated tensors of `tensors`, in the template's order."""
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise ModelError(f"adapter lacks federated tensors {missing[:3]}: it was not made from the same template")
        out = [np.ascontiguousarray(tensors[n], dtype=np.float32) for n in self.names]
        self.check(out)
        return out

    def named(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        self.check(arrays)
        return dict(zip(self.names, arrays))

    def check(self, arrays: Sequence[np.ndarray]) -> None:
        """Refuse anything but float32 arrays of exactly the template's shapes."""
        if len(arrays) != len(self.names):
            raise ModelError(f"expected {len(self.names)} adapter tensors, got {len(arrays)}")
        for name, shape, a in zip(self.names, self.shapes, arrays):
            if not isinstance(a, np.ndarray) or a.dtype != np.float32 or tuple(a.shape) != shape:
                got = f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}"
                raise ModelError(f"tensor {name!r}: expected float32 {shape}, got {got}")
            if not np.all(np.isfinite(a)):
                raise ModelError(f"tensor {name!r} holds NaN or infinity")

    def to_json(self) -> dict:
        return {"share": self.share, "names": list(self.names), "shapes": [list(s) for s in self.shapes]}


def init_adapter(base_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, seed: int = 0,
                 **tuner) -> Path:
    """A fresh LoRA adapter on `base_dir` (B = 0, so it starts as the base model): the round-0
    global every shop starts from. `tuner`: r, alpha, dropout, target_modules."""
    import torch
    from peft import get_peft_model

    from endcloud.end.base import load_base
    from endcloud.end.tuners import make_peft_config

    torch.manual_seed(seed)
    model, _tok = load_base(base_dir)
    cfg = make_peft_config("lora", model_type=getattr(model.config, "model_type", None),
                           **{k: v for k, v in tuner.items() if v is not None})
    peft_model = get_peft_model(model, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    (out / "training.json").write_text(json.dumps({"method": "lora", "base": str(Path(base_dir).resolve()),
                                                   "init": {"seed": seed}}), encoding="utf-8")
    return out


def flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0, np.float32)


def subtract(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.subtract(x, y, dtype=np.float32) for x, y in zip(a, b, strict=True)]


def add(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.add(x, y, dtype=np.float32) for x, y in zip(a, b, strict=True)]


def norm(arrays: Sequence[np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)))


def payload_bytes(arrays: Sequence[np.ndarray]) -> int:
    """Bytes of the numbers themselves (what Flower's framing adds is measured on the wire)."""
    return int(sum(a.nbytes for a in arrays))


__all__ = ["CONFIG", "SHARING", "Template", "WEIGHTS", "add", "flat", "init_adapter", "norm", "payload_bytes",
           "read_tensors", "shared_filter", "subtract", "write_adapter"]
