"""A real HTTP server on 127.0.0.1 for tests: serves a directory, plus per-path faults.

Faults are what the downloaders meet on the web: 404s, hosts slower than the client's timeout,
corrupt or truncated image bytes, `X-Robots-Tag: noai` opt-outs, and connections that drop
mid-body (for resume tests). Range requests are honoured so resumable downloads are exercised.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Fault:
    """How to answer one path instead of serving its bytes."""

    kind: str  # "404" | "delay" | "corrupt" | "truncate" | "noai" | "cut" | "status"
    seconds: float = 0.0  # delay: sleep this long before answering
    keep_bytes: int = 0  # truncate/cut: how many bytes of the body are sent
    status: int = 500  # status: the HTTP status to answer with
    times: int | None = None  # apply to the first N requests only (None: always)


@dataclass
class _State:
    root: Path
    faults: dict[str, Fault] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    ranges: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:  # http.server naming
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _fault_for(self, path: str) -> Fault | None:
        state = self.server.state
        with state.lock:
            state.hits[path] = state.hits.get(path, 0) + 1
            fault = state.faults.get(path)
            if fault is None:
                return None
            if fault.times is not None:
                if fault.times <= 0:
                    return None
                fault.times -= 1
            return fault

    def _answer(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        fault = self._fault_for(path)
        if fault and fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault and fault.kind in ("404", "status"):
            code = 404 if fault.kind == "404" else fault.status
            self._send(code, b"not here\n", "text/plain", head)
            return
        file = (self.server.state.root / path.lstrip("/")).resolve()
        if self.server.state.root not in file.parents or not file.is_file():
            self._send(404, b"not found\n", "text/plain", head)
            return
        body = file.read_bytes()
        extra: dict[str, str] = {}
        if fault and fault.kind == "corrupt":
            body = b"\xff\xd8\xff\xe0" + bytes(reversed(body[4:]))
        elif fault and fault.kind == "truncate":
            body = body[: fault.keep_bytes or len(body) // 3]
        elif fault and fault.kind == "noai":
            extra["X-Robots-Tag"] = "noai, noimageai"
        self._serve_body(body, _content_type(file), head, extra, fault)

    def _serve_body(
        self, body: bytes, ctype: str, head: bool, extra: dict[str, str], fault: Fault | None
    ) -> None:
        total = len(body)
        rng = self.headers.get("Range")
        code, start, end = 200, 0, total
        if rng:
            with self.server.state.lock:
                self.server.state.ranges.append((urlsplit(self.path).path, rng))
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m and int(m.group(1)) < total:
                start = int(m.group(1))
                end = int(m.group(2)) + 1 if m.group(2) else total
                code = 206
                extra["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
            elif m:
                self._send(416, b"", "text/plain", head, {"Content-Range": f"bytes */{total}"})
                return
        extra["Accept-Ranges"] = "bytes"
        chunk = body[start:end]
        if fault and fault.kind == "cut":
            # Announce the full length but hang up early: the client sees a short read.
            self.send_response(code)
            self._headers(ctype, len(chunk), extra)
            if not head:
                self.wfile.write(chunk[: fault.keep_bytes])
                self.wfile.flush()
            self.close_connection = True
            return
        self._send(code, chunk, ctype, head, extra)

    def _headers(self, ctype: str, length: int, extra: dict[str, str]) -> None:
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()

    def _send(
        self, code: int, body: bytes, ctype: str, head: bool, extra: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(code)
            self._headers(ctype, len(body), extra or {})
            if not head:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout is shorter than our delay): nothing to do.
            self.close_connection = True


def _content_type(file: Path) -> str:
    return {
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".png": "image/png",
        ".txt": "text/plain",
        ".tsv": "text/tab-separated-values",
        ".json": "application/json",
        ".zip": "application/zip",
        ".gz": "application/gzip",
        ".bz2": "application/x-bzip2",
    }.get(file.suffix.lower(), "application/octet-stream")


class _Server(http.server.ThreadingHTTPServer):
    # The stdlib default backlog is 5: img2dataset's thread pools overflow it and time out.
    request_queue_size = 256
    daemon_threads = True
    allow_reuse_address = True
    state: _State


class LoopbackServer:
    """Serve `root` on 127.0.0.1:<ephemeral port> until `stop()`; use as a context manager."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.state = _State(root=Path(root).resolve())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def root(self) -> Path:
        return self._httpd.state.root

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, relpath: str) -> str:
        return f"{self.base_url}/{relpath.lstrip('/')}"

    def fault(self, relpath: str, kind: str, **options: float | int | None) -> str:
        """Answer `relpath` with the given fault from now on; returns its URL."""
        path = "/" + relpath.lstrip("/")
        with self._httpd.state.lock:
            self._httpd.state.faults[path] = Fault(kind=kind, **options)  # type: ignore[arg-type]
        return self.url(relpath)

    def clear_faults(self) -> None:
        with self._httpd.state.lock:
            self._httpd.state.faults.clear()

    def hits(self, relpath: str) -> int:
        return self._httpd.state.hits.get("/" + relpath.lstrip("/"), 0)

    @property
    def total_hits(self) -> int:
        """Requests answered so far, all paths together."""
        with self._httpd.state.lock:
            return sum(self._httpd.state.hits.values())

    @property
    def range_requests(self) -> list[tuple[str, str]]:
        return list(self._httpd.state.ranges)

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
