"""`endcloud redact` / `endcloud unredact`: stdin lines in, redacted lines out, one vault per run."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from endcloud.cli import main


def feed(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_redact_lines_keep_placeholders_across_lines(monkeypatch, capsys):
    feed(monkeypatch, "我叫张伟，电话13800138000\n好的，价格¥129\n再确认一下13800138000\r\n".encode())
    assert main(["redact"]) == 0
    assert capsys.readouterr().out.splitlines() == ["我叫[NAME_1]，电话[PHONE_1]", "好的，价格¥129", "再确认一下[PHONE_1]"]


def test_redact_json_hides_values_unless_asked(monkeypatch, capsys):
    feed(monkeypatch, "my email is a@b.com\n".encode())
    assert main(["redact", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj == {"text": "my email is [EMAIL_1]", "spans": [{"start": 12, "end": 19, "type": "EMAIL", "label": ""}]}
    feed(monkeypatch, "my email is a@b.com\n".encode())
    assert main(["redact", "--json", "--show-values"]) == 0
    assert json.loads(capsys.readouterr().out)["spans"][0]["value"] == "a@b.com"


def test_lang_option(monkeypatch, capsys):
    feed(monkeypatch, "我叫张伟\n".encode())
    assert main(["redact", "--lang", "en"]) == 0
    assert capsys.readouterr().out == "我叫张伟\n"
    feed(monkeypatch, "我叫张伟\n".encode())
    assert main(["redact", "--lang", "zh"]) == 0
    assert capsys.readouterr().out == "我叫[NAME_1]\n"
    feed(monkeypatch, b"x\n")
    assert main(["redact", "--lang", "fr"]) == 2
    assert "--lang" in capsys.readouterr().err


def test_vault_file_then_unredact(monkeypatch, capsys, tmp_path):
    vault = tmp_path / "v.json"
    feed(monkeypatch, "收件人：李娜，手机13912345678\n".encode())
    assert main(["redact", "--vault", str(vault)]) == 0
    redacted = capsys.readouterr().out
    assert "13912345678" not in redacted
    feed(monkeypatch, ("回复：" + redacted).encode())
    assert main(["unredact", "--vault", str(vault)]) == 0
    assert capsys.readouterr().out == "回复：收件人：李娜，手机13912345678\n"
    assert main(["unredact", "--vault", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_invalid_utf8_names_the_line_without_traceback(monkeypatch, capsys):
    feed(monkeypatch, "第一行13800138000\n".encode() + b"\xff\xfebad\n")
    assert main(["redact"]) == 2
    out = capsys.readouterr()
    assert out.out == "第一行[PHONE_1]\n"
    assert "<stdin>:2" in out.err and "UTF-8" in out.err and "Traceback" not in out.err


def test_help_lists_the_options(capsys):
    assert main(["redact", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--json", "--show-values", "--lang", "--vault"):
        assert flag in text


@pytest.mark.timeout(60)
def test_real_pipe_through_a_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "endcloud", "redact", "--json"],
        input="订单号520401029636\n".encode() + b"\xc3\x28\n", capture_output=True, timeout=60,
    )
    assert proc.returncode == 2
    assert json.loads(proc.stdout.decode().splitlines()[0])["text"] == "订单号[ORDER_1]"
    err = proc.stderr.decode()
    assert "<stdin>:2" in err and "Traceback" not in err
