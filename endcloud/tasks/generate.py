"""Shop tasks from a shop's own data: instruction items in ShopBench's format, each with its answer.

    ts = generate_tasks(ShopPack.load("shop/"), per_task=60, seed=0, teacher=default_teacher(shop="shop/"),
                        logs=read_jsonl("shop/chats/chats.jsonl"))
    ts.items[0].input_field, ts.items[0].output_field, ts.items[0].response, ts.report
    write_items("tasks.jsonl", ts.items)       # or: endcloud tasks generate shop/ -o tasks.jsonl

TASKS is the registry; every task reads only what any pack holds (catalog rows, policies,
orders; chat logs where given), in the pack's language:

    attribute_ner     named_entity_recognition  a product title made of its name and attribute
                                                values; extract the spans of one column (colour, material…)
    product_qa        generation (fact)         a price / stock / attribute question about a product
                                                row, answered by the TEACHER (`reply(messages)`); kept only
                                                when the answer states the catalog's value (the checker)
    compare           multiple-choice           two product rows: which is cheaper / dearer / has more stock
    mc_product        multiple-choice           a product row: which option is its price / attribute
    mc_policy         multiple-choice           a policy paragraph: the number a sentence states (cloze)
    intent            multiple-choice           what a customer message wants (`lexicon.INTENTS`); from
                                                templates filled with the shop's products, and from logs
                                                whose turns carry an intent
    sentiment         multiple-choice           a review of one of the shop's products: negative/neutral/positive
    translate         generation (rougel)       a product name zh↔en (an English-name column, else the
                                                glossary of product words); skipped when nothing translates
    recommend_rank    ranking (ndcg)            a customer need and 5 products; relevance by `Recommender`
                                                (out of stock: 0)
    next_purchase     retrieval (hit@3)         a customer's bought product (orders.csv) and 10 candidates:
                                                the same kind, in stock
    recommend_chat    generation (grounded-     "推荐一款…" as served: the catalog rows of the recommended
                      recommendation)           products are the knowledge (`kb.prompt`), the answer names
                                                only those, in stock

Held out: a quarter of the products (the items about them), the last phrasing of every
template list (`tasks.lexicon`), and a share of the log turns; a held-out input never equals a
training one. Every item passes its task's checker (`tasks.checks`) or is dropped and counted.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from endcloud.errors import ConfigError
from endcloud.kb import KnowledgeBase, Product, ShopPack, is_name_column, paragraphs
from endcloud.registry import Registry
from endcloud.tasks.items import TaskItem
from endcloud.tasks.lexicon import (BUDGET_WORDS, FROM_SHOPWORLD, INTENT_NAMES, INTENT_TEMPLATES, INTENTS,
                                    REVIEW_TEMPLATES, SENTIMENT_NAMES, SENTIMENTS, glossary)
from endcloud.tasks.recommend import Recommender
from endcloud.text import CJK_IDEOGRAPHS, detect_lang, normalise

DEFAULT_PER_TASK = 60
DEFAULT_HELDOUT = 0.25
MAX_ATTR_CHARS = 24
_ZH_COL = {"category": "类目", "material": "材质", "size": "尺寸", "colour": "颜色", "color": "颜色", "feature": "特点",
           "brand": "品牌", "weight": "重量", "origin": "产地", "type": "类型"}
_CATEGORY_COLS = ("category", "类目", "分类", "品类", "类别", "type", "product type")
_SKIP_COL = re.compile(r"url|link|image|img|图片|链接|id$", re.I)
_CJK_RUN = re.compile(f"[{CJK_IDEOGRAPHS}]+")
# A trailing word that names a model or edition, not a kind of product.
_VARIANT = re.compile(r"^(?:pro|max|mini|lite|plus|ii|iii|classic|deluxe|essential|signature|gen|mk|no\.\d+|"
                      r"[a-z]?\d+[a-z0-9.]*|.*[款版装代号])$", re.I)

_T = {
    "zh": {
        "ner": "请从商品标题中抽取实体类型「{etype}」对应的短语。多个用逗号分隔，不要解释。\n标题：{title}\n输出：",
        "qa": "商品信息：{line}\n顾客问题：{q}\n请根据商品信息回答：",
        "compare": "商品1：{a}\n商品2：{b}\n问题：{q}\n{options}\n答案：",
        "compare_q": {"cheaper": "哪一款更便宜？", "dearer": "哪一款更贵？", "stock": "哪一款库存更多？"},
        "mc_product": "商品信息：{line}\n问题：这款商品的{attr}是哪一项？\n{options}\n答案：",
        "price_word": "价格",
        "mc_policy": "店铺政策：{para}\n问题：{q}\n{options}\n答案：",
        "intent": "判断顾客这句话的意图。\n顾客：{text}\n{options}\n答案：",
        "sentiment": "判断这条商品评价的情感倾向。\n评价：{text}\n{options}\n答案：",
        "rank": "顾客需求：{need}\n商品列表：\n{items}\n请按与需求的相关程度给这{n}个商品排序（缺货的排最后），输出1到{n}的排列，用逗号分隔，不要解释。\n输出：",
        "retrieval": "顾客最近购买了：{name}\n候选商品：\n{items}\n请选出顾客接下来最可能购买的商品（同类、有货），最多3个编号，用逗号分隔。\n输出：",
        "translate": "把商品名称翻译成英文：{src}\n译文：",
        "in_stock": "有货", "out_of_stock": "缺货",
    },
    "en": {
        "ner": "Extract the phrases of entity type '{etype}' from the product title. Separate several with commas. "
               "Do not explain.\nTitle: {title}\nOutput: ",
        "qa": "Product: {line}\nCustomer question: {q}\nAnswer from the product information: ",
        "compare": "Product 1: {a}\nProduct 2: {b}\nQuestion: {q}\n{options}\nAnswer: ",
        "compare_q": {"cheaper": "Which one is cheaper?", "dearer": "Which one is more expensive?",
                      "stock": "Which one has more in stock?"},
        "mc_product": "Product: {line}\nQuestion: What is the {attr} of this product?\n{options}\nAnswer: ",
        "price_word": "price",
        "mc_policy": "Shop policy: {para}\nQuestion: {q}\n{options}\nAnswer: ",
        "intent": "What does the customer want?\nCustomer: {text}\n{options}\nAnswer: ",
        "sentiment": "What is the sentiment of this review?\nReview: {text}\n{options}\nAnswer: ",
        "rank": "Customer need: {need}\nProduct list:\n{items}\nRank the {n} products by how well they fit the need "
                "(out of stock last). Output a permutation of 1 to {n} separated by commas. No explanations.\nOutput: ",
        "retrieval": "The customer recently bought: {name}\nCandidates:\n{items}\nPick the products the customer is most "
                     "likely to buy next (same kind, in stock): up to 3 numbers separated by commas.\nOutput: ",
        "translate": "Translate the product name into Chinese: {src}\nTranslation: ",
        "in_stock": "in stock", "out_of_stock": "out of stock",
    },
}


# ---- the context every generator reads ------------------------------------------------------
@dataclass
class TaskContext:
    """The pack, its knowledge base, the teacher and the held-out split, shared by the generators."""

    pack: ShopPack
    kb: KnowledgeBase
    lang: str
    seed: int
    teacher: Any = None
    logs: list[tuple[str, str]] = field(default_factory=list)  # (customer text, intent) from chat logs
    held_skus: frozenset[str] = frozenset()
    recommender: Recommender | None = None
    heldout_share: float = DEFAULT_HELDOUT  # of the items not split by product (policy sentences, log turns)

    def rng(self, task: str, heldout: bool) -> random.Random:
        return random.Random(f"{task}:{self.seed}:{int(heldout)}")

    def products(self, heldout: bool) -> list[Product]:
        """The products a task's items are about: the held-out quarter, or the rest."""
        return [p for p in self.pack.products if (p.sku in self.held_skus) == heldout]

    def t(self, key: str) -> Any:
        return _T[self.lang][key]

    def line(self, p: Product, *, attrs: bool = True) -> str:
        """A product row as a task shows it: name, price, stock state and (optionally) its attributes."""
        zh = self.lang == "zh"
        stock = self.t("in_stock") if p.in_stock else self.t("out_of_stock")
        if zh:
            head = f"{p.name}，价格{p.price_text}元，{stock}"
            tail = "，".join(f"{col_word(c, 'zh')}：{v}" for c, v in attributes(p)) if attrs else ""
            return head + (f"，{tail}" if tail else "")
        head = f"{p.name}, price {p.price_text} {self.pack.currency}, {stock}"
        tail = ", ".join(f"{col_word(c, 'en')}: {v}" for c, v in attributes(p)) if attrs else ""
        return head + (f", {tail}" if tail else "")

    def short(self, p: Product) -> str:
        """A candidate in a list: name, price, stock state."""
        if self.lang == "zh":
            return f"{p.name}（{p.price_text}元，{self.t('in_stock') if p.in_stock else self.t('out_of_stock')}）"
        return f"{p.name} ({p.price_text} {self.pack.currency}, {self.t('in_stock') if p.in_stock else self.t('out_of_stock')})"


