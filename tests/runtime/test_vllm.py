"""VLLMEndModel against a real HTTP double of vLLM's OpenAI server on 127.0.0.1.

The double (`VLLMDouble`) speaks the subset endcloud uses: POST /v1/chat/completions with
`logprobs`, GET /v1/models, and the runtime LoRA endpoints POST /v1/load_lora_adapter and
/v1/unload_lora_adapter (what VLLM_ALLOW_RUNTIME_LORA_UPDATING=True turns on). Like vLLM
it answers 404 for a model name it does not serve and 400 for an adapter folder it cannot
read or a name already loaded. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi import Request  # module level: the handlers' string annotations resolve here
from fastapi.responses import JSONResponse

from endcloud.errors import ConfigError, DataError, ModelError, RegistryError
from endcloud.loopback import LoopbackServer
from endcloud.runtime.engines import ENGINES, load_end_model
from endcloud.runtime.vllm import VLLMEndModel, VLLMError, is_private_host, lora_name_for


class VLLMDouble:
    """A real uvicorn server imitating vLLM's OpenAI-compatible API (a test double)."""

    def __init__(self, *, base: str = "tiny-base", latency: float = 0.0, runtime_lora: bool = True,
                 logprobs: bool = True):
        self.base = base
        self.latency = latency
        self.runtime_lora = runtime_lora
        self.logprobs = logprobs
        self.loras: dict[str, str] = {}  # lora_name -> lora_path
        self.requests: list[tuple[str, dict]] = []  # (path, body) in arrival order
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def chats(self) -> list[dict]:
        return [b for p, b in self.requests if p == "chat"]

    @staticmethod
    def logprob_for(text: str) -> float:
        # A deterministic per-conversation value, so a test can tell the rows apart.
        return -0.05 * (len(text) % 17) - 0.01

    def _app(self):
        from fastapi import FastAPI

        app = FastAPI()

        def err(status: int, msg: str) -> JSONResponse:
            return JSONResponse({"error": {"message": msg, "type": "BadRequestError", "code": status}}, status_code=status)

        @app.get("/v1/models")
        async def models():
            ids = [self.base, *self.loras]
            return {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            with self._lock:
                self.requests.append(("chat", body))
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
            try:
                if self.latency:
                    await asyncio.sleep(self.latency)
                model = body.get("model")
                if model != self.base and model not in self.loras:
                    return err(404, f"The model `{model}` does not exist.")
                last = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
                text = f"[{model}] {last}"
                words = text.split()
                lp = self.logprob_for(last)
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                if self.logprobs and body.get("logprobs"):
                    choice["logprobs"] = {"content": [{"token": w, "logprob": lp, "bytes": None, "top_logprobs": []}
                                                      for w in words]}
                return {"id": "chatcmpl-1", "object": "chat.completion", "model": model, "choices": [choice],
                        "usage": {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}}
            finally:
                with self._lock:
                    self.inflight -= 1

        @app.post("/v1/load_lora_adapter")
        async def load(request: Request):
            body = await request.json()
            self.requests.append(("load", body))
            if not self.runtime_lora:
                return err(404, "Not Found")
            name, path = body.get("lora_name"), body.get("lora_path")
            if name in self.loras:
                return err(400, f"The lora adapter '{name}' has already been loaded.")
            cfg = Path(path) / "adapter_config.json"
            if not cfg.exists() or json.loads(cfg.read_text())["peft_type"] != "LORA":
                return err(400, f"Loading lora {name} failed: No adapter found for {path}")
            self.loras[name] = path
            return f"Success: LoRA adapter '{name}' added successfully."

        @app.post("/v1/unload_lora_adapter")
        async def unload(request: Request):
            body = await request.json()
            self.requests.append(("unload", body))
            name = body.get("lora_name")
            if name not in self.loras:
                return err(404, f"The lora adapter '{name}' cannot be found.")
            del self.loras[name]
            return f"Success: LoRA adapter '{name}' removed successfully."

        return app

    def __enter__(self) -> "VLLMDouble":
        self._server = LoopbackServer(self._app(), name="vllm-double", start_timeout_s=20, access_log=False,
                                      lifespan="off", timeout_graceful_shutdown=1).start()
        self.port = self._server.port
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()


def make_lora(root: Path, name: str, version: str, peft_type: str = "LORA") -> Path:
    """An adapter folder as vLLM reads it: adapter_config.json (+ weights, not read by the double)."""
    d = root / name / version
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "r": 8, "lora_alpha": 16,
                                                       "target_modules": ["q_proj", "v_proj"]}))
    (d / "adapter_model.safetensors").write_bytes(b"")
    return d


@pytest.fixture(scope="module")
def vllm():
    with VLLMDouble(latency=0.05) as d:
        yield d


