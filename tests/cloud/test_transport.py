"""The teacher's default transport (aiohttp under httpx, via httpx-aiohttp) against real
servers on 127.0.0.1: keep-alive replies, chunked bodies, timeouts, refused ports, TLS."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess

import httpx
import pytest

from endcloud.cloud.openai_backend import OpenAITeacher
from endcloud.testing import FaultyCloud

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "你好"}]}, ensure_ascii=False).encode()


def default_transport(base_url: str) -> httpx.AsyncBaseTransport:
    return OpenAITeacher(base_url=base_url, model="m", api_key="k")._default_transport()


async def post(transport: httpx.AsyncBaseTransport, url: str, *, timeout: float = 5.0) -> httpx.Response:
    request = httpx.Request("POST", url + "/chat/completions", content=BODY,
                            headers={"Content-Type": "application/json"},
                            extensions={"timeout": httpx.Timeout(timeout).as_dict()})
    response = await transport.handle_async_request(request)
    await response.aread()
    return response


def run(coro_fn):
    return asyncio.run(coro_fn())


def test_the_default_is_aiohttp_and_a_proxy_switches_to_httpx(monkeypatch):
    from httpx_aiohttp import AiohttpTransport

    assert isinstance(default_transport("http://127.0.0.1:9/v1"), AiohttpTransport)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert isinstance(default_transport("http://api.example.com/v1"), httpx.AsyncHTTPTransport)


def test_keep_alive_replies_arrive_byte_for_byte(cloud):
    async def go():
        t = default_transport(cloud.base_url)
        try:
            return [await post(t, cloud.base_url) for _ in range(5)]
        finally:
            await t.aclose()

    replies = run(go)
    assert [r.status_code for r in replies] == [200] * 5
    assert replies[0].json()["choices"][0]["message"]["content"] == "Reply: 你好"
    assert cloud.raw == [BODY] * 5


def test_chunked_and_dripped_bodies_are_reassembled():
    with FaultyCloud(drip=0.001) as cloud:
        async def go():
            t = default_transport(cloud.base_url)
            try:
                return await post(t, cloud.base_url)
            finally:
                await t.aclose()

        r = run(go)
        assert r.headers.get("transfer-encoding") == "chunked"
        assert r.json()["choices"][0]["message"]["content"] == "Reply: 你好"


def test_read_timeout_is_an_httpx_timeout_and_the_next_request_still_works():
    with FaultyCloud(script=["timeout"], hang=5.0) as cloud:
        async def go():
            t = default_transport(cloud.base_url)
            try:
                with pytest.raises(httpx.TimeoutException):
                    await post(t, cloud.base_url, timeout=0.2)
                return (await post(t, cloud.base_url)).status_code
            finally:
                await t.aclose()

        assert run(go) == 200


def test_a_refused_port_says_cannot_reach_not_timeout():
    from endcloud.errors import TeacherError, TeacherTimeout

    async def go():
        t = default_transport("http://127.0.0.1:9/v1")
        try:
            await post(t, "http://127.0.0.1:9/v1")
        finally:
            await t.aclose()

    with pytest.raises(httpx.TransportError):  # httpx-aiohttp 0.2 calls it ConnectTimeout
        run(go)
    teacher = OpenAITeacher(base_url="http://127.0.0.1:9/v1", model="m", api_key="k", max_retries=1, backoff=0.01,
                            require_gate=False)
    with pytest.raises(TeacherError, match="cannot reach") as info:
        teacher.reply([{"role": "user", "content": "hi"}])
    assert not isinstance(info.value, TeacherTimeout)


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_verifies_the_certificate(self_signed):
    from httpx_aiohttp import AiohttpTransport

    cert, key = self_signed
    with FaultyCloud(ssl_certfile=str(cert), ssl_keyfile=str(key)) as cloud:
        assert cloud.base_url.startswith("https://")

        async def go(transport):
            try:
                return [(await post(transport, cloud.base_url)).status_code for _ in range(2)]
            finally:
                await transport.aclose()

        trusting = AiohttpTransport(verify=ssl.create_default_context(cafile=str(cert)))
        assert run(lambda: go(trusting)) == [200, 200]
        # the default trust store (certifi) does not know it
        with pytest.raises(httpx.TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            run(lambda: go(default_transport(cloud.base_url)))
