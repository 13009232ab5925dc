"""The corpus room: chat logs (ECD, JDDC, JSONL, CSV) -> cleaned, redacted context/response pairs.

    read (readers.py) -> clean (clean.py) -> redact (endcloud.privacy) -> pairs (pairs.py)
    -> dedupe (dedupe.py) -> pairs.jsonl + eval.jsonl + report (pipeline.py)

    >>> from endcloud.corpus import prepare
    >>> report = prepare(["jddc.txt"], "work/corpus", workers=2)

The command line is `endcloud corpus prepare INPUT... -o OUTDIR`. Other rooms read a raw
chat log through the same pipeline (`log_pairs`, `log_sessions`: `logs.py`). The synthetic shop that
makes the default data lives in `endcloud.corpus.shopworld`.
"""

from endcloud.corpus.clean import CleanConfig, clean_text, clean_turns, near_key
from endcloud.corpus.dedupe import BloomFilter
from endcloud.corpus.logs import file_kind, log_pairs, log_sessions, prepare_logs
from endcloud.corpus.pairs import build_pairs, pair_lines
from endcloud.corpus.pipeline import PrepareConfig, Report, prepare
from endcloud.corpus.readers import READERS, Reader, detect_format, join_segmented, read
# A session's language (the report's sessions_zh / sessions_en): the one rule every room uses.
from endcloud.text import detect_lang

__all__ = [
    "READERS",
    "BloomFilter",
    "CleanConfig",
    "PrepareConfig",
    "Reader",
    "Report",
    "build_pairs",
    "clean_text",
    "clean_turns",
    "detect_format",
    "detect_lang",
    "file_kind",
    "log_pairs",
    "log_sessions",
    "join_segmented",
    "near_key",
    "pair_lines",
    "prepare",
    "prepare_logs",
    "read",
]
