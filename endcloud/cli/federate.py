"""CLI commands of the `federate` room: shops learn one adapter together, each keeping its data.

    endcloud federate server --base BASE --out runs/fed --address 0.0.0.0:8080 --min-clients 4 --rounds 5
    endcloud federate client -w shop-a/ --server platform.example:8080
    endcloud federate simulate --shops 4 --rounds 3 --out runs/fed-sim     # everything on this machine

Flower and torch are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from endcloud.config import DEFAULT_ADAPTER

federate_app = typer.Typer(
    help="Federated adapters on Flower: shops train one LoRA adapter together; only adapter tensors leave a shop.",
    no_args_is_help=True,
)


def _settings(rounds, local_steps, lr, share, aggregator, fraction, min_clients, min_fit, round_timeout, eval_every,
              gate, lora_r, dp_noise, dp_clip, dp_delta, seed):
    from endcloud.errors import ConfigError
    from endcloud.federate.privacy import DPSettings
    from endcloud.federate.server import FederationSettings

    dp = None
    if dp_noise is not None or dp_clip is not None:
        if dp_noise is None or dp_clip is None:
            raise ConfigError("DP needs both --dp-noise and --dp-clip")
        dp = DPSettings(noise_multiplier=dp_noise, clipping_norm=dp_clip, delta=dp_delta)
    return FederationSettings(rounds=rounds, local_steps=local_steps, lr=lr, share=share, aggregator=aggregator,
                              fraction=fraction, min_clients=min_clients, min_fit=min_fit,
                              round_timeout_s=round_timeout or None, eval_every=eval_every, gate=gate, lora_r=lora_r,
                              dp=dp, seed=seed)


def _summary(report) -> dict:
    r = report.to_json()
    return {"rounds": [{k: x[k] for k in ("round", "answered", "failed", "flagged", "applied", "eval_loss")}
                       | {"bytes_up": sum(x["bytes_up"].values()), "bytes_down_each": x["bytes_down"]} for x in r["rounds"]],
            "gate": r["gate"], "rounds_to_converge": r["rounds_to_converge"], "privacy": r["privacy"],
            "global": r["global_dir"], "seconds": r["seconds"]}


# Options shared by `server` and `simulate` (typer reads them from each function's signature).
ROUNDS = typer.Option(3, "--rounds", help="Federated rounds.")
LOCAL_STEPS = typer.Option(20, "--local-steps", help="Optimizer steps each sampled shop trains per round.")
LR = typer.Option(2e-3, "--lr", help="Learning rate of the shops' local training.")
SHARE = typer.Option("all", "--share", help="What is federated: 'all' (FedAvg of the adapter) or 'lora_A' "
                     "(A matrices shared, each shop keeps its own B: FedSA-LoRA, for shops that differ).")
AGGREGATOR = typer.Option("fedavg", "--aggregator", help="fedavg (weighted by examples) | median | trimmed | screened "
                          "(robust: a scaled or sign-flipped update is left out and named).")
FRACTION = typer.Option(1.0, "--fraction", help="Share of the connected shops sampled each round.")
MIN_FIT = typer.Option(1, "--min-fit", help="A round with fewer answers than this keeps the global unchanged.")
ROUND_TIMEOUT = typer.Option(600.0, "--round-timeout", help="Seconds a shop has per round; a slower one is dropped "
                             "from that round (0: wait forever).")
EVAL_EVERY = typer.Option(1, "--eval-every", help="Held-out loss of the global every k rounds (0: only at the end).")
GATE = typer.Option(True, "--gate/--no-gate", help="After the last round every shop gates the result on its own "
                    "held-out set and activates it only if it passes.")
LORA_R = typer.Option(None, "--lora-r", help="LoRA rank every shop uses (default: Table IV's).")
DP_NOISE = typer.Option(None, "--dp-noise", help="DP: noise multiplier z (Gaussian noise z*C/n on the mean update).")
DP_CLIP = typer.Option(None, "--dp-clip", help="DP: clipping norm C of each shop's round update.")
DP_DELTA = typer.Option(1e-5, "--dp-delta", help="DP: the delta of the (epsilon, delta) budget reported.")
SEED = typer.Option(0, "--seed", help="Seed of the shop sampling and the local training.")


@federate_app.command("server")
def server_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the round-0 adapter, the final global adapter and report.json."),
    base: Optional[Path] = typer.Option(None, "--base", help="The end model's base every shop runs (to make the round-0 adapter)."),
    init_adapter: Optional[Path] = typer.Option(None, "--init-adapter", help="Start from this LoRA adapter folder instead."),
    address: str = typer.Option("127.0.0.1:8080", "--address", help="host:port to listen on (0.0.0.0:8080 for other machines: add TLS)."),
    min_clients: int = typer.Option(2, "--min-clients", help="Shops that must be connected before round 1."),
    rounds: int = ROUNDS, local_steps: int = LOCAL_STEPS, lr: float = LR, share: str = SHARE,
    aggregator: str = AGGREGATOR, fraction: float = FRACTION, min_fit: int = MIN_FIT,
    round_timeout: float = ROUND_TIMEOUT, eval_every: int = EVAL_EVERY, gate: bool = GATE,
    lora_r: Optional[int] = LORA_R, dp_noise: Optional[float] = DP_NOISE, dp_clip: Optional[float] = DP_CLIP,
    dp_delta: float = DP_DELTA, seed: int = SEED,
    ca: Optional[Path] = typer.Option(None, "--ca", help="TLS: the CA certificate (PEM); with --cert and --key."),
    cert: Optional[Path] = typer.Option(None, "--cert", help="TLS: the server certificate (PEM)."),
    key: Optional[Path] = typer.Option(None, "--key", help="TLS: the server private key (PEM)."),
) -> None:
    """Run the federation's server (Flower gRPC) through every round; write the global adapter and report.json."""
    from endcloud.errors import ConfigError
    from endcloud.federate import _flower as fl
    from endcloud.federate.server import FederationServer

    tls = [ca, cert, key]
    if any(tls) and not all(tls):
        raise ConfigError("TLS needs all of --ca, --cert and --key")
    certificates = tuple(Path(p).read_bytes() for p in tls) if all(tls) else None
    settings = _settings(rounds, local_steps, lr, share, aggregator, fraction, min_clients, min_fit, round_timeout,
                         eval_every, gate, lora_r, dp_noise, dp_clip, dp_delta, seed)
    fl.quiet()
    server = FederationServer(settings, address=address, base_dir=base, init_dir=init_adapter, out_dir=out,
                              certificates=certificates)
    bound = server.start()
    typer.echo(f"federation server on {bound}: waiting for {min_clients} shops", err=True)
    report = server.run()
    typer.echo(json.dumps(_summary(report), ensure_ascii=False, indent=1))


