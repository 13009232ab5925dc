"""Server and shops on one machine: the federation over loopback gRPC, for demos, tests, benches.

    FederationServer on 127.0.0.1:<free port>
        ▲ gRPC (Flower's own transport, real sockets)
        ├── thread: ShopClient(shop 1's workspace) ─ its data, its registry, its gate
        ├── thread: ShopClient(shop 2's workspace)
        └── …

Why threads on loopback and not Flower's simulation engine: `flwr.simulation` runs on Ray
(`flwr[simulation]` pins ray 2.55: a large install, a cluster of its own processes, and
seconds of start-up on this project's 2-core target), while Flower's gRPC server and client in
threads are the same code and wire format a real deployment uses, start in well under a
second, and let a test put a proxy on the wire. Shops train one at a time (`exclusive`): the
machine has few cores, and torch's RNG is global to the process, so concurrent training would
make a seeded run irreproducible.

    endcloud federate simulate --shops 4 --rounds 3 --out runs/fed
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from endcloud.config import Workspace
from endcloud.federate import _flower as fl
from endcloud.federate.client import ShopClient
from endcloud.federate.server import FederationReport, FederationServer, FederationSettings
from endcloud.federate.shops import load_shop

log = logging.getLogger("endcloud.federate")


@dataclass
class Simulation:
    report: FederationReport
    clients: list[ShopClient]
    address: str
    errors: list[BaseException] = field(default_factory=list)


class ExclusiveClient(ShopClient):
    """A ShopClient whose heavy calls take a lock shared with the other simulated shops."""

    def __init__(self, *args: Any, lock: threading.Lock, **kw: Any):
        super().__init__(*args, **kw)
        self._exclusive = lock

    def fit(self, parameters, config):
        with self._exclusive:
            return super().fit(parameters, config)

    def evaluate(self, parameters, config):
        with self._exclusive:
            return super().evaluate(parameters, config)


def make_client(workspace: str | Path | Workspace, *, base_dir: str | Path, node: str | None = None, lock: threading.Lock | None = None,
                heldout_size: int = 40, teacher: Any = None, adapter_name: str = "shop", **kw: Any) -> ShopClient:
    """The ShopClient of a workspace: its data, its registry, its evaluator, its audit log."""
    from endcloud.scoring import default_evaluator

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    shop = load_shop(ws, base_dir=base_dir, teacher=teacher, heldout_size=heldout_size, name=node)
    kwargs = dict(base_dir=base_dir, work_dir=ws.root / "federate", node=node or shop.name,
                  registry=ws.adapter_registry(), adapter_name=adapter_name, evaluator=default_evaluator(str(ws.root)),
                  audit=ws.root / "audit" / "federate.jsonl", **kw)
    if lock is not None:
        return ExclusiveClient(shop, lock=lock, **kwargs)
    return ShopClient(shop, **kwargs)


def start_client_thread(client: ShopClient, address: str, errors: list[BaseException], *,
                        max_wait_time: float = 60.0) -> threading.Thread:
    """Run a shop's Flower client in a daemon thread; an exception it dies of lands in `errors`."""

    def target() -> None:
        try:
            fl.run_client(address, client, max_message_length=512 << 20, max_retries=None, max_wait_time=max_wait_time)
        except BaseException as e:  # noqa: BLE001 - a dropped shop is an outcome to report, not a crash
            errors.append(e)
            log.warning("shop %s left: %s: %s", client.node, type(e).__name__, e)

    t = threading.Thread(target=target, name=f"federate-{client.node}", daemon=True)
    t.start()
    return t


