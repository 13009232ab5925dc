"""What one shop brings to a federation, read from its own workspace — and never sent.

    workspace/
      shop/                    the shop pack: its knowledge base (facts stay here, read at answer time)
      corpus/pairs.jsonl       its dialogues ─┐
      labels/labels.jsonl      its teacher labels ─┴─► Examples, each grounded in the shop's own
                                                        knowledge (`endcloud.kb.prompt.ground`), as
                                                        serving grounds a turn
      evolve/heldout.jsonl     the frozen held-out set its promotion gate measures on (the same
                               file the online loop's gate uses; built once when missing)

Because every example carries the snippets retrieval finds in *this* shop's pack, what the
shared adapter can learn is how to read snippets and answer in the shop-service manner; the
facts themselves are in no weight that leaves. `generated_shop` writes such a workspace for a
synthetic shop (tests, `federate simulate`, the bench).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from endcloud.config import Workspace
from endcloud.errors import DataError
from endcloud.fileio import read_jsonl, write_json_atomic, write_jsonl_atomic

HELDOUT_FILE = ("evolve", "heldout.jsonl")
CONTEXT_TURNS = 4  # earlier turns kept with a generated pair (the corpus pipeline keeps a few too)


@dataclass
class ShopData:
    """A shop's training examples, its gate's held-out set and its knowledge (all local)."""

    name: str
    workspace: Path
    train: list[Any]  # endcloud.end.data.Example, grounded
    heldout: list[dict[str, Any]]  # {"id","query","context","facts","reference"}
    kb: Any = None
    late: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def ground(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """`messages` with this shop's knowledge, placed as serving places it."""
        from endcloud.kb.prompt import ground

        return ground(messages, self.kb, late=self.late)

    @property
    def grounder(self) -> Callable[[list[dict[str, str]]], list[dict[str, str]]] | None:
        return self.ground if self.kb is not None else None

    def eval_examples(self) -> list[Any]:
        """The held-out questions with the teacher's reference as the target (for eval loss)."""
        from endcloud.end.data import Example

        return [Example(self.ground(list(h["context"]) + [{"role": "user", "content": h["query"]}]), h["reference"],
                        id=str(h["id"]), source="heldout") for h in self.heldout if h.get("reference")]


def load_shop(workspace: str | os.PathLike[str] | Workspace, *, base_dir: str | os.PathLike[str], teacher: Any = None,
              heldout_size: int = 40, name: str | None = None, limit: int | None = None) -> ShopData:
    """The shop of a workspace: pairs + labels grounded in its pack, and its frozen held-out set."""
    from endcloud.end.base import load_tokenizer, renders_late_system
    from endcloud.end.data import Example, read_examples
    from endcloud.evolve.gate import frozen_heldout
    from endcloud.kb import KnowledgeBase, ShopPack
    from endcloud.kb.prompt import ground

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    kb = KnowledgeBase(ShopPack.load(ws.shop)) if ws.has_shop() else None
    late = renders_late_system(load_tokenizer(base_dir))
    pairs = ws.pairs if ws.pairs.exists() else None
    labels = ws.labels if ws.labels.exists() else None
    if pairs is None and labels is None:
        raise DataError(f"workspace {str(ws.root)!r} has neither {ws.pairs} nor {ws.labels}: run `endcloud corpus "
                        "prepare` (and `endcloud distill`) there first")
    examples = read_examples(pairs, labels)
    if limit is not None:
        examples = examples[:limit]
    train = [Example(ground(e.messages, kb, late=late), e.response, id=e.id, source=e.source) for e in examples]
    source = ws.eval_pairs if ws.eval_pairs.exists() else ws.shop / "chats" / "eval.jsonl"
    path = ws.root.joinpath(*HELDOUT_FILE)
    if not path.exists() and teacher is None:
        from endcloud.cloud import default_teacher

        teacher = default_teacher(workspace=ws)
    heldout = frozen_heldout(path, source=source, teacher=teacher, size=heldout_size)
    shop_name = name or (getattr(kb.pack, "name", None) if kb is not None else None) or ws.root.name
    return ShopData(name=str(shop_name), workspace=ws.root, train=train, heldout=heldout, kb=kb, late=late)


