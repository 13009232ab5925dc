"""CLI commands of the `end` room: `endcloud pretrain`, `endcloud train`, `endcloud adapters …`.

    endcloud pretrain workspace/corpus/pairs.jsonl workspace/shop -o workspace/base
    endcloud train --base workspace/base --pairs workspace/corpus/pairs.jsonl \\
        --labels workspace/labels/labels.jsonl --mix 0.5 --method lora -o out/lora --publish shop
    endcloud adapters list | activate NAME VERSION | rollback NAME
    endcloud adapters canary NAME vN --share 5% | ab NAME vN vM --days 3 | stop NAME | status   (cli/canary.py)

Heavy libraries (torch, transformers, peft) are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from endcloud.config import Workspace
from endcloud.end.device import DEVICE_HELP, DTYPE_HELP, TRUST_HELP, apply_flags
from endcloud.paper import PAPER

adapters_app = typer.Typer(
    name="adapters", help="Versioned adapters: list, activate, roll back; canary and A/B tests on live traffic.",
    no_args_is_help=True
)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def pretrain_cmd(
    ctx: typer.Context,
    inputs: Optional[List[Path]] = typer.Argument(None, help="Shop text: pairs/chats/labels/FAQ JSONL, .txt/.md/.csv files, or folders of them (not with --recipe reader)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: a Hugging Face model directory (+ pretrain.json)."),
    vocab_size: int = typer.Option(4000, help="Tokenizer vocabulary size (byte-level BPE, zh + en)."),
    hidden: int = typer.Option(192, help="Model width (hidden size)."),
    layers: int = typer.Option(3, help="Number of transformer layers."),
    heads: int = typer.Option(6, help="Attention heads (hidden must be divisible by it)."),
    kv_heads: int = typer.Option(2, help="Key/value heads (grouped-query attention)."),
    intermediate: int = typer.Option(512, help="MLP inner width."),
    seq_len: int = typer.Option(256, help="Tokens per packed training row."),
    batch_size: int = typer.Option(8, help="Rows per step."),
    steps: int = typer.Option(200, help="Optimizer steps (demo: ~2 min on 2 quiet cores; see also --max-minutes)."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (warmup, then cosine decay to 10%)."),
    eval_fraction: float = typer.Option(0.05, help="Share of documents held out for loss/perplexity."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Time budget of the whole command (reading, tokenizer, "
                                                "training, evaluation, saving): training stops early to end within it (finishing "
                                                "the LR decay) and the summary says so."),
    seed: int = typer.Option(0, help="Random seed."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's choice)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="'reader': build the shop reader (the shipped default base) "
                                         "from generated shops; --steps, --seed and the sizes override the recipe's."),
    shops: Optional[int] = typer.Option(None, "--shops", help="With --recipe reader: generated shops per language."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto: bf16 autocast on GPUs that have it, else fp32 (weights stay fp32)."),
) -> None:
    """Train the embedded default base from scratch: a tokenizer and a small Qwen2 on the shop's text,
    or (--recipe reader) the shop reader, which answers from the knowledge in its prompt."""
    import time

    started = time.monotonic()  # --max-minutes counts from here, imports included
    import torch

    from endcloud.end.pretrain import pretrain

    _quiet_transformers()
    apply_flags(device, dtype)
    if threads:
        torch.set_num_threads(threads)
    if recipe is not None:
        if recipe != "reader":
            raise typer.BadParameter(f"unknown recipe {recipe!r}; the one recipe is 'reader'", param_hint="--recipe")
        from endcloud.shopreader import ReaderRecipe, build_reader

        # typer's own context (it vendors click: the `click` package's current context is not this one)
        given = {name: ctx.params[name] for name in ("steps", "seed", "vocab_size", "hidden", "layers", "heads", "kv_heads",
                                                    "intermediate", "batch_size", "lr")
                 if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}
        if shops is not None:
            given["shops_per_lang"] = shops
        rec = build_reader(ReaderRecipe(**given), out, log=(lambda m: None) if quiet else typer.echo)
        typer.echo(f"shop reader saved to {out}: held-out facts right {rec['heldout']['facts_right']:.3f} "
                   f"after {rec['recipe']['steps']} steps (reply loss {rec['final_reply_loss']}), sha256 {rec['sha256'][:12]}")
        return
    if not inputs:
        raise typer.BadParameter("give the shop text to train on (or --recipe reader)", param_hint="INPUTS")
    r = pretrain(
        [str(i) for i in inputs], out, progress=not quiet, vocab_size=vocab_size, hidden=hidden, layers=layers,
        heads=heads, kv_heads=kv_heads, intermediate=intermediate, seq_len=seq_len, batch_size=batch_size,
        steps=steps, lr=lr, eval_fraction=eval_fraction, seed=seed,
        max_seconds=max_minutes * 60 if max_minutes is not None else None, started_at=started,
    )
    typer.echo(
        f"base saved to {r.out_dir}: {r.params / 1e6:.2f}M params, {r.steps} steps, {r.tokens} tokens in {r.seconds:.0f}s; "
        f"held-out loss {r.eval_loss:.3f}, perplexity {r.eval_ppl:.1f} (uniform over the vocabulary: {r.uniform_ppl:.0f})"
    )
    for line in r.sources:
        typer.echo(f"  read {line['path']}: {line['read_as']}, {line['documents']:,} documents, {line['utterances']:,} utterances")
    if r.stopped_early:
        typer.echo(f"stopped early: {r.steps} of {r.steps_planned} steps, to end within --max-minutes {max_minutes:g}")
    for s in r.samples:
        typer.echo(f"  Q: {s['query']}\n  A: {s['reply']}")


def _distributed_accelerator():
    """An `accelerate.Accelerator` when launched by `accelerate launch` / `torchrun` with more
    than one process (WORLD_SIZE > 1), else None: a plain run keeps the one-process loop."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return None
    import torch
    from accelerate import Accelerator

    # accelerate only goes multi-process on CPUs when asked to (cpu=True); GPUs need no hint.
    return Accelerator(cpu=not torch.cuda.is_available())


