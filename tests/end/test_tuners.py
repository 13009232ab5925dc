"""The tuner registry: names, Table IV defaults, validation, prefix vs P-tuning v2."""

from __future__ import annotations

import pytest

from endcloud.paper import PAPER
from endcloud.end.tuners import TUNERS, make_peft_config
from endcloud.errors import ConfigError, RegistryError


def test_registry_names_and_unknown_lists_valid():
    assert TUNERS.names() == ["lora", "prefix", "ptuning-v2"]
    with pytest.raises(RegistryError) as e:
        TUNERS.get("p-tuning")
    assert "'p-tuning'" in str(e.value) and "lora, prefix, ptuning-v2" in str(e.value)


def test_lora_defaults_are_table_iv():
    from peft import LoraConfig

    cfg = TUNERS["lora"]()
    assert isinstance(cfg, LoraConfig)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (PAPER.lora_r, PAPER.lora_alpha, PAPER.lora_dropout) == (8, 32, 0.1)
    assert set(cfg.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert set(TUNERS["lora"](target_modules="q_proj, v_proj").target_modules) == {"q_proj", "v_proj"}
    assert set(TUNERS["lora"](model_type="chatglm").target_modules) == {"query_key_value"}


def test_prefix_and_ptuning_v2_differ_in_reparameterisation():
    from peft import PrefixTuningConfig, PromptEncoderConfig

    prefix, v2 = TUNERS["prefix"](), TUNERS["ptuning-v2"]()
    for cfg in (prefix, v2):
        assert isinstance(cfg, PrefixTuningConfig) and not isinstance(cfg, PromptEncoderConfig)
        assert cfg.num_virtual_tokens == PAPER.num_virtual_tokens == 128
    assert prefix.prefix_projection is True and prefix.encoder_hidden_size == 512
    assert v2.prefix_projection is False


@pytest.mark.parametrize(
    ("method", "kw", "quoted"),
    [
        ("lora", {"r": 0}, "0"),
        ("lora", {"r": 2.5}, "2.5"),
        ("lora", {"alpha": -1}, "-1"),
        ("lora", {"dropout": 1.5}, "1.5"),
        ("prefix", {"num_virtual_tokens": -3}, "-3"),
        ("ptuning-v2", {"num_virtual_tokens": 0}, "0"),
        ("lora", {"rank": 4}, "rank"),
    ],
)
def test_bad_values_are_quoted(method, kw, quoted):
    with pytest.raises(ConfigError) as e:
        TUNERS[method](**kw)
    assert quoted in str(e.value)


def test_make_peft_config_ignores_none_and_other_methods_flags():
    cfg = make_peft_config("ptuning-v2", num_virtual_tokens=16, r=None, alpha=32, dropout=0.1)
    assert cfg.num_virtual_tokens == 16 and cfg.prefix_projection is False


def test_all_linear_is_peft_shorthand():
    """--target-modules all-linear reaches peft as its shorthand (every linear layer but the
    output head), not as a module called "all-linear"."""
    from endcloud.end.tuners import make_peft_config

    assert make_peft_config("lora", target_modules="all-linear").target_modules == "all-linear"
    assert set(make_peft_config("lora", target_modules="q_proj, v_proj").target_modules) == {"q_proj", "v_proj"}
