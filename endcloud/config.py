"""Settings shared by every stage: the workspace layout and the paper's numbers.

The *workspace* is one folder that holds everything a shop's endcloud produces, so any
stage can be re-run alone and `endcloud serve` can find what `endcloud demo` built.
Its root is `--workspace`, else `$ENDCLOUD_HOME`, else `./endcloud-work`.

    <root>/
      shop/                 the shop pack (catalog.csv, faq.jsonl, policies.md, shop.yaml, chats…)
      corpus/pairs.jsonl    context -> response pairs (+ report.json / report.txt)
      corpus/eval.jsonl     held-out pairs (with facts when the source knows them)
      labels/labels.jsonl   teacher labels (distillation); labels/cache.sqlite
      base/                 the end model's base (HF causal LM dir) when pretrained here
      adapters/<name>/vN/   versioned PEFT adapters + manifest.json; adapters/<name>/active
      scoring/matcher/      the matcher trained on the shop's pairs
      endcloud.db           SQLite: sessions, replies, scores, feedback, labels, reviews
      audit/outbound.jsonl  what left the shop (redacted text + hash per request)
      reports/              eval tables, plots, demo report
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "ENDCLOUD_HOME"
DEFAULT_HOME = "endcloud-work"


@dataclass(frozen=True)
class Paper:
    """The numbers the paper fixes (Tables II, IV; eq. 1). All overridable by flags."""

    shots: int = 500  # Table II: N question-answer examples in the prompt
    max_input_len: int = 256  # Table IV
    max_output_len: int = 512
    learning_rate: float = 5e-5
    batch_size: int = 1
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    num_virtual_tokens: int = 128
    top_p: float = 0.8
    temperature: float = 0.6
    alpha: float = 0.8  # eq. 1: Final = α·Sim + (1−α)·Match
    theta: float = 0.2  # Θ: when Match(query, cloud) < Θ, Final = Sim


PAPER = Paper()


@dataclass(frozen=True)
class Workspace:
    """Paths inside one endcloud workspace (see the module docstring)."""

    root: Path

    @classmethod
    def resolve(cls, root: str | os.PathLike[str] | None = None) -> "Workspace":
        if root is None:
            root = os.environ.get(ENV_HOME) or DEFAULT_HOME
        return cls(Path(root).expanduser().resolve())

    @property
    def shop(self) -> Path:
        return self.root / "shop"

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def pairs(self) -> Path:
        return self.corpus / "pairs.jsonl"

    @property
    def eval_pairs(self) -> Path:
        return self.corpus / "eval.jsonl"

    @property
    def labels_dir(self) -> Path:
        return self.root / "labels"

    @property
    def labels(self) -> Path:
        return self.labels_dir / "labels.jsonl"

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    @property
    def matcher(self) -> Path:
        return self.root / "scoring" / "matcher"

    @property
    def db(self) -> Path:
        return self.root / "endcloud.db"

    @property
    def audit(self) -> Path:
        return self.root / "audit" / "outbound.jsonl"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def ensure(self) -> "Workspace":
        self.root.mkdir(parents=True, exist_ok=True)
        return self
