"""Matching scorers: Match(query, reply), the RocketQA role in the paper's eq. 1.

    MATCHING registry   what it is                                           calibrated?
    ------------------  ---------------------------------------------------  -----------
    "trained"           the shop's own matcher (`endcloud matcher train`),   yes: Platt scaling
                        loaded from <workspace>/scoring/matcher              on held-out groups
    "tfidf"             character n-gram TF-IDF cosine of query and reply    no (a baseline)
    "lexical"           Dice overlap of character 1-2-grams (the server's    no
                        fallback: no model, no corpus)
    <a directory>       a `matcher train` output, or any sentence-transformers
                        CrossEncoder directory (sigmoid of its logit)

The paper notes RocketQA was never trained on e-commerce data; the "trained" matcher is
trained on the shop's own query -> response pairs (see `endcloud.scoring.matcher_train`).
Its output is a probability (sigmoid of a Platt-scaled logit), so the Θ = 0.2 rule means
"the cloud's reply is unlikely to answer this query".
"""

from __future__ import annotations

import functools
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from endcloud.errors import ModelError, RegistryError
from endcloud.registry import Registry
from endcloud.scoring.base import Scorer, check_pairs, cosine_rows
from endcloud.scoring.replylm import LM_DIR, SIGNALS as LM_SIGNALS, ReplyLM
from endcloud.scoring.similarity import CharNgramSimilarity
from endcloud.text import clean, detect_lang, normalise

MATCHING: Registry[Callable[..., Scorer]] = Registry("matching scorer")

MATCHER_CONFIG = "matcher.json"
MATCHER_WEIGHTS = "matcher.safetensors"


class TfidfMatcher(Scorer):
    """Lexical baseline: character n-gram TF-IDF cosine between query and reply.

    Not a probability: a correct reply that shares no characters with the question
    ("Can I choose the courier?" -> "We ship with ZTO") scores 0."""

    name = "tfidf"

    def __init__(self, *, corpus: Iterable[str] | None = None):
        corpus = list(corpus) if corpus is not None else None
        self._by_lang = {"zh": CharNgramSimilarity(lang="zh", corpus=corpus), "en": CharNgramSimilarity(lang="en", corpus=corpus)}

    def score(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        a, b = check_pairs(a, b)
        langs = [detect_lang(x, y) for x, y in zip(a, b)]
        out = np.zeros(len(a))
        for code in set(langs):
            idx = [i for i, l in enumerate(langs) if l == code]
            out[idx] = self._by_lang[code].score([a[i] for i in idx], [b[i] for i in idx])
        return out


class HashedFeatures:
    """Character 1–3-grams (word-bounded), hashed, sublinear tf, L2-normalised.

    Hashing keeps the matcher a fixed size whatever the shop's vocabulary, and one
    analyser serves Chinese (characters) and English (sub-words) alike."""

    def __init__(self, n_features: int = 2**16):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.n_features = n_features
        self._vec = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 3), preprocessor=clean,
                                      n_features=n_features, alternate_sign=False, norm=None)

    def __call__(self, texts: Sequence[str]):
        from sklearn.preprocessing import normalize

        x = self._vec.transform(list(texts)).astype(np.float32)
        x.data = 1.0 + np.log(x.data)
        return normalize(x, norm="l2", copy=False).tocsr()


class MemoryFeatures:
    """What the trained matcher's memory compares: the features of `CharNgramSimilarity`
    (zh: character 1-2-grams; en: word-bounded 2-4-grams), sublinear tf × idf of the shop's
    training texts, L2-normalised. Measured on the JDDC sample, these make the memory's vote
    useful where the dual encoder's hashed 1-3-grams without idf did not (R10@1 0.21 vs 0.13)."""

    N_FEATURES = 2**18

    def __init__(self, lang: str, idf: np.ndarray | None = None):
        from sklearn.feature_extraction.text import HashingVectorizer

        if lang not in ("zh", "en"):
            raise ModelError(f"matcher memory language must be 'zh' or 'en', got {lang!r}")
        self.lang = lang
        if lang == "zh":
            self._vec = HashingVectorizer(analyzer="char", ngram_range=(1, 2), preprocessor=normalise,
                                          n_features=self.N_FEATURES, alternate_sign=False, norm=None)
        else:
            self._vec = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), preprocessor=clean,
                                          n_features=self.N_FEATURES, alternate_sign=False, norm=None)
        self.idf = idf

    def fit(self, texts: Sequence[str]) -> "MemoryFeatures":
        texts = [t for t in texts if t]
        if not texts:
            return self
        x = self._vec.transform(texts)
        df = np.bincount(x.indices, minlength=self.N_FEATURES).astype(np.float64)
        self.idf = (np.log((1.0 + x.shape[0]) / (1.0 + df)) + 1.0).astype(np.float32)
        return self

    def __call__(self, texts: Sequence[str]):
        from sklearn.preprocessing import normalize

        x = self._vec.transform(list(texts)).astype(np.float32)
        x.data = 1.0 + np.log(x.data)
        if self.idf is not None:
            x = x.multiply(self.idf[None, :]).tocsr()
        return normalize(x, norm="l2", copy=False).tocsr()


