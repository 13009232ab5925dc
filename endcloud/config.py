"""The workspace: one folder that holds everything a shop's endcloud produces, and where
each stage finds what the others built.

Any stage can be re-run alone, and `endcloud serve` finds what `endcloud demo` built.
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

    ws = Workspace.resolve("endcloud-work")
    ws.find_base()                      # base/, or a ConfigError naming the command that builds it
    ws.find_adapter("shop/v2")          # (folder, "shop/v2"); None: the active version of the default name

The paper's numbers live in `endcloud.paper`; this module sits above `endcloud.end`,
whose adapter registry it reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endcloud.errors import ConfigError

ENV_HOME = "ENDCLOUD_HOME"
DEFAULT_HOME = "endcloud-work"
# The adapter name the demo publishes, the server serves and the online loop evolves when
# nothing else is named (a workspace with several adapters serves this one).
DEFAULT_ADAPTER = "shop"
NOTHING_BUILT = (
    "nothing to serve in {root}: no end model found (looked for {base}). Build the embedded default first with "
    "`scripts/demo` (or `endcloud demo --workspace {root}`), or pass --base PATH to a local Hugging Face model folder"
)


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

    # ---- what the workspace holds --------------------------------------------------------
    def has_shop(self) -> bool:
        """Whether shop/ holds a shop pack (its shop.yaml)."""
        return (self.shop / "shop.yaml").exists()

    def find_base(self, base: str | os.PathLike[str] | None = None) -> Path:
        """The end model's base: `base` (--base) when given, else base/; a ConfigError that
        names what to run or pass when there is none."""
        if base is not None:
            p = Path(base).expanduser()
            if not (p / "config.json").exists():
                raise ConfigError(f"--base {str(p)!r} is not a Hugging Face model folder (no config.json there)")
            return p
        if (self.base / "config.json").exists():
            return self.base
        raise ConfigError(NOTHING_BUILT.format(root=self.root, base=self.base))

    def adapter_registry(self) -> Any:
        """The versioned adapter registry of adapters/ (`endcloud.end.adapters.AdapterRegistry`)."""
        from endcloud.end.adapters import AdapterRegistry

        return AdapterRegistry(self.adapters)

    def find_adapter(self, adapter: str | os.PathLike[str] | None = None) -> tuple[Path | None, str | None]:
        """(adapter folder, label) for --adapter NAME | NAME/vN | a folder; with None, the
        active version of the workspace's adapter (the only name, or DEFAULT_ADAPTER when
        there are several), or (None, None) when nothing is published."""
        if adapter is not None:
            p = Path(adapter).expanduser()
            if (p / "adapter_config.json").exists():
                return p, str(p)
        reg = self.adapter_registry()
        names = reg.names()
        if adapter is None:
            if not names:
                return None, None
            name = names[0] if len(names) == 1 else (DEFAULT_ADAPTER if DEFAULT_ADAPTER in names else names[0])
            path = reg.active(name)
            return (path, f"{name}/{path.name}") if path else (None, None)
        name, _, version = str(adapter).partition("/")
        if name not in names:
            raise ConfigError(f"--adapter {str(adapter)!r}: no adapter named {name!r} in {self.adapters} "
                              f"(found: {', '.join(names) or 'none'}); pass NAME, NAME/vN or an adapter folder")
        path = reg.path(name, version) if version else reg.active(name)
        if path is None or not (path / "adapter_config.json").exists():
            raise ConfigError(f"--adapter {str(adapter)!r}: {'version ' + version if version else 'no active version'} "
                              f"is not usable; see `endcloud adapters list`")
        return path, f"{name}/{path.name}"
