"""Device and precision: which device and dtype a flag picks (the GPU branches with a mocked
`torch.cuda`; no GPU here), accumulation and checkpointing computing the same step, bf16
training on the CPU, QLoRA's refusals, and a custom-code base loaded only with the opt-in.

What cannot run here: moving a base to a real GPU, fp16 loss scaling, bitsandbytes' 4-bit
kernels. The decisions leading there are tested; bench/device_check.sh runs the rest on a GPU.
"""

from __future__ import annotations

import json

import pytest
import torch

from endcloud.end.device import (
    DEVICE_ENV,
    DTYPE_ENV,
    apply_flags,
    dtype_name,
    parse_dtype,
    resolve_device,
    resolve_dtype,
)
from endcloud.errors import ConfigError, ModelError

FAST = {"lr": 1e-2, "progress": False, "save_every": 1000, "num_virtual_tokens": 4, "encoder_hidden_size": 16}


@pytest.fixture()
def no_env(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.delenv(DTYPE_ENV, raising=False)


@pytest.fixture()
def fake_gpus(monkeypatch, no_env):
    """torch believes it has `n` GPUs (bf16 or not); nothing is ever placed on them."""

    def install(n: int = 2, bf16: bool = True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake T4" if not bf16 else "Fake A100")

    return install


# ---- the decisions -------------------------------------------------------------------------
def test_auto_is_the_cpu_without_a_gpu(no_env, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cpu"), cpu_default="bf16") == torch.bfloat16
    with pytest.raises(ConfigError, match="torch sees none.*--device cpu"):
        resolve_device("cuda")


def test_auto_is_the_gpu_and_bf16_where_it_has_it(fake_gpus):
    fake_gpus(n=2, bf16=True)
    dev = resolve_device("auto")
    assert dev == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit CPU wins over a GPU
    assert resolve_dtype("auto", dev) == torch.bfloat16
    assert resolve_dtype("fp32", dev) == torch.float32
    with pytest.raises(ConfigError, match="2 GPUs.*cuda:0..cuda:1"):
        resolve_device("cuda:2")


def test_an_old_gpu_gets_fp16_and_refuses_bf16(fake_gpus):
    fake_gpus(n=1, bf16=False)
    dev = resolve_device("cuda")
    assert resolve_dtype("auto", dev) == torch.float16
    with pytest.raises(ConfigError, match="Fake T4.*no bfloat16.*--dtype fp16"):
        resolve_dtype("bf16", dev)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cpu:1", "tpu"])
def test_bad_device_names_the_flag(no_env, bad):
    with pytest.raises(ConfigError, match="--device"):
        resolve_device(bad)


def test_dtype_names_and_env(no_env, monkeypatch):
    assert parse_dtype("bfloat16") == parse_dtype("BF16") == torch.bfloat16
    assert dtype_name(torch.float16) == "fp16"
    with pytest.raises(ConfigError, match="fp8.*--dtype"):
        parse_dtype("fp8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    apply_flags(device="cpu", dtype="bf16")  # what a command's flags leave for the rooms it starts
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_dtype(None, torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError):
        apply_flags(device="cuda:0")  # refused at once, before any model loads


# ---- training: the same step, however it is computed ------------------------------------------
def _train(tiny_base_dir, examples, out, **kw):
    from endcloud.end.train import train

    torch.set_num_threads(1)
    return train(tiny_base_dir, examples, out, **{"steps": 3, "batch_size": 4, "dropout": 0.0, "device": "cpu", **FAST, **kw})


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_gradient_accumulation_computes_the_same_step(tiny_base_dir, train_examples, tmp_path, no_env):
    whole = _train(tiny_base_dir, train_examples, tmp_path / "k1", method="lora", grad_accum=1)
    split = _train(tiny_base_dir, train_examples, tmp_path / "k4", method="lora", grad_accum=4)
    assert split.losses == pytest.approx(whole.losses, rel=1e-4, abs=1e-5)
    a, b = _adapter(tmp_path / "k1"), _adapter(tmp_path / "k4")
    assert a.keys() == b.keys()
    moved = 0.0
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
        moved = max(moved, float(a[k].abs().max()))
    assert moved > 0  # the adapter trained at all
    rec = json.loads((tmp_path / "k4" / "training.json").read_text())
    assert rec["hardware"]["grad_accum"] == 4 and rec["hardware"]["device"] == "cpu"


def test_accumulation_is_refused_beyond_the_batch(tiny_base_dir, train_examples, tmp_path, no_env):
    with pytest.raises(ConfigError, match="--grad-accum 8.*--batch-size"):
        _train(tiny_base_dir, train_examples, tmp_path / "x", method="lora", grad_accum=8)


def test_gradient_checkpointing_lora_same_step_prefix_refused(tiny_base_dir, train_examples, tmp_path, no_env):
    plain = _train(tiny_base_dir, train_examples, tmp_path / "plain", method="lora")
    ckpt = _train(tiny_base_dir, train_examples, tmp_path / "ckpt", method="lora", gradient_checkpointing=True)
    assert ckpt.losses == pytest.approx(plain.losses, rel=1e-5)
    for method in ("prefix", "ptuning-v2"):
        with pytest.raises(ConfigError, match="LoRA only.*KV cache"):
            _train(tiny_base_dir, train_examples, tmp_path / method, method=method, gradient_checkpointing=True)


@pytest.mark.parametrize("method", ["lora", "prefix", "ptuning-v2"])
def test_bf16_base_trains_fp32_adapter(tiny_base_dir, train_examples, tmp_path, no_env, method):
    from endcloud.end.base import load_base

    res = _train(tiny_base_dir, train_examples, tmp_path / method, method=method, dtype="bf16", steps=4,
                 lr=5e-2 if method == "lora" else 1e-1)
    assert res.dtype == "bf16" and all(map(lambda x: x == x and abs(x) < 50, res.losses))
    trainable = [p for p in res.model.parameters() if p.requires_grad]
    frozen = [p for p in res.model.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)  # fp32 masters for AdamW
    assert any(p.dtype == torch.bfloat16 for p in frozen)  # the base holds half the bytes
    # the frozen base did not move: compare one weight with a fresh bf16 load
    fresh, _ = load_base(tiny_base_dir, dtype=torch.bfloat16)
    ref = fresh.get_input_embeddings().weight
    assert torch.equal(res.model.get_input_embeddings().weight.detach().cpu(), ref)
    rec = json.loads((tmp_path / method / "training.json").read_text())
    assert rec["config"]["dtype"] == "bf16" and rec["hardware"]["dtype"] == "bf16"


def test_fp16_training_needs_a_gpu(tiny_base_dir, train_examples, tmp_path, no_env):
    with pytest.raises(ConfigError, match="fp16 training.*GPUs"):
        _train(tiny_base_dir, train_examples, tmp_path / "h", method="lora", dtype="fp16")


def test_resume_accepts_other_accumulation(tiny_base_dir, train_examples, tmp_path, no_env):
    """Accumulation computes the same step, so a run may resume with another --grad-accum."""
    from endcloud.end.train import TrainConfig

    a = TrainConfig(grad_accum=1, gradient_checkpointing=False).fingerprint()
    b = TrainConfig(grad_accum=4, gradient_checkpointing=True, batch_size=4).fingerprint()
    a.pop("batch_size"), b.pop("batch_size")
    assert a == b
    assert TrainConfig(dtype="bf16").fingerprint() != TrainConfig(dtype="fp32").fingerprint()


# ---- QLoRA: GPU only, optional extra --------------------------------------------------------------
def test_qlora_is_refused_on_the_cpu(tiny_base_dir, train_examples, tmp_path, no_env):
    with pytest.raises(ConfigError, match="--qlora.*CUDA GPU"):
        _train(tiny_base_dir, train_examples, tmp_path / "q", method="lora", qlora=True)
    with pytest.raises(ConfigError, match="LoRA on a 4-bit base"):
        _train(tiny_base_dir, train_examples, tmp_path / "q", method="prefix", qlora=True)


def test_qlora_without_bitsandbytes_names_the_extra(monkeypatch):
    import importlib.util

    from endcloud.end.base import bnb_4bit_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match=r"endcloud\[qlora\]"):
        bnb_4bit_config(torch.bfloat16, torch.device("cuda", 0))


def test_qlora_config_where_bitsandbytes_is_installed():
    pytest.importorskip("bitsandbytes")
    from endcloud.end.base import bnb_4bit_config

    cfg = bnb_4bit_config(torch.bfloat16, torch.device("cuda", 0))
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_compute_dtype == torch.bfloat16


def test_the_default_install_does_not_pull_bitsandbytes():
    """QLoRA is an optional extra: the default dependencies stay free of bitsandbytes (which
    would pull a CUDA torch into a CPU install)."""
    import tomllib
    from pathlib import Path

    py = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    deps = py["project"]["dependencies"]
    assert not any(d.lower().startswith("bitsandbytes") for d in deps)
    extra = py["project"]["optional-dependencies"]["qlora"]
    assert any(d.startswith("bitsandbytes==") for d in extra)


# ---- custom model code: explicit opt-in -----------------------------------------------------------
@pytest.fixture(scope="module")
def custom_dir(tmp_path_factory, tiny_tokenizer):
    from tests.end.custom_model import write_custom_model

    return write_custom_model(tmp_path_factory.mktemp("tinyglm"), tiny_tokenizer)


def test_custom_code_is_refused_without_the_opt_in(custom_dir, monkeypatch):
    from endcloud.end.base import load_base

    monkeypatch.delenv("ENDCLOUD_TRUST_REMOTE_CODE", raising=False)
    with pytest.raises(ModelError, match="modeling_tinyglm.py.*--trust-remote-code"):
        load_base(custom_dir)


def test_custom_code_loads_and_trains_lora_with_the_opt_in(custom_dir, train_examples, tmp_path, no_env):
    from endcloud.end.base import load_base
    from endcloud.end.train import train

    model, tok = load_base(custom_dir, trust_remote_code=True)
    assert type(model).__name__ == "TinyGLMForCausalLM" and len(tok) == model.config.vocab_size
    torch.set_num_threads(1)
    res = train(custom_dir, train_examples, tmp_path / "glm", method="lora", steps=12, batch_size=4, device="cpu",
                trust_remote_code=True, **{**FAST, "lr": 3e-2})
    cfg = json.loads((tmp_path / "glm" / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) == {"query_key_value"}  # found by name: no table knows "tinyglm"
    assert sum(res.losses[-3:]) < sum(res.losses[:3])


def test_target_modules_per_architecture(tiny_base_dir):
    from endcloud.end.base import load_base
    from endcloud.end.tuners import target_modules_for

    model, _ = load_base(tiny_base_dir)
    assert target_modules_for(model) == ["q_proj", "k_proj", "v_proj", "o_proj"]

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4)])
            self.config = type("C", (), {"model_type": "odd"})()

    with pytest.raises(ConfigError, match="--target-modules"):
        target_modules_for(Odd())


# ---- the flags on the commands ------------------------------------------------------------------------
def test_train_command_flags(tmp_path, tiny_base_dir, train_examples, capsys, no_env, monkeypatch):
    from endcloud.cli import main
    from endcloud.records import Pair

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(Pair(id=e.id, source="t", session=e.id, lang="zh", context=[],
                                                  query=e.messages[-1]["content"], response=e.response).to_json(),
                                             ensure_ascii=False) + "\n" for e in train_examples), encoding="utf-8")
    torch.set_num_threads(1)
    args = ["train", "--base", str(tiny_base_dir), "--pairs", str(pairs), "--steps", "2", "--batch-size", "4", "-q",
            "--eval-fraction", "0", "-o", str(tmp_path / "o"), "--device", "cpu", "--dtype", "bf16", "--grad-accum", "2"]
    assert main(args) == 0
    assert "on cpu (bf16)" in capsys.readouterr().out
    hw = json.loads((tmp_path / "o" / "training.json").read_text())["hardware"]
    assert hw["dtype"] == "bf16" and hw["grad_accum"] == 2 and hw["device"] == "cpu"
    assert main([*args[:-6], "-o", str(tmp_path / "p"), "--device", "cuda:0"]) == 2  # no GPU: one line, no traceback
    err = capsys.readouterr().err
    assert "--device cpu" in err and "Traceback" not in err
    for cmd in (["chat"], ["eval"], ["evolve"], ["serve"], ["pretrain"]):
        assert main([*cmd, "--help"]) == 0
        assert "--device" in capsys.readouterr().out


def test_serving_precision_and_quant_on_a_gpu(fake_gpus, tiny_base_dir):
    from endcloud.runtime.model import EndModel, _parse_dtype

    fake_gpus(n=1, bf16=True)
    assert _parse_dtype(None, tiny_base_dir, torch.device("cuda", 0)) == torch.bfloat16
    assert _parse_dtype(None, tiny_base_dir, torch.device("cpu")) == torch.float32  # a tiny base: fp32 on the CPU
    with pytest.raises(ModelError, match="int8.*CPU fast path"):
        EndModel.load(tiny_base_dir, device="cuda", quant="int8")  # refused before any weight moves
