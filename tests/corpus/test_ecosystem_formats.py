"""Training rows in the formats TRL, LLaMA-Factory and OpenAI fine-tuning read, written by
`endcloud corpus export` and read back by the corpus readers as chat logs."""

from __future__ import annotations

import json

import pytest

from endcloud.corpus.formats import FORMATS, as_messages, dataset_info_entry
from endcloud.errors import DataError
from endcloud.records import Label, Pair, Turn

CONTEXT = [{"role": "assistant", "content": "您好，欢迎光临"}, {"role": "user", "content": "在吗"},
           {"role": "assistant", "content": "亲，在的"}, {"role": "user", "content": "毛巾是什么材质"}]
MESSAGES = [{"role": "system", "content": "你是店铺客服"}, *CONTEXT]
REPLY = "这款毛巾是纯棉的。"


def test_openai_keeps_the_messages_and_appends_the_reply():
    row = FORMATS.get("openai").write(MESSAGES, REPLY)
    assert row == {"messages": MESSAGES + [{"role": "assistant", "content": REPLY}]}
    assert FORMATS.get("openai").read(row)[-1] == {"role": "assistant", "content": REPLY}


def test_sharegpt_alternates_from_the_user_with_one_system():
    row = FORMATS.get("sharegpt").write(MESSAGES, REPLY)
    assert row["system"] == "你是店铺客服"
    assert row["conversations"] == [{"from": "human", "value": "在吗"}, {"from": "gpt", "value": "亲，在的"},
                                    {"from": "human", "value": "毛巾是什么材质"}, {"from": "gpt", "value": REPLY}]
    back = FORMATS.get("sharegpt").read(row)
    assert back[0]["role"] == "system" and back[-1] == {"role": "assistant", "content": REPLY}


def test_alpaca_puts_earlier_turns_in_history():
    row = FORMATS.get("alpaca").write(MESSAGES, REPLY)
    assert row == {"instruction": "毛巾是什么材质", "input": "", "output": REPLY, "system": "你是店铺客服",
                   "history": [["在吗", "亲，在的"]]}
    assert FORMATS.get("alpaca").read(row)[1:] == CONTEXT[1:] + [{"role": "assistant", "content": REPLY}]


def test_consecutive_turns_of_one_speaker_are_joined():
    msgs = [{"role": "user", "content": "hi"}, {"role": "user", "content": "when do you ship?"}]
    row = FORMATS.get("sharegpt").write(msgs, "today")
    assert row["conversations"][0] == {"from": "human", "value": "hi\nwhen do you ship?"}
    with pytest.raises(DataError, match="user turn"):
        FORMATS.get("alpaca").write([{"role": "assistant", "content": "hello"}], "x")


def test_as_messages_and_bad_rows():
    assert as_messages({"messages": []}) is None
    conv = as_messages({"id": "s1", "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]})
    assert conv["id"] == "s1" and conv["source"] == "sharegpt" and conv["messages"][1]["role"] == "assistant"
    with pytest.raises(DataError, match="function_call"):
        as_messages({"conversations": [{"from": "function_call", "value": "{}"}]})
    assert dataset_info_entry("openai", "x.jsonl") is None
    assert dataset_info_entry("alpaca", "x.jsonl")["columns"]["history"] == "history"


@pytest.mark.parametrize("fmt", ["openai", "sharegpt", "alpaca"])
def test_export_then_read_back_as_chat_logs(tmp_path, fmt):
    """`corpus export` rows are chat logs `corpus prepare` reads (the jsonl reader takes all three)."""
    from typer.testing import CliRunner

    from endcloud.cli import app
    from endcloud.corpus.readers import read

    pairs = tmp_path / "pairs.jsonl"
    ctx = [Turn("user", "在吗"), Turn("assistant", "亲，在的")]
    rows = [Pair(id=f"p{i}", source="t", session=f"s{i}", lang="zh", context=ctx, query=f"问题{i}", response=f"回答{i}")
            for i in range(3)]
    pairs.write_text("".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in rows), encoding="utf-8")
    labels = tmp_path / "labels.jsonl"
    lb = Label(id="l0", query="有优惠吗", context=[], label="满99减10", teacher="reference")
    labels.write_text(json.dumps(lb.to_json(), ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "export" / f"shop-{fmt}.jsonl"
    res = CliRunner().invoke(app, ["corpus", "export", "--pairs", str(pairs), "--labels", str(labels), "--mix", "0.25",
                                   "--format", fmt, "-o", str(out), "--system", "你是店铺客服"])
    assert res.exit_code == 0, res.output
    from endcloud.end.data import read_examples

    expected = read_examples(pairs, labels, mix=0.25, system="你是店铺客服")  # what `endcloud train` would train on
    written = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(written) == len(expected) >= 3 and all(FORMATS.get(fmt).is_row(r) for r in written)
    info = tmp_path / "export" / "dataset_info.json"
    if fmt == "openai":
        assert not info.exists()
    else:
        assert json.loads(info.read_text())[f"shop-{fmt}"]["file_name"] == out.name
    dialogues = list(read(out))
    assert sorted(d.turns[-1].text for d in dialogues) == sorted(e.response for e in expected)
    first = next(d for d in dialogues if d.turns[-1].text == "回答0")
    assert [t.role for t in first.turns] == ["user", "assistant", "user", "assistant"]  # system turns dropped
    assert first.turns[2].text == "问题0"


def test_export_needs_input(tmp_path):
    from typer.testing import CliRunner

    from endcloud.cli import app

    res = CliRunner().invoke(app, ["corpus", "export", "--format", "openai", "-o", str(tmp_path / "x.jsonl")])
    assert res.exit_code != 0 and "--pairs" in str(res.exception)
    res = CliRunner().invoke(app, ["corpus", "export", "--pairs", "x", "--format", "chatml", "-o", str(tmp_path / "x.jsonl")])
    assert res.exit_code != 0 and "alpaca" in str(res.exception)
    assert not (tmp_path / "x.jsonl").exists()
