"""Serve settings: named limits, env overrides, validation that names the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from endcloud.errors import ConfigError
from endcloud.serve.settings import MAX_BODY_BYTES, ServeSettings


def test_defaults_are_the_named_limits():
    s = ServeSettings()
    assert s.max_body_bytes == MAX_BODY_BYTES and s.host == "127.0.0.1" and s.port == 8000


def test_env_overrides_then_explicit_overrides():
    env = {"ENDCLOUD_SERVE_MIN_MATCH": "0.4", "ENDCLOUD_SERVE_MAX_MESSAGES": "7", "ENDCLOUD_SERVE_DB_PATH": "/tmp/x.db"}
    s = ServeSettings.from_env(env, max_messages=9)
    assert s.min_match == 0.4 and s.max_messages == 9 and s.db_path == Path("/tmp/x.db")


@pytest.mark.parametrize("env, needle", [({"ENDCLOUD_SERVE_MAX_MESSAGES": "many"}, "ENDCLOUD_SERVE_MAX_MESSAGES"),
                                         ({"ENDCLOUD_SERVE_MAX_BATCH": "0"}, "max_batch"),
                                         ({"ENDCLOUD_SERVE_ALPHA": "1.5"}, "ENDCLOUD_SERVE_ALPHA"),
                                         ({"ENDCLOUD_SERVE_THETA": "-0.1"}, "ENDCLOUD_SERVE_THETA")])
def test_bad_values_name_the_setting(env, needle):
    with pytest.raises(ConfigError, match=needle):
        ServeSettings.from_env(env)


def test_the_papers_alpha_and_theta_are_settings():
    from endcloud.paper import PAPER

    assert (ServeSettings().alpha, ServeSettings().theta) == (PAPER.alpha, PAPER.theta)
    s = ServeSettings.from_env({"ENDCLOUD_SERVE_ALPHA": "0.6", "ENDCLOUD_SERVE_THETA": "0.3"})
    assert (s.alpha, s.theta) == (0.6, 0.3)


def test_bad_port():
    with pytest.raises(ConfigError, match="--port"):
        ServeSettings(port=70000)


def test_engine_setting_names_the_valid_engines():
    import pytest

    from endcloud.errors import ConfigError
    from endcloud.serve.settings import ServeSettings

    assert ServeSettings(engine="vllm").engine == "vllm"
    with pytest.raises(ConfigError, match=r"one of .*llamacpp, .*transformers, .*vllm"):
        ServeSettings(engine="tgi")


def test_engine_load_picks_vllm_from_the_environment(monkeypatch):
    from endcloud.runtime.vllm import VLLMEndModel
    from endcloud.runtime.async_engine import AsyncEngine

    monkeypatch.setenv("ENDCLOUD_VLLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("ENDCLOUD_VLLM_MODEL", "Qwen2.5-0.5B-Instruct")
    eng = AsyncEngine.load(None, kind="vllm")
    assert isinstance(eng.model, VLLMEndModel)
