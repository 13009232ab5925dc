"""The server's arithmetic: FedAvg by examples, the robust aggregators against a poisoned shop,
Flower's DP wrapper and the budget it reports, seeded sampling. No network here."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install --no-deps -r requirements-federate.txt")

from endcloud.federate import _flower as fl
from endcloud.federate.privacy import DPSettings, delta_of, epsilon
from endcloud.federate.strategy import AGGREGATORS, AdapterStrategy, make_strategy, screen

SHAPES = [(2, 8), (8, 2), (4, 4)]


def _arrays(rng, scale=1.0):
    return [(rng.normal(size=s) * scale).astype(np.float32) for s in SHAPES]


def _result(name, arrays, n):
    res = fl.FitRes(status=fl.Status(code=fl.Code.OK, message=""), parameters=fl.ndarrays_to_parameters(arrays),
                    num_examples=n, metrics={"node": name, "loss": 1.0})
    return SimpleNamespace(cid=name), res


def _round(strategy, global_arrays, shops):
    """One aggregate_fit on `shops` = [(name, arrays, examples)]; returns the new global arrays."""
    strategy.current = [a.copy() for a in global_arrays]
    params, _ = strategy.aggregate_fit(1, [_result(n, a, k) for n, a, k in shops], [])
    return None if params is None else fl.parameters_to_ndarrays(params)


@pytest.fixture
def honest():
    """A global, three honest shops whose updates agree (a shared direction + a little noise)."""
    rng = np.random.default_rng(0)
    g = _arrays(rng)
    direction = _arrays(rng, 0.1)
    shops = [(f"shop-{i}", [a + d + n for a, d, n in zip(g, direction, _arrays(rng, 0.01))], k)
             for i, k in enumerate((10, 20, 30))]
    return g, direction, shops


def _mean_update(g, shops, weighted=True):
    w = np.array([k if weighted else 1 for _, _, k in shops], dtype=np.float64)
    return [sum(wi * (a[j] - g[j]) for wi, (_, a, _) in zip(w, shops)) / w.sum() for j in range(len(g))]


def _dist(a, b):
    return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b))))


def test_fedavg_weights_each_shop_by_its_examples(honest):
    g, _, shops = honest
    new = _round(AdapterStrategy(initial=g), g, shops)
    expected = [x + u for x, u in zip(g, _mean_update(g, shops))]
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(new, expected))
    uniform = [x + u for x, u in zip(g, _mean_update(g, shops, weighted=False))]
    assert _dist(new, uniform) > 1e-4  # the weighting mattered


@pytest.mark.parametrize("attack", ["scaled", "sign-flipped"])
@pytest.mark.parametrize("aggregator", ["median", "trimmed", "screened"])
def test_a_poisoned_shop_is_caught_by_the_robust_aggregators(honest, attack, aggregator):
    g, direction, shops = honest
    bad = [a + d * (20.0 if attack == "scaled" else -3.0) for a, d in zip(g, direction)]
    poisoned = shops + [("mallory", bad, 30)]
    target = _mean_update(g, shops)
    plain = _round(AdapterStrategy(initial=g), g, poisoned)
    robust_strategy = AdapterStrategy(initial=g, aggregator=aggregator)
    robust = _round(robust_strategy, g, poisoned)
    plain_err = _dist([p - x for p, x in zip(plain, g)], target)
    robust_err = _dist([r - x for r, x in zip(robust, g)], target)
    honest_norm = _dist(target, [np.zeros_like(t) for t in target])
    assert plain_err > 0.8 * honest_norm  # plain FedAvg is dragged far off by one shop
    assert robust_err < 0.25 * honest_norm  # the robust aggregate stays with the honest shops
    assert list(robust_strategy.rounds[-1].flagged) == ["mallory"]  # and the report names the culprit
    assert "mallory" in robust_strategy.rounds[-1].flagged and robust_strategy.rounds[-1].applied


def test_screen_needs_a_majority_and_flags_by_norm_and_direction(honest):
    g, direction, shops = honest
    ups = [[a - x for a, x in zip(arr, g)] for _, arr, _ in shops]
    assert list(screen(ups[:2] + [[d * -1 for d in direction]]).flagged) == [2]  # 3 are a majority already
    flags = screen(ups + [[d * -1 for d in direction]])
    assert list(flags.flagged) == [3] and "against" in flags.flagged[3]
    flags = screen(ups + [[d * 10 for d in direction]])
    assert list(flags.flagged) == [3] and "norm" in flags.flagged[3]
    assert screen(ups[:2]).flagged == {}  # two shops: no majority to judge by


def test_trimmed_mean_trims_one_of_four():
    ups = [[np.array([v], dtype=np.float32)] for v in (0.0, 1.0, 2.0, 100.0)]
    flags = screen(ups)
    out = AGGREGATORS["trimmed"](ups, [1, 1, 1, 1], flags)
    assert out[0][0] == pytest.approx(1.5)  # 0 and 100 cut


def test_a_round_without_enough_answers_keeps_the_global(honest):
    g, _, shops = honest
    s = AdapterStrategy(initial=g, min_fit_clients=2)
    assert _round(s, g, shops[:1]) is None
    assert s.rounds[-1].applied is False and s.rounds[-1].answered == ["shop-0"]


def test_dp_wrapper_clips_at_the_shops_and_noises_the_mean(honest):
    g, _, shops = honest
    dp = DPSettings(noise_multiplier=2.0, clipping_norm=0.05)
    inner, wrapped = make_strategy(initial=g, dp=dp, num_sampled=3)
    cm = fl.SimpleClientManager()
    for name, _, _ in shops:
        cm.register(SimpleNamespace(cid=name))
    ins = wrapped.configure_fit(1, fl.ndarrays_to_parameters(g), cm)
    assert len(ins) == 3 and all(i.config[fl.KEY_CLIPPING_NORM] == 0.05 for _, i in ins)
    # what a shop does with it (ShopClient.fit): Flower's clipping of its own update
    clipped = []
    for name, arrays, k in shops:
        out = [a.copy() for a in arrays]
        fl.compute_clip_model_update(out, g, 0.05)
        clipped.append((name, out, k))
        assert _dist(out, g) <= 0.05 + 1e-6
    params, _ = wrapped.aggregate_fit(1, [_result(n, a, k) for n, a, k in clipped], [])
    noise = fl.parameters_to_ndarrays(params)
    mean = [x + u for x, u in zip(g, _mean_update(g, clipped, weighted=False))]  # DP weighs shops alike
    resid = np.concatenate([np.ravel(a - b) for a, b in zip(noise, mean)])
    assert resid.std() == pytest.approx(2.0 * 0.05 / 3, rel=0.35)  # z·C/n
    assert inner.uniform is True
    # a sampled shop that fails voids the round under DP: nothing is released, nothing spent
    params, _ = wrapped.aggregate_fit(2, [_result(n, a, k) for n, a, k in clipped[:2]], [RuntimeError("gone")])
    assert params is None


def test_dp_refuses_a_median_it_is_not_calibrated_for(honest):
    from endcloud.errors import ConfigError

    with pytest.raises(ConfigError, match="fedavg"):
        make_strategy(initial=honest[0], dp=DPSettings(), aggregator="median", num_sampled=3)


def test_privacy_budget_matches_the_gaussian_mechanism():
    # one round at z = 1: the analytic Gaussian mechanism's epsilon at delta 1e-5 is about 4.38
    e1 = epsilon(1.0, 1, 1e-5)
    assert e1 == pytest.approx(4.38, abs=0.02)
    assert delta_of(e1, 1.0) == pytest.approx(1e-5, rel=1e-3)
    assert epsilon(1.0, 10, 1e-5) > e1  # more rounds cost more
    assert epsilon(2.0, 10, 1e-5) < epsilon(1.0, 10, 1e-5)  # more noise costs less
    assert epsilon(1.0, 0, 1e-5) == 0.0
    assert DPSettings(noise_multiplier=1.0).budget(1)["epsilon"] == pytest.approx(e1)


def test_sampling_is_seeded_and_samples_a_fraction(honest):
    g = honest[0]
    cm = fl.SimpleClientManager()
    for i in range(6):
        cm.register(SimpleNamespace(cid=f"c{i}"))

    def picks(seed):
        s = AdapterStrategy(initial=g, fraction_fit=0.5, seed=seed)
        return [sorted(c.cid for c, _ in s.configure_fit(r, fl.ndarrays_to_parameters(g), cm)) for r in (1, 2, 3)]

    a, b = picks(7), picks(7)
    assert a == b and all(len(p) == 3 for p in a)
    assert len({tuple(p) for p in a + picks(8)}) > 1
