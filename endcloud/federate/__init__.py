"""Federated adapters: many shops learn one end model's adapter without sharing a single chat.

    platform                                     shop (× N), its own machine
    ─────────────────────────────                ──────────────────────────────────────────────
    FederationServer (Flower)                    ShopClient (Flower NumPyClient)
      sample shops ─── global LoRA tensors ───►    train(base, its own grounded examples, steps)
      screen + aggregate ◄── tensors + #examples ─  (Δ clipped under DP; WireGuard checks + audits)
      (fedavg | median | trimmed | screened,       …
       + Flower's DP: noise on the mean)
      last round ─── final tensors ───────────►    its own gate on its held-out set ─► activate
                                                   here, or reject (AdapterRegistry)

Only adapter tensors cross the wire (and a few numbers: example count, losses, a 0/1 gate
outcome); each shop's facts stay in its knowledge base, read at answer time, because every
training example is grounded in that shop's own snippets (`endcloud.kb.prompt.ground`).

    server.py    FederationSettings, FederationServer (Flower gRPC server + `Server`), report
    strategy.py  AdapterStrategy (Flower FedAvg + seeded sampling + screening), AGGREGATORS
    client.py    ShopClient, WireGuard (what may leave, audited to audit/federate.jsonl)
    weights.py   adapter folder ⇄ arrays, SHARING ("all" | "lora_A": FedSA-style personal B)
    privacy.py   DPSettings, the (ε, δ) budget of clipped + noised rounds
    activate.py  gate_and_activate: `endcloud.evolve.gate` decides, the registry activates
    shops.py     ShopData from a workspace; generated_shop for synthetic ones
    simulate.py  everything on one machine over loopback gRPC (threads)

Flower (`flwr`) is optional: importing this package alone does not import it; the modules that
talk to Flower do (`pip install --no-deps -r requirements-federate.txt`).
CLI: `endcloud federate server|client|simulate`; deployment: `docs/scale.md`.
"""

from endcloud.federate.privacy import DPSettings, epsilon

__all__ = ["DPSettings", "epsilon"]
