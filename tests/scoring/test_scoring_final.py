"""Eq. 1 and the Θ rule on hand-computed values; the escalation decision; fact accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from endcloud.errors import ConfigError, DataError
from endcloud.scoring import fact_accuracy, final_score, should_escalate


def test_final_score_blends_sim_and_match_when_cloud_matches():
    # 0.8·0.5 + 0.2·1.0 = 0.6 ; 0.8·0.9 + 0.2·0.4 = 0.8
    out = final_score([0.5, 0.9], [1.0, 0.4], [0.9, 0.2])
    np.testing.assert_allclose(out, [0.6, 0.8])


def test_theta_rule_uses_similarity_alone_below_theta():
    # cloud_match 0.19 < Θ = 0.2 -> Final = Sim = 0.3, whatever Match says.
    out = final_score([0.3, 0.3], [1.0, 1.0], [0.19, 0.2])
    np.testing.assert_allclose(out, [0.3, 0.8 * 0.3 + 0.2 * 1.0])  # 0.2 is not < 0.2: blended


def test_final_score_custom_alpha_theta_and_scalars():
    assert float(final_score(0.5, 0.0, 0.6, alpha=0.5, theta=0.7)) == pytest.approx(0.5)  # below Θ
    assert float(final_score(0.5, 0.0, 0.8, alpha=0.5, theta=0.7)) == pytest.approx(0.25)
    assert final_score(np.ones((2, 3)), np.zeros((2, 3)), np.ones((2, 3))).shape == (2, 3)


def test_final_score_rejects_alpha_outside_unit_interval():
    with pytest.raises(ConfigError, match="alpha must be in"):
        final_score([0.5], [0.5], [0.5], alpha=1.5)


def test_should_escalate_is_a_separate_threshold_decision():
    assert should_escalate(0.39, 0.4) is True
    assert should_escalate(0.4, 0.4) is False
    np.testing.assert_array_equal(should_escalate(np.array([0.1, 0.9]), 0.5), [True, False])


def test_fact_accuracy_normalises_and_needs_every_fact():
    replies = ["We ship with ZTO  Express; orders before 4 pm ship today.", "亲，满９９减１０哦", "Hello", "It is 35 yuan"]
    facts = [["zto express", "4 pm"], ["99", "10"], None, ["35", "cotton"]]
    out = fact_accuracy(replies, facts)
    assert out[0] == 1.0 and out[1] == 1.0  # whitespace and full-width digits normalised
    assert math.isnan(out[2])  # no facts: not judged
    assert out[3] == 0.0  # one fact missing
    assert np.nanmean(out) == pytest.approx(2 / 3)


def test_fact_accuracy_length_mismatch_is_a_data_error():
    with pytest.raises(DataError, match="one facts list per reply"):
        fact_accuracy(["a", "b"], [["a"]])


def test_the_paper_rule_holds_alpha_and_theta_and_checks_them():
    from endcloud.scoring import PaperRule

    rule = PaperRule(alpha=0.5, theta=0.7)
    np.testing.assert_allclose(rule.final([0.5, 0.5], [0.0, 0.0], [0.6, 0.8]),
                               final_score([0.5, 0.5], [0.0, 0.0], [0.6, 0.8], alpha=0.5, theta=0.7))
    assert float(rule.final(0.5, 0.0, 0.8)) == pytest.approx(0.25)
    assert PaperRule().alpha == 0.8 and PaperRule().theta == 0.2  # the paper's numbers by default
    with pytest.raises(ConfigError, match="theta"):
        PaperRule(theta=1.2)
