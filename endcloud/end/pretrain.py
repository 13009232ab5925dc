"""`endcloud pretrain`: the embedded default end model, trained from scratch on a shop's text.

A shop without a base model of its own gets one built here: a zh+en byte-level BPE
tokenizer (`endcloud.end.tokenizer`) and a small Qwen2-architecture causal LM trained on
every turn of the shop's chats plus its knowledge text, saved as a normal Hugging Face
model directory — so every later step (tuners, training, generation, serving) runs the
same code path a downloaded Qwen2.5 would.

Dialogues are rendered with the ChatML template before training, so the base already knows
the turn format the tuners and the engine use. Documents are packed end to end into rows of
`seq_len` tokens (separated by <|endoftext|>): for plain causal-LM pretraining, attending
across a document boundary is harmless and no compute is spent on padding.

    pretrain(["workspace/corpus/pairs.jsonl", "workspace/shop"], "workspace/base")
    -> base/ (config.json, model.safetensors, tokenizer files) + pretrain.json
       (held-out loss and perplexity vs the uniform baseline, greedy samples)

Every utterance of the logs is read, not only those that became pairs: a raw chat log in
a foreign format (ECD, JDDC, CSV; known by its content, whatever its name) goes through
`endcloud corpus prepare`'s pipeline (`endcloud.corpus.log_sessions`: the same cleaning and
redaction as the pairs) and is read session by session; `pairs.jsonl` is read as the
`sessions.jsonl` that `corpus prepare` writes beside it (pairs keep a window of context
and nothing after a session's last agent reply: 26 % of the JDDC sample's utterances), or,
without one, its sessions are stitched back together from the pairs' turn numbers.
Messages JSONL (the project's chats contract: a shop's chats, sessions.jsonl) is read as it is.

`max_seconds` bounds the whole call (reading, tokenizer, training, evaluation, saving; the
command passes its own start time): training stops early, keeping time for the rest, and
the result says so (`stopped_early`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

from endcloud.errors import ConfigError, DataError
from endcloud.fileio import read_jsonl, write_json_atomic

# A document is plain text or a dialogue (OpenAI messages).
Document = Union[str, list[dict[str, str]]]
TEXT_SUFFIXES = {".txt", ".md", ".csv", ".jsonl", ".json"}
RECORD_NAME = "pretrain.json"


@dataclass
class PretrainConfig:
    """Sizes and schedule of the from-scratch base (the demo defaults fit ~2 min on 2 cores)."""

    vocab_size: int = 4000
    hidden: int = 192
    layers: int = 3
    heads: int = 6
    kv_heads: int = 2
    intermediate: int = 512
    seq_len: int = 256
    batch_size: int = 8
    steps: int = 200
    lr: float = 2e-3
    warmup: int = 20
    eval_fraction: float = 0.05
    seed: int = 0
    max_seconds: float | None = None
    """Time budget of the whole call, in seconds (None: run every step)."""

    def validate(self) -> None:
        for name, flag in (("vocab_size", "--vocab-size"), ("hidden", "--hidden"), ("layers", "--layers"),
                           ("heads", "--heads"), ("kv_heads", "--kv-heads"), ("intermediate", "--intermediate"),
                           ("seq_len", "--seq-len"), ("batch_size", "--batch-size"), ("steps", "--steps")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}; change {flag}")
        if self.hidden % self.heads:
            raise ConfigError(f"--hidden {self.hidden} must be divisible by --heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ConfigError(f"--heads {self.heads} must be divisible by --kv-heads {self.kv_heads}")
        if (self.hidden // self.heads) % 2:
            raise ConfigError(f"head size hidden/heads = {self.hidden // self.heads} must be even (rotary); change --heads")
        if self.vocab_size < 300:
            raise ConfigError(f"--vocab-size must be at least 300 (256 bytes + specials), got {self.vocab_size!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr!r}; change --lr")
        if not 0.0 < self.eval_fraction < 0.5:
            raise ConfigError(f"held-out fraction must be in (0, 0.5), got {self.eval_fraction!r}; change --eval-fraction")


@dataclass
class PretrainResult:
    out_dir: Path
    train_loss: float
    eval_loss: float
    eval_ppl: float
    uniform_ppl: float
    steps: int
    tokens: int
    params: int
    seconds: float
    samples: list[dict[str, str]] = field(default_factory=list)
    record_path: Path | None = None
    steps_planned: int = 0
    stopped_early: bool = False
    """True when `max_seconds` ended training before `steps_planned`."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """What was read from each input (file, how, documents, utterances)."""


# ---- reading a shop's text ------------------------------------------------------------
def _doc_from_row(row: dict[str, Any]) -> tuple[str | None, Document | None]:
    """(session key or None, document) for one JSONL row of any format we know."""
    if isinstance(row.get("messages"), list):
        msgs = [{"role": str(m.get("role", "user")), "content": str(m.get("content", m.get("text", "")))}
                for m in row["messages"] if isinstance(m, dict)]
        return None, [m for m in msgs if m["content"]]
    if "query" in row and ("response" in row or "label" in row):  # a Pair or a Label
        ctx = [{"role": t.get("role", "user"), "content": t.get("text", t.get("content", ""))} for t in row.get("context") or []]
        reply = row.get("response", row.get("label", ""))
        msgs = ctx + [{"role": "user", "content": row["query"]}, {"role": "assistant", "content": reply}]
        return (str(row["session"]) if row.get("session") else None), [m for m in msgs if m["content"]]
    if "question" in row and "answer" in row:  # faq.jsonl
        return None, [{"role": "user", "content": str(row["question"])}, {"role": "assistant", "content": str(row["answer"])}]
    if isinstance(row.get("text"), str):
        return None, row["text"]
    return None, None


_PAIR_ID = re.compile(r":(\d+)$")


def _stitch(rows: list[dict[str, Any]]) -> list[list[dict[str, str]]] | None:
    """The sessions of prepared pairs put back together by turn number (a pair's id ends in
    its response's turn; its context and query are the turns just before), or None when
    the rows do not carry turn numbers."""
    sessions: dict[str, dict[int, dict[str, str]]] = {}
    for row in rows:
        m = _PAIR_ID.search(str(row.get("id", "")))
        if m is None or not row.get("session") or "response" not in row:
            return None
        i = int(m.group(1))
        context = row.get("context") or []
        turns = sessions.setdefault(str(row["session"]), {})
        lo = i - 1 - len(context)
        for k, t in enumerate(context):
            turns.setdefault(lo + k, {"role": t.get("role", "user"), "content": t.get("text", t.get("content", ""))})
        turns[i - 1] = {"role": "user", "content": str(row["query"])}
        turns[i] = {"role": "assistant", "content": str(row["response"])}
    return [[t for _, t in sorted(turns.items()) if t["content"]] for turns in sessions.values()]


def _read_jsonl_docs(path: Path) -> list[Document]:
    rows = list(read_jsonl(path))
    pairs = [r for r in rows if "query" in r and "response" in r]
    stitched = _stitch(pairs) if pairs else None
    docs: list[Document] = []
    # Without turn numbers, pairs repeat their session's earlier turns as context: keep the longest per session.
    by_session: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if stitched is not None and "query" in row and "response" in row:
            continue
        key, doc = _doc_from_row(row)
        if not doc:
            continue
        if key is not None and isinstance(doc, list):
            if len(doc) > len(by_session.get(key, [])):
                by_session[key] = doc
        else:
            docs.append(doc)
    return docs + list(by_session.values()) + (stitched or [])


def _utterances(docs: Sequence[Document]) -> int:
    return sum(len(d) if isinstance(d, list) else 1 for d in docs)


def _read_file(path: Path, sources: list[dict[str, Any]] | None = None) -> list[Document]:
    """The documents of one file, judged by its content (see the module docstring)."""
    from endcloud.corpus import file_kind, log_sessions

    kind = file_kind(path)
    how = "text"
    if kind == "pairs" and path.name != "sessions.jsonl" and all(
            (path.parent / f).exists() for f in ("sessions.jsonl", "report.json", "eval.jsonl")):
        # A `corpus prepare` output: it wrote every utterance of the same sessions beside the pairs.
        path, how = path.parent / "sessions.jsonl", "sessions.jsonl beside the pairs (every utterance)"
        docs = _read_jsonl_docs(path)
    elif kind == "pairs":
        how = "pairs (sessions stitched by turn number) or labels"
        docs = _read_jsonl_docs(path)
    elif kind == "chats" and _is_jsonl(path, messages=True):
        how = "messages JSONL"
        docs = _read_jsonl_docs(path)
    elif kind == "chats":
        how = "chat log through the corpus pipeline (cleaned, redacted)"
        docs = [[{"role": m["role"], "content": m["content"]} for m in s["messages"]] for s in log_sessions([path])]
    elif _is_jsonl(path):
        docs = _read_jsonl_docs(path)
        how = "JSONL"
    else:
        docs = _read_text(path)
    if sources is not None:
        sources.append({"path": str(path), "read_as": how, "documents": len(docs), "utterances": _utterances(docs)})
    return docs


def _is_chat_log(path: Path) -> bool:
    """An extension-less file that is a chat log (the official ECD files have no extension)."""
    from endcloud.corpus import file_kind

    try:
        return file_kind(path) == "chats"
    except DataError:  # binary, unreadable
        return False


def _is_jsonl(path: Path, *, messages: bool = False) -> bool:
    """Whether the first non-blank line is a JSON object (with `messages`: an OpenAI-messages row;
    ShareGPT / Alpaca rows go through the corpus pipeline like any other log)."""
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                if not messages:
                    return line.lstrip().startswith(b"{")
                try:
                    return isinstance(json.loads(line).get("messages"), list)
                except (ValueError, AttributeError):
                    return False
    return False


def _read_text(path: Path) -> list[Document]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text; pass pairs/chats JSONL or plain text files", path=str(path)) from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return ["，".join(f"{k}: {v}" for k, v in r.items() if k and v) for r in rows]
    paras = [p.strip() for p in text.split("\n\n")]
    return [p for p in paras if p]


def _skip_in_folder(f: Path) -> bool:
    """Files a folder walk leaves out: held-out sets (never pretrain on eval data), order
    tables (customer records, no language to learn), a JDDC copy of chats.jsonl, and of a
    `corpus prepare` output its report and the pairs.jsonl beside sessions.jsonl (the same
    sessions, whole)."""
    name = f.name.lower()
    if name.startswith(("eval", "test", "heldout", "orders")) or f.name.startswith("."):
        return True
    if name == "pairs.jsonl" and (f.parent / "sessions.jsonl").exists():
        return True
    if name in ("report.json", "report.txt") and (f.parent / "pairs.jsonl").exists():
        return True  # `corpus prepare`'s counts, not shop text
    return f.suffix.lower() == ".txt" and (f.parent / "chats.jsonl").exists()


def read_corpus(inputs: Sequence[str | os.PathLike[str]], sources: list[dict[str, Any]] | None = None) -> list[Document]:
    """Documents from files or folders: pairs/chats/labels/FAQ JSONL, chat logs in any format
    `corpus prepare` reads, plain text, markdown, CSV. `sources`, when given, gets one entry
    per file read (how, documents, utterances).

    In a folder, eval*/test*/orders* files, a JDDC copy of chats.jsonl and a pairs.jsonl
    beside its sessions.jsonl are skipped."""
    docs: list[Document] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not _skip_in_folder(f)
                           and (f.suffix.lower() in TEXT_SUFFIXES or (not f.suffix and _is_chat_log(f))))
            if not files:
                raise DataError(f"no text files ({', '.join(sorted(TEXT_SUFFIXES))}) under this folder", path=str(p))
            for f in files:
                docs.extend(_read_file(f, sources))
        elif p.is_file():
            docs.extend(_read_file(p, sources))
        else:
            raise DataError("input not found; pass pairs/chats JSONL, text files or a shop folder", path=str(p))
    if not docs:
        raise DataError(f"no text found in {[str(i) for i in inputs]}")
    return docs


def _texts(docs: Iterable[Document]) -> Iterable[str]:
    for d in docs:
        if isinstance(d, str):
            yield d
        else:
            for m in d:
                yield m["content"]


def _is_held_out(doc: Document, fraction: float, seed: int) -> bool:
    key = doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False)
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def _encode_stream(tok, docs: Sequence[Document]) -> list[int]:
    sep = tok.convert_tokens_to_ids("<|endoftext|>")
    rendered = [d if isinstance(d, str) else tok.apply_chat_template(d, tokenize=False) for d in docs]
    out: list[int] = []
    for ids in tok(rendered, add_special_tokens=False)["input_ids"]:
        out.extend(ids)
        out.append(sep)
    return out


def _rows(stream: list[int], seq_len: int):
    import torch

    n = len(stream) // seq_len
    if n == 0:
        return torch.tensor([stream], dtype=torch.long) if stream else torch.zeros((0, seq_len), dtype=torch.long)
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def _eval_loss(model, rows, batch_size: int) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    dev = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            x = rows[i : i + batch_size].to(dev)
            out = model(input_ids=x, labels=x)
            k = x.numel() - x.size(0)
            total += float(out.loss) * k
            count += k
    model.train()
    return total / max(1, count)


def _samples(model, tok, docs: Sequence[Document], n: int = 3, max_new_tokens: int = 40) -> list[dict[str, str]]:
    """Greedy replies to the first customer turn of a few held-out dialogues."""
    import torch

    model.eval()
    out = []
    for d in [d for d in docs if isinstance(d, list) and d and d[0]["role"] == "user"][:n]:
        prompt = tok.apply_chat_template(d[:1], tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)
        reply = tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        ref = d[1]["content"] if len(d) > 1 else ""
        out.append({"query": d[0]["content"], "reply": reply.strip(), "reference": ref})
    return out


def pretrain(
    inputs: Sequence[str | os.PathLike[str]] | Sequence[Document],
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    device: Any = None,
    dtype: Any = None,
    started_at: float | None = None,
    **sizes: Any,
) -> PretrainResult:
    """Train tokenizer + small Qwen2 from scratch on a shop's text; save an HF model dir at `out_dir`.

    `inputs` are paths (files/folders, see `read_corpus`) or already-read documents
    (strings, or message lists for dialogues). `sizes` are `PretrainConfig` fields. `device` /
    `dtype`: `endcloud.end.device` (None: $ENDCLOUD_DEVICE / $ENDCLOUD_DTYPE, else auto); weights
    stay fp32 and a bf16 dtype runs the forward under autocast (fp16 would need loss scaling,
    which this loop does not do, so it trains in fp32). `max_seconds` counts from `started_at`
    (a `time.monotonic()` value; default: now), so a command passes its own start and the
    budget covers everything it does."""
    started_at = time.monotonic() if started_at is None else started_at
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from endcloud.end.tokenizer import train_tokenizer
    from endcloud.end.train import _versions

    unknown = sorted(set(sizes) - set(PretrainConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown pretrain settings {unknown}; valid: {sorted(PretrainConfig.__dataclass_fields__)}")
    cfg = PretrainConfig(**{k: v for k, v in sizes.items() if v is not None})
    cfg.validate()
    if cfg.max_seconds is not None and not (cfg.max_seconds > 0 and math.isfinite(cfg.max_seconds)):
        raise ConfigError(f"the time budget must be a positive number of seconds, got {cfg.max_seconds!r}; change --max-minutes")
    deadline = started_at + cfg.max_seconds if cfg.max_seconds is not None else None
    sources: list[dict[str, Any]] = []
    if inputs and all(isinstance(i, (str, os.PathLike)) and Path(i).exists() for i in inputs):
        docs = read_corpus(inputs, sources)  # type: ignore[arg-type]
    else:
        docs = list(inputs)  # type: ignore[arg-type]
    if not docs:
        raise DataError("no pretraining text given")
    held = [d for d in docs if _is_held_out(d, cfg.eval_fraction, cfg.seed)]
    train_docs = [d for d in docs if not _is_held_out(d, cfg.eval_fraction, cfg.seed)]
    if not held or not train_docs:
        raise DataError(f"too little text to hold some out ({len(docs)} documents); give more chats or text")

    t_start = time.perf_counter()
    cpu_start = time.process_time()  # CPU seconds: comparable across busy and quiet machines
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    tok = train_tokenizer(_texts(train_docs), vocab_size=cfg.vocab_size, min_frequency=2)
    train_rows = _rows(_encode_stream(tok, train_docs), cfg.seq_len)
    eval_rows = _rows(_encode_stream(tok, held), cfg.seq_len)
    if len(train_rows) == 0:
        raise DataError("too little text for one training row; give more text or lower --seq-len")

    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=max(2048, cfg.seq_len), tie_word_embeddings=True,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id, bos_token_id=None,
    ))
    from endcloud.end.device import resolve_device, resolve_dtype

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    autocast = (torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if dt == torch.bfloat16
                else contextlib.nullcontext())
    model.to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)

    def lr_factor(progress: float, step: int) -> float:  # linear warmup, cosine decay to 10 %
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    gen = torch.Generator().manual_seed(cfg.seed)
    t_eval = time.monotonic()
    eval_before = _eval_loss(model, eval_rows, cfg.batch_size)
    # What must still fit after the last step under a budget: the held-out loss again (just
    # timed), saving (~1 s per 100 MB of fp32 weights, at least 1 s), and a margin. The
    # greedy samples are made only if time is left.
    reserve = 2.0 * (time.monotonic() - t_eval) + max(1.0, 4 * sum(p.numel() for p in model.parameters()) / 1e8) + 2.0

    from endcloud.end.train import _progress

    model.train()
    losses: list[float] = []
    tokens = 0
    t0 = time.perf_counter()
    prog, task = _progress(progress, cfg.steps, 0)
    done = 0
    perm = torch.randperm(len(train_rows), generator=gen)
    pos = 0
    loop_start = time.monotonic()
    train_until = deadline - reserve if deadline is not None else None
    stopped_early = False
    with prog:
        for step in range(cfg.steps):
            now = time.monotonic()
            if train_until is not None and step > 0 and now + (now - loop_start) / step > train_until:
                stopped_early = True  # the next step would not end in time
                break
            if pos + cfg.batch_size > len(perm):
                perm, pos = torch.randperm(len(train_rows), generator=gen), 0
            # With a time budget the schedule follows whichever runs out first, steps or
            # seconds, so a slow machine still ends on a decayed learning rate.
            progress = step / cfg.steps
            if train_until is not None:
                progress = max(progress, (now - loop_start) / max(1e-9, train_until - loop_start))
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(progress, step)
            x = train_rows[perm[pos : pos + cfg.batch_size]]
            pos += cfg.batch_size
            x = x.to(dev)
            with autocast:
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            tokens += x.numel()
            done = step + 1
            prog.update(task, completed=done, loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    train_seconds = time.perf_counter() - t0
    eval_loss = _eval_loss(model, eval_rows, cfg.batch_size)
    samples = _samples(model, tok, held) if deadline is None or time.monotonic() + reserve < deadline else []

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    uniform = float(len(tok))
    record = {
        "kind": "endcloud-pretrained-base",
        "config": asdict(cfg),
        "data": {
            "documents": len(docs), "held_out_documents": len(held),
            "train_tokens": int(train_rows.numel()), "eval_tokens": int(eval_rows.numel()),
            "hash": hashlib.sha256(json.dumps(docs, ensure_ascii=False, sort_keys=True).encode()).hexdigest(),
        },
        "model": {"params": params, "vocab_size": len(tok), "architecture": "Qwen2ForCausalLM"},
        "metrics": {
            "train_loss_last": sum(losses[-10:]) / len(losses[-10:]),
            "eval_loss_before": eval_before, "eval_loss": eval_loss, "eval_ppl": math.exp(eval_loss),
            "uniform_ppl": uniform, "tokens_per_s": round(tokens / train_seconds, 1) if train_seconds else None,
        },
        "steps": done,
        "steps_planned": cfg.steps,
        "stopped_early": stopped_early,
        "sources": sources,
        "tokens": tokens,
        "seconds": round(time.perf_counter() - t_start, 2),
        "cpu_seconds": round(time.process_time() - cpu_start, 2),
        "threads": torch.get_num_threads(),
        "device": str(dev),
        "autocast": "bf16" if dt == torch.bfloat16 else None,
        "samples": samples,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
    }
    write_json_atomic(out / RECORD_NAME, record)
    return PretrainResult(
        out_dir=out, train_loss=record["metrics"]["train_loss_last"], eval_loss=eval_loss, eval_ppl=math.exp(eval_loss),
        uniform_ppl=uniform, steps=done, tokens=tokens, params=params, seconds=record["seconds"], samples=samples,
        record_path=out / RECORD_NAME, steps_planned=cfg.steps, stopped_early=stopped_early, sources=sources,
    )


__all__ = ["PretrainConfig", "PretrainResult", "pretrain", "read_corpus"]
