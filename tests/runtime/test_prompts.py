"""Prompts that continue a conversation's ids (`endcloud.runtime.prompts`), on the fixture tokenizer."""

from __future__ import annotations

import pytest

from endcloud.end.base import render_chat
from endcloud.runtime.prompts import Specials, Transcript, build_prompt


@pytest.fixture(scope="module")
def tok(tiny_tokenizer):
    from endcloud.end.tokenizer import CHAT_TEMPLATE

    if not getattr(tiny_tokenizer, "chat_template", None):
        tiny_tokenizer.chat_template = CHAT_TEMPLATE
    return tiny_tokenizer


def _build(tok, messages, *, max_input_len=256, **kw):
    return build_prompt(messages, render=lambda ms: render_chat(tok, ms),
                        encode=lambda s: list(tok(s, add_special_tokens=False)["input_ids"]),
                        max_input_len=max_input_len, specials=Specials.of(tok), **kw)


def _encode(tok, s):
    return list(tok(s, add_special_tokens=False)["input_ids"])


def _odd_ids(tok, text):
    """`text` as ids the tokenizer would not choose itself (one piece per character)."""
    ids = [i for ch in text for i in _encode(tok, ch)]
    assert ids != _encode(tok, text) and tok.decode(ids, skip_special_tokens=True) == text
    return ids


def user(c):
    return {"role": "user", "content": c}


def assistant(c):
    return {"role": "assistant", "content": c}


def test_a_fresh_prompt_is_the_rendered_conversation(tok):
    msgs = [{"role": "system", "content": "Be brief."}, user("几天发货？")]
    p = _build(tok, msgs)
    assert p.text == render_chat(tok, msgs) and p.ids == _encode(tok, p.text)
    assert p.reused == 0 and p.system and p.first == ("user", "几天发货？")
    assert "<|im_end|>" in Specials.of(tok).texts and "<|im_start|>" in Specials.of(tok).texts


def test_the_next_turn_continues_the_ids_the_model_sampled(tok):
    first = [user("几天发货？")]
    p1 = _build(tok, first)
    reply = "We ship today"
    sampled = _odd_ids(tok, reply)
    t = p1.then(sampled, reply, tok)
    assert isinstance(t, Transcript) and list(t.ids) == p1.ids + sampled

    second = first + [assistant(reply), user("Do you ship today?")]
    p2 = _build(tok, second, after=t)
    fresh = _build(tok, second)
    assert p2.reused == len(p1.ids) + len(sampled)
    assert p2.ids[:p2.reused] == p1.ids + sampled  # the sampled ids, not a re-tokenization
    assert p2.ids != fresh.ids  # re-tokenizing would have changed them...
    assert tok.decode(p2.ids) == tok.decode(fresh.ids) == fresh.text  # ...yet both say the same text
    assert p2.text == fresh.text

    # and the turn after that continues p2's transcript in the same way
    t2 = p2.then(_encode(tok, "好的"), "好的", tok)
    third = second + [assistant("好的"), user("谢谢")]
    p3 = _build(tok, third, after=t2)
    assert p3.reused == len(t2.ids) and p3.ids[:len(p2.ids)] == p2.ids


def test_a_history_that_differs_keeps_the_ids_before_the_difference(tok):
    first = [user("几天发货？")]
    p1 = _build(tok, first)
    t = p1.then(_odd_ids(tok, "We ship today"), "We ship today", tok)
    header = len(_encode(tok, "<|im_start|>assistant\n"))
    for history in ([assistant("Cloud: 48小时内发货")],  # the cloud took this turn over
                    [assistant("We ship today.")]):  # the stored text was edited
        msgs = first + history + [user("谢谢")]
        p = _build(tok, msgs, after=t)
        # everything before the reply's header is kept; from there on it is tokenized afresh
        assert p.reused == len(p1.ids) - header and p.ids == _encode(tok, render_chat(tok, msgs))
        assert p.marks == Specials.of(tok).marks(p.text, p.ids) and len(p.marks) == 7  # 3 messages + the reply's header
    # a system message that appeared since: a fresh prompt
    msgs = [{"role": "system", "content": "Shop knowledge: ..."}] + first + [assistant("We ship today"), user("谢谢")]
    assert _build(tok, msgs, after=t).reused == 0


def test_a_reply_whose_ids_and_text_disagree_is_not_kept(tok):
    p = _build(tok, [user("hello")])
    ids = _encode(tok, " hello ")
    assert p.then(ids, "hello", tok) is None  # the stored text is stripped: its ids would not match
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert p.then(_encode(tok, "hi") + [im_end] + _encode(tok, "yo"), "hiyo", tok) is None
    assert p.then([], "", tok) is None


