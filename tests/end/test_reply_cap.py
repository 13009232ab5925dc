"""Agents' stock phrases capped in the training set (`cap_repeated_replies`, `train --max-reply-repeats`)."""

from __future__ import annotations

import json

from endcloud.cli import main
from endcloud.end.data import Example, cap_repeated_replies, read_examples
from endcloud.records import Pair


def _ex(i: int, reply: str) -> Example:
    return Example([{"role": "user", "content": f"question {i}"}], reply, id=f"q{i}")


def test_each_reply_kept_at_most_n_times_the_rest_untouched():
    stock = "请问还有其他还可以帮到您的吗?"
    exs = [_ex(i, stock) for i in range(10)] + [_ex(100 + i, f"answer {i}") for i in range(5)] + [_ex(200, stock + " ")]
    for n in (1, 3):
        kept = cap_repeated_replies(exs, n, seed=0)
        assert sum(e.response.strip() == stock for e in kept) == n  # trailing space: the same reply
        assert [e.response for e in kept if e.response.startswith("answer")] == [f"answer {i}" for i in range(5)]
        assert [e.id for e in kept] == [e.id for e in exs if e in kept]  # order kept
    assert cap_repeated_replies(exs, 0) == exs
    assert [e.id for e in cap_repeated_replies(exs, 2, seed=1)] == [e.id for e in cap_repeated_replies(exs, 2, seed=1)]
    assert [e.id for e in cap_repeated_replies(exs, 2, seed=1)] != [e.id for e in cap_repeated_replies(exs, 2, seed=2)]


def test_read_examples_caps_the_natural_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [Pair(id=f"p{i}", source="t", session="s", lang="zh", context=[], query=f"问题{i}",
                 response="好的" if i % 2 else f"回答{i}").to_json() for i in range(8)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert len(read_examples(path)) == 8
    capped = read_examples(path, max_reply_repeats=1)
    assert len(capped) == 5 and sum(e.response == "好的" for e in capped) == 1


def test_the_flag_is_checked(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text("", encoding="utf-8")
    assert main(["train", "--base", str(tmp_path), "--pairs", str(path), "-o", str(tmp_path / "o"),
                 "--max-reply-repeats", "-1"]) == 2
    assert "--max-reply-repeats" in capsys.readouterr().err