def attributes(p: Product) -> list[tuple[str, str]]:
    """The attribute columns a task may ask about: short values, not a name or a link."""
    return [(c, v.strip()) for c, v in p.attrs.items()
            if v.strip() and len(v.strip()) <= MAX_ATTR_CHARS and not is_name_column(c) and not _SKIP_COL.search(c)]


def col_word(col: str, lang: str) -> str:
    c = col.strip().replace("_", " ")
    if lang == "zh":
        return _ZH_COL.get(c.lower(), c)
    return c.lower() if c.isascii() else c


def category_of(p: Product, lang: str) -> str:
    """The kind of product: a category column's value, else the name's last word (zh: last 2 characters)."""
    for c, v in p.attrs.items():
        if c.strip().lower() in _CATEGORY_COLS and v.strip():
            return v.strip()
    words = p.name.split()
    while len(words) > 1 and _VARIANT.match(words[-1]):
        words.pop()  # "… 二代", "… Pro", "… Mk 2": the model, not the kind
    name = " ".join(words)
    if lang == "zh":
        runs = [r for r in _CJK_RUN.findall(name) if len(r) >= 2]
        return runs[-1][-2:] if runs else name
    en = [w for w in re.findall(r"[A-Za-z][A-Za-z\-]+", name) if len(w) > 2]
    return en[-1].lower() if en else name.lower()


