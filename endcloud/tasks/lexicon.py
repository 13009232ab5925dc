"""The words of the shop tasks, in Chinese and English: intent and sentiment labels, the
customer phrasings the task generators fill with a pack's own products, and a zh↔en glossary
of product words for the translation task.

Templates are `str.format` strings over {name} (a product name), {attr} (a column's word),
{value} (an attribute value), {need} (what a customer is after) and {budget}. The LAST
template of every list is held out: only held-out task items use it, so the evaluation asks
in words training never showed (the way `endcloud.corpus.shopworld` holds out phrasings).
"""

from __future__ import annotations

# ---- intents ---------------------------------------------------------------------------
# One label set for the classifier in serving, the intent task and the dashboard.
INTENTS = ("greeting", "product_info", "price", "stock", "recommend", "compare", "shipping", "order_status",
           "address_change", "coupon", "return_refund", "complaint", "invoice", "after_sales", "other")

INTENT_NAMES = {
    "zh": {"greeting": "打招呼", "product_info": "商品属性咨询", "price": "价格咨询", "stock": "库存咨询", "recommend": "求推荐",
           "compare": "商品对比", "shipping": "发货物流", "order_status": "查订单", "address_change": "改地址",
           "coupon": "优惠折扣", "return_refund": "退货退款", "complaint": "投诉", "invoice": "发票",
           "after_sales": "售后维修", "other": "其他"},
    "en": {"greeting": "greeting", "product_info": "product details", "price": "price question", "stock": "stock question",
           "recommend": "asking for a recommendation", "compare": "comparing products", "shipping": "shipping and delivery",
           "order_status": "order status", "address_change": "changing the address", "coupon": "discounts and coupons",
           "return_refund": "returns and refunds", "complaint": "complaint", "invoice": "invoice",
           "after_sales": "after-sales repair", "other": "other"},
}

# The shopworld chats' intents (`endcloud.corpus.shopworld.INTENTS`) in this label set; a log
# whose intent is not here (a bare number) is not used for the intent task.
FROM_SHOPWORLD = {"greeting": "greeting", "product_attr": "product_info", "stock": "stock", "price": "price",
                  "courier": "shipping", "ship_today": "shipping", "delivery_time": "shipping",
                  "order_status": "order_status", "address_change": "address_change", "coupon": "coupon",
                  "return_refund": "return_refund", "complaint": "complaint", "invoice": "invoice",
                  "after_sales": "after_sales", "chitchat": "other"}

