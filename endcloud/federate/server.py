"""The federation's server: Flower's gRPC server and `Server`, driven round by round.

    start ─► Flower gRPC server on ADDRESS (shops dial in) ─► wait for `min_clients` shops
    round r = 1..R:
        fit_round (strategy samples shops, sends the global, aggregates what returns in time)
        evaluate_round every `eval_every` rounds: each shop's held-out loss of the new global
    last round: evaluate with `gate` ─► every shop gates the final adapter itself
    disconnect the shops, stop, write global/ (a LoRA adapter folder) and report.json

The platform never sees a shop's data, its scores or its decision's reasons: it learns which
shops answered, their example counts, training losses, held-out losses and whether each
activated the result (see `client.ALLOWED_METRICS`).

`endcloud federate server --address 0.0.0.0:8080 --base BASE --rounds 5 --min-clients 4` runs
it; `docs/scale.md` has a platform's deployment with Flower's SuperLink instead.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from endcloud.errors import ConfigError, EndcloudError
from endcloud.federate import _flower as fl
from endcloud.federate.privacy import DPSettings
from endcloud.federate.strategy import AGGREGATORS, AdapterStrategy, RoundReport, make_strategy
from endcloud.federate.weights import SHARING, Template, init_adapter, payload_bytes, read_tensors, write_adapter
from endcloud.fileio import write_json_atomic

log = logging.getLogger("endcloud.federate")


@dataclass
class FederationSettings:
    """Rounds, who trains, how updates merge, and the privacy of what is sent."""

    rounds: int = 3
    local_steps: int = 20  # optimizer steps each sampled shop trains per round
    lr: float = 2e-3
    share: str = "all"  # SHARING: "all" (FedAvg of the adapter) | "lora_A" (personal B per shop)
    aggregator: str = "fedavg"  # AGGREGATORS: fedavg | median | trimmed | screened
    fraction: float = 1.0  # share of the connected shops sampled each round
    min_clients: int = 2  # shops connected before round 1 starts
    min_fit: int = 1  # fewer answers than this leave the global unchanged for the round
    round_timeout_s: float | None = 600.0  # a shop slower than this is dropped from the round (a straggler)
    connect_timeout_s: float = 300.0
    gate_timeout_s: float | None = 1800.0
    eval_every: int = 1  # held-out loss of the global every k rounds (0: only at the end)
    gate: bool = True  # the last evaluation runs every shop's gate (and activates where it passes)
    lora_r: int | None = None  # the adapter recipe every shop builds (None: Table IV defaults)
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    target_modules: str | None = None
    dp: DPSettings | None = None
    trim_beta: float = 0.2
    norm_factor: float = 3.0
    seed: int = 0
    max_message_mb: int = 512

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds!r}; change --rounds")
        if self.local_steps < 1:
            raise ConfigError(f"local steps must be >= 1, got {self.local_steps!r}; change --local-steps")
        if self.min_clients < 1 or self.min_fit < 1:
            raise ConfigError("--min-clients and --min-fit must be >= 1")
        SHARING.get(self.share)
        AGGREGATORS.get(self.aggregator)
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction!r}; change --fraction")

    def recipe(self) -> dict[str, Any]:
        r = {"lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
             "target_modules": self.target_modules}
        return {k: v for k, v in r.items() if v is not None}

    def fit_config(self) -> dict[str, Any]:
        return {"steps": self.local_steps, "lr": self.lr, "share": self.share, **self.recipe()}

    def num_sampled(self, n_clients: int) -> int:
        return max(int(n_clients * self.fraction), self.min_fit, 1)


@dataclass
class FederationReport:
    settings: dict[str, Any]
    rounds: list[dict[str, Any]]
    gate: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_loss: dict[int, float] = field(default_factory=dict)
    rounds_to_converge: int | None = None
    privacy: dict[str, Any] | None = None
    template: dict[str, Any] | None = None
    global_dir: str | None = None
    seconds: float = 0.0
    flower: str = fl.FLOWER_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def converged_at(losses: dict[int, float], tol: float = 0.01) -> int | None:
    """The first round after which no later round lowers the held-out loss by more than `tol`
    (relative): the round the federation stopped learning at this budget."""
    if not losses:
        return None
    order = sorted(losses)
    for i, r in enumerate(order):
        if all(losses[s] >= losses[r] * (1 - tol) for s in order[i + 1:]):
            return r
    return order[-1]


class FederationServer:
    """One federation run on `address` (see the module docstring)."""

    def __init__(self, settings: FederationSettings, *, address: str = "127.0.0.1:0", base_dir: str | Path | None = None,
                 init_dir: str | Path | None = None, out_dir: str | Path | None = None,
                 certificates: tuple[bytes, bytes, bytes] | None = None):
        self.settings, self.address = settings, address
        self.out = Path(out_dir) if out_dir else None
        if init_dir is None:
            if base_dir is None:
                raise ConfigError("the server needs --base (to make the round-0 adapter) or --init-adapter")
            if self.out is None:
                raise ConfigError("the server needs an output folder (--out) for the round-0 adapter")
            init_dir = init_adapter(base_dir, self.out / "init", seed=settings.seed, r=settings.lora_r,
                                    alpha=settings.lora_alpha, dropout=settings.lora_dropout,
                                    target_modules=settings.target_modules)
        self.init_dir = Path(init_dir)
        self.template = Template.of(self.init_dir, settings.share)
        self.initial = self.template.arrays(read_tensors(self.init_dir))
        self.certificates = certificates
        self.client_manager = fl.SimpleClientManager()
        self.strategy: AdapterStrategy | None = None
        self._grpc = None
        self.bound_address: str | None = None
        self.final: list[np.ndarray] | None = None

    def start(self) -> str:
        """Start listening; return the address shops dial (`host:port`)."""
        s = self.settings
        strategy, runner = make_strategy(
            initial=self.initial, aggregator=s.aggregator, dp=s.dp, num_sampled=max(1, s.min_clients),
            fraction_fit=s.fraction, min_fit_clients=s.min_fit, min_available_clients=s.min_clients,
            fit_config=s.fit_config(), seed=s.seed, trim_beta=s.trim_beta, norm_factor=s.norm_factor,
            final_round=s.rounds if s.gate else None)
        self.strategy = strategy
        self.server = fl.Server(client_manager=self.client_manager, strategy=runner)
        self._grpc = fl.grpc_server(self.client_manager, self.address, max_message_length=s.max_message_mb << 20)
        self.bound_address = str(self._grpc.bound_address)
        return self.bound_address

    def run(self) -> FederationReport:
        """Wait for the shops, run every round, let them gate the result; stop; report."""
        s = self.settings
        if self._grpc is None:
            self.start()
        assert self.strategy is not None
        t0 = time.perf_counter()
        try:
            if not self.client_manager.wait_for(s.min_clients, timeout=int(s.connect_timeout_s)):
                raise EndcloudError(f"only {self.client_manager.num_available()} of --min-clients {s.min_clients} shops "
                                    f"connected within {s.connect_timeout_s:.0f} s")
            if s.dp is not None:  # the noise is calibrated for this many shops a round
                self.server.strategy.num_sampled_clients = s.num_sampled(self.client_manager.num_available())
            self.server.parameters = fl.ndarrays_to_parameters(self.initial)
            eval_loss: dict[int, float] = {}
            for r in range(1, s.rounds + 1):
                out = self.server.fit_round(server_round=r, timeout=s.round_timeout_s)
                results, failures = out[2] if out is not None else ([], [])
                if out is not None and out[0] is not None:
                    self.server.parameters = out[0]
                if not self.strategy.rounds or self.strategy.rounds[-1].round != r:
                    # no shop to sample, or Flower's DP wrapper discarded a round with a failure
                    # before our strategy saw it: the global stays, the round is on the record
                    self.strategy.rounds.append(RoundReport(
                        round=r, sampled=len(results) + len(failures), answered=[], failed=len(failures),
                        examples={}, flagged={}, update_norms={}, bytes_down=payload_bytes(self.initial),
                        bytes_up={}, applied=False))
                last = r == s.rounds
                if last and s.gate:
                    continue  # the gate round evaluates (and records the loss) below
                if s.eval_every and r % s.eval_every == 0:
                    res = self.server.evaluate_round(server_round=r, timeout=s.round_timeout_s)
                    if res is not None and res[0] is not None:
                        eval_loss[r] = float(res[0])
            gate: dict[str, dict[str, Any]] = {}
            if s.gate:
                res = self.server.evaluate_round(server_round=s.rounds, timeout=s.gate_timeout_s)
                if res is not None:
                    if res[0] is not None:
                        eval_loss[s.rounds] = float(res[0])
                    gate = {k: dict(v) for k, v in (res[1].get("gate") or {}).items()}
            self.final = fl.parameters_to_ndarrays(self.server.parameters)
        finally:
            self.stop()
        applied = sum(1 for rr in self.strategy.rounds if rr.applied)
        report = FederationReport(
            settings=_settings_json(s), rounds=[rr.to_json() for rr in self.strategy.rounds], gate=gate,
            eval_loss=eval_loss, rounds_to_converge=converged_at(eval_loss),
            privacy=s.dp.budget(applied) if s.dp is not None else None, template=self.template.to_json(),
            seconds=round(time.perf_counter() - t0, 2))
        if self.out is not None:
            report.global_dir = str(write_adapter(self.init_dir, self.template.named(self.final), self.out / "global"))
            write_json_atomic(self.out / "report.json", report.to_json())
        return report

    def stop(self) -> None:
        if self._grpc is None:
            return
        try:
            self.server.disconnect_all_clients(timeout=10)
        except Exception:  # a shop already gone: nothing to tell it
            log.debug("disconnect failed", exc_info=True)
        self._grpc.stop(grace=1)
        self._grpc = None


def _settings_json(s: FederationSettings) -> dict[str, Any]:
    d = asdict(s)
    d["dp"] = asdict(s.dp) if s.dp is not None else None
    return d


def load_report(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


__all__ = ["FederationReport", "FederationServer", "FederationSettings", "converged_at", "load_report"]
