"""The shop reader recipe: the embedded default base, trained to answer from the snippets in its prompt.

A small model trained on one shop's chats can only recite that shop's facts — wrong for any
other shop, and wrong for the same shop the day a price changes. The shop reader is trained
instead on many generated shops (`endcloud.corpus.shopworld.varied`: different domains,
products, attributes, policies and wordings, zh and en, every fact drawn at random so none
can be memorised), each question paired with the knowledge retrieval finds for it, placed
exactly as serving places it (`endcloud.kb.prompt`), and the offline teacher's answer. What
it learns is to *read*: find the product or policy the question is about among the snippets
and state its fact.

    recipe = ReaderRecipe()                      # sizes, data and a budget in optimizer steps
    build_reader(recipe, "reader/")              # -> a Hugging Face model dir + reader.json
    endcloud pretrain --recipe reader --out reader/

Budgets are steps, never seconds: the same recipe gives the same model on a fast and on a
loaded machine (the data, the tokenizer, the initialisation and the batch order all come
from the recipe's seed). The trained reader ships with the project (`endcloud/assets/reader`,
~6 MB of fp16 safetensors plus its tokenizer, with the recipe and a sha256 in reader.json),
so `scripts/demo` and `endcloud shop onboard` start from it instead of spending most of
their minutes on a base; `verify_reader` checks the shipped weights against that checksum.
Beside it, glue.json holds the phrasing the reader was trained to write (`reader_glue`),
which serving's novelty check accepts in a reply (`endcloud.scoring.novelty`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from endcloud.errors import ConfigError
from endcloud.fileio import write_json_atomic

from endcloud.end.reader import ASSET_DIR, GLUE_NAME, RECORD_NAME, WEIGHTS, reader_base, sha256_file, verify_reader


ADDED_LATER = {"invented_nouns": 0.0}  # recipe fields newer than shop-reader-v1, at their v1 value


@dataclass
class ReaderRecipe:
    """Everything that decides the reader: data, sizes and a schedule in steps."""

    name: str = "shop-reader-v1"
    seed: int = 0
    shops_per_lang: int = 300  # generated training shops per language
    eval_shops_per_lang: int = 12  # generated shops (other seeds) held out for the report
    langs: tuple[str, ...] = ("zh", "en")
    # Share of training products named with an invented noun (`random_pack(invented_nouns=)`).
    # Without them the reader learns the generator's nouns and, on a shop it has not seen,
    # completes a name it started copying with one it remembers ("大红袍 入门乒乓球拍"); a word
    # no other shop has can only be copied. Held-out shops are drawn without them. Measured
    # (docs/benchmarks.md, "Shop reader v2"): 0.5 raised the base's own drafts on the
    # hand-written packs from 19.9 % to 25.5 %, but after `shop onboard` served answers were
    # the same as with 0, so the shipped reader stays the one built with 0.
    invented_nouns: float = 0.0
    snippets: int = 3  # k of the retrieval, as served (ServeSettings.knowledge_snippets)
    vocab_size: int = 6000
    hidden: int = 192
    layers: int = 4
    heads: int = 6
    kv_heads: int = 2
    intermediate: int = 512
    max_input_len: int = 384
    max_output_len: int = 96
    steps: int = 5000
    batch_size: int = 16
    lr: float = 3e-3
    warmup: int = 100
    # warmup, then a constant rate, then a linear decay over the last `decay` share of steps
    # (warmup-stable-decay): copying from the context is learned late and abruptly, and a
    # cosine schedule has already lowered the rate by then.
    decay: float = 0.25
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    # Loss weight of the prompt's own tokens (the reply's is 1): a little language modelling of
    # the snippets teaches the embeddings of names the replies rarely copy.
    prompt_weight: float = 0.3
    # Train only on the teacher's answers that state the question's expected facts (and on
    # hand-offs to questions the shop cannot answer): a wrong label teaches the wrong row.
    only_right_labels: bool = True

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0 or self.shops_per_lang <= 0:
            raise ConfigError("reader recipe: steps, batch_size and shops_per_lang must be positive")
        self.langs = tuple(self.langs)

    @classmethod
    def quick(cls, **kw: Any) -> "ReaderRecipe":
        """A tiny recipe for tests (seconds, not a useful model)."""
        base = dict(shops_per_lang=6, eval_shops_per_lang=2, vocab_size=1500, hidden=48, layers=2, heads=4,
                    kv_heads=2, intermediate=96, max_input_len=256, steps=8, batch_size=4)
        base.update(kw)
        return cls(**base)

    def fingerprint(self) -> str:
        # fields added after a reader shipped count only when set, so its recipe keeps its fingerprint
        fields = {k: v for k, v in asdict(self).items() if not (k in ADDED_LATER and v == ADDED_LATER[k])}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ReaderExample:
    messages: list[dict[str, str]]
    response: str
    kind: str
    expect: list[str] = field(default_factory=list)
    lang: str = "zh"


# -- data ------------------------------------------------------------------------------------
def shop_examples(pack_dir: Path, *, k: int, lang: str, only_right: bool = False) -> list[ReaderExample]:
    """One generated shop's questions, each with its knowledge and the offline teacher's answer.

    Multi-turn questions are played turn by turn: the teacher's earlier answers become the
    assistant turns, and every turn is an example (follow-ups are where reading is hardest)."""
    from endcloud.cloud.reference import ReferenceTeacher
    from endcloud.fileio import read_jsonl
    from endcloud.kb import KnowledgeBase, ShopPack
    from endcloud.kb.prompt import build_messages, customer_text, retrieve

    pack = ShopPack.load(pack_dir)
    kb = KnowledgeBase(pack)
    teacher = ReferenceTeacher(pack=pack, kb=kb)
    out: list[ReaderExample] = []
    for q in read_jsonl(pack_dir / "questions.jsonl"):
        turns: list[dict[str, str]] = []
        system_parts: list[str] = []
        if q.get("kind") == "order" and pack.orders:
            # an order question is asked by its owner: serving puts their orders in the system text
            ref = str(q.get("ref") or "")
            row = pack.orders.get(ref) or next(iter(pack.orders.values()))
            system_parts.append(customer_text([row]) or "")
        user_turns = [str(t) for t in q.get("turns") or []]
        for i, text in enumerate(user_turns):
            turns.append({"role": "user", "content": text})
            convo = ([{"role": "system", "content": "\n\n".join(system_parts)}] if system_parts else []) + turns
            reply = teacher.answer(convo).text
            snippets = retrieve(kb, turns, k)
            last = i == len(user_turns) - 1
            if only_right and last and not _label_right(q, reply):
                break  # a wrong label teaches the wrong row (the earlier turns stay: they were answered)
            out.append(ReaderExample(build_messages(turns, snippets, system_parts=system_parts, late=True), reply,
                                     str(q.get("kind", "")), [str(x) for x in q.get("expect") or []] if last else [],
                                     lang))
            turns.append({"role": "assistant", "content": reply})
    return out


def _label_right(q: dict[str, Any], reply: str) -> bool:
    from endcloud.cloud.reference import REPLIES
    from endcloud.scoring.facts import fact_correct

    if q.get("kind") == "unknown":
        return reply in REPLIES["unknown"].values()
    expect = [str(x) for x in q.get("expect") or []]
    return not expect or fact_correct(reply, expect) == 1.0


def generate_examples(recipe: ReaderRecipe, *, eval_split: bool = False,
                      progress: Callable[[int, int], None] | None = None) -> list[ReaderExample]:
    """The recipe's examples (training shops, or with `eval_split` the held-out ones)."""
    from endcloud.corpus.shopworld.varied import random_pack

    n = recipe.eval_shops_per_lang if eval_split else recipe.shops_per_lang
    # training and evaluation shops come from disjoint seed ranges
    base = recipe.seed * 1_000_003 + (500_000 if eval_split else 0)
    jobs = [(lang, base + i * len(recipe.langs) + j) for i in range(n) for j, lang in enumerate(recipe.langs)]
    out: list[ReaderExample] = []
    with tempfile.TemporaryDirectory(prefix="endcloud-reader-") as tmp:
        for done, (lang, seed) in enumerate(jobs, 1):
            d = Path(tmp) / f"{lang}-{seed}"
            random_pack(d, seed=seed, lang=lang, invented_nouns=0.0 if eval_split else recipe.invented_nouns)
            out.extend(shop_examples(d, k=recipe.snippets, lang=lang,
                                     only_right=recipe.only_right_labels and not eval_split))
            if progress:
                progress(done, len(jobs))
    return out