INTENT_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "zh": {
        "greeting": ("你好", "在吗？", "亲，在不在", "有人吗", "哈喽，客服在吗"),
        "product_info": ("{name}是什么{attr}？", "{name}的{attr}是啥", "问下{name}{attr}多少", "{name}{attr}怎么样？",
                         "想了解一下{name}的{attr}"),
        "price": ("{name}多少钱？", "{name}现在什么价", "{name}价格是多少", "{name}卖多少", "请问{name}要多少钱呀"),
        "stock": ("{name}有货吗？", "{name}还有库存吗", "{name}什么时候补货", "{name}现在能拍吗", "{name}是不是卖完了"),
        "recommend": ("推荐一款{need}", "有没有{need}推荐一下", "想买{need}，哪款好？", "帮我挑一款{need}",
                      "{need}选哪个比较好，求推荐"),
        "compare": ("{name}和{other}有什么区别？", "{name}跟{other}哪个好", "{name}和{other}比怎么样", "{name}还是{other}更划算",
                    "{name}与{other}对比一下"),
        "shipping": ("什么时候发货？", "默认发什么快递", "今天拍明天能到吗", "可以发顺丰吗", "几天能送到呀"),
        "order_status": ("我的订单到哪了", "帮我查下订单", "订单显示已发货了吗", "物流怎么一直不更新", "包裹现在在哪里"),
        "address_change": ("地址写错了能改吗", "帮我改一下收货地址", "收件地址想换一个", "能改成寄到公司吗", "下单后还能修改地址吗"),
        "coupon": ("有优惠券吗", "能便宜点吗", "现在有什么活动", "满减怎么算", "新人有折扣吗"),
        "return_refund": ("不喜欢可以退吗", "怎么申请退货", "退款多久到账", "七天无理由退换吗", "想退掉{name}"),
        "complaint": ("等了好几天还没到，太慢了", "东西质量太差了，我要投诉", "客服一直不回消息，什么态度", "发错货了，很生气",
                      "这么久都不处理，太让人失望了"),
        "invoice": ("可以开发票吗", "发票怎么开", "能开专票吗", "发票什么时候寄", "电子发票在哪里下载"),
        "after_sales": ("{name}坏了怎么保修", "用了两天就出问题了，能修吗", "{name}有质保吗", "售后怎么联系", "{name}出故障了怎么办"),
        "other": ("今天天气真好", "你是机器人吗", "谢谢啦", "哈哈好的", "你们老板是谁"),
    },
    "en": {
        "greeting": ("Hello", "Hi there", "Anyone there?", "Hey, are you online?", "Good morning, is someone around?"),
        "product_info": ("What {attr} is the {name}?", "What's the {attr} of the {name}?", "Tell me the {attr} of {name}",
                         "I'd like to know the {name}'s {attr}", "Can you check the {attr} on the {name}?"),
        "price": ("How much is the {name}?", "What does the {name} cost?", "{name} price?", "Price of the {name} please",
                  "How much would the {name} be?"),
        "stock": ("Is the {name} in stock?", "Do you still have the {name}?", "When will the {name} be restocked?",
                  "Can I still order the {name}?", "Is the {name} sold out?"),
        "recommend": ("Can you recommend a {need}?", "What would you recommend for {need}?", "Which {need} should I buy?",
                      "Suggest a good {need} please", "I'm looking for a {need}, any suggestions?"),
        "compare": ("What's the difference between the {name} and the {other}?", "{name} or {other}, which is better?",
                    "Compare the {name} with the {other}", "Is the {name} better than the {other}?",
                    "How does the {name} stack up against the {other}?"),
        "shipping": ("When do you ship?", "Which courier do you use?", "How long does delivery take?",
                     "Can I get express shipping?", "If I order today when will it arrive?"),
        "order_status": ("Where is my order?", "Can you track my parcel?", "Has my order shipped yet?",
                         "My tracking hasn't updated", "What's the status of my package?"),
        "address_change": ("I typed the wrong address, can I change it?", "Please update my delivery address",
                           "Can you ship it to my office instead?", "Can I edit the shipping address?",
                           "I need to change where the order goes"),
        "coupon": ("Do you have any coupons?", "Is there a discount?", "Any promotions right now?",
                   "Can I get a better price?", "Is there a new customer deal?"),
        "return_refund": ("Can I return it?", "How do I get a refund?", "When will my refund arrive?",
                          "What's your return policy?", "I want to send the {name} back"),
        "complaint": ("This is ridiculous, still no delivery", "Terrible quality, I want to complain",
                      "Nobody answers my messages, unacceptable", "You sent me the wrong item, I'm angry",
                      "I'm very disappointed with how this was handled"),
        "invoice": ("Can I get an invoice?", "How do I get a receipt?", "I need a VAT invoice", "Where is my invoice?",
                    "Can you email me the invoice?"),
        "after_sales": ("My {name} broke, is it under warranty?", "It stopped working after two days, can you fix it?",
                        "Does the {name} have a warranty?", "How do I contact after-sales?", "The {name} is faulty, what now?"),
        "other": ("Nice weather today", "Are you a bot?", "Thanks!", "lol ok", "Who owns this shop?"),
    },
}

# ---- sentiment ---------------------------------------------------------------------------
SENTIMENTS = ("negative", "neutral", "positive")
SENTIMENT_NAMES = {"zh": {"negative": "负面", "neutral": "中性", "positive": "正面"},
                   "en": {"negative": "negative", "neutral": "neutral", "positive": "positive"}}