def test_an_overlong_conversation_trims_to_a_stable_start(tok):
    """Dropping the oldest turns down to trim_to leaves room, so the next turns keep the start."""
    line = "您好，这款毛巾是纯棉的，20x20厘米，干湿两用。"
    msgs = []
    for i in range(6):
        msgs += [user(f"问题{i} {line}"), assistant(line)]
    msgs.append(user("最后一个问题"))
    limit = len(_encode(tok, render_chat(tok, msgs))) - 5  # just over the limit
    p = _build(tok, msgs, max_input_len=limit, trim_to=limit * 3 // 4)
    assert len(p.ids) <= limit * 3 // 4 and p.first is not None and p.first[0] == "user"
    assert p.text == render_chat(tok, [m for m in msgs if (m["role"], m["content"]) == p.first][:1]
                                 + msgs[msgs.index({"role": p.first[0], "content": p.first[1]}) + 1:])
    # the next turn appends to the same start (the server's window may even have dropped more
    # history in front of it: the transcript is found where it begins)
    t = p.then(_encode(tok, "好的"), "好的", tok)
    nxt = msgs[2:] + [assistant("好的"), user("谢谢")]
    p2 = _build(tok, nxt, max_input_len=limit, trim_to=limit * 3 // 4)
    p2c = _build(tok, nxt, max_input_len=limit, trim_to=limit * 3 // 4, after=t)
    assert p2c.reused == len(t.ids) and p2c.ids[:len(p.ids)] == p.ids
    assert p2c.text == p.text + "好的" + p2.text[p2.text.index("<|im_end|>\n<|im_start|>user\n谢谢"):]
    # plain trimming (trim_to = the limit) drops one turn more per turn: a new start every time
    q1 = _build(tok, msgs, max_input_len=limit)
    assert len(q1.ids) > limit * 3 // 4


def test_a_single_overlong_message_keeps_its_latest_ids(tok):
    msgs = [user("您好，这款毛巾是纯棉的。" * 40)]
    p = _build(tok, msgs, max_input_len=32)
    assert len(p.ids) == 32 and p.text is None and p.then(_encode(tok, "好"), "好", tok) is None


def test_a_later_system_message_stays_in_place_where_the_template_allows(tok):
    msgs = [{"role": "system", "content": "Be brief."}, user("几天发货？"), assistant("默认发中通快递"),
            {"role": "system", "content": "Shop knowledge:\n- returns within 7 days"}, user("可以退货吗？")]
    late = _build(tok, msgs, late_system=True)
    assert late.text == render_chat(tok, msgs) and late.first == ("user", "几天发货？")
    merged = _build(tok, msgs)  # a template that wants one leading system message: joined into it
    assert merged.text == render_chat(tok, [{"role": "system", "content": "Be brief.\n\nShop knowledge:\n- returns within 7 days"}]
                                      + [m for m in msgs if m["role"] != "system"])


def test_knowledge_after_the_question_keeps_the_whole_history(tok):
    """Per-turn knowledge sits after the newest question (the server's layout): the next turn
    keeps every id before the old knowledge message (the reply after it is tokenized again)."""
    static = {"role": "system", "content": "You are the shop's assistant."}
    history = [user("几天发货？"), assistant("默认发中通快递"), user("Do you ship today?")]
    k1 = {"role": "system", "content": "Shop knowledge:\n- ZTO Express, 2 days"}
    p1 = _build(tok, [static] + history + [k1], max_input_len=512, late_system=True)
    t = p1.then(_odd_ids(tok, "We ship today"), "We ship today", tok)
    k2 = {"role": "system", "content": "Shop knowledge:\n- returns within 7 days"}
    msgs2 = [static] + history + [assistant("We ship today"), user("Can I return it?"), k2]
    p2 = _build(tok, msgs2, max_input_len=512, late_system=True, after=t)
    before_k1 = len(_encode(tok, render_chat(tok, [static] + history, add_generation_prompt=False)))
    assert p2.reused == before_k1 and p2.ids == _encode(tok, render_chat(tok, msgs2))

def test_end_model_knows_whether_its_template_takes_a_late_system_message(tiny_base_dir):
    from endcloud.runtime.model import EndModel

    m = EndModel.load(tiny_base_dir)
    assert m.late_system()  # ChatML renders any role anywhere
    m2 = EndModel.load(tiny_base_dir)
    m2.tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
                                  "{{ raise_exception('system only first') }}{% endif %}{{ m['content'] }}{% endfor %}")
    assert not m2.late_system()
    msgs = [{"role": "system", "content": "S"}, user("q"), {"role": "system", "content": "K"}, user("q2")]
    assert m2.prompt(msgs).text == "S\n\nKqq2"  # joined into the leading system message
