"""One prompt builder for every end-model turn: training, evaluation and serving.

The end model answers from the shop's knowledge only if it learned to read it, and it only
learns that if every training example carries the snippets retrieval returns for its
question, in the very place a served turn puts them. So both sides call this module:

    turns ─► retrieve(kb, turns, k) ─► snippets ─► build_messages(turns, snippets, late=…) ─► messages

    serve  (TurnService)      : the customer's conversation, system text, profile lines
    train  (end.data.ground_examples) : pairs, distilled labels, evolve pseudo-labels, corrections
    eval / onboarding         : the held-out questions

Where the knowledge goes: after the question, as a late system message, when the chat
template renders one there (ChatML, Qwen2.5, Llama 3) — the conversation before it then stays
the same text turn after turn and the server's prefix cache keeps hitting; otherwise it joins
the leading system message. `late` says which; serving and training ask the tokenizer the
same question (`endcloud.end.base.renders_late_system`).

Retrieval reads the conversation, not only the newest message: a follow-up that names no
product ("它有货吗？", "how much is it?") still gets the catalog row of the product the
customer asked about a turn earlier, so the model (and the grounding check) can see its facts.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from endcloud.kb.search import KnowledgeBase, Snippet

HEADER = "Shop knowledge:"
CUSTOMER_HEADER = "Customer:"
DEFAULT_K = 3
# Turns of the conversation (newest first, excluding the question) searched for a product the
# question may refer back to.
LOOKBACK = 4


def knowledge_text(snippets: Sequence[Snippet]) -> str | None:
    """The knowledge block the end model reads ("Shop knowledge:\\n- …"); None when empty."""
    if not snippets:
        return None
    return HEADER + "\n" + "\n".join(f"- {sn.text}" for sn in snippets)


def customer_text(orders: Iterable[dict[str, Any]] = (), preferences: dict[str, Any] | None = None) -> str | None:
    """The customer's own data as the models see it ("Customer:\\norder order_id: …")."""
    lines = ["order " + ", ".join(f"{k}: {v}" for k, v in o.items() if v not in (None, "")) for o in orders]
    if preferences:
        lines.append("preferences: " + ", ".join(f"{k}: {v}" for k, v in preferences.items()))
    return CUSTOMER_HEADER + "\n" + "\n".join(lines) if lines else None


def question_of(turns: Sequence[dict[str, str]]) -> str:
    """The newest customer message ('' when there is none)."""
    return next((m["content"] for m in reversed(turns) if m.get("role") == "user"), "")


def retrieve(kb: KnowledgeBase | None, turns: Sequence[dict[str, str]], k: int = DEFAULT_K) -> list[Snippet]:
    """The k snippets for the newest question (its typos read as the shop's words,
    `KnowledgeBase.spell`), plus (as a (k+1)-th) the catalog row of the product an earlier
    turn named when the question names none."""
    if kb is None or k <= 0:
        return []
    query = kb.spell(question_of(turns))  # the customer's typos against the shop's words
    if not query.strip():
        return []
    snippets = kb.search(query, k=k)
    if kb.product(query) is not None:
        return snippets
    have = {(s.source, s.ref) for s in snippets}
    earlier = [m["content"] for m in turns[:-1] if m.get("role") in ("user", "assistant")][-LOOKBACK:]
    for text in reversed(earlier):
        p = kb.product(kb.spell(text))
        if p is None:
            continue
        if ("catalog", p.sku) not in have:
            row = next((s for s in kb.search(p.sku, k=1) if s.source == "catalog" and s.ref == p.sku), None)
            if row is not None:
                snippets = snippets + [Snippet(row.text, row.source, 0.0, row.ref)]
        break
    return snippets


def build_messages(turns: Sequence[dict[str, str]], snippets: Sequence[Snippet] = (), *,
                   system_parts: Sequence[str] = (), late: bool = True) -> list[dict[str, str]]:
    """The messages an end model is given: [system] + turns (+ knowledge after the question).

    `turns` are the conversation without system messages, ending with the customer's
    question; `system_parts` (the client's system text, the customer's data) form the
    leading system message; the knowledge is a late system message when `late`, else part
    of the leading one.
    """
    knowledge = knowledge_text(snippets)
    parts = [p for p in system_parts if p]
    if knowledge is not None and not late:
        parts.append(knowledge)
    system = "\n\n".join(parts)
    out = ([{"role": "system", "content": system}] if system else []) + [dict(m) for m in turns if m["role"] != "system"]
    if knowledge is not None and late:
        out.append({"role": "system", "content": knowledge})
    return out


def ground(messages: Sequence[dict[str, str]], kb: KnowledgeBase | None, *, k: int = DEFAULT_K,
           late: bool = True) -> list[dict[str, str]]:
    """`messages` (an example's conversation: optional system + turns ending with the question)
    with the knowledge retrieval finds for it, placed as serving places it."""
    system_parts = [m["content"] for m in messages if m["role"] == "system" and not m["content"].startswith(HEADER)]
    turns = [m for m in messages if m["role"] != "system"]
    return build_messages(turns, retrieve(kb, turns, k), system_parts=system_parts, late=late)


__all__ = ["CUSTOMER_HEADER", "DEFAULT_K", "HEADER", "build_messages", "customer_text", "ground", "knowledge_text",
           "question_of", "retrieve"]
