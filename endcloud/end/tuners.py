"""The tuner registry: a method name -> the peft config that trains it (Table IV defaults).

This is the one place that turns CLI flags into a peft config (as trl's `get_peft_config`):

    TUNERS["lora"](r=16)                  -> peft.LoraConfig
    TUNERS["prefix"](num_virtual_tokens=32) -> peft.PrefixTuningConfig(prefix_projection=True)
    TUNERS["ptuning-v2"]()                -> peft.PrefixTuningConfig(prefix_projection=False)

The two prompt methods are both `PrefixTuningConfig` in peft, and they differ only in the
reparameterisation:

    prefix (Li & Liang 2021)           ptuning-v2 (Liu et al. 2022)
    ─────────────────────────          ─────────────────────────────
    P' (n × d)                         P (n × 2·L·d)  ── used directly
      │ Linear d→h, tanh, Linear h→2·L·d
      ▼
    P (n × 2·L·d)  = keys and values of every layer's n virtual tokens

Either way the virtual tokens enter every layer's attention (deep prompts), which is what
distinguishes P-tuning v2 from P-tuning v1 (`PromptEncoderConfig`, input-layer only) —
not used here. Prefix methods carry no rotary position for their virtual tokens: train them
with right padding (our collator does), see ../shared/STACK-NOTES.md.
"""

from __future__ import annotations

from typing import Any, Callable

from endcloud.paper import PAPER
from endcloud.errors import ConfigError
from endcloud.registry import Registry

TUNERS: Registry[Callable[..., Any]] = Registry("tuner")

# Modules LoRA adapts when none are named: attention projections of Qwen2/Llama-style
# models. `peft` resolves them by suffix, so this also fits Mistral, Qwen2.5, Gemma, Qwen3…
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
# Families that name (or fuse) their attention projections otherwise. ChatGLM2/3, GPT-NeoX,
# BLOOM and Falcon fuse q,k,v into `query_key_value`; Baichuan calls it `W_pack`, InternLM2
# `wqkv`, Phi-3 `qkv_proj`, GPT-2 `c_attn` (a Conv1D, which peft adapts too); ChatGLM keeps
# peft's choice (the fused projection alone), the paper's own end model.
_KNOWN_TARGETS = {
    "chatglm": ("query_key_value",),
    "baichuan": ("W_pack", "o_proj"),
    "internlm2": ("wqkv", "wo"),
    "phi3": ("qkv_proj", "o_proj"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense"),
    "gpt2": ("c_attn",),
    "gpt_bigcode": ("c_attn",),
    "gpt_neox": ("query_key_value",),
    "bloom": ("query_key_value",),
    "falcon": ("query_key_value",),
    "mpt": ("Wqkv",),
}
# Where a name alone decides: the fused or split attention projections of any family above.
_ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "query_key_value", "W_pack", "wqkv", "qkv_proj", "c_attn",
                    "Wqkv", "query", "key", "value", "qkv")


def _positive_int(name: str, flag: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}; change {flag}")
    return value


def _unit_float(name: str, flag: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}; change {flag}")
    return float(value)


ALL_LINEAR = "all-linear"  # --target-modules all-linear: LoRA on the MLP too, not only the attention projections


def default_target_modules(model_type: str | None) -> list[str]:
    """LoRA target modules for a model family (attention projections)."""
    return list(_KNOWN_TARGETS.get(model_type or "", DEFAULT_LORA_TARGETS))


def _linear_names(model) -> dict[str, str]:
    """Leaf name -> full module name of every linear layer (torch Linear, GPT-2's Conv1D, bnb 4-bit)."""
    out: dict[str, str] = {}
    for full, mod in model.named_modules():
        kind = type(mod).__name__
        if kind in ("Linear", "Conv1D", "Linear4bit", "Linear8bitLt") and full:
            out.setdefault(full.rsplit(".", 1)[-1], full)
    return out