REVIEW_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "zh": {
        "positive": ("{name}很好用，{value}也很喜欢，五星好评", "质量不错，{name}物超所值，会回购", "{name}收到了，做工精致，很满意",
                     "发货快，{name}和描述一致，好评", "{name}超出预期，{value}很好看，推荐购买"),
        "neutral": ("{name}收到了，还没用", "{name}一般般吧，{value}和图片差不多", "{name}中规中矩，价格还行", "东西到了，{name}先放着",
                    "{name}跟描述差不多，没什么特别"),
        "negative": ("{name}质量太差了，用一次就坏了", "{name}和描述不符，{value}色差很大，失望", "{name}有异味，非常不满意",
                     "{name}做工粗糙，不推荐", "{name}收到就是坏的，差评"),
    },
    "en": {
        "positive": ("Love the {name}, the {value} is great, five stars", "Great quality, the {name} is worth every penny",
                     "The {name} arrived quickly and works perfectly", "Really happy with the {name}, will buy again",
                     "The {name} exceeded my expectations, highly recommend"),
        "neutral": ("The {name} arrived, haven't tried it yet", "The {name} is okay, the {value} is as pictured",
                    "It's an average {name} for the price", "Got the {name}, nothing special",
                    "The {name} is as described, no more no less"),
        "negative": ("The {name} broke after one use, awful quality", "The {name} looks nothing like the photos, disappointed",
                     "The {name} smells bad, very unhappy", "Cheap and flimsy {name}, would not recommend",
                     "The {name} arrived damaged, terrible"),
    },
}

# ---- recommendation ----------------------------------------------------------------------
# What a customer asking for a recommendation says; `Recommender.is_request` reads these.
RECOMMEND_CUES = {
    "zh": ("推荐", "哪款好", "哪个好", "选哪", "挑一", "有什么好的", "适合", "求推荐", "帮我挑", "买什么"),
    "en": ("recommend", "suggest", "suggestion", "which should i", "what should i buy", "looking for", "which one is best",
           "what's good for", "any good", "best option"),
}
BUDGET_WORDS = {"zh": ("预算{budget}元以内", "{budget}元以下", "不超过{budget}元"),
                "en": ("under {budget}", "below {budget}", "for less than {budget}")}

# ---- translation glossary ----------------------------------------------------------------
# zh ↔ en product words beyond the synthetic shop's own lexicon (which `glossary()` adds).
EXTRA_GLOSSARY = (
    ("有货", "in stock"), ("缺货", "out of stock"), ("包邮", "free shipping"), ("新款", "new"), ("套装", "set"),
    ("红色", "red"), ("黄色", "yellow"), ("绿色", "green"), ("紫色", "purple"), ("棕色", "brown"), ("藏青", "navy"),
)


def glossary() -> list[tuple[str, str]]:
    """(zh, en) product words: the synthetic shop's families, materials, features, adjectives
    and colours (the words its catalog names are made of), then `EXTRA_GLOSSARY`."""
    from endcloud.corpus.shopworld.lexicon import ADJECTIVES, COLOURS, FAMILIES

    pairs: list[tuple[str, str]] = []
    for fam in FAMILIES:
        pairs.append((fam[0], fam[1]))
        pairs.append((fam[2], fam[3]))
        pairs.extend(fam[5])
        pairs.extend(fam[6])
    pairs.extend((zh, en) for zh, en in ADJECTIVES if zh)
    pairs.extend(COLOURS)
    pairs.extend(EXTRA_GLOSSARY)
    seen: set[str] = set()
    out = []
    for zh, en in pairs:
        if zh not in seen:
            seen.add(zh)
            out.append((zh, en))
    return out


__all__ = ["BUDGET_WORDS", "EXTRA_GLOSSARY", "FROM_SHOPWORLD", "INTENTS", "INTENT_NAMES", "INTENT_TEMPLATES",
           "RECOMMEND_CUES", "REVIEW_TEMPLATES", "SENTIMENTS", "SENTIMENT_NAMES", "glossary"]
