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


def test_the_files_a_process_writes_for_its_workers_are_gone_when_it_exits():
    """Each declaration writes a file for worker processes; a server or test run that declared
    its ids a thousand times must not leave a thousand files in /tmp."""
    import os
    import subprocess
    import sys

    code = ("import os\nfrom endcloud.privacy.public import use_public_values as u\n"
            "u(['A1']); first = os.environ['ENDCLOUD_PUBLIC_IDS']; u(['B2'])\n"
            "print(first); print(os.environ['ENDCLOUD_PUBLIC_IDS'])\n"
            "assert os.path.exists(first) and open(os.environ['ENDCLOUD_PUBLIC_IDS']).read() == 'B2\\n'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    assert len(paths) == 2 and not any(os.path.exists(p) for p in paths)
