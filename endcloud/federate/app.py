"""The federation as a Flower App, for a platform that runs Flower's own deployment engine.

    platform:  flower-superlink ──► flwr-serverapp: server_app  (AdapterStrategy, the same rounds)
                     ▲ Fleet API (gRPC, TLS)
    each shop: flower-supernode --node-config "workspace='/srv/endcloud'"
                     └─► client_app: the shop's ShopClient on its own workspace

`endcloud federate server/client` run the same strategy and client over Flower's gRPC
transport without a SuperLink; this module is for platforms that want Flower's deployment
(its SuperLink database, run management, node authentication, `flwr run/ls/log/stop`). The
run's settings come from the app's `[tool.flwr.app.config]` (`flwr run -c 'rounds=5'`), the
shop's from its SuperNode's `--node-config`:

    run config   base (path on the SuperLink host), out, rounds, local-steps, lr, share,
                 aggregator, fraction, min-clients, min-fit, round-timeout, lora-r, seed,
                 dp-noise, dp-clip, dp-delta (0 = no DP)
    node config  workspace (the shop's workspace), base (optional: default workspace/base),
                 name (optional: the shop's label in reports)

`docs/scale.md` has the commands and the app's pyproject.toml.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from endcloud.federate import _flower as fl

_CLIENTS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _client(node_config: dict[str, Any]) -> Any:
    """The shop's ShopClient, made once per process (a ClientApp is called per message)."""
    from endcloud.config import Workspace
    from endcloud.federate.simulate import make_client

    ws = Workspace.resolve(str(node_config["workspace"]))
    key = str(ws.root)
    with _LOCK:
        if key not in _CLIENTS:
            base = ws.find_base(node_config.get("base") or None)
            _CLIENTS[key] = make_client(ws, base_dir=base, node=node_config.get("name") or None)
        return _CLIENTS[key]


def client_fn(context: Any) -> Any:
    return _client(dict(context.node_config)).to_client()


def server_fn(context: Any) -> Any:
    from endcloud.federate.privacy import DPSettings
    from endcloud.federate.server import FederationSettings, _settings_json
    from endcloud.federate.strategy import make_strategy
    from endcloud.federate.weights import Template, init_adapter, read_tensors, write_adapter
    from endcloud.fileio import write_json_atomic

    cfg = dict(context.run_config)
    dp = None
    if float(cfg.get("dp-noise", 0) or 0) > 0:
        dp = DPSettings(noise_multiplier=float(cfg["dp-noise"]), clipping_norm=float(cfg["dp-clip"]),
                        delta=float(cfg.get("dp-delta", 1e-5)))
    s = FederationSettings(
        rounds=int(cfg.get("rounds", 3)), local_steps=int(cfg.get("local-steps", 20)), lr=float(cfg.get("lr", 2e-3)),
        share=str(cfg.get("share", "all")), aggregator=str(cfg.get("aggregator", "fedavg")),
        fraction=float(cfg.get("fraction", 1.0)), min_clients=int(cfg.get("min-clients", 2)),
        min_fit=int(cfg.get("min-fit", 1)), round_timeout_s=float(cfg.get("round-timeout", 600)) or None,
        lora_r=int(cfg["lora-r"]) if cfg.get("lora-r") else None, dp=dp, seed=int(cfg.get("seed", 0)))
    out = Path(str(cfg.get("out", "federation")))
    init_dir = init_adapter(str(cfg["base"]), out / "init", seed=s.seed, r=s.lora_r)
    template = Template.of(init_dir, s.share)
    rounds: list[dict[str, Any]] = []

    def on_global(server_round: int, arrays: list) -> None:
        if server_round == 0:
            return
        write_adapter(init_dir, template.named(arrays), out / "global")
        rounds[:] = [r.to_json() for r in strategy.rounds]
        write_json_atomic(out / "report.json", {"settings": _settings_json(s), "rounds": rounds,
                                                 "privacy": s.dp.budget(sum(1 for r in strategy.rounds if r.applied))
                                                 if s.dp else None, "template": template.to_json()})

    strategy, runner = make_strategy(
        initial=template.arrays(read_tensors(init_dir)), aggregator=s.aggregator, dp=s.dp,
        num_sampled=s.num_sampled(s.min_clients), fraction_fit=s.fraction, min_fit_clients=s.min_fit,
        min_available_clients=s.min_clients, fit_config=s.fit_config(), seed=s.seed, final_round=s.rounds,
        on_global=on_global)
    return fl.ServerAppComponents(strategy=runner, config=fl.ServerConfig(num_rounds=s.rounds,
                                                                           round_timeout=s.round_timeout_s))


_ServerApp, _ClientApp = fl.apps()
server_app = _ServerApp(server_fn=server_fn)
client_app = _ClientApp(client_fn=client_fn)

__all__ = ["client_app", "client_fn", "server_app", "server_fn"]
