"""The privacy room's tests redact as a process with no public ids declared."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_public_ids():
    """A test elsewhere that served or onboarded a generated shop declared its SKUs public for the
    process (`use_public_values`; the paper's example SKU 520401029636 among them): these tests
    expect a bare 12-digit number to be an order id unless they declare otherwise themselves."""
    from endcloud.privacy import public

    saved = (os.environ.get(public.ENV), public._values, public._loaded_from)
    os.environ.pop(public.ENV, None)
    public._values, public._loaded_from = frozenset(), None
    yield
    env, public._values, public._loaded_from = saved
    if env is None:
        os.environ.pop(public.ENV, None)
    else:
        os.environ[public.ENV] = env
