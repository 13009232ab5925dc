"""The paper's six probe inputs (Table VI / Fig. 3), in English and Chinese.

The paper prints only the English translations; the Chinese lines are reconstructed as
the natural Taobao phrasing of each (the originals were in Chinese, §IV-A) — the same
strings the synthetic shop puts in its `chats/eval.jsonl` (a test keeps them in step)."""

from __future__ import annotations

from endcloud.scoring.inputs import EvalInput

PAPER_PROBES_EN = [
    "Hello",
    "Can I choose the delivery service?",
    "520401029636",
    "Can I get a discount?",
    "This is so frustrating. I've been waiting for this delivery since yesterday and haven't dared to leave the house.",
    "Will you ship the order if I purchase it today?",
]

PAPER_PROBES_ZH = [
    "你好",
    "可以选快递吗？",
    "520401029636",
    "能便宜点吗？",
    "真的太让人着急了，从昨天就一直等这个快递，都不敢出门。",
    "今天买的话今天能发货吗？",
]

# The shop generator's intent for each probe (same order), so fact checks line up.
PAPER_PROBE_INTENTS = ["greeting", "courier", "bare_number", "coupon", "complaint", "ship_today"]


def paper_probes(lang: str = "en", *, shop_eval=None) -> list[EvalInput]:
    """The six probes as eval inputs: lang "en", "zh" or "both" (ids p1..p6, p1-zh..p6-zh).

    `shop_eval`: a synthetic shop's `chats/eval.jsonl`; the probes then carry that shop's
    true facts (its courier, its coupon, ...) so fact accuracy can be reported for them."""
    out: list[EvalInput] = []
    if lang in ("en", "both"):
        out += [EvalInput(id=f"p{i}", query=q, lang="en", intent=t) for i, (q, t) in enumerate(zip(PAPER_PROBES_EN, PAPER_PROBE_INTENTS), 1)]
    if lang in ("zh", "both"):
        out += [EvalInput(id=f"p{i}-zh" if lang == "both" else f"p{i}", query=q, lang="zh", intent=t)
                for i, (q, t) in enumerate(zip(PAPER_PROBES_ZH, PAPER_PROBE_INTENTS), 1)]
    if not out:
        from endcloud.errors import ConfigError

        raise ConfigError(f"probe language must be en, zh or both, got {lang!r}")
    if shop_eval is not None:
        from endcloud.fileio import read_jsonl

        known = {(row.get("lang"), row.get("query")): row.get("facts") for row in read_jsonl(shop_eval)}
        for item in out:
            item.facts = known.get((item.lang, item.query), item.facts)
    return out
