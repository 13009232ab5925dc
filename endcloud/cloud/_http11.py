"""A lean HTTP/1.1 keep-alive transport for httpx: asyncio protocols, O(1) pooling.

    transport = Http11Transport(max_idle=32)
    response = await transport.handle_async_request(httpx.Request("POST", url, content=body))
    await response.aread()

It speaks httpx's public transport interface (`httpx.AsyncBaseTransport`), so the teacher
builds `httpx.Request`s and reads `httpx.Response`s whichever transport is plugged in — an
injected `httpx.MockTransport` in tests, `httpx.AsyncHTTPTransport` behind a proxy, or this.

Why it exists: at concurrency 32, httpx's default stack cost the teacher 2.6–3.5 ms of CPU
per request (`AsyncClient` request building and cookies, httpcore's pool rescanning every
connection and queued request on each event with a poll() per idle connection, anyio
wrappers, head and body in two writes); one pool of 32 cost 6–7 ms. This transport, with
the same httpx Request/Response objects around it, costs about a quarter of that: a
connection is an `asyncio.Protocol` feeding a buffer that a small strict HTTP/1.1 reader
parses (see `_Connection`), the idle connections of an origin are a LIFO list, and a
request goes out in one write. A connection the server closed while idle is noticed
by the event loop (it reads every socket it holds), so nothing polls before reuse.

What it does not do, and who does: proxies (the teacher uses `httpx.AsyncHTTPTransport`
when one is configured), HTTP/2, streaming bodies (the teacher reads whole replies), and a
whole-request deadline (the caller's `asyncio.timeout`). Timeouts honoured here, from the
request's httpx `timeout` extension: `connect` (TCP + TLS handshake) and `read` (the
longest gap between bytes of the reply). Errors are httpx's own `TransportError` classes.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any

import httpx

# Reply heads larger than this are refused (providers send < 2 KiB).
MAX_HEAD_BYTES = 64 * 1024
_TIMED_OUT = object()
_HEAD_END = re.compile(rb"\r?\n\r?\n")  # RFC 9112 lets a recipient accept bare LF
_LINE_END = re.compile(rb"\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([^\r\n]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_NO_BODY = frozenset({204, 304})


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(_TIMED_OUT)


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    """`POST /path HTTP/1.1` and the headers, refusing anything that could split the head."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    for name, value in request.headers.raw:
        if not _TOKEN.fullmatch(name) or b"\r" in value or b"\n" in value or b"\0" in value:
            raise httpx.LocalProtocolError(f"illegal header {name!r}: {value[:40]!r}", request=request)
        lines.append(name + b": " + value)
    if body and "content-length" not in request.headers and "transfer-encoding" not in request.headers:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes in go to a buffer; a waiter is woken on each chunk.

    The reply is read by a small strict HTTP/1.1 reader (status line, headers, 1xx interim
    replies, Content-Length, chunked, or a body that runs to the hang-up) rather than h11:
    h11's validating state machine cost ~0.25 ms of CPU per request here against ~0.02 ms
    for this, and on the shared 2-core machine each extra 0.5 ms of client CPU per request
    cost 0.07–0.15 of the bench's throughput ratio. What it does not understand is a
    RemoteProtocolError (the teacher retries those), never a guess.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.eof = False  # the server hung up (its side at least)
        self.closed = False  # we will not use it again
        self._waiter: asyncio.Future | None = None

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # let asyncio close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.closed = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- use ---------------------------------------------------------------------------
    @property
    def reusable(self) -> bool:
        """Idle and clean: no unread bytes from the server, not closed by either side."""
        return not (self.closed or self.eof or self.buf)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def _more(self, read_timeout: float | None, request: httpx.Request) -> None:
        """Wait for more bytes from the server, at most `read_timeout` seconds; EOF is an error
        (callers that accept a hang-up as the end of the body check `eof` first)."""
        if self.eof:
            raise httpx.RemoteProtocolError("the server closed the connection without a (complete) reply",
                                            request=request)
        loop = asyncio.get_running_loop()
        self._waiter = fut = loop.create_future()
        timer = loop.call_later(read_timeout, _expire, fut) if read_timeout is not None else None
        try:
            if await fut is _TIMED_OUT:
                raise httpx.ReadTimeout(f"no reply bytes within {read_timeout:g}s", request=request)
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def _line(self, read_timeout: float | None, request: httpx.Request) -> bytes:
        while True:
            m = _LINE_END.search(self.buf)
            if m:
                line = bytes(self.buf[:m.start()])
                del self.buf[:m.end()]
                return line
            if len(self.buf) > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError("a reply line longer than 64 KiB", request=request)
            await self._more(read_timeout, request)

    async def _exactly(self, n: int, read_timeout: float | None, request: httpx.Request) -> bytes:
        while len(self.buf) < n:
            await self._more(read_timeout, request)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def _head(self, read_timeout: float | None, request: httpx.Request):
        """Status line and headers -> (minor version, status, reason, raw headers, lower-cased dict)."""
        while True:
            m = _HEAD_END.search(self.buf)
            if m or len(self.buf) > MAX_HEAD_BYTES:
                break
            await self._more(read_timeout, request)
        if m is None or m.start() > MAX_HEAD_BYTES:
            raise httpx.RemoteProtocolError("a reply head larger than 64 KiB", request=request)
        lines = _LINE_END.split(bytes(self.buf[:m.start()]))
        del self.buf[:m.end()]
        status_line = _STATUS_LINE.fullmatch(lines[0])
        if not status_line:
            raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:60]!r}", request=request)
        raw, seen = [], {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.fullmatch(name):  # also refuses obsolete line folding
                raise httpx.RemoteProtocolError(f"bad reply header line {line[:60]!r}", request=request)
            value = value.strip(b" \t")
            raw.append((name, value))
            key = name.lower()
            seen[key] = seen[key] + b"," + value if key in seen else value
        minor, status = int(status_line[1]), int(status_line[2])
        return minor, status, status_line[3] or b"", raw, seen

    async def exchange(self, request: httpx.Request, body: bytes, read_timeout: float | None) -> httpx.Response:
        """Send one request and read its whole reply; leaves the connection ready for the next."""
        if self.closed or self.eof or self.transport is None or self.transport.is_closing():
            raise httpx.RemoteProtocolError("the server closed the connection before the request", request=request)
        self.transport.write(_request_head(request, body) + body)  # one write, one segment when it fits

        while True:
            minor, status, reason, raw, seen = await self._head(read_timeout, request)
            if status >= 200:
                break
            if status == 101:
                raise httpx.RemoteProtocolError("the server switched protocols; only HTTP/1.1 is spoken here",
                                                request=request)
            # 1xx (100 Continue, 103 Early Hints): interim, the final answer follows.
        connection = {t.strip().lower() for t in seen.get(b"connection", b"").split(b",")}
        keep = minor == 1 and b"close" not in connection
        te = seen.get(b"transfer-encoding")
        if request.method == "HEAD" or status in _NO_BODY:
            content = b""
        elif te is not None:
            if te.split(b",")[-1].strip().lower() != b"chunked":
                raise httpx.RemoteProtocolError(f"unsupported Transfer-Encoding {te!r}", request=request)
            content = await self._chunked(read_timeout, request)
            keep = keep and b"content-length" not in seen  # both framings: do not trust what follows
        elif b"content-length" in seen:
            lengths = {v.strip() for v in seen[b"content-length"].split(b",")}
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                raise httpx.RemoteProtocolError(f"bad Content-Length {seen[b'content-length']!r}", request=request)
            content = await self._exactly(int(lengths.pop()), read_timeout, request)
        else:  # no framing: the body is whatever comes before the hang-up
            while not self.eof:
                await self._more(read_timeout, request)
            content, keep = bytes(self.buf), False
            self.buf.clear()
        if not keep or self.buf:  # "Connection: close", HTTP/1.0, or bytes nobody asked for
            self.close()
        version = b"HTTP/1.1" if minor == 1 else b"HTTP/1.0"
        return httpx.Response(status, headers=raw, stream=httpx.ByteStream(content),
                              extensions={"http_version": version, "reason_phrase": reason})

    async def _chunked(self, read_timeout: float | None, request: httpx.Request) -> bytes:
        chunks = []
        while True:
            size_line = (await self._line(read_timeout, request)).split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(size_line):  # int(x, 16) alone would take "0x1f", "+5", "1_0"
                raise httpx.RemoteProtocolError(f"bad chunk size {size_line[:20]!r}", request=request)
            size = int(size_line, 16)
            if size == 0:
                while await self._line(read_timeout, request):  # trailers, up to the empty line
                    pass
                return b"".join(chunks)
            chunks.append(await self._exactly(size, read_timeout, request))
            if await self._line(read_timeout, request):
                raise httpx.RemoteProtocolError("a chunk longer than its size", request=request)


class Http11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections per origin, reused most-recent-first.

    Make one per event loop (its connections belong to the loop that opened them).
    `max_idle` bounds the idle connections kept per origin; it does not bound how many are
    open at once (the caller's concurrency limit does).
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, max_idle: int = 32):
        self._ssl_context = ssl_context
        self.max_idle = max_idle
        self._idle: dict[tuple[bytes, str, int], list[_Connection]] = {}
        self._closed = False
        self.connects = 0  # connections opened (tests check reuse with it)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("Http11Transport is closed")
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}", request=request)
        port = url.port or (443 if scheme == b"https" else 80)
        origin = (scheme, url.host, port)
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
        conn = self._checkout(origin)
        if conn is None:
            conn = await self._connect(origin, timeouts.get("connect"), request)
        try:
            response = await conn.exchange(request, body, timeouts.get("read"))
        except OSError as e:
            conn.close()
            raise httpx.ReadError(f"{type(e).__name__}: {e}", request=request) from None
        except BaseException:
            conn.close()  # mid-reply (timeout, cancelled, garbage): never reuse it
            raise
        self._checkin(origin, conn)
        return response

    def _checkout(self, origin: tuple[bytes, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.reusable:
                return conn
            conn.close()
        return None

    def _checkin(self, origin: tuple[bytes, str, int], conn: _Connection) -> None:
        if self._closed or not conn.reusable:
            conn.close()
            return
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self.max_idle:
            idle.pop(0).close()  # the longest idle goes: most likely stale anyway
        idle.append(conn)

    async def _connect(self, origin: tuple[bytes, str, int], timeout: float | None, request: httpx.Request) -> _Connection:
        scheme, host, port = origin
        tls = None
        if scheme == b"https":
            tls = self._ssl_context or ssl.create_default_context()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(_Connection, host, port, ssl=tls,
                                                       server_hostname=host if tls else None)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {timeout:g}s", request=request) from None
        except OSError as e:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise httpx.ConnectError(f"{type(e).__name__}: {e}", request=request) from None
        self.connects += 1
        return conn

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
