"""Issue 22: every reader, one normalisation.

A format is known by its content (not its file name); long turns are cut at a sentence or
word boundary, or kept whole; line breaks and lists survive in one normalised form;
`prepare` writes every utterance of the training side to sessions.jsonl; other rooms read
raw logs through the same pipeline (`log_pairs`, `log_sessions`, `normalise_texts`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from endcloud.corpus import CleanConfig, clean_text, detect_format, file_kind, log_pairs, log_sessions, prepare, read
from endcloud.corpus.clean import cut_long, normalise_whitespace
from endcloud.corpus.logs import normalise_texts
from tests.corpus.conftest import ECD_LINES, JDDC_LINES, write_lines

CJK_SPACE_CJK = re.compile(r"[\u4e00-\u9fff] [\u4e00-\u9fff]")


# --------------------------------------------------------------------------- format by content


def test_format_is_read_from_content_not_the_name(tmp_path: Path):
    # The official ECD files have no extension; a JDDC dump may be called .csv, JSONL .txt.
    assert detect_format(write_lines(tmp_path / "ecd_train", ECD_LINES)) == "ecd"
    assert detect_format(write_lines(tmp_path / "jddc.csv", JDDC_LINES)) == "jddc"
    assert detect_format(write_lines(tmp_path / "chats.txt", ['{"messages": [{"role": "user", "content": "hi"}]}'])) == "jsonl"
    assert detect_format(write_lines(tmp_path / "ecd.jsonl", ECD_LINES)) == "ecd"
    assert [len(d.turns) for d in read(tmp_path / "ecd_train")] == [4, 2, 4]


def test_a_bad_line_after_a_good_start_is_reported_by_the_reader_with_its_number(tmp_path: Path):
    from endcloud.errors import DataError

    p = write_lines(tmp_path / "jddc", JDDC_LINES[:6] + ["s9\tu\t7\t0\t0\tnan\tbad"])
    assert detect_format(p) == "jddc"
    with pytest.raises(DataError, match=r"jddc:7: .*waiter_send"):
        list(read(p))


def test_question_answer_csv_is_read_as_exchanges(tmp_path: Path):
    # Bitext-style support pairs: one question and its answer per row, intent on the answer.
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["flags", "instruction", "category", "intent", "response"])
    w.writerow(["B", "how do I cancel order {{Order Number}}", "ORDER", "cancel_order", "I can help.\n\n1) Sign in\n2) Open Orders"])
    w.writerow(["B", "where is my refund", "REFUND", "track_refund", "Refunds take 5 days."])
    p = tmp_path / "bitext"
    p.write_text(buf.getvalue(), encoding="utf-8")
    assert detect_format(p) == "csv"
    ds = list(read(p))
    assert [[t.role for t in d.turns] for d in ds] == [["user", "assistant"]] * 2
    assert ds[0].turns[1].meta == {"intent": "cancel_order"}
    pairs = log_pairs([p], redact=False)
    assert [x["intent"] for x in pairs] == ["cancel_order", "track_refund"]
    assert pairs[0]["response"] == "I can help.\n\n1. Sign in\n2. Open Orders"  # lines and the list kept, one form


def test_file_kind_tells_pairs_from_chat_logs(tmp_path: Path):
    pairs = tmp_path / "p.txt"
    pairs.write_text(json.dumps({"query": "在吗", "response": "在的"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert file_kind(pairs) == "pairs"
    assert file_kind(write_lines(tmp_path / "ecd_test", ECD_LINES)) == "chats"
    faq = tmp_path / "faq.jsonl"
    faq.write_text('{"question": "q", "answer": "a"}\n', encoding="utf-8")
    assert file_kind(faq) == "other"
    (tmp_path / "notes.md").write_text("# Shipping, returns\n\ntext\n", encoding="utf-8")
    assert file_kind(tmp_path / "notes.md") == "other"


# --------------------------------------------------------------------------- long turns, lines, lists


LONG_EN = ("Thanks for reaching out about your refund. " * 3 + "To check it, sign in to your account and open the "
           "orders page, where every refund shows its status and the expected date of payment to your card.")


def test_a_long_reply_is_cut_at_a_sentence_end_not_mid_word():
    out = cut_long(LONG_EN, 200)
    assert len(out) <= 200 and LONG_EN.startswith(out) and out.endswith("refund.")
    # Without a sentence end in the second half: at a space, whole words only.
    words = "word " * 100
    assert cut_long(words, 52) == ("word " * 10).strip()
    # Chinese: a sentence end, else a clause mark, else a character boundary.
    assert cut_long("亲，订单已经发货了。明天下午送到，请保持电话畅通哦亲", 20) == "亲，订单已经发货了。"
    assert cut_long("亲您的订单已经发货了请耐心等待明天送达", 8) == "亲您的订单已经发"


def test_long_turns_truncate_drop_or_keep_and_count():
    stats: Counter = Counter()
    assert clean_text(LONG_EN, CleanConfig(max_turn_chars=120), stats).endswith("refund.")
    assert stats["too_long_truncated"] == 1
    assert clean_text(LONG_EN, CleanConfig(max_turn_chars=120, long_turns="keep"), Counter()) == LONG_EN
    assert clean_text(LONG_EN, CleanConfig(max_turn_chars=120, long_turns="drop"), Counter()) == ""
    assert CleanConfig().max_turn_chars >= 2000  # an agent's answer with steps is not a too-long turn


@given(st.text(alphabet="abc xyz.,!?\n亲好的。，", min_size=1, max_size=80), st.integers(min_value=4, max_value=40))
@settings(max_examples=300, deadline=None)
def test_a_cut_never_splits_a_latin_word(text, limit):
    text = normalise_whitespace(text)
    out = cut_long(text, limit)
    assert len(out) <= limit and text.startswith(out)
    nxt = text[len(out)] if len(text) > len(out) else ""
    if len(text) > limit and out and nxt.isascii() and nxt.isalpha() and out[-1].isascii() and out[-1].isalpha():
        # a latin letter on both sides of the cut: only when one word fills the window
        assert " " not in out and "\n" not in out and not re.search(r"[^a-z]", out)


def test_line_breaks_and_lists_have_one_form():
    text = "Steps:\r\n\r\n\r\n• open the app\n*   tap Orders\n1) choose the order\n2、申请退款\n(3) done\n-5% today\n*bold*"
    assert normalise_whitespace(text) == "Steps:\n\n- open the app\n- tap Orders\n1. choose the order\n2. 申请退款\n3. done\n-5% today\n*bold*"
    assert normalise_whitespace("  好的\t 亲  ") == "好的 亲"  # a one-line text: as before
    assert normalise_whitespace("1、请您先申请退款") == "1、请您先申请退款"  # list markers only in multi-line texts


def test_prepare_keeps_lines_and_whole_words_in_pairs(tmp_path: Path, read_jsonl):
    reply = "\n".join(["Here is how to get a refund:", "", *[f"• step {i}: open the page and confirm the request" for i in range(1, 40)]])
    rows = [{"id": "b1", "messages": [{"role": "user", "content": "refund?"}, {"role": "assistant", "content": reply}]}]
    src = write_lines(tmp_path / "chats", [json.dumps(r) for r in rows])
    out = tmp_path / "out"
    prepare([src], out, workers=1, eval_fraction=0.0, max_turn_chars=600, redact=False)
    [pair] = read_jsonl(out / "pairs.jsonl")
    got = pair["response"]
    assert got.startswith("Here is how to get a refund:\n\n- step 1: open the page") and len(got) <= 600
    assert got.endswith("request")  # cut after a whole item, not inside a word
    assert reply.replace("• ", "- ").startswith(got)


# --------------------------------------------------------------------------- sessions.jsonl: every utterance


def test_sessions_file_holds_every_training_side_utterance(tmp_path: Path, jddc_file: Path, ecd_file: Path, read_jsonl):
    out = tmp_path / "out"
    rep = prepare([jddc_file, ecd_file], out, workers=1, eval_fraction=0.0)
    sessions = read_jsonl(out / "sessions.jsonl")
    assert len(sessions) == rep.counts["sessions"] == rep.counts["sessions_written"]
    assert sum(len(s["messages"]) for s in sessions) == rep.counts["utterances_out"]
    s2 = next(s for s in sessions if s["id"] == "s2")
    assert s2["messages"][-1] == {"role": "assistant", "content": "亲,在的"} and s2["source"] == "jddc"
    # Held-out sessions are not in it (pretraining must never see eval data).
    rep = prepare([jddc_file, ecd_file], tmp_path / "held", workers=1, eval_fraction=0.999)
    assert rep.counts.get("sessions_written", 0) < rep.counts["sessions"]
    held_ids = {p["session"] for p in read_jsonl(tmp_path / "held" / "eval.jsonl")}
    assert held_ids and not held_ids & {s["id"] for s in read_jsonl(tmp_path / "held" / "sessions.jsonl")}


@pytest.mark.realdata
def test_real_jddc_every_utterance_reaches_sessions_but_not_pairs(shared_data: Path, tmp_path: Path, read_jsonl):
    rep = prepare([shared_data / "jddc" / "jddc_chat_sample.txt"], tmp_path, workers=2, eval_fraction=0.0)
    sessions = read_jsonl(tmp_path / "sessions.jsonl")
    assert sum(len(s["messages"]) for s in sessions) == rep.counts["utterances_out"] == 4985
    # The longest pair of each session (what pretraining used to keep) misses a quarter of them.
    longest: dict[str, int] = {}
    for p in read_jsonl(tmp_path / "pairs.jsonl"):
        longest[p["session"]] = max(longest.get(p["session"], 0), len(p["context"]) + 2)
    assert sum(longest.values()) < 0.8 * 4985


@pytest.mark.realdata
def test_real_ecd_one_normalisation_everywhere(shared_data: Path):
    path = shared_data / "ecd" / "ecd_train_sample.txt"
    pairs = log_pairs([path])
    texts = [t for p in pairs for t in (p["query"], p["response"])]
    assert texts and not any(CJK_SPACE_CJK.search(t) for t in texts)
    sessions = log_sessions([path])
    assert len(sessions) == 77
    # A text read on its own (an ECD test file's candidate) is normalised the same way.
    first = path.read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert normalise_texts([first[-1]], segmented=True) == [sessions[0]["messages"][-1]["content"]]
