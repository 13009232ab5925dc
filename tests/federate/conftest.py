"""Fixtures of the federation tests: generated shops on disk, a fake adapter template.

The tests need Flower (`flwr`, installed with `pip install --no-deps -r requirements-federate.txt`);
without it each module skips, saying so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def fed_shops(tmp_path_factory) -> list[Path]:
    """Three small synthetic shops (home goods, seeds 0-2, English), each its own workspace."""
    from endcloud.federate.shops import generated_shop

    root = tmp_path_factory.mktemp("fed-shops")
    return [generated_shop(root / f"shop-{i}", seed=i, lang="en", kind="shopworld", size=10, products=6) for i in range(3)]


def write_fake_adapter(path: Path, shapes: dict[str, tuple[int, ...]], *, seed: int = 0) -> Path:
    """A folder that reads as a LoRA adapter (config + safetensors) without building a model."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}), encoding="utf-8")
    return path


FAKE_SHAPES = {
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": (2, 8),
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": (8, 2),
    "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight": (2, 8),
    "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight": (4, 2),
}


@pytest.fixture
def fake_adapter(tmp_path) -> Path:
    return write_fake_adapter(tmp_path / "fake-adapter", FAKE_SHAPES)