def _options(labels: Sequence[str]) -> str:
    return "\n".join(f"{i}. {x}" for i, x in enumerate(labels))


def _mc(ctx: TaskContext, task: str, template: str, right: str, wrong: Sequence[str], rng: random.Random,
        heldout: bool, **slots: Any) -> TaskItem:
    opts = [right, *wrong]
    rng.shuffle(opts)
    k = opts.index(right)
    return TaskItem(input_field=ctx.t(template).format(options=_options(opts), **slots), output_field=k,
                    task_name=task, task_type="multiple-choice", metric="accuracy", is_multiple_choice=True,
                    response=f"{k}. {right}", lang=ctx.lang, heldout=heldout)


def _split_templates(templates: Sequence[str], heldout: bool) -> Sequence[str]:
    """The held-out phrasing is the last; training uses the others."""
    return templates[-1:] if heldout else templates[:-1]


# ---- the generators ------------------------------------------------------------------------
def _attribute_ner(ctx: TaskContext, n: int, heldout: bool) -> list[TaskItem]:
    rng = ctx.rng("attribute_ner", heldout)
    pool = [p for p in ctx.products(heldout) if len([a for a in attributes(p) if "," not in a[1] and "，" not in a[1]]) >= 2]
    out: list[TaskItem] = []
    for _ in range(n * 3):
        if not pool or len(out) >= n:
            break
        p = pool[int(rng.random() * len(pool))]
        attrs = [a for a in attributes(p) if "," not in a[1] and "，" not in a[1]]
        chosen = rng.sample(attrs, min(len(attrs), rng.choice((2, 3))))
        parts = [p.name] + [v for _, v in chosen]
        rng.shuffle(parts)
        title = " ".join(parts)
        col, value = chosen[int(rng.random() * len(chosen))]
        etype = col_word(col, ctx.lang)
        out.append(TaskItem(input_field=ctx.t("ner").format(etype=etype, title=title), output_field=[value],
                            task_name="attribute_ner", task_type="named_entity_recognition", metric="micro f1",
                            is_multiple_choice=False, response=value, lang=ctx.lang, heldout=heldout,
                            meta={"sku": p.sku, "column": col}))
    return out


def _product_qa(ctx: TaskContext, n: int, heldout: bool) -> list[TaskItem]:
    rng = ctx.rng("product_qa", heldout)
    pool = ctx.products(heldout)
    tmpl = INTENT_TEMPLATES[ctx.lang]
    out: list[TaskItem] = []
    for _ in range(n * 2):
        if not pool or len(out) >= n:
            break
        p = pool[int(rng.random() * len(pool))]
        kind = rng.choice(("price", "stock", "product_info", "product_info"))
        attrs = attributes(p)
        if kind == "product_info" and not attrs:
            kind = "price"
        if kind == "price":
            fact_value = p.price_text
            q = rng.choice(_split_templates(tmpl["price"], heldout)).format(name=p.name)
        elif kind == "stock":
            fact_value = ctx.t("in_stock") if p.in_stock else ctx.t("out_of_stock")
            q = rng.choice([t for t in _split_templates(tmpl["stock"], heldout) if "补货" not in t and "restock" not in t]
                           or tmpl["stock"][:1]).format(name=p.name)
        else:
            col, fact_value = attrs[int(rng.random() * len(attrs))]
            q = rng.choice(_split_templates(tmpl["product_info"], heldout)).format(name=p.name, attr=col_word(col, ctx.lang))
        answer = _teacher_answer(ctx, q)
        by = "teacher" if answer is not None else "template"
        if answer is None:
            answer = _template_answer(ctx, p, kind, fact_value)
        out.append(TaskItem(input_field=ctx.t("qa").format(line=ctx.line(p), q=q), output_field=[fact_value],
                            task_name="product_qa", task_type="generation", metric="fact", is_multiple_choice=False,
                            response=answer, lang=ctx.lang, heldout=heldout,
                            meta={"sku": p.sku, "kind": kind, "question": q, "answered_by": by}))
    return out


