"""The online fast path: score served turns with the paper's eq. 1.

The server and the evolution loop call `Evaluator.score_turns` (or the module-level
`score_turns`) once per customer turn; with the offline defaults (char n-grams for
Chinese, the trained matcher) that costs a few ms on CPU. English similarity uses
MiniLM, loaded once per process.

    ev = Evaluator(workspace="endcloud-work")          # trained matcher if present, else TF-IDF
    [s] = ev.score_turns(["能换快递吗"], ["默认中通哦"], ["亲，默认发中通快递"])
    if should_escalate(s.final, threshold=0.5): ...    # the decision lives apart
"""

from __future__ import annotations

import functools
from typing import Iterable, Sequence

import numpy as np

from endcloud.paper import PAPER
from endcloud.records import Score
from endcloud.scoring.base import Scorer
from endcloud.scoring.final import PaperRule
from endcloud.scoring.matching import load_matching
from endcloud.scoring.similarity import AutoSimilarity, load_similarity


class Evaluator:
    """Similarity + matching + eq. 1, with the models loaded once."""

    def __init__(self, *, similarity: str | Scorer = "auto", matching: str | Scorer = "auto", workspace=None,
                 corpus: Iterable[str] | None = None, alpha: float = PAPER.alpha, theta: float = PAPER.theta):
        corpus = list(corpus) if corpus is not None else None
        self.similarity = load_similarity(similarity, corpus=corpus)
        self.matching = load_matching(matching, corpus=corpus, workspace=workspace)
        self.rule = PaperRule(alpha=alpha, theta=theta)

    def components(self, queries: Sequence[str], end_replies: Sequence[str], cloud_replies: Sequence[str],
                   lang=None) -> dict[str, np.ndarray]:
        """The arrays sim, match, cloud_match, final (one entry per turn).

        `lang`: None (guess per turn), one code, or one code per turn."""
        if isinstance(self.similarity, AutoSimilarity):
            sim = self.similarity.score(end_replies, cloud_replies, lang=lang)
        else:
            sim = self.similarity.score(end_replies, cloud_replies)
        # One matching call for both columns: half the feature work for batched scorers.
        n = len(queries)
        both = self.matching.score(list(queries) * 2, list(end_replies) + list(cloud_replies))
        match, cloud_match = both[:n], both[n:]
        return {"sim": sim, "match": match, "cloud_match": cloud_match,
                "final": self.rule.final(sim, match, cloud_match)}

    def similarity_names(self, end_replies: Sequence[str], cloud_replies: Sequence[str], lang=None) -> list[str]:
        if isinstance(self.similarity, AutoSimilarity):
            return self.similarity.names_for(end_replies, cloud_replies, lang=lang)
        return [self.similarity.name] * len(end_replies)

    def score_turns(self, queries: Sequence[str], end_replies: Sequence[str], cloud_replies: Sequence[str],
                    lang: str | None = None) -> list[Score]:
        """One `records.Score` per turn (sim, match, cloud_match, final, model names)."""
        c = self.components(queries, end_replies, cloud_replies, lang)
        names = self.similarity_names(end_replies, cloud_replies, lang)
        return [Score(sim=float(c["sim"][i]), match=float(c["match"][i]), cloud_match=float(c["cloud_match"][i]),
                      final=float(c["final"][i]), similarity_model=names[i], matching_model=self.matching.name)
                for i in range(len(queries))]


def workspace_corpus(workspace, limit: int = 20_000) -> list[str] | None:
    """Queries and responses of the workspace's pairs (for the char n-gram idf), or None."""
    from endcloud.config import Workspace
    from endcloud.fileio import read_jsonl

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    if not ws.pairs.exists():
        return None
    texts: list[str] = []
    for n, row in enumerate(read_jsonl(ws.pairs)):
        if n >= limit:
            break
        texts += [str(row.get("query", "")), str(row.get("response", ""))]
    return texts


@functools.lru_cache(maxsize=4)
def default_evaluator(workspace: str | None = None, alpha: float = PAPER.alpha, theta: float = PAPER.theta) -> Evaluator:
    """The offline-default Evaluator for a workspace, built once per process (per α, Θ):
    auto similarity (idf from the workspace's pairs when present) and the workspace's
    trained matcher (TF-IDF when none has been trained)."""
    corpus = workspace_corpus(workspace) if workspace is not None else None
    return Evaluator(workspace=workspace, corpus=corpus, alpha=alpha, theta=theta)


def score_turns(queries: Sequence[str], end_replies: Sequence[str], cloud_replies: Sequence[str], lang: str | None = None,
                *, workspace: str | None = None) -> list[Score]:
    """`default_evaluator(workspace).score_turns(...)`: the one call the server needs."""
    ws = None if workspace is None else str(workspace)
    return default_evaluator(ws).score_turns(queries, end_replies, cloud_replies, lang)
