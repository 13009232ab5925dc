"""The GGUF export cache keeps the most recently used files (no llama.cpp needed)."""

from __future__ import annotations

import os
import time

import pytest

from endcloud.runtime.llamacpp import ENV_CACHE_KEEP, _cache_keep, prune_cache
from endcloud.errors import ConfigError


def test_prune_keeps_the_most_recently_used_and_drops_crashed_exports(tmp_path):
    now = time.time()
    files = []
    for i in range(6):
        p = tmp_path / f"base+shop-v{i}-q8_0-{i:012x}.gguf"
        p.write_bytes(b"GGUF")
        os.utime(p, (now - 100 + i, now - 100 + i))  # v5 newest
        files.append(p)
    os.utime(files[0], (now, now))  # v0 was used just now: it stays
    crashed = tmp_path / "base-q8_0-abc.gguf.123.partial"
    crashed.write_bytes(b"half")
    os.utime(crashed, (now - 7200, now - 7200))
    writing = tmp_path / "base-q8_0-def.gguf.456.partial"  # an export in progress
    writing.write_bytes(b"half")
    other = tmp_path / "notes.txt"
    other.write_text("not ours")

    gone = prune_cache(tmp_path, keep=3)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert sorted(p.name for p in gone) == sorted([files[1].name, files[2].name, files[3].name, crashed.name])
    assert left == sorted([files[0].name, files[4].name, files[5].name, writing.name, other.name])
    assert prune_cache(tmp_path, keep=3) == []


def test_cache_keep_setting(monkeypatch):
    monkeypatch.delenv(ENV_CACHE_KEEP, raising=False)
    assert _cache_keep() == 4
    monkeypatch.setenv(ENV_CACHE_KEEP, "2")
    assert _cache_keep() == 2
    for bad in ("0", "many"):
        monkeypatch.setenv(ENV_CACHE_KEEP, bad)
        with pytest.raises(ConfigError, match=ENV_CACHE_KEEP):
            _cache_keep()
