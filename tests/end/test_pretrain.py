"""`endcloud pretrain`: reading a shop's text, and a from-scratch base that really learns it."""

from __future__ import annotations

import json
import math

import pytest

from endcloud.end.base import load_base
from endcloud.end.pretrain import PretrainConfig, pretrain, read_corpus
from endcloud.errors import ConfigError, DataError


def test_read_corpus_formats(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"id": "1", "session": "s1", "context": [], "query": "在吗", "response": "在的亲"},
        {"id": "2", "session": "s1", "context": [{"role": "user", "text": "在吗"}, {"role": "assistant", "text": "在的亲"}],
         "query": "发什么快递", "response": "默认中通"},
    ]
    pairs.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"id": "c", "messages": [{"role": "user", "content": "Hi"},
                                                          {"role": "assistant", "content": "Hello"}]}) + "\n")
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "faq.jsonl").write_text(json.dumps({"question": "包邮吗", "answer": "满99包邮"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (shop / "policies.md").write_text("## 发货\n\n下午4点前下单当天发货。\n\n## 退货\n\n七天无理由。\n", encoding="utf-8")
    (shop / "catalog.csv").write_text("sku,name,price,stock\nA1,毛巾,19.9,5\n", encoding="utf-8")
    (shop / "jddc.txt").write_text("s\tu\t0\t0\t0\tnan\t你好\ns\tu\t1\t0\t0\tnan\t您好亲\n", encoding="utf-8")
    docs = read_corpus([pairs, chats, shop])
    dialogues = [d for d in docs if isinstance(d, list)]
    texts = [d for d in docs if isinstance(d, str)]
    # the session's longest pair stands for the whole dialogue (pairs repeat their context)
    assert [m["content"] for m in dialogues[0]] == ["在吗", "在的亲", "发什么快递", "默认中通"] or \
        any([m["content"] for m in d] == ["在吗", "在的亲", "发什么快递", "默认中通"] for d in dialogues)
    assert sum(1 for d in dialogues if d[0]["content"] == "在吗") == 1
    assert any(d[0]["content"] == "Hi" for d in dialogues) and any(d[0]["content"] == "包邮吗" for d in dialogues)
    assert "下午4点前下单当天发货。" in texts
    # a JDDC log is read as a dialogue, through the corpus pipeline (tests/corpus/test_pretrain_reads.py)
    assert [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好亲"}] in dialogues
    assert any("毛巾" in t and "19.9" in t for t in texts)
    with pytest.raises(DataError, match="not found"):
        read_corpus([tmp_path / "nope.jsonl"])


@pytest.mark.parametrize(("kw", "quoted"), [({"hidden": 0}, "0"), ({"hidden": 65, "heads": 4}, "65"),
                                            ({"vocab_size": 100}, "100"), ({"lr": -1.0}, "-1.0")])
def test_config_validation_quotes_value(kw, quoted):
    with pytest.raises(ConfigError, match=quoted.replace(".", r"\.")):
        PretrainConfig(**kw).validate()
    with pytest.raises(ConfigError, match="bogus"):
        pretrain(["x"], "/nonexistent", bogus=1)


@pytest.mark.slow
def test_pretrained_base_is_a_normal_hf_dir_that_learned(train_base_dir):
    rec = json.loads((train_base_dir / "pretrain.json").read_text())
    m = rec["metrics"]
    assert m["eval_loss"] < m["eval_loss_before"] - 2.0
    assert m["eval_ppl"] < m["uniform_ppl"] / 20  # far below guessing uniformly over the vocabulary
    assert rec["model"]["architecture"] == "Qwen2ForCausalLM" and rec["steps"] == 60
    assert rec["samples"] and all(set(s) == {"query", "reply", "reference"} for s in rec["samples"])
    model, tok = load_base(train_base_dir)  # the same loader a downloaded Qwen2.5 goes through
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 64
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "在吗"}], tokenize=False)
    assert math.isclose(m["eval_ppl"], math.exp(m["eval_loss"]))
