"""Training the shop's own matcher (the RocketQA role, trained on e-commerce data).

    pairs.jsonl ──split by session──► train │ calib │ test
        train: dual encoder over hashed char n-grams, softmax over
               in-batch negatives + retrieved hard negatives
        calib: Platt scaling (logistic regression on the logit, balanced classes)
        test : R10@1 on groups of 1 true + 9 sampled responses (the ECD protocol),
               against the TF-IDF baseline on the very same groups

Negatives never include an *equivalent* answer: the same text, or (when the source knows
them) the same intent with the same facts — the synthetic shop answers one question with
several paraphrases, and calling a paraphrase "wrong" would teach noise.

Run: `endcloud matcher train --pairs W/corpus/pairs.jsonl -o W/scoring/matcher`; trains in
well under a minute on 2 CPU cores for a few thousand pairs.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from endcloud.errors import DataError
from endcloud.fileio import read_jsonl, write_json_atomic
from endcloud.scoring.base import Scorer
from endcloud.scoring.matching import HashedFeatures, TfidfMatcher, TrainedMatcher
from endcloud.text import detect_lang, normalise


@dataclass
class MatcherReport:
    """What `train_matcher` measured; also written to <out_dir>/report.json."""

    r10_at_1: float
    baseline_tfidf_r10_at_1: float
    n_train: int
    n_calib: int
    n_test_groups: int
    epochs: int
    steps: int
    loss_first_epoch: float
    loss_last_epoch: float
    train_seconds: float
    platt: dict[str, float]
    mean_prob_true: float  # on held-out groups: calibrated P(match) of the true reply...
    mean_prob_false: float  # ...and of the sampled negatives
    out_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- data


def _row(d: dict[str, Any], session: str) -> dict[str, Any]:
    facts = d.get("facts")
    return {
        "query": str(d["query"]),
        "response": str(d["response"]),
        "session": str(d.get("session") or session),
        "intent": d.get("intent"),
        "facts": tuple(sorted(normalise(f) for f in facts)) if facts is not None else None,
    }


def read_ecd(path: str | Path) -> list[dict[str, Any]]:
    """ECD lines (`label \\t utt_1 … utt_k \\t response`) -> groups of candidates.

    Consecutive lines with the same context are one group; returns
    [{"query", "context", "candidates": [...], "labels": [...]}]."""
    groups: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if len(fields) < 3 or fields[0] not in ("0", "1"):
                raise DataError("expected `label<TAB>utterance…<TAB>response` with label 0 or 1", path=str(path), line=lineno)
            context = fields[1:-1]
            if not groups or groups[-1]["context"] != context:
                groups.append({"query": context[-1], "context": context, "candidates": [], "labels": []})
            groups[-1]["candidates"].append(fields[-1])
            groups[-1]["labels"].append(int(fields[0]))
    return groups


def load_matcher_pairs(source: str | Path | Iterable[Any]) -> list[dict[str, Any]]:
    """Pairs JSONL (the corpus contract), an ECD file (its positives), or an iterable of
    `Pair`s / dicts with query, response and optionally session, intent, facts."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise DataError("pairs file not found; run `endcloud corpus prepare` first or pass --pairs", path=str(path))
        if path.suffix == ".txt":
            rows = []
            for i, g in enumerate(read_ecd(path)):
                for cand, label in zip(g["candidates"], g["labels"]):
                    if label == 1:
                        rows.append(_row({"query": g["query"], "response": cand}, f"ecd-{i}"))
            return rows
        items: Iterable[Any] = read_jsonl(path)
    else:
        items = source
    rows = []
    for n, item in enumerate(items):
        d = item.to_json() if hasattr(item, "to_json") else item
        if "query" not in d or "response" not in d:
            raise DataError(f"pair #{n + 1} lacks 'query' or 'response' (keys: {sorted(d)})", path=str(source) if isinstance(source, (str, Path)) else None)
        rows.append(_row(d, f"row-{n}"))
    return rows


def _split(session: str, test_frac: float, calib_frac: float) -> str:
    u = (zlib.crc32(session.encode("utf-8")) % 10_000) / 10_000
    return "test" if u < test_frac else "calib" if u < test_frac + calib_frac else "train"