def simulate(workspaces: Sequence[str | Path], *, base_dir: str | Path, settings: FederationSettings,
             out_dir: str | Path, nodes: Sequence[str] | None = None, dial: Callable[[str], str] | None = None,
             clients: Sequence[ShopClient] | None = None, quiet: bool = True, **client_kw: Any) -> Simulation:
    """Run a whole federation of `workspaces` over loopback and return the server's report.

    `dial(address) -> address` lets a caller put something between the shops and the server
    (the wire-audit test's recording proxy); `clients` replaces the shops made from workspaces."""
    if quiet:
        fl.quiet(logging.ERROR)
    lock = threading.Lock()
    if clients is None:
        names = list(nodes) if nodes else [None] * len(workspaces)
        clients = [make_client(ws, base_dir=base_dir, node=n, lock=lock, **client_kw) for ws, n in zip(workspaces, names)]
    server = FederationServer(settings, base_dir=base_dir, out_dir=Path(out_dir) / "server")
    address = server.start()
    errors: list[BaseException] = []
    threads = [start_client_thread(c, dial(address) if dial else address, errors) for c in clients]
    try:
        report = server.run()
    finally:
        server.stop()
        for t in threads:
            t.join(timeout=30)
    return Simulation(report=report, clients=list(clients), address=address, errors=errors)


def generated_shops(root: str | Path, n: int, *, kind: str = "shopworld", langs: Sequence[str] = ("en",), size: int = 40,
                    seed: int = 0) -> list[Path]:
    """`n` synthetic shop workspaces under `root` (`shop-0`, …), languages in turn, seeds from
    `seed` up; for kind "varied", a seed whose domain an earlier shop already has is skipped, so
    the n shops are n different domains (as many as the generator has)."""
    import json
    import shutil

    from endcloud.federate.shops import generated_shop

    out: list[Path] = []
    domains: set[str] = set()
    s = seed
    while len(out) < n:
        ws = generated_shop(Path(root) / f"shop-{len(out)}", seed=s, lang=langs[len(out) % len(langs)], kind=kind,
                            size=size)
        s += 1
        domain = json.loads((ws / "generated.json").read_text(encoding="utf-8")).get("domain")
        if kind == "varied" and domain in domains and s - seed < 50 * n:
            shutil.rmtree(ws)
            continue
        domains.add(domain)
        out.append(ws)
    return out


def public_base(out_dir: str | Path, *, kind: str = "shopworld", langs: Sequence[str] = ("en",), shops: int = 4,
                seed: int = 10_000, steps: int = 150, **sizes: Any) -> Path:
    """A small from-scratch base pretrained on *other* generated shops' dialogues and knowledge
    (seeds from `seed`, disjoint from the federated shops'): the platform's base, which has
    seen shop talk but none of the federated shops' data, and no knowledge snippets in a prompt."""
    import tempfile

    from endcloud.end.pretrain import pretrain
    from endcloud.fileio import read_jsonl
    from endcloud.kb import ShopPack

    dialogues: list[Any] = []
    knowledge: list[str] = []
    with tempfile.TemporaryDirectory(prefix="endcloud-public-") as tmp:
        for ws in generated_shops(tmp, shops, kind=kind, langs=langs, size=60, seed=seed):
            knowledge.append(ShopPack.load(Path(ws) / "shop").knowledge_text())
            for d in read_jsonl(Path(ws) / "corpus" / "pairs.jsonl"):
                ctx = [{"role": t["role"], "content": t["text"]} for t in d.get("context") or [] if t["role"] != "system"]
                dialogues.append(ctx + [{"role": "user", "content": d["query"]}, {"role": "assistant", "content": d["response"]}])
    # dialogues first: `pretrain` takes a leading string for a path to read
    docs = dialogues + knowledge
    cfg = dict(vocab_size=1500, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, seq_len=192, batch_size=8,
               steps=steps, lr=3e-3, warmup=10, eval_fraction=0.1, seed=seed)
    cfg.update(sizes)
    pretrain(docs, out_dir, progress=False, **cfg)
    return Path(out_dir)


__all__ = ["ExclusiveClient", "Simulation", "generated_shops", "make_client", "public_base", "simulate",
           "start_client_thread"]
