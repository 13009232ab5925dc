"""Three shops federate for real — tiny base, real LoRA training, Flower's gRPC on loopback — with a
tap on the wire that records every byte both ways. Nothing of a shop's data is on it: no text of
its examples, knowledge or orders, no token ids, no embedding rows; only adapter tensors and a
few numbers. Each shop then gated the result itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower is not installed: pip install --no-deps -r requirements-federate.txt")

from tests.federate.wiretap import WireTap

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("few_threads")]

N = 10  # bytes of a window: a match of this many bytes by chance between text and floats is ~never


@pytest.fixture(scope="module")
def federation(fed_shops, tiny_base_dir, tmp_path_factory):
    from endcloud.federate.server import FederationSettings
    from endcloud.federate.simulate import simulate

    taps: list[WireTap] = []

    def dial(address: str) -> str:  # every shop dials the one tap
        if not taps:
            taps.append(WireTap(address))
        return taps[0].address

    settings = FederationSettings(rounds=2, local_steps=2, min_clients=3, lora_r=2, eval_every=1, gate=True)
    sim = simulate(fed_shops, base_dir=tiny_base_dir, settings=settings, out_dir=tmp_path_factory.mktemp("fed-out"),
                   nodes=["shop-0", "shop-1", "shop-2"], dial=dial, heldout_size=4, threads=1, batch_size=4,
                   max_input_len=128, max_output_len=32)
    yield sim, taps[0]
    taps[0].close()


def _grams(data: bytes) -> set[bytes]:
    return {data[i:i + N] for i in range(len(data) - N + 1)}


def _secrets(client) -> list[str]:
    """Everything of the shop's own that must not travel: examples (with their knowledge
    snippets), held-out questions and references, order rows."""
    shop = client.shop
    out = [m["content"] for e in shop.train for m in e.messages] + [e.response for e in shop.train]
    out += [h["query"] for h in shop.heldout] + [h["reference"] for h in shop.heldout]
    out += (shop.workspace / "shop" / "orders.csv").read_text(encoding="utf-8").splitlines()[1:]
    return [s for s in out if len(s.encode()) >= N]


def test_the_federation_ran_and_every_shop_gated_the_result(federation):
    sim, _ = federation
    report = sim.report
    assert not sim.errors
    assert [r["applied"] for r in report.rounds] == [True, True]
    assert all(sorted(r["answered"]) == ["shop-0", "shop-1", "shop-2"] for r in report.rounds)
    assert set(report.eval_loss) == {1, 2} and report.rounds_to_converge in (1, 2)
    assert sorted(report.gate) == ["shop-0", "shop-1", "shop-2"]
    for client in sim.clients:
        act = client.activation
        assert act is not None and report.gate[client.node]["promoted"] == int(act.promoted)
        manifest = client.registry.manifest("shop", act.version)
        assert manifest["gate"]["reasons"] and manifest["federated"]["node"] == client.node
        assert manifest["status"] == ("candidate" if act.promoted else "rejected")
        assert (client.registry.active_version("shop") == act.version) == act.promoted


def test_only_adapter_tensors_cross_the_wire(federation, tiny_base_dir):
    from safetensors.numpy import load_file

    from endcloud.end.base import load_tokenizer
    from endcloud.federate.weights import read_tensors

    sim, tap = federation
    up, down = bytes(tap.up), bytes(tap.down)
    # (gRPC shares one connection between channels of a process to the same address: >= 1)
    assert tap.connections >= 1 and len(up) > 0 and len(down) > 0
    wire = _grams(up) | _grams(down)

    # positive controls: the tap sees payloads and text, so the checks below can fail
    sent = read_tensors(sim.clients[0].local_dir)  # shop-0's last trained adapter, all of it federated
    name = sorted(sent)[0]
    assert sent[name].tobytes() in up
    final = read_tensors(sim.report.global_dir)
    assert final[name].tobytes() in down
    assert b"shop-0" in up  # the shop's chosen label: text on the wire would be found

    tok = load_tokenizer(tiny_base_dir)
    emb = next(v for k, v in load_file(str(tiny_base_dir / "model.safetensors")).items() if "embed_tokens" in k)
    emb = emb.astype(np.float32)
    for client in sim.clients:
        texts = _secrets(client)
        assert texts, "the shop has data to protect"
        leaked = [t for t in texts if any(t.encode()[i:i + N] in wire for i in range(len(t.encode()) - N + 1))]
        assert not leaked, f"{client.node}: example text on the wire: {leaked[:3]}"
        ids_seen: set[int] = set()
        for t in texts:
            ids = [i for i in tok(t)["input_ids"]]
            ids_seen.update(ids)
            for j in range(len(ids) - 2):
                window = ids[j:j + 3]
                if min(window) < 10 or len(set(window)) == 1:
                    continue  # special and repeated ids make trivial byte patterns (zeros)
                assert np.asarray(window, "<i4").tobytes()[:N] not in wire, f"{client.node}: token ids (int32)"
                assert np.asarray(window[:2], "<i8").tobytes()[:N] not in wire, f"{client.node}: token ids (int64)"
        rows = [emb[i].tobytes()[:N] for i in sorted(ids_seen) if i >= 10]
        assert rows and not any(r in wire for r in rows), f"{client.node}: embedding rows on the wire"


def test_what_went_up_is_the_tensors_and_the_audit_log_says_so(federation):
    sim, tap = federation
    tensor_bytes = 0
    for client in sim.clients:
        rows = [json.loads(x) for x in (client.shop.workspace / "audit" / "federate.jsonl").read_text().splitlines()]
        fits = [r for r in rows if r["kind"] == "fit"]
        assert len(fits) == 2 and all(r["tensors"] == len(client.template.names) for r in fits)
        assert {r["kind"] for r in rows} == {"fit", "evaluate"}
        assert all(set(r["metrics"]) <= {"node", "loss", "steps", "promoted"} for r in rows)
        tensor_bytes += sum(r["bytes"] for r in rows)
    # the rest of the upstream is framing (gRPC/HTTP2, numpy headers, metric keys): small
    assert tensor_bytes <= len(tap.up) < 1.5 * tensor_bytes + 16_384
