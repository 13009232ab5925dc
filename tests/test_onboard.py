"""`endcloud shop onboard`: a hand-written pack, no logs, the offline teacher, a tiny base.

The pack is a bicycle workshop's (nothing like the synthetic textile shop): six products,
three policy sections, four FAQ entries, written here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endcloud.config import Workspace
from endcloud.errors import ConfigError
from endcloud.onboard import OnboardSettings, onboard

pytestmark = pytest.mark.usefixtures("few_threads")

STAGES = ["pack", "questions", "labels", "train", "evaluate-base", "evaluate", "publish"]
CATALOG = """sku,name,price,stock,frame,colour,weight
VB-210,Vela Gravel Bike,1249,4,aluminium,slate blue,10.2 kg
VB-310,Vela Road Bike,1599,0,carbon,matte black,8.1 kg
KT-05,Tubeless Repair Kit,24.5,60,,,120 g
HL-88,Beacon Front Light,39,18,,white,95 g
SD-12,Commuter Saddle,55,9,,brown,310 g
PD-40,Flat Pedals,45,22,,orange,380 g
"""
POLICIES = """# Cogwheel Cycles policies

## Shipping
<!-- key: shipping -->
Bikes ship fully assembled within 3 business days. Parts ship the next business day.

Shipping is free on orders over $150; smaller orders cost $9.

## Returns
<!-- key: returns -->
Unridden bikes can be returned within 21 days of delivery.