@pytest.fixture()
def double(vllm):
    vllm.requests.clear()
    vllm.loras.clear()
    vllm.max_inflight = 0
    return vllm


def conv(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ---- generation ---------------------------------------------------------------------------------
def test_batch_returns_texts_and_confidence_in_input_order(double):
    qs = [f"question number {i} {'x' * (i + 1)}" for i in range(8)]
    with VLLMEndModel(base_url=double.base_url, model="tiny-base", concurrency=8) as m:
        out = m.generate([conv(q) for q in qs], max_new_tokens=16, temperature=0.0, top_p=1.0, seed=7)
    assert [g.text for g in out] == [f"[tiny-base] {q}" for q in qs]
    for q, g in zip(qs, out):
        assert g.logprob == pytest.approx(VLLMDouble.logprob_for(q))
        assert g.confidence == pytest.approx(math.exp(VLLMDouble.logprob_for(q)))
        assert 0 < g.confidence <= 1
        assert g.tokens == len(g.text.split())
    chats = double.chats()
    assert len(chats) == 8
    assert all(b["logprobs"] is True and b["seed"] == 7 and b["max_tokens"] == 16 and b["model"] == "tiny-base"
               for b in chats)
    # The rows went out concurrently (vLLM batches them server-side), not one after another.
    assert double.max_inflight > 1


def test_system_message_replaces_the_conversations_own(double):
    with VLLMEndModel(base_url=double.base_url, model="tiny-base") as m:
        m.generate([[{"role": "system", "content": "old"}, *conv("hi")]], system="You are the shop's assistant.")
    msgs = double.chats()[0]["messages"]
    assert msgs[0] == {"role": "system", "content": "You are the shop's assistant."}
    assert [x["role"] for x in msgs] == ["system", "user"]


def test_bad_input_raises_before_any_request(double):
    with VLLMEndModel(base_url=double.base_url, model="tiny-base") as m:
        assert m.generate([]) == []
        with pytest.raises(DataError, match="role"):
            m.generate([[{"role": "bot", "content": "x"}]])
        with pytest.raises(DataError, match="max_new_tokens"):
            m.generate([conv("x")], max_new_tokens=0)
    assert double.requests == []


def test_missing_logprobs_give_confidence_one_and_are_counted():
    with VLLMDouble(logprobs=False) as d, VLLMEndModel(base_url=d.base_url, model="tiny-base") as m:
        [g] = m.generate([conv("hi")])
        assert g.confidence == 1.0 and g.text == "[tiny-base] hi"
        assert m.stats.missing_logprobs == 1


# ---- adapters ------------------------------------------------------------------------------------
def test_swap_loads_the_new_adapter_routes_to_it_and_unloads_the_old(double, tmp_path):
    v1, v2 = make_lora(tmp_path, "shop", "v1"), make_lora(tmp_path, "shop", "v2")
    with VLLMEndModel(base_url=double.base_url, model="tiny-base") as m:
        assert m.adapter_dir is None and m.name == "tiny-base" and m.method == "base"
        m.swap_adapter(v1)
        n1 = lora_name_for(v1)
        assert n1.startswith("shop-v1-")
        assert double.requests[-1] == ("load", {"lora_name": n1, "lora_path": str(v1.resolve())})
        assert m.adapter_dir == v1.resolve() and m.name == n1 and m.method == "lora"
        [g] = m.generate([conv("hi")])
        assert g.text == f"[{n1}] hi" and double.chats()[-1]["model"] == n1

        m.swap_adapter(v2)
        n2 = lora_name_for(v2)
        assert set(double.loras) == {n2}  # v1 unloaded once the swap was done
        assert [p for p, _ in double.requests[-2:]] == ["load", "unload"]
        m.generate([conv("again")])
        assert double.chats()[-1]["model"] == n2
        assert n2 in m.models()

        m.swap_adapter(None)
        assert double.loras == {} and m.name == "tiny-base" and m.adapter_dir is None
        m.generate([conv("base")])
        assert double.chats()[-1]["model"] == "tiny-base"


def test_failing_load_keeps_the_old_adapter_serving(double, tmp_path):
    v1 = make_lora(tmp_path, "shop", "v1")
    gone = tmp_path / "elsewhere" / "v9"  # not visible here: the server decides, and refuses
    with VLLMEndModel(base_url=double.base_url, model="tiny-base") as m:
        m.swap_adapter(v1)
        with pytest.raises(ModelError, match="still serving") as e:
            m.swap_adapter(gone)
        assert e.value.status == 400
        assert m.adapter_dir == v1.resolve() and m.name == lora_name_for(v1)
        assert set(double.loras) == {lora_name_for(v1)}  # nothing unloaded
        [g] = m.generate([conv("still there?")])
        assert g.text.startswith(f"[{lora_name_for(v1)}]")


def test_swap_waits_for_calls_in_flight_before_unloading_the_old_adapter(tmp_path):
    v1, v2 = make_lora(tmp_path, "shop", "v1"), make_lora(tmp_path, "shop", "v2")
    # The double checks the model name after its latency: an early unload would make the call 404.
    with VLLMDouble(latency=0.6) as d, VLLMEndModel(base_url=d.base_url, model="tiny-base") as m:
        m.swap_adapter(v1)
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(g=m.generate([conv("slow")])[0]))
        t.start()
        while not d.chats():
            time.sleep(0.01)
        m.swap_adapter(v2)  # returns once v1 is unloaded, i.e. after the call above finished
        t.join(timeout=10)
        assert result["g"].text == f"[{lora_name_for(v1)}] slow"
        assert set(d.loras) == {lora_name_for(v2)}


