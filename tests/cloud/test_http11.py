"""The lean HTTP/1.1 transport against real servers: reuse, hang-ups, chunking, timeouts, TLS."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess

import httpx
import pytest

from endcloud.cloud._http11 import Http11Transport
from endcloud.cloud.testing import FaultyCloud

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "你好"}]}, ensure_ascii=False).encode()


async def post(transport: httpx.AsyncBaseTransport, url: str, *, timeout: float = 5.0, body: bytes = BODY) -> httpx.Response:
    request = httpx.Request("POST", url + "/chat/completions", content=body,
                            headers={"Content-Type": "application/json"},
                            extensions={"timeout": httpx.Timeout(timeout).as_dict()})
    response = await transport.handle_async_request(request)
    await response.aread()
    return response


def run(coro_fn):
    return asyncio.run(coro_fn())


def test_keep_alive_reuses_one_connection_and_reads_the_reply(cloud):
    async def go():
        t = Http11Transport()
        try:
            replies = [await post(t, cloud.base_url) for _ in range(5)]
        finally:
            await t.aclose()
        return t, replies

    t, replies = run(go)
    assert [r.status_code for r in replies] == [200] * 5
    assert replies[0].json()["choices"][0]["message"]["content"] == "Reply: 你好"
    assert replies[0].headers["content-type"] == "application/json"
    assert t.connects == 1
    assert cloud.raw == [BODY] * 5  # the body arrived byte for byte


def test_concurrent_requests_open_one_connection_each_then_reuse_them():
    with FaultyCloud(latency=0.05) as cloud:
        async def go():
            t = Http11Transport(max_idle=4)
            try:
                for _ in range(3):
                    rs = await asyncio.gather(*(post(t, cloud.base_url) for _ in range(4)))
                    assert all(r.status_code == 200 for r in rs)
            finally:
                await t.aclose()
            return t.connects

        assert run(go) == 4
        assert cloud.max_inflight == 4


def test_a_connection_the_server_closed_while_idle_is_not_reused():
    with FaultyCloud(keep_alive=0.1) as cloud:
        async def go():
            t = Http11Transport()
            try:
                first = await post(t, cloud.base_url)
                await asyncio.sleep(0.5)  # uvicorn hangs up the idle connection meanwhile
                second = await post(t, cloud.base_url)
            finally:
                await t.aclose()
            return t.connects, first.status_code, second.status_code

        assert run(go) == (2, 200, 200)


def test_connection_close_from_the_server_is_honoured():
    # A minimal HTTP/1.0-style server: answers once with Connection: close and hangs up.
    async def go():
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"ok\":true}")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        t = Http11Transport()
        try:
            # No Content-Length: the body runs to the hang-up, which h11 reads as its end.
            rs = [await post(t, url) for _ in range(3)]
        finally:
            await t.aclose()
            server.close()
        return t.connects, [r.json() for r in rs]

    assert run(go) == (3, [{"ok": True}] * 3)


def test_chunked_and_dripped_bodies_are_reassembled():
    with FaultyCloud(drip=0.001) as cloud:
        async def go():
            t = Http11Transport()
            try:
                return await post(t, cloud.base_url)
            finally:
                await t.aclose()

        r = run(go)
        assert r.headers.get("transfer-encoding") == "chunked"
        assert r.json()["choices"][0]["message"]["content"] == "Reply: 你好"


def test_read_timeout_is_an_httpx_read_timeout_and_the_connection_is_dropped():
    with FaultyCloud(script=["timeout"], hang=5.0) as cloud:
        async def go():
            t = Http11Transport()
            try:
                with pytest.raises(httpx.ReadTimeout):
                    await post(t, cloud.base_url, timeout=0.2)
                ok = await post(t, cloud.base_url)  # a fresh connection, not the half-read one
            finally:
                await t.aclose()
            return t.connects, ok.status_code

        assert run(go) == (2, 200)


def test_cancelled_mid_reply_never_reuses_the_connection():
    with FaultyCloud(drip=0.05) as cloud:
        async def go():
            t = Http11Transport()
            try:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await post(t, cloud.base_url)
                cloud.drip = 0.0
                ok = await post(t, cloud.base_url)
            finally:
                await t.aclose()
            return t.connects, ok.json()["choices"][0]["message"]["content"]

        assert run(go) == (2, "Reply: 你好")


def test_refused_connection_is_an_httpx_connect_error():
    async def go():
        t = Http11Transport()
        try:
            await post(t, "http://127.0.0.1:9")
        finally:
            await t.aclose()

    with pytest.raises(httpx.ConnectError):
        run(go)


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


def test_tls_with_a_trusted_certificate_and_refusal_of_an_untrusted_one(self_signed):
    cert, key = self_signed
    with FaultyCloud(ssl_certfile=str(cert), ssl_keyfile=str(key)) as cloud:
        assert cloud.base_url.startswith("https://")

        async def go(ctx):
            t = Http11Transport(ssl_context=ctx)
            try:
                return [await post(t, cloud.base_url) for _ in range(2)], t.connects
            finally:
                await t.aclose()

        trusting = ssl.create_default_context(cafile=str(cert))
        replies, connects = run(lambda: go(trusting))
        assert [r.status_code for r in replies] == [200, 200] and connects == 1
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            run(lambda: go(ssl.create_default_context()))  # the system CAs do not know it


class Scripted:
    """A raw TCP server: answers the n-th request with the n-th byte string, as given (in
    pieces of `piece` bytes when set), then hangs up if the string ends with `HANGUP`."""

    HANGUP = b"<hangup>"

    def __init__(self, replies: list[bytes], piece: int = 0):
        self.replies, self.piece, self.connections = list(replies), piece, 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                n = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
                await reader.readexactly(n)
                reply = self.replies.pop(0)
                hangup = reply.endswith(self.HANGUP)
                reply = reply.removesuffix(self.HANGUP)
                step = self.piece or len(reply)
                for i in range(0, len(reply), step):
                    writer.write(reply[i:i + step])
                    await writer.drain()
                    if self.piece:
                        await asyncio.sleep(0.001)
                if hangup:
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc):
        self.server.close()


def exchange(replies: list[bytes], n: int | None = None, piece: int = 0):
    """Send n requests to a Scripted server; returns (responses or exceptions, connections opened)."""
    async def go():
        script = Scripted(replies, piece)
        async with script as url:
            t = Http11Transport()
            out = []
            try:
                for _ in range(n or len(replies)):
                    try:
                        out.append(await post(t, url, timeout=2.0))
                    except httpx.TransportError as e:
                        out.append(e)
            finally:
                await t.aclose()
            return out, t.connects

    return asyncio.run(go())


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


def test_interim_replies_chunks_with_extensions_and_trailers_fed_byte_by_byte():
    reply = (b"HTTP/1.1 100 Continue\r\n\r\n"
             b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Note: a\r\nx-note: b\r\n\r\n"
             b"4;name=value\r\n{\"ok\r\n7\r\n\":true}\r\n0\r\nX-Trailer: t\r\n\r\n")
    (r, again), connects = exchange([reply, OK], piece=1)
    assert r.status_code == 200 and r.json() == {"ok": True} and r.headers.get_list("x-note") == ["a", "b"]
    assert again.json() == {"ok": True} and connects == 1  # the connection was left clean and reused


def test_bare_lf_no_body_statuses_and_http10_replies():
    lf = b"HTTP/1.1 200 OK\nContent-Length: 11\n\n{\"ok\":true}"
    no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    http10 = b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
    (a, b, c, d), connects = exchange([lf, no_content, http10, OK])
    assert a.json() == {"ok": True} and b.status_code == 204 and b.content == b""
    assert c.extensions["http_version"] == b"HTTP/1.0" and d.json() == {"ok": True}
    assert connects == 2  # an HTTP/1.0 reply ends its connection


@pytest.mark.parametrize("reply, match", [
    (b"HTTP/2 200 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", "header line"),
    (b"HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\n\r\n", "header line"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", "chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"ok\":" + Scripted.HANGUP, "closed the connection"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "64 KiB"),
], ids=["http2", "two-lengths", "hex-length", "space-in-name", "folding", "signed-chunk", "gzip-te", "truncated", "huge-head"])
def test_replies_that_are_not_clean_http11_are_protocol_errors(reply, match):
    (err,), _ = exchange([reply])
    assert isinstance(err, httpx.RemoteProtocolError) and match in str(err)


def test_a_body_without_framing_runs_to_the_hang_up():
    (r,), _ = exchange([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"ok\":true}" + Scripted.HANGUP])
    assert r.json() == {"ok": True}


def test_a_header_that_would_split_the_request_is_refused(cloud):
    async def go():
        t = Http11Transport()
        try:
            request = httpx.Request("POST", cloud.base_url + "/chat/completions", content=BODY,
                                    headers={"X-Evil": "a\r\nX-Injected: 1"})
            await t.handle_async_request(request)
        finally:
            await t.aclose()

    with pytest.raises(httpx.LocalProtocolError, match="illegal header"):
        run(go)
    assert cloud.raw == []
