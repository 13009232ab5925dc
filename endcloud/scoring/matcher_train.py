"""Training the shop's own matcher (the RocketQA role, trained on e-commerce data).

    pairs.jsonl or a raw chat log ──split by session──► train │ calib │ test
        train: dual encoder over hashed char n-grams, softmax over
               in-batch negatives + retrieved hard negatives;
               an exemplar memory of the training pairs
               [with lm_steps: a small causal LM pretrained on the same pairs,
               `endcloud.scoring.replylm`]
        calib: one logistic regression (balanced classes) that weighs and calibrates the
               three signals: the dual encoder's logit, the memory's vote (replies like
               this one followed queries like this one), the lexical cosine [and the LM's
               three: log p(reply | query), log p(reply), the reply's tokens]
        test : R10@1 (and @2, @5) on groups of 1 true + 9 sampled responses (the ECD
               protocol), against TF-IDF and chance on the very same groups

Input is judged by content (`endcloud.corpus.file_kind`): Pair JSONL is read as it is; a
raw chat log (ECD, JDDC, CSV, messages JSONL, with or without an extension) goes through
`endcloud corpus prepare`'s own pipeline (`endcloud.corpus.log_pairs`), so an ECD file gives
the matcher the very pairs `corpus prepare` writes for it (segmentation spaces removed,
cleaned, redacted). Rows are put in a canonical order (source, session, turn), so the same
pairs give the same matcher in whatever order the files list them. ECD *test* files (10
candidates per context) are read by `read_ecd` with the same normalisation and scored by
`ecd_recall` (`endcloud matcher eval`).

Why the memory: on a few thousand real pairs (the JDDC sample) the dual encoder fits its
training pairs and generalises little (R10@1 0.28 against TF-IDF's 0.28); the vote of
nearby training pairs carries what it cannot learn from so few, and the three together
reach 0.32. Why the language model: it reads a reply as text that follows the query, which
no bag of n-grams does; with it the matcher reaches 0.39 (three seeds; docs/benchmarks.md,
"Real chat logs"). It costs minutes of training and torch at inference, so it is opt-in here
(`lm_steps`) and on by default in `endcloud matcher train` (`--lm-steps 1000`).

Negatives never include an *equivalent* answer: the same text, or (when the source knows
them) the same intent with the same facts — the synthetic shop answers one question with
several paraphrases, and calling a paraphrase "wrong" would teach noise.

Run: `endcloud matcher train --pairs W/corpus/pairs.jsonl -o W/scoring/matcher`; about 5
minutes on 2 CPU cores for a few thousand pairs (`--lm-steps 0`: well under a minute).
"""

from __future__ import annotations

import contextlib
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from endcloud.errors import ConfigError, DataError
from endcloud.fileio import read_jsonl, write_json_atomic
from endcloud.scoring.base import Scorer
from endcloud.scoring.matching import HashedFeatures, MemoryFeatures, TfidfMatcher, TrainedMatcher
from endcloud.scoring.replylm import LM_DIR, SIGNALS as LM_SIGNALS, ReplyLM, train_reply_lm
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
    recall: dict[str, dict[str, float]] = field(default_factory=dict)
    """R10@1/2/5 of "trained", "tfidf" and "chance" on the held-out groups."""
    epochs_requested: int = 0
    stopped_early: bool = False
    """True only when an explicit `time_budget_s` cut the epochs short."""

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


def read_ecd(path: str | Path, *, redact: bool = True) -> list[dict[str, Any]]:
    """ECD lines (`label \\t utt_1 … utt_k \\t response`) -> groups of candidates.

    Consecutive lines with the same context are one group; returns
    [{"query", "context", "candidates": [...], "labels": [...]}], every text normalised as
    `corpus prepare` normalises ECD (segmentation spaces removed, cleaned, redacted with
    one vault per group), so a matcher trained on prepared pairs sees test text like its own."""
    from endcloud.corpus.logs import normalise_texts

    raw: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.rstrip("\r\n").split("\t")
            if not line.strip():
                continue
            if len(fields) < 3 or fields[0].strip() not in ("0", "1"):
                raise DataError("expected `label<TAB>utterance…<TAB>response` with label 0 or 1", path=str(path), line=lineno)
            context = fields[1:-1]
            if not raw or raw[-1]["context"] != context:
                raw.append({"context": context, "candidates": [], "labels": []})
            raw[-1]["candidates"].append(fields[-1])
            raw[-1]["labels"].append(int(fields[0]))
    groups = []
    for g in raw:
        k = len(g["context"])
        texts = normalise_texts(g["context"] + g["candidates"], segmented=True, redact=redact)
        context = texts[:k]
        groups.append({"query": context[-1], "context": context, "candidates": texts[k:], "labels": g["labels"]})
    return groups


