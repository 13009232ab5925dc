"""A shop in a federation: trains the shared adapter on its own data, sends back only tensors.

    FitIns(global tensors, {round, steps, lr, share, lora recipe, [clipping_norm]})
      │
      ├─ start = the shop's last adapter (its personal part) with the global tensors in place
      ├─ endcloud.end.train.train(base, the shop's grounded examples, init_adapter=start, steps)
      ├─ Δ = trained − global, clipped to the norm the server's DP asks for (if any)
      └─ WireGuard: only float32 arrays of the template's shapes, numeric metrics ─► FitRes
    EvaluateIns(global tensors, {round, [gate]})
      ├─ eval loss of (global + personal part) on the shop's held-out set  ─► a number
      └─ gate: the shop's own gate decides; publish + activate here, or reject ─► promoted 0/1

Nothing else leaves: no text, no token ids, no embeddings, no held-out scores. `WireGuard`
checks every outgoing message before Flower serialises it and appends what it let through
(sizes and a SHA-256 of the bytes, never the bytes) to `audit/federate.jsonl` in the shop's
workspace, beside the cloud's `audit/outbound.jsonl`.

Run it with `endcloud federate client -w WORKSPACE --server HOST:PORT`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from endcloud.errors import PrivacyError
from endcloud.federate import _flower as fl
from endcloud.federate.shops import ShopData
from endcloud.federate.weights import Template, init_adapter, read_tensors, write_adapter

log = logging.getLogger("endcloud.federate")

# The only metrics a shop sends: the node's label (chosen by the shop), numbers about the round.
ALLOWED_METRICS = {"node": str, "loss": float, "steps": int, "promoted": int}
RECIPE_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules")


class WireGuard:
    """Checks and records everything a shop's client hands to Flower to send."""

    def __init__(self, path: str | os.PathLike[str] | None):
        self.path = Path(path) if path else None
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def check(self, kind: str, template: Template | None, arrays: list[np.ndarray], metrics: dict[str, Any],
              round_: int | None) -> None:
        if arrays and template is not None:
            template.check(arrays)
        elif arrays:
            raise PrivacyError(f"{kind}: tensors without a template to check them against; nothing sent")
        for k, v in metrics.items():
            want = ALLOWED_METRICS.get(k)
            if want is None:
                raise PrivacyError(f"{kind}: metric {k!r} is not one a shop may send ({sorted(ALLOWED_METRICS)})")
            if want is str:
                if not isinstance(v, str) or len(v) > 64:
                    raise PrivacyError(f"{kind}: metric {k!r} must be a short label, got {type(v).__name__}")
            elif isinstance(v, (bool, str, bytes)) or not isinstance(v, (int, float)):
                raise PrivacyError(f"{kind}: metric {k!r} must be a number, got {type(v).__name__}")
        h = hashlib.sha256()
        for a in arrays:
            h.update(a.tobytes())
        row = {"at": time.time(), "kind": kind, "round": round_, "tensors": len(arrays),
               "bytes": int(sum(a.nbytes for a in arrays)), "sha256": h.hexdigest(), "metrics": dict(metrics)}
        with self._lock:
            self.records.append(row)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    f.flush()
                    os.fsync(f.fileno())


