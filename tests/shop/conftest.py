"""Fixtures of the shop room: one small generated pack per language, shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endcloud.corpus.shopworld import generate_shop

SESSIONS = 1000


@pytest.fixture(scope="session", params=["zh", "en"])
def lang(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def packs(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    out = {}
    for lang in ("zh", "en"):
        folder = tmp_path_factory.mktemp(f"shop-{lang}")
        summary = generate_shop(folder, lang=lang, sessions=SESSIONS, products=40, seed=7, force=True)
        out[lang] = (folder, summary)
    return out


@pytest.fixture(scope="session")
def pack_dir(packs, lang) -> Path:
    return packs[lang][0]


@pytest.fixture(scope="session")
def summary(packs, lang):
    return packs[lang][1]


@pytest.fixture(scope="session")
def sessions(pack_dir) -> list[dict]:
    with open(pack_dir / "chats" / "chats.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def eval_rows(pack_dir) -> list[dict]:
    with open(pack_dir / "chats" / "eval.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]
