"""A checker per task: what must hold of an item before a model is trained or judged on it.

    problems = Checker(pack).check(item)      # [] when the item is sound, else what is wrong
    report = Checker(pack).check_all(items)   # {task: {"checked", "failed", "problems"}}

`generate_tasks` drops every item with a problem (and counts it), so a teacher's answer that
misses the catalog's value, a ranking that rates an out-of-stock product, or a recommendation
naming one never reaches training. The checks recompute each answer from the pack itself:

    every item          a known task type; a response to train on; the answer's shape for its type
    multiple choice     2+ distinct options, the answer one of them, the response naming it
    attribute_ner       each entity is a span of the title
    product_qa          the response states every expected fact (the catalog's value)
    compare, mc_product the right option is what the catalog says (cheaper, dearer, more stock; the value)
    recommend_rank      every candidate is a catalog product; out of stock weighs 0; the response
                        ranks by weight
    next_purchase       every right answer is a catalog product in stock
    recommend_chat      the response names only catalog products in stock, and one recommended
    translate           the target is in the other language
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from endcloud.kb import KnowledgeBase, ShopPack
from endcloud.registry import Registry
from endcloud.tasks.items import TASK_TYPES, TaskItem
from endcloud.tasks.metrics import fact, options_of
from endcloud.tasks.recommend import Recommender
from endcloud.text import detect_lang, normalise

Check = Callable[["Checker", TaskItem], list[str]]
CHECKS: Registry[Check] = Registry("task check")


class Checker:
    """The checks of one pack (its knowledge base built once)."""

    def __init__(self, pack: ShopPack, kb: KnowledgeBase | None = None):
        self.pack = pack
        self.kb = kb or KnowledgeBase(pack)
        self.rec = Recommender(pack, self.kb)
        self.by_sku = {p.sku: p for p in pack.products}

    def check(self, item: TaskItem) -> list[str]:
        problems = _common(item)
        if problems:
            return problems
        if item.task_type == "multiple-choice":
            problems += _multiple_choice(item)
        if not problems and item.task_name in CHECKS:
            problems += CHECKS.get(item.task_name)(self, item)
        return problems

    def check_all(self, items: Iterable[TaskItem]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for it in items:
            r = out.setdefault(it.task_name, {"checked": 0, "failed": 0, "problems": []})
            r["checked"] += 1
            p = self.check(it)
            if p:
                r["failed"] += 1
                if len(r["problems"]) < 5:
                    r["problems"].append(f"{it.id}: {'; '.join(p)}")
        return out


def check_item(item: TaskItem, pack: ShopPack) -> list[str]:
    """`Checker(pack).check(item)` (builds the pack's knowledge base: use a Checker for many items)."""
    return Checker(pack).check(item)


def _common(it: TaskItem) -> list[str]:
    if it.task_type not in TASK_TYPES:
        return [f"unknown task_type {it.task_type!r}"]
    if not it.input_field.strip():
        return ["empty input_field"]
    if not (it.response or "").strip():
        return ["no response to train on"]
    return []


def _multiple_choice(it: TaskItem) -> list[str]:
    opts = options_of(it.input_field)
    texts = [t for _, t in opts]
    if len(opts) < 2:
        return [f"{len(opts)} option(s); a multiple-choice question needs 2 or more"]
    if [i for i, _ in opts] != list(range(len(opts))):
        return ["options must be numbered 0, 1, 2, …"]
    if len(set(texts)) != len(texts):
        return ["two options read the same"]
    if not 0 <= it.output_field < len(opts):
        return [f"answer {it.output_field} is not an option (0-{len(opts) - 1})"]
    if not (it.response or "").startswith(f"{it.output_field}.") or texts[it.output_field] not in (it.response or ""):
        return ["the response does not name the right option"]
    return []


def _right_option(it: TaskItem) -> str:
    return options_of(it.input_field)[it.output_field][1]


def _check(name: str):
    def deco(fn: Check) -> Check:
        CHECKS.add(name, fn)
        return fn
    return deco


@_check("attribute_ner")
def _ner(c: Checker, it: TaskItem) -> list[str]:
    m = re.search(r"(?:标题：|Title: )(.*)", it.input_field)
    title = m.group(1) if m else it.input_field
    missing = [e for e in it.output_field if e not in title]
    return [f"entity {e!r} is not a span of the title" for e in missing]


@_check("product_qa")
def _qa(c: Checker, it: TaskItem) -> list[str]:
    return [] if fact(it.response or "", it.output_field) == 1.0 else [
        f"the answer does not state {', '.join(it.output_field)}"]


@_check("compare")
def _compare(c: Checker, it: TaskItem) -> list[str]:
    a, b = (c.by_sku.get(s) for s in it.meta.get("skus", ["", ""]))
    if a is None or b is None:
        return ["a compared product is not in the catalog"]
    kind = it.meta.get("kind")
    win = {"cheaper": min((a, b), key=lambda p: p.price), "dearer": max((a, b), key=lambda p: p.price),
           "stock": max((a, b), key=lambda p: p.stock)}.get(kind)
    return [] if win is not None and _right_option(it) == win.name else [f"the {kind} product is not the answer"]


@_check("mc_product")
def _mc_product(c: Checker, it: TaskItem) -> list[str]:
    p = c.by_sku.get(it.meta.get("sku", ""))
    if p is None:
        return ["the product is not in the catalog"]
    col = it.meta.get("column")
    value = p.price_text if col == "__price__" else p.attrs.get(col or "", "").strip()
    return [] if _right_option(it) == value else [f"the right option is not the catalog's {col}"]


@_check("recommend_rank")
def _rank(c: Checker, it: TaskItem) -> list[str]:
    skus = it.meta.get("skus") or []
    products = [c.by_sku.get(s) for s in skus]
    if any(p is None for p in products) or len(products) != len(it.output_field):
        return ["a candidate is not in the catalog, or weights and candidates differ in number"]
    bad = [p.name for p, w in zip(products, it.output_field) if not p.in_stock and w > 0]
    if bad:
        return [f"out of stock but relevant: {', '.join(bad)}"]
    order = [int(x) for x in (it.response or "").split(",")]
    if sorted(order) != list(range(1, len(products) + 1)):
        return ["the response is not a permutation of the items"]
    weights = [it.output_field[i - 1] for i in order]
    return [] if weights == sorted(weights, reverse=True) else ["the response does not rank by weight"]


@_check("next_purchase")
def _next(c: Checker, it: TaskItem) -> list[str]:
    skus = it.meta.get("skus") or []
    products = [c.by_sku.get(s) for s in skus]
    if any(p is None for p in products):
        return ["a candidate is not in the catalog"]
    out = []
    for i in it.output_field:
        if not 1 <= i <= len(products):
            out.append(f"answer {i} is not a candidate")
        elif not products[i - 1].in_stock:
            out.append(f"answer {i} ({products[i - 1].name}) is out of stock")
    return out


@_check("recommend_chat")
def _recommend_chat(c: Checker, it: TaskItem) -> list[str]:
    spec = it.output_field
    named = c.rec.named(it.response or "")
    out = [f"names {p.name}, out of stock" for p in named if not p.in_stock]
    in_stock = {p.name for p in c.pack.products if p.in_stock}
    out += [f"recommends {n!r}, not a catalog product in stock" for n in spec.get("allowed", []) if n not in in_stock]
    if spec.get("allowed") and not any(p.name in spec["allowed"] for p in named):
        out.append("names none of the recommended products")
    return out


@_check("translate")
def _translate(c: Checker, it: TaskItem) -> list[str]:
    src = it.input_field.split("：", 1)[-1] if "：" in it.input_field else it.input_field.split(": ", 1)[-1]
    src = src.split("\n")[0]
    tgt = str(it.output_field)
    if not tgt.strip():
        return ["empty translation"]
    if detect_lang(normalise(src)) == detect_lang(normalise(tgt)):
        return ["source and translation are in the same language"]
    return []


__all__ = ["CHECKS", "Checker", "check_item"]
