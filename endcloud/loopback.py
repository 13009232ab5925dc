"""Serve an ASGI app with a real uvicorn on a thread, on a free port of 127.0.0.1.

    with LoopbackServer(app) as server:           # returns once uvicorn accepts connections
        httpx.get(server.url + "/healthz")        # server.url == f"http://127.0.0.1:{server.port}"

    server = LoopbackServer(app, log_level="info", lifespan="on").start()   # uvicorn options pass through
    ...
    server.stop()                                 # asks uvicorn to exit, waits for the thread

For the demo's own server, end-to-end tests and the HTTP test doubles (`endcloud.testing`).
It binds the listening socket itself before uvicorn starts, so the port is known at once and
no other process can take it between "find a free port" and "uvicorn binds it". It listens on
127.0.0.1 only: nothing outside the machine can reach it.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

# uvicorn's own binding options: the socket is ours (127.0.0.1, a free port, one process).
_OWN_OPTIONS = ("host", "port", "uds", "fd", "workers", "reload")


class LoopbackServer:
    """A real uvicorn serving `app` on 127.0.0.1 from a daemon thread (start/stop or `with`).

    `start_timeout_s` bounds the wait for uvicorn to accept connections (the app's lifespan
    startup counts: models load there); `stop_timeout_s` bounds the wait for it to finish.
    Other keywords go to `uvicorn.Config` (`log_level` defaults to "warning"). `name` names
    the thread and appears in errors. A stopped server can be started again, on a new port."""

    def __init__(self, app: Any, *, start_timeout_s: float = 60.0, stop_timeout_s: float = 10.0,
                 name: str = "loopback-server", **uvicorn_options: Any):
        import uvicorn

        own = sorted(set(uvicorn_options) & set(_OWN_OPTIONS))
        if own:
            raise TypeError(f"LoopbackServer binds its own socket on 127.0.0.1; drop {own!r}")
        if not start_timeout_s > 0 or not stop_timeout_s > 0:
            raise ValueError(f"timeouts must be positive, got start_timeout_s={start_timeout_s!r} "
                             f"stop_timeout_s={stop_timeout_s!r}")
        # Built here, so a misspelt option fails at construction, not in the server thread.
        self.config = uvicorn.Config(app, **{"log_level": "warning", **uvicorn_options})
        self.start_timeout_s, self.stop_timeout_s, self.name = start_timeout_s, stop_timeout_s, name
        self._server: Any = None  # the uvicorn.Server of the current run
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._crash: BaseException | None = None  # what ended the server thread, if it raised

    # -- where it listens -----------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError(f"{self.name} is not started; use it as a context manager or call start()")
        return self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash (https when ssl options were given)."""
        return f"{'https' if self.config.is_ssl else 'http'}://127.0.0.1:{self.port}"

    @property
    def stopping(self) -> bool:
        """True once stop() was asked: long-running handlers can watch it to end early."""
        return self._server is not None and self._server.should_exit

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "LoopbackServer":
        """Serve from a new thread; return once uvicorn accepts connections, else raise
        RuntimeError (the thread ended, or `start_timeout_s` passed) with the server stopped."""
        import uvicorn

        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already running on {self.url}")
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on an accepted socket only when
        # the socket says it is TCP, and an accepted socket inherits the listener's proto.
        # With Nagle left on, uvicorn's two writes per response (head, then body) wait for
        # the client's delayed ACK: +40 ms on every reply, which no real server adds
        # (uvicorn binding host/port itself, via getaddrinfo, gets NODELAY).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock, self._crash = sock, None
        self._server = uvicorn.Server(self.config)
        self._thread = threading.Thread(target=self._run, args=(self._server, sock), daemon=True, name=self.name)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                port, crash = self.port, self._crash
                self.stop()
                if isinstance(crash, SystemExit):  # uvicorn's own exit: it logged why (e.g. the app's startup failed)
                    raise RuntimeError(f"{self.name} on 127.0.0.1:{port} exited before serving "
                                       f"(uvicorn exit code {crash.code}; see its log above)")
                raise RuntimeError(f"{self.name} on 127.0.0.1:{port} failed before serving: {crash!r}") from crash
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start within {self.start_timeout_s:g} s "
                                   f"(raise start_timeout_s if its startup is slow)")
            time.sleep(0.01)
        return self

    def _run(self, server: Any, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 — start() raises it in the caller
            self._crash = exc
            if server.started:
                raise  # nobody waits on a running server: let threading's excepthook report it

    def stop(self) -> None:
        """Ask uvicorn to exit and wait up to `stop_timeout_s` for it; the port is then free."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.stop_timeout_s)
        if self._sock is not None:
            self._sock.close()  # uvicorn closes it on shutdown; not when it failed before serving
        self._server = self._thread = self._sock = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
