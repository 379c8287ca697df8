"""Servers that misbehave at the TCP level, on 127.0.0.1, for hang tests.

- `SilentPort`: accepts every connection and never sends a byte (a wedged Ray GCS, a Spark master
  that hangs, an object store behind a dead load balancer). A TCP connect to it succeeds.
- `Relay`: forwards to a real server (moto, a Ray head) until `freeze()`; from then on it holds
  every open and new connection without forwarding a byte, as an endpoint that dies mid-transfer
  looks to a client, until `thaw()`.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class _Listener:
    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._held.append(conn)
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        """Keep the connection open and say nothing (subclasses forward it)."""

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        with self._lock:
            for conn in self._held:
                with contextlib.suppress(OSError):
                    conn.close()
            self._held.clear()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SilentPort(_Listener):
    """A port that accepts and never answers."""


class Relay(_Listener):
    """A TCP forwarder to `target` (host, port) that can be frozen: connections stay open, no
    byte moves either way, until thawed."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target
        self._flowing = threading.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def _accepted(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            conn.close()
            return
        with self._lock:
            self._held.append(upstream)
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        try:
            while not self._stop.is_set():
                if not self._flowing.is_set():  # frozen: hold everything
                    self._flowing.wait(0.2)
                    continue
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                self._flowing.wait()  # a chunk read just before a freeze is held too
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