## Warranty
<!-- key: after-sales -->
Frames carry a 5 year warranty; components carry 1 year.
"""
FAQ = [
    ("Do you offer test rides?", "Yes, book a test ride at the workshop, Tuesday to Saturday."),
    ("Can you fit my bike to me?", "A bike fitting session costs $60 and takes 90 minutes."),
    ("Do you service bikes bought elsewhere?", "Yes, a standard service costs $75."),
    ("How do I claim the warranty?", "Email a photo and your order number; claims are answered within 2 business days."),
]


def write_pack(root: Path, *, gravel_price: str = "1249") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "shop.yaml").write_text("name: Cogwheel Cycles\nlanguage: en\ncurrency: USD\n", encoding="utf-8")
    (root / "catalog.csv").write_text(CATALOG.replace("1249", gravel_price), encoding="utf-8")
    (root / "policies.md").write_text(POLICIES, encoding="utf-8")
    (root / "faq.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in FAQ),
                                    encoding="utf-8")
    return root


def settings(**kw) -> OnboardSettings:
    base = dict(questions=60, steps=3, batch_size=4, max_new_tokens=8, min_facts=0.0, concurrency=4)
    base.update(kw)
    return OnboardSettings(**base)


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory, tiny_base_dir):
    """One workspace onboarded once (the tests below rerun it)."""
    mp = pytest.MonkeyPatch()
    mp.delenv("ENDCLOUD_CLOUD_BASE_URL", raising=False)  # the offline reference teacher
    root = tmp_path_factory.mktemp("onboard")
    pack = write_pack(root / "pack")
    ws = Workspace.resolve(root / "work")
    lines: list[str] = []
    first = onboard(pack, ws, settings=settings(base=tiny_base_dir), echo=lines.append)
    yield pack, ws, first, lines
    mp.undo()


def test_first_run_builds_everything_a_shop_serves(onboarded, tiny_base_dir):
    pack, ws, first, lines = onboarded
    assert first.ran == STAGES and first.skipped == [] and first.passed
    rep = first.report
    assert rep["labels"]["teacher"] == "reference" and rep["labels"]["answered"] == rep["questions"]["total"]
    assert rep["questions"]["source"] == "pack" and rep["questions"]["judged_heldout"] >= 5
    assert rep["labels"]["teacher_heldout"]["facts"] >= 0.5  # the offline teacher states the pack's facts
    assert rep["train"]["steps"] == 3 and rep["evaluate"]["adapter"]["n"] == rep["evaluate"]["base"]["n"] > 0
    # the adapter is registered and active, the base is where `endcloud serve` looks
    reg = ws.adapter_registry()
    assert reg.active_version("shop") == "v1" and rep["publish"] == {"adapter": "shop/v1", "active": True,
                                                                     "passed": True, "reason": None}
    assert ws.find_adapter()[1] == "shop/v1" and ws.find_base().resolve() == Path(tiny_base_dir).resolve()
    assert reg.manifest("shop", "v1")["onboard"]["teacher"] == "reference"
    # the report, and the serve line
    text = (ws.reports / "onboard.txt").read_text(encoding="utf-8")
    assert "Cogwheel Cycles" in text and f"endcloud serve -w {ws.root}" in text
    assert json.loads((ws.reports / "onboard.json").read_text(encoding="utf-8"))["publish"]["adapter"] == "shop/v1"
    assert any(line.startswith("▶ labels") for line in lines)
    # the pack is the workspace's shop; held-out questions never reach the training labels
    assert (ws.shop / "catalog.csv").read_text(encoding="utf-8") == (pack / "catalog.csv").read_text(encoding="utf-8")
    held = {d["id"] for d in map(json.loads, (ws.root / "onboard" / "questions.jsonl").open()) if d["heldout"]}
    trained = {json.loads(line)["id"] for line in ws.labels.open(encoding="utf-8")}
    assert held and trained and not held & trained
    evals = [json.loads(line) for line in ws.eval_pairs.open(encoding="utf-8")]
    assert {e["id"] for e in evals} <= held and any(e.get("facts") for e in evals)  # the online gate judges on them


def test_rerun_skips_finished_stages_and_a_new_price_is_picked_up(onboarded, tiny_base_dir):
    pack, ws, first, _ = onboarded
    again = onboard(pack, ws, settings=settings(base=tiny_base_dir), echo=lambda _: None)
    assert again.ran == [] and again.skipped == STAGES
    assert again.report["publish"]["adapter"] == "shop/v1"

    write_pack(pack, gravel_price="1199")
    changed = onboard(pack, ws, settings=settings(base=tiny_base_dir), echo=lambda _: None)
    assert changed.ran == STAGES  # the pack's hash changed: everything downstream reruns
    assert "1199" in (ws.shop / "catalog.csv").read_text(encoding="utf-8")
    questions = (ws.root / "onboard" / "questions.jsonl").read_text(encoding="utf-8")
    assert '"1199"' in questions and '"1249"' not in questions  # expected facts follow the pack
    labels = (ws.root / "onboard" / "labels.jsonl").read_text(encoding="utf-8")
    assert "1199" in labels and "1249" not in labels  # the teacher answered from the new pack
    reg = ws.adapter_registry()
    assert reg.active_version("shop") == "v2" and reg.manifest("shop", "v2")["parent"] == "v1"


def test_below_the_quality_bar_the_adapter_is_saved_not_activated(onboarded, tiny_base_dir):
    from endcloud.cli import main

    pack, ws, _, _ = onboarded
    reg = ws.adapter_registry()
    before = reg.active_version("shop")
    code = main(["shop", "onboard", str(pack), "-w", str(ws.root), "--base", str(tiny_base_dir), "--questions", "60",
                 "--steps", "3", "--batch-size", "4", "--min-facts", "1.0", "--no-progress"])
    assert code == 1
    newest = reg.versions("shop")[-1]
    m = reg.manifest("shop", newest)
    assert m["status"] == "rejected" and m["quality_bar"]["passed"] is False
    assert "--min-facts 100%" in m["quality_bar"]["reason"]
    assert reg.active_version("shop") == before  # the served adapter did not change


def test_lora_on_every_linear_layer_retrains_only_what_depends_on_it(onboarded, tiny_base_dir):
    from endcloud.cli import main

    pack, ws, _, _ = onboarded
    again = onboard(pack, ws, settings=settings(base=tiny_base_dir, target_modules="all-linear"), echo=lambda _: None)
    assert "labels" in again.skipped and "train" in again.ran  # the teacher's answers are reused
    adapter = Path(again.report["train"]["adapter_dir"])
    targets = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))["target_modules"]
    assert {"q_proj", "down_proj"} <= {t.rsplit(".", 1)[-1] for t in targets}  # the MLP too, not attention alone
    assert main(["shop", "onboard", str(pack), "-w", str(ws.root), "--base", str(tiny_base_dir), "--method", "prefix",
                 "--target-modules", "all-linear", "--no-progress"]) != 0  # a LoRA setting on another method


def test_a_real_cloud_labels_through_the_gate_in_the_prompt_cached_and_budget_capped(tmp_path, monkeypatch,
                                                                                        tiny_base_dir):
    """ENDCLOUD_CLOUD_* set: the questions go to the (recording) cloud double in the Table II
    prompt with the pack's FAQ as examples and the retrieved knowledge; a budget stop keeps
    every answer in the cache, and the rerun asks only what is left."""
    from endcloud.cloud import ROLE_TEXT
    from endcloud.errors import BudgetExceeded
    from endcloud.testing import FaultyCloud

    pack = write_pack(tmp_path / "pack")
    with FaultyCloud(model="gemini-1.5-pro") as cloud:
        monkeypatch.setenv("ENDCLOUD_CLOUD_BASE_URL", cloud.base_url)
        monkeypatch.setenv("ENDCLOUD_CLOUD_MODEL", "gemini-1.5-pro")
        monkeypatch.setenv("ENDCLOUD_CLOUD_API_KEY", "sk-test")
        monkeypatch.setenv("ENDCLOUD_CLOUD_PRICE", "1000,1000")  # $0.001 a token: $2 buys a few requests
        with pytest.raises(BudgetExceeded, match="rerun with a higher --budget"):
            onboard(pack, tmp_path / "work", settings=settings(base=tiny_base_dir, questions=30, budget=2.0,
                                                               concurrency=1), echo=lambda _: None)
        asked = len(cloud.requests)
        assert 0 < asked < 30
        system = cloud.requests[0]["messages"][0]["content"]
        assert system.startswith(ROLE_TEXT["en"]) and "Customer: Do you offer test rides?" in system
        assert "Shop knowledge:" in system
        done = onboard(pack, tmp_path / "work", settings=settings(base=tiny_base_dir, questions=30, budget=50.0),
                       echo=lambda _: None)
        lab = done.report["labels"]
        assert lab["teacher"] == "openai" and lab["cache_hits"] >= asked - 1 and lab["calls"] > 0
        assert len(cloud.requests) - asked == lab["calls"]  # only the unanswered ones went out again
        assert (tmp_path / "work" / "audit" / "outbound.jsonl").exists()  # through the privacy gate
        assert done.report["publish"]["active"]


def test_no_base_anywhere_is_a_clear_error(tmp_path, monkeypatch):
    import endcloud.end.reader

    monkeypatch.delenv("ENDCLOUD_CLOUD_BASE_URL", raising=False)
    monkeypatch.setattr(endcloud.end.reader, "reader_base", lambda: None)
    with pytest.raises(ConfigError, match="--base PATH"):
        onboard(write_pack(tmp_path / "pack"), tmp_path / "work", settings=settings(), echo=lambda _: None)


def _reader():
    from endcloud.end.reader import reader_base

    return reader_base()


@pytest.mark.skipif(_reader() is None, reason="needs the trained shop reader (endcloud.end.reader.reader_base())")
def test_onboarded_shop_is_served_and_the_end_model_states_the_packs_fact(tmp_path, monkeypatch):
    """The promise of onboarding: serve the workspace, ask about a product, and the END model
    (not the cloud) answers with the price from the pack."""
    from openai import OpenAI

    from endcloud.compose import build_app_from_workspace
    from endcloud.loopback import LoopbackServer

    monkeypatch.delenv("ENDCLOUD_CLOUD_BASE_URL", raising=False)
    pack = write_pack(tmp_path / "pack")
    result = onboard(pack, tmp_path / "work", settings=settings(questions=300, steps=120, batch_size=8,
                                                                max_new_tokens=48, min_facts=0.0),
                     echo=lambda _: None)
    assert result.report["publish"]["active"]
    app = build_app_from_workspace(tmp_path / "work", cloud="none", watch_s=0, review=False, worker="thread")
    with LoopbackServer(app) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        resp = client.chat.completions.create(model="end", messages=[
            {"role": "user", "content": "How much is the Tubeless Repair Kit?"}], temperature=0)
    assert resp.model_extra["endcloud"]["answered_by"] == "end"
    assert "24.5" in resp.choices[0].message.content, resp.choices[0].message.content
