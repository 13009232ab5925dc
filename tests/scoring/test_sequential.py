"""The canary's decision rule (`endcloud.scoring.sequential`): few turns decide nothing, a
clearly worse candidate is rolled back, an equal one ramps and then promotes, and the
same counts always give the same verdict."""

from __future__ import annotations

import pytest

from endcloud.errors import ConfigError
from endcloud.scoring.sequential import ArmStats, GuardRule, judge, p_latency_worse, p_rate_worse

RULE = GuardRule(min_samples=50, stage_samples=50, draws=4000)


def arm(n: int, takeover: float = 0.2, ungrounded: float = 0.05, downvote: float = 0.0, latency=(300.0, 50.0)):
    m, sd = latency
    return ArmStats(turns=n, takeover=round(n * takeover), checked=n, ungrounded=round(n * ungrounded),
                    rated=n, downvote=round(n * downvote), latency_n=n, latency_sum=n * m,
                    latency_sq=n * (sd * sd + m * m) - sd * sd)


def test_a_few_turns_decide_nothing_however_bad():
    v = judge(arm(2000), arm(49, takeover=1.0, ungrounded=1.0), RULE, stage_turns=49, last_stage=False)
    assert v.action == "hold" and "min_samples" in v.reasons[0]


def test_a_clearly_worse_candidate_is_rolled_back_with_its_evidence():
    v = judge(arm(2000), arm(60, takeover=0.5), RULE, stage_turns=10, last_stage=False)
    assert v.action == "rollback"
    assert v.reasons[0].startswith("takeover") and v.evidence["takeover"]["p_worse"] >= RULE.confidence
    assert v.evidence["takeover"]["candidate"] == pytest.approx(0.5)


def test_a_slower_candidate_is_rolled_back_on_latency():
    v = judge(arm(2000), arm(100, latency=(600.0, 50.0)), RULE, stage_turns=100, last_stage=False)
    assert v.action == "rollback" and any(r.startswith("latency") for r in v.reasons)


def test_an_equal_candidate_ramps_after_its_stage_samples_and_promotes_at_the_last_stage():
    champ, cand = arm(4000), arm(600)
    assert judge(champ, cand, RULE, stage_turns=20, last_stage=False).action == "hold"  # this share: too few yet
    assert judge(champ, cand, RULE, stage_turns=200, last_stage=False).action == "ramp"
    assert judge(champ, cand, RULE, stage_turns=200, last_stage=True).action == "promote"


def test_the_verdict_is_deterministic_and_the_posterior_is_sane():
    a = p_rate_worse((20, 100), (40, 100), 0.05)
    assert a == p_rate_worse((20, 100), (40, 100), 0.05) and a > 0.95
    assert p_rate_worse((40, 100), (20, 100), 0.05) < 0.01
    assert p_latency_worse(arm(100), arm(1), 0.25) is None  # under two samples: no opinion


def test_the_rule_refuses_bad_settings_naming_them():
    with pytest.raises(ConfigError, match="confidence"):
        GuardRule(confidence=1.5)
    with pytest.raises(ConfigError, match="min_samples"):
        GuardRule(min_samples=0)
    assert GuardRule.from_json({"min_samples": 7, "unknown": 1}).min_samples == 7
