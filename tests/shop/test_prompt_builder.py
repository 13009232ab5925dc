"""The one prompt builder: training examples carry the knowledge exactly as served turns do."""

from __future__ import annotations

from pathlib import Path

import pytest

from endcloud.end.data import Encoder, Example, ground_examples
from endcloud.kb import KnowledgeBase, ShopPack
from endcloud.kb.prompt import HEADER, build_messages, customer_text, ground, knowledge_text, retrieve


def _pack(tmp_path: Path) -> ShopPack:
    (tmp_path / "shop.yaml").write_text("name: Spoke & Chain\nlanguage: en\ncurrency: USD\n", encoding="utf-8")
    (tmp_path / "catalog.csv").write_text(
        "sku,name,price,stock,frame\n"
        "BK-100,Trailblazer Gravel Bike,1299,4,aluminium\n"
        "BK-200,City Commuter Bike,649.5,0,steel\n"
        "HL-7,Lumen Front Light,39.99,25,\n", encoding="utf-8")
    (tmp_path / "policies.md").write_text(
        "## Sending your bike\nBikes leave our workshop within 2 working days, boxed, by DPD.\n\n"
        "## Changed your mind?\nUnridden bikes can come back within 30 days.\n", encoding="utf-8")
    return ShopPack.load(tmp_path)


def test_knowledge_goes_after_the_question_or_into_the_system_message(tmp_path):
    kb = KnowledgeBase(_pack(tmp_path))
    turns = [{"role": "user", "content": "how much is the Trailblazer Gravel Bike?"}]
    snippets = retrieve(kb, turns, 3)
    assert snippets and snippets[0].ref == "BK-100"
    late = build_messages(turns, snippets, system_parts=["be brief"], late=True)
    assert [m["role"] for m in late] == ["system", "user", "system"]
    assert late[0]["content"] == "be brief" and late[-1]["content"] == knowledge_text(snippets)
    early = build_messages(turns, snippets, system_parts=["be brief"], late=False)
    assert [m["role"] for m in early] == ["system", "user"]
    assert early[0]["content"].startswith("be brief") and "1299" in early[0]["content"]
    assert build_messages(turns, [], late=True) == turns  # nothing found: nothing added


def test_a_follow_up_gets_the_earlier_products_row(tmp_path):
    kb = KnowledgeBase(_pack(tmp_path))
    turns = [{"role": "user", "content": "do you have the City Commuter Bike?"},
             {"role": "assistant", "content": "Sorry, City Commuter Bike is out of stock right now."},
             {"role": "user", "content": "ok and how much is it"}]
    refs = [(s.source, s.ref) for s in retrieve(kb, turns, 2)]
    assert ("catalog", "BK-200") in refs


def test_training_examples_are_grounded_like_served_turns(tmp_path):
    kb = KnowledgeBase(_pack(tmp_path))
    ex = Example([{"role": "user", "content": "when do bikes ship?"}], "Bikes leave our workshop within 2 working days, boxed, by DPD.")
    (grounded,) = ground_examples([ex], kb, late=True)
    assert grounded.messages[-1]["role"] == "system" and grounded.messages[-1]["content"].startswith(HEADER)
    assert "DPD" in grounded.messages[-1]["content"]
    # the same conversation, built the way the server builds it
    served = build_messages([{"role": "user", "content": "when do bikes ship?"}],
                            retrieve(kb, [{"role": "user", "content": "when do bikes ship?"}], 3), late=True)
    assert grounded.messages == served
    # grounding twice does not stack knowledge blocks
    assert ground(grounded.messages, kb, late=True) == served


def test_a_changed_price_reaches_the_prompt_without_retraining(tmp_path):
    pack = _pack(tmp_path)
    before = ground([{"role": "user", "content": "Lumen Front Light price?"}], KnowledgeBase(pack))
    csv = (tmp_path / "catalog.csv").read_text(encoding="utf-8").replace("39.99", "34.5")
    (tmp_path / "catalog.csv").write_text(csv, encoding="utf-8")
    after = ground([{"role": "user", "content": "Lumen Front Light price?"}], KnowledgeBase(ShopPack.load(tmp_path)))
    assert "39.99" in before[-1]["content"] and "34.5" in after[-1]["content"] and "39.99" not in after[-1]["content"]


def test_customer_text_lists_orders_and_preferences():
    text = customer_text([{"order_id": "A1", "status": "shipped", "courier": ""}], {"size": "M"})
    assert text == "Customer:\norder order_id: A1, status: shipped\npreferences: size: M"
    assert customer_text() is None


@pytest.mark.parametrize("late", [True, False])
def test_the_encoder_keeps_the_question_and_its_knowledge_when_trimming(tmp_path, late):
    from endcloud.end.tokenizer import train_tokenizer

    kb = KnowledgeBase(_pack(tmp_path))
    history = []
    for i in range(12):
        history += [{"role": "user", "content": f"filler question number {i} about nothing in particular"},
                    {"role": "assistant", "content": f"filler answer number {i}"}]
    ex = Example(history + [{"role": "user", "content": "when do bikes ship?"}], "Within 2 working days by DPD.")
    (g,) = ground_examples([ex], kb, late=late)
    tok = train_tokenizer([m["content"] for m in g.messages] + [ex.response] * 3, vocab_size=400)
    enc = Encoder(tok, max_input_len=240, max_output_len=32).encode(g)
    text = tok.decode(enc.input_ids)
    assert enc.truncated and "when do bikes ship?" in text and "DPD" in text and "filler question number 0 " not in text
