"""The training mix: shop tasks plus a replay of the shop's dialogue, so chatting is not forgotten.

    chat = chat_set(pack, teacher, n=300)                     # customer questions + the teacher's answers
    examples = mix_with_replay([it.to_example() for it in tasks.train()], chat.train, replay=0.3)
    train(base, examples, out, method="lora", steps=300, init_adapter=chat_adapter)

A multi-task adapter trained on tasks alone drifts away from the dialogue it was tuned for.
Replay keeps a share of every batch on dialogue examples: `replay` is that share of the mix
(0.3 = three in ten examples are dialogue). The dialogue examples are what onboarding trains
on: the questions customers would ask of the pack (`kb.questions.customer_questions`), each
turn answered by the teacher, grounded in the snippets retrieval finds for it exactly as
serving grounds a turn (`kb.prompt.ground`); the held-out questions, with the facts a right
answer states, measure chat quality before and after.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from endcloud.errors import ConfigError, DataError


@dataclass
class ChatCase:
    """A held-out dialogue question: the grounded prompt, the facts a right reply states, the
    teacher's reply (the paper's cloud reply, for eq. 1's Final) and the question's kind."""

    messages: list[dict[str, str]]
    expect: list[str]
    reference: str
    kind: str
    query: str


@dataclass
class ChatSet:
    train: list[Any] = field(default_factory=list)  # endcloud.end.data.Example
    heldout: list[ChatCase] = field(default_factory=list)


def chat_set(pack: Any, teacher: Any, *, n: int = 300, seed: int = 0, heldout: float = 0.2, late: bool = True,
             kb: Any = None, extra_heldout: int = 0) -> ChatSet:
    """Dialogue examples for training and held-out cases for judging, from the pack's questions.

    `extra_heldout` more questions (as many as the pack has beyond the first `n`) are judged
    too, without changing which of the first `n` are trained on: a bigger held-out set for
    comparisons that a few dozen judged turns cannot settle."""
    from endcloud.end.data import Example
    from endcloud.kb import KnowledgeBase
    from endcloud.kb.prompt import ground
    from endcloud.kb.questions import customer_questions

    if extra_heldout < 0:
        raise ConfigError(f"extra_heldout must be >= 0, got {extra_heldout!r}")
    kb = kb or KnowledgeBase(pack)
    out = ChatSet()
    questions = customer_questions(pack, n=n, seed=seed, heldout_share=heldout)
    if extra_heldout:
        # the same candidates in the same order, a longer draw: what it adds was never trained on
        taken = {q.turns for q in questions}
        more = customer_questions(pack, n=n + extra_heldout, seed=seed, heldout_share=heldout)
        questions += [replace(q, heldout=True) for q in more if q.turns not in taken]
    for q in questions:
        messages: list[dict[str, str]] = []
        for i, turn in enumerate(q.turns):
            messages.append({"role": "user", "content": turn})
            reply = teacher.reply(list(messages)).text
            last = i == len(q.turns) - 1
            grounded = ground(list(messages), kb, late=late)
            if q.heldout and last:
                out.heldout.append(ChatCase(grounded, list(q.expect), reply, q.kind, turn))
            elif not q.heldout:
                out.train.append(Example(grounded, reply, id=f"{q.id}@{i}", source="distilled"))
            messages.append({"role": "assistant", "content": reply})
    return out


def mix_with_replay(tasks: Sequence[Any], dialogue: Sequence[Any], *, replay: float, seed: int = 0) -> list[Any]:
    """All task examples plus dialogue examples making up a `replay` share of the result
    (dialogue examples repeat when there are too few), shuffled."""
    if not 0.0 <= replay < 1.0:
        raise ConfigError(f"replay must be in [0, 1) (the dialogue share of the mix), got {replay!r}")
    if not tasks:
        raise DataError("no task examples to mix")
    if replay > 0 and not dialogue:
        raise DataError(f"replay {replay} asks for dialogue examples but none were given")
    rng = random.Random(seed)
    k = round(len(tasks) * replay / (1.0 - replay))
    pool = list(dialogue)
    chosen: list[Any] = []
    while len(chosen) < k:
        rng.shuffle(pool)
        chosen += pool[: k - len(chosen)]
    out = list(tasks) + chosen
    rng.shuffle(out)
    return out


__all__ = ["ChatCase", "ChatSet", "chat_set", "mix_with_replay"]