def _turn_key(d: dict[str, Any]) -> tuple[str, str, int] | None:
    """(source, session, turn) of a prepared pair from its id `source:session:turn`, or None."""
    pid, source, session = d.get("id"), d.get("source"), d.get("session")
    if not (isinstance(pid, str) and isinstance(source, str) and isinstance(session, str)):
        return None
    prefix = f"{source}:{session}:"
    tail = pid[len(prefix):] if pid.startswith(prefix) else ""
    return (source, session, int(tail)) if tail.isdigit() else None


def load_matcher_pairs(source: str | Path | Iterable[Any]) -> list[dict[str, Any]]:
    """Pairs JSONL (the corpus contract), a raw chat log in any format `corpus prepare`
    reads (through its pipeline: `endcloud.corpus.log_pairs`), or an iterable of `Pair`s /
    dicts with query, response and optionally session, intent, facts.

    Prepared pairs (ids `source:session:turn`) come back in that canonical order."""
    name = None
    if isinstance(source, (str, Path)):
        from endcloud.corpus.logs import file_kind, log_pairs

        path = Path(source)
        name = str(path)
        if not path.exists():
            raise DataError("pairs file not found; run `endcloud corpus prepare` first or pass --pairs", path=str(path))
        kind = file_kind(path)
        if kind == "chats":
            items: Iterable[Any] = log_pairs([path])
        elif kind == "pairs":
            items = read_jsonl(path)
        else:
            raise DataError("neither pairs JSONL (query, response) nor a chat log (ECD, JDDC, CSV, messages JSONL)", path=name)
    else:
        items = source
    dicts = []
    for n, item in enumerate(items):
        d = item.to_json() if hasattr(item, "to_json") else item
        if "query" not in d or "response" not in d:
            raise DataError(f"pair #{n + 1} lacks 'query' or 'response' (keys: {sorted(d)})", path=name)
        dicts.append(d)
    keys = [_turn_key(d) for d in dicts]
    if dicts and all(k is not None for k in keys):
        order = sorted(range(len(dicts)), key=lambda i: keys[i])  # type: ignore[arg-type,return-value]
        dicts = [dicts[i] for i in order]
    return [_row(d, f"row-{n}") for n, d in enumerate(dicts)]


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


def recall_at_k(scores: np.ndarray, k: int = 1) -> float:
    """Mean over groups (rows of `scores`, true candidate in column 0) of 1 when the true
    candidate is among the k highest; ties share the credit (the chance that a random order
    of the tied puts it in the top k), so a constant scorer gets k/n."""
    if len(scores) == 0:
        return float("nan")
    return float(hits_at_k(scores, k).mean())


def hits_at_k(scores: np.ndarray, k: int = 1) -> np.ndarray:
    """Per group, the credit `recall_at_k` averages (1, 0, or a tie's share)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return np.zeros(0)
    true = scores[:, :1]
    above = (scores[:, 1:] > true + 1e-9).sum(axis=1)
    tied = np.isclose(scores, true, rtol=0, atol=1e-9).sum(axis=1)  # the true one included
    return np.clip((k - above) / tied, 0.0, 1.0)


def gain_interval(a: np.ndarray, b: np.ndarray, *, k: int = 1, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % paired-bootstrap interval of R@k(a) − R@k(b) over the same groups: whether a
    margin is more than the luck of which groups were held out."""
    from endcloud.scoring.stats import paired_interval

    return paired_interval(hits_at_k(a, k) - hits_at_k(b, k), n_boot=n_boot, seed=seed)


def recall_at_1(scores: np.ndarray) -> float:
    """`recall_at_k(scores, 1)`: R{n}@1, ties sharing the credit (a constant scorer gets 1/n)."""
    return recall_at_k(scores, 1)


def recalls(scores: np.ndarray, ks: Sequence[int] = (1, 2, 5)) -> dict[str, float]:
    """{"r_at_1": …, "r_at_2": …, "r_at_5": …} of a (groups × candidates) score array."""
    return {f"r_at_{k}": recall_at_k(scores, k) for k in ks}


def group_scores(scorer: Scorer, rows: Sequence[dict[str, Any]], groups: Sequence[Sequence[int]]) -> np.ndarray:
    """scorer(query of the group's true row, each candidate's response) as a (groups × n) array."""
    if not groups:
        return np.zeros((0, 0))
    q = [rows[g[0]]["query"] for g in groups for _ in g]
    r = [rows[j]["response"] for g in groups for j in g]
    return np.asarray(scorer.score(q, r)).reshape(len(groups), len(groups[0]))


