"""CLI of the `tasks` room: shop tasks from a pack, and the ShopBench-style evaluation.

    endcloud tasks generate shop/ -o tasks.jsonl [--logs shop/chats/chats.jsonl] [--per-task 60]
    endcloud tasks check tasks.jsonl --shop shop/
    endcloud eval shopbench development.json [--base B] [--adapter A] [--mc auto|generate|loglik|pmi]
                                             [--rank auto|generate|loglik|pmi] [-o report.json]
    endcloud tasks train tasks.jsonl --shop shop/ -o runs/multitask [--steps 1200] [--replay 0.5] [--polish-steps 300]
    endcloud eval shopbench tasks.jsonl --heldout-only --adapter runs/multitask

`eval` itself is the scoring room's command (`cli/scoring.py`); `register` turns it into a group
whose bare invocation runs that command unchanged (same options, same help) and whose one
subcommand is `shopbench`, so `endcloud eval -o out/` and `endcloud eval shopbench FILE` both work.
"""

from __future__ import annotations

import copy
import inspect
import typing
from pathlib import Path
from typing import List, Optional

import typer

from endcloud.errors import ConfigError

tasks_app = typer.Typer(help="Shop tasks beyond answering (attribute NER, QA, comparison, recommendation, intent, "
                             "sentiment, zh↔en), in ShopBench's format.", no_args_is_help=True)


@tasks_app.command("generate")
def generate(
    pack: Path = typer.Argument(..., help="A shop pack folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the items (JSON lines, ShopBench's fields + response)."),
    logs: List[Path] = typer.Option([], "--logs", help="Chat logs (JSONL, OpenAI messages with `intent` on assistant turns); repeatable."),
    task: List[str] = typer.Option([], "--task", help="Only this task (repeatable; default: every task)."),
    per_task: int = typer.Option(60, "--per-task", help="Items per task (a --heldout share of them held out)."),
    heldout: float = typer.Option(0.25, "--heldout", help="Share of each task's items held out (about products never trained on)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same items."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Who answers product questions: reference (offline) or openai "
                                          "(default: the cloud when ENDCLOUD_CLOUD_* is set, else reference)."),
) -> None:
    """Write instruction items for the shop's tasks, each checked against the pack."""
    from endcloud.cloud import default_teacher
    from endcloud.fileio import read_jsonl
    from endcloud.kb import ShopPack
    from endcloud.tasks.generate import generate_tasks
    from endcloud.tasks.items import write_items

    shop = ShopPack.load(pack)
    rows = [r for p in logs for r in read_jsonl(p)]
    ts = generate_tasks(shop, tasks=task or None, per_task=per_task, heldout=heldout, seed=seed,
                        teacher=default_teacher(shop=pack, name=teacher), logs=rows)
    write_items(out, ts.items)
    typer.echo(f"wrote {out}: {len(ts.items)} items ({len(ts.heldout())} held out)")
    for name, r in ts.report.items():
        extra = f"  skipped: {r['skipped']}" if r.get("skipped") else (f"  dropped {r['dropped']}" if r["dropped"] else "")
        typer.echo(f"  {name:<16} {r['task_type']:<26} train {r['train']:>4}  held out {r['heldout']:>3}{extra}")


@tasks_app.command("check")
def check(
    file: Path = typer.Argument(..., help="Task items (JSON lines)."),
    shop: Path = typer.Option(..., "--shop", help="The shop pack the items were made from."),
) -> int:
    """Run every item's checker against the pack; exit 1 when one fails."""
    from endcloud.kb import ShopPack
    from endcloud.tasks.checks import Checker
    from endcloud.tasks.items import read_items

    report = Checker(ShopPack.load(shop)).check_all(read_items(file))
    failed = 0
    for name, r in sorted(report.items()):
        failed += r["failed"]
        typer.echo(f"{name:<16} checked {r['checked']:>4}  failed {r['failed']:>3}")
        for p in r["problems"]:
            typer.echo(f"    {p}")
    return 1 if failed else 0


