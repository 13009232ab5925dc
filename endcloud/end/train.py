"""Supervised fine-tuning of the end model with a parameter-efficient tuner.

    train(base_dir, examples, out_dir, method="lora" | "prefix" | "ptuning-v2")
      base (frozen) + peft adapter ─► length-bucketed batches ─► AdamW on the adapter only
      every `save_every` steps: out_dir/checkpoints/step-N (adapter + optimizer + scheduler
                                + step + RNG), written to a temp dir and renamed
      at the end: out_dir = peft adapter (save_pretrained) + training.json

The loss is the reply's token cross-entropy; an example that lists candidates (`Example.choices`:
a multiple-choice, ranking, retrieval or named-entity task, answered by the candidates'
log-likelihood) adds
`choice_weight` × `choice_loss`, which trains that ranking itself.

Real bases on real hardware (`device`, `dtype`, `grad_accum`, `gradient_checkpointing`, `qlora`):

    device "auto"      a GPU when torch sees one (`endcloud.end.device`); the base is moved there
    dtype  "auto"      bf16 base weights on GPUs that have it, fp16 on older ones (the loss is then
                       scaled), fp32 on the CPU; adapter weights and the optimizer stay fp32, the
                       forward runs under autocast
    grad_accum k       each step's batch is cut into k micro-batches whose losses are weighted by
                       their reply tokens, so a step computes the same loss and gradient as the whole
                       batch at once (tests/end/test_device.py) in 1/k of the activation memory; the
                       batch order, LR schedule and resume do not change with k
    gradient_checkpointing   recompute activations in the backward pass (LoRA only: prefix tuning
                       feeds its learned keys/values through the cache, which checkpointed layers
                       do not carry; it is refused with that reason)
    qlora              LoRA on a 4-bit NF4 base (bitsandbytes, GPU only, the `endcloud[qlora]` extra);
                       the adapter saved is a plain LoRA folder that serves on the bf16 base

Why our own loop and not TRL's `SFTTrainer`: the loop's contract (a batch order that is a pure
function of the seed, bit-for-bit resume from a checkpoint, the adapter folder + training.json
the registry and the evolution gate read, data-parallel through accelerate) is what the rest of
endcloud depends on; what SFTTrainer would add for real bases is the list above, ~100 lines
here. Nothing has measured SFTTrainer faster on one GPU; docs/scale.md says how to check.

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
    candidate_logprob_sums,
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
    dtype: str = "fp32"  # the base's weights and the autocast precision (resolved, e.g. "bf16")
    qlora: bool = False  # LoRA on a 4-bit base
    grad_accum: int = 1  # micro-batches per step: the same step in less memory (not in the resume fingerprint)
    gradient_checkpointing: bool = False  # recompute activations (not in the resume fingerprint)
    # Weight of the choice loss of examples that list candidates (`Example.choices`): see `choice_loss`.
    choice_weight: float = 1.0

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
        if isinstance(self.grad_accum, bool) or not isinstance(self.grad_accum, int) or self.grad_accum < 1:
            raise ConfigError(f"gradient accumulation must be a positive integer, got {self.grad_accum!r}; "
                              "change --grad-accum")
        if self.grad_accum > self.batch_size:
            raise ConfigError(f"--grad-accum {self.grad_accum} cuts each step's {self.batch_size} examples into more "
                              "micro-batches than there are examples; --batch-size is the whole step's batch: raise it "
                              "or lower --grad-accum")
        if self.gradient_checkpointing and self.method != "lora":
            raise ConfigError(f"--gradient-checkpointing works with LoRA only: {self.method} feeds its learned "
                              "keys/values to every layer through the KV cache, which checkpointed layers do not "
                              "carry; drop the flag (prefix adapters are small: lower --batch-size or use "
                              "--grad-accum to save memory)")
        if not (isinstance(self.choice_weight, (int, float)) and math.isfinite(self.choice_weight)
                and self.choice_weight >= 0):
            raise ConfigError(f"choice weight must be a number >= 0, got {self.choice_weight!r}; change --choice-weight")
        if self.qlora and self.method != "lora":
            raise ConfigError(f"--qlora is LoRA on a 4-bit base; {self.method!r} cannot use it (use --method lora)")

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must match to resume: everything that changes the numbers computed
        (accumulation and checkpointing compute the same steps, so a run may resume with others)."""
        d = asdict(self)
        d.pop("grad_accum")
        d.pop("gradient_checkpointing")
        return d


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
    device: str = "cpu"
    dtype: str = "fp32"
    model: Any = field(default=None, repr=False)  # the trained peft model (eval mode), to use without reloading
    stopped_early: bool = False  # a `deadline` ended training before the planned steps (`steps` is what ran)


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
        if method == "lora" and not tuner.get("target_modules"):
            from endcloud.end.tuners import target_modules_for

            tuner = {**tuner, "target_modules": target_modules_for(model)}
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
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
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
    if state.get("cuda_rng") is not None and torch.cuda.is_available():  # dropout on a GPU draws from these
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate(state["python_rng"])
    return int(state["step"])


