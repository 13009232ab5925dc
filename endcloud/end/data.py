"""Supervised fine-tuning data: examples, chat formatting, reply-only loss masks, length buckets.

    pairs.jsonl ─┐
                 ├─ mix_examples(--mix) ─► Example(messages, response) ─► encode() ─► EncodedExample
    labels.jsonl ┘                                                              │
                                                         length_buckets() ─► batches ─► collate()

`encode` renders the conversation with the tokenizer's own chat template, masks the loss to
the reply tokens plus the end-of-turn token (labels are -100 elsewhere), keeps the most
recent context when the prompt is longer than `max_input_len` and cuts the reply at
`max_output_len` (Table IV: 256 / 512).

Customer-service turns are short (a median of a few dozen tokens) with a long tail, so
padding every row to the maximum wastes most of the compute. `length_buckets` sorts
examples by length, cuts the order into batches of similar length and shuffles the batches,
so a batch pads only to its own longest row. We bucket rather than pack several examples
into one row: packing needs a block-diagonal attention mask that SDPA and prefix tuning's
extra key/value positions do not give for free, while bucketing is exact for every tuner.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from endcloud.paper import PAPER
from endcloud.errors import ConfigError, DataError
from endcloud.fileio import read_jsonl
from endcloud.records import Label, Pair

IGNORE_INDEX = -100


@dataclass(slots=True)
class Example:
    """One training example: the conversation so far (OpenAI messages) and the reply to learn."""

    messages: list[dict[str, str]]
    response: str
    id: str = ""
    source: str = "natural"  # "natural" (the shop's agent) or "distilled" (a teacher label)
    # A question answered by choosing among listed candidates (a multiple-choice, ranking,
    # retrieval or named-entity task): every candidate as a reply, and which of them are right. Training then also
    # learns to rank the right ones first by their log-likelihood, which is how such a question is
    # answered (`endcloud.end.train`, `choice_weight`).
    choices: tuple[str, ...] = ()
    answers: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        d = {"id": self.id, "source": self.source, "messages": self.messages, "response": self.response}
        if self.choices:
            d.update(choices=list(self.choices), answers=list(self.answers))
        return d

    @classmethod
    def from_pair(cls, pair: Pair, *, system: str | None = None) -> "Example":
        return cls(_with_system(pair.messages(), system), pair.response, id=pair.id, source="natural")

    @classmethod
    def from_label(cls, label: Label, *, system: str | None = None) -> "Example":
        msgs = [t.to_message() for t in label.context] + [{"role": "user", "content": label.query}]
        return cls(_with_system(msgs, system), label.label, id=label.id, source="distilled")


def _with_system(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + messages


def _load_records(path: str | os.PathLike[str], cls: Any, what: str) -> list[Any]:
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        try:
            out.append(cls.from_json(row))
        except (KeyError, TypeError, AttributeError) as e:
            raise DataError(f"not a {what} record (missing {e}); expected {cls.__name__}.to_json() lines",
                            path=str(path), line=i) from None
    return out


def load_pairs(path: str | os.PathLike[str]) -> list[Pair]:
    return _load_records(path, Pair, "pair")


def load_labels(path: str | os.PathLike[str]) -> list[Label]:
    return _load_records(path, Label, "label")


def mix_examples(
    natural: Sequence[Example], distilled: Sequence[Example], *, mix: float, seed: int = 0
) -> list[Example]:
    """A training set whose share `mix` of examples are distilled labels.

    The set keeps the size of the natural set (or of the distilled one when there are no
    natural pairs). Distilled labels *replace* the natural reply of the same id: a query
    chosen for its teacher label does not also appear with its natural reply.
    mix=0 -> natural only; mix=1 -> labels only.
    """
    if not 0.0 <= mix <= 1.0:
        raise ConfigError(f"--mix must be in [0, 1] (share of distilled labels), got {mix!r}")
    if not natural and not distilled:
        raise DataError("no training examples: both the pairs and the labels are empty")
    rng = random.Random(seed)
    n = len(natural) or len(distilled)
    k = min(round(mix * n), len(distilled)) if distilled else 0
    if mix > 0 and not distilled:
        raise ConfigError(f"--mix {mix} asks for distilled labels but none were given; pass --labels PATH or --mix 0")
    chosen = rng.sample(list(distilled), k) if k else []
    taken = {e.id for e in chosen}
    rest = [e for e in natural if e.id not in taken]
    rng.shuffle(rest)
    out = chosen + rest[: max(0, n - k)]
    rng.shuffle(out)
    return out


def examples_hash(examples: Iterable[Example]) -> str:
    """sha256 of the examples' canonical JSON: the data snapshot a run or adapter was built from."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps(e.to_json(), ensure_ascii=False, sort_keys=True).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def file_hash(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(slots=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    choices: tuple["EncodedExample", ...] = ()  # each candidate as the reply (Example.choices)
    answers: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.input_ids)


