"""Guards for the figures in docs/bench/privacy.md: the generator is sound and structured recall is 1.0."""

from __future__ import annotations

import random

from endcloud.privacy import detect
from endcloud.privacy.synth import STRUCTURED, make_cases, make_mixed_case, make_noisy_case


def test_generated_gold_spans_cut_their_values():
    for c in make_cases(300, seed=5):
        for s, e, _t, v in c.gold:
            assert c.text[s:e] == v


def test_structured_recall_is_one_and_negatives_stay_clean():
    rng = random.Random(9)
    cases = make_cases(800, seed=9)
    cases += [make_mixed_case(rng, "zh" if i % 2 else "en") for i in range(100)]
    cases += [make_noisy_case(rng, STRUCTURED[i % len(STRUCTURED)], "zh" if i % 2 else "en") for i in range(120)]
    missed, false_hits = [], []
    for c in cases:
        spans = detect(c.text)
        if not c.gold and spans:
            false_hits.append((c.text, spans))
        for s, e, t, v in c.gold:
            covered = {i for sp in spans if sp.type == t for i in range(sp.start, sp.end)}
            if t in STRUCTURED and not all(i in covered for i in range(s, e)):
                missed.append((t, v, c.text))
    assert missed == []
    assert false_hits == []
