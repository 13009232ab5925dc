"""Issue 22: `endcloud eval` on a shop's chat logs, with the agents' own replies as the
reference when no teacher is configured, and the columns that keep a generic model honest
(BLEU-4, ROUGE-L, distinct-1/2, the most common reply's share, degenerate replies)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from endcloud.cli import main
from endcloud.errors import DataError
from endcloud.scoring import EvalInput, load_inputs, run_eval
from endcloud.scoring.textmetrics import bleu4, distinct_n, is_degenerate, reply_metrics, rouge_l, top_reply_share
from tests.corpus.conftest import JDDC_LINES, write_lines

LOG = [
    "a1\tu1\t0\t0\t0\tnan\t在吗",
    "a1\tu1\t1\t0\t0\tnan\t亲，在的，请问有什么可以帮您？",
    "a1\tu1\t0\t0\t0\tnan\t今天下单什么时候发货",
    "a1\tu1\t1\t0\t0\tnan\t下午4点前下单当天发货哦",
    "a2\tu2\t0\t0\t0\tnan\t可以退货吗",
    "a2\tu2\t1\t0\t0\tnan\t签收后7天内可以申请退货",
    "a2\tu2\t0\t0\t0\tnan\t运费谁出",
    "a2\tu2\t1\t0\t0\tnan\t质量问题运费我们承担",
]


class Echo:
    """An end-model stand-in: replies with `fn(conversation)`."""

    def __init__(self, fn):
        self.fn = fn

    def generate(self, conversations, **_):
        return [SimpleNamespace(text=self.fn(c)) for c in conversations]


def test_logs_are_inputs_with_the_agents_reply_as_reference(tmp_path: Path):
    items = load_inputs(write_lines(tmp_path / "log", LOG))  # no extension: JDDC by content
    assert [it.query for it in items] == ["在吗", "今天下单什么时候发货", "可以退货吗", "运费谁出"]
    assert items[1].reference == "下午4点前下单当天发货哦" and items[1].context[-1]["content"] == "亲,在的,请问有什么可以帮您?"
    pair = EvalInput.coerce({"query": "q", "response": "r"}, 0)
    chat = EvalInput.coerce({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}, 0)
    assert (pair.reference, chat.reference) == ("r", "hello")


def test_without_a_teacher_the_agent_is_the_reference_and_generic_replies_show(tmp_path: Path):
    items = load_inputs(write_lines(tmp_path / "log", LOG))
    refs = {it.query: it.reference for it in items}
    models = {"perfect": Echo(lambda c: refs[c[-1]["content"]]), "generic": Echo(lambda c: "您好，请问有什么可以帮您的吗？")}
    rep = run_eval(items, models, None, out_dir=tmp_path / "out", similarity="char-ngram", matching="lexical")
    s = rep.summary
    assert s["reference"] == "agent" and "agent" in rep.models + [r["model"] for r in rep.rows]
    tm = s["text_metrics"]
    assert tm["perfect"]["bleu4"] == pytest.approx(100.0) and tm["perfect"]["rouge_l"] == pytest.approx(1.0)
    assert s["averages"]["perfect"]["sim"] == pytest.approx(1.0)
    assert tm["generic"]["top_share"] == 1.0 and tm["generic"]["distinct_replies"] == 1
    assert tm["generic"]["bleu4"] < tm["perfect"]["bleu4"] and tm["generic"]["distinct_2"] < tm["perfect"]["distinct_2"]
    md = (tmp_path / "out" / "table.md").read_text(encoding="utf-8")
    assert "## Against the reference (agent) and diversity" in md and "| agent |" in md
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["text_metrics"]["generic"]["top_share"] == 1.0
    with pytest.raises(DataError, match="no teacher and no logged agent reply"):
        run_eval(["在吗"], models, None, out_dir=tmp_path / "o2")


def test_eval_command_on_a_log_needs_no_shop_and_no_cloud(tmp_path: Path, tiny_base_dir, capsys, monkeypatch):
    monkeypatch.delenv("ENDCLOUD_CLOUD_BASE_URL", raising=False)
    log = write_lines(tmp_path / "jddc_sample", JDDC_LINES + LOG)
    ws = tmp_path / "ws"  # empty: no shop pack, no corpus (was: "shop pack folder not found", exit 2)
    code = main(["eval", "-w", str(ws), "--inputs", str(log), "--model", f"end={tiny_base_dir}", "--limit", "3",
                 "--max-new-tokens", "4", "--similarity", "char-ngram", "--matching", "lexical", "-o", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "teacher: none (logged agent replies)" in out and "vs agent" in out and "BLEU-4" in out and "top reply" in out
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["n_inputs"] == 3 and s["reference"] == "agent"
    assert set(s["text_metrics"]) == {"end", "agent"}


def test_auto_reference_without_logs_says_what_to_pass(tmp_path: Path, tiny_base_dir, capsys, monkeypatch):
    monkeypatch.delenv("ENDCLOUD_CLOUD_BASE_URL", raising=False)
    queries = tmp_path / "q.txt"
    queries.write_text("在吗\n", encoding="utf-8")
    code = main(["eval", "-w", str(tmp_path / "ws"), "--inputs", str(queries), "--model", f"end={tiny_base_dir}",
                 "-o", str(tmp_path / "out")])
    assert code == 2
    assert "no reference to score against: pass chat logs or pairs with --inputs" in capsys.readouterr().err


# --------------------------------------------------------------------------- the metrics themselves


def test_distinct_top_share_and_degenerate():
    assert distinct_n(["好的好的", "好的"], ["zh", "zh"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["a b", "a c"], ["en", "en"], 2) == pytest.approx(1.0)
    assert top_reply_share(["好的。", "好的", "在的"]) == (pytest.approx(2 / 3), "好的。")
    assert is_degenerate("", "zh") and is_degenerate("好的好的好的好的", "zh") and is_degenerate("ok ok ok ok thanks", "en")
    assert not is_degenerate("您好，请问有什么可以帮您的吗？", "zh") and not is_degenerate("ok, ok, thanks a lot for waiting", "en")


def test_chinese_rouge_and_bleu_count_characters():
    # rouge-score's own tokenizer keeps ASCII words only: Chinese would always score 0.
    assert rouge_l(["下午发货"], ["下午四点发货"], ["zh"]) == pytest.approx(2 * 1.0 * (4 / 6) / (1 + 4 / 6))
    assert bleu4(["下午四点前下单当天发货"], ["下午四点前下单当天发货"], ["zh"]) == pytest.approx(100.0)
    m = reply_metrics(["下午发货", "下午发货"], None, ["zh", "zh"])
    assert m["bleu4"] is None and m["top_share"] == 1.0
