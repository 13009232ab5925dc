"""Where the end model runs and in what precision: the one place `--device` and `--dtype` are decided.

    resolve_device("auto")            -> cuda:0 when torch sees a GPU, else cpu
    resolve_device("cuda:1")          -> cuda:1, or a ConfigError naming --device when there is no such GPU
    resolve_dtype("auto", cuda)       -> bf16 on a GPU that has it (Ampere and newer), else fp16
    resolve_dtype("auto", cpu)        -> fp32 (the tiny default trains and decodes in fp32 on a laptop)

Every command that loads a model (pretrain, train, evolve, chat, eval, serve) takes
`--device auto|cpu|cuda[:N]` and `--dtype auto|fp32|bf16|fp16`. The flags also set
`ENDCLOUD_DEVICE` / `ENDCLOUD_DTYPE` (`apply_flags`), because a command reaches models through
rooms it does not call directly (an evolve round trains and loads its gate's models; `serve`
steps the model in its own engine process), and all of them must agree on the device.
Nothing here imports torch at module level.

Why bf16 and not fp16 by default on GPUs: bf16 has fp32's range, so LoRA/prefix training needs
no loss scaling and an fp32 checkpoint never overflows when cast; fp16 (pre-Ampere GPUs such as
the T4 and V100) is chosen only where bf16 is missing, and training then scales the loss
(`torch.amp.GradScaler`).
"""

from __future__ import annotations

import os
import re
from typing import Any

from endcloud.errors import ConfigError

DEVICE_ENV = "ENDCLOUD_DEVICE"
DTYPE_ENV = "ENDCLOUD_DTYPE"
TRUST_ENV = "ENDCLOUD_TRUST_REMOTE_CODE"
DEVICE_HELP = "Where the model runs: auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N."
DTYPE_HELP = ("Weight precision: auto (bf16 on GPUs that support it, fp16 on older ones, fp32 on the CPU), "
              "fp32, bf16 or fp16.")
TRUST_HELP = ("Run the Python code a model folder ships (config.json `auto_map`, e.g. ChatGLM3). Off by default: "
              "that code runs with your permissions, so read it first.")

_DTYPE_NAMES = {"fp32": "float32", "float32": "float32", "f32": "float32",
                "bf16": "bfloat16", "bfloat16": "bfloat16",
                "fp16": "float16", "float16": "float16", "half": "float16", "f16": "float16"}
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def _flag_value(value: Any, env: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        value = os.environ.get(env, "") or "auto"
    return str(value).strip().lower()


def resolve_device(device: Any = None):
    """`device` (a flag value, a torch.device, or None: $ENDCLOUD_DEVICE, else auto) -> torch.device."""
    import torch

    if isinstance(device, torch.device):
        spec = str(device)
    else:
        spec = _flag_value(device, DEVICE_ENV)
    m = _DEVICE_RE.match(spec)
    if not m or (m.group(1) != "cuda" and m.group(2) is not None):
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N (--device or {DEVICE_ENV})")
    kind, index = m.group(1), m.group(2)
    if kind == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {spec} asks for a GPU but torch sees none (torch {torch.__version__}, "
                          f"built {'with' if torch.version.cuda else 'without'} CUDA); install a CUDA build of "
                          "torch on a GPU machine, or use --device cpu / auto")
    n = torch.cuda.device_count()
    i = int(index) if index is not None else torch.cuda.current_device()
    if i >= n:
        raise ConfigError(f"--device {spec}: this machine has {n} GPU{'s' if n != 1 else ''} (cuda:0..cuda:{n - 1})")
    return torch.device("cuda", i)


def bf16_supported(device) -> bool:
    """Whether `device` runs bf16 at full speed: a GPU of compute capability 8.0+, or any CPU
    (torch emulates bf16 on CPUs without AVX-512-BF16, slower but correct)."""
    import torch

    if device.type != "cuda":
        return True
    return bool(torch.cuda.is_bf16_supported())


def parse_dtype(name: Any):
    """A dtype name (fp32, bf16, fp16, float32, ...) or torch.dtype -> torch.dtype; ConfigError otherwise."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    key = str(name).strip().lower()
    if key not in _DTYPE_NAMES:
        raise ConfigError(f"unknown dtype {name!r}; use auto, fp32, bf16 or fp16 (--dtype or {DTYPE_ENV})")
    return getattr(torch, _DTYPE_NAMES[key])


def resolve_dtype(dtype: Any, device, *, cpu_default: Any = None):
    """The precision to hold the weights in on `device`.

    `dtype` None reads $ENDCLOUD_DTYPE, else "auto": bf16 on a GPU with bf16, fp16 on one without,
    and `cpu_default` (fp32 unless the caller has a reason, e.g. serving picks bf16 for a large
    base) on the CPU. An explicit bf16 on a GPU without it is refused: it would run emulated,
    many times slower, and the fix is one flag."""
    import torch

    if isinstance(dtype, torch.dtype):
        chosen = dtype
    else:
        spec = _flag_value(dtype, DTYPE_ENV)
        if spec == "auto":
            if device.type == "cuda":
                return torch.bfloat16 if bf16_supported(device) else torch.float16
            return parse_dtype(cpu_default) if cpu_default is not None else torch.float32
        chosen = parse_dtype(spec)
    if chosen == torch.bfloat16 and device.type == "cuda" and not bf16_supported(device):
        raise ConfigError(f"{_gpu_name(device)} has no bfloat16 support (compute capability < 8.0); "
                          "use --dtype fp16 (or auto)")
    return chosen


def dtype_name(dtype) -> str:
    """torch.bfloat16 -> "bf16" (what records and logs show)."""
    return {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(dtype), str(dtype))


def _gpu_name(device) -> str:
    import torch

    try:
        return f"{device} ({torch.cuda.get_device_name(device)})"
    except Exception:  # no driver to ask: the device string is enough for the message
        return str(device)


def describe(device) -> dict[str, Any]:
    """What a training record says about where it ran."""
    import torch

    out: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        out["gpu"] = _gpu_name(device)
        out["cuda"] = torch.version.cuda
    else:
        out["threads"] = torch.get_num_threads()
    return out


def trust_remote_code(flag: bool | None = None) -> bool:
    """The --trust-remote-code opt-in: the flag when given, else $ENDCLOUD_TRUST_REMOTE_CODE=1."""
    if flag is not None:
        return bool(flag)
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def apply_flags(device: str | None = None, dtype: str | None = None, trust: bool | None = None) -> None:
    """Make a command's --device/--dtype/--trust-remote-code the default of everything it starts
    (an evolve round's training and gate, the serve engine process). The device is validated now,
    so a bad flag fails before any model is loaded."""
    if device is not None:
        resolve_device(device)
        os.environ[DEVICE_ENV] = str(device)
    if dtype is not None:
        if str(dtype).strip().lower() != "auto":
            parse_dtype(dtype)
        os.environ[DTYPE_ENV] = str(dtype)
    if trust:
        os.environ[TRUST_ENV] = "1"
