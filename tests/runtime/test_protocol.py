"""The end-model protocol: what every engine offers, and what decides continuous batching."""

from __future__ import annotations

import pytest

from endcloud.runtime import SchedulableModel, ServedModel, Variant, schedulable
from endcloud.testing import ScriptedModel

pytestmark = pytest.mark.usefixtures("few_threads")


def test_the_in_process_model_is_schedulable_and_a_swap_replaces_its_variant(tiny_base_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from endcloud.runtime.model import EndModel

    m = EndModel.load(tiny_base_dir)
    assert isinstance(m, ServedModel) and isinstance(m, SchedulableModel) and schedulable(m)
    before = m.variant
    assert isinstance(before, Variant) and before.method == "base" and before.weights is not None
    lora = tmp_path / "lora"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base_dir),
                   LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(lora)
    m.swap_adapter(lora)
    after = m.variant
    assert after is not before and after.method == "lora" and after.adapter_dir == lora
    assert before.method == "base"  # immutable: a reply that started on it finishes on it


def test_a_model_without_fast_weights_is_served_but_not_scheduled(tiny_base_dir):
    from endcloud.runtime.model import EndModel

    slow = EndModel.load(tiny_base_dir, fast=False)
    assert isinstance(slow, SchedulableModel) and slow.variant.weights is None and not schedulable(slow)


def test_doubles_and_remote_engines_serve_the_protocol_without_being_scheduled():
    from endcloud.runtime.vllm import VLLMEndModel

    double = ScriptedModel()
    assert isinstance(double, ServedModel) and not schedulable(double)
    v = double.variant
    double.swap_adapter("adapters/shop/v2")
    assert double.variant is not v
    remote = VLLMEndModel(base_url="http://127.0.0.1:1/v1", model="base")
    try:
        assert isinstance(remote, ServedModel) and not isinstance(remote, SchedulableModel) and not schedulable(remote)
        assert remote.variant.name == "base" and remote.variant.method == "base"
    finally:
        remote.close()
