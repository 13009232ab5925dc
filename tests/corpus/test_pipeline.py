"""`prepare` end to end: files, counts, dedupe, split, real redaction, parallel == serial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endcloud.corpus import prepare
from endcloud.records import Pair

KEYS = ["id", "source", "session", "lang", "context", "query", "response"]


def _jddc(path: Path, sessions: list[list[tuple[int, str]]]) -> Path:
    lines = [f"sess{i:04d}\tUSERID_{i}\t{ws}\t0\t0\tnan\t{text}" for i, s in enumerate(sessions) for ws, text in s]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_outputs_and_report(tmp_path: Path, jddc_file: Path, ecd_file: Path, jsonl_file: Path, csv_file: Path, read_jsonl):
    out = tmp_path / "out"
    report = prepare([jddc_file, ecd_file, jsonl_file, csv_file], out, workers=1, eval_fraction=0.0)
    assert sorted(p.name for p in out.iterdir()) == ["eval.jsonl", "pairs.jsonl", "report.json", "report.txt", "sessions.jsonl"]
    pairs = read_jsonl(out / "pairs.jsonl")
    assert len(pairs) == report.pairs == report.counts["pairs_written"]
    assert read_jsonl(out / "eval.jsonl") == []
    for p in pairs:
        assert list(p)[:7] == KEYS
        assert Pair.from_json(p).to_json() == p
    by_id = {p["id"]: p for p in pairs}
    # JDDC: routing/NULL/system lines gone, emoticon removed, tab joined, masks intact.
    s1 = by_id["jddc:s1:2"]
    assert s1["query"] == "我的订单[ORDERID_10005629]到哪了 4**号能到吗"
    assert s1["response"] == "[订单x]已经到[站点x]了 明天送达"
    assert by_id["jddc:s1:4"]["query"] == "好的 谢谢"
    # JSONL facts/intent travel with the pair built from that assistant turn.
    stock = by_id["jsonl:c1:1"]
    assert stock["facts"] == ["20", "9.90"] and stock["intent"] == "stock" and stock["lang"] == "en"
    assert "facts" not in by_id["jsonl:c1:3"]
    assert by_id["ecd:ecd_train:1:3"]["response"] == "打95折的商品, EMS快递哦"
    assert by_id["csv:k1:1"]["response"] == "yes\nit is"  # the line break is kept
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    c = rep["counts"]
    assert c["jddc_routing_dropped"] == 1 and c["jddc_null_dropped"] == 1 and c["jddc_system_dropped"] == 1
    assert c["emoticon_removed"] == 1 and c["ecd_negative_skipped"] == 2 and c["system_turns_dropped"] == 1
    assert c["sessions"] == 2 + 3 + 2 + 2
    assert [i["format"] for i in rep["inputs"]] == ["jddc", "ecd", "jsonl", "csv"]
    assert rep["dedupe"]["method"].startswith("bloom filter")
    assert rep["peak_rss_mb"]["parent"] > 0 and rep["utterances_per_s"] > 0
    text = (out / "report.txt").read_text(encoding="utf-8")
    assert "jddc_routing_dropped" in text and "utterances/s" in text


def test_exact_and_near_duplicates_dropped(tmp_path: Path, read_jsonl):
    sessions = [
        [(0, "在吗"), (1, "在的，亲！")],
        [(0, "在吗"), (1, "在的，亲！")],  # exact duplicate of session 0's pair
        [(0, "在吗？"), (1, "在的 亲")],  # near duplicate (punctuation/whitespace only)
        [(0, "在吗"), (1, "不在哦")],  # new
    ]
    out = tmp_path / "out"
    report = prepare([_jddc(tmp_path / "d.txt", sessions)], out, workers=1, eval_fraction=0.0, redact=False)
    assert [p["response"] for p in read_jsonl(out / "pairs.jsonl")] == ["在的,亲!", "不在哦"]
    assert report.counts["exact_duplicate"] == 1 and report.counts["near_duplicate"] == 1


def test_eval_split_is_by_session_and_deterministic(tmp_path: Path, read_jsonl):
    # Distinct words, not numbers: digits alone do not make pairs distinct for the near-dedupe.
    sessions = [[(0, f"问题{chr(0x4E00 + i)}"), (1, f"回答{chr(0x4E00 + i)}"), (0, f"追问{chr(0x5000 + i)}"), (1, f"再答{chr(0x5000 + i)}")] for i in range(300)]
    src = _jddc(tmp_path / "d.txt", sessions)
    a = prepare([src], tmp_path / "a", workers=1, eval_fraction=0.2, redact=False)
    b = prepare([src], tmp_path / "b", workers=1, eval_fraction=0.2, redact=False)
    train, held = read_jsonl(tmp_path / "a" / "pairs.jsonl"), read_jsonl(tmp_path / "a" / "eval.jsonl")
    assert (tmp_path / "a" / "eval.jsonl").read_bytes() == (tmp_path / "b" / "eval.jsonl").read_bytes()
    assert a.eval_pairs == b.eval_pairs == len(held)
    assert 0.1 < len(held) / (len(held) + len(train)) < 0.3
    assert not {p["session"] for p in train} & {p["session"] for p in held}


def test_real_redaction_one_vault_per_session(tmp_path: Path, read_jsonl):
    sessions = [
        [(0, "我的电话是13812345678，邮箱 wang@example.com"), (1, "好的，已记录"), (0, "再确认一下 13812345678"), (1, "收到")],
        [(0, "我电话13987654321"), (1, "好的")],
    ]
    out = tmp_path / "out"
    report = prepare([_jddc(tmp_path / "d.txt", sessions)], out, workers=1, eval_fraction=0.0)
    pairs = read_jsonl(out / "pairs.jsonl")
    text = (out / "pairs.jsonl").read_text(encoding="utf-8")
    assert "13812345678" not in text and "wang@example.com" not in text and "13987654321" not in text
    assert "[PHONE_1]" in pairs[0]["query"] and "[EMAIL_1]" in pairs[0]["query"]
    assert pairs[1]["query"] == "再确认一下 [PHONE_1]"  # same number, same placeholder in the session
    assert pairs[2]["query"] == "我电话[PHONE_1]"  # a new session starts a new vault
    assert report.pii["PHONE"] == 3 and report.pii["EMAIL"] == 1
    assert report.counts["redacted_turns"] == 3


def test_injected_redactor_module(tmp_path: Path, read_jsonl):
    import sys
    import types

    fake = types.ModuleType("fake_privacy_for_corpus_test")

    class Vault:
        def __init__(self):
            self.n = 0

    class Redaction:
        def __init__(self, text, spans):
            self.text, self.spans = text, spans

    def redact(text, vault, lang=None):
        if "秘密" in text:
            vault.n += 1
            return Redaction(text.replace("秘密", f"[SECRET_{vault.n}]"), [types.SimpleNamespace(type="SECRET")])
        return Redaction(text, [])

    fake.Vault, fake.redact = Vault, redact
    sys.modules[fake.__name__] = fake
    try:
        out = tmp_path / "out"
        report = prepare([_jddc(tmp_path / "d.txt", [[(0, "告诉你个秘密"), (1, "好的")]])], out, workers=1,
                         eval_fraction=0.0, redactor=fake)
    finally:
        del sys.modules[fake.__name__]
    assert read_jsonl(out / "pairs.jsonl")[0]["query"] == "告诉你个[SECRET_1]"
    assert report.pii == {"SECRET": 1} and report.config["redactor"] == fake.__name__


def test_parallel_output_equals_serial(tmp_path: Path, read_jsonl):
    sessions = [
        [(0, f"第{i}单 电话13{i:09d}"), (1, "好的亲"), (0, f"问题{chr(0x4E00 + i % 700)}"), (1, f"回答{chr(0x4E00 + i)}"),
         (1, "还有吗"), (0, "没了"), (1, "再见")]
        for i in range(1500)
    ]
    src = _jddc(tmp_path / "d.txt", sessions)
    serial = prepare([src], tmp_path / "s", workers=1, chunk_bytes=16 * 1024)
    parallel = prepare([src], tmp_path / "p", workers=2, chunk_bytes=16 * 1024)
    for name in ("pairs.jsonl", "eval.jsonl"):
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "p" / name).read_bytes(), name
    skip = {"redaction_memo_hits"}  # each worker has its own memo
    assert {k: v for k, v in serial.counts.items() if k not in skip} == {k: v for k, v in parallel.counts.items() if k not in skip}
    assert serial.counts["exact_duplicate"] > 0 and serial.pairs + serial.eval_pairs > 1500
    assert parallel.peak_rss_mb["worker_max"] > 0


def test_options_are_validated(tmp_path: Path, jddc_file: Path):
    from endcloud.errors import ConfigError, RegistryError

    with pytest.raises(ConfigError, match="--eval-fraction"):
        prepare([jddc_file], tmp_path, eval_fraction=1.5)
    with pytest.raises(ConfigError, match="--lang"):
        prepare([jddc_file], tmp_path, lang="fr")
    with pytest.raises(ConfigError, match="--max-turn-chars"):
        prepare([jddc_file], tmp_path, max_turn_chars=0)
    with pytest.raises(RegistryError, match="valid: csv, ecd, jddc, jsonl"):
        prepare([jddc_file], tmp_path, format="xlsx")
    with pytest.raises(ConfigError, match="no input"):
        prepare([], tmp_path)
