"""The gate promotes on evidence: better by a margin, or equal where nothing is failing."""

from __future__ import annotations

import pytest

from endcloud.errors import ConfigError
from endcloud.evolve.gate import GateSettings, Metrics, decide, failing

S = GateSettings(tolerance=0.02, margin=0.05, floor_final=0.3, floor_facts=0.3)


def m(final: float, facts: float | None, leak: float = 0.0, n: int = 40) -> Metrics:
    return Metrics(final=final, fact_accuracy=facts, leak_rate=leak, n=n)


def test_two_failing_adapters_are_never_not_worse_than_each_other():
    # the demo's story: 0 % facts right is "not worse" than 0 %, and three rounds were promoted
    r = decide(m(0.12, 0.0), m(0.12, 0.0), S)
    assert not r.promote
    assert any("champion is failing" in x and "fact accuracy 0.000 < floor 0.3" in x for x in r.reasons), r.reasons
    # slightly better, but within the margin: still no evidence
    assert not decide(m(0.15, 0.03), m(0.12, 0.0), S).promote
    # Final failing alone (facts unknown) is failing too
    assert not decide(m(0.2, None), m(0.2, None), S).promote


def test_better_by_the_margin_is_promoted_even_over_a_failing_champion():
    r = decide(m(0.20, 0.40), m(0.12, 0.0), S)
    assert r.promote and r.reasons[0].startswith("better:") and "fact accuracy 0.400" in r.reasons[0]
    r = decide(m(0.70, 0.50), m(0.60, 0.50), S)
    assert r.promote and "final 0.700" in r.reasons[0]


def test_equal_is_enough_only_where_the_champion_is_healthy():
    r = decide(m(0.61, 0.60), m(0.60, 0.61), S)
    assert r.promote and "healthy champion" in r.reasons[0]
    # equal to a healthy champion, but the candidate itself sits under the floor
    r = decide(m(0.61, 0.29), m(0.60, 0.305), S)
    assert not r.promote and any("candidate is failing" in x for x in r.reasons)


def test_vetoes_stand_whatever_else_is_better():
    r = decide(m(0.90, 0.90, leak=0.1), m(0.60, 0.60), S)
    assert not r.promote and any("leak rate" in x for x in r.reasons)
    r = decide(m(0.90, 0.50), m(0.60, 0.60), S)  # Final much better, facts worse
    assert not r.promote and any("fact accuracy 0.500 <" in x for x in r.reasons)
    r = decide(m(0.0, None, n=0), m(0.0, None, n=0), S)
    assert not r.promote and "no held-out" in r.reasons[0]


def test_failing_names_the_floor_and_the_settings_are_checked():
    assert failing(m(0.5, 0.5), S) is None
    assert failing(m(0.1, None), S) == "final 0.100 < floor 0.3"
    with pytest.raises(ConfigError, match="margin"):
        GateSettings(margin=-0.1)


def test_reasons_reach_the_manifest_and_the_dashboard(tmp_path):
    """The reasons travel as before: gate json -> adapter manifest -> the review router's rows."""
    from endcloud.end.adapters import AdapterRegistry

    src = tmp_path / "run"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}", encoding="utf-8")
    reg = AdapterRegistry(tmp_path / "adapters")
    result = decide(m(0.12, 0.0), m(0.12, 0.0), S)
    v = reg.publish("shop", src, manifest={"gate": result.to_json()})
    reg.mark("shop", v, "rejected")
    assert reg.manifest("shop", v)["gate"]["reasons"] == result.reasons
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from endcloud.serve.review import review_router

    app = FastAPI()
    app.include_router(review_router(db_path=tmp_path / "endcloud.db", adapters_root=tmp_path / "adapters", admin_token="t"))
    with TestClient(app) as client:
        data = client.get("/api/dashboard", headers={"Authorization": "Bearer t"}).json()
    row = next(r for r in data["versions"] if r["version"] == v)
    assert row["promote"] is False and row["status"] == "rejected" and row["reasons"] == result.reasons
