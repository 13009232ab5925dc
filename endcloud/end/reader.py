"""The shop reader's place in an install: the shipped default base and its checksum.

The reader itself — a small model trained on many generated shops to answer from the
knowledge snippets in its prompt — is built by a recipe (`endcloud.shopreader`,
`endcloud pretrain --recipe reader`). What ships is its model directory under
`endcloud/assets/reader` (fp16 safetensors + tokenizer + reader.json with the recipe and the
weights' sha256); `reader_base()` finds it and `verify_reader()` checks it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from endcloud.errors import ModelError

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "reader"
RECORD_NAME = "reader.json"
WEIGHTS = "model.safetensors"
# The phrasing the reader was trained to write beside what it copies (`endcloud.scoring.novelty`),
# learned from the recipe's own examples; serving's novelty check reads it from the base dir.
GLUE_NAME = "glue.json"


def reader_base() -> Path | None:
    """The shipped shop reader's model directory, or None when this install has none."""
    return ASSET_DIR if (ASSET_DIR / "config.json").exists() and (ASSET_DIR / WEIGHTS).exists() else None


def verify_reader(path: str | Path = ASSET_DIR) -> dict[str, Any]:
    """The reader's record, after checking its weights (and its glue.json, where the record
    holds that file's sha256) against the recorded sha256."""
    p = Path(path)
    rec_path = p / RECORD_NAME
    if not rec_path.exists():
        raise ModelError(f"{p} has no {RECORD_NAME}: not a shop reader built by `endcloud pretrain --recipe reader`")
    record = json.loads(rec_path.read_text(encoding="utf-8"))
    _check_sha256(p / WEIGHTS, record.get("sha256"))
    glue = record.get("glue")  # recorded by builds that write glue.json beside the weights
    if isinstance(glue, dict) and glue.get("sha256"):
        _check_sha256(p / str(glue.get("file") or GLUE_NAME), glue["sha256"])
    return record


def _check_sha256(path: Path, recorded: Any) -> None:
    digest = sha256_file(path) if path.is_file() else "missing"
    if digest != recorded:
        raise ModelError(f"{path}: sha256 {digest[:12]}… does not match reader.json's {str(recorded)[:12]}…; "
                         "rebuild it with `endcloud pretrain --recipe reader`")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["ASSET_DIR", "GLUE_NAME", "RECORD_NAME", "WEIGHTS", "reader_base", "sha256_file", "verify_reader"]