class _Equivalence:
    """Which rows' responses answer the same thing (never used as each other's negatives)."""

    def __init__(self, rows: Sequence[dict[str, Any]]):
        texts: dict[str, int] = {}
        answers: dict[Any, int] = {}
        self.rid = np.array([texts.setdefault(normalise(r["response"]), len(texts)) for r in rows])
        keys = [(r["intent"], r["facts"]) if r["intent"] is not None and r["facts"] is not None else ("text", int(i)) for r, i in zip(rows, self.rid)]
        self.aid = np.array([answers.setdefault(k, len(answers)) for k in keys])
        self.session = np.array([r["session"] for r in rows])

    def same(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return (self.rid[i] == self.rid[j]) | (self.aid[i] == self.aid[j]) | (self.session[i] == self.session[j])


def sample_groups(rows: Sequence[dict[str, Any]], eq: _Equivalence, which: Sequence[int], *, n_neg: int = 9, seed: int = 0) -> list[list[int]]:
    """For each row index in `which`: [true row, n_neg rows whose responses are valid negatives]."""
    rng = np.random.default_rng(seed)
    pool = np.arange(len(rows))
    groups = []
    for i in which:
        negs: list[int] = []
        seen_rid = {int(eq.rid[i])}
        for _ in range(50):
            cand = rng.choice(pool, size=4 * n_neg)
            ok = ~eq.same(np.full(len(cand), i), cand)
            for c in cand[ok]:
                if int(eq.rid[c]) not in seen_rid:
                    seen_rid.add(int(eq.rid[c]))
                    negs.append(int(c))
                if len(negs) == n_neg:
                    break
            if len(negs) == n_neg:
                break
        if len(negs) == n_neg:
            groups.append([int(i)] + negs)
    return groups


def recall_at_1(scores: np.ndarray) -> float:
    """Mean over groups (rows of `scores`, true candidate in column 0) of 1 when the true
    candidate scores highest; ties share the credit (1/k), so a constant scorer gets 1/n."""
    if len(scores) == 0:
        return float("nan")
    scores = np.asarray(scores, dtype=np.float64)
    top = scores.max(axis=1, keepdims=True)
    at_top = np.isclose(scores, top, rtol=0, atol=1e-9)
    credit = np.where(at_top[:, 0], 1.0 / at_top.sum(axis=1), 0.0)
    return float(credit.mean())


def group_scores(scorer: Scorer, rows: Sequence[dict[str, Any]], groups: Sequence[Sequence[int]]) -> np.ndarray:
    """scorer(query of the group's true row, each candidate's response) as a (groups × n) array."""
    if not groups:
        return np.zeros((0, 0))
    q = [rows[g[0]]["query"] for g in groups for _ in g]
    r = [rows[j]["response"] for g in groups for j in g]
    return np.asarray(scorer.score(q, r)).reshape(len(groups), len(groups[0]))


def ecd_recall_at_1(scorer: Scorer, path: str | Path) -> dict[str, float]:
    """R{n}@1 of a scorer on an ECD-format file (groups = consecutive lines sharing a context)."""
    groups = [g for g in read_ecd(path) if sum(g["labels"]) == 1 and len(g["candidates"]) > 1]
    credit = []
    for g in groups:
        s = scorer.score([g["query"]] * len(g["candidates"]), g["candidates"])
        order = [g["labels"].index(1)] + [k for k, lab in enumerate(g["labels"]) if lab == 0]
        credit.append(recall_at_1(s[order][None, :]))
    sizes = sorted({len(g["candidates"]) for g in groups})
    return {"groups": len(groups), "candidates": sizes[0] if len(sizes) == 1 else float("nan"), "r_at_1": float(np.mean(credit)) if credit else float("nan")}


# ------------------------------------------------------------------------ training


def _hard_negatives(xq, xr, train_idx: np.ndarray, eq: _Equivalence, k: int) -> list[np.ndarray]:
    """For each train row: up to k train rows whose responses look most like an answer to
    its query or like its own answer (TF-IDF retrieval), excluding equivalent answers."""
    # One representative row per distinct response text keeps the search small.
    _, first = np.unique(eq.rid[train_idx], return_index=True)
    reps = train_idx[np.sort(first)]
    xr_reps_t = xr[reps].T.tocsc()
    out: list[np.ndarray] = []
    for start in range(0, len(train_idx), 512):
        chunk = train_idx[start:start + 512]
        sims = (xq[chunk] @ xr_reps_t).toarray() + (xr[chunk] @ xr_reps_t).toarray()
        bad = eq.same(chunk[:, None], reps[None, :])
        sims[bad] = -np.inf
        kk = min(k, sims.shape[1])
        top = np.argpartition(-sims, kth=kk - 1, axis=1)[:, :kk] if kk > 0 else np.zeros((len(chunk), 0), int)
        for row, cols in zip(sims, top):
            cols = cols[np.isfinite(row[cols])]
            out.append(reps[cols])
    return out


def _bag(x, rows: np.ndarray):
    import torch

    sub = x[rows]
    return (torch.from_numpy(sub.indices.astype(np.int64)), torch.from_numpy(sub.indptr[:-1].astype(np.int64)),
            torch.from_numpy(sub.data.astype(np.float32)))


def train_matcher(
    pairs: str | Path | Iterable[Any],
    out_dir: str | Path,
    *,
    dim: int = 64,
    n_features: int = 2**16,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    hard_k: int = 8,
    test_frac: float = 0.1,
    calib_frac: float = 0.1,
    seed: int = 0,
    threads: int = 2,
    time_budget_s: float = 45.0,
) -> MatcherReport:
    """Train, calibrate and evaluate the shop's matcher; save it to `out_dir`.

    Stops early when `time_budget_s` is spent (the report says how many epochs ran)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    rows = load_matcher_pairs(pairs)
    split = np.array([_split(r["session"], test_frac, calib_frac) for r in rows])
    train_idx = np.flatnonzero(split == "train")
    if len(train_idx) < 2 * 8:
        raise DataError(f"only {len(train_idx)} training pairs after the held-out split; the matcher needs at least 16 "
                        "(give more pairs or lower --test-frac)")
    eq = _Equivalence(rows)
    feats = HashedFeatures(n_features)
    xq = feats([r["query"] for r in rows])
    xr = feats([r["response"] for r in rows])
    hard_of = dict(zip(train_idx.tolist(), _hard_negatives(xq, xr, train_idx, eq, hard_k)))

    torch.manual_seed(seed)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    # Both towers start as the same random projection, so cos(Wq x, Wr y) ≈ cos(x, y)
    # (Johnson–Lindenstrauss): training begins from lexical matching, not from noise.
    init = torch.randn(n_features, dim) / dim**0.5
    # Sparse gradients: a batch touches a few thousand of the 65k hashed rows.
    emb_q = torch.nn.EmbeddingBag(n_features, dim, mode="sum", sparse=True, _weight=init.clone())
    emb_r = torch.nn.EmbeddingBag(n_features, dim, mode="sum", sparse=True, _weight=init.clone())
    log_scale = torch.nn.Parameter(torch.tensor(np.log(10.0), dtype=torch.float32))
    w_lex = torch.nn.Parameter(torch.tensor(5.0))
    opt_sparse = torch.optim.SparseAdam([*emb_q.parameters(), *emb_r.parameters()], lr=lr)
    opt = torch.optim.Adam([log_scale, w_lex], lr=lr)

    epoch_losses: list[float] = []
    steps = 0
    try:
        for _epoch in range(epochs):
            order = rng.permutation(train_idx)
            losses = []
            for start in range(0, len(order) - 1, batch_size):
                b = order[start:start + batch_size]
                if len(b) < 2:
                    continue
                h = np.array([rng.choice(hard_of[i]) if len(hard_of[i]) else rng.choice(train_idx) for i in b])
                cols = np.concatenate([b, h])
                iq, oq, wq = _bag(xq, b)
                eq_ = torch.nn.functional.normalize(emb_q(iq, oq, per_sample_weights=wq), dim=1)
                ib, ob, wb = _bag(xr, cols)
                er_ = torch.nn.functional.normalize(emb_r(ib, ob, per_sample_weights=wb), dim=1)
                lex = torch.from_numpy((xq[b] @ xr[cols].T).toarray().astype(np.float32))
                logits = log_scale.exp() * (eq_ @ er_.T) + w_lex * lex
                mask = eq.same(b[:, None], cols[None, :])
                mask[np.arange(len(b)), np.arange(len(b))] = False  # the true reply stays
                logits = logits.masked_fill(torch.from_numpy(mask), float("-inf"))
                loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(b)))
                opt.zero_grad()
                opt_sparse.zero_grad()
                loss.backward()
                opt.step()
                opt_sparse.step()
                losses.append(float(loss.detach()))
                steps += 1
            epoch_losses.append(float(np.mean(losses)) if losses else float("nan"))
            if time.perf_counter() - t0 > time_budget_s:
                break
    finally:
        torch.set_num_threads(prev_threads)

    config = {
        "name": "trained",
        "n_features": n_features,
        "dim": dim,
        "scale": float(log_scale.detach().exp()),
        "w_lex": float(w_lex.detach()),
        "platt": {"a": 1.0, "b": 0.0},
        "languages": sorted({detect_lang(r["query"], r["response"]) for r in rows[:500]}),
    }
    matcher = TrainedMatcher(w_query=emb_q.weight.detach().numpy(), w_reply=emb_r.weight.detach().numpy(), config=config)

    # Platt scaling on held-out groups; balanced classes so that P = 0.5 sits on the
    # boundary between "answers it" and "does not", whatever the 1:9 group make-up.
    calib_idx = np.flatnonzero(split == "calib")
    calib_note = "calib split"
    if len(calib_idx) < 10:
        calib_idx, calib_note = train_idx[:300], "train rows (calib split too small)"
    calib_groups = sample_groups(rows, eq, calib_idx, seed=seed + 1)
    logit_fn = _LogitScorer(matcher)
    cl = group_scores(logit_fn, rows, calib_groups)
    y = np.zeros_like(cl)
    y[:, 0] = 1
    lr_model = LogisticRegression(C=1e4, class_weight="balanced").fit(cl.reshape(-1, 1), y.reshape(-1))
    config["platt"] = {"a": float(lr_model.coef_[0, 0]), "b": float(lr_model.intercept_[0])}

    test_groups = sample_groups(rows, eq, np.flatnonzero(split == "test"), seed=seed + 2)
    probs = group_scores(matcher, rows, test_groups)
    train_texts = [rows[i]["query"] for i in train_idx] + [rows[i]["response"] for i in train_idx]
    tfidf = group_scores(TfidfMatcher(corpus=train_texts), rows, test_groups)
    seconds = time.perf_counter() - t0
    config["metrics"] = {"r10_at_1": recall_at_1(probs), "baseline_tfidf_r10_at_1": recall_at_1(tfidf), "test_groups": len(test_groups)}
    out = matcher.save(out_dir)
    report = MatcherReport(
        r10_at_1=recall_at_1(probs),
        baseline_tfidf_r10_at_1=recall_at_1(tfidf),
        n_train=int(len(train_idx)),
        n_calib=int(len(calib_groups)),
        n_test_groups=len(test_groups),
        epochs=len(epoch_losses),
        steps=steps,
        loss_first_epoch=epoch_losses[0] if epoch_losses else float("nan"),
        loss_last_epoch=epoch_losses[-1] if epoch_losses else float("nan"),
        train_seconds=round(seconds, 2),
        platt=config["platt"],
        mean_prob_true=float(probs[:, 0].mean()) if len(probs) else float("nan"),
        mean_prob_false=float(probs[:, 1:].mean()) if len(probs) else float("nan"),
        out_dir=str(out),
        extra={"calibrated_on": calib_note, "pairs": len(rows)},
    )
    write_json_atomic(out / "report.json", report.to_json())
    return report


class _LogitScorer(Scorer):
    """The matcher's raw logit (before Platt scaling), for fitting the scaling."""

    name = "trained-logit"

    def __init__(self, matcher: TrainedMatcher):
        self.matcher = matcher

    def score(self, a, b):
        return self.matcher.logits(list(a), list(b))
