"""Chat logs as every other room reads them: through `prepare`, so there is one normalisation.

The matcher (`endcloud matcher train --pairs LOGS`), pretraining (`endcloud pretrain LOGS`)
and evaluation (`endcloud eval --inputs LOGS`) accept a raw chat log in any format as well
as the corpus's own outputs. A raw log is run through the very pipeline `endcloud corpus
prepare` runs (reader by content, cleaning, segmentation spaces removed, redaction, pairs,
dedupe) into a temporary folder, so the same log gives the same pairs in every command:

    >>> pairs = log_pairs(["ecd_train"])           # what prepare writes, both splits in one list
    >>> sessions = log_sessions(["jddc_chat.txt"])  # every utterance, session by session

`file_kind(path)` says what a file is, by content: "pairs" (Pair JSONL: query + response),
"chats" (a chat log prepare reads: ECD, JDDC, CSV, messages JSONL), or "other".
`normalise_texts` gives texts that do not come as dialogues (an ECD test file's candidate
replies) the same per-turn cleaning and redaction.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from endcloud.errors import DataError
from endcloud.fileio import read_jsonl

from endcloud.corpus.clean import CleanConfig, clean_many
from endcloud.corpus.pipeline import DEFAULT_REDACTOR, EVAL_FILE, LANG_SAMPLE_CHARS, PAIRS_FILE, SESSIONS_FILE, Report, prepare
from endcloud.corpus.readers import check_file, detect_format, join_segmented

_SNIFF_LINES = 5


def _first_objects(path: Path) -> list[Any]:
    """The first few non-blank lines parsed as JSON (values that fail to parse are None)."""
    out: list[Any] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append(None)
            if len(out) >= _SNIFF_LINES:
                break
    return out


def file_kind(path: str | os.PathLike[str]) -> str:
    """"pairs", "chats" or "other": what a file holds, judged by its content alone."""
    p = check_file(path)
    objs = _first_objects(p)
    if objs and all(isinstance(o, dict) for o in objs):
        if all("query" in o and ("response" in o or "label" in o) for o in objs):
            return "pairs"
        from endcloud.corpus.formats import as_messages

        # messages JSONL, or ShareGPT / Alpaca rows (the JSONL reader reads those too)
        return "chats" if all(isinstance(o.get("messages"), list) or as_messages(o) is not None for o in objs) else "other"
    try:
        detect_format(p)
    except DataError:
        return "other"
    return "chats"


def prepare_logs(inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
                 redact: bool = True, **options: Any) -> Report:
    """`prepare` with everything in one split (eval_fraction 0) in one process: what the other
    commands call on a raw log. `options` are `prepare`'s (max_turn_chars, long_turns, ...)."""
    options.setdefault("eval_fraction", 0.0)
    options.setdefault("workers", 1)
    return prepare([str(i) for i in inputs], out_dir, redact=redact, **options)


def log_pairs(inputs: Sequence[str | os.PathLike[str]], **options: Any) -> list[dict[str, Any]]:
    """Every pair `endcloud corpus prepare` makes of `inputs` (pairs.jsonl then eval.jsonl),
    as `Pair.to_json()` dicts."""
    with tempfile.TemporaryDirectory(prefix="endcloud-logs-") as tmp:
        prepare_logs(inputs, tmp, **options)
        return list(read_jsonl(Path(tmp) / PAIRS_FILE)) + list(read_jsonl(Path(tmp) / EVAL_FILE))


def log_sessions(inputs: Sequence[str | os.PathLike[str]], **options: Any) -> list[dict[str, Any]]:
    """Every session of `inputs`, whole and normalised like the pairs (sessions.jsonl with
    nothing held out): {"id", "source", "lang", "messages": [{"role", "content"}]}."""
    with tempfile.TemporaryDirectory(prefix="endcloud-logs-") as tmp:
        prepare_logs(inputs, tmp, **options)
        return list(read_jsonl(Path(tmp) / SESSIONS_FILE))


def normalise_texts(texts: Sequence[str], *, segmented: bool = False, redact: bool = True,
                    clean: CleanConfig | None = None, lang: str | None = None) -> list[str]:
    """The texts of one conversation (or one group of candidates) as `prepare` would write
    them: ECD segmentation spaces removed (`segmented=True`), cleaned by the same rules,
    redacted with one vault for the lot. A text the cleaning empties stays "" (the caller
    keeps its positions)."""
    import importlib

    from collections import Counter

    from endcloud.text import detect_lang

    raw = [join_segmented(t) for t in texts] if segmented else list(texts)
    out = clean_many(raw, clean or CleanConfig(), Counter())
    if redact and out:
        privacy = importlib.import_module(DEFAULT_REDACTOR)
        code = lang or detect_lang(*[t for t in out if t], sample_chars=LANG_SAMPLE_CHARS)
        vault = privacy.Vault()
        out = [privacy.redact(t, vault, lang=code).text if t else t for t in out]
    return out


__all__ = ["file_kind", "log_pairs", "log_sessions", "normalise_texts", "prepare_logs"]