def _reply_suffix(tokenizer, messages: list[dict[str, str]], response: str, prompt: str) -> str:
    """The text the template puts after the prompt for this reply, cut after the end-of-turn token."""
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": response}], tokenize=False, add_generation_prompt=False
    )
    eot = "<|im_end|>" if "<|im_end|>" in tokenizer.get_vocab() else (tokenizer.eos_token or "")
    if full.startswith(prompt):
        tail = full[len(prompt) :]
        if eot and eot in tail:
            return tail[: tail.index(eot) + len(eot)]
        return tail
    # A template that re-renders earlier turns differently: reply + the model's end token.
    return response + eot


@dataclass
class Encoder:
    """Turns Examples into token ids with the loss masked to the reply (+ end-of-turn)."""

    tokenizer: Any
    max_input_len: int = PAPER.max_input_len
    max_output_len: int = PAPER.max_output_len
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.max_input_len <= 0:
            raise ConfigError(f"max input length must be positive, got {self.max_input_len!r}; change --max-input-len")
        if self.max_output_len <= 0:
            raise ConfigError(f"max output length must be positive, got {self.max_output_len!r}; change --max-output-len")

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, ex: Example) -> EncodedExample:
        tok = self.tokenizer
        messages = list(ex.messages)
        # the question may be followed by a late system message (its shop knowledge: endcloud.kb.prompt)
        last = next((m for m in reversed(messages) if m.get("role") != "system"), None)
        if last is None or last.get("role") != "user":
            raise DataError(f"example {ex.id!r}: the last message must be the customer's (role 'user'), "
                            "optionally followed by a system message with its knowledge")
        system = messages[:1] if messages[0].get("role") == "system" else []
        turns = messages[len(system) :]
        truncated = False
        while True:
            msgs = system + turns
            prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            prompt_ids = self._ids(prompt)
            question_at = max(i for i, m in enumerate(turns) if m.get("role") == "user")
            if len(prompt_ids) <= self.max_input_len or question_at == 0:
                break
            turns = turns[1:]  # drop the oldest context turn: the recent ones matter most
            truncated = True
        if len(prompt_ids) > self.max_input_len:
            prompt_ids = prompt_ids[-self.max_input_len :]
            truncated = True
        reply_ids = self._ids(_reply_suffix(tok, msgs, ex.response, prompt))
        if len(reply_ids) > self.max_output_len:
            reply_ids = reply_ids[: self.max_output_len]
            truncated = True
        choices: tuple[EncodedExample, ...] = ()
        if ex.choices:
            if not ex.answers or any(not 0 <= a < len(ex.choices) for a in ex.answers):
                raise DataError(f"example {ex.id!r}: answers {list(ex.answers)} must name one or more of its "
                                f"{len(ex.choices)} choices (0-based)")
            choices = tuple(self.encode(Example(msgs, c, id=ex.id)) for c in ex.choices)
        return EncodedExample(prompt_ids + reply_ids, [IGNORE_INDEX] * len(prompt_ids) + reply_ids, truncated,
                              choices, tuple(ex.answers))

    def encode_all(self, examples: Sequence[Example]) -> list[EncodedExample]:
        return [self.encode(e) for e in examples]


def length_buckets(lengths: Sequence[int], batch_size: int, *, seed: int = 0, window: int = 0) -> list[list[int]]:
    """Batches of indices whose examples have similar lengths, in shuffled batch order.

    `window` > 0 sorts within random windows of that many examples (more randomness,
    a little more padding); 0 sorts globally (least padding).
    """
    if batch_size <= 0:
        raise ConfigError(f"batch size must be positive, got {batch_size!r}; change --batch-size")
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)  # random tie order among equal lengths
    if window and window < len(idx):
        chunks = [sorted(idx[i : i + window], key=lambda j: lengths[j]) for i in range(0, len(idx), window)]
        order = [j for c in chunks for j in c]
    else:
        order = sorted(idx, key=lambda j: lengths[j])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def plain_batches(n: int, batch_size: int, *, seed: int = 0) -> list[list[int]]:
    """Shuffled batches with no regard to length (the baseline the bench compares against)."""
    rng = random.Random(seed)
    idx = list(range(n))
    rng.shuffle(idx)
    return [idx[i : i + batch_size] for i in range(0, n, batch_size)]


