"""A local HTTP file server with injectable latency and faults, for tests and the remote bench.

    python tests/http_server.py FOLDER [--port P] [--latency S]   # prints its URL, serves FOLDER

Not part of the package: the tests import it (``from http_server import FaultyHTTPServer``),
``benchmarks/remote_bench.py`` and ``benchmarks/remote_clients.py`` run it as a process.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import os
import random
import socket
import threading
import time
from collections import Counter
from typing import Any

__all__ = ["FaultyHTTPServer"]

# Scripted faults a path can be given (consumed one per request, in order): any HTTP status
# as text ("500", "404"...), or one of these.
FAULTS = ("reset", "stall", "slow")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if path.startswith("/_control/latency/"):  # the bench changes latency between rows
            owner.latency = float(path.rsplit("/", 1)[1])
            self._status(200, body)
            return
        fault = owner._next_fault(path)
        if owner.latency:
            time.sleep(owner.latency)
        if fault == "stall":
            # Accept the request, then say nothing until the client gives up (or we stop).
            owner._stop.wait(owner.stall_s)
            self.close_connection = True
            return
        if fault == "reset":
            # An abortive close: the client sees ECONNRESET.
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            self.close_connection = True
            return
        if fault is not None and fault.isdigit():
            self._status(int(fault), body)
            return
        file = owner._file(path)
        if file is None:
            self._status(404, body)
            return
        with open(file, "rb") as f:
            data = f.read()
        st = os.stat(file)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"' + hashlib.md5(data).hexdigest() + '"')
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.end_headers()
        if body:
            if fault == "slow":  # half the body, a pause, the rest
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                owner._stop.wait(owner.stall_s)
                data = data[len(data) // 2 :]
            self.wfile.write(data)

    def _status(self, code: int, body: bool) -> None:
        msg = f"{code}\n".encode()
        self.send_response(code)
        if code in (429, 503):
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(msg)))
        self.end_headers()
        if body:  # a HEAD answer has none (a body would corrupt the kept-alive connection)
            self.wfile.write(msg)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    owner: FaultyHTTPServer


class FaultyHTTPServer:
    """Serve ``folder`` over HTTP on 127.0.0.1 with added latency, random 503s and scripted faults.

    Args:
        folder: The folder served (``GET /a/b.png`` reads ``folder/a/b.png``).
        latency: Seconds added to every request before it is answered.
        failure_rate: Fraction of requests answered 503, drawn from ``random.Random(seed)``.
        seed: Seed of the failure draws.
        stall_s: How long a ``"stall"`` fault holds the connection silent.

    ``server.faults["/a/b.png"] = ["503", "reset"]`` makes the next two requests for that path
    fail (one per request), then it is served normally. Faults: any status as text
    (``"500"``, ``"503"``, ``"429"``, ``"403"``, ``"404"``...), ``"reset"`` (connection
    reset), ``"stall"`` (no answer), ``"slow"`` (half the body, then a stall).
    ``server.permanent`` maps paths to a fault that never runs out; ``server.requests``
    counts requests per path.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        seed: int = 0,
        stall_s: float = 30.0,
    ):
        self.folder = os.path.realpath(os.fspath(folder))
        self.latency = latency
        self.failure_rate = failure_rate
        self.stall_s = stall_s
        self.faults: dict[str, list[str]] = {}
        self.permanent: dict[str, str] = {}
        self.requests: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def _next_fault(self, path: str) -> str | None:
        with self._lock:
            self.requests[path] += 1
            if path in self.permanent:
                return self.permanent[path]
            queue = self.faults.get(path)
            if queue:
                return queue.pop(0)
            if self.failure_rate and self._rng.random() < self.failure_rate:
                return "503"
        return None

    def _file(self, path: str) -> str | None:
        from urllib.parse import unquote

        full = os.path.realpath(os.path.join(self.folder, unquote(path).lstrip("/")))
        if os.path.commonpath([full, self.folder]) != self.folder or not os.path.isfile(full):
            return None
        return full

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        assert self._httpd is not None, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self, port: int = 0) -> FaultyHTTPServer:
        """Listen on 127.0.0.1 (``port`` 0: any free port) in a background thread."""
        self._stop.clear()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and release stalled requests."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FaultyHTTPServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """``python tests/http_server.py FOLDER [--port P] [--latency S]``: serve a folder."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("folder")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--failure-rate", type=float, default=0.0)
    a = p.parse_args(argv)
    srv = FaultyHTTPServer(a.folder, latency=a.latency, failure_rate=a.failure_rate).start(a.port)
    print(srv.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