def ecd_recall(scorer: Scorer, path: str | Path | list[dict[str, Any]], ks: Sequence[int] = (1, 2, 5)) -> dict[str, float]:
    """R{n}@k of a scorer on an ECD-format file (groups = consecutive lines sharing a
    context, one true reply each; `read_ecd`'s groups may be passed instead of a path), with
    what chance gets (k/n) next to it."""
    groups = read_ecd(path) if isinstance(path, (str, Path)) else path
    groups = [g for g in groups if sum(g["labels"]) == 1 and len(g["candidates"]) > 1]
    credit: dict[int, list[float]] = {k: [] for k in ks}
    q, r, spans = [], [], []
    for g in groups:
        order = [g["labels"].index(1)] + [k for k, lab in enumerate(g["labels"]) if lab == 0]
        spans.append((len(q), len(order)))
        q += [g["query"]] * len(order)
        r += [g["candidates"][j] for j in order]
    s = np.asarray(scorer.score(q, r), dtype=np.float64) if q else np.zeros(0)
    for start, n in spans:
        for k in ks:
            credit[k].append(recall_at_k(s[start:start + n][None, :], k))
    sizes = sorted({len(g["candidates"]) for g in groups})
    n_cand = sizes[0] if len(sizes) == 1 else float("nan")
    out: dict[str, float] = {"groups": len(groups), "candidates": n_cand}
    for k in ks:
        out[f"r_at_{k}"] = float(np.mean(credit[k])) if credit[k] else float("nan")
        out[f"chance_r_at_{k}"] = min(1.0, k / n_cand) if sizes else float("nan")
    return out


