"""Two adapters served at once by one engine (`AsyncEngine.add_variant`, per-request `variant=`):
each reply is exactly what its own adapter writes alone, under concurrent load, on the
continuous batch and on the static one; a dropped label falls back to the main adapter."""

from __future__ import annotations

import asyncio

import pytest

from endcloud.errors import ConfigError
from endcloud.runtime.async_engine import AsyncEngine

pytestmark = pytest.mark.usefixtures("few_threads")

QUESTIONS = ["你好", "几天发货？", "Do you ship today?", "有优惠券吗", "Can I return it?", "这款毛巾是纯棉的吗"]


@pytest.fixture(scope="module")
def loras(tiny_base_dir, tmp_path_factory):
    """Two random (non-zero) LoRA adapters: their greedy replies differ from each other's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
        cfg = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
        d = tmp_path_factory.mktemp(f"lora{seed}")
        get_peft_model(model, cfg).save_pretrained(d)
        out.append(d)
    return out


def expected(model, variant) -> dict[str, str]:
    gens = model.generate([[{"role": "user", "content": q}] for q in QUESTIONS], max_new_tokens=8, temperature=0.0,
                          variant=variant)
    return {q: g.text for q, g in zip(QUESTIONS, gens)}


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_each_request_runs_on_the_adapter_it_names(tiny_base_dir, loras, batching):
    from endcloud.runtime.model import EndModel

    a1, a2 = loras
    model = EndModel.load(tiny_base_dir, a1, threads=1)
    want = {"main": expected(model, None), "cand": expected(model, model.load_variant(a2))}
    assert want["main"] != want["cand"]

    async def run():
        engine = AsyncEngine(model, adapter="shop/v1", batching=batching, worker="thread", max_batch=4)
        engine.start()
        engine.add_variant("shop/v2", a2)
        assert engine.variants == ["shop/v2"]
        try:
            async def one(i):
                q, arm = QUESTIONS[i % len(QUESTIONS)], ("shop/v2" if i % 3 == 0 else None)
                gen, _ = await engine.generate_scored([{"role": "user", "content": q}], query=q, max_new_tokens=8,
                                                      temperature=0.0, top_p=1.0, session=f"s{i}", variant=arm)
                return q, arm, gen

            rows = await asyncio.gather(*(one(i) for i in range(24)))
            engine.drop_variant("shop/v2")
            q = QUESTIONS[0]
            late, _ = await engine.generate_scored([{"role": "user", "content": q}], query=q, max_new_tokens=8,
                                                   temperature=0.0, top_p=1.0, variant="shop/v2")
            return rows, late
        finally:
            await engine.stop()

    rows, late = asyncio.run(run())
    for q, arm, gen in rows:
        assert gen.adapter == (arm or "shop/v1")
        assert gen.text == want["cand" if arm else "main"][q], (arm, q)
    assert late.adapter == "shop/v1" and late.text == want["main"][QUESTIONS[0]]  # dropped: the champion answers


def test_an_engine_that_serves_one_adapter_says_so():
    from endcloud.testing import ScriptedModel

    engine = AsyncEngine(ScriptedModel())
    with pytest.raises(ConfigError, match="one adapter at a time"):
        engine.add_variant("shop/v2", None)


def test_a_variant_switch_takes_every_request_waiting_for_it(end_model):
    """Arrivals interleave A, B, A, B while A's batch runs: after it drains, both B requests
    start in one batch (not one row per switch), then both waiting A requests."""
    from endcloud.runtime.scheduler import Scheduler, StepRequest
    from tests.runtime.test_core import Script

    weights = end_model.variant.weights

    def req(text, n=3):
        return StepRequest(end_model.prompt_ids([{"role": "user", "content": text}]), n)

    a1, b1, a2, b2, a3 = req("hello", 6), req("在吗"), req("hi"), req("你好"), req("hey")
    built = []

    def build(key):
        built.append(key)
        return Scheduler(weights, stop_ids=[], max_batch=4)

    core = Script(build, [[("A", a1)], [("B", b1), ("A", a2), ("B", b2), ("A", a3)]])
    core.run()
    assert built == ["A", "B"]  # three batches, not five; the third reuses A's idle scheduler (its prefix cache)
    assert all(r.done and len(r.tokens) == r.max_new_tokens for r in (a1, b1, a2, b2, a3))
    admitted = [rep.admitted for rep in core.reports if rep.admitted]
    assert admitted == [1, 2, 2], admitted


def test_an_idle_scheduler_of_the_other_variant_is_kept_for_a_while_then_dropped(end_model, monkeypatch):
    """A canary's two variants alternate without rebuilding (each keeps its prefix cache); a
    variant no request asks for any more (an adapter swapped out) lets its scheduler go."""
    from endcloud.runtime import core as core_mod
    from endcloud.runtime.scheduler import Scheduler, StepRequest
    from tests.runtime.test_core import Script

    weights = end_model.variant.weights

    def req(text, n=2):
        return StepRequest(end_model.prompt_ids([{"role": "user", "content": text}]), n)

    built = []

    def build(key):
        built.append(key)
        return Scheduler(weights, stop_ids=[], max_batch=4)

    core = Script(build, [[("A", req("hello"))], [("B", req("在吗"))], [("A", req("hi"))], [("B", req("你好"))]])
    core.run()
    assert built == ["A", "B"]  # A, B, A, B: two schedulers built, each reused
    assert core.stats()["finished"] == 4  # the idle one's counters are in the figures
    before = core.stats()["finished"]
    monkeypatch.setattr(core_mod, "IDLE_KEEP_S", 0.0)
    core._drop_idle(older_than=core_mod.IDLE_KEEP_S)
    assert core._idle is None and core.stats()["finished"] == before  # retired: counters kept in the totals
