"""`endcloud shop new|check|search` through the real CLI entry point."""

from __future__ import annotations

import json

from endcloud.cli import main


def test_shop_new_writes_a_pack_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "shop"
    assert main(["shop", "new", str(out), "--lang", "en", "--sessions", "60", "--products", "8", "--seed", "2", "--wrong-rate", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "sessions 60" in printed and "intents:" in printed and "chats/chats.jsonl" in printed
    with open(out / "chats" / "chats.jsonl", encoding="utf-8") as f:
        assert sum(1 for _ in f) == 60
    assert json.loads((out / "chats" / "eval.jsonl").read_text(encoding="utf-8").splitlines()[-1])["id"] == "probe-6"
    before = (out / "catalog.csv").read_bytes()

    assert main(["shop", "new", str(out), "--sessions", "5"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err and "Traceback" not in err
    assert (out / "catalog.csv").read_bytes() == before  # nothing touched

    assert main(["shop", "new", str(out), "--sessions", "5", "--force"]) == 0
    assert (out / "catalog.csv").read_bytes() != before  # zh shop now
    assert (out / "chats" / "jddc.txt").is_file()
    assert main(["shop", "new", str(out), "--lang", "en", "--sessions", "5", "--force"]) == 0
    assert not (out / "chats" / "jddc.txt").exists()  # no stale zh log beside en chats


def test_shop_new_bad_language_is_one_line(tmp_path, capsys):
    assert main(["shop", "new", str(tmp_path / "x"), "--lang", "fr"]) == 2
    err = capsys.readouterr().err
    assert "--lang" in err and "'fr'" in err and len(err.strip().splitlines()) == 1


def test_shop_check_and_search(tmp_path, capsys):
    out = tmp_path / "shop"
    assert main(["shop", "new", str(out), "--sessions", "3"]) == 0
    capsys.readouterr()
    assert main(["shop", "check", str(out)]) == 0
    assert "7 policy sections" in capsys.readouterr().out
    assert main(["shop", "search", str(out), "能便宜点吗", "-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any("coupons" in line or line.startswith("[faq:6") for line in lines)
    (out / "catalog.csv").write_text("sku,name\n1,x\n", encoding="utf-8")
    assert main(["shop", "check", str(out)]) == 2
    assert "catalog.csv:1" in capsys.readouterr().err


def test_shop_help(capsys):
    assert main(["shop", "new", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--wrong-rate" in out and "--force" in out