@federate_app.command("client")
def client_cmd(
    server: str = typer.Option(..., "--server", help="host:port of the federation server."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="The shop's workspace (default $ENDCLOUD_HOME or ./endcloud-work)."),
    base: Optional[Path] = typer.Option(None, "--base", help="The end model's base (default: the workspace's base/); the server's must have the same shape."),
    name: Optional[str] = typer.Option(None, "--name", help="This shop's label in the server's report (default: the shop's name)."),
    adapter: str = typer.Option(DEFAULT_ADAPTER, "--adapter", help="Adapter name in the workspace registry the result is published to."),
    heldout: int = typer.Option(40, "--heldout", help="Size of the frozen held-out set the gate measures on (built once)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Local training batch size."),
    root_ca: Optional[Path] = typer.Option(None, "--root-ca", help="TLS: the CA certificate the server's is signed with."),
    max_wait: float = typer.Option(600.0, "--max-wait", help="Seconds to keep retrying to reach the server."),
) -> None:
    """Join a federation: train the shared adapter on this shop's own data each round, gate the result here.

    Only adapter tensors and a few numbers are sent (audit/federate.jsonl lists every message)."""
    from endcloud.config import Workspace
    from endcloud.federate import _flower as fl
    from endcloud.federate.simulate import make_client

    ws = Workspace.resolve(workspace)
    base_dir = ws.find_base(base)
    fl.quiet()
    client = make_client(ws, base_dir=base_dir, node=name, heldout_size=heldout, adapter_name=adapter,
                         batch_size=batch_size)
    typer.echo(f"{client.node}: {len(client.shop.train)} examples, {len(client.shop.heldout)} held out; joining {server}",
               err=True)
    fl.run_client(server, client, max_message_length=512 << 20, max_retries=None, max_wait_time=max_wait,
                  root_certificates=root_ca.read_bytes() if root_ca else None)
    act = client.activation
    typer.echo(json.dumps({"node": client.node, "rounds": client.history,
                           "activation": None if act is None else {"version": act.version, "promoted": act.promoted,
                                                                    "active": act.active,
                                                                    "reasons": act.gate["reasons"]}},
                          ensure_ascii=False, indent=1))