class ShopClient(fl.NumPyClient):
    """A Flower NumPyClient for one shop (see the module docstring)."""

    def __init__(self, shop: ShopData, *, base_dir: str | os.PathLike[str], work_dir: str | os.PathLike[str],
                 node: str | None = None, registry: Any = None, adapter_name: str = "shop", evaluator: Any = None,
                 measure: Any = None, gate_settings: Any = None, batch_size: int = 8, max_input_len: int = 256,
                 max_output_len: int = 64, audit: str | os.PathLike[str] | None = None, threads: int | None = None):
        self.shop, self.base_dir, self.work = shop, Path(base_dir), Path(work_dir)
        self.node = (node or shop.name)[:64]
        self.registry, self.adapter_name = registry, adapter_name
        self.evaluator, self.measure, self.gate_settings = evaluator, measure, gate_settings
        self.batch_size, self.max_input_len, self.max_output_len = batch_size, max_input_len, max_output_len
        self.threads = threads
        self.guard = WireGuard(audit)
        self.template: Template | None = None
        self.template_dir: Path | None = None
        self.activation: Any = None
        self.history: list[dict[str, Any]] = []
        self._recipe: dict[str, Any] | None = None

    # ---- the adapter template and the shop's own state --------------------------------------
    @property
    def local_dir(self) -> Path:
        """The shop's latest adapter (its personal tensors live here between rounds)."""
        return self.work / "local"

    def ensure_template(self, config: dict[str, Any]) -> Template:
        """The federated tensors' template for the server's recipe (built on first use)."""
        recipe = {k: config[k] for k in RECIPE_KEYS if k in config}
        share = str(config.get("share", "all"))
        if self.template is None or recipe != self._recipe or share != self.template.share:
            tdir = self.work / "template"
            if tdir.exists():
                shutil.rmtree(tdir)
            init_adapter(self.base_dir, tdir, seed=0, r=recipe.get("lora_r"), alpha=recipe.get("lora_alpha"),
                         dropout=recipe.get("lora_dropout"), target_modules=recipe.get("target_modules"))
            self.template, self.template_dir, self._recipe = Template.of(tdir, share), tdir, recipe
        return self.template

    def compose(self, arrays: list[np.ndarray], out: Path) -> Path:
        """The shop's adapter at `out`: the federated tensors are `arrays`, the rest (its
        personal part under `share="lora_A"`) its own from its last round."""
        assert self.template is not None and self.template_dir is not None  # ensure_template ran
        start = self.template_dir
        if self.template.share != "all" and (self.local_dir / "adapter_config.json").exists():
            start = self.local_dir
        if out.exists():
            shutil.rmtree(out)
        return write_adapter(start, self.template.named(arrays), out)

    def _send(self, kind: str, arrays: list[np.ndarray], metrics: dict[str, Any], round_: int | None) -> None:
        self.guard.check(kind, self.template, arrays, metrics, round_)

    def _threads(self):
        import contextlib

        import torch

        if self.threads is None:
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def few():
            old = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                yield
            finally:
                torch.set_num_threads(old)

        return few()

    # ---- Flower's three calls ---------------------------------------------------------------
    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        template = self.ensure_template(config)
        assert self.template_dir is not None
        arrays = template.arrays(read_tensors(self.template_dir))
        self._send("get_parameters", arrays, {}, None)
        return arrays

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        from endcloud.end.train import train

        template = self.ensure_template(config)
        global_arrays = [np.asarray(p, dtype=np.float32) for p in parameters]
        template.check(global_arrays)
        rnd = int(config.get("round", 0))
        steps = int(config.get("steps", 20))
        start = self.compose(global_arrays, self.work / f"round-{rnd}" / "start")
        with self._threads():
            res = train(self.base_dir, self.shop.train, self.work / f"round-{rnd}" / "trained", method="lora",
                        steps=steps, lr=float(config.get("lr", 2e-3)), batch_size=self.batch_size,
                        max_input_len=self.max_input_len, max_output_len=self.max_output_len, init_adapter=start,
                        progress=False, seed=int(config.get("seed", rnd)), save_every=steps, resume=False)
        trained = read_tensors(res.adapter_dir)
        if self.local_dir.exists():
            shutil.rmtree(self.local_dir)
        shutil.copytree(res.adapter_dir, self.local_dir)
        shutil.rmtree(self.work / f"round-{rnd}", ignore_errors=True)
        out = template.arrays(trained)
        if fl.KEY_CLIPPING_NORM in config:  # the server's DP asks shops to clip their own update
            fl.compute_clip_model_update(out, global_arrays, float(config[fl.KEY_CLIPPING_NORM]))
            out = [np.asarray(a, dtype=np.float32) for a in out]
        loss = float(np.mean(res.losses[-10:])) if res.losses else float("nan")
        metrics = {"node": self.node, "loss": loss, "steps": steps}
        self.history.append({"round": rnd, "loss_first": res.losses[0] if res.losses else None, "loss_last": loss})
        self._send("fit", out, metrics, rnd)
        return out, len(self.shop.train), metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        template = self.ensure_template(config)
        arrays = [np.asarray(p, dtype=np.float32) for p in parameters]
        rnd = int(config.get("round", 0))
        cand = self.compose(arrays, self.work / f"candidate-{rnd}")
        loss, n = self.eval_loss(cand)
        metrics: dict[str, Any] = {"node": self.node}
        if config.get("gate"):
            metrics["promoted"] = int(self.gate(cand, rnd, config))
        else:
            shutil.rmtree(cand, ignore_errors=True)
        self._send("evaluate", [], metrics, rnd)
        return float(loss), n, metrics

    # ---- local measurements -----------------------------------------------------------------
    def eval_loss(self, adapter_dir: Path) -> tuple[float, int]:
        """Token-mean loss of base + adapter on the held-out references (0 examples: no set)."""
        from endcloud.end.data import Encoder
        from endcloud.end.train import evaluate_loss, load_trained

        examples = self.shop.eval_examples()
        if not examples:
            return 0.0, 0
        with self._threads():
            model, tok = load_trained(self.base_dir, adapter_dir)
            enc = Encoder(tok, max_input_len=self.max_input_len, max_output_len=self.max_output_len)
            loss = evaluate_loss(model, enc.encode_all(examples), tok.pad_token_id or 0)
        return (float(loss) if loss is not None else 0.0), len(examples)

    def gate(self, candidate_dir: Path, rnd: int, config: dict[str, Any]) -> bool:
        """The shop's own gate on the federated adapter; activates it here only if it passes."""
        from endcloud.federate.activate import gate_and_activate, measure_with_model

        if self.registry is None:
            return False
        measure = self.measure or measure_with_model(self.base_dir, self.shop.heldout, evaluator=self.evaluator,
                                                     ground=self.shop.grounder, settings=self.gate_settings)
        with self._threads():
            act = gate_and_activate(self.registry, self.adapter_name, candidate_dir, measure,
                                    settings=self.gate_settings,
                                    manifest={"method": "lora", "federated": {"round": rnd, "node": self.node,
                                                                              "share": config.get("share", "all")}})
        self.activation = act
        shutil.rmtree(candidate_dir, ignore_errors=True)
        log.info("%s: federated adapter %s %s (%s)", self.node, act.version,
                 "activated" if act.promoted else "rejected", "; ".join(act.gate["reasons"]))
        return act.promoted


__all__ = ["ALLOWED_METRICS", "ShopClient", "WireGuard"]
