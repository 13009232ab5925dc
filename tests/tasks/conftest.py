"""Fixtures of the tasks room: small generated shops (zh and en) and the ShopBench fixture file."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def shopbench_file() -> Path:
    """Eight hand-written questions in ShopBench's published format (all five task types)."""
    return DATA / "shopbench_dev.jsonl"


def _shop(tmp_path_factory, lang: str) -> Path:
    from endcloud.corpus.shopworld import generate_shop

    out = tmp_path_factory.mktemp(f"shop-{lang}")
    generate_shop(out, lang=lang, sessions=40, products=16, seed=5, eval_per_intent=2)
    return out


@pytest.fixture(scope="session")
def zh_shop(tmp_path_factory) -> Path:
    return _shop(tmp_path_factory, "zh")


@pytest.fixture(scope="session")
def en_shop(tmp_path_factory) -> Path:
    return _shop(tmp_path_factory, "en")
