"""An optional NER detector: a token-classification model the shop provides adds recall.

The rules find names and addresses in the contexts they know; a model trained for named
entities finds them anywhere. It runs only when a model folder is configured — nothing is
downloaded, the folder must hold a Hugging Face token-classification model and its tokenizer:

    export ENDCLOUD_PRIVACY_NER=/models/zh-en-ner      # or endcloud.privacy.use_ner(path)

Entity groups map to our types: PER/PERSON -> NAME, LOC/GPE/ADDRESS/FAC -> ADDRESS (labels with
B-/I- prefixes are grouped by the pipeline's "simple" aggregation). Organisations, products
and everything else are ignored: a brand is not personal. Candidates get the lowest
priority, so a rule's span (with its type) wins any overlap.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Iterator

from endcloud.errors import ConfigError
from endcloud.privacy.extra import NER_ENV, Cand, Hints

PRIO = 10
ENTITY_TYPES = {"PER": "NAME", "PERSON": "NAME", "NAME": "NAME", "LOC": "ADDRESS", "LOCATION": "ADDRESS",
                "GPE": "ADDRESS", "ADDRESS": "ADDRESS", "ADDR": "ADDRESS", "FAC": "ADDRESS"}
# anything a name or an address could be written in: a capital letter or a CJK character
_HINT = re.compile(r"[A-Z\u4e00-\u9fff]")


class NerDetector:
    """Names and places found by a local token-classification model (see the module docstring)."""

    name = "ner"

    def __init__(self, path: str | os.PathLike[str] | None = None, *, min_score: float = 0.5, device: int | str = -1):
        path = path or os.environ.get(NER_ENV)
        if not path:
            raise ConfigError(f"the NER detector needs a model folder: set ${NER_ENV} or call endcloud.privacy.use_ner(PATH)")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"${NER_ENV}={str(path)!r} is not a Hugging Face model folder (no config.json there)")
        self.path, self.min_score, self.device = str(path), min_score, device
        self._pipe: Any = None
        self._lock = threading.Lock()
        self._hints = Hints((_HINT,))

    def _pipeline(self) -> Any:
        # Loaded on first use, not at import or configuration: a text without a capital letter or a
        # CJK character never pays for torch.
        with self._lock:
            if self._pipe is None:
                from transformers import pipeline

                self._pipe = pipeline("token-classification", model=self.path, tokenizer=self.path,
                                      aggregation_strategy="simple", device=self.device)
            return self._pipe

    def hints(self, lang: str | None) -> Hints:
        return self._hints

    def find(self, text: str, shadow: str, lang: str | None) -> Iterator[Cand]:
        for ent in self._pipeline()(text):
            group = str(ent.get("entity_group") or ent.get("entity") or "").upper()
            group = group.split("-", 1)[-1]
            typ = ENTITY_TYPES.get(group)
            start, end = ent.get("start"), ent.get("end")
            if typ is None or start is None or end is None or float(ent.get("score", 0.0)) < self.min_score:
                continue
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if end - start >= 2:
                yield (PRIO, int(start), int(end), typ, "ner")
