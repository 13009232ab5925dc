"""Fixtures of the tests that make end models (training fixtures carry a `train_` prefix)."""

from __future__ import annotations

import pytest


# ---- training-side fixtures (prefixed `train_`; owned by the training engineer) ----------
@pytest.fixture(scope="session")
def train_examples():
    """Twelve short shop exchanges (zh + en) as training Examples."""
    from endcloud.end.data import Example

    qa = [
        ("在吗", "亲，在的，请问有什么可以帮您？"),
        ("什么时候发货", "默认发中通快递，下午4点前下单当天发货。"),
        ("有优惠吗", "亲，可以领取满99减10的优惠券哦。"),
        ("怎么退货", "退货请在签收后7天内申请，运费由我们承担。"),
        ("帮我备注一下", "好的，已经帮您备注了，请放心。"),
        ("毛巾是什么材质", "您好，这款毛巾是纯棉的，20x20厘米，干湿两用。"),
        ("Hi", "Hello, how can I help you today?"),
        ("When do you ship?", "We ship with ZTO Express by default; orders before 4 pm ship today."),
        ("Any discount?", "Yes, you can get a 10% discount with the coupon SAVE10."),
        ("Can I return it?", "Returns are accepted within 7 days of delivery."),
        ("What is the towel made of?", "This towel is pure cotton, 20x20 cm, and can be used wet or dry."),
        ("Where is my parcel?", "Sorry for the wait, your parcel is on its way."),
    ]
    return [Example([{"role": "user", "content": q}], a, id=f"ex{i}") for i, (q, a) in enumerate(qa)]


@pytest.fixture()
def train_threads():
    """Keep torch to one thread in training tests (the machine is shared)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def train_base_dir(tmp_path_factory, train_examples):
    """A tiny base *pretrained* briefly with `endcloud.end.pretrain` on shop chats (hidden 64, 2 layers).

    Adapters learn far faster on a base whose hidden states mean something than on a
    random one, as a real shop's base would; this also runs the whole pretrain path."""
    import torch

    from endcloud.end.pretrain import pretrain

    # every query with every reply: held-out dialogues are new combinations of known parts
    chats = [q.messages + [{"role": "assistant", "content": r.response}] for q in train_examples for r in train_examples]
    out = tmp_path_factory.mktemp("train-base")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(chats, out, progress=False, vocab_size=600, hidden=64, layers=2, heads=4, kv_heads=2,
                 intermediate=128, seq_len=64, batch_size=8, steps=60, lr=3e-3, warmup=5, eval_fraction=0.2)
    finally:
        torch.set_num_threads(old)
    return out
