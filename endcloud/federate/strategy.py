"""The server's side of a round: which shops train, and how their adapters become one.

    configure_fit ─► sample shops (seeded) ─► FitIns(global tensors, {round, steps, lr, share})
    aggregate_fit ◄─ FitRes(tensors, examples) from the shops that answered in time
                      │  updates Δᵢ = wᵢ − w_global
                      ├─ screen: flag Δᵢ with ‖Δᵢ‖ > k·median‖Δ‖ or cos(Δᵢ, median Δ) < 0
                      └─ AGGREGATORS[name](updates, examples, flagged) ─► w_global + Δ

AGGREGATORS (all on the updates, so a shop's absolute weights never matter):

    fedavg    mean weighted by each shop's examples (McMahan et al.); no defence
    median    coordinate-wise median (Flower's `aggregate_median`)
    trimmed   coordinate-wise mean after dropping the k highest and k lowest values,
              k = max(1, ⌊β·n⌋) for n ≥ 3 (Flower's `aggregate_trimmed_avg`)
    screened  fedavg over the shops `screen` did not flag: a shop that sends a scaled-up or
              sign-flipped update is left out of the round, and the report names it

Shops that fail, drop their connection mid-round or miss the round's timeout are Flower's
`failures`: the round aggregates the rest (`accept_failures`), or keeps the global unchanged
when fewer than `min_fit_clients` answered. Every round's report (who answered, who failed,
who was flagged, update norms, bytes) is kept in `rounds`.

With DP on, the strategy is wrapped in Flower's `DifferentialPrivacyClientSideFixedClipping`
(shops clip, the server adds the noise); its noise is calibrated for a uniform mean, so DP
requires `fedavg` and weights every shop alike (a shop with more examples would otherwise
move the mean by more than C/n).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from endcloud.errors import ConfigError
from endcloud.federate import _flower as fl
from endcloud.federate.privacy import DPSettings
from endcloud.federate.weights import add, flat, norm, payload_bytes, subtract
from endcloud.registry import Registry

Updates = list[list[np.ndarray]]

AGGREGATORS: Registry = Registry("aggregator")


@dataclass
class Screen:
    """Which updates look poisoned, and why (computed every round, whatever the aggregator)."""

    norms: list[float]
    cosines: list[float]
    flagged: dict[int, str] = field(default_factory=dict)


def screen(updates: Updates, *, norm_factor: float = 3.0) -> Screen:
    """Flag updates far larger than the median norm or pointing against the median update.
    With fewer than 3 updates there is no majority to compare with: nothing is flagged."""
    norms = [norm(u) for u in updates]
    if len(updates) < 3:
        return Screen(norms=norms, cosines=[1.0] * len(updates))
    median_update = flat([np.median(np.stack(layer), axis=0) for layer in zip(*updates)])
    med_norm = float(np.median(norms))
    cosines, flagged = [], {}
    for i, u in enumerate(updates):
        v = flat(u)
        denom = float(np.linalg.norm(v) * np.linalg.norm(median_update))
        cos = float(v @ median_update / denom) if denom > 0 else 1.0
        cosines.append(cos)
        if med_norm > 0 and norms[i] > norm_factor * med_norm:
            flagged[i] = f"update norm {norms[i]:.3g} > {norm_factor} × median {med_norm:.3g}"
        elif cos < 0:
            flagged[i] = f"update points against the others (cosine {cos:.2f} to the median update)"
    return Screen(norms=norms, cosines=cosines, flagged=flagged)


@AGGREGATORS.register("fedavg")
def fedavg(updates: Updates, examples: Sequence[int], flags: Screen, **_: Any) -> list[np.ndarray]:
    return fl.aggregate(list(zip(updates, examples)))


@AGGREGATORS.register("median")
def median(updates: Updates, examples: Sequence[int], flags: Screen, **_: Any) -> list[np.ndarray]:
    return [a.astype(np.float32) for a in fl.aggregate_median(list(zip(updates, examples)))]


@AGGREGATORS.register("trimmed")
def trimmed(updates: Updates, examples: Sequence[int], flags: Screen, *, beta: float = 0.2, **_: Any) -> list[np.ndarray]:
    n = len(updates)
    if n < 3:
        return fedavg(updates, examples, flags)
    k = max(1, int(beta * n))
    # Flower cuts int(p·n) from each end: aim between k and k+1 so float rounding cannot cut k−1
    return [a.astype(np.float32) for a in fl.aggregate_trimmed_avg(list(zip(updates, examples)), (k + 0.5) / n)]


@AGGREGATORS.register("screened")
def screened(updates: Updates, examples: Sequence[int], flags: Screen, **_: Any) -> list[np.ndarray]:
    keep = [i for i in range(len(updates)) if i not in flags.flagged]
    return fedavg([updates[i] for i in keep], [examples[i] for i in keep], flags)


@dataclass
class RoundReport:
    round: int
    sampled: int
    answered: list[str]
    failed: int
    examples: dict[str, int]
    flagged: dict[str, str]
    update_norms: dict[str, float]
    bytes_down: int  # global tensors sent to each sampled shop (numbers only)
    bytes_up: dict[str, int]  # tensors each shop sent back
    loss: dict[str, float] = field(default_factory=dict)
    applied: bool = True
    eval_loss: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class AdapterStrategy(fl.FedAvg):
    """Flower's FedAvg with seeded sampling, update screening and a choice of aggregator."""

    def __init__(self, *, initial: list[np.ndarray], aggregator: str = "fedavg", fraction_fit: float = 1.0,
                 min_fit_clients: int = 1, min_available_clients: int = 1, fit_config: dict[str, Any] | None = None,
                 seed: int = 0, trim_beta: float = 0.2, norm_factor: float = 3.0, uniform: bool = False,
                 final_round: int | None = None, gate_config: dict[str, Any] | None = None,
                 connect_timeout_s: float = 300.0, on_global: Callable[[int, list[np.ndarray]], None] | None = None):
        self.aggregate_fn: Callable[..., list[np.ndarray]] = AGGREGATORS.get(aggregator)
        if not 0 < fraction_fit <= 1:
            raise ConfigError(f"fraction of shops per round must be in (0, 1], got {fraction_fit!r}; change --fraction")
        super().__init__(fraction_fit=fraction_fit, fraction_evaluate=1.0, min_fit_clients=min_fit_clients,
                         min_evaluate_clients=1, min_available_clients=min_available_clients,
                         initial_parameters=fl.ndarrays_to_parameters(initial), accept_failures=True)
        self.aggregator, self.fit_config, self.seed = aggregator, dict(fit_config or {}), seed
        self.trim_beta, self.norm_factor, self.uniform = trim_beta, norm_factor, uniform
        self.final_round, self.gate_config = final_round, dict(gate_config or {})
        self.connect_timeout_s, self.on_global = connect_timeout_s, on_global
        self.current: list[np.ndarray] = [a.copy() for a in initial]
        self.rounds: list[RoundReport] = []
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return f"AdapterStrategy(aggregator={self.aggregator!r}, fraction_fit={self.fraction_fit})"

    # ---- sampling ---------------------------------------------------------------------------
    def _sample(self, client_manager: Any, server_round: int) -> list[Any]:
        if server_round == 1:  # the first round waits for the federation to gather
            client_manager.wait_for(self.min_available_clients, timeout=int(self.connect_timeout_s))
        available = client_manager.all()
        n_avail = len(available)
        want, _ = self.num_fit_clients(n_avail)
        # `min_available_clients` gates the start only (the server waits for it); a shop that
        # left since must not stop the rounds, so here only `min_fit_clients` counts
        if n_avail < self.min_fit_clients:
            return []
        ids = sorted(available)  # sample from a stable order: the seed alone decides who trains
        return [available[c] for c in self._rng.sample(ids, min(want, len(ids)))]

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[tuple[Any, Any]]:
        self.current = fl.parameters_to_ndarrays(parameters)
        clients = self._sample(client_manager, server_round)
        config = {**self.fit_config, "round": server_round, "seed": self.seed * 1000 + server_round}
        return [(c, fl.FitIns(parameters, dict(config))) for c in clients]

    def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> list[tuple[Any, Any]]:
        config: dict[str, Any] = {**self.fit_config, "round": server_round}  # the recipe and sharing, too
        if self.final_round is not None and server_round == self.final_round:
            config.update({"gate": True, **self.gate_config})
        return [(c, fl.EvaluateIns(parameters, dict(config))) for c in client_manager.all().values()]

    # ---- aggregation ------------------------------------------------------------------------
    def aggregate_fit(self, server_round: int, results: list[tuple[Any, Any]],
                      failures: list[Any]) -> tuple[Any, dict[str, Any]]:
        names = [str(res.metrics.get("node") or proxy.cid[:8]) for proxy, res in results]
        arrays = [fl.parameters_to_ndarrays(res.parameters) for _, res in results]
        examples = [1 if self.uniform else int(res.num_examples) for _, res in results]
        report = RoundReport(
            round=server_round, sampled=len(results) + len(failures), answered=names, failed=len(failures),
            examples={n: int(res.num_examples) for n, (_, res) in zip(names, results)}, flagged={}, update_norms={},
            bytes_down=payload_bytes(self.current), bytes_up={n: payload_bytes(a) for n, a in zip(names, arrays)},
            loss={n: float(res.metrics["loss"]) for n, (_, res) in zip(names, results) if "loss" in res.metrics})
        self.rounds.append(report)
        if not results or len(results) < self.min_fit_clients:
            report.applied = False
            return None, {"answered": len(results), "failed": len(failures)}
        updates = [subtract(a, self.current) for a in arrays]
        flags = screen(updates, norm_factor=self.norm_factor)
        report.flagged = {names[i]: why for i, why in flags.flagged.items()}
        report.update_norms = {n: round(v, 6) for n, v in zip(names, flags.norms)}
        step = self.aggregate_fn(updates, examples, flags, beta=self.trim_beta)
        new = add(self.current, step)
        metrics = {"answered": len(results), "failed": len(failures), "flagged": ",".join(report.flagged)}
        return fl.ndarrays_to_parameters(new), metrics

    def evaluate(self, server_round: int, parameters: Any) -> None:
        """Flower's per-round hook with the round's global (noised, under DP): hand it on."""
        if self.on_global is not None:
            self.on_global(server_round, fl.parameters_to_ndarrays(parameters))
        return None

    def aggregate_evaluate(self, server_round: int, results: list[tuple[Any, Any]],
                           failures: list[Any]) -> tuple[float | None, dict[str, Any]]:
        losses = [(float(res.loss), int(res.num_examples)) for _, res in results if res.num_examples > 0]
        total = sum(n for _, n in losses)
        loss = sum(l * n for l, n in losses) / total if total else None
        gate = {str(res.metrics.get("node") or proxy.cid[:8]): res.metrics for proxy, res in results
                if "promoted" in res.metrics}
        for r in reversed(self.rounds):
            if r.round == server_round:
                r.eval_loss = loss
                break
        return loss, {"gate": gate} if gate else {}


def make_strategy(*, initial: list[np.ndarray], aggregator: str = "fedavg", dp: DPSettings | None = None,
                  num_sampled: int, **kw: Any) -> tuple[AdapterStrategy, Any]:
    """(the adapter strategy, what the server runs): the strategy itself, or it wrapped in
    Flower's DP (client-side clipping, server-side noise)."""
    if dp is None:
        s = AdapterStrategy(initial=initial, aggregator=aggregator, **kw)
        return s, s
    if aggregator != "fedavg":
        raise ConfigError(f"DP noise is calibrated for the mean of clipped updates; use --aggregator fedavg with DP, "
                          f"got {aggregator!r}")
    s = AdapterStrategy(initial=initial, aggregator=aggregator, uniform=True, **kw)
    wrapped = fl.DifferentialPrivacyClientSideFixedClipping(s, noise_multiplier=dp.noise_multiplier,
                                                            clipping_norm=dp.clipping_norm,
                                                            num_sampled_clients=num_sampled)
    return s, wrapped


__all__ = ["AGGREGATORS", "AdapterStrategy", "RoundReport", "Screen", "make_strategy", "screen"]
