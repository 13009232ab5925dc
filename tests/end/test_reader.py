"""The shop reader: its recipe gives the same model twice, the shipped one matches its checksum,
and it reads the knowledge in its prompt (a changed price is stated without retraining)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from endcloud.end.reader import GLUE_NAME, RECORD_NAME, WEIGHTS, reader_base, verify_reader
from endcloud.errors import ModelError
from endcloud.scoring.novelty import Glue
from endcloud.shopreader import ReaderRecipe, _lr_at, build_reader

pytestmark = pytest.mark.slow


def _tiny() -> ReaderRecipe:
    return ReaderRecipe.quick(shops_per_lang=2, eval_shops_per_lang=1, steps=3, vocab_size=700, hidden=32, layers=1,
                              heads=2, kv_heads=1, intermediate=64)


def test_the_recipe_gives_the_same_model_twice_and_a_checksum_that_catches_tampering(tmp_path):
    a = build_reader(_tiny(), tmp_path / "a", log=lambda m: None)
    b = build_reader(_tiny(), tmp_path / "b", log=lambda m: None)
    assert a["sha256"] == b["sha256"] and a["examples"] == b["examples"] > 0
    # the glue of its phrasing (serving's novelty check) is written beside it, the same twice too
    assert a["glue"] == b["glue"] and a["glue"]["file"] == GLUE_NAME
    glue = Glue.load(tmp_path / "a" / GLUE_NAME)
    assert glue.meta["fingerprint"] == _tiny().fingerprint() and glue.meta["examples"] == a["examples"]
    assert len(glue) > 0 and glue.accepts("亲")
    glue_file = tmp_path / "b" / GLUE_NAME
    glue_file.write_text(glue_file.read_text(encoding="utf-8").replace("亲", "您"), encoding="utf-8")
    with pytest.raises(ModelError, match="glue.json: sha256"):
        verify_reader(tmp_path / "b")
    assert a["recipe"]["steps"] == 3 and len(a["loss_curve"]) >= 1
    assert verify_reader(tmp_path / "a")["fingerprint"] == _tiny().fingerprint()
    weights = tmp_path / "a" / WEIGHTS
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="does not match"):
        verify_reader(tmp_path / "a")


def test_the_schedule_is_in_steps_warmup_stable_decay():
    r = ReaderRecipe(steps=1000, warmup=100, decay=0.25, lr=1e-3, min_lr_ratio=0.1)
    assert _lr_at(0, r) == pytest.approx(1e-5)
    assert _lr_at(500, r) == pytest.approx(1e-3)
    assert _lr_at(1000, r) == pytest.approx(1e-4)


def test_the_shipped_reader_matches_its_record():
    path = reader_base()
    if path is None:
        pytest.skip("this install ships no shop reader")
    record = verify_reader(path)
    assert record["recipe"]["steps"] > 0 and record["heldout"]["n_facts"] > 0
    assert json.loads((path / RECORD_NAME).read_text(encoding="utf-8"))["sha256"] == record["sha256"]


TEA = {
    "shop.yaml": "name: 云雾茶社\nlanguage: zh\ncurrency: CNY\n",
    "catalog.csv": "sku,name,price,stock,产地\nT-01,明前龙井,268,12,杭州\nT-02,云南滇红,88,40,云南\nT-03,武夷水仙,158,0,福建\n",
    "policies.md": "## 寄送\n每天17点前付款当天发出，默认发顺丰。\n\n## 售后\n未拆封的茶叶7天内可以退换。\n",
}


def test_a_changed_price_is_stated_by_the_end_model_without_retraining(tmp_path):
    path = reader_base()
    if path is None:
        pytest.skip("this install ships no shop reader")
    import openai

    from endcloud.compose import build_app_from_workspace
    from endcloud.config import Workspace
    from endcloud.loopback import LoopbackServer

    ws = Workspace.resolve(tmp_path / "ws")
    ws.ensure()
    shutil.copytree(path, ws.base)
    ws.shop.mkdir(parents=True, exist_ok=True)
    for name, text in TEA.items():
        (ws.shop / name).write_text(text, encoding="utf-8")

    def ask(question: str) -> str:
        app = build_app_from_workspace(ws, review=False, max_new_tokens=40)
        with LoopbackServer(app, start_timeout_s=120) as srv:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)
            r = client.chat.completions.create(model="end", messages=[{"role": "user", "content": question}],
                                               temperature=0)
            return r.choices[0].message.content

    before = ask("云南滇红多少钱？")
    catalog = ws.shop / "catalog.csv"
    catalog.write_text(catalog.read_text(encoding="utf-8").replace("云南滇红,88", "云南滇红,96"), encoding="utf-8")
    after = ask("云南滇红多少钱？")
    assert "88" in before, before
    assert "96" in after and "88" not in after, after
