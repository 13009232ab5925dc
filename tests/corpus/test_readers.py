"""Readers: real ECD/JDDC samples without loss, and each format on small fixture files."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from endcloud.corpus import READERS, detect_format, join_segmented, read
from endcloud.errors import DataError, RegistryError

CJK_SPACE_CJK = re.compile(r"[\u4e00-\u9fff] [\u4e00-\u9fff]")
PLACEHOLDER = re.compile(r"\[[^\[\]]{1,12}x\]")


# --------------------------------------------------------------------------- real samples


@pytest.mark.realdata
def test_ecd_sample_label1_lines_become_dialogues(shared_data: Path):
    path = shared_data / "ecd" / "ecd_train_sample.txt"
    raw = path.read_text(encoding="utf-8").splitlines()
    positives = [line.split("\t") for line in raw if line.startswith("1\t")]
    stats: Counter = Counter()
    dialogues = list(read(path, stats=stats))
    assert detect_format(path) == "ecd"
    assert len(raw) == 154
    assert len(dialogues) == len(positives) == 77
    assert stats["lines_read"] == 154 and stats["ecd_negative_skipped"] == 77
    # Every utterance of every positive line is there, in order, ending on the response.
    assert stats["utterances_in"] == sum(len(f) - 1 for f in positives)
    for d, fields in zip(dialogues, positives):
        assert len(d.turns) == len(fields) - 1
        assert d.turns[-1].role == "assistant" and d.turns[-1].text == join_segmented(fields[-1])
        assert all(a.role != b.role for a, b in zip(d.turns, d.turns[1:]))
        assert not any(CJK_SPACE_CJK.search(t.text) for t in d.turns)
        # Joining drops only spaces: the characters are all kept.
        assert "".join(t.text for t in d.turns).replace(" ", "") == "".join(fields[1:]).replace(" ", "")


@pytest.mark.realdata
def test_jddc_sample_every_line_accounted_for(shared_data: Path):
    path = shared_data / "jddc" / "jddc_chat_sample.txt"
    lines = path.read_text(encoding="utf-8").split("\n")
    lines = [line for line in lines if line]
    stats: Counter = Counter()
    dialogues = list(read(path, stats=stats))
    assert detect_format(path) == "jddc"
    assert len(lines) == 4986
    assert len(dialogues) == 400 == len({line.split("\t")[0] for line in lines})
    dropped = stats["jddc_null_dropped"] + stats["jddc_system_dropped"] + stats["jddc_routing_dropped"] + stats["jddc_empty_dropped"]
    turns = sum(len(d.turns) for d in dialogues)
    assert stats["lines_read"] == stats["utterances_in"] == 4986
    assert turns + stats["merged_same_speaker"] + dropped == 4986
    assert stats["jddc_routing_dropped"] == 1  # "人工客服 京东快递(移动端) 你好" opens the first session
    # Masked placeholders survive exactly: every one in the kept lines is in the turns.
    kept_text = "\n".join(line.split("\t", 6)[6] for line in lines if not line.split("\t", 6)[6].startswith("人工客服 "))
    read_text = "\n".join(t.text for d in dialogues for t in d.turns)
    assert Counter(PLACEHOLDER.findall(read_text)) == Counter(PLACEHOLDER.findall(kept_text))
    assert Counter(PLACEHOLDER.findall(read_text))["[订单x]"] == 294
    roles = {t.role for d in dialogues for t in d.turns}
    assert roles == {"user", "assistant"}


# --------------------------------------------------------------------------- fixture files


def test_jddc_reader_rules(jddc_file: Path):
    stats: Counter = Counter()
    ds = list(READERS["jddc"](jddc_file, stats))
    assert [d.id for d in ds] == ["s1", "s2"]
    s1 = ds[0]
    assert [t.role for t in s1.turns] == ["assistant", "user", "assistant", "user", "assistant"]
    assert s1.turns[1].text == "我的订单[ORDERID_10005629]到哪了 4**号能到吗"  # merged, masks intact
    assert s1.turns[2].text == "[订单x]已经到[站点x]了\t明天送达"  # content with a tab joined back, \r gone
    assert stats["jddc_null_dropped"] == 1 and stats["jddc_system_dropped"] == 1
    assert stats["jddc_routing_dropped"] == 1 and stats["jddc_content_with_tabs"] == 1
    assert stats["merged_same_speaker"] == 1
    assert ds[1].turns[0].text == "这个点还有人工客服…意外"  # not a routing line
    assert sum(len(d.turns) for d in ds) + 1 + 1 + 1 + 1 == stats["lines_read"] == 11


def test_jddc_sessions_never_split_across_chunks(jddc_file: Path, tmp_path: Path):
    # 200 copies of the fixture with distinct session ids, cut into tiny chunks.
    lines = jddc_file.read_text(encoding="utf-8").splitlines()
    big = tmp_path / "big.txt"
    big.write_text("\n".join(line.replace("s1\t", f"a{i}\t").replace("s2\t", f"b{i}\t") for i in range(200) for line in lines) + "\n", encoding="utf-8")
    reader = READERS["jddc"]
    whole = [d for c in reader.chunks(big, 1 << 20) for d in reader.parse(c)]
    chunks = list(reader.chunks(big, 1024))
    assert len(chunks) > 20
    small = [d for c in chunks for d in reader.parse(c)]
    assert [(d.id, d.texts) for d in small] == [(d.id, d.texts) for d in whole]
    assert len(whole) == 400
    # Line numbers stay right: each chunk starts where the previous one ended.
    assert chunks[1].first_line == 1 + chunks[0].data.count(b"\n")


def test_ecd_reader(ecd_file: Path):
    ds = list(read(ecd_file))
    assert len(ds) == 3
    assert [t.role for t in ds[0].turns] == ["user", "assistant", "user", "assistant"]
    assert ds[0].turns[0].text == "嗯嗯"
    assert ds[0].turns[3].text == "打95折的商品, EMS快递哦"  # space after a latin comma is kept
    assert ds[2].turns[0].text == "do you ship to Beijing"  # latin word spaces kept
    assert [t.role for t in ds[1].turns] == ["user", "assistant"]


def test_jsonl_reader_meta_and_system(jsonl_file: Path):
    stats: Counter = Counter()
    ds = list(read(jsonl_file, stats=stats))
    assert detect_format(jsonl_file) == "jsonl"
    assert ds[0].id == "c1" and ds[1].id == "chats:2"
    assert [t.role for t in ds[0].turns] == ["user", "assistant", "user", "assistant"]
    assert ds[0].turns[1].meta == {"intent": "stock", "facts": ["20", "9.90"]}
    assert stats["system_turns_dropped"] == 1 and stats["utterances_in"] == 7


def test_csv_reader(csv_file: Path):
    stats: Counter = Counter()
    ds = list(read(csv_file, stats=stats))
    assert detect_format(csv_file) == "csv"
    assert [d.id for d in ds] == ["k1", "k2"]
    assert ds[0].turns[1].text == "yes\nit is"  # quoted newline kept inside the field
    assert [t.role for t in ds[1].turns] == ["user", "assistant"]
    assert ds[1].turns[1].text == "您好 请问有什么可以帮您"
    assert stats["merged_same_speaker"] == 1 and stats["lines_read"] == 5


def test_format_detection_by_content(tmp_path: Path, jddc_file: Path, ecd_file: Path):
    assert detect_format(jddc_file) == "jddc"
    assert detect_format(ecd_file) == "ecd"
    csv_txt = tmp_path / "c.txt"
    csv_txt.write_text("conversation_id,role,text\nk,user,hi\n", encoding="utf-8")
    assert detect_format(csv_txt) == "csv"
    odd = tmp_path / "odd.txt"
    odd.write_text("hello world\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"odd.txt:1: cannot tell the format .*--format"):
        detect_format(odd)
    with pytest.raises(RegistryError, match="valid: csv, ecd, jddc, jsonl"):
        READERS.get("xml")


@pytest.mark.parametrize(
    "name, content, fmt, match",
    [
        ("bad.jsonl", b'{"messages": []}\n{"messages": [{"role": "user", "cont\n', "jsonl", r"bad.jsonl:2: not valid JSON"),
        ("bad.txt", "s\tu\t0\t0\t0\tnan\t好\ns\tu\t0\n".encode(), "jddc", r"bad.txt:2: truncated JDDC line"),
        ("bad2.txt", "s\tu\t7\t0\t0\tnan\t好\n".encode(), "jddc", r"bad2.txt:1: .*waiter_send"),
        ("gbk.txt", "s\tu\t0\t0\t0\tnan\t好\n".encode() + "s\tu\t1\t0\t0\tnan\t你好\n".encode("gbk"), "jddc", r"gbk.txt:2: not valid UTF-8"),
        ("bin.txt", b"s\tu\t0\t0\t0\tnan\thi\n\x00\x01\x02", "jddc", r"bin.txt:2: binary data"),
        ("bad.csv", b"id,speaker,msg\n1,user,hi\n", "csv", r"bad.csv:1: CSV header must have columns"),
        ("bad2.csv", b"conversation_id,role,text\nk,robot,hi\n", "csv", r"bad2.csv:2: unknown role 'robot'"),
        ("bad.ecd", "2\t你好\t好\n".encode(), "ecd", r"bad.ecd:1: not an ECD line"),
        ("bad3.jsonl", b'{"turns": []}\n', "jsonl", r"bad3.jsonl:1: expected \{\"messages\""),
    ],
)
def test_bad_input_names_file_and_line(tmp_path: Path, name: str, content: bytes, fmt: str, match: str):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError, match=match):
        list(read(p, fmt))


def test_missing_file_and_folder(tmp_path: Path):
    with pytest.raises(DataError, match="nope.txt: file not found"):
        list(read(tmp_path / "nope.txt", "jddc"))
    with pytest.raises(DataError, match="is a folder"):
        detect_format(tmp_path)
