"""Shop-like chats for the end-model benches: short customer turns, a few long replies.

A stand-in with the shape of real customer service (most turns a few dozen tokens, a
long tail of policy explanations), so the benches do not depend on another room's
generator. Deterministic for a seed.
"""

from __future__ import annotations

import random

PRODUCTS_ZH = [("纯棉毛巾", 19.9), ("保温杯", 59.0), ("蓝牙耳机", 129.0), ("羽绒服", 399.0), ("运动鞋", 259.0),
               ("台灯", 89.0), ("双肩包", 149.0), ("数据线", 15.9), ("面膜", 79.0), ("茶叶礼盒", 168.0)]
PRODUCTS_EN = [("cotton towel", 4.5), ("steel bottle", 12.0), ("wireless earbuds", 29.0), ("down jacket", 89.0),
               ("running shoes", 59.0), ("desk lamp", 19.0), ("backpack", 35.0), ("usb cable", 3.5)]
COURIERS_ZH = ["中通", "顺丰", "圆通", "韵达"]

LONG_ZH = ("亲，关于退换货是这样的：签收后七天内，商品不影响二次销售就可以申请无理由退货；质量问题我们承担来回运费，"
           "非质量问题需要您承担寄回的运费。申请后请在三天内寄回，并在订单里填写快递单号，仓库收到验货后一到三个工作日"
           "给您退款，原路返回。赠品需要一起寄回哦，优惠券如果还在有效期内会退回您的账户。还有其他问题随时找我~")
LONG_EN = ("Sure, here is how returns work: within 7 days of delivery you can return any unused item. If the item is "
           "faulty we pay shipping both ways; otherwise the return postage is yours. Please send it back within 3 days "
           "of opening the request and add the tracking number to the order. Once the warehouse checks it, the refund "
           "goes back to your original payment method in 1-3 working days. Free gifts must be returned too.")


def _zh_exchange(rng: random.Random) -> list[tuple[str, str]]:
    name, price = rng.choice(PRODUCTS_ZH)
    c = rng.choice(COURIERS_ZH)
    options = [
        (f"这个{name}多少钱？", f"亲，{name}现在售价{price}元，今天下单还可以用满99减10的券哦。"),
        ("什么时候发货？", f"亲，下午4点前下单当天发货，默认发{c}快递，一般2到3天送达。"),
        (f"{name}有现货吗", f"有的亲，{name}目前有现货，拍下就能发。"),
        ("能便宜点吗", "亲，价格已经是活动价了，可以领取店铺优惠券再减5元哦。"),
        ("可以开发票吗", "可以的亲，下单时填写发票抬头和税号，我们随货寄出电子发票。"),
        ("怎么退货", LONG_ZH),
        ("在吗", "在的亲，请问有什么可以帮您？"),
        (f"{name}是什么材质的", f"亲，这款{name}用的是优质材料，质量有保证，放心购买。"),
        ("我的快递到哪了", f"亲，帮您查了一下，包裹已经由{c}揽收，正在运输中，请耐心等待。"),
    ]
    return rng.sample(options, rng.randint(1, 3))


def _en_exchange(rng: random.Random) -> list[tuple[str, str]]:
    name, price = rng.choice(PRODUCTS_EN)
    options = [
        (f"How much is the {name}?", f"The {name} is ${price:.2f} today, and orders over $30 ship free."),
        ("When will it ship?", "Orders placed before 4 pm ship the same day; delivery takes 2-3 days."),
        (f"Is the {name} in stock?", f"Yes, the {name} is in stock and ships right away."),
        ("Any discount?", "You can use the coupon SAVE10 for 10% off your first order."),
        ("How do I return it?", LONG_EN),
        ("Hi", "Hello! How can I help you today?"),
        ("Where is my parcel?", "Your parcel has left our warehouse and is on its way; tracking updates within a day."),
    ]
    return rng.sample(options, rng.randint(1, 3))


def shop_chats(n: int = 600, *, seed: int = 0, en_share: float = 0.3) -> list[list[dict[str, str]]]:
    """`n` dialogues as OpenAI messages lists (user/assistant alternating)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ex = _en_exchange(rng) if rng.random() < en_share else _zh_exchange(rng)
        msgs: list[dict[str, str]] = []
        for q, a in ex:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        out.append(msgs)
    return out


def shop_examples(n: int = 600, *, seed: int = 0):
    """One `Example` per assistant turn of `shop_chats` (context + query -> reply)."""
    from endcloud.end.data import Example

    exs = []
    for i, chat in enumerate(shop_chats(n, seed=seed)):
        for j in range(1, len(chat), 2):
            exs.append(Example(chat[:j], chat[j]["content"], id=f"{i}-{j}"))
    return exs