def _autocast(device, dtype):
    """Mixed precision for a base held in bf16/fp16 (adapter weights stay fp32); nothing for fp32."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def micro_batches(idx: Sequence[int], k: int) -> list[list[int]]:
    """One step's examples cut into at most `k` contiguous micro-batches (bucketed rows stay together)."""
    n = len(idx)
    return [list(idx[j * n // k:(j + 1) * n // k]) for j in range(k) if idx[j * n // k:(j + 1) * n // k]]


def evaluate_loss(model, encoded: Sequence[EncodedExample], pad_id: int, *, batch_size: int = 8,
                  dtype: Any = None) -> float | None:
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
            with _autocast(device, dtype or torch.float32):
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


def choice_loss(model, examples: Sequence[EncodedExample], pad_id: int):
    """The rank-classification loss of examples that list candidates: each candidate scored as the
    reply by its mean token log-probability (how `endcloud.tasks.shopbench` answers by
    log-likelihood), softmax over an example's candidates, minus the log of the right ones' share;
    the mean over `examples`.

    Why: the language-model loss alone teaches the right reply's tokens, not to prefer it over
    the others — a small model that cannot write the answer format still ranks candidates by a
    prior that ignores the question. Training the ranking itself is T-Few's length-normalised
    loss (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
    In-Context Learning"), with several right candidates allowed (retrieval's top 3)."""
    import torch

    out = []
    for e in examples:  # one example's candidates share its prompt: run once (candidate_logprob_sums)
        sums, counts = candidate_logprob_sums(model, e.choices, pad_id)
        s = sums / counts.clamp(min=1)
        out.append(torch.logsumexp(s, 0) - torch.logsumexp(s[list(e.answers)], 0))
    return torch.stack(out).mean()


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
    device: Any = None,
    dtype: Any = None,
    grad_accum: int = 1,
    gradient_checkpointing: bool = False,
    qlora: bool = False,
    trust_remote_code: bool | None = None,
    deadline: float | None = None,
    choice_weight: float = 1.0,
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
    `device`, `dtype`, `grad_accum`, `gradient_checkpointing`, `qlora`: see the module docstring
    (None: $ENDCLOUD_DEVICE / $ENDCLOUD_DTYPE, else auto). `trust_remote_code`: see `load_base`.
    `deadline` (a `time.monotonic()` value) ends training early, so that the held-out loss and
    saving still finish by then; `steps` in the result and the record is then what ran, and
    `stopped_early` says so.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    from endcloud.end.device import describe, dtype_name, resolve_device, resolve_dtype

    out = Path(out_dir)
    dev = accelerator.device if accelerator is not None else resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    cfg = TrainConfig(
        method=method, steps=steps, lr=lr, batch_size=batch_size, max_input_len=max_input_len,
        max_output_len=max_output_len, warmup_ratio=warmup_ratio, save_every=save_every, seed=seed,
        bucket=bucket, tuner={k: v for k, v in tuner.items() if v is not None}, dtype=dtype_name(dt), qlora=bool(qlora),
        grad_accum=grad_accum, gradient_checkpointing=bool(gradient_checkpointing), choice_weight=choice_weight,
    )
    cfg.validate()
    if not examples:
        raise DataError("no training examples; check --pairs / --labels")
    if dt == torch.float16 and dev.type != "cuda":
        raise ConfigError("fp16 training is for GPUs without bf16 (its loss scaling needs CUDA); on the CPU use "
                          "--dtype bf16 or fp32")
    torch.manual_seed(seed)
    random.seed(seed)

    if base is not None:
        model, tok = base
        if not qlora and next(model.parameters()).device != dev:
            model.to(dev)
    else:
        model, tok = load_base(base_dir, padding_side="right", device=dev, dtype=dt, load_in_4bit=qlora,
                               trust_remote_code=trust_remote_code)
    if qlora:
        from peft import prepare_model_for_kbit_training

        # fp32 norms and output head, inputs that carry gradients: peft's recipe for k-bit bases
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        # non-reentrant: no need for inputs that require grad, and it composes with autocast
        # (transformers 5 renamed the method; a custom-code base may only have the old name)
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.gradient_checkpointing:
        model.config.use_cache = False
    model, method = _build_peft_model(model, method, cfg.tuner, init_adapter)
    cfg.method = method
    enc = Encoder(tok, max_input_len=max_input_len, max_output_len=max_output_len)
    encoded = enc.encode_all(examples)
    held = enc.encode_all(eval_examples or [])
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    schedule = _schedule(encoded, cfg)
    data_hash = examples_hash(examples)
    eval_hash = examples_hash(eval_examples) if eval_examples else None
    fingerprint = {"config": cfg.fingerprint(), "data": data_hash,
                   "init_adapter": str(init_adapter) if init_adapter else None}

    params = [p for p in model.parameters() if p.requires_grad]
    if any(p.dtype != torch.float32 for p in params):  # AdamW's moments and updates want fp32 masters
        for p in params:
            p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    # fp16 overflows without loss scaling; bf16 has fp32's range and needs none
    scaler = torch.amp.GradScaler("cuda") if dt == torch.float16 else None
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
    t_eval = time.monotonic()
    eval_before = evaluate_loss(core, held, pad_id, dtype=dt) if ckpt is None else None
    # Kept free before a deadline: the held-out loss once more (just timed) and saving.
    reserve = 1.5 * (time.monotonic() - t_eval) + 2.0
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
    loop_start, stopped_early, done = time.monotonic(), False, start
    with prog:
        for step in range(start, steps):
            if deadline is not None and step > start:
                now = time.monotonic()
                stop = now + (now - loop_start) / (step - start) + reserve > deadline
                if acc is not None:  # every process stops at the same step, or DDP would hang
                    stop = bool(acc.reduce(torch.tensor(float(stop), device=acc.device), "max") > 0)
                if stop:
                    stopped_early = True  # the next step would not leave time to evaluate and save
                    break
            idx = schedule[step]
            if acc is not None:  # this process's share of the global batch
                idx = idx[acc.process_index :: acc.num_processes] or idx[:1]
            parts = micro_batches(idx, cfg.grad_accum)
            micro = [collate([encoded[i] for i in part], pad_id) for part in parts]
            # each micro-batch's mean loss weighted by its share of the step's reply tokens:
            # the sum is the whole batch's token mean, and so is its gradient
            counts = [int((b["labels"][:, 1:] != -100).sum()) for b in micro]
            total_count = max(1, sum(counts))
            # examples that list candidates, per micro-batch (their choice loss: a mean over the step's)
            chosen = [[encoded[i] for i in part if encoded[i].choices] for part in parts]
            total_chosen = sum(len(c) for c in chosen)
            step_loss = None
            for j, (batch, n) in enumerate(zip(micro, counts)):
                tokens += int(batch["attention_mask"].sum())
                batch = {k: v.to(dev) for k, v in batch.items()}
                last = j == len(micro) - 1
                # DDP: all-reduce the gradients once, after the last micro-batch
                sync = acc.no_sync(model) if acc is not None and not last else contextlib.nullcontext()
                with sync:
                    with _autocast(dev, dt):
                        loss = model(**batch).loss * (n / total_count)
                        if cfg.choice_weight and chosen[j]:
                            loss = loss + cfg.choice_weight * choice_loss(model, chosen[j], pad_id) \
                                * (len(chosen[j]) / total_chosen)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                    elif acc is not None:
                        acc.backward(loss)
                    else:
                        loss.backward()
                step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
            if scaler is not None:
                scaler.unscale_(optimizer)
            if cfg.grad_clip:
                (acc.clip_grad_norm_ if acc is not None else torch.nn.utils.clip_grad_norm_)(params, cfg.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(acc.reduce(step_loss, "mean") if acc is not None else step_loss))
            done = step + 1
            prog.update(task, completed=done, loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
            if done % save_every == 0 and done < steps and main:
                write_json_atomic(out / ".losses.json", {"losses": losses, "eval_loss_before": eval_before})
                _save_checkpoint(out, done, core, optimizer, scheduler, fingerprint)
            if callback is not None:
                callback(done, losses[-1])
    seconds = time.perf_counter() - t0
    eval_loss = evaluate_loss(core, held, pad_id, dtype=dt)
    if acc is not None:
        acc.wait_for_everyone()
    model = core
    model.eval()
    if not main:  # one writer: the main process saves the adapter and the record
        return TrainResult(adapter_dir=out, losses=losses, eval_loss=eval_loss, steps=done,
                           record_path=out / RECORD_NAME, method=method, model=model, stopped_early=stopped_early)
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
        "steps": done,
        "steps_planned": steps,
        "stopped_early": stopped_early,
        "resumed_from": resumed_from,
        "seconds_this_session": round(seconds, 2),
        "cpu_seconds_this_session": round(time.process_time() - cpu0, 2),
        "threads": torch.get_num_threads(),
        "processes": acc.num_processes if acc is not None else 1,
        "hardware": {**describe(dev), "dtype": cfg.dtype, "qlora": cfg.qlora, "grad_accum": cfg.grad_accum,
                     "gradient_checkpointing": cfg.gradient_checkpointing},
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
        adapter_dir=out, losses=losses, eval_loss=eval_loss, steps=done, record_path=out / RECORD_NAME,
        method=method, eval_loss_before=eval_before, resumed_from=resumed_from, tokens=tokens, seconds=seconds,
        device=str(dev), dtype=cfg.dtype, model=model, stopped_early=stopped_early,
    )


def _read_partial_losses(out: Path) -> dict[str, Any]:
    p = out / ".losses.json"
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        return {}


def load_trained(base_dir: str | os.PathLike[str], adapter_dir: str | os.PathLike[str], *, device: Any = None,
                 dtype: Any = None):
    """(peft model, tokenizer) for inference from a base dir and an adapter dir (on the CPU in
    fp32 unless `device` / `dtype` say otherwise)."""
    from peft import PeftModel

    model, tok = load_base(base_dir, device=device, dtype=dtype)
    src = Path(adapter_dir)
    if not (src / "adapter_config.json").exists():
        raise ModelError(f"{str(src)!r} is not a peft adapter directory (no adapter_config.json)")
    model = PeftModel.from_pretrained(model, str(src))
    model.eval()
    return model, tok