# ---- synthetic shops ------------------------------------------------------------------------------
def _bucket(key: str, seed: int) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64


def generated_shop(root: str | os.PathLike[str], *, seed: int, lang: str = "en", kind: str = "shopworld",
                   size: int = 40, products: int = 8, eval_fraction: float = 0.3) -> Path:
    """Write a synthetic shop's workspace at `root` (shop pack + corpus) and return it.

    kind "shopworld": `generate_shop` (one home-goods world; `size` sessions of customers and
    human agents, their correct replies as pairs, its own eval questions held out);
    kind "varied": `random_pack` (a random domain; `size` questions, answered turn by turn by
    the offline reference teacher, a share held out with the facts a right answer states)."""
    from endcloud.records import Pair, Turn

    ws = Workspace.resolve(root)
    ws.corpus.mkdir(parents=True, exist_ok=True)
    if kind == "shopworld":
        from endcloud.corpus.shopworld import generate_shop

        generate_shop(ws.shop, lang=lang, sessions=size, products=products, seed=seed, eval_per_intent=2, force=True)
        rows = []
        for d in read_jsonl(ws.shop / "chats" / "chats.jsonl"):
            turns: list[dict[str, Any]] = []
            for m in d["messages"]:
                if m["role"] == "assistant" and m.get("correct", True) and turns:
                    ctx = [Turn(t["role"], t["content"]) for t in turns[:-1]][-CONTEXT_TURNS:]
                    rows.append(Pair(id=f"{d['id']}-{len(turns)}", source="shopworld", session=d["id"], lang=lang,
                                     context=ctx, query=turns[-1]["content"], response=m["content"],
                                     facts=m.get("facts") or None, intent=m.get("intent")).to_json())
                turns.append(m)
        write_jsonl_atomic(ws.pairs, rows)
        write_json_atomic(ws.root / "generated.json", {"kind": kind, "seed": seed, "lang": lang, "domain": "home goods"})
        return ws.root
    if kind == "varied":
        from endcloud.cloud.reference import ReferenceTeacher
        from endcloud.corpus.shopworld.varied import random_pack
        from endcloud.kb import KnowledgeBase, ShopPack
        from endcloud.kb.prompt import customer_text

        shop = random_pack(ws.shop, seed=seed, lang=lang, questions=size)
        pack = ShopPack.load(ws.shop)
        teacher = ReferenceTeacher(pack=pack, kb=KnowledgeBase(pack))
        train_rows, eval_rows = [], []
        for i, q in enumerate(shop.questions):
            system: list[dict[str, str]] = []
            if q.get("kind") == "order" and pack.orders:  # asked by the order's owner, as serving would
                row = pack.orders.get(str(q.get("ref") or "")) or next(iter(pack.orders.values()))
                system = [{"role": "system", "content": customer_text([row]) or ""}]
            turns: list[dict[str, str]] = []
            qid = f"{shop.name}-{i}"
            held = _bucket(qid, seed) < eval_fraction
            user_turns = [str(t) for t in q.get("turns") or []]
            for j, text in enumerate(user_turns):
                reply = teacher.answer(system + turns + [{"role": "user", "content": text}]).text
                last = j == len(user_turns) - 1
                pair = Pair(id=f"{qid}-{j}", source="varied", session=qid, lang=lang,
                            context=[Turn(t["role"], t["content"]) for t in system + turns], query=text, response=reply,
                            facts=[str(x) for x in q.get("expect") or []] if last else None, intent=q.get("kind"))
                if not held:
                    train_rows.append(pair.to_json())
                elif last:
                    eval_rows.append(pair.to_json())
                turns += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        write_jsonl_atomic(ws.pairs, train_rows)
        write_jsonl_atomic(ws.eval_pairs, eval_rows)
        write_json_atomic(ws.root / "generated.json", {"kind": kind, "seed": seed, "lang": lang, "domain": shop.domain})
        return ws.root
    raise DataError(f"unknown generated shop kind {kind!r}; valid: shopworld, varied")


__all__ = ["ShopData", "generated_shop", "load_shop"]
