"""`prepare` gives byte for byte what the implementation before the batch rewrite gave.

The inputs in data/golden are a seeded slice of the corpus bench's JDDC file plus sessions
written to hit every rule (full-width PII, URLs the URL rule must and must not touch, tabs,
CRLF, a too-long turn, emoticon-only turns, en PII, every structured type, duplicates,
assistant-first sessions, NULL/system/routing lines, spelled-out phones, an e-mail written
out, our own placeholder, names, odd Unicode), and one small file in each other format. The
expected files were written by the previous (line-at-a-time) pipeline on the same inputs
with the same options; any change in what the pipeline outputs or counts shows up here.

Changed on purpose since (issue 22): a CSV answer's line break is kept ("yes\nit is", one
`whitespace_collapsed` fewer), and sessions are also written whole (`sessions_written`). The
run keeps the old 512-character limit, so the too-long turn is still cut where it was.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from endcloud.corpus import prepare

GOLDEN = Path(__file__).parent / "data" / "golden"
INPUTS = ["chats_jddc.txt", "chats.jsonl", "ecd_train.txt", "chats.csv"]
# Counters of how the work was done, not of what was done.
NOT_RESULTS = {"redaction_memo_hits", "redaction_scanned"}


def _first_difference(got: bytes, want: bytes) -> str:
    g, w = got.split(b"\n"), want.split(b"\n")
    for i, (a, b) in enumerate(zip(g, w)):
        if a != b:
            return f"line {i + 1}:\n got  {a[:300]!r}\n want {b[:300]!r}"
    return f"{len(g)} lines, expected {len(w)}"


@pytest.fixture(autouse=True)
def _no_public_ids():
    """An earlier test that served a generated shop declared its SKUs public for the process
    (`use_public_values`); the golden run redacts as a shop with none declared."""
    import os

    from endcloud.privacy import public

    saved = (os.environ.get(public.ENV), public._values, public._loaded_from)
    public.use_public_values([])
    yield
    env, public._values, public._loaded_from = saved
    if env is None:
        os.environ.pop(public.ENV, None)
    else:
        os.environ[public.ENV] = env


@pytest.mark.parametrize("workers", [1, 2])
def test_outputs_equal_the_previous_implementation(tmp_path: Path, workers: int):
    out = tmp_path / "out"
    report = prepare([GOLDEN / name for name in INPUTS], out, workers=workers, eval_fraction=0.2, chunk_bytes=4096,
                     max_turn_chars=512)
    for name, expected in (("pairs.jsonl", "expected_pairs.jsonl.gz"), ("eval.jsonl", "expected_eval.jsonl.gz")):
        got = (out / name).read_bytes()
        want = gzip.decompress((GOLDEN / expected).read_bytes())
        assert got == want, f"{name} differs from the golden output at " + _first_difference(got, want)
    want_counts = json.loads((GOLDEN / "expected_counts.json").read_text(encoding="utf-8"))
    assert {k: v for k, v in report.counts.items() if k not in NOT_RESULTS} == want_counts["counts"]
    assert report.pii == want_counts["pii"]
    assert not [p for p in out.iterdir() if p.name.startswith(".prepare-")]  # the hand-over folder is gone