def ecd_recall_at_1(scorer: Scorer, path: str | Path) -> dict[str, float]:
    """R{n}@1 of a scorer on an ECD-format file (`ecd_recall` with k = 1)."""
    return ecd_recall(scorer, path, ks=(1,))


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
    time_budget_s: float | None = None,
    memory_size: int = 50_000,
    lm_steps: int = 0,
) -> MatcherReport:
    """Train, calibrate and evaluate the shop's matcher; save it to `out_dir`.

    Runs `epochs` epochs: the budget is in epochs, so the same data gives the same matcher on
    a fast and on a busy machine. `time_budget_s` (None by default) is an explicit opt-in to
    stop early on time; the report then says how many epochs ran (and `stopped_early`).
    `memory_size`: most training pairs kept in the matcher's memory (a random sample beyond it).
    `lm_steps` > 0 also pretrains a small language model on the training pairs for that many
    steps (`endcloud.scoring.replylm`; minutes, not seconds) and weighs its three signals with
    the others; 0 keeps the matcher numpy-only."""
    if isinstance(lm_steps, bool) or not isinstance(lm_steps, int) or lm_steps < 0:
        raise ConfigError(f"lm_steps must be a whole number >= 0, got {lm_steps!r}; change --lm-steps")
    with _torch_threads(threads):  # the encoder's epochs and the language model alike
        return _train(pairs, out_dir, dim=dim, n_features=n_features, epochs=epochs, batch_size=batch_size, lr=lr,
                      hard_k=hard_k, test_frac=test_frac, calib_frac=calib_frac, seed=seed, time_budget_s=time_budget_s,
                      memory_size=memory_size, lm_steps=lm_steps)


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _train(pairs, out_dir, *, dim: int, n_features: int, epochs: int, batch_size: int, lr: float, hard_k: int,
           test_frac: float, calib_frac: float, seed: int, time_budget_s: float | None, memory_size: int,
           lm_steps: int) -> MatcherReport:
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
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            break

    config = {
        "name": "trained",
        "n_features": n_features,
        "dim": dim,
        "scale": float(log_scale.detach().exp()),
        "w_lex": float(w_lex.detach()),
        "platt": {"a": 1.0, "b": 0.0},
        "languages": sorted({detect_lang(r["query"], r["response"]) for r in rows[:500]}),
    }
    calib_idx = np.flatnonzero(split == "calib")
    calib_note = "calib split"
    if len(calib_idx) < 10:
        # a third of the train rows at most, so that the memory keeps the rest
        calib_idx, calib_note = train_idx[:min(300, max(1, len(train_idx) // 3))], "train rows (calib split too small)"
    # The memory holds training pairs, never the ones the weights are fitted on (a pair
    # voting for itself would teach the combination to trust the memory blindly).
    mem_idx = np.setdiff1d(train_idx, calib_idx)
    if len(mem_idx) > memory_size:
        mem_idx = np.sort(np.random.default_rng(seed).choice(mem_idx, size=memory_size, replace=False))
    langs = [detect_lang(rows[i]["query"], rows[i]["response"]) for i in mem_idx[:2000]]
    config["memory_lang"] = max(("zh", "en"), key=langs.count)
    config["memory_power"] = 2.0
    config["memory_size"] = int(len(mem_idx))
    mem_feats = MemoryFeatures(config["memory_lang"]).fit([t for i in mem_idx for t in (rows[i]["query"], rows[i]["response"])])
    memory = None
    if len(mem_idx):
        memory = (mem_feats([rows[i]["query"] for i in mem_idx]), mem_feats([rows[i]["response"] for i in mem_idx]))
    lm = None
    if lm_steps:
        # on the training rows the calibration is not fitted on (the memory's, before its
        # sampling): neither the weighing nor the held-out test sees a pair the model learned
        t_lm = time.perf_counter()
        lm_rows = [rows[i] for i in np.setdiff1d(train_idx, calib_idx)]
        pre = train_reply_lm([r["query"] for r in lm_rows], [r["response"] for r in lm_rows], Path(out_dir) / LM_DIR,
                             steps=lm_steps, seed=seed)
        lm = ReplyLM.load(Path(out_dir) / LM_DIR)
        config["lm"] = {"dir": LM_DIR, "steps": pre.steps, "params": pre.params, "eval_loss": round(pre.eval_loss, 4),
                        "seconds": round(time.perf_counter() - t_lm, 1)}
    matcher = TrainedMatcher(w_query=emb_q.weight.detach().numpy(), w_reply=emb_r.weight.detach().numpy(), config=config,
                             memory=memory, memory_features=mem_feats, lm=lm)

    # One logistic regression on held-out groups weighs the three signals and calibrates
    # the result; balanced classes so that P = 0.5 sits on the boundary between "answers
    # it" and "does not", whatever the 1:9 group make-up.
    calib_groups = sample_groups(rows, eq, calib_idx, seed=seed + 1)
    if calib_groups:
        sig = _group_signals(matcher, rows, calib_groups)
        y = np.zeros(sig.shape[:2])
        y[:, 0] = 1
        lr_model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(sig.reshape(-1, sig.shape[-1]),
                                                                                       y.reshape(-1))
        names = ("dual", "memory", "lex", *LM_SIGNALS)[:sig.shape[-1]]
        config["combine"] = {**{k: float(c) for k, c in zip(names, lr_model.coef_[0])}, "bias": float(lr_model.intercept_[0])}
    else:
        config["combine"] = {"dual": 1.0, "memory": 0.0, "lex": 0.0, "bias": 0.0}

    test_groups = sample_groups(rows, eq, np.flatnonzero(split == "test"), seed=seed + 2)
    probs = group_scores(matcher, rows, test_groups)
    train_texts = [rows[i]["query"] for i in train_idx] + [rows[i]["response"] for i in train_idx]
    tfidf = group_scores(TfidfMatcher(corpus=train_texts), rows, test_groups)
    chance = np.zeros_like(probs)
    seconds = time.perf_counter() - t0
    recall = {"trained": recalls(probs), "tfidf": recalls(tfidf), "chance": recalls(chance)}
    config["metrics"] = {"r10_at_1": recall_at_1(probs), "baseline_tfidf_r10_at_1": recall_at_1(tfidf),
                         "test_groups": len(test_groups), "recall": recall}
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
        extra={"calibrated_on": calib_note, "pairs": len(rows), "combine": config["combine"],
               "r10_at_1_gain_over_tfidf_ci95": gain_interval(probs, tfidf, seed=seed),
               **({"lm": config["lm"]} if "lm" in config else {})},
        recall=recall,
        epochs_requested=epochs,
        stopped_early=len(epoch_losses) < epochs,
    )
    write_json_atomic(out / "report.json", report.to_json())
    return report


def _group_signals(matcher: TrainedMatcher, rows: Sequence[dict[str, Any]], groups: Sequence[Sequence[int]]) -> np.ndarray:
    """matcher.signals for each group's query and candidates: (groups × n × signals)."""
    q = [rows[g[0]]["query"] for g in groups for _ in g]
    r = [rows[j]["response"] for g in groups for j in g]
    return matcher.signals(q, r).reshape(len(groups), len(groups[0]), -1)
