"""The config file: flag > env > file > default, `config show`, and `--help` naming the variables."""

from __future__ import annotations

import json
import os

import pytest

from endcloud.cli import main


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _show(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)["settings"]


def test_precedence_flag_env_file_default(tmp_path, capsys, monkeypatch):
    """The same key set in every layer; peel them off one at a time."""
    from endcloud.serve.settings import ServeSettings

    monkeypatch.delenv("ENDCLOUD_CONFIG", raising=False)
    cfg = _write(tmp_path / "shop.toml", "[serve]\nport = 7001\nmin_match = 0.31\n")
    monkeypatch.setenv("ENDCLOUD_SERVE_PORT", "7002")
    monkeypatch.setenv("ENDCLOUD_SERVE_MIN_MATCH", "0.32")

    def port_and_match(*flags):
        lines = _serve_show(capsys, ["serve", "-w", str(tmp_path), "--config", str(cfg), "--show-config", *flags])
        return lines["port"], lines["min_match"]

    assert port_and_match("--port", "7003", "--min-match", "0.33") == (("7003", "flag"), ("0.33", "flag"))
    assert port_and_match() == (("7002", "env"), ("0.32", "env"))
    monkeypatch.delenv("ENDCLOUD_SERVE_PORT")
    monkeypatch.delenv("ENDCLOUD_SERVE_MIN_MATCH")
    assert port_and_match() == (("7001", "file"), ("0.31", "file"))
    cfg.write_text("", encoding="utf-8")
    assert port_and_match() == (("8000", "default"), ("0.25", "default"))

    # ... and what the server is built with follows the same order: the file fills the
    # variables the environment leaves unset, ServeSettings reads them, flags override
    from endcloud.cli.config import sections
    from endcloud.configfile import apply_to_environ, load_file

    cfg.write_text("[serve]\nport = 7001\nmin_match = 0.31\n", encoding="utf-8")
    monkeypatch.setenv("ENDCLOUD_SERVE_PORT", "7002")
    set_now = apply_to_environ(sections(), load_file(cfg, sections()))
    assert set_now == ["ENDCLOUD_SERVE_MIN_MATCH"]  # the port's variable was already set: env beats the file
    s = ServeSettings.from_env(min_match=0.33)
    assert (s.port, s.min_match) == (7002, 0.33)
    assert ServeSettings.from_env().min_match == 0.31


def _serve_show(capsys, argv):
    """`key -> (value, source)` from the text `serve --show-config` prints."""
    assert main(argv) == 0
    out = {}
    for line in capsys.readouterr().out.splitlines():
        if " = " in line and "#" in line:
            left, source = line.rsplit("#", 1)
            key, value = left.split(" = ", 1)
            out.setdefault(key.strip(), (value.strip(), source.strip().split()[0]))
    return out


