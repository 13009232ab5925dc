"""Issue 22: pretraining reads every utterance of the logs, not only those that became pairs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from endcloud.corpus import prepare
from endcloud.end.pretrain import read_corpus
from tests.corpus.conftest import ECD_LINES, JDDC_LINES, write_lines


WORDS = "甲乙丙丁戊己庚辛壬癸子丑寅卯"


def _utterances(docs) -> list[str]:
    return [m["content"] for d in docs if isinstance(d, list) for m in d]


def _long_session(tmp_path: Path) -> Path:
    """One chat of 14 exchanges and a last customer turn no agent answered: a pair keeps at
    most 8 turns of context, so the longest pair holds 10 of its 29 turns."""
    msgs = []
    for i in range(14):  # distinct words: digits alone would make near-duplicate pairs
        msgs += [{"role": "user", "content": f"问题{WORDS[i]}"}, {"role": "assistant", "content": f"回答{WORDS[i]}"}]
    msgs.append({"role": "user", "content": "好的谢谢"})
    p = tmp_path / "chats.jsonl"
    p.write_text(json.dumps({"id": "long", "messages": msgs}, ensure_ascii=False) + "\n", encoding="utf-8")
    return p


def test_pairs_jsonl_is_read_as_the_sessions_beside_it(tmp_path: Path):
    out = tmp_path / "corpus"
    prepare([_long_session(tmp_path)], out, workers=1, eval_fraction=0.0)
    sources: list = []
    docs = read_corpus([out / "pairs.jsonl"], sources)
    assert len(_utterances(docs)) == 29 and _utterances(docs)[-1] == "好的谢谢"
    assert sources[0]["path"].endswith("sessions.jsonl") and "every utterance" in sources[0]["read_as"]
    # The folder: pairs.jsonl is skipped beside sessions.jsonl, so nothing is read twice.
    assert len(_utterances(read_corpus([out]))) == 29


def test_pairs_alone_are_stitched_back_by_turn_number(tmp_path: Path):
    out = tmp_path / "corpus"
    prepare([_long_session(tmp_path)], out, workers=1, eval_fraction=0.0)
    alone = tmp_path / "alone" / "pairs.jsonl"
    alone.parent.mkdir()
    shutil.copy(out / "pairs.jsonl", alone)
    sources: list = []
    got = _utterances(read_corpus([alone], sources))
    # Every turn a pair holds, in order, once: all but the unanswered last one (was 10 of 29).
    assert got == [f"{k}{w}" for w in WORDS for k in ("问题", "回答")]
    assert "stitched by turn number" in sources[0]["read_as"]


def test_a_raw_log_goes_through_the_corpus_pipeline(tmp_path: Path):
    jddc = write_lines(tmp_path / "jddc_dump.csv", JDDC_LINES)  # the name says CSV; the content is JDDC
    ecd = write_lines(tmp_path / "ecd_train", ECD_LINES)  # the official ECD files have no extension
    sources: list = []
    docs = read_corpus([jddc, ecd], sources)
    assert [s["read_as"] for s in sources] == ["chat log through the corpus pipeline (cleaned, redacted)"] * 2
    texts = _utterances(docs)
    assert "好的 谢谢" in texts  # the emoticon code is gone, as in pairs
    assert "打95折的商品, EMS快递哦" in texts  # segmentation spaces removed, as in pairs
    assert not any(t.startswith("人工客服 京东快递") or t == "NULL" for t in texts)  # routing and NULL lines dropped
    # A folder walk finds the extension-less ECD file by its content too.
    folder = tmp_path / "logs"
    folder.mkdir()
    shutil.copy(ecd, folder / "ecd_train")
    assert "打95折的商品, EMS快递哦" in _utterances(read_corpus([folder]))


@pytest.mark.realdata
def test_real_jddc_pretraining_sees_every_utterance(shared_data: Path, tmp_path: Path):
    out = tmp_path / "corpus"
    rep = prepare([shared_data / "jddc" / "jddc_chat_sample.txt"], out, workers=2)
    train_utts = sum(len(json.loads(line)["messages"]) for line in (out / "sessions.jsonl").read_text(encoding="utf-8").splitlines())
    held_sessions = {json.loads(line)["session"] for line in (out / "eval.jsonl").read_text(encoding="utf-8").splitlines()}
    assert rep.counts["sessions_written"] + len(held_sessions) <= rep.counts["sessions"]
    assert len(_utterances(read_corpus([out / "pairs.jsonl"]))) == train_utts
    # Straight from the raw log: every utterance of every session (4,985 after cleaning).
    assert len(_utterances(read_corpus([shared_data / "jddc" / "jddc_chat_sample.txt"]))) == 4985