def target_modules_for(model) -> list[str]:
    """The attention projections LoRA adapts in `model`: its family's names (`_KNOWN_TARGETS`),
    else peft's own table, else whatever attention-projection names the model has — so a
    custom-code base (trust_remote_code) gets the right modules without a flag. A ConfigError
    lists the model's linear layers when none is recognisable: pass --target-modules."""
    names = _linear_names(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None) or ""
    candidates: list[tuple[str, ...]] = []
    if model_type in _KNOWN_TARGETS:
        candidates.append(_KNOWN_TARGETS[model_type])
    try:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS
    except ImportError:  # an older peft: our table and the name scan still apply
        PEFT_TARGETS = {}
    candidates.append(DEFAULT_LORA_TARGETS)
    if model_type in PEFT_TARGETS:
        candidates.append(tuple(PEFT_TARGETS[model_type]))
    for cand in candidates:
        present = [t for t in cand if t in names]
        if present and any(t in _ATTENTION_NAMES for t in present):
            return present
    found = [n for n in _ATTENTION_NAMES if n in names]
    if found:
        return found
    raise ConfigError(
        f"cannot tell which layers of this {model_type or type(model).__name__!r} model are its attention projections; "
        f"pass --target-modules with some of its linear layers: {sorted(names)[:20]}"
    )


@TUNERS.register("lora")
def lora_config(
    *,
    r: int = PAPER.lora_r,
    alpha: int | float = PAPER.lora_alpha,
    dropout: float = PAPER.lora_dropout,
    target_modules: list[str] | tuple[str, ...] | str | None = None,
    model_type: str | None = None,
    **unused: Any,
):
    """LoRA (Hu et al.): low-rank updates W + (α/r)·B·A on the target modules (Table IV: r 8, α 32, dropout 0.1)."""
    from peft import LoraConfig, TaskType

    _reject_unknown("lora", unused)
    r = _positive_int("LoRA rank r", "--r", r)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ConfigError(f"LoRA alpha must be a positive number, got {alpha!r}; change --alpha")
    dropout = _unit_float("LoRA dropout", "--dropout", dropout)
    if isinstance(target_modules, str):
        target_modules = [t.strip() for t in target_modules.split(",") if t.strip()]
    if target_modules is not None and not target_modules:
        raise ConfigError("LoRA target modules are empty; pass --target-modules q_proj,v_proj (module name suffixes)")
    targets: list[str] | str = list(target_modules) if target_modules else default_target_modules(model_type)
    if targets == [ALL_LINEAR]:
        targets = ALL_LINEAR  # peft's shorthand: every linear layer but the output head, whatever the family calls them
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none"
    )


def _prefix(projection: bool, num_virtual_tokens: int, encoder_hidden_size: int):
    from peft import PrefixTuningConfig, TaskType

    return PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=num_virtual_tokens,
        prefix_projection=projection,
        encoder_hidden_size=encoder_hidden_size if projection else None,
    )


@TUNERS.register("prefix")
def prefix_config(
    *,
    num_virtual_tokens: int = PAPER.num_virtual_tokens,
    encoder_hidden_size: int = 512,
    model_type: str | None = None,
    **unused: Any,
):
    """Prefix-Tuning (Li & Liang): per-layer key/value prefixes produced by a reparameterisation MLP.

    `encoder_hidden_size` is the MLP's hidden width (Li & Liang used 512–800)."""
    _reject_unknown("prefix", unused)
    n = _positive_int("number of virtual tokens", "--virtual-tokens", num_virtual_tokens)
    h = _positive_int("prefix MLP hidden size", "--prefix-hidden", encoder_hidden_size)
    return _prefix(True, n, h)


@TUNERS.register("ptuning-v2")
def ptuning_v2_config(
    *,
    num_virtual_tokens: int = PAPER.num_virtual_tokens,
    model_type: str | None = None,
    **unused: Any,
):
    """P-Tuning v2 (Liu et al.): deep prompts at every layer, learned directly (no reparameterisation)."""
    _reject_unknown("ptuning-v2", unused)
    n = _positive_int("number of virtual tokens", "--virtual-tokens", num_virtual_tokens)
    return _prefix(False, n, 0)


# Flags that belong to another method are ignored (the CLI passes them all); anything else is a typo.
_ALL_KNOWN = {"r", "alpha", "dropout", "target_modules", "num_virtual_tokens", "encoder_hidden_size", "model_type"}


def _reject_unknown(method: str, unused: dict[str, Any]) -> None:
    bad = sorted(k for k in unused if k not in _ALL_KNOWN)
    if bad:
        raise ConfigError(f"tuner {method!r} got unknown settings {bad}; valid: {sorted(_ALL_KNOWN)}")


def make_peft_config(method: str, **overrides: Any):
    """Build the peft config of `method` (a TUNERS name); None-valued overrides keep defaults."""
    fn = TUNERS.get(method)
    return fn(**{k: v for k, v in overrides.items() if v is not None})