def collate(batch: Sequence[EncodedExample], pad_id: int, *, pad_to: int | None = None) -> dict[str, Any]:
    """Right-pad a batch to its longest row (or `pad_to`): input_ids, attention_mask, labels tensors.

    Right padding keeps every real token's position the same as unpadded, which prefix
    methods need (their virtual tokens have no rotary position)."""
    import torch

    width = max(len(e) for e in batch)
    if pad_to is not None:
        width = max(width, pad_to)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def reply_logprob_sums(model: Any, batch: Sequence[EncodedExample], pad_id: int) -> tuple[Any, Any]:
    """Per example, as tensors: the summed log-probability `model` gives its reply (the labelled
    tokens) after its prompt, and how many tokens that is. Differentiable: training's choice loss
    (`endcloud.end.train.choice_loss`) backpropagates through it; `reply_logprobs` does not."""
    import torch

    b = collate(batch, pad_id)
    dev = next(model.parameters()).device
    logits = model(input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev)).logits
    return _labelled_logprob_sums(logits[:, :-1], b["labels"][:, 1:].to(dev))


def _labelled_logprob_sums(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Per row: the summed log-probability of the labelled tokens (`logits[:, j]` predicts
    `labels[:, j]`; IGNORE_INDEX is not counted), and how many there are."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    mask = labels != IGNORE_INDEX
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return picked.sum(-1), mask.sum(-1)


def _uses_prompt_learning(model: Any) -> bool:
    """Whether `model` is a peft prompt-learning model (prefix tuning, P-Tuning v2): it feeds its
    own virtual key/values through `past_key_values`, so a caller's cache cannot go there. Looks
    through a DistributedDataParallel wrapper (`.module`), which hides the peft attributes."""
    cfg = getattr(getattr(model, "module", model), "active_peft_config", None)
    return bool(getattr(cfg, "is_prompt_learning", False))


def _checkpointing(model: Any) -> bool:
    model = getattr(model, "module", model)  # through a DistributedDataParallel wrapper
    flag = getattr(model, "is_activation_checkpointing", None)  # transformers 5's name
    return bool(getattr(model, "is_gradient_checkpointing", False) if flag is None else flag)


def candidate_logprob_sums(model: Any, candidates: Sequence[EncodedExample], pad_id: int) -> tuple[Any, Any]:
    """`reply_logprob_sums` of candidate replies to one prompt, with the prompt run once.

    Why: a candidate is a few tokens after a prompt of hundreds (the task's instruction, the
    snippets, the listed options); running the prompt once and its key/values for every
    candidate costs about one forward pass of the prompt instead of one per candidate — a
    retrieval item lists ten. Differentiable, like `reply_logprob_sums`, through the shared
    key/values. Falls back to a forward pass per candidate where the prompt cannot be shared:
    candidates whose prompt tokens differ, a prompt-learning model, gradient checkpointing
    (which turns the cache off in training)."""
    import torch

    firsts = [next((i for i, t in enumerate(c.labels) if t != IGNORE_INDEX), len(c.labels)) for c in candidates]
    p = min(firsts) if candidates else 0
    prompt = candidates[0].input_ids[:p] if candidates else []
    if (len(candidates) < 2 or p < 1 or any(c.input_ids[:p] != prompt for c in candidates)
            or _uses_prompt_learning(model) or _checkpointing(model)):
        return reply_logprob_sums(model, candidates, pad_id)
    dev = next(model.parameters()).device
    head = model(input_ids=torch.tensor([prompt], device=dev), use_cache=True)
    cache = head.past_key_values
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return reply_logprob_sums(model, candidates, pad_id)
    cache.batch_repeat_interleave(len(candidates))
    tails = [EncodedExample(c.input_ids[p:], c.labels[p:]) for c in candidates]
    b = collate(tails, pad_id)
    mask = torch.cat([torch.ones((len(tails), p), dtype=torch.long), b["attention_mask"]], dim=1).to(dev)
    logits = model(input_ids=b["input_ids"].to(dev), attention_mask=mask, past_key_values=cache).logits
    # token j of a tail is predicted by the prompt's last position (j = 0) or the tail's position j-1
    logits = torch.cat([head.logits[:, -1:].expand(len(tails), 1, -1), logits[:, :-1]], dim=1)
    return _labelled_logprob_sums(logits, b["labels"].to(dev))


def reply_logprobs(model: Any, batch: Sequence[EncodedExample], pad_id: int) -> list[tuple[float, int]]:
    """Per example: the summed log-probability `model` gives its reply (the labelled tokens) after
    its prompt, and how many tokens that is — what scoring a given reply needs (the matcher's
    language model, ShopBench's options by log-likelihood)."""
    import torch

    with torch.no_grad():
        sums, counts = reply_logprob_sums(model, batch, pad_id)
    return list(zip(sums.tolist(), counts.tolist()))


def cap_repeated_replies(examples: Sequence[Example], max_repeats: int, *, seed: int = 0) -> list[Example]:
    """At most `max_repeats` examples per identical reply (a seeded choice of which), order kept.

    Why: real agents paste stock phrases ("请问还有其他还可以帮到您的吗?" is 1.9 % of a JDDC
    sample's replies), and a small end model trained on them collapses onto the mode: the
    phrase became 15.5 % of its held-out replies. Keeping each distinct reply once took that to
    6 % with Sim, BLEU-4 and ROUGE-L as good or better (docs/benchmarks.md, "Real chat logs").
    0 keeps everything."""
    if max_repeats <= 0:
        return list(examples)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    seen: dict[str, int] = {}
    keep = set()
    for i in order:
        r = examples[i].response.strip()
        if seen.get(r, 0) < max_repeats:
            seen[r] = seen.get(r, 0) + 1
            keep.add(i)
    return [e for i, e in enumerate(examples) if i in keep]


def read_examples(
    pairs: str | os.PathLike[str] | None,
    labels: str | os.PathLike[str] | None = None,
    *,
    mix: float | None = None,
    system: str | None = None,
    seed: int = 0,
    max_reply_repeats: int = 0,
) -> list[Example]:
    """Examples from a pairs JSONL and/or a labels JSONL (the CLI's input). `max_reply_repeats`
    caps the natural pairs' identical replies (`cap_repeated_replies`; 0: no cap)."""
    natural = [Example.from_pair(p, system=system) for p in load_pairs(pairs)] if pairs else []
    natural = cap_repeated_replies(natural, max_reply_repeats, seed=seed)
    distilled = [Example.from_label(lb, system=system) for lb in load_labels(labels)] if labels else []
    if mix is None:
        mix = 0.5 if (natural and distilled) else (1.0 if distilled else 0.0)
    return mix_examples(natural, distilled, mix=mix, seed=seed)


def ground_examples(examples: Sequence[Example], kb: Any, *, late: bool = True, k: int | None = None) -> list[Example]:
    """The examples with the shop knowledge retrieval finds for each question, placed where
    serving places it (`endcloud.kb.prompt`: one prompt builder for training and serving).
    An end model fine-tuned on these learns to read the knowledge, not to recite one shop's
    facts: a price changed in the catalog is then answered right without retraining."""
    from endcloud.kb.prompt import DEFAULT_K, ground

    if kb is None:
        return list(examples)
    return [Example(ground(e.messages, kb, k=DEFAULT_K if k is None else k, late=late), e.response, id=e.id,
                    source=e.source) for e in examples]


def split_holdout(examples: Sequence[Example], fraction: float, *, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """(train, held-out) split by example id so that a query never sits in both."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"held-out fraction must be in [0, 1), got {fraction!r}; change --eval-fraction")
    if fraction == 0 or len(examples) < 2:
        return list(examples), []

    def bucket(e: Example) -> float:
        digest = hashlib.sha256(f"{seed}:{e.id or e.response}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    train = [e for e in examples if bucket(e) >= fraction]
    held = [e for e in examples if bucket(e) < fraction]
    if not train:
        return list(examples), []
    return train, held


__all__ = [
    "reply_logprobs",
    "candidate_logprob_sums",
    "IGNORE_INDEX",
    "Example",
    "EncodedExample",
    "Encoder",
    "collate",
    "examples_hash",
    "file_hash",
    "ground_examples",
    "length_buckets",
    "load_labels",
    "load_pairs",
    "mix_examples",
    "plain_batches",
    "read_examples",
    "split_holdout",
]
