"""`endcloud chat`: piped stdin, history kept across turns, /reset clears it, /quit or EOF ends."""

from __future__ import annotations

import io
import re
import sys

from endcloud.cli import main


def _turn_counts(out: str) -> list[int]:
    return [int(n) for n in re.findall(r"history (\d+) turns", out)]


def test_chat_keeps_history_and_resets(tiny_base_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("几天发货？\nHello\n\n/reset\nReturns?\n/quit\nnever read\n"))
    rc = main(["chat", "--base", str(tiny_base_dir), "--max-new-tokens", "4", "--seed", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("bot> ") == 3  # the blank line and everything after /quit got no reply
    assert _turn_counts(out) == [1, 2, 1]
    assert "[history cleared]" in out


def test_chat_session_history_holds_both_sides(tiny_base_dir):
    from endcloud.cli.chat import ChatSession, run_chat
    from endcloud.runtime.model import EndModel

    session = ChatSession(EndModel.load(tiny_base_dir), max_new_tokens=3, seed=1)
    lines: list[str] = []
    assert run_chat(session, ["hi", "again"], lines.append) == 2  # EOF ends
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
    assert session.history[2]["content"] == "again"
    assert session.history[3]["content"] == lines[2].removeprefix("bot> ")


def test_chat_bad_base_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    rc = main(["chat", "--base", str(tmp_path / "nope")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
