"""The demo's results do not depend on the machine: same seed, same report (times aside);
a model under its quality bar stops the demo with the reason."""

from __future__ import annotations

from dataclasses import replace

import pytest

from endcloud.demo import DemoConfig, DemoQualityError, _quality, run_demo

pytestmark = pytest.mark.slow

# Times, ports and paths differ between runs by nature; everything else must not.
VOLATILE = {"seconds", "total_seconds", "stage_seconds", "trigger_to_decision_s", "url", "workspace", "tokens_per_s",
            "out_dir", "report", "adapter_dir", "elapsed_s", "wall_s",
            "round_id"}


def _figures(x):
    if isinstance(x, dict):
        return {k: _figures(v) for k, v in x.items() if k not in VOLATILE and not k.endswith("_seconds")}
    if isinstance(x, list):
        return [_figures(v) for v in x]
    if isinstance(x, float):
        return round(x, 6)
    return x


def _small(**kw) -> DemoConfig:
    return DemoConfig.quick(sessions=200, products=8, distill_pairs=60, customers=6, evolve_rounds=1, evolve_steps=6,
                            tuner_steps={"lora": 8, "prefix": 3, "ptuning-v2": 3}, eval_inputs=4, second_shop=False,
                            max_new_tokens=16, **kw)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    cfg = _small()
    root = tmp_path_factory.mktemp("demo")
    a = run_demo(root / "a", config=cfg, echo=lambda m: None, fresh=True)
    b = run_demo(root / "b", config=cfg, echo=lambda m: None, fresh=True)
    return cfg, root, a, b


def test_two_runs_with_the_same_seed_build_the_same_models(two_runs):
    cfg, root, a, b = two_runs
    fa, fb = _figures(a), _figures(b)
    for key in ("shop", "corpus", "distill", "pretrain", "tuners", "quality"):
        assert fa[key] == fb[key], key
    assert fa["online"]["before"]["turns"] == cfg.customers

    # the same workspace under a bar its model cannot clear: the demo stops and says why
    score = a["quality"]["end_facts_heldout"]
    if score < 1.0:
        from endcloud.cloud import default_teacher
        from endcloud.config import Workspace

        ws = Workspace.resolve(root / "a")
        with pytest.raises(DemoQualityError, match="under the bar"):
            _quality(ws, replace(cfg, min_end_facts=1.0), default_teacher(shop=ws.shop, workspace=ws))


def test_two_runs_with_the_same_seed_serve_the_same_figures(two_runs):
    _, _, a, b = two_runs
    assert _figures(a)["online"] == _figures(b)["online"]
