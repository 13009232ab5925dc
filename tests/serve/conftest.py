"""Fixtures of the serving room. The doubles ship in `endcloud.testing`; end-to-end tests run
the app on a real uvicorn with `endcloud.loopback.LoopbackServer`."""

from __future__ import annotations

import pytest

from endcloud.testing import ScriptedModel


@pytest.fixture
def scripted_model():
    return ScriptedModel()