def test_prefix_adapters_and_non_adapter_folders_are_refused_without_a_request(double, tmp_path):
    prefix = make_lora(tmp_path, "shop", "v1", peft_type="PREFIX_TUNING")
    empty = tmp_path / "empty"
    empty.mkdir()
    with VLLMEndModel(base_url=double.base_url, model="tiny-base") as m:
        with pytest.raises(ModelError, match="LORA adapters only"):
            m.swap_adapter(prefix)
        with pytest.raises(ModelError, match="adapter_config.json"):
            m.swap_adapter(empty)
        assert m.adapter_dir is None
    assert double.requests == []


def test_server_without_runtime_lora_names_the_setting(tmp_path):
    v1 = make_lora(tmp_path, "shop", "v1")
    with VLLMDouble(runtime_lora=False) as d, VLLMEndModel(base_url=d.base_url, model="tiny-base") as m:
        with pytest.raises(ModelError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            m.swap_adapter(v1)
        assert m.adapter_dir is None


def test_an_adapter_already_loaded_by_an_earlier_run_is_reused(double, tmp_path):
    v1 = make_lora(tmp_path, "shop", "v1")
    double.loras[lora_name_for(v1)] = str(v1.resolve())  # e.g. the server outlived the previous endcloud
    with VLLMEndModel(base_url=double.base_url, model="tiny-base") as m:
        m.swap_adapter(v1)
        assert m.name == lora_name_for(v1)
        m.generate([conv("hi")])
        assert double.chats()[-1]["model"] == lora_name_for(v1)


# ---- the privacy boundary ------------------------------------------------------------------------
@pytest.mark.parametrize("host,private", [
    ("127.0.0.1", True), ("localhost", True), ("10.1.2.3", True), ("192.168.1.20", True), ("172.16.0.5", True),
    ("[::1]", True), ("[fd00::1]", True), ("gpu-box.local", True), ("169.254.10.1", True),
    ("8.8.8.8", False), ("api.example.com", False), ("[2001:4860::8888]", False), ("0.0.0.0", False),
    ("localhost.example.com", False),
])
def test_private_host_check(host, private):
    assert is_private_host(host) is private


def test_remote_hosts_are_refused_unless_allowed():
    with pytest.raises(ConfigError, match="allow_remote=True"):
        VLLMEndModel(base_url="https://api.example.com/v1", model="m")
    with pytest.raises(ConfigError, match="not loopback"):
        VLLMEndModel(base_url="http://8.8.8.8:8000", model="m")
    m = VLLMEndModel(base_url="https://api.example.com", model="m", allow_remote=True)
    assert m.base_url == "https://api.example.com/v1"
    m.close()


def test_constructor_validates_settings():
    with pytest.raises(ConfigError, match="http"):
        VLLMEndModel(base_url="127.0.0.1:8000", model="m")
    with pytest.raises(ConfigError, match="finite"):
        VLLMEndModel(base_url="http://127.0.0.1:8000", model="m", timeout=math.inf)
    with pytest.raises(ConfigError, match="max_retries"):
        VLLMEndModel(base_url="http://127.0.0.1:8000", model="m", max_retries=100)


# ---- bounded retries and timeouts (httpx.MockTransport) ------------------------------------------
def chat_json(text: str = "ok", lp: float = -0.2) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "logprobs": {"content": [{"token": text, "logprob": lp}]}}],
            "usage": {"completion_tokens": 1}}


def test_503_twice_then_200_is_retried_within_the_bound():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        if len(calls) <= 2:
            return httpx.Response(503, text="overloaded", headers={"retry-after": "0"})
        return httpx.Response(200, json=chat_json("fine"))

    with VLLMEndModel(base_url="http://127.0.0.1:9/v1", model="m", max_retries=3, backoff=0.0,
                      transport=httpx.MockTransport(handler)) as m:
        [g] = m.generate([conv("hi")])
    assert g.text == "fine" and g.confidence == pytest.approx(math.exp(-0.2))
    assert len(calls) == 3 and m.stats.retries == 2 and m.stats.outcomes["503"] == 2