def _teacher_answer(ctx: TaskContext, question: str) -> str | None:
    if ctx.teacher is None:
        return None
    try:
        text = ctx.teacher.reply([{"role": "user", "content": question}]).text
    except Exception:  # a teacher that fails on one question costs that item, not the task set
        return None
    return text.strip() or None


def _template_answer(ctx: TaskContext, p: Product, kind: str, value: str) -> str:
    if ctx.lang == "zh":
        return {"price": f"亲，{p.name}的价格是{value}元哦。", "stock": f"亲，{p.name}现在{value}。"}.get(
            kind, f"亲，{p.name}的是{value}哦。")
    return {"price": f"The {p.name} is {value} {ctx.pack.currency}.", "stock": f"The {p.name} is {value}."}.get(
        kind, f"The {p.name}: {value}.")


def _compare(ctx: TaskContext, n: int, heldout: bool) -> list[TaskItem]:
    rng = ctx.rng("compare", heldout)
    focus = ctx.products(heldout)
    others = ctx.pack.products
    out: list[TaskItem] = []
    for _ in range(n * 3):
        if len(others) < 2 or not focus or len(out) >= n:
            break
        a = focus[int(rng.random() * len(focus))]
        b = others[int(rng.random() * len(others))]
        if a.sku == b.sku:
            continue
        kind = rng.choice(("cheaper", "dearer", "stock"))
        if kind == "stock" and a.stock == b.stock or kind != "stock" and a.price == b.price:
            continue
        if rng.random() < 0.5:
            a, b = b, a
        win = {"cheaper": a if a.price < b.price else b, "dearer": a if a.price > b.price else b,
               "stock": a if a.stock > b.stock else b}[kind]
        names = [a.name, b.name]
        k = names.index(win.name)
        out.append(TaskItem(input_field=ctx.t("compare").format(a=ctx.line(a, attrs=False), b=ctx.line(b, attrs=False),
                                                                q=ctx.t("compare_q")[kind], options=_options(names)),
                            output_field=k, task_name="compare", task_type="multiple-choice", metric="accuracy",
                            is_multiple_choice=True, response=f"{k}. {win.name}", lang=ctx.lang, heldout=heldout,
                            meta={"skus": [a.sku, b.sku], "kind": kind}))
    return out


def _mc_product(ctx: TaskContext, n: int, heldout: bool) -> list[TaskItem]:
    rng = ctx.rng("mc_product", heldout)
    values: dict[str, set[str]] = {"__price__": {p.price_text for p in ctx.pack.products}}
    for p in ctx.pack.products:
        for c, v in attributes(p):
            values.setdefault(c, set()).add(v)
    pool = ctx.products(heldout)
    out: list[TaskItem] = []
    for _ in range(n * 3):
        if not pool or len(out) >= n:
            break
        p = pool[int(rng.random() * len(pool))]
        cols = [("__price__", p.price_text)] + attributes(p)
        col, right = cols[int(rng.random() * len(cols))]
        wrong = sorted(values.get(col, set()) - {right})
        if len(wrong) < 3:
            continue
        word = ctx.t("price_word") if col == "__price__" else col_word(col, ctx.lang)
        out.append(_mc(ctx, "mc_product", "mc_product", right, rng.sample(wrong, 3), rng, heldout, line=ctx.line(p),
                       attr=word))
        out[-1].meta = {"sku": p.sku, "column": col}
    return out


