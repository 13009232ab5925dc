"""Table II prompt: role text, N examples chosen by relevance with diversity, budget, context."""

from __future__ import annotations

import pytest

from endcloud.cloud import ROLE_TEXT, ExampleBank, build_prompt
from endcloud.cloud.prompt import PromptedTeacher
from endcloud.cloud.teacher import Teacher
from endcloud.errors import ConfigError, DataError
from endcloud.records import Reply
from endcloud.text import estimate_message_tokens

TOPICS_ZH = [
    ("发什么快递？", "亲，默认发中通快递哦"), ("可以发顺丰吗", "可以的，补8元"), ("今天能发货吗", "16点前下单当天发"),
    ("可以退货吗", "支持7天无理由退货"), ("退款多久到账", "3天内原路退回"), ("有优惠券吗", "满199减20"),
    ("能开发票吗", "开电子发票"), ("毛巾是什么材质", "纯棉的哦"), ("几天能到", "一般3天送达"), ("在吗", "亲，在的"),
]


def bank(n_filler: int = 0) -> list[dict]:
    ex = [{"id": f"e{i}", "query": q, "response": a} for i, (q, a) in enumerate(TOPICS_ZH)]
    ex += [{"id": f"f{i}", "query": f"这款杯子{i}号保温多久", "response": f"保温{i}小时"} for i in range(n_filler)]
    return ex


def conv(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_all_examples_fit_then_all_go_in_with_the_role_text():
    msgs = build_prompt(conv("能发顺丰吗"), bank(), lang="zh")
    system = msgs[0]["content"]
    assert msgs[0]["role"] == "system" and system.startswith(ROLE_TEXT["zh"])
    assert system.count("顾客：") == len(TOPICS_ZH) and system.count("客服：") == len(TOPICS_ZH)
    # the most relevant example sits last, nearest the conversation
    assert system.rstrip().endswith("客服：可以的，补8元")
    assert msgs[1:] == conv("能发顺丰吗")


def test_english_role_text_and_speakers():
    msgs = build_prompt(conv("Can I return it?"), [("Can I return it?", "Yes, within 30 days."), ("hi", "Hi!")], lang="en")
    assert msgs[0]["content"].startswith("Assume that you are an e-commerce customer service agent")
    # the same question as the customer's is not shown as its own example
    assert "Customer: hi\nCustomer service: Hi!" in msgs[0]["content"] and "30 days" not in msgs[0]["content"]


def test_fewer_shots_are_chosen_by_relevance_not_at_random():
    ex = bank(n_filler=40)
    for query, must in [("可以退货吗，不喜欢", "支持7天无理由退货"), ("保温杯保温多久", "保温"), ("开发票", "开电子发票")]:
        system = build_prompt(conv(query), ex, lang="zh", shots=3)[0]["content"]
        assert system.count("顾客：") == 3
        assert must in system, (query, system)


def test_diversity_avoids_near_duplicate_examples():
    # Six copies of the most relevant question (real logs repeat "在吗" hundreds of times):
    # relevance alone would fill every slot with them; one copy is enough.
    ex = [{"id": f"d{i}", "query": "保温杯保温多久", "response": f"保温{i}小时"} for i in range(6)]
    ex += [{"id": "o1", "query": "保温杯多少钱", "response": "59元"}, {"id": "o2", "query": "发什么快递", "response": "中通"}]
    chosen = ExampleBank(ex).select("保温杯保温多久呢", k=3, budget_tokens=10_000)
    ids = [e.id for e in chosen]
    assert sum(i.startswith("d") for i in ids) == 1 and "o1" in ids
    assert ids[-1].startswith("d")  # the most relevant sits last


def test_budget_caps_the_number_of_examples_and_conversation_stays_whole():
    ex = bank(n_filler=300)
    c = [{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "亲，在的"}, {"role": "user", "content": "发什么快递"}]
    msgs = build_prompt(c, ex, lang="zh", shots=500, budget_tokens=800)
    assert estimate_message_tokens(msgs) <= 800
    n = msgs[0]["content"].count("顾客：")
    assert 5 < n < 300
    assert msgs[1:] == c  # multi-turn context goes in as conversation turns


def test_deterministic_and_excludes_ids():
    ex = bank(n_filler=50)
    a = build_prompt(conv("几天能到"), ex, lang="zh", shots=5, exclude_ids=["e8"])
    b = build_prompt(conv("几天能到"), ex, lang="zh", shots=5, exclude_ids=["e8"])
    assert a == b and "一般3天送达" not in a[0]["content"]


def test_caller_system_text_is_kept_and_bad_input_fails():
    msgs = build_prompt([{"role": "system", "content": "店铺：棉语家居"}, *conv("在吗")], bank(), lang="zh", shots=2)
    assert "店铺：棉语家居" in msgs[0]["content"] and len(msgs) == 2
    with pytest.raises(ConfigError, match="fr"):
        build_prompt(conv("hi"), bank(), lang="fr")
    with pytest.raises(DataError, match="user"):
        build_prompt([{"role": "assistant", "content": "x"}], bank(), lang="zh")
    with pytest.raises(DataError):
        ExampleBank([{"nope": 1}])


class Echo(Teacher):
    name = "echo"

    def __init__(self):
        self.seen = []

    async def areply(self, messages):
        self.seen.append(messages)
        return Reply(text="ok", source="cloud")


def test_prompted_teacher_detects_language_and_wraps():
    inner = Echo()
    t = PromptedTeacher(inner, examples=bank(), shots=2)
    t.reply(conv("Which courier do you use?"))
    t.reply(conv("发什么快递"))
    assert inner.seen[0][0]["content"].startswith(ROLE_TEXT["en"])
    assert inner.seen[1][0]["content"].startswith(ROLE_TEXT["zh"])


def test_example_placeholders_cannot_collide_with_the_gates():
    ex = [{"id": "a", "query": "电话[PHONE_1]，地址[ADDRESS_2]", "response": "好的，已备注[PHONE_1]"}]
    system = build_prompt(conv("在吗"), ex, lang="zh")[0]["content"]
    assert "电话[PHONE]，地址[ADDRESS]" in system and "已备注[PHONE]" in system and "_1]" not in system
