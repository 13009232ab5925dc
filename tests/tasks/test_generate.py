"""Shop tasks from a generated shop: every task made, every item checked, held-out items apart,
the checkers catching broken items, the replay mix and the dialogue set."""

from __future__ import annotations

import pytest

from endcloud.cloud import default_teacher
from endcloud.fileio import read_jsonl
from endcloud.kb import ShopPack
from endcloud.tasks.checks import Checker
from endcloud.tasks.generate import TASKS, generate_tasks
from endcloud.tasks.mix import chat_set, mix_with_replay


@pytest.fixture(scope="module")
def zh_tasks(zh_shop):
    pack = ShopPack.load(zh_shop)
    logs = list(read_jsonl(zh_shop / "chats" / "chats.jsonl"))
    return pack, generate_tasks(pack, per_task=16, seed=1, teacher=default_teacher(shop=zh_shop), logs=logs)


def test_every_task_is_made_and_held_out_apart(zh_tasks):
    pack, ts = zh_tasks
    assert set(ts.report) == set(TASKS.names())
    for name, r in ts.report.items():
        assert r["train"] >= 1 and r["heldout"] >= 1, (name, r)
    ids = [it.id for it in ts.items]
    assert len(ids) == len(set(ids))
    train_inputs = {it.input_field for it in ts.train()}
    assert not any(it.input_field in train_inputs for it in ts.heldout())
    # held-out items are about products training never asked about
    held_skus = {it.meta["sku"] for it in ts.heldout() if it.task_name in ("attribute_ner", "product_qa", "mc_product")}
    train_skus = {it.meta["sku"] for it in ts.train() if it.task_name in ("attribute_ner", "product_qa", "mc_product")}
    assert held_skus and not held_skus & train_skus


def test_every_item_passes_its_checker_and_trains(zh_tasks):
    pack, ts = zh_tasks
    report = Checker(pack).check_all(ts.items)
    assert all(r["failed"] == 0 for r in report.values()), report
    ex = ts.items[0].to_example()
    assert ex.response == ts.items[0].response and ex.messages[-1]["role"] in ("user", "system")


def test_the_teacher_answers_product_questions(zh_tasks):
    _, ts = zh_tasks
    qa = [it for it in ts.items if it.task_name == "product_qa"]
    assert sum(it.meta["answered_by"] == "teacher" for it in qa) >= len(qa) - 2
    assert all(it.output_field[0].replace(" ", "").lower() in it.response.replace(" ", "").lower() for it in qa)


def test_rankings_and_recommendations_are_grounded(zh_tasks):
    pack, ts = zh_tasks
    by_sku = {p.sku: p for p in pack.products}
    names = {p.name: p for p in pack.products}
    for it in ts.items:
        if it.task_name == "recommend_rank":
            for sku, w in zip(it.meta["skus"], it.output_field):
                assert by_sku[sku].in_stock or w == 0
        if it.task_name == "recommend_chat":
            assert all(names[n].in_stock for n in it.output_field["allowed"])
            if not it.output_field["allowed"]:
                continue
            knowledge = it.messages[-1]["content"]
            assert it.messages[-1]["role"] == "system" and knowledge.startswith("Shop knowledge:")
            assert all(names[n].name in knowledge for n in it.output_field["allowed"])
            assert not any(p.name in it.response for p in pack.products if not p.in_stock)


def test_intents_come_from_templates_and_logs(zh_tasks, zh_shop):
    from endcloud.tasks.generate import log_intents

    _, ts = zh_tasks
    logged = dict(log_intents(read_jsonl(zh_shop / "chats" / "chats.jsonl")))
    intent_items = [it for it in ts.items if it.task_name == "intent"]
    from_logs = [it for it in intent_items if any(f"：{t}\n" in it.input_field and logged[t] == it.meta["intent"] for t in logged)]
    assert from_logs and len(from_logs) < len(intent_items)


def test_the_same_seed_makes_the_same_items(zh_shop):
    pack = ShopPack.load(zh_shop)
    a = generate_tasks(pack, tasks=["compare", "sentiment"], per_task=8, seed=3)
    b = generate_tasks(pack, tasks=["compare", "sentiment"], per_task=8, seed=3)
    assert [it.to_json() for it in a.items] == [it.to_json() for it in b.items]