def _grams(text: str) -> set[str]:
    t = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text or "").lower()).strip()
    chars = [c for c in t if not unicodedata.category(c).startswith("P")]
    s = "".join(chars)
    return set(s) | {s[i : i + 2] for i in range(len(s) - 1)}


class LexicalMatcher(Scorer):
    """`score(queries, replies) -> [0, 1]`: Dice overlap of character 1–2-grams.

    The server's stand-in when the shop has no trained matcher: no model, no corpus, a few
    microseconds a pair, and (per STACK-NOTES) it separates Chinese paraphrases from
    unrelated text better than MiniLM. Not calibrated: a probability only in name."""

    name = "lexical"

    def score(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        a, b = check_pairs(a, b)
        out = np.zeros(len(a), dtype=np.float64)
        for i, (x, y) in enumerate(zip(a, b)):
            gx, gy = _grams(x), _grams(y)
            if gx and gy:
                out[i] = 2 * len(gx & gy) / (len(gx) + len(gy))
        return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


class TrainedMatcher(Scorer):
    """The shop's matcher: a dual encoder over hashed n-grams, a lexical term, and (since
    issue 22) a memory of training pairs, weighed together on held-out groups.

        dual   = s · cos(Wq·x_q, Wr·x_r) + w · cos(x_q, x_r)
        memory = Σ_j a_j b_j / Σ_j a_j,  a_j = cos(m_q, m_qj)², b_j = cos(m_r, m_rj)²
                 (m: `MemoryFeatures`, tf-idf character n-grams of the shop's language;
                 training pair j votes for replies like its reply to queries like its query)
        logit  = c_d · dual + c_m · memory + c_l · cos(m_q, m_r) + c_0   (config["combine"];
                 a matcher saved without one uses logit = dual)
                 [+ c_c · log p(r | q) + c_p · log p(r) + c_t · tokens(r), when it was trained
                 with a language model: `endcloud.scoring.replylm`, config["lm"]]
        P(match) = sigmoid(a · logit + b)

    Without a language model inference is numpy/scipy only (no torch import), a few ms per
    batch on CPU: the server's fast path calls it on every turn. With one, each pair adds two
    forward passes of a 1.5M-parameter model (about 170 pairs/s on one core)."""

    MEMORY_BLOCK = 4_000_000  # (pairs × memory rows) similarities computed at a time: ~32 MB

    def __init__(self, *, w_query: np.ndarray, w_reply: np.ndarray, config: dict, name: str = "trained",
                 memory: tuple | None = None, memory_features: MemoryFeatures | None = None, lm: Any = None):
        self.lm = lm  # a ReplyLM, or None
        self.w_query = np.ascontiguousarray(w_query, dtype=np.float32)
        self.w_reply = np.ascontiguousarray(w_reply, dtype=np.float32)
        self.config = config
        self.name = name
        self.features = HashedFeatures(int(config["n_features"]))
        # (queries, replies) of the training pairs as sparse `memory_features` rows; the
        # transposes are kept in the layout a product wants.
        self.memory = memory
        self.memory_features = memory_features
        self._mem_t = (memory[0].T.tocsc(), memory[1].T.tocsc()) if memory is not None else None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "TrainedMatcher":
        """Load a `matcher train` output (cached per process until the folder is retrained)."""
        folder = Path(path).expanduser().resolve()
        cfg = folder / MATCHER_CONFIG
        stamp = cfg.stat().st_mtime_ns if cfg.exists() else 0
        return _load_trained(str(folder), stamp)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Weights then config, each written atomically; the config's presence marks a complete matcher."""
        from safetensors.numpy import save

        from endcloud.fileio import atomic_write, write_json_atomic

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"w_query": self.w_query, "w_reply": self.w_reply}
        if self.memory is not None and self.memory_features is not None:
            tensors["mem_idf"] = np.ascontiguousarray(self.memory_features.idf, dtype=np.float32)
            for side, m in zip(("q", "r"), self.memory):
                m = m.tocsr()
                tensors[f"mem_{side}_data"] = np.ascontiguousarray(m.data, dtype=np.float32)
                tensors[f"mem_{side}_indices"] = np.ascontiguousarray(m.indices, dtype=np.int32)
                tensors[f"mem_{side}_indptr"] = np.ascontiguousarray(m.indptr, dtype=np.int64)
        with atomic_write(out / MATCHER_WEIGHTS, "wb") as f:
            f.write(save(tensors))
        write_json_atomic(out / MATCHER_CONFIG, self.config)
        return out

    def signals(self, queries: Sequence[str], replies: Sequence[str]) -> np.ndarray:
        """(n, 3): the dual encoder's logit, the memory's vote (0 without a memory), the
        lexical cosine (tf-idf of the memory's features when there are some); (n, 6) with a
        language model: its three signals (`ReplyLM.signals`) after them. What
        `config["combine"]` weighs."""
        base = self._signals(queries, replies)
        if self.lm is None:
            return base
        return np.concatenate([base, self.lm.signals(queries, replies)], axis=1)

    def _signals(self, queries: Sequence[str], replies: Sequence[str]) -> np.ndarray:
        xq, xr = self.features(queries), self.features(replies)
        eq, er = _unit(xq @ self.w_query), _unit(xr @ self.w_reply)
        dense = (eq * er).sum(axis=1)
        lex = cosine_rows(xq, xr)
        dual = float(self.config["scale"]) * dense + float(self.config["w_lex"]) * lex
        if self.memory_features is None or not len(queries):
            return np.stack([dual, np.zeros_like(dual), lex], axis=1)
        mq, mr = self.memory_features(queries), self.memory_features(replies)
        # The lexical signal in the memory's space: idf-weighted, the stronger of the two.
        return np.stack([dual, self._memory_vote(mq, mr), cosine_rows(mq, mr)], axis=1)

    def _memory_vote(self, xq, xr) -> np.ndarray:
        out = np.zeros(xq.shape[0], dtype=np.float64)
        if self._mem_t is None:
            return out
        mq, mr = self._mem_t
        power = float(self.config.get("memory_power", 2.0))
        step = max(1, self.MEMORY_BLOCK // max(1, mq.shape[1]))
        for start in range(0, xq.shape[0], step):
            a = np.clip((xq[start:start + step] @ mq).toarray(), 0, None) ** power
            b = np.clip((xr[start:start + step] @ mr).toarray(), 0, None) ** power
            out[start:start + step] = (a * b).sum(axis=1) / (a.sum(axis=1) + 1e-9)
        return out

    def logits(self, queries: Sequence[str], replies: Sequence[str]) -> np.ndarray:
        sig = self.signals(queries, replies)
        comb = self.config.get("combine")
        if not comb:
            return sig[:, 0]
        logit = comb["dual"] * sig[:, 0] + comb["memory"] * sig[:, 1] + comb["lex"] * sig[:, 2] + comb["bias"]
        for j, key in enumerate(LM_SIGNALS, start=3):
            if sig.shape[1] > j:
                logit = logit + comb.get(key, 0.0) * sig[:, j]
        return logit

    def score(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        a, b = check_pairs(a, b)
        if not a:
            return np.zeros(0)
        platt = self.config["platt"]
        return _sigmoid(platt["a"] * self.logits(a, b) + platt["b"]).astype(np.float64)


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


@functools.lru_cache(maxsize=4)
def _load_trained(path: str, stamp: int) -> TrainedMatcher:  # stamp: the config's mtime, so a retrain reloads
    from safetensors.numpy import load_file

    folder = Path(path)
    cfg_path = folder / MATCHER_CONFIG
    if not cfg_path.exists():
        raise ModelError(f"{path!r} holds no trained matcher ({MATCHER_CONFIG} missing); run `endcloud matcher train --pairs PAIRS -o {path}`")
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    weights = load_file(str(folder / MATCHER_WEIGHTS))
    memory = features = None
    if "mem_q_data" in weights:
        from scipy.sparse import csr_matrix

        features = MemoryFeatures(config.get("memory_lang", "zh"), idf=weights["mem_idf"])
        n_features = MemoryFeatures.N_FEATURES
        memory = tuple(
            csr_matrix((weights[f"mem_{s}_data"], weights[f"mem_{s}_indices"], weights[f"mem_{s}_indptr"]),
                       shape=(len(weights[f"mem_{s}_indptr"]) - 1, n_features))
            for s in ("q", "r")
        )
    lm = None
    if config.get("lm"):
        lm_dir = folder / str(config["lm"].get("dir", LM_DIR))
        if not (lm_dir / "config.json").exists():
            raise ModelError(f"the matcher in {path!r} was trained with a language model, but {str(lm_dir)!r} is missing; "
                             f"copy the whole folder, or retrain with `endcloud matcher train --pairs PAIRS -o {path}`")
        lm = ReplyLM.load(lm_dir)
    return TrainedMatcher(w_query=weights["w_query"], w_reply=weights["w_reply"], config=config,
                          name=config.get("name", "trained"), memory=memory, memory_features=features, lm=lm)


@functools.lru_cache(maxsize=2)
def _load_cross_encoder(path: str, device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import CrossEncoder
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load progress bar is noise in CLI output and logs

        return CrossEncoder(path, device=device, local_files_only=True)
    except Exception as e:
        raise ModelError(f"cannot load a cross-encoder from {path!r}: {e}; pass a sentence-transformers CrossEncoder directory") from e


class CrossEncoderMatcher(Scorer):
    """Any sentence-transformers CrossEncoder directory (e.g. a RocketQA port).

    One-logit models: sigmoid of the logit; two-label models: softmax probability of the
    last label ("relevant")."""

    def __init__(self, *, model_dir: str | os.PathLike[str], name: str | None = None, batch_size: int = 32, device: str = "cpu"):
        path = Path(model_dir)
        if not path.is_dir():
            raise ModelError(f"cross-encoder directory {str(path)!r} does not exist")
        self.model_dir = str(path.resolve())
        self.name = name or path.name
        self.batch_size = batch_size
        self.device = device

    def score(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        import torch

        a, b = check_pairs(a, b)
        if not a:
            return np.zeros(0)
        model = _load_cross_encoder(self.model_dir, self.device)
        raw = np.asarray(model.predict(list(zip(a, b)), batch_size=self.batch_size, activation_fn=torch.nn.Identity(),
                                       show_progress_bar=False), dtype=np.float64)
        if raw.ndim == 2 and raw.shape[1] > 1:
            e = np.exp(raw - raw.max(axis=1, keepdims=True))
            return e[:, -1] / e.sum(axis=1)
        return _sigmoid(raw.reshape(-1))


MATCHING.add("tfidf", lambda corpus=None, workspace=None, **kw: TfidfMatcher(corpus=corpus))
MATCHING.add("lexical", lambda corpus=None, workspace=None, **kw: LexicalMatcher())


def _workspace(workspace):
    from endcloud.config import Workspace

    return workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)


def _trained_factory(corpus=None, workspace=None, path=None, **kw) -> Scorer:
    return TrainedMatcher.load(path if path is not None else _workspace(workspace).matcher)


MATCHING.add("trained", _trained_factory)


def load_matching(spec: str | Scorer = "auto", *, corpus: Iterable[str] | None = None, workspace=None) -> Scorer:
    """A registered name, a directory (a trained matcher or a CrossEncoder), "auto", or a Scorer.

    "auto": the workspace's trained matcher when it exists, else TF-IDF (and the report
    says which)."""
    if isinstance(spec, Scorer):
        return spec
    if spec == "auto":
        if workspace is not None and (_workspace(workspace).matcher / MATCHER_CONFIG).exists():
            return TrainedMatcher.load(_workspace(workspace).matcher)
        return TfidfMatcher(corpus=corpus)
    if spec in MATCHING:
        return MATCHING.get(spec)(corpus=corpus, workspace=workspace)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / MATCHER_CONFIG).exists():
            return TrainedMatcher.load(path)
        return CrossEncoderMatcher(model_dir=path)
    raise RegistryError(f"unknown matching scorer {spec!r}; valid: auto, {', '.join(MATCHING.names())}, "
                        "or a directory (a `matcher train` output or a CrossEncoder)")
