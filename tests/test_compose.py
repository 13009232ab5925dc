"""`endcloud serve` and the composition root (`endcloud.compose`): what a newcomer meets first."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from endcloud.cli import main
from endcloud.config import Workspace
from endcloud.errors import ConfigError
from endcloud.compose import build_app_from_workspace


def test_bare_serve_with_nothing_built_names_the_command(tmp_path, capsys):
    code = main(["serve", "--workspace", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert code == 2
    assert "scripts/demo" in err and "endcloud demo" in err and "--base" in err
    assert "Traceback" not in err


def test_bad_base_flag_is_a_clean_error(tmp_path, capsys):
    assert main(["serve", "--workspace", str(tmp_path), "--base", str(tmp_path / "nope")]) == 2
    assert "--base" in capsys.readouterr().err


def test_unknown_adapter_lists_what_exists(tmp_path, tiny_base_dir):
    ws = Workspace(tmp_path)
    (ws.adapters / "shop").mkdir(parents=True)
    with pytest.raises(ConfigError, match="found: shop"):
        ws.find_adapter("other")
    assert ws.find_adapter(None) == (None, None)  # a name without an active version: base only


def test_workspace_app_serves_the_base_and_records_in_the_workspace_db(tmp_path, tiny_base_dir):
    ws = Workspace(tmp_path)
    shutil.copytree(tiny_base_dir, ws.base)
    app = build_app_from_workspace(ws, cloud="none", max_new_tokens=4)
    assert app.state.settings.db_path == ws.db
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json={"model": "endcloud", "user": "w1", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        assert r.json()["endcloud"]["answered_by"] == "end"  # no cloud: the end model answers whatever the signals say
    assert ws.db.exists()


def test_workspace_with_a_shop_gets_the_reference_cloud(tmp_path, tiny_base_dir, monkeypatch):
    from tests.serve.test_app import _shop

    monkeypatch.delenv("ENDCLOUD_CLOUD_BASE_URL", raising=False)
    ws = Workspace(tmp_path)
    shutil.copytree(tiny_base_dir, ws.base)
    _shop(ws.shop)
    app = build_app_from_workspace(ws)
    assert app.state.teacher is not None and app.state.teacher.name == "reference"
    assert app.state.settings.shop_dir == ws.shop
    with pytest.raises(ConfigError, match="--shop"):
        build_app_from_workspace(ws, shop=tmp_path / "nowhere", cloud="none")


def test_workspace_server_follows_promotions(tmp_path, tiny_base_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from endcloud.end.adapters import AdapterRegistry

    ws = Workspace(tmp_path)
    shutil.copytree(tiny_base_dir, ws.base)
    src = tmp_path / "trained"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base_dir),
                   LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(src)
    reg = AdapterRegistry(ws.adapters)
    app = build_app_from_workspace(ws, cloud="none", watch_s=0.05)
    assert app.state.settings.adapter_dir is None  # nothing published yet: the bare base
    with TestClient(app) as c:
        v1 = reg.publish("shop", src)
        reg.activate("shop", "v1")
        import time

        deadline = time.monotonic() + 30
        while app.state.engine.adapter is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/healthz").json()["adapter"] == "shop/" + reg.active("shop").name
    assert v1 is not None


def test_the_loop_beside_a_server_uses_its_cloud_and_its_alpha_and_theta(tmp_path, tiny_base_dir):
    from endcloud.compose import evolver_for_app

    ws = Workspace(tmp_path)
    shutil.copytree(tiny_base_dir, ws.base)
    app = build_app_from_workspace(ws, cloud="none", alpha=0.6, theta=0.3)
    ev = evolver_for_app(app, ws, background=False)
    assert (ev.settings.alpha, ev.settings.theta) == (0.6, 0.3)
    assert ev.teacher is app.state.teacher and ev.evaluator.rule.alpha == 0.6


def test_the_engine_comes_from_the_serve_settings_alone(tmp_path, monkeypatch):
    ws = Workspace(tmp_path)  # nothing built: only the in-process engine needs base/
    with pytest.raises(ConfigError, match="nothing to serve"):
        build_app_from_workspace(ws, cloud="none")
    monkeypatch.setenv("ENDCLOUD_SERVE_ENGINE", "vllm")
    app = build_app_from_workspace(ws, cloud="none", review=False)
    assert app.state.settings.engine == "vllm" and app.state.settings.base_dir is None
    with pytest.raises(ConfigError, match="nothing to serve"):  # a keyword beats the variable; llama.cpp needs base/
        build_app_from_workspace(ws, cloud="none", engine="llamacpp")
    monkeypatch.setenv("ENDCLOUD_SERVE_ENGINE", "tgi")
    with pytest.raises(ConfigError, match="ENDCLOUD_SERVE_ENGINE"):
        build_app_from_workspace(ws, cloud="none")
