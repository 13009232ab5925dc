"""A shop's own SKUs are public: never redacted, even where an order id would be."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from endcloud.privacy import detect, redact, use_public_values
from endcloud.privacy import public as public_mod


@pytest.fixture
def clean_public(monkeypatch):
    monkeypatch.delenv(public_mod.ENV, raising=False)
    monkeypatch.setattr(public_mod, "_values", None)
    monkeypatch.setattr(public_mod, "_loaded_from", None)
    yield
    os.environ.pop(public_mod.ENV, None)  # set by use_public_values, not by monkeypatch
    public_mod._values = public_mod._loaded_from = None


def test_sku_is_redacted_as_order_until_declared_public(clean_public):
    assert [s.type for s in detect("520401029636")] == ["ORDER"]
    use_public_values(["520401029636", "SKU-77"])
    assert detect("520401029636") == []
    assert redact("这个 520401029636 有货吗").text == "这个 520401029636 有货吗"
    # other long numbers and real personal data are still caught
    assert [s.type for s in detect("订单 520401029637 电话13812345678")] == ["ORDER", "PHONE"]


def test_public_values_reach_worker_processes(clean_public):
    use_public_values(["520401029636"])
    code = "from endcloud.privacy import detect; print(len(detect('520401029636')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), check=True)
    assert out.stdout.strip() == "0"
