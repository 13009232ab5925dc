"""Table II prompt: role text, N examples chosen by relevance with diversity, budget, context."""

from __future__ import annotations

import json

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


# ---- the Table II prompt in every live cloud call ------------------------------------------
def _workspace(root, pack_dir, labels=(), pairs=()):
    """A workspace with a shop (copied pack), labels and pairs files."""
    import shutil

    from endcloud.config import Workspace
    from endcloud.records import Label, Pair

    ws = Workspace.resolve(root)
    shutil.copytree(pack_dir, ws.shop)
    ws.labels_dir.mkdir(parents=True, exist_ok=True)
    ws.labels.write_text("".join(json.dumps(Label(id=f"l{i}", query=q, context=[], label=a, teacher="t").to_json(),
                                            ensure_ascii=False) + "\n" for i, (q, a) in enumerate(labels)), encoding="utf-8")
    if pairs:
        ws.corpus.mkdir(parents=True, exist_ok=True)
        ws.pairs.write_text("".join(json.dumps(Pair(id=f"p{i}", source="t", session="s", lang="zh", context=[], query=q,
                                                    response=a).to_json(), ensure_ascii=False) + "\n"
                                    for i, (q, a) in enumerate(pairs)), encoding="utf-8")
    return ws


def test_shop_examples_are_the_shops_labels_pairs_and_faq_and_follow_the_files(tmp_path, zh_pack_dir):
    import time

    from endcloud.cloud import ShopExamples

    ws = _workspace(tmp_path / "w", zh_pack_dir, labels=[("能发顺丰吗", "可以，补8元")], pairs=[("在吗", "亲，在的")])
    src = ShopExamples(workspace=ws, recheck_s=0.0)
    queries = {e.query for e in src.current().examples}
    assert queries == {"能发顺丰吗", "在吗", "默认发什么快递？", "可以开发票吗？"}  # labels, pairs, the pack's FAQ
    with ws.labels.open("a", encoding="utf-8") as f:  # the online loop or onboarding adds a label
        f.write(json.dumps({"id": "l9", "query": "退款多久到账", "context": [], "label": "3天内", "teacher": "t"},
                           ensure_ascii=False) + "\n")
    deadline = time.monotonic() + 10
    while "退款多久到账" not in {e.query for e in src.current().examples}:
        assert time.monotonic() < deadline, "the new label never reached the bank"
        time.sleep(0.05)


def test_default_teacher_puts_every_real_cloud_call_in_the_table_ii_prompt(monkeypatch, cloud, tmp_path, zh_pack_dir):
    from endcloud.cloud import LIVE_BUDGET_TOKENS, PrivacyGate, ShopExamples, default_teacher
    from endcloud.cloud.prompt import LIVE_SHOTS

    monkeypatch.setenv("ENDCLOUD_CLOUD_BASE_URL", cloud.base_url)
    monkeypatch.setenv("ENDCLOUD_CLOUD_MODEL", "gemini-1.5-pro")
    monkeypatch.setenv("ENDCLOUD_CLOUD_API_KEY", "sk-test")
    ws = _workspace(tmp_path / "w", zh_pack_dir, labels=[("能发顺丰吗", "可以，补8元")])
    t = default_teacher(workspace=ws)
    assert isinstance(t, PromptedTeacher) and isinstance(t._source, ShopExamples) and t.remote
    assert t.budget_tokens == LIVE_BUDGET_TOKENS and t.shots == LIVE_SHOTS and isinstance(t.inner, PrivacyGate)
    t.reply(conv("可以发顺丰吗"))
    system = cloud.requests[-1]["messages"][0]["content"]
    assert system.startswith(ROLE_TEXT["zh"]) and "顾客：能发顺丰吗\n客服：可以，补8元" in system
    bare = default_teacher(workspace=ws, examples=False)  # the one way to send a bare conversation
    assert isinstance(bare, PrivacyGate)


def test_a_takeover_carries_the_role_text_the_shops_examples_and_its_knowledge(monkeypatch, cloud, tmp_path, zh_pack_dir,
                                                                              tiny_base_dir):
    """Served end to end: a real server (the workspace's base, shop and labels) forced to the
    cloud, and a recording OpenAI-compatible double that shows what was sent."""
    from openai import OpenAI

    from endcloud.compose import build_app_from_workspace
    from endcloud.loopback import LoopbackServer

    monkeypatch.setenv("ENDCLOUD_CLOUD_BASE_URL", cloud.base_url)
    monkeypatch.setenv("ENDCLOUD_CLOUD_MODEL", "gemini-1.5-pro")
    monkeypatch.setenv("ENDCLOUD_CLOUD_API_KEY", "sk-test")
    ws = _workspace(tmp_path / "w", zh_pack_dir, labels=[("可以指定顺丰快递吗", "可以的亲，补8元运费差价即可")])
    ws.base.symlink_to(tiny_base_dir, target_is_directory=True)
    app = build_app_from_workspace(ws, watch_s=0, review=False, max_new_tokens=4, worker="thread")
    with LoopbackServer(app) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        resp = client.chat.completions.create(model="cloud", messages=[{"role": "user", "content": "能发顺丰吗？"}])
    assert resp.model_extra["endcloud"]["answered_by"] == "cloud"
    sent = cloud.requests[-1]["messages"]
    system = sent[0]["content"]
    assert sent[0]["role"] == "system" and system.startswith(ROLE_TEXT["zh"])
    assert "顾客：可以指定顺丰快递吗\n客服：可以的亲，补8元运费差价即可" in system  # the shop's label as an example
    assert "顾客：默认发什么快递？" in system  # and its FAQ
    assert "Shop knowledge:" in system and "顺丰" in system.split("Shop knowledge:")[1]  # what the turn retrieved
    assert sent[-1] == {"role": "user", "content": "能发顺丰吗？"} and [m["role"] for m in sent] == ["system", "user"]


def test_the_reference_teacher_still_reads_the_customer_block_inside_the_prompt(zh_pack_dir):
    from endcloud.cloud import ReferenceTeacher
    from endcloud.kb import ShopPack
    from endcloud.kb.prompt import customer_text

    ref = ReferenceTeacher(pack=ShopPack.load(zh_pack_dir))
    block = customer_text([{"order_id": "240101123456789", "status": "运输中", "courier": "中通"}])
    msgs = [{"role": "system", "content": block}, *conv("我的订单到哪了？")]
    prompted = PromptedTeacher(ref, examples=bank(), shots=3).prompt(msgs)
    assert "\nCustomer:\n" in prompted[0]["content"]  # the block keeps its own lines after the examples
    assert ref.reply(prompted).text == ref.reply(msgs).text
    assert "240101123456789" in ref.reply(msgs).text or "运输中" in ref.reply(msgs).text
