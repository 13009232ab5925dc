"""Supervised fine-tuning of the end model with a parameter-efficient tuner.

    train(base_dir, examples, out_dir, method="lora" | "prefix" | "ptuning-v2")
      base (frozen) + peft adapter ─► length-bucketed batches ─► AdamW on the adapter only
      every `save_every` steps: out_dir/checkpoints/step-N (adapter + optimizer + scheduler
                                + step + RNG), written to a temp dir and renamed
      at the end: out_dir = peft adapter (save_pretrained) + training.json

A run killed at any point resumes from its latest checkpoint (`resume=True`, the default)
and ends with the same number of steps as an uninterrupted run: the batch order is a pure
function of the seed, and the RNG states are restored. `init_adapter` continues training an
existing adapter (online evolution fine-tunes the active one).

Used by `endcloud train` and by the evolution loop; run it from Python as
`train(base, [Example(messages, response)], "out/")`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from endcloud.paper import PAPER
from endcloud.end.base import load_base
from endcloud.end.data import (
    Encoder,
    EncodedExample,
    Example,
    collate,
    examples_hash,
    length_buckets,
    plain_batches,
)
from endcloud.errors import ConfigError, DataError, ModelError
from endcloud.fileio import write_json_atomic

RECORD_NAME = "training.json"
CHECKPOINTS = "checkpoints"


@dataclass
class TrainConfig:
    """Everything that decides what a training run computes (recorded in training.json)."""

    method: str = "lora"
    steps: int = 100
    lr: float = PAPER.learning_rate
    batch_size: int = PAPER.batch_size
    max_input_len: int = PAPER.max_input_len
    max_output_len: int = PAPER.max_output_len
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    save_every: int = 50
    seed: int = 0
    bucket: bool = True
    tuner: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.steps <= 0:
            raise ConfigError(f"steps must be a positive integer, got {self.steps!r}; change --steps")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr!r}; change --lr")
        if self.batch_size <= 0:
            raise ConfigError(f"batch size must be positive, got {self.batch_size!r}; change --batch-size")
        if self.save_every <= 0:
            raise ConfigError(f"checkpoint interval must be positive, got {self.save_every!r}; change --save-every")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup ratio must be in [0, 1), got {self.warmup_ratio!r}; change --warmup")


@dataclass
class TrainResult:
    adapter_dir: Path
    losses: list[float]
    eval_loss: float | None
    steps: int
    record_path: Path
    method: str = "lora"
    eval_loss_before: float | None = None
    resumed_from: int | None = None
    tokens: int = 0
    seconds: float = 0.0
    model: Any = field(default=None, repr=False)  # the trained peft model (eval mode), to use without reloading


def method_of(peft_config) -> str:
    """Our tuner name for a peft config (prefix-with-projection vs P-tuning v2 vs LoRA)."""
    kind = str(getattr(peft_config.peft_type, "value", peft_config.peft_type))
    if kind == "LORA":
        return "lora"
    if kind == "PREFIX_TUNING":
        return "prefix" if peft_config.prefix_projection else "ptuning-v2"
    raise ModelError(f"unsupported adapter type {kind!r}; endcloud trains lora, prefix and ptuning-v2 adapters")


def _build_peft_model(model, method: str, tuner: dict[str, Any], init_adapter: str | os.PathLike[str] | None):
    from peft import PeftConfig, PeftModel, get_peft_model, load_peft_weights, set_peft_model_state_dict

    from endcloud.end.tuners import make_peft_config

    if init_adapter is None:
        cfg = make_peft_config(method, model_type=getattr(model.config, "model_type", None), **tuner)
        return get_peft_model(model, cfg), method
    src = Path(init_adapter)
    if not (src / "adapter_config.json").exists():
        raise ModelError(f"{str(src)!r} is not a peft adapter directory (no adapter_config.json); check --init-adapter")
    cfg = PeftConfig.from_pretrained(str(src))
    init_method = _recorded_method(src) or method_of(cfg)
    cfg.inference_mode = False
    if cfg.is_prompt_learning:
        # peft saves a prefix adapter as the MLP's *output*; the reparameterisation is a
        # training aid (Li & Liang drop it after training), so continue on the saved
        # prefixes. peft refuses is_trainable for prompt adapters: build, then load weights.
        if getattr(cfg, "prefix_projection", False):
            cfg.prefix_projection = False
        pm = get_peft_model(model, cfg)
        set_peft_model_state_dict(pm, load_peft_weights(str(src), device="cpu"))
        return pm, init_method
    return PeftModel.from_pretrained(model, str(src), config=cfg, is_trainable=True), init_method


def _recorded_method(adapter_dir: Path) -> str | None:
    for name in (RECORD_NAME, "manifest.json"):
        p = adapter_dir / name
        if p.exists():
            with contextlib.suppress(ValueError, OSError):
                m = json.loads(p.read_text(encoding="utf-8")).get("method")
                if m:
                    return str(m)
    return None


def _schedule(encoded: Sequence[EncodedExample], cfg: TrainConfig) -> list[list[int]]:
    """The batch order for every step: a pure function of the data and the seed."""
    lengths = [len(e) for e in encoded]
    out: list[list[int]] = []
    epoch = 0
    while len(out) < cfg.steps:
        seed = cfg.seed * 1000003 + epoch
        if cfg.bucket:
            out.extend(length_buckets(lengths, cfg.batch_size, seed=seed))
        else:
            out.extend(plain_batches(len(lengths), cfg.batch_size, seed=seed))
        epoch += 1
    return out[: cfg.steps]


def _trainable_state(model) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _latest_checkpoint(out_dir: Path) -> Path | None:
    root = out_dir / CHECKPOINTS
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if (p / "state.pt").exists())
    return done[-1] if done else None


def _save_checkpoint(out_dir: Path, step: int, model, optimizer, scheduler, fingerprint: dict[str, Any]) -> Path:
    import torch

    root = out_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    state = {
        "step": step,
        "trainable": _trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "fingerprint": fingerprint,
    }
    with open(tmp / "state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    final = root / f"step-{step:07d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in root.glob("step-*"):  # keep only the newest complete checkpoint
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _load_checkpoint(path: Path, model, optimizer, scheduler, fingerprint: dict[str, Any]) -> int:
    import torch

    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"checkpoint {str(path)!r} belongs to a run with other settings or data; "
            "use a new output directory or pass --no-resume to start over"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in state["trainable"].items():
            params[n].copy_(v)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return int(state["step"])


def evaluate_loss(model, encoded: Sequence[EncodedExample], pad_id: int, *, batch_size: int = 8) -> float | None:
    """Token-weighted mean loss over the reply tokens of `encoded` (None when empty)."""
    import torch

    if not encoded:
        return None
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for idx in length_buckets([len(e) for e in encoded], batch_size, seed=0):
            batch = collate([encoded[i] for i in idx], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total += float(loss)
            count += int((shift_labels != -100).sum())
    if was_training:
        model.train()
    return total / count if count else None


def _progress(enabled: bool, total: int, start: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(
        TextColumn("[bold]train[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        disable=not enabled,
        transient=False,
    )
    task = prog.add_task("train", total=total, completed=start, loss="-")
    return prog, task


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    from endcloud import __version__

    return {"endcloud": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def _curve(losses: Sequence[float], points: int = 50) -> list[list[float]]:
    """A downsampled loss curve: [step, mean loss of the window] pairs."""
    if not losses:
        return []
    w = max(1, math.ceil(len(losses) / points))
    return [[i + len(losses[i : i + w]), round(sum(losses[i : i + w]) / len(losses[i : i + w]), 5)] for i in range(0, len(losses), w)]


def train(
    base_dir: str | os.PathLike[str],
    examples: Sequence[Example],
    out_dir: str | os.PathLike[str],
    *,
    method: str = "lora",
    steps: int = 100,
    lr: float = PAPER.learning_rate,
    batch_size: int = PAPER.batch_size,
    max_input_len: int = PAPER.max_input_len,
    max_output_len: int = PAPER.max_output_len,
    init_adapter: str | os.PathLike[str] | None = None,
    eval_examples: Sequence[Example] | None = None,
    resume: bool = True,
    seed: int = 0,
    progress: bool = True,
    save_every: int = 50,
    warmup_ratio: float = 0.05,
    bucket: bool = True,
    callback: Callable[[int, float], None] | None = None,
    on_start: Callable[[Any], None] | None = None,
    base: tuple[Any, Any] | None = None,
    extra_record: dict[str, Any] | None = None,
    accelerator: Any = None,
    **tuner: Any,
) -> TrainResult:
    """Fine-tune an adapter on `examples`; write it (peft format) + training.json into `out_dir`.

    `tuner` holds the method's settings (r, alpha, dropout, target_modules,
    num_virtual_tokens, encoder_hidden_size; see `endcloud.end.tuners`). `callback(step,
    loss)` runs after every step (raise in it to stop); `on_start(peft_model)` runs once
    before the first step. `base` may pass an already loaded
    (model, tokenizer) to skip loading; the model is wrapped in place, so do not reuse it.
    `accelerator` (an `accelerate.Accelerator`) runs the same loop data-parallel: each step's
    global batch is split across processes, so steps, the LR schedule and resume match a
    one-process run; only the main process writes checkpoints, the adapter and the record.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    out = Path(out_dir)
    cfg = TrainConfig(
        method=method, steps=steps, lr=lr, batch_size=batch_size, max_input_len=max_input_len,
        max_output_len=max_output_len, warmup_ratio=warmup_ratio, save_every=save_every, seed=seed,
        bucket=bucket, tuner={k: v for k, v in tuner.items() if v is not None},
    )
    cfg.validate()
    if not examples:
        raise DataError("no training examples; check --pairs / --labels")
    torch.manual_seed(seed)
    random.seed(seed)

    model, tok = base if base is not None else load_base(base_dir, padding_side="right")
    model, method = _build_peft_model(model, method, cfg.tuner, init_adapter)
    cfg.method = method
    enc = Encoder(tok, max_input_len=max_input_len, max_output_len=max_output_len)
    encoded = enc.encode_all(examples)
    held = enc.encode_all(eval_examples or [])
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    schedule = _schedule(encoded, cfg)
    data_hash = examples_hash(examples)
    eval_hash = examples_hash(eval_examples) if eval_examples else None
    fingerprint = {"config": asdict(cfg), "data": data_hash, "init_adapter": str(init_adapter) if init_adapter else None}

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, int(warmup_ratio * steps)), steps)
    acc, core = accelerator, model  # core: the peft model itself (DDP wraps `model`)
    if acc is not None:
        if batch_size < acc.num_processes:
            raise ConfigError(f"batch size {batch_size} is below the {acc.num_processes} processes; raise --batch-size")
        # The scheduler stays unprepared: every step is one global batch split across processes,
        # so it steps once per step (a prepared one would step num_processes times).
        model, optimizer = acc.prepare(model, optimizer)
        core = acc.unwrap_model(model)
    main = acc is None or acc.is_main_process

    out.mkdir(parents=True, exist_ok=True)
    start, resumed_from = 0, None
    ckpt = _latest_checkpoint(out) if resume else None
    if not resume and (out / CHECKPOINTS).exists():
        shutil.rmtree(out / CHECKPOINTS)
    eval_before = evaluate_loss(core, held, pad_id) if ckpt is None else None
    if ckpt is not None:
        start = resumed_from = _load_checkpoint(ckpt, core, optimizer, scheduler, fingerprint)
        prev = _read_partial_losses(out)
        eval_before = prev.get("eval_loss_before")
    losses: list[float] = list(_read_partial_losses(out).get("losses", []))[:start] if ckpt is not None else []

    if on_start is not None:
        on_start(model)
    model.train()
    t0 = time.perf_counter()
    cpu0 = time.process_time()  # CPU seconds: comparable across busy and quiet machines
    tokens = 0
    prog, task = _progress(progress and main, steps, start)
    with prog:
        for step in range(start, steps):
            idx = schedule[step]
            if acc is not None:  # this process's share of the global batch
                idx = idx[acc.process_index :: acc.num_processes] or idx[:1]
            batch = collate([encoded[i] for i in idx], pad_id)
            tokens += int(batch["attention_mask"].sum())
            if acc is not None:
                batch = {k: v.to(acc.device) for k, v in batch.items()}
            loss = model(**batch).loss
            if acc is not None:
                acc.backward(loss)
            else:
                loss.backward()
            if cfg.grad_clip:
                (acc.clip_grad_norm_ if acc is not None else torch.nn.utils.clip_grad_norm_)(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(acc.reduce(loss.detach(), "mean") if acc is not None else loss.detach()))
            done = step + 1
            prog.update(task, completed=done, loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
            if done % save_every == 0 and done < steps and main:
                write_json_atomic(out / ".losses.json", {"losses": losses, "eval_loss_before": eval_before})
                _save_checkpoint(out, done, core, optimizer, scheduler, fingerprint)
            if callback is not None:
                callback(done, losses[-1])
    seconds = time.perf_counter() - t0
    eval_loss = evaluate_loss(core, held, pad_id)
    if acc is not None:
        acc.wait_for_everyone()
    model = core
    model.eval()
    if not main:  # one writer: the main process saves the adapter and the record
        return TrainResult(adapter_dir=out, losses=losses, eval_loss=eval_loss, steps=steps,
                           record_path=out / RECORD_NAME, method=method, model=model)
    model.save_pretrained(str(out))
    record = {
        "method": method,
        "base": str(Path(base_dir).resolve()) if base_dir else None,
        "init_adapter": str(init_adapter) if init_adapter else None,
        "config": asdict(cfg),
        "data": {
            "train_hash": data_hash,
            "train_examples": len(examples),
            "distilled_examples": sum(1 for e in examples if e.source == "distilled"),
            "truncated_examples": sum(1 for e in encoded if e.truncated),
            "eval_hash": eval_hash,
            "eval_examples": len(held),
        },
        "metrics": {
            "loss_first": round(sum(losses[:10]) / max(1, len(losses[:10])), 5) if losses else None,
            "loss_last": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 5) if losses else None,
            "loss_curve": _curve(losses),
            "eval_loss_before": eval_before,
            "eval_loss": eval_loss,
            "eval_ppl": math.exp(eval_loss) if eval_loss is not None and eval_loss < 50 else None,
            "tokens_this_session": tokens,
            "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        },
        "steps": steps,
        "resumed_from": resumed_from,
        "seconds_this_session": round(seconds, 2),
        "cpu_seconds_this_session": round(time.process_time() - cpu0, 2),
        "threads": torch.get_num_threads(),
        "processes": acc.num_processes if acc is not None else 1,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
    }
    if extra_record:
        record.update(extra_record)
    write_json_atomic(out / RECORD_NAME, record)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(out / ".losses.json")
    return TrainResult(
        adapter_dir=out, losses=losses, eval_loss=eval_loss, steps=steps, record_path=out / RECORD_NAME,
        method=method, eval_loss_before=eval_before, resumed_from=resumed_from, tokens=tokens, seconds=seconds,
        model=model,
    )


def _read_partial_losses(out: Path) -> dict[str, Any]:
    p = out / ".losses.json"
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        return {}


def load_trained(base_dir: str | os.PathLike[str], adapter_dir: str | os.PathLike[str]):
    """(peft model, tokenizer) for inference from a base dir and an adapter dir."""
    from peft import PeftModel

    model, tok = load_base(base_dir)
    src = Path(adapter_dir)
    if not (src / "adapter_config.json").exists():
        raise ModelError(f"{str(src)!r} is not a peft adapter directory (no adapter_config.json)")
    model = PeftModel.from_pretrained(model, str(src))
    model.eval()
    return model, tok