def train_cmd(
    base: Path = typer.Option(..., "--base", help="Local Hugging Face causal-LM directory (or the one `endcloud pretrain` made)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Natural pairs JSONL (Pair.to_json lines)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Distilled labels JSONL (Label.to_json lines)."),
    mix: Optional[float] = typer.Option(None, "--mix", help="Share of distilled labels in the training set, 0..1 (default 0.5 with both inputs)."),
    max_reply_repeats: int = typer.Option(1, "--max-reply-repeats", help="Keep at most N natural pairs per identical reply: agents' stock phrases otherwise teach a small model to say them everywhere (real logs: top reply 15.5 % -> 6 % of replies, Sim and BLEU up; docs/benchmarks.md). 0: keep all."),
    method: str = typer.Option("lora", "--method", "-m", help="Tuner: lora | prefix | ptuning-v2."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: the peft adapter + training.json (checkpoints while training)."),
    steps: int = typer.Option(200, help="Optimizer steps (see also --max-minutes)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Time budget of the whole command (loading, training, "
                                                "held-out loss, saving): training stops early to end within it, saves the adapter "
                                                "and says so."),
    lr: float = typer.Option(PAPER.learning_rate, help="Learning rate (Table IV: 5e-5; a from-scratch base wants ~1e-3 to 1e-2)."),
    batch_size: int = typer.Option(PAPER.batch_size, help="Examples per step (Table IV: 1); batches are length-bucketed."),
    max_input_len: int = typer.Option(PAPER.max_input_len, help="Prompt tokens kept (the most recent context)."),
    max_output_len: int = typer.Option(PAPER.max_output_len, help="Reply tokens kept."),
    r: int = typer.Option(PAPER.lora_r, "--r", "--lora-r", help="LoRA rank (`--lora-r` under torchrun, whose parser takes `--r` for its own `--rdzv-*`)."),
    alpha: float = typer.Option(PAPER.lora_alpha, "--alpha", help="LoRA alpha."),
    dropout: float = typer.Option(PAPER.lora_dropout, "--dropout", help="LoRA dropout."),
    target_modules: Optional[str] = typer.Option(None, "--target-modules", help="LoRA target module names, comma-separated (default: attention projections)."),
    virtual_tokens: int = typer.Option(PAPER.num_virtual_tokens, "--virtual-tokens", help="Prefix / P-tuning v2 virtual tokens."),
    prefix_hidden: int = typer.Option(512, "--prefix-hidden", help="Prefix-tuning reparameterisation MLP width."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt put before every conversation."),
    eval_fraction: float = typer.Option(0.05, "--eval-fraction", help="Share of examples held out for the held-out loss."),
    eval_pairs: Optional[Path] = typer.Option(None, "--eval-pairs", help="Held-out pairs JSONL (instead of --eval-fraction)."),
    save_every: int = typer.Option(50, help="Checkpoint every N steps (a killed run resumes from the latest)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the latest checkpoint in --out."),
    init_adapter: Optional[Path] = typer.Option(None, "--init-adapter", help="Continue training this adapter instead of a new one."),
    seed: int = typer.Option(0, help="Random seed (data order, init, dropout)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's choice)."),
    publish: Optional[str] = typer.Option(None, "--publish", help="Publish the adapter into the registry under this name (as a candidate)."),
    activate: bool = typer.Option(False, "--activate", help="With --publish: also make the new version active."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace root (default $ENDCLOUD_HOME or ./endcloud-work)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, "--dtype", help=DTYPE_HELP + " Adapter weights always train in fp32."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Cut each step's --batch-size examples into this many micro-batches: the same step in less memory."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Recompute activations in the backward pass (less memory, slower; LoRA only)."),
    qlora: bool = typer.Option(False, "--qlora", help="LoRA on a 4-bit NF4 base (needs a CUDA GPU and pip install 'endcloud[qlora]')."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
) -> None:
    """Fine-tune an adapter (LoRA, prefix, P-tuning v2) on natural pairs + distilled labels."""
    import time

    started = time.monotonic()  # --max-minutes counts from here
    import torch

    from endcloud.end.data import Example, load_pairs, read_examples, split_holdout
    from endcloud.end.train import train
    from endcloud.end.tuners import TUNERS
    from endcloud.errors import ConfigError

    TUNERS.get(method)  # fail on a bad name before loading anything
    if max_minutes is not None and not max_minutes > 0:
        raise ConfigError(f"--max-minutes must be a positive number, got {max_minutes!r}")
    if pairs is None and labels is None:
        raise ConfigError("nothing to train on: pass --pairs PATH and/or --labels PATH")
    _quiet_transformers()
    apply_flags(device, dtype, trust_remote_code)
    if threads:
        torch.set_num_threads(threads)
    if max_reply_repeats < 0:
        raise ConfigError(f"--max-reply-repeats must be >= 0, got {max_reply_repeats}")
    examples = read_examples(pairs, labels, mix=mix, system=system, seed=seed, max_reply_repeats=max_reply_repeats)
    if eval_pairs is not None:
        held = [Example.from_pair(p, system=system) for p in load_pairs(eval_pairs)]
    else:
        examples, held = split_holdout(examples, eval_fraction, seed=seed)
        held = held[:200]
    accelerator = _distributed_accelerator()
    res = train(
        base, examples, out, method=method, steps=steps, lr=lr, batch_size=batch_size, max_input_len=max_input_len,
        max_output_len=max_output_len, init_adapter=init_adapter, eval_examples=held, resume=resume, seed=seed,
        progress=not quiet, save_every=save_every, r=r, alpha=alpha, dropout=dropout, target_modules=target_modules,
        num_virtual_tokens=virtual_tokens, encoder_hidden_size=prefix_hidden if method == "prefix" else None,
        accelerator=accelerator, grad_accum=grad_accum, gradient_checkpointing=gradient_checkpointing, qlora=qlora,
        deadline=started + max_minutes * 60 if max_minutes is not None else None,
    )
    if accelerator is not None and not accelerator.is_main_process:
        return  # the main process reports and publishes; the others only trained their shard
    ev = f"{res.eval_loss:.3f}" if res.eval_loss is not None else "n/a"
    before = f"{res.eval_loss_before:.3f}" if res.eval_loss_before is not None else "n/a"
    resumed = f" (resumed from step {res.resumed_from})" if res.resumed_from else ""
    typer.echo(f"{res.method} adapter saved to {res.adapter_dir}{resumed}: {res.steps} steps on {res.device} ({res.dtype}), "
               f"held-out loss {before} -> {ev}; record {res.record_path}")
    if res.stopped_early:
        typer.echo(f"stopped early: {res.steps} of {steps} steps, to end within --max-minutes {max_minutes:g}")
    if publish:
        from endcloud.end.adapters import AdapterRegistry

        reg = AdapterRegistry(Workspace.resolve(workspace).adapters)
        parent = None
        if init_adapter is not None:
            parent = json.loads((Path(init_adapter) / "manifest.json").read_text()).get("version") \
                if (Path(init_adapter) / "manifest.json").exists() else None
        v = reg.publish(publish, out, manifest={"base": str(base.resolve())}, parent=parent)
        typer.echo(f"published {publish} {v} (candidate)")
        if activate:
            reg.activate(publish, v)
            typer.echo(f"activated {publish} {v}")


def adapters_list(
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Only this adapter name."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace root (default $ENDCLOUD_HOME or ./endcloud-work)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows instead of a table."),
) -> None:
    """List adapter versions with parent, method, status and held-out loss."""
    from endcloud.end.adapters import AdapterRegistry

    rows = AdapterRegistry(Workspace.resolve(workspace).adapters).list(name)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("no adapters yet; train one with `endcloud train ... --publish NAME`")
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("name", "version", "parent", "method", "status", "eval loss", "created")
    for r in rows:
        ev = r["metrics"].get("eval_loss")
        t.add_row(r["name"], r["version"], r["parent"] or "-", r["method"] or "-", r["status"],
                  f"{ev:.3f}" if isinstance(ev, (int, float)) else "-", r["created_at"] or "-")
    Console().print(t)


def adapters_activate(
    name: str = typer.Argument(..., help="Adapter name."),
    version: str = typer.Argument(..., help="Version to make active, e.g. v3."),
    force: bool = typer.Option(False, "--force", help="Activate even a version the gate rejected."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace root (default $ENDCLOUD_HOME or ./endcloud-work)."),
) -> None:
    """Make VERSION the active adapter of NAME (atomic pointer switch)."""
    from endcloud.end.adapters import AdapterRegistry

    reg = AdapterRegistry(Workspace.resolve(workspace).adapters)
    p = reg.activate(name, version, force=force)
    typer.echo(f"{name}: active -> {p.name}")


def adapters_rollback(
    name: str = typer.Argument(..., help="Adapter name."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace root (default $ENDCLOUD_HOME or ./endcloud-work)."),
) -> None:
    """Re-activate the version that was active before the current one."""
    from endcloud.end.adapters import AdapterRegistry

    v = AdapterRegistry(Workspace.resolve(workspace).adapters).rollback(name)
    typer.echo(f"{name}: rolled back, active -> {v}")


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.command("pretrain")(pretrain_cmd)
    app.command("train")(train_cmd)
    adapters_app.command("list")(adapters_list)
    adapters_app.command("activate")(adapters_activate)
    adapters_app.command("rollback")(adapters_rollback)
    from endcloud.cli import canary  # canary, ab, stop, status: adapters tried on live traffic

    canary.register(adapters_app)
    app.add_typer(adapters_app, name="adapters")