def reader_glue(recipe: ReaderRecipe, examples: Sequence[ReaderExample] | None = None) -> Any:
    """The phrasing the reader is trained to write beside what it copies (a
    `endcloud.scoring.novelty.Glue`): the recipe's training replies, each against the text of
    its own messages. The earlier assistant turns count as context here: what a reply repeats
    from them stays out of the glue, which keeps the glue to phrasing (serving, stricter,
    gives them no credit at all)."""
    from endcloud.scoring.novelty import Glue

    if examples is None:
        examples = generate_examples(recipe)
    return Glue.learn((([m["content"] for m in e.messages], e.response) for e in examples),
                      recipe=recipe.name, fingerprint=recipe.fingerprint())


# -- training --------------------------------------------------------------------------------
def _lr_at(step: int, recipe: ReaderRecipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    start = recipe.steps * (1 - recipe.decay)
    if step < start:
        return recipe.lr
    t = (step - start) / max(1.0, recipe.steps - start)
    return recipe.lr * (1 - (1 - recipe.min_lr_ratio) * min(1.0, t))


def build_reader(recipe: ReaderRecipe, out_dir: str | Path, *, log: Callable[[str], None] = print,
                 examples: Sequence[ReaderExample] | None = None, held: Sequence[ReaderExample] | None = None,
                 fp16: bool = True) -> dict[str, Any]:
    """Generate the data, train the tokenizer and the model for `recipe.steps` steps, evaluate
    on held-out generated shops and write a model dir + reader.json + glue.json (`reader_glue`).
    Returns the record."""
    import torch
    import torch.nn.functional as F

    from endcloud.end.base import tiny_qwen2
    from endcloud.end.data import Encoder, Example, collate, length_buckets
    from endcloud.end.tokenizer import train_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    if examples is None:
        examples = generate_examples(recipe, progress=lambda i, n: (i % 100 == 0 or i == n) and log(f"  shops {i}/{n}"))
    if held is None:
        held = generate_examples(recipe, eval_split=True)
    log(f"reader data: {len(examples)} training examples, {len(held)} held-out ({time.time() - t0:.0f}s)")

    def texts():
        for e in examples:
            for m in e.messages:
                yield m["content"]
            yield e.response

    tok = train_tokenizer(texts(), vocab_size=recipe.vocab_size)
    model = tiny_qwen2(tok, hidden_size=recipe.hidden, layers=recipe.layers, heads=recipe.heads,
                       kv_heads=recipe.kv_heads, intermediate_size=recipe.intermediate,
                       max_positions=recipe.max_input_len + recipe.max_output_len + 64, seed=recipe.seed)
    enc = Encoder(tok, max_input_len=recipe.max_input_len, max_output_len=recipe.max_output_len)
    encoded = [enc.encode(Example(e.messages, e.response, id=str(i))) for i, e in enumerate(examples)]
    pad = tok.pad_token_id
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.95))
    losses: list[float] = []
    order: list[list[int]] = []
    epoch = 0
    model.train()
    for step in range(recipe.steps):
        if not order:
            order = length_buckets([len(e) for e in encoded], recipe.batch_size, seed=recipe.seed + epoch, window=256)
            epoch += 1
        batch = collate([encoded[i] for i in order.pop()], pad)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, recipe)
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        target = ids[:, 1:]
        reply = labels[:, 1:] != -100
        real = mask[:, 1:].bool()
        weight = torch.where(reply, torch.ones_like(target, dtype=torch.float32),
                             torch.full_like(target, recipe.prompt_weight, dtype=torch.float32)) * real
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), reduction="none")
        loss = (ce * weight.reshape(-1)).sum() / weight.sum().clamp(min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            reply_loss = float((ce * reply.reshape(-1)).sum() / reply.sum().clamp(min=1))
        losses.append(reply_loss)
        if (step + 1) % 100 == 0 or step == 0:
            recent = losses[-100:]
            log(f"  step {step + 1}/{recipe.steps} reply loss {sum(recent) / len(recent):.3f} "
                f"({time.time() - t0:.0f}s)")
    model.eval()
    report = evaluate_reader(model, tok, held, max_input_len=recipe.max_input_len)
    log(f"reader held-out: facts right {report['facts_right']:.3f} on {report['n_facts']} questions, "
        f"unknown kept {report['unknown_right']}")
    if fp16:
        model = model.to(torch.float16)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    glue = reader_glue(recipe, examples).save(out / GLUE_NAME)  # serving's novelty check reads it beside the model
    record = {"recipe": asdict(recipe), "fingerprint": recipe.fingerprint(), "examples": len(examples),
              "glue": {"file": glue.name, "sha256": sha256_file(glue)},
              "final_reply_loss": round(sum(losses[-100:]) / len(losses[-100:]), 4),
              "loss_curve": [round(sum(losses[i:i + 50]) / len(losses[i:i + 50]), 4) for i in range(0, len(losses), 50)],
              "heldout": report, "seconds": round(time.time() - t0, 1), "sha256": sha256_file(out / WEIGHTS)}
    write_json_atomic(out / RECORD_NAME, record)
    return record


def evaluate_reader(model: Any, tok: Any, held: Sequence[ReaderExample], *, max_new_tokens: int = 64,
                    batch_size: int = 16, max_input_len: int = 384) -> dict[str, Any]:
    """Greedy replies to held-out examples: share stating every expected fact, by kind."""
    from endcloud.scoring.facts import fact_correct

    scored = [e for e in held if e.expect or e.kind == "unknown"]
    replies = generate_replies(model, tok, [e.messages for e in scored], max_new_tokens=max_new_tokens,
                               batch_size=batch_size, max_input_len=max_input_len)
    by_kind: dict[str, list[int]] = {}
    right = n_facts = unknown_right = n_unknown = 0
    samples = []
    for e, r in zip(scored, replies):
        if e.kind == "unknown":
            n_unknown += 1
            ok = not any(ch.isdigit() for ch in r)
            unknown_right += ok
        else:
            n_facts += 1
            ok = fact_correct(r, e.expect) == 1.0
            right += ok
        by_kind.setdefault(e.kind, [0, 0])
        by_kind[e.kind][0] += ok
        by_kind[e.kind][1] += 1
        if len(samples) < 12:
            samples.append({"question": e.messages[-2]["content"] if len(e.messages) > 1 else "", "reply": r,
                            "expect": e.expect, "ok": bool(ok)})
    return {"facts_right": round(right / max(1, n_facts), 4), "n_facts": n_facts,
            "unknown_right": f"{unknown_right}/{n_unknown}",
            "by_kind": {k: round(v[0] / v[1], 3) for k, v in sorted(by_kind.items())}, "samples": samples}


def generate_replies(model: Any, tok: Any, conversations: Sequence[list[dict[str, str]]], *,
                     max_new_tokens: int = 64, batch_size: int = 16, max_input_len: int = 384) -> list[str]:
    """Greedy replies, left-padded batches (plain `generate`: no server needed); a prompt
    longer than `max_input_len` keeps its most recent ids, as the server does."""
    import torch

    from endcloud.end.base import end_of_turn_ids, render_chat

    eos = end_of_turn_ids(tok)
    out: list[str] = []
    for i in range(0, len(conversations), batch_size):
        prompts = [tok(render_chat(tok, c), add_special_tokens=False)["input_ids"][-max_input_len:]
                   for c in conversations[i:i + batch_size]]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for j, p in enumerate(prompts):
            ids[j, width - len(p):] = torch.tensor(p)
            mask[j, width - len(p):] = 1
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=eos, pad_token_id=tok.pad_token_id)
        for j in range(len(prompts)):
            out.append(tok.decode(gen[j, width:].tolist(), skip_special_tokens=True).strip())
    return out


__all__ = ["ASSET_DIR", "GLUE_NAME", "ReaderExample", "ReaderRecipe", "build_reader", "evaluate_reader",
           "generate_examples", "generate_replies", "reader_base", "reader_glue", "shop_examples", "verify_reader"]
