"""`endcloud corpus prepare`: works on real files; bad input is one clear line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endcloud.cli import main


def test_prepare_command(tmp_path: Path, jddc_file: Path, jsonl_file: Path, capsys):
    out = tmp_path / "out"
    rc = main(["corpus", "prepare", str(jddc_file), str(jsonl_file), "-o", str(out), "--workers", "1", "--quiet",
               "--eval-fraction", "0", "--max-context-turns", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "pairs built" in printed and "utterances/s" in printed
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
    assert pairs and all(len(p["context"]) <= 1 for p in pairs)
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["config"]["max_context_turns"] == 1


@pytest.mark.realdata
def test_prepare_real_samples(tmp_path: Path, shared_data: Path, capsys):
    out = tmp_path / "out"
    rc = main(["corpus", "prepare", str(shared_data / "jddc" / "jddc_chat_sample.txt"),
               str(shared_data / "ecd" / "ecd_train_sample.txt"), "-o", str(out), "-w", "1", "-q"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert rep["counts"]["utterances_in"] == 4986 + sum(
        len(line.split("\t")) - 1
        for line in (shared_data / "ecd" / "ecd_train_sample.txt").read_text(encoding="utf-8").splitlines()
        if line.startswith("1\t")
    )
    assert rep["counts"]["sessions"] == 400 + 77
    assert rep["counts"]["pairs_written"] + rep["counts"]["eval_pairs_written"] > 2000
    assert "[订单x]" in (out / "pairs.jsonl").read_text(encoding="utf-8")


BAD = [
    ("missing.txt", None, [], "missing.txt: file not found"),
    ("bin.jsonl", b'{"messages": []}\n\x00\xff\x00', [], "bin.jsonl:2: binary data"),
    ("latin1.jsonl", b'{"messages": []}\n{"messages": [{"role": "user", "content": "caf\xe9"}]}\n', [], "latin1.jsonl:2: not valid UTF-8"),
    ("cut.jsonl", b'{"messages": []}\n{"messages": [{"role": "user", "con', [], "cut.jsonl:2: not valid JSON"),
    ("hdr.csv", b"who,said\nuser,hi\n", [], "hdr.csv:1: CSV header must have columns conversation_id,role,text"),
    ("cut.txt", b"s\tu\t0\t0\t0\tnan\thi\ns\tu\t1\t0", ["--format", "jddc"], "cut.txt:2: truncated JDDC line"),
    ("ok.txt", b"s\tu\t0\t0\t0\tnan\thi\n", ["--format", "excel"], "unknown corpus format 'excel'; valid: csv, ecd, jddc, jsonl"),
]


@pytest.mark.parametrize("name, content, extra, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clean_error(tmp_path: Path, capsys, name, content, extra, message):
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    rc = main(["corpus", "prepare", str(src), "-o", str(tmp_path / "out"), "-w", "1", "-q", *extra])
    captured = capsys.readouterr()
    assert rc == 2
    assert message in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out" / "pairs.jsonl").exists()  # nothing half-written


def test_bad_input_in_a_worker_process_is_a_clean_error(tmp_path: Path, capsys):
    # The bad line is far into the file, so a worker (not the parent's first look) finds it.
    src = tmp_path / "late.txt"
    good = "".join(f"s{i}\tu\t{i % 2}\t0\t0\tnan\t消息{i}\n" for i in range(3000))
    src.write_bytes(good.encode() + b"s9\tu\t1\t0\t0\tnan\t\xc4\xe3\xba\xc3\n")
    rc = main(["corpus", "prepare", str(src), "-o", str(tmp_path / "out"), "-w", "2", "-q"])
    captured = capsys.readouterr()
    assert rc == 2
    assert f"{src}:3001: not valid UTF-8" in captured.err
    assert "Traceback" not in captured.err + captured.out