def test_retries_stop_after_max_retries():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(503, text="overloaded")

    with VLLMEndModel(base_url="http://127.0.0.1:9", model="m", max_retries=2, backoff=0.0,
                      transport=httpx.MockTransport(handler)) as m:
        with pytest.raises(VLLMError, match="HTTP 503 after 3 attempts") as e:
            m.generate([conv("hi")])
    assert len(calls) == 3 and e.value.status == 503 and m.stats.failures == 1


def test_timeouts_are_bounded_and_retried():
    calls = []

    def handler(request):
        calls.append(request.extensions["timeout"])
        raise httpx.ReadTimeout("slow", request=request)

    with VLLMEndModel(base_url="http://127.0.0.1:9", model="m", timeout=2.5, max_retries=1, backoff=0.0,
                      transport=httpx.MockTransport(handler)) as m:
        with pytest.raises(ModelError, match="within 2.5s"):
            m.generate([conv("hi")])
    assert len(calls) == 2
    assert all(t["read"] == 2.5 and t["connect"] <= 5.0 for t in calls)


def test_client_errors_and_malformed_replies():
    seen = []

    def handler(request):
        seen.append(1)
        if len(seen) == 1:
            return httpx.Response(401, json={"error": "bad key"})
        if len(seen) == 2:
            return httpx.Response(200, text="not json")
        return httpx.Response(200, json=chat_json("ok"))

    with VLLMEndModel(base_url="http://127.0.0.1:9", model="m", api_key="k", max_retries=2, backoff=0.0,
                      transport=httpx.MockTransport(handler)) as m:
        with pytest.raises(VLLMError, match="ENDCLOUD_VLLM_API_KEY"):  # 401: not retried
            m.generate([conv("a")])
        assert len(seen) == 1
        [g] = m.generate([conv("b")])  # malformed once, then retried
        assert g.text == "ok" and m.stats.outcomes["malformed"] == 1


def test_connection_refused_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with VLLMEndModel(base_url=f"http://127.0.0.1:{port}", model="m", max_retries=1, backoff=0.0) as m:
            with pytest.raises(ModelError, match="is vLLM running"):
                m.generate([conv("hi")])


# ---- choosing an engine, and the server's AsyncEngine wrapping it -------------------------------------
def test_registry_and_factory(double, tmp_path, monkeypatch):
    assert ENGINES.names() == ["llama-server", "llamacpp", "sglang", "transformers", "transformers-cb", "vllm"]
    with pytest.raises(RegistryError, match="transformers-cb, vllm"):
        load_end_model("tgi")
    v1 = make_lora(tmp_path, "shop", "v1")
    monkeypatch.setenv("ENDCLOUD_VLLM_BASE_URL", double.base_url)
    monkeypatch.setenv("ENDCLOUD_VLLM_MODEL", "tiny-base")
    m = load_end_model("vllm", adapter_dir=v1, base_dir="ignored")
    try:
        assert isinstance(m, VLLMEndModel) and m.name == lora_name_for(v1)
    finally:
        m.close()
    monkeypatch.delenv("ENDCLOUD_VLLM_MODEL")
    with pytest.raises(ConfigError, match="ENDCLOUD_VLLM_MODEL"):
        load_end_model("vllm")


def test_server_engine_wraps_a_vllm_end_model(double, tmp_path):
    from endcloud.runtime.async_engine import AsyncEngine

    v1 = make_lora(tmp_path, "shop", "v1")
    model = VLLMEndModel(base_url=double.base_url, model="tiny-base")
    engine = AsyncEngine(model, max_batch=8, window_ms=20.0)

    async def run():
        engine.start()
        try:
            qs = [f"q{i}" for i in range(6)]
            outs = await asyncio.gather(*(engine.generate(conv(q), max_new_tokens=8, temperature=0.0, top_p=1.0)
                                          for q in qs))
            assert [g.text for g in outs] == [f"[tiny-base] {q}" for q in qs]
            assert all(0 < g.confidence <= 1 for g in outs)
            await asyncio.to_thread(engine.swap_adapter, v1)
            g = await engine.generate(conv("after"), max_new_tokens=8, temperature=0.0, top_p=1.0)
            assert g.text == f"[{lora_name_for(v1)}] after"
        finally:
            await engine.stop()

    try:
        asyncio.run(run())
    finally:
        model.close()
    assert engine.adapter == str(v1)
    assert engine.generations < 7  # the six concurrent requests shared batches
