"""The local OpenAI-compatible engines against real HTTP doubles on 127.0.0.1: llama-server's
per-request LoRA (the `lora` field, `GET /lora-adapters`) and SGLang's runtime adapters
(`POST /load_lora_adapter` at the server root, requests naming `<base>:<adapter>`).

The llama-server binary is not installed here; the double speaks the subset endcloud uses,
with llama.cpp's spellings: the adapters it was "started with" (`--lora`), a chat request
whose `lora` list gives each named adapter its scale and every other one 0.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from pathlib import Path

import pytest
from fastapi import Request  # module level: the handlers' string annotations resolve here

from endcloud.errors import ConfigError, ModelError
from endcloud.loopback import LoopbackServer
from endcloud.runtime.engines import load_end_model, needs_local_base
from endcloud.runtime.openai_local import LORA_GGUF, LlamaServerEndModel, SGLangEndModel

CONV = [{"role": "user", "content": "When do you ship?"}]


def _adapter(root: Path, name: str, version: str, *, kind: str = "LORA") -> Path:
    d = root / name / version
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": kind, "r": 8}))
    (d / LORA_GGUF).write_bytes(b"GGUF")  # the double never reads it; the path is what it matches
    return d


class LlamaServerDouble:
    """llama-server's OpenAI chat route, its /lora-adapters list and per-request `lora`."""

    def __init__(self, adapters: list[Path], *, latency: float = 0.0):
        self.adapters = [{"id": i, "path": str(p / LORA_GGUF), "scale": 0.0, "task_name": "", "prompt_prefix": ""}
                         for i, p in enumerate(adapters)]
        self.latency = latency
        self.requests: list[tuple[str, dict | None]] = []
        self._lock = threading.Lock()

    def app(self):
        from fastapi import FastAPI

        app = FastAPI()

        @app.get("/lora-adapters")
        async def lora_adapters():
            with self._lock:
                self.requests.append(("lora-adapters", None))
            return self.adapters

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            with self._lock:
                self.requests.append(("chat", body))
            if self.latency:
                await asyncio.sleep(self.latency)
            active = [e["id"] for e in body.get("lora", []) if e.get("scale", 0) > 0]
            text = f"adapter-{active[0]}" if active else "base"
            return {"id": "x", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text},
                                 "logprobs": {"content": [{"token": "t", "logprob": -0.1, "top_logprobs": []}] * 3}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}

        return app

    def chats(self) -> list[dict]:
        return [b for p, b in self.requests if p == "chat"]


@pytest.fixture()
def adapters(tmp_path):
    return [_adapter(tmp_path, "shop", "v1"), _adapter(tmp_path, "shop", "v2")]


@pytest.fixture()
def server(adapters):
    double = LlamaServerDouble(adapters, latency=0.0)
    with LoopbackServer(double.app(), name="llama-server-double") as srv:
        double.url = srv.url + "/v1"
        yield double


def test_per_request_lora_follows_the_swap(server, adapters):
    with LlamaServerEndModel(base_url=server.url) as m:
        [g] = m.generate([CONV])
        assert g.text == "base" and server.chats()[-1]["lora"] == []  # the bare base: every adapter at 0
        m.swap_adapter(adapters[1])
        assert m.method == "lora" and m.adapter_dir == adapters[1].resolve()
        [g] = m.generate([CONV], temperature=0.0, max_new_tokens=8, seed=3)
        body = server.chats()[-1]
        assert g.text == "adapter-1" and body["lora"] == [{"id": 1, "scale": 1.0}]
        assert body["logprobs"] is True and body["seed"] == 3 and body["max_tokens"] == 8
        assert g.confidence == pytest.approx(math.exp(-0.1)) and g.tokens == 3
        m.swap_adapter(None)
        [g] = m.generate([CONV])
        assert g.text == "base" and m.method == "base"


def test_an_adapter_the_server_lacks_is_refused_with_the_flag(server, tmp_path, adapters):
    stranger = _adapter(tmp_path, "other", "v9")
    with LlamaServerEndModel(base_url=server.url) as m:
        m.swap_adapter(adapters[0])
        with pytest.raises(ModelError, match=r"not started with.*endcloud export lora.*--lora .*--lora-init-without-apply"):
            m.swap_adapter(stranger)
        [g] = m.generate([CONV])
        assert g.text == "adapter-0"  # the old adapter keeps serving


