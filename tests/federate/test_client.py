"""One shop's round, in process (no network): it trains on its own grounded examples with the
project's trainer, sends only the federated tensors, keeps its personal part, and clips its own
update when the server's DP asks."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install --no-deps -r requirements-federate.txt")

from endcloud.federate import _flower as fl
from endcloud.federate.weights import norm, read_tensors, subtract

pytestmark = pytest.mark.usefixtures("few_threads")


@pytest.fixture
def client(fed_shops, tiny_base_dir, tmp_path):
    from endcloud.federate.client import ShopClient
    from endcloud.federate.shops import load_shop

    shop = load_shop(fed_shops[2], base_dir=tiny_base_dir, heldout_size=4)
    return ShopClient(shop, base_dir=tiny_base_dir, work_dir=tmp_path / "work", node="shop-x", batch_size=4,
                      max_input_len=128, max_output_len=32)


def test_examples_are_grounded_in_the_shops_own_knowledge(client):
    from endcloud.kb.prompt import HEADER

    grounded = [e for e in client.shop.train if any(m["content"].startswith(HEADER) for m in e.messages)]
    assert len(grounded) > len(client.shop.train) / 2
    catalog = (client.shop.workspace / "shop" / "catalog.csv").read_text(encoding="utf-8")
    skus = [line.split(",")[0] for line in catalog.splitlines()[1:]]
    snippets = "\n".join(m["content"] for e in grounded for m in e.messages if m["content"].startswith(HEADER))
    assert any(s in snippets for s in skus)  # the snippets are this shop's catalog rows


@pytest.mark.parametrize("share", ["all", "lora_A"])
def test_a_round_trains_sends_the_shared_tensors_and_keeps_the_personal_part(client, share):
    config = {"round": 1, "steps": 3, "lr": 0.01, "share": share, "lora_r": 2, "seed": 0}
    template = client.ensure_template(config)
    g = template.arrays(read_tensors(client.template_dir))
    out, n, metrics = client.fit(g, config)
    assert n == len(client.shop.train) and metrics["node"] == "shop-x" and metrics["steps"] == 3
    template.check(out)
    assert norm(subtract(out, g)) > 0  # it learned something
    local = read_tensors(client.local_dir)
    if share == "lora_A":
        assert all(".lora_A." in name for name in template.names)
        personal = [v for k, v in local.items() if ".lora_B." in k]
        assert personal and any(np.any(v != 0) for v in personal)  # trained B stays in the shop
    assert client.guard.records[-1]["kind"] == "fit" and client.guard.records[-1]["tensors"] == len(out)


def test_a_shop_clips_its_own_update_when_dp_asks(client):
    config = {"round": 1, "steps": 3, "lr": 0.05, "share": "all", "lora_r": 2, "seed": 0}
    template = client.ensure_template(config)
    g = template.arrays(read_tensors(client.template_dir))
    free, _, _ = client.fit(g, config)
    clipped, _, _ = client.fit(g, {**config, fl.KEY_CLIPPING_NORM: 1e-3})
    assert norm(subtract(free, g)) > 1e-2
    assert norm(subtract(clipped, g)) == pytest.approx(1e-3, rel=1e-3)