@tasks_app.command("train")
def train_cmd(
    file: Path = typer.Argument(..., help="Task items from `endcloud tasks generate` (those not held out, with a response, are trained on)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: the peft adapter + training.json."),
    shop: Optional[Path] = typer.Option(None, "--shop", help="The shop pack: its customers' questions, answered by the teacher and "
                                        "grounded as served, are replayed in the mix so chatting is not forgotten (without it: tasks alone)."),
    replay: float = typer.Option(0.5, "--replay", help="Dialogue share of the mix (with --shop). With the default steps, the "
                                                    "dialogue gets as many examples as 600 steps of chat-only tuning."),
    chat_questions: int = typer.Option(320, "--chat-questions", help="Dialogue questions written from the pack for the replay."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace whose base/ is the model (default $ENDCLOUD_HOME or ./endcloud-work)."),
    base: Optional[Path] = typer.Option(None, "--base", help="A local Hugging Face model folder (default: the workspace's base/, else the shipped shop reader)."),
    init_adapter: Optional[Path] = typer.Option(None, "--init-adapter", help="Continue this adapter (e.g. the shop's chat adapter) instead of a new one."),
    steps: int = typer.Option(1200, "--steps", help="Optimizer steps (docs/benchmarks.md: at 600 steps and replay 0.3 the shop's "
                                                   "dialogue was forgotten; 250 learn little of the tasks)."),
    lr: float = typer.Option(5e-3, "--lr", help="Learning rate (the shipped reader's LoRA learns the tasks at 5e-3, barely at 1e-3)."),
    batch_size: int = typer.Option(8, "--batch-size"),
    r: int = typer.Option(8, "--r", "--lora-r", help="LoRA rank."),
    target_modules: str = typer.Option("all-linear", "--target-modules", help="Layers LoRA adapts: all-linear (the MLP too; "
                                       "docs/benchmarks.md: more tasks learned and less dialogue forgotten than attention alone), "
                                       "or module names, e.g. q_proj,v_proj."),
    polish_steps: int = typer.Option(300, "--polish-steps", help="With --shop: then this many steps on the dialogue alone, at "
                                     "--polish-lr, so the adapter ends on chatting (docs/benchmarks.md: 300 brings its chat level with a "
                                     "chat-only adapter's, 150 left it a hundredth under; 0: none; the mixed adapter is kept in OUT/mix)."),
    polish_lr: float = typer.Option(1e-3, "--polish-lr", help="Learning rate of the dialogue stage."),
    choice_weight: float = typer.Option(1.0, "--choice-weight", help="Weight of the choice loss of multiple-choice, ranking, "
                                        "retrieval and named-entity items (their candidates ranked as they are answered; 0: the language-model loss alone)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Who answers the replayed dialogue: reference or openai (default: the "
                                          "cloud when ENDCLOUD_CLOUD_* is set, else reference)."),
    seed: int = typer.Option(0, "--seed"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
) -> None:
    """Train one LoRA adapter on the shop's tasks, with its dialogue replayed (multi-task tuning)."""
    import torch

    from endcloud.config import Workspace
    from endcloud.end.base import load_tokenizer, renders_late_system
    from endcloud.end.train import train
    from endcloud.tasks.items import read_items
    from endcloud.tasks.mix import chat_set, mix_with_replay

    if polish_steps < 0:
        raise ConfigError(f"--polish-steps must be >= 0, got {polish_steps}")
    if threads:
        torch.set_num_threads(threads)
    items = [it for it in read_items(file) if not it.heldout and it.response]
    if not items:
        raise ConfigError(f"{file} has no items to train on (every one is held out or has no `response`)")
    base_dir = _base_dir(Workspace.resolve(workspace), base)
    examples = [it.to_example() for it in items]
    dialogue = 0
    if shop is not None:
        from endcloud.cloud import default_teacher
        from endcloud.kb import ShopPack

        late = renders_late_system(load_tokenizer(base_dir))
        cs = chat_set(ShopPack.load(shop), default_teacher(shop=shop, name=teacher), n=chat_questions, seed=seed, late=late)
        examples = mix_with_replay(examples, cs.train, replay=replay, seed=seed)
        dialogue = len(examples) - len(items)
    polish = shop is not None and polish_steps > 0
    common = dict(method="lora", batch_size=batch_size, max_input_len=384, max_output_len=96, seed=seed, progress=False,
                  r=r, choice_weight=choice_weight, target_modules=target_modules)
    # Why a last stage on dialogue alone: without it the mixed adapter's chat falls short of a
    # chat-only one's; 300 steps at 1e-3 on the dialogue bring it level or above in facts and Final
    # and keep the tasks well above chance (docs/benchmarks.md, thirteenth and fourteenth passes).
    mixed_res = train(base_dir, examples, out / "mix" if polish else out, steps=steps, lr=lr, init_adapter=init_adapter,
                      **common)
    res = train(base_dir, cs.train, out, steps=polish_steps, lr=polish_lr, init_adapter=mixed_res.adapter_dir,
                **common) if polish else mixed_res
    chosen = sum(1 for e in examples if e.choices)
    typer.echo(f"multi-task adapter saved to {res.adapter_dir}: {mixed_res.steps} steps on {len(items)} task items "
               f"({chosen} ranked by the choice loss) + {dialogue} dialogue examples; loss {mixed_res.losses[0]:.3f} -> "
               f"{mixed_res.losses[-1]:.3f}"
               + (f"; then {res.steps} steps on the dialogue alone (loss {res.losses[-1]:.3f})" if polish else "")
               + f"; score it: endcloud eval shopbench {file} --heldout-only --adapter {res.adapter_dir}")


def _base_dir(ws, base: Optional[Path]) -> Path:
    """--base, else the workspace's base/, else the shipped shop reader."""
    from endcloud.end.reader import reader_base

    if base is None and not (ws.base / "config.json").exists() and reader_base() is not None:
        return reader_base()
    return ws.find_base(base)


def shopbench(
    file: Path = typer.Argument(..., help="Questions in ShopBench's format (the KDD Cup 2024 starter kit's development.json, "
                                          "JSON lines or one array), or a task set from `endcloud tasks generate`."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace whose base/ is the model (default $ENDCLOUD_HOME or ./endcloud-work)."),
    base: Optional[Path] = typer.Option(None, "--base", help="A local Hugging Face model folder (default: the workspace's base/, else the shipped shop reader)."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="A peft adapter folder, or the workspace's NAME / NAME/vN (default: none, the base alone)."),
    mc: str = typer.Option("auto", "--mc", help="Multiple choice: generate (the reply's first character), loglik (the likeliest option), "
                                               "pmi (the option the question makes likelier most), auto (generate; loglik where the reply is no option)."),
    rank: str = typer.Option("auto", "--rank", help="Ranking and retrieval: generate (the numbers in the reply), loglik (the listed "
                                                   "candidates ranked by their log-likelihood as the reply; retrieval: the top 3), "
                                                   "pmi (ranked by how much the question raises that), auto (generate; loglik where the reply is no valid ranking/selection of them)."),
    ner: str = typer.Option("auto", "--ner", help="Named entities: generate (the reply's comma-separated spans), loglik (the likeliest "
                                                 "run of up to 4 words of the question's text as the reply), pmi, auto (generate; "
                                                 "loglik where a reply's span is not in the text)."),
    task: List[str] = typer.Option([], "--task", help="Only this task_name (repeatable)."),
    heldout_only: bool = typer.Option(False, "--heldout-only", help="Only items marked heldout (a generated task set's evaluation share)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N questions (after the filters)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Reply budget of generation questions."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the report (scores, chance levels, samples) as JSON here."),
) -> None:
    """Score a model on ShopBench-format questions: accuracy, hit@3, NDCG, micro-F1, ROUGE-L / similarity, with chance levels."""
    from endcloud.config import Workspace
    from endcloud.fileio import write_json_atomic
    from endcloud.tasks.items import read_items
    from endcloud.tasks.shopbench import MODES, HFTaskModel, run_shopbench

    for flag, mode in (("--mc", mc), ("--rank", rank), ("--ner", ner)):
        if mode not in MODES:
            raise ConfigError(f"{flag} must be one of {', '.join(MODES)}, got {mode!r}")
    items = read_items(file)
    if task:
        items = [it for it in items if it.task_name in set(task)]
    if heldout_only:
        items = [it for it in items if it.heldout]
    if limit is not None:
        items = items[:limit]
    if not items:
        raise ConfigError(f"no questions left in {file} after --task/--heldout-only/--limit")
    ws = Workspace.resolve(workspace)
    base_dir = _base_dir(ws, base)
    adapter_dir = ws.find_adapter(adapter)[0] if adapter else None
    if adapter and adapter_dir is None:
        raise ConfigError(f"--adapter {adapter!r} is neither a peft adapter folder nor an adapter of {ws.root}")
    model = HFTaskModel.load(base_dir, adapter_dir, name=str(adapter_dir or base_dir))
    report = run_shopbench(items, model, mc=mc, rank=rank, ner=ner, max_new_tokens=max_new_tokens)
    for line in report.lines():
        typer.echo(line)
    if out is not None:
        write_json_atomic(out, report.to_json())
        typer.echo(f"wrote {out}")


def _eval_group(app: typer.Typer) -> None:
    """Make `eval` a group: bare, it is the scoring room's command; `eval shopbench` is ours."""
    info = next((c for c in app.registered_commands if c.name == "eval"), None)
    group = typer.Typer(no_args_is_help=False, invoke_without_command=True)
    if info is not None:
        original = info.callback
        app.registered_commands.remove(info)

        sig = inspect.signature(original)
        hints = typing.get_type_hints(original)  # the scoring module's annotations are strings (PEP 563)
        sig = sig.replace(parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()])
        # A group's options are parsed before its subcommand: a required option of `eval` would
        # make `eval shopbench FILE` fail, so it is optional here and required when eval runs.
        required: dict[str, str] = {}
        params = []
        for prm in sig.parameters.values():
            opt = prm.default
            if getattr(opt, "default", None) is Ellipsis:
                opt = copy.copy(opt)
                opt.default = None
                required[prm.name] = (getattr(opt, "param_decls", None) or (f"--{prm.name}",))[0]
                prm = prm.replace(default=opt, annotation=Optional[prm.annotation])
            params.append(prm)

        def run_original(ctx: typer.Context, **kw):
            if ctx.invoked_subcommand is not None:
                return None
            missing = [flag for name, flag in required.items() if kw.get(name) is None]
            if missing:
                raise typer.BadParameter("required unless a subcommand is given", ctx=ctx, param_hint=missing)
            return original(**kw)

        ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        run_original.__signature__ = sig.replace(parameters=[ctx_param, *params])
        run_original.__doc__ = (original.__doc__ or "").strip() + "  Subcommand: `eval shopbench FILE` (ShopBench's format)."
        group.callback(invoke_without_command=True)(run_original)
    group.command("shopbench")(shopbench)
    first = ((info.callback.__doc__ or "").strip().splitlines() or [""])[0] if info is not None else ""
    app.add_typer(group, name="eval", help=(first + " " if first else "") + "`eval shopbench FILE`: ShopBench-format questions.")


def register(app: typer.Typer) -> None:
    app.add_typer(tasks_app, name="tasks")
    _eval_group(app)
