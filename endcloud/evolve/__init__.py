"""Online evolution (paper §III): feedback and low scores become pseudo-labels; the end
model is fine-tuned locally, gated on a frozen held-out set, hot-swapped or rolled back.

    triggers.py  which served turns are lessons (pure)
    checks.py    poisoning defences: PII, competitor, caps, contradicting the shop's knowledge;
                 order replies learned as templates ([ORDER_1]) (pure)
    gate.py      frozen held-out set, measuring, the promote decision
    loop.py      step() (pure), run_round() (heavy, any process), Evolver (joins them)
"""

from endcloud.evolve.checks import CheckSettings, check_label, leak_rate, vet_label, violations
from endcloud.evolve.gate import GateResult, GateSettings, Metrics, decide, frozen_heldout, measure
from endcloud.evolve.loop import EvolveSettings, Evolver, ProcessRunner, RoundOutcome, RoundSpec, StepReport, run_round, step
from endcloud.evolve.triggers import TriggerSettings, from_reply, from_review

__all__ = [
    "CheckSettings", "check_label", "leak_rate", "vet_label", "violations", "GateResult", "GateSettings", "Metrics", "decide",
    "frozen_heldout", "measure", "EvolveSettings", "Evolver", "ProcessRunner", "RoundOutcome", "RoundSpec",
    "StepReport", "run_round", "step", "TriggerSettings", "from_reply", "from_review",
]
