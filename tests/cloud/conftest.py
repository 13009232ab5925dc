"""Fixtures of the cloud room: small hand-written shop packs (zh, en) and the server double."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ZH_POLICIES = """# 店铺政策

## 发货与快递
<!-- key: shipping -->
默认发中通快递，满99元包邮。

可以指定快递：需要发顺丰的亲请联系客服，补8元运费差价即可。

每天16:00前付款的订单当天发货，16:00以后付款的次日发货。

修改地址：订单在发货前可以修改收货地址，已发货的订单无法修改。

## 配送时效
<!-- key: delivery -->
发货后一般3天送达，偏远地区（新疆、西藏）7天左右送达。

## 退货
<!-- key: returns -->
支持7天无理由退货：签收后7天内、商品未使用即可申请。

## 退款
<!-- key: refunds -->
仓库收到退货验收后3天内退款，原路退回。

## 优惠券与折扣
<!-- key: coupons -->
店铺优惠券：满199减20，在商品页领取，下单时自动抵扣。

## 发票
<!-- key: invoices -->
可以开发票，开具的是电子发票，下单后2个工作日内发送到您的邮箱。

## 售后服务
<!-- key: after-sales -->
商品破损或有质量问题，请在签收后48小时内拍照联系客服，给您免费补发或退款。
"""

EN_POLICIES = """## Shipping and couriers
<!-- key: shipping -->
We ship with ZTO Express by default. Shipping is free on orders over $49.

You can choose the courier: for SF Express pay a $6 surcharge; ask customer service.

Orders paid before 4 pm ship the same day; orders paid after 4 pm ship the next day.

## Delivery times
<!-- key: delivery -->
Delivery usually takes 5 days after shipping; remote areas (Alaska, Hawaii) take about 9 days.

## Returns
<!-- key: returns -->
Returns are accepted within 30 days of delivery for unused items in original condition.

## Refunds
<!-- key: refunds -->
Refunds are issued within 5 days after the warehouse receives the return.

## Coupons and discounts
<!-- key: coupons -->
Store coupon: $10 off orders over $99; claim it on the product page.

## Invoices
<!-- key: invoices -->
We issue an e-invoice for every order, emailed within 3 business days.

## After-sales service
<!-- key: after-sales -->
If an item arrives damaged, send a photo within 72 hours of delivery and we will replace or refund it.
"""


def _write_pack(root: Path, lang: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if lang == "zh":
        (root / "shop.yaml").write_text("name: 棉语家居\nlanguage: zh\ncurrency: CNY\n", encoding="utf-8")
        (root / "catalog.csv").write_text(
            "sku,name,price,stock,material,size,colour\n"
            "520401029636,纯棉方巾,19.9,120,纯棉,20x20cm,白色/灰色\n"
            "SKU-BATH-02,珊瑚绒浴巾,89,0,珊瑚绒,70x140cm,蓝色\n", encoding="utf-8")
        faq = [("默认发什么快递？", "亲，默认发中通快递哦。"), ("可以开发票吗？", "可以的，开电子发票，2个工作日内发到邮箱。")]
        (root / "policies.md").write_text(ZH_POLICIES, encoding="utf-8")
        (root / "orders.csv").write_text(
            "order_id,sku,status,courier,tracking_no,ship_date,eta_days\n"
            "240101123456789,520401029636,运输中,中通,75312345678,2024-01-02,3\n", encoding="utf-8")
    else:
        (root / "shop.yaml").write_text("name: Cotton Cove\nlanguage: en\ncurrency: USD\n", encoding="utf-8")
        (root / "catalog.csv").write_text(
            "sku,name,price,stock,material,size,colour\n"
            "CC-1001,Face Towel,12.99,40,pure cotton,20x20cm,white\n"
            "CC-2002,Bath Towel,39,0,coral fleece,70x140cm,blue\n", encoding="utf-8")
        faq = [("Which courier do you use?", "We ship with ZTO Express by default.")]
        (root / "policies.md").write_text(EN_POLICIES, encoding="utf-8")
        (root / "orders.csv").write_text(
            "order_id,sku,status,courier,tracking_no,ship_date,eta_days\n"
            "114-3941689-8772232,CC-1001,in transit,ZTO Express,7531234,2024-01-02,5\n", encoding="utf-8")
    (root / "faq.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n" for q, a in faq),
                                    encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def zh_pack_dir(tmp_path_factory) -> Path:
    return _write_pack(tmp_path_factory.mktemp("pack-zh"), "zh")


@pytest.fixture(scope="session")
def en_pack_dir(tmp_path_factory) -> Path:
    return _write_pack(tmp_path_factory.mktemp("pack-en"), "en")


@pytest.fixture
def cloud():
    """A fault-free server double (real HTTP on 127.0.0.1)."""
    from endcloud.testing import FaultyCloud

    with FaultyCloud() as c:
        yield c
