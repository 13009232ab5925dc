"""A TCP relay on 127.0.0.1 that records every byte passing each way (the wire-audit tests' tap).

    shops ──► WireTap(127.0.0.1:<free>) ──► federation server
              .up   every byte the shops sent
              .down every byte the server sent back
"""

from __future__ import annotations

import socket
import threading


class WireTap:
    def __init__(self, upstream: str):
        host, _, port = upstream.rpartition(":")
        self.upstream = (host.strip("[]") or "127.0.0.1", int(port))
        self.up = bytearray()
        self.down = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="wiretap").start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, self.up), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.down), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
