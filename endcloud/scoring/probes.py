"""The paper's six probe inputs (Table VI / Fig. 3), in English and Chinese.

The paper prints only the English translations; the Chinese lines are reconstructed as
the natural Taobao phrasing of each (the originals were in Chinese, §IV-A)."""

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
    "可以优惠吗？",
    "太让人着急了，从昨天就一直在等这个快递，都不敢出门。",
    "今天拍的话今天发货吗？",
]


def paper_probes(lang: str = "en") -> list[EvalInput]:
    """The six probes as eval inputs: lang "en", "zh" or "both" (ids p1..p6, p1-zh..p6-zh)."""
    out: list[EvalInput] = []
    if lang in ("en", "both"):
        out += [EvalInput(id=f"p{i}", query=q, lang="en") for i, q in enumerate(PAPER_PROBES_EN, 1)]
    if lang in ("zh", "both"):
        out += [EvalInput(id=f"p{i}-zh" if lang == "both" else f"p{i}", query=q, lang="zh") for i, q in enumerate(PAPER_PROBES_ZH, 1)]
    if not out:
        from endcloud.errors import ConfigError

        raise ConfigError(f"probe language must be en, zh or both, got {lang!r}")
    return out
