"""Judging the end model (paper §III, eq. 1, Table VI, Fig. 3).

    similarity  Sim(end reply, cloud reply)   SIMILARITY: auto | minilm | char-ngram | char-ngram-en | <st dir>
    matching    Match(query, reply)           MATCHING:   trained | tfidf | <matcher or cross-encoder dir>
    final       eq. 1 with the Θ rule         PaperRule(alpha=0.8, theta=0.2).final(sim, match, cloud_match)
                                              (final_score: the same, vectorised, α and Θ as arguments)
    decision    apart from the number         should_escalate(final, threshold)
    truth       the synthetic shop's facts    fact_accuracy(replies, facts)
    grounding   a reply's facts vs evidence   GroundingChecker().check(reply, evidence) -> .supported .unsupported .score
                                              CHECKS: grounding, novelty (reply checks; `endcloud eval --check grounding`)
    novelty     text in neither evidence      novel_runs(reply, sources, glue); Glue.learn((context, reply) pairs)
                nor trained phrasing          (`endcloud.scoring.novelty`)
    online      the server's fast path        Evaluator(...).score_turns(...), score_turns(...)
    reports     `endcloud eval`               run_eval(inputs, models, teacher, out_dir=...); teacher=None on chat logs:
                                              the agents' replies are the reference (+ textmetrics: BLEU-4, ROUGE-L,
                                              distinct-1/2, top-reply share, degenerate replies)
    selection   R10@k on ECD files            ecd_recall(scorer, path) (`endcloud matcher eval`)

Importing this package loads neither torch nor any model; models load on first use.
"""

from endcloud.scoring.base import Scorer
from endcloud.scoring.evaluator import Evaluator, default_evaluator, score_turns
from endcloud.scoring.facts import fact_accuracy, fact_correct
from endcloud.scoring.final import PaperRule, final_score, should_escalate
from endcloud.scoring.grounding import CHECKS, Grounding, GroundingChecker, GroundingScorer, load_check
from endcloud.scoring.inputs import EvalInput, load_inputs
from endcloud.scoring.matcher_train import MatcherReport, ecd_recall, ecd_recall_at_1, recall_at_1, recall_at_k, train_matcher
from endcloud.scoring.matching import MATCHING, CrossEncoderMatcher, TfidfMatcher, TrainedMatcher, load_matching
from endcloud.scoring.probes import PAPER_PROBES_EN, PAPER_PROBES_ZH, paper_probes
from endcloud.scoring.report import EvalReport, read_human_ratings, run_eval
from endcloud.scoring.similarity import (SIMILARITY, AutoSimilarity, CharNgramSimilarity, SentenceTransformerSimilarity,
                                         load_similarity, minilm_dir)

__all__ = [
    "Scorer", "SIMILARITY", "MATCHING", "AutoSimilarity", "CharNgramSimilarity", "SentenceTransformerSimilarity",
    "TfidfMatcher", "TrainedMatcher", "CrossEncoderMatcher", "load_similarity", "load_matching", "minilm_dir",
    "PaperRule", "final_score", "should_escalate", "fact_accuracy", "fact_correct", "train_matcher", "MatcherReport",
    "recall_at_1", "recall_at_k", "ecd_recall", "ecd_recall_at_1", "Evaluator", "default_evaluator", "score_turns", "EvalInput", "load_inputs",
    "PAPER_PROBES_EN", "PAPER_PROBES_ZH", "paper_probes", "EvalReport", "read_human_ratings", "run_eval",
    "CHECKS", "Grounding", "GroundingChecker", "GroundingScorer", "load_check",
]
