"""Shared fixtures: tiny real models and tokenizers built here (no weights downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite is the CPU's: on a GPU machine "auto" would move models there (bench/device_check.sh tests that).
os.environ.setdefault("ENDCLOUD_DEVICE", "cpu")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

FIXTURE_TEXT = [
    "亲，在的，请问有什么可以帮您？", "您好，这款毛巾是纯棉的，20x20厘米，干湿两用。",
    "默认发中通快递，下午4点前下单当天发货。", "亲，可以领取满99减10的优惠券哦。",
    "退货请在签收后7天内申请，运费由我们承担。", "好的，已经帮您备注了，请放心。",
    "Hello, how can I help you today?", "We ship with ZTO Express by default; orders before 4 pm ship today.",
    "Yes, you can get a 10% discount with the coupon SAVE10.", "Returns are accepted within 7 days of delivery.",
    "This towel is pure cotton, 20x20 cm, and can be used wet or dry.", "Sorry for the wait, your parcel is on its way.",
] * 20


@pytest.fixture(autouse=True)
def _endcloud_env_restored():
    """A command run in-process (typer's CliRunner) exports its flags as $ENDCLOUD_* for the
    rooms it starts (`end.device.apply_flags`); that must not reach the next test (a leaked
    ENDCLOUD_DTYPE=bf16 once made the runtime's exact-logit tests fail)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("ENDCLOUD_")}
    yield
    for k in [k for k in os.environ if k.startswith("ENDCLOUD_") and k not in saved]:
        del os.environ[k]
    os.environ.update(saved)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data when present (real ECD/JDDC samples); tests skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from endcloud.end.tokenizer import train_tokenizer

    return train_tokenizer(FIXTURE_TEXT, vocab_size=600, min_frequency=1)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved HF model directory: tiny random Qwen2 + the fixture tokenizer."""
    from endcloud.end.base import tiny_qwen2

    out = tmp_path_factory.mktemp("tiny-base")
    model = tiny_qwen2(tiny_tokenizer, hidden_size=64, layers=2)
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def few_threads():
    """Keep torch to one thread for a whole test module (the machine is shared).

    Use with `pytestmark = pytest.mark.usefixtures("few_threads")`."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def end_model(tiny_base_dir):
    """The real EndModel on the tiny fixture base (shared: loading costs seconds)."""
    import torch

    from endcloud.runtime.model import EndModel

    torch.set_num_threads(1)
    return EndModel.load(tiny_base_dir)
