"""The paired-bootstrap interval: exact where the answer is known, wider for fewer cases."""

from __future__ import annotations

import math

import pytest

from endcloud.scoring.stats import paired_interval


def test_a_constant_difference_has_no_spread():
    assert paired_interval([0.25] * 40) == [0.25, 0.25]


def test_the_interval_holds_the_mean_and_narrows_with_more_cases():
    few = [1, 0, 0, -1, 1, 0, 1, 0]  # mean 0.25
    lo, hi = paired_interval(few, seed=1)
    assert lo < 0.25 < hi and lo < 0 < hi  # 8 cases cannot tell +0.25 from nothing
    lo_many, hi_many = paired_interval(few * 20, seed=1)
    assert lo_many > 0 and hi_many - lo_many < hi - lo  # 160 such cases can
    assert paired_interval(few, seed=1) == paired_interval(few, seed=1)  # seeded: the same on every run


def test_no_cases_and_a_bad_level():
    assert all(math.isnan(x) for x in paired_interval([]))
    with pytest.raises(ValueError, match="level"):
        paired_interval([1.0], level=1.5)