def _mc_policy(ctx: TaskContext, n: int, heldout: bool) -> list[TaskItem]:
    from endcloud.kb.questions import cloze

    rng = ctx.rng("mc_policy", heldout)
    facts: list[tuple[str, str, str]] = []  # (paragraph, question, fact)
    for key, body in ctx.pack.policies.items():
        for para in paragraphs(body):
            for sentence in re.split(r"(?<=[。！？；.!?;])\s*", para):
                got = cloze(sentence, ctx.lang)
                if got is not None and re.search(r"\d", got[1]):
                    facts.append((para, got[0], got[1]))
    # the held-out items ask about other sentences than training does
    facts = [f for f in facts if (_hash(f[1]) < ctx.heldout_share) == heldout]
    out: list[TaskItem] = []
    rng.shuffle(facts)
    for para, q, right in facts[:n]:
        wrong = _number_distractors(right, rng)
        if len(wrong) < 3:
            continue
        out.append(_mc(ctx, "mc_policy", "mc_policy", right, wrong, rng, heldout, para=para, q=q))
    return out


def _number_distractors(fact: str, rng: random.Random) -> list[str]:
    m = re.search(r"\d+(?:\.\d+)?", fact)
    if m is None:
        return []
    v = float(m.group())
    is_int = "." not in m.group()
    cands: list[str] = []
    for f in (0.5, 2, 1.5, 3, 0.25, 4):
        w = v * f
        if w <= 0:
            continue
        text = str(int(round(w))) if is_int else f"{w:.1f}".rstrip("0").rstrip(".")
        if is_int and ":" in fact:  # a clock time: keep it a time of day
            text = str(int(round(w)) % 24)
        s = fact[:m.start()] + text + fact[m.end():]
        if s != fact and s not in cands:
            cands.append(s)
    rng.shuffle(cands)
    return cands[:3]


def _intent(ctx: TaskContext, n: int, heldout: bool) -> list[TaskItem]:
    rng = ctx.rng("intent", heldout)
    names = INTENT_NAMES[ctx.lang]
    texts: list[tuple[str, str]] = []
    products = ctx.products(heldout) or ctx.pack.products
    for intent in INTENTS:
        for t in _split_templates(INTENT_TEMPLATES[ctx.lang][intent], heldout):
            for _ in range(2):
                texts.append((_fill(ctx, t, products, rng), intent))
    texts += [(t, i) for t, i in ctx.logs if (_hash(t) < ctx.heldout_share) == heldout]
    rng.shuffle(texts)
    out = []
    seen: set[str] = set()
    for text, intent in texts:
        if text in seen or len(out) >= n:
            continue
        seen.add(text)
        wrong = rng.sample([names[i] for i in INTENTS if i != intent], 3)
        out.append(_mc(ctx, "intent", "intent", names[intent], wrong, rng, heldout, text=text))
        out[-1].meta = {"intent": intent}
    return out


def _fill(ctx: TaskContext, template: str, products: Sequence[Product], rng: random.Random) -> str:
    p = products[int(rng.random() * len(products))]
    other = ctx.pack.products[int(rng.random() * len(ctx.pack.products))]
    attrs = attributes(p)
    col, value = attrs[int(rng.random() * len(attrs))] if attrs else ("", "")
    need, _ = _need_text(ctx, p, rng)
    return template.format(name=p.name, other=other.name, attr=col_word(col, ctx.lang) if col else ctx.t("price_word"),
                           value=value or p.name, need=need)


def _sentiment(ctx: TaskContext, n: int, heldout: bool) -> list[TaskItem]:
    rng = ctx.rng("sentiment", heldout)
    names = SENTIMENT_NAMES[ctx.lang]
    products = ctx.products(heldout) or ctx.pack.products
    out = []
    seen: set[str] = set()
    for _ in range(n * 3):
        if len(out) >= n:
            break
        label = SENTIMENTS[int(rng.random() * len(SENTIMENTS))]
        text = _fill(ctx, rng.choice(_split_templates(REVIEW_TEMPLATES[ctx.lang][label], heldout)), products, rng)
        if text in seen:
            continue
        seen.add(text)
        out.append(_mc(ctx, "sentiment", "sentiment", names[label], [names[x] for x in SENTIMENTS if x != label], rng,
                       heldout, text=text))
        out[-1].meta = {"sentiment": label}
    return out


