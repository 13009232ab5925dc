"""The routing decision and the cheap signals it reads (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from endcloud.serve.router import Router, Signals
from endcloud.scoring.matching import LexicalMatcher
from endcloud.serve.signals import frustration
from endcloud.text import estimate_tokens


def test_forced_models_ignore_signals():
    r = Router(min_match=0.5)
    bad = Signals(match=0.0, confidence=0.0, frustration=1.0)
    assert r.decide(bad, model="end").route == "end"
    assert r.decide(Signals(match=1.0, confidence=1.0), model="cloud").route == "cloud"


@pytest.mark.parametrize(
    "signals, route, reason",
    [
        (Signals(match=0.9, confidence=0.9, frustration=0.0), "end", "checks passed"),
        (Signals(match=0.1, confidence=0.9, frustration=0.0), "cloud", "match"),
        (Signals(match=0.9, confidence=0.05, frustration=0.0), "cloud", "confidence"),
        (Signals(match=0.9, confidence=0.9, frustration=0.75), "cloud", "frustration"),
        (Signals(match=None, confidence=0.9, empty=True), "cloud", "empty_reply"),
    ],
)
def test_thresholds(signals, route, reason):
    d = Router(min_match=0.3, min_confidence=0.1, max_frustration=0.5).decide(signals)
    assert d.route == route
    assert any(reason in x for x in d.reasons), d.reasons


def test_every_failed_check_is_a_reason():
    d = Router(min_match=0.3, min_confidence=0.1, max_frustration=0.5).decide(Signals(match=0.0, confidence=0.0, frustration=1.0))
    assert len(d.reasons) == 3


@pytest.mark.parametrize("text", ["你们这什么破服务，我要投诉！！", "This is the WORST service, I want a real person", "还没到？到底怎么回事"])
def test_frustrated_customers_reach_the_threshold(text):
    assert frustration(text) >= 0.5


@pytest.mark.parametrize("text", ["请问几天发货？", "Do you ship to Canada?", "Thanks, that helps!"])
def test_calm_customers_do_not(text):
    assert frustration(text) < 0.5


def test_lexical_matcher_prefers_related_replies():
    m = LexicalMatcher()
    s = m.score(["几天发货", "do you ship today"], ["下单后两天内发货", "we ship today before 4 pm"])
    unrelated = m.score(["几天发货", "do you ship today"], ["毛巾是纯棉的", "the towel is cotton"])
    assert np.all(s > unrelated)
    assert np.all((s >= 0) & (s <= 1))
    assert m.score([""], ["x"])[0] == 0.0


def test_token_estimate_counts_cjk_per_character():
    assert estimate_tokens("几天发货") == 4
    assert estimate_tokens("abcdefgh") == 2


def test_an_end_hand_off_goes_to_the_cloud():
    from endcloud.cloud.reference import REPLIES
    from endcloud.serve.router import Router, Signals, is_handoff

    handoffs = tuple(REPLIES["unknown"].values())
    # the template as a small model writes it: spacing and punctuation may differ
    assert is_handoff("抱歉亲，这个问题我这边没有确切信息， 帮您转人工客服确认一下哦", handoffs)
    assert is_handoff("sorry, i don't have reliable information on that. let me pass you to a colleague who can check!", handoffs)
    assert not is_handoff("亲，运费8元。", handoffs) and not is_handoff("", handoffs)
    d = Router(min_match=0.0).decide(Signals(match=0.9, handoff=True))
    assert d.route == "cloud" and "end_handoff" in d.reasons
    assert Router(min_match=0.0).decide(Signals(match=0.9)).route == "end"