def test_checkers_catch_broken_items(zh_tasks):
    import copy

    pack, ts = zh_tasks
    checker = Checker(pack)
    first = {}
    for it in ts.items:
        first.setdefault(it.task_name, it)
    mc = copy.deepcopy(first["mc_product"])
    mc.output_field = (mc.output_field + 1) % 4
    mc.response = f"{mc.output_field}. " + mc.input_field.split(f"\n{mc.output_field}. ")[1].split("\n")[0]
    assert checker.check(mc) == ["the right option is not the catalog's " + mc.meta["column"]]
    ner = copy.deepcopy(first["attribute_ner"])
    ner.output_field = ["不在标题里"]
    assert "is not a span of the title" in checker.check(ner)[0]
    rank = copy.deepcopy(first["recommend_rank"])
    out = next((p for p in pack.products if not p.in_stock), None)
    if out is not None:
        rank.meta["skus"][0] = out.sku
        rank.output_field[0] = 1.0
        rank.response = ",".join(str(i + 1) for i in sorted(range(len(rank.output_field)), key=lambda i: -rank.output_field[i]))
        assert "out of stock but relevant" in checker.check(rank)[0]
    qa = copy.deepcopy(first["product_qa"])
    qa.response = "亲，在的"
    assert "does not state" in checker.check(qa)[0]


def test_replay_is_the_dialogue_share_of_the_mix():
    tasks = [f"t{i}" for i in range(70)]
    mixed = mix_with_replay(tasks, ["d1", "d2", "d3"], replay=0.3, seed=0)
    assert len(mixed) == 100 and sum(x.startswith("d") for x in mixed) == 30 and set(tasks) <= set(mixed)
    assert mix_with_replay(tasks, [], replay=0.0) == mix_with_replay(tasks, [], replay=0.0) and len(mix_with_replay(tasks, [], replay=0.0)) == 70
    with pytest.raises(Exception, match="replay must be in"):
        mix_with_replay(tasks, ["d"], replay=1.0)


def test_the_dialogue_set_is_grounded_and_judged(zh_shop):
    pack = ShopPack.load(zh_shop)
    cs = chat_set(pack, default_teacher(shop=zh_shop), n=40, seed=0)
    assert cs.train and cs.heldout
    assert any(m["role"] == "system" and m["content"].startswith("Shop knowledge:") for e in cs.train for m in e.messages)
    judged = [c for c in cs.heldout if c.expect]
    assert judged and all(c.reference for c in judged)


def test_extra_held_out_dialogue_leaves_training_alone_and_is_never_trained_on(zh_shop):
    pack = ShopPack.load(zh_shop)
    teacher = default_teacher(shop=zh_shop)
    plain = chat_set(pack, teacher, n=40, seed=0)
    more = chat_set(pack, teacher, n=40, seed=0, extra_heldout=30)
    assert [(e.id, e.response) for e in more.train] == [(e.id, e.response) for e in plain.train]
    assert len(more.heldout) > len(plain.heldout)

    def asked(messages):  # the customer's turns of a conversation, in order
        return tuple(m["content"] for m in messages if m["role"] == "user")

    trained = {asked(e.messages) for e in more.train}
    added = {asked(c.messages) for c in more.heldout} - {asked(c.messages) for c in plain.heldout}
    assert added and not added & trained
    with pytest.raises(Exception, match="extra_heldout"):
        chat_set(pack, teacher, n=40, seed=0, extra_heldout=-1)


def test_task_examples_encode_for_training(zh_tasks, tiny_tokenizer):
    from endcloud.end.data import IGNORE_INDEX, Encoder

    _, ts = zh_tasks
    enc = Encoder(tiny_tokenizer, max_input_len=384, max_output_len=64)
    for name in ("intent", "recommend_chat", "recommend_rank"):
        it = next(i for i in ts.items if i.task_name == name)
        e = enc.encode(it.to_example())
        assert any(x != IGNORE_INDEX for x in e.labels) and e.labels[0] == IGNORE_INDEX