@federate_app.command("simulate")
def simulate_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the shops' workspaces, the base and the server's output."),
    shops: int = typer.Option(4, "--shops", help="Generated shops (each its own workspace, seeds 0..N-1)."),
    kind: str = typer.Option("shopworld", "--kind", help="'shopworld' (one home-goods world) or 'varied' (a random domain each)."),
    lang: str = typer.Option("en", "--lang", help="zh, en, or 'mixed' (zh and en in turn)."),
    size: int = typer.Option(40, "--size", help="Sessions (shopworld) or questions (varied) per shop: little data each."),
    base: Optional[Path] = typer.Option(None, "--base", help="A base model folder (default: pretrain a small one on other generated shops)."),
    base_steps: int = typer.Option(150, "--base-steps", help="Pretraining steps of that default base."),
    rounds: int = ROUNDS, local_steps: int = LOCAL_STEPS, lr: float = LR, share: str = SHARE,
    aggregator: str = AGGREGATOR, fraction: float = FRACTION, min_fit: int = MIN_FIT,
    round_timeout: float = ROUND_TIMEOUT, eval_every: int = EVAL_EVERY, gate: bool = GATE,
    lora_r: Optional[int] = LORA_R, dp_noise: Optional[float] = DP_NOISE, dp_clip: Optional[float] = DP_CLIP,
    dp_delta: float = DP_DELTA, seed: int = SEED,
    heldout: int = typer.Option(16, "--heldout", help="Held-out questions per shop for its gate."),
) -> None:
    """Run a server and N generated shops on this machine over loopback gRPC (Flower's own transport)."""
    from endcloud.errors import ConfigError
    from endcloud.federate.simulate import generated_shops, public_base, simulate

    langs = ("zh", "en") if lang == "mixed" else (lang,)
    if shops < 1:
        raise ConfigError(f"--shops must be >= 1, got {shops}")
    settings = _settings(rounds, local_steps, lr, share, aggregator, fraction, shops, min_fit, round_timeout,
                         eval_every, gate, lora_r, dp_noise, dp_clip, dp_delta, seed)
    out.mkdir(parents=True, exist_ok=True)
    wss = generated_shops(out / "shops", shops, kind=kind, langs=langs, size=size, seed=seed)
    if base is None:
        base = out / "base"
        if not (base / "config.json").exists():
            typer.echo(f"pretraining a small base on other generated shops ({base_steps} steps)", err=True)
            public_base(base, kind=kind, langs=langs, steps=base_steps)
    sim = simulate(wss, base_dir=base, settings=settings, out_dir=out, heldout_size=heldout)
    typer.echo(json.dumps(_summary(sim.report), ensure_ascii=False, indent=1))


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.add_typer(federate_app, name="federate")