def _translate(ctx: TaskContext, n: int, heldout: bool) -> list[TaskItem]:
    rng = ctx.rng("translate", heldout)
    pairs: list[tuple[str, str, str]] = []  # (source, target, sku)
    zh_en = glossary()
    for p in ctx.products(heldout):
        alt = next((v for c, v in p.attrs.items() if is_name_column(c) and v.strip()
                    and detect_lang(v, default=ctx.lang) != ctx.lang), None)
        target = alt or _translate_words(p.name, ctx.lang, zh_en)
        if target:
            pairs.append((p.name, target, p.sku))
        for c, v in attributes(p):
            t = _translate_words(v, ctx.lang, zh_en)
            if t and v != t:
                pairs.append((v, t, p.sku))
    uniq = list({src: (src, tgt, sku) for src, tgt, sku in pairs}.values())
    rng.shuffle(uniq)
    return [TaskItem(input_field=ctx.t("translate").format(src=src), output_field=tgt, task_name="translate",
                     task_type="generation", metric="rougel", is_multiple_choice=False, response=tgt, lang=ctx.lang,
                     heldout=heldout, meta={"sku": sku}) for src, tgt, sku in uniq[:n]]


def _translate_words(text: str, lang: str, pairs: Sequence[tuple[str, str]]) -> str | None:
    """`text` translated word by word when the glossary covers all of it (zh→en, or en→zh), else None."""
    if lang == "zh":
        table = sorted(pairs, key=lambda x: -len(x[0]))
        s, out = text.replace(" ", ""), []
        while s:
            hit = next(((zh, en) for zh, en in table if s.startswith(zh)), None)
            if hit is None:
                if s[0] in "/、":
                    out.append("/")
                    s = s[1:]
                    continue
                return None
            out.append(hit[1])
            s = s[len(hit[0]):]
        words = " ".join(out).replace(" / ", "/")
        return " ".join(w[:1].upper() + w[1:] for w in words.split(" ")) if "/" not in words else words
    table = sorted(((en.lower(), zh) for zh, en in pairs), key=lambda x: -len(x[0]))
    s, out = normalise(text).strip(), []
    while s:
        s = s.lstrip(" /")
        if not s:
            break
        hit = next(((en, zh) for en, zh in table if s.startswith(en) and (len(s) == len(en) or not s[len(en)].isalnum())), None)
        if hit is None:
            return None
        out.append(hit[1])
        s = s[len(hit[0]):]
    return "".join(out) or None


def _need_text(ctx: TaskContext, p: Product, rng: random.Random, *, budget: bool = False) -> tuple[str, float | None]:
    """What a customer after `p` would ask for: its kind, maybe one of its attribute values, maybe a budget."""
    kind = category_of(p, ctx.lang)
    # one value of a multi-valued cell ("灰色/粉色" -> "粉色"): a customer asks for one colour
    attrs = [re.split(r"\s*[/、]\s*", v)[0] for c, v in attributes(p)
             if v != kind and c.strip().lower() not in _CATEGORY_COLS and len(v) <= 24 and not re.search(r"\d", v)]
    attrs = [a for a in attrs if a and len(a) <= 12]
    value = attrs[int(rng.random() * len(attrs))] if attrs and rng.random() < 0.7 else ""
    if ctx.lang == "zh":
        need = f"{value}的{kind}" if value else kind
    else:
        need = f"{value} {kind}".strip()
    limit = None
    if budget and rng.random() < 0.4:
        limit = float(math.ceil(p.price * rng.choice((0.8, 1.2, 1.5))))
        word = rng.choice(BUDGET_WORDS[ctx.lang]).format(budget=int(limit) if limit.is_integer() else limit)
        need = f"{need}，{word}" if ctx.lang == "zh" else f"{need} {word}"
    return need, limit


def _recommend_rank(ctx: TaskContext, n: int, heldout: bool) -> list[TaskItem]:
    rng = ctx.rng("recommend_rank", heldout)
    rec = ctx.recommender
    focus = ctx.products(heldout)
    out: list[TaskItem] = []
    seen: set[str] = set()
    size = min(5, len(ctx.pack.products))
    for _ in range(n * 4):
        if rec is None or size < 3 or not focus or len(out) >= n:
            break
        p = focus[int(rng.random() * len(focus))]
        need_text, _ = _need_text(ctx, p, rng, budget=True)
        need = rec.need(need_text)
        scored = [(rec.relevance(need, q), q) for q in ctx.pack.products]
        good = [q for r, q in scored if r > 0]
        rest = [q for r, q in scored if r == 0]
        if not good:
            continue
        rng.shuffle(good)
        rng.shuffle(rest)
        picked = good[: rng.randint(1, min(3, len(good)))]
        picked += rest[: size - len(picked)]
        picked += [q for q in good if q not in picked][: size - len(picked)]
        rng.shuffle(picked)
        weights = [rec.relevance(need, q) for q in picked]
        if len(set(weights)) < 2:
            continue
        order = sorted(range(len(picked)), key=lambda i: (-weights[i], i))
        items = "\n".join(f"{i + 1}. {ctx.short(q)}" for i, q in enumerate(picked))
        text = ctx.t("rank").format(need=need_text, items=items, n=len(picked))
        if text in seen:
            continue
        seen.add(text)
        out.append(TaskItem(input_field=text, output_field=weights, task_name="recommend_rank", task_type="ranking",
                            metric="ndcg", is_multiple_choice=False, response=",".join(str(i + 1) for i in order),
                            lang=ctx.lang, heldout=heldout, meta={"skus": [q.sku for q in picked], "need": need_text}))
    return out