def test_config_show_sources_secrets_and_the_workspace_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ENDCLOUD_CONFIG", raising=False)
    for var in ("ENDCLOUD_CLOUD_API_KEY", "ENDCLOUD_CLOUD_MODEL", "ENDCLOUD_EVOLVE_MIN_LABELS", "ENDCLOUD_RETENTION_DAYS"):
        monkeypatch.delenv(var, raising=False)
    _write(tmp_path / "endcloud.toml", '[cloud]\nmodel = "gemini-1.5-pro"\napi_key = "sk-secret-value"\n'
                                       "[evolve]\nmin_labels = 16\n[privacy]\nretention_days = 180\n")
    monkeypatch.setenv("ENDCLOUD_EVOLVE_LR", "0.01")
    got = _show(capsys, ["config", "show", "-w", str(tmp_path), "--json"])  # found in the workspace
    assert got["cloud"]["model"] == {"value": "gemini-1.5-pro", "source": "file", "env": "ENDCLOUD_CLOUD_MODEL"}
    assert got["cloud"]["api_key"]["value"] == "***"
    assert got["evolve"]["min_labels"]["value"] == 16 and got["evolve"]["min_labels"]["source"] == "file"
    assert got["evolve"]["lr"] == {"value": 0.01, "source": "env", "env": "ENDCLOUD_EVOLVE_LR"}
    assert got["privacy"]["retention_days"]["source"] == "file"
    assert got["serve"]["port"]["source"] == "default"
    assert {"serve", "end", "evolve", "cloud", "vllm", "privacy"} <= set(got)

    assert main(["config", "show", "-w", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "sk-secret-value" not in text
    assert f"config file: {tmp_path / 'endcloud.toml'}" in text
    assert any(line.startswith("lr") and "# env ENDCLOUD_EVOLVE_LR" in line for line in text.splitlines())


def test_a_typo_in_the_file_is_an_error_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ENDCLOUD_CONFIG", raising=False)
    cfg = _write(tmp_path / "bad.toml", "[serve]\nmin_mach = 0.3\n")
    assert main(["config", "show", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "min_mach" in err and "min_match" in err  # the bad key and the valid ones
    assert main(["config", "show", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err
    _write(cfg, "[serve\n")
    assert main(["config", "show", "--config", str(cfg)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_root_config_fills_cloud_variables_for_any_command(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ENDCLOUD_CLOUD_TIMEOUT", raising=False)
    cfg = _write(tmp_path / "c.toml", "[cloud]\ntimeout = 12.5\n")
    got = _show(capsys, ["--config", str(cfg), "config", "show", "--json", "--section", "cloud"])
    assert got["cloud"]["timeout"] == {"value": 12.5, "source": "file", "env": "ENDCLOUD_CLOUD_TIMEOUT"}
    assert os.environ["ENDCLOUD_CLOUD_TIMEOUT"] == "12.5"  # what OpenAITeacher.from_env reads


def test_serve_help_names_the_variables_and_keeps_brackets(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["serve", "--help"]) == 0
    text = capsys.readouterr().out
    for var in ("ENDCLOUD_SERVE_MIN_MATCH=0.25", "ENDCLOUD_SERVE_CUSTOMER_SECRET", "ENDCLOUD_SERVE_PREFIX_CACHE_MB",
                "ENDCLOUD_VLLM_BASE_URL", "ENDCLOUD_DEVICE=auto", "ENDCLOUD_CONFIG"):
        assert var in text, var
    assert "pip install endcloud[llamacpp]" in text  # rich markup must not eat the extra's name
    assert "[serve]" in text and "[vllm]" in text


@pytest.mark.parametrize("argv", [["config", "show", "--section", "nope"]])
def test_bad_section_is_a_clean_error(argv, capsys):
    assert main(argv) == 2
    assert "--section" in capsys.readouterr().err


def test_a_list_in_the_file_reaches_a_tuple_setting(tmp_path, monkeypatch):
    from endcloud.cli.config import sections
    from endcloud.configfile import apply_to_environ, load_file
    from endcloud.serve.settings import ServeSettings

    monkeypatch.delenv("ENDCLOUD_SERVE_CORS_ORIGINS", raising=False)
    cfg = _write(tmp_path / "c.toml", '[serve]\ncors_origins = ["https://shop.example.com", "https://m.shop.example.com"]\n'
                                      "grounding_check = false\n")
    apply_to_environ(sections(), load_file(cfg, sections()))
    s = ServeSettings.from_env()
    assert s.cors_origins == ("https://shop.example.com", "https://m.shop.example.com")
    assert s.grounding_check is False


def test_evolve_settings_come_from_the_evolve_table_and_follow_serves_alpha(tmp_path, monkeypatch):
    from endcloud.cli.config import evolve_settings, settings_in_force

    for var in ("ENDCLOUD_CONFIG", "ENDCLOUD_EVOLVE_ALPHA", "ENDCLOUD_EVOLVE_MIN_LABELS", "ENDCLOUD_EVOLVE_THETA"):
        monkeypatch.delenv(var, raising=False)
    _write(tmp_path / "endcloud.toml", "[evolve]\nmin_labels = 3\nlow_score = 0.5\ninterval_s = 5\ntheta = 0.3\n")
    monkeypatch.setenv("ENDCLOUD_SERVE_ALPHA", "0.6")
    _, _, resolved = settings_in_force(workspace=tmp_path, flags={("evolve", "lr"): 0.05})
    s, interval = evolve_settings(resolved, competitors=["rival"])
    assert (s.min_labels, s.triggers.low_score, interval, s.lr) == (3, 0.5, 5.0, 0.05)
    assert (s.alpha, s.theta) == (0.6, 0.3)  # alpha unset for evolve: the server's; theta: evolve's own
    assert s.checks.competitors == ["rival"]
