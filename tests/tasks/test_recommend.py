"""Recommendations never name a product outside the catalog or out of stock, and keep to a budget."""

from __future__ import annotations

import re

import pytest

from endcloud.kb import ShopPack
from endcloud.tasks.generate import attributes, category_of
from endcloud.tasks.recommend import Recommender


def _named(answer: str, lang: str) -> list[str]:
    """The product names the answer's fixed format holds ("A（9元，有货）、B（…）" / "the A (… ) or the B (…)")."""
    if lang == "zh":
        return re.findall(r"(?:：|、)([^：、（]+)（", answer)
    return re.findall(r"the (.+?) \(", answer)


def _requests(pack: ShopPack) -> list[str]:
    out = []
    for p in pack.products:
        kind = category_of(p, pack.language)
        values = [v.split("/")[0] for _, v in attributes(p)][:3]
        if pack.language == "zh":
            out += [f"推荐一款{kind}", f"有没有{int(p.price) + 1}元以内的{kind}推荐"] + [f"推荐一款{v}的{kind}" for v in values]
        else:
            out += [f"Can you recommend a {kind}?", f"what would you recommend for {kind} under {int(p.price) + 1}?"]
            out += [f"suggest a {v} {kind}" for v in values]
    return out


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_recommendation_is_a_catalog_product_in_stock(lang, zh_shop, en_shop):
    pack = ShopPack.load(zh_shop if lang == "zh" else en_shop)
    rec = Recommender(pack)
    by_name = {p.name: p for p in pack.products}
    answered = 0
    for q in _requests(pack):
        assert rec.is_request(q)
        need = rec.need(q)
        answer = rec.answer(q)
        names = _named(answer, lang)
        for n in names:
            assert n in by_name, (q, answer)
            assert by_name[n].in_stock, (q, answer)
            if need.budget is not None:
                assert by_name[n].price <= need.budget, (q, answer)
        assert [p.name for p in rec.rank(q, 2)] == names
        assert all(p.in_stock for p in rec.rank(q, 10))
        assert all(s.source == "catalog" and by_name[s.text.split("（")[0].split(" (SKU")[0]].in_stock
                   for s in rec.snippets(q, 3))
        answered += bool(names)
    assert answered >= len(_requests(pack)) // 2  # most requests find something


def test_an_out_of_stock_match_is_never_recommended(tmp_path):
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "shop.yaml").write_text("name: t\nlanguage: zh\n", encoding="utf-8")
    (shop / "catalog.csv").write_text("sku,name,price,stock,category\n1,纯棉浴巾,59,0,毛巾\n2,纯棉方巾,9,10,毛巾\n3,羊毛围巾,199,3,配饰\n",
                                      encoding="utf-8")
    rec = Recommender(ShopPack.load(shop))
    assert rec.answer("推荐一款纯棉的毛巾") == "亲，为您推荐：纯棉方巾（9元，有货）。"  # the towel in stock, not the one sold out
    assert rec.answer("推荐一款纯棉浴巾") == "抱歉亲，店里暂时没有符合您需求的商品有货哦。"  # the only bath towel is sold out
    assert rec.answer("推荐一款30元以内的围巾") == "抱歉亲，店里暂时没有符合您需求的商品有货哦。"  # over the budget
    assert rec.review("亲，推荐纯棉浴巾，很好用", "推荐一款纯棉的毛巾") == ["out of stock: 纯棉浴巾"]
    assert rec.review("亲，在的", "推荐一款纯棉的毛巾") == ["names no product of the catalog"]
    assert rec.review("亲，推荐纯棉方巾", "推荐一款纯棉的毛巾") == []


def test_relevance_weights():
    from endcloud.kb.pack import Product, ShopPack as Pack
    from endcloud.tasks.recommend import EXACT, NONE, OVER_BUDGET, PARTIAL

    pack = Pack(name="t", language="en", currency="USD", faq=[], policies={}, products=[
        Product("1", "Wool Scarf", 30, 5, {"colour": "grey"}), Product("2", "Cotton Scarf", 10, 5, {"colour": "red"}),
        Product("3", "Wool Hat", 20, 5, {}), Product("4", "Grey Wool Scarf", 90, 5, {}), Product("5", "Wool Scarf XL", 25, 0, {})])
    rec = Recommender(pack)
    need = rec.need("can you recommend a wool scarf under 50?")
    assert need.terms == ("wool", "scarf") and need.budget == 50
    assert [rec.relevance(need, p) for p in pack.products] == [EXACT, PARTIAL, NONE, OVER_BUDGET, NONE]
    assert [p.name for p in rec.rank(need, 5)] == ["Wool Scarf"]  # exact matches first and alone