def _next_purchase(ctx: TaskContext, n: int, heldout: bool) -> list[TaskItem]:
    rng = ctx.rng("next_purchase", heldout)
    by_sku = {p.sku: p for p in ctx.pack.products}
    bought = [by_sku[r["sku"]] for r in ctx.pack.orders.values() if r.get("sku") in by_sku]
    focus = [p for p in (bought or ctx.pack.products) if (p.sku in ctx.held_skus) == heldout]
    out: list[TaskItem] = []
    seen: set[str] = set()
    for _ in range(n * 4):
        if not focus or len(out) >= n:
            break
        b = focus[int(rng.random() * len(focus))]
        kind = category_of(b, ctx.lang)
        same = [p for p in ctx.pack.products if p.sku != b.sku and category_of(p, ctx.lang) == kind]
        truth = [p for p in same if p.in_stock]
        if not truth:
            continue
        rng.shuffle(truth)
        truth = truth[:3]
        fill = [p for p in ctx.pack.products if p.sku != b.sku and p not in truth
                and (category_of(p, ctx.lang) != kind or not p.in_stock)]
        rng.shuffle(fill)
        cands = truth + fill[: 10 - len(truth)]
        if len(cands) < 5:
            continue
        rng.shuffle(cands)
        right = sorted(i + 1 for i, p in enumerate(cands) if p in truth)
        items = "\n".join(f"{i + 1}. {ctx.short(p)}" for i, p in enumerate(cands))
        text = ctx.t("retrieval").format(name=b.name, items=items)
        if text in seen:
            continue
        seen.add(text)
        out.append(TaskItem(input_field=text, output_field=right, task_name="next_purchase", task_type="retrieval",
                            metric="hit rate@3", is_multiple_choice=False, response=",".join(map(str, right)),
                            lang=ctx.lang, heldout=heldout, meta={"bought": b.sku, "skus": [p.sku for p in cands]}))
    return out


def _recommend_chat(ctx: TaskContext, n: int, heldout: bool) -> list[TaskItem]:
    from endcloud.kb.prompt import build_messages, retrieve

    rng = ctx.rng("recommend_chat", heldout)
    rec = ctx.recommender
    focus = ctx.products(heldout)
    out: list[TaskItem] = []
    seen: set[str] = set()
    for _ in range(n * 3):
        if rec is None or not focus or len(out) >= n:
            break
        p = focus[int(rng.random() * len(focus))]
        need, _ = _need_text(ctx, p, rng, budget=True)
        q = rng.choice(_split_templates(INTENT_TEMPLATES[ctx.lang]["recommend"], heldout)).format(need=need)
        if q in seen:
            continue
        seen.add(q)
        turns = [{"role": "user", "content": q}]
        # as served (`tasks.serving.ShopAssistant.snippets`): the recommended rows, else what retrieval finds
        snippets = rec.snippets(q, k=3) or retrieve(ctx.kb, turns, 3)
        allowed = [x.name for x in rec.rank(q, k=3)]
        terms = rec.need(q)
        forbidden = [x.name for x in ctx.pack.products if not x.in_stock and any(t in normalise(x.name) for t in terms.terms)]
        out.append(TaskItem(input_field=q, output_field={"allowed": allowed, "forbidden": forbidden,
                                                         "catalog": [x.name for x in ctx.pack.products]},
                            task_name="recommend_chat", task_type="generation", metric="grounded-recommendation",
                            is_multiple_choice=False, response=rec.answer(q), messages=build_messages(turns, snippets),
                            lang=ctx.lang, heldout=heldout, meta={"need": need}))
    return out


@dataclass(frozen=True)
class TaskSpec:
    """A task: its ShopBench type and metric, and the function that writes its items."""

    name: str
    task_type: str
    metric: str
    make: Callable[[TaskContext, int, bool], list[TaskItem]]