def test_prefix_adapters_are_refused_before_any_request(server, tmp_path):
    prefix = _adapter(tmp_path, "shop", "v3", kind="PREFIX_TUNING")
    with LlamaServerEndModel(base_url=server.url) as m:
        before = len(server.requests)
        with pytest.raises(ModelError, match="PREFIX_TUNING.*llama-server serves LORA adapters only.*--engine transformers"):
            m.swap_adapter(prefix)
        assert len(server.requests) == before


def test_a_reply_in_flight_finishes_on_its_adapter(adapters):
    double = LlamaServerDouble(adapters, latency=0.4)
    with LoopbackServer(double.app()) as srv, LlamaServerEndModel(base_url=srv.url + "/v1") as m:
        m.swap_adapter(adapters[0])
        out: list = []
        t = threading.Thread(target=lambda: out.extend(m.generate([CONV, CONV])))
        t.start()
        time.sleep(0.1)
        m.swap_adapter(adapters[1])  # while both rows are on the wire
        t.join()
        [g] = m.generate([CONV])
    assert [x.text for x in out] == ["adapter-0", "adapter-0"] and g.text == "adapter-1"


def test_the_engine_registry_and_env(server, adapters, monkeypatch):
    assert not needs_local_base("llama-server") and not needs_local_base("sglang")
    monkeypatch.setenv("ENDCLOUD_LLAMA_SERVER_BASE_URL", server.url)
    m = load_end_model("llama-server", adapter_dir=adapters[0], base_dir=None)
    try:
        assert isinstance(m, LlamaServerEndModel) and m.method == "lora"
    finally:
        m.close()
    monkeypatch.delenv("ENDCLOUD_LLAMA_SERVER_BASE_URL")
    with pytest.raises(ConfigError, match="ENDCLOUD_LLAMA_SERVER_BASE_URL is not set"):
        load_end_model("llama-server")
    with pytest.raises(ConfigError, match="not loopback"):
        LlamaServerEndModel(base_url="http://93.184.216.34:8080/v1")


def test_async_engine_batches_replies_through_the_server(server, adapters):
    from endcloud.runtime.async_engine import AsyncEngine

    async def run():
        engine = AsyncEngine(LlamaServerEndModel(base_url=server.url))
        engine.start()
        engine.swap_adapter(adapters[1])
        outs = await asyncio.gather(*[engine.generate(CONV, max_new_tokens=8, temperature=0.6, top_p=0.8)
                                      for _ in range(4)])
        await engine.stop()
        engine.model.close()
        return engine.mode, outs

    mode, outs = asyncio.run(run())
    assert mode == "static" and [g.text for g in outs] == ["adapter-1"] * 4


# ---- SGLang ------------------------------------------------------------------------------------
class SGLangDouble:
    def __init__(self):
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, dict]] = []

    def app(self):
        from fastapi import FastAPI

        app = FastAPI()

        @app.post("/load_lora_adapter")
        async def load(request: Request):
            body = await request.json()
            self.calls.append(("load", body))
            self.loaded[body["lora_name"]] = body["lora_path"]
            return {"success": True}

        @app.post("/unload_lora_adapter")
        async def unload(request: Request):
            body = await request.json()
            self.calls.append(("unload", body))
            self.loaded.pop(body["lora_name"], None)
            return {"success": True}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.calls.append(("chat", body))
            base, _, lora = body["model"].partition(":")
            text = f"{base}+{lora}" if lora and lora in self.loaded else base
            return {"choices": [{"message": {"role": "assistant", "content": text},
                                 "logprobs": {"content": [{"logprob": -0.2}]}}], "usage": {"completion_tokens": 1}}

        return app


def test_sglang_loads_at_the_root_and_routes_by_name(adapters):
    double = SGLangDouble()
    with LoopbackServer(double.app()) as srv, SGLangEndModel(base_url=srv.url + "/v1", model="qwen") as m:
        m.swap_adapter(adapters[0])
        [g] = m.generate([CONV])
        name = m.name
        assert double.calls[0] == ("load", {"lora_name": name, "lora_path": str(adapters[0].resolve())})
        assert g.text == f"qwen+{name}"
        m.swap_adapter(None)
        [g] = m.generate([CONV])
        assert g.text == "qwen" and ("unload", {"lora_name": name}) in double.calls
