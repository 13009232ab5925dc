"""LoopbackServer: a real uvicorn on 127.0.0.1 from a thread, with a clear error when it cannot start."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from endcloud.loopback import LoopbackServer


async def hello(scope, receive, send):
    """A tiny ASGI app: answers every HTTP request with its path."""
    if scope["type"] != "http":
        return
    body = f"hello {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def lifespan_app(startup):
    """An ASGI app whose lifespan startup runs `startup()` (which may fail or be slow)."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        await startup()
                    except Exception as e:
                        await send({"type": "lifespan.startup.failed", "message": str(e)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            await hello(scope, receive, send)

    return app


def test_serves_a_real_request_on_loopback():
    with LoopbackServer(hello) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        r = httpx.get(server.url + "/ping", timeout=10)
        assert r.status_code == 200 and r.text == "hello /ping"
        assert not server.stopping


def test_stop_frees_the_port():
    server = LoopbackServer(hello).start()
    port = server.port
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    with socket.socket() as s:  # nothing listens there any more: a new listener may bind it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
    with pytest.raises(RuntimeError, match="not started"):
        server.port
    with server:  # and it starts again, on a fresh port
        assert httpx.get(server.url, timeout=10).text == "hello /"


def test_a_failing_startup_is_a_clear_error_at_once():
    async def broken():
        raise RuntimeError("no model here")

    # the thread ends: start() says so without waiting out the (long) deadline
    with pytest.raises(RuntimeError, match="exited before serving"):
        LoopbackServer(lifespan_app(broken), lifespan="on", start_timeout_s=600, log_level="critical").start()


def test_a_slow_startup_fails_at_the_deadline():
    async def slow():
        await asyncio.sleep(1)

    with pytest.raises(RuntimeError, match=r"slow-app did not start within 0.2 s \(raise start_timeout_s"):
        LoopbackServer(lifespan_app(slow), lifespan="on", start_timeout_s=0.2, name="slow-app").start()


def test_a_crash_in_the_server_thread_is_chained(tmp_path):
    missing = tmp_path / "missing-cert.pem"
    with pytest.raises(RuntimeError, match="failed before serving") as info:
        LoopbackServer(hello, ssl_certfile=str(missing)).start()
    assert isinstance(info.value.__cause__, OSError)


def test_options_are_checked_at_construction():
    # (https with ssl_certfile/ssl_keyfile is served in tests/cloud/test_transport.py, via FaultyCloud)
    with pytest.raises(TypeError, match=r"drop \['host', 'port'\]"):
        LoopbackServer(hello, host="0.0.0.0", port=80)
    with pytest.raises(TypeError):
        LoopbackServer(hello, log_levle="info")  # misspelt: uvicorn.Config refuses it at construction
    with pytest.raises(ValueError, match="start_timeout_s=0"):
        LoopbackServer(hello, start_timeout_s=0)