TASKS: Registry[TaskSpec] = Registry("task")
for _spec in (
    TaskSpec("attribute_ner", "named_entity_recognition", "micro f1", _attribute_ner),
    TaskSpec("product_qa", "generation", "fact", _product_qa),
    TaskSpec("compare", "multiple-choice", "accuracy", _compare),
    TaskSpec("mc_product", "multiple-choice", "accuracy", _mc_product),
    TaskSpec("mc_policy", "multiple-choice", "accuracy", _mc_policy),
    TaskSpec("intent", "multiple-choice", "accuracy", _intent),
    TaskSpec("sentiment", "multiple-choice", "accuracy", _sentiment),
    TaskSpec("translate", "generation", "rougel", _translate),
    TaskSpec("recommend_rank", "ranking", "ndcg", _recommend_rank),
    TaskSpec("next_purchase", "retrieval", "hit rate@3", _next_purchase),
    TaskSpec("recommend_chat", "generation", "grounded-recommendation", _recommend_chat),
):
    TASKS.add(_spec.name, _spec)


def _hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def log_intents(logs: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """(customer text, intent) from chat logs in OpenAI-messages form whose assistant turns carry
    an `intent` (the shopworld chats do); intents outside `lexicon.INTENTS` are mapped or dropped."""
    out = []
    for row in logs:
        msgs = row.get("messages") or []
        for prev, m in zip(msgs, msgs[1:]):
            intent = m.get("intent") if m.get("role") == "assistant" else None
            label = intent if intent in INTENTS else FROM_SHOPWORLD.get(str(intent))
            if label and prev.get("role") == "user" and str(prev.get("content", "")).strip():
                out.append((str(prev["content"]).strip(), label))
    return out


@dataclass
class TaskSet:
    """What `generate_tasks` made: the items (training and held out) and a per-task report."""

    items: list[TaskItem]
    report: dict[str, dict[str, Any]]

    def train(self) -> list[TaskItem]:
        return [it for it in self.items if not it.heldout]

    def heldout(self) -> list[TaskItem]:
        return [it for it in self.items if it.heldout]


def generate_tasks(pack: ShopPack, *, tasks: Sequence[str] | None = None, per_task: int = DEFAULT_PER_TASK,
                   heldout: float = DEFAULT_HELDOUT, seed: int = 0, teacher: Any = None,
                   logs: Iterable[dict[str, Any]] = (), kb: KnowledgeBase | None = None) -> TaskSet:
    """`per_task` items per task (a `heldout` share of them held out), each checked; see the module docstring."""
    from endcloud.tasks.checks import Checker

    if per_task <= 0:
        raise ConfigError(f"per_task must be a positive number of items, got {per_task!r}")
    if not 0.0 < heldout < 1.0:
        raise ConfigError(f"heldout must be in (0, 1), got {heldout!r}")
    names = list(tasks) if tasks else TASKS.names()
    specs = [TASKS.get(nm) for nm in names]
    kb = kb or KnowledgeBase(pack)
    skus = [p.sku for p in pack.products]
    random.Random(f"held:{seed}").shuffle(skus)
    n_held = max(1, round(heldout * len(skus))) if len(skus) >= 4 else 0
    ctx = TaskContext(pack=pack, kb=kb, lang=pack.language, seed=seed, teacher=teacher, logs=log_intents(logs),
                      held_skus=frozenset(skus[:n_held]), recommender=Recommender(pack, kb), heldout_share=heldout)
    checker = Checker(pack, kb)
    items: list[TaskItem] = []
    report: dict[str, dict[str, Any]] = {}
    n_h = max(1, round(per_task * heldout))
    for spec in specs:
        made_train = spec.make(ctx, per_task - n_h, False)
        train_inputs = {it.input_field for it in made_train}
        made_held = [it for it in spec.make(ctx, n_h, True) if it.input_field not in train_inputs]
        kept, dropped = [], []
        for i, it in enumerate(made_train + made_held):
            it.id = f"{spec.name}-{'h' if it.heldout else 't'}{i:04d}"
            problems = checker.check(it)
            (dropped if problems else kept).append((it, problems))
        items += [it for it, _ in kept]
        report[spec.name] = {"task_type": spec.task_type, "metric": spec.metric,
                             "train": sum(1 for it, _ in kept if not it.heldout),
                             "heldout": sum(1 for it, _ in kept if it.heldout), "dropped": len(dropped),
                             "problems": [f"{it.id}: {p[0]}" for it, p in dropped[:3]]}
        if not kept:
            report[spec.name]["skipped"] = "this pack has nothing to make the task from"
    return TaskSet(items, report)


__all__ = ["DEFAULT_HELDOUT", "DEFAULT_PER_TASK", "TASKS", "TaskContext", "TaskSet", "TaskSpec", "attributes",
           "category_of", "col_word", "generate_tasks", "log_intents"]
