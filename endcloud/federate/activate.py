"""A federated adapter reaches a shop's customers only through that shop's own gate.

    global adapter (+ the shop's personal part) ─► measure on the shop's frozen held-out set ─┐
    the shop's active adapter (or the bare base)  ─► measure on the same set ─────────────────┤
                                                                                              ▼
                          evolve.gate.decide(candidate, champion) ─► publish vN in the shop's registry
                                                                     ─► activate (a running server hot-swaps
                                                                        it) │ else mark it rejected

The decision is the online loop's own (`endcloud.evolve.gate`: a veto on any loss, promotion
only on evidence), so a federation can never lower one shop's quality to raise the average:
a global adapter that is better for one shop and worse for another is activated at the first
and refused at the second. Every version keeps the gate's reasons in its manifest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from endcloud.evolve.gate import GateResult, GateSettings, Metrics, decide, measure

Measure = Callable[[Path | None], Metrics]


@dataclass
class Activation:
    version: str
    promoted: bool
    gate: dict[str, Any]
    active: str | None  # the shop's active version afterwards


def measure_with_model(base_dir: str | os.PathLike[str], heldout: list[dict[str, Any]], *, evaluator: Any = None,
                       ground: Any = None, settings: GateSettings | None = None) -> Measure:
    """adapter folder (None: the bare base) -> the gate's Metrics of that end model on `heldout`."""
    s = settings or GateSettings()

    def run(adapter_dir: Path | None) -> Metrics:
        from endcloud.runtime.model import EndModel

        ev = evaluator
        if ev is None:
            from endcloud.scoring import default_evaluator

            ev = default_evaluator()
        model = EndModel.load(base_dir, adapter_dir)
        return measure(model, heldout, ev, max_new_tokens=s.max_new_tokens, ground=ground)

    return run


def gate_and_activate(registry: Any, name: str, candidate_dir: str | os.PathLike[str], measure_fn: Measure, *,
                      settings: GateSettings | None = None, manifest: dict[str, Any] | None = None) -> Activation:
    """Measure the candidate and the shop's champion, decide, publish, then activate or reject."""
    champion_v = registry.active_version(name)
    champion_dir = registry.active(name)
    cand = measure_fn(Path(candidate_dir))
    champ = measure_fn(champion_dir)
    result: GateResult = decide(cand, champ, settings)
    version = registry.publish(name, candidate_dir, parent=champion_v, manifest={
        **(manifest or {}), "gate": result.to_json(), "metrics": result.candidate.to_json()})
    if result.promote:
        registry.activate(name, version)
    else:
        registry.mark(name, version, "rejected")
    return Activation(version=version, promoted=result.promote, gate=result.to_json(),
                      active=registry.active_version(name))


__all__ = ["Activation", "Measure", "gate_and_activate", "measure_with_model"]
