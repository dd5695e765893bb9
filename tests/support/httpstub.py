"""A tiny real HTTP server on loopback whose answers a test scripts, and which records every request.

For the behaviours a well-behaved registry never shows on demand: 503 bursts,
slow answers, redirects to another host, a token endpoint that counts its calls.
It is a real socket server (``http.server`` in a thread), so the client under
test goes through its whole transport stack.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class StubRequest:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lowercased names
    body: bytes = b""


@dataclass
class StubResponse:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: seconds to wait before answering (a slow registry)
    delay: float = 0.0


Handler = Callable[[StubRequest], StubResponse]


@dataclass
class StubServer:
    host: str  # "127.0.0.1:PORT"
    requests: list[StubRequest]
    server: ThreadingHTTPServer

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def requests_to(self, prefix: str) -> list[StubRequest]:
        return [r for r in self.requests if r.path.startswith(prefix)]


@contextmanager
def stub_server(handler: Handler, *, listen: str = "127.0.0.1") -> Iterator[StubServer]:
    requests: list[StubRequest] = []
    lock = threading.Lock()

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = StubRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with lock:
                requests.append(req)
            resp = handler(req)
            if resp.delay:
                time.sleep(resp.delay)
            try:
                self.send_response(resp.status)
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_HEAD = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

    server = ThreadingHTTPServer((listen, 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield StubServer(f"{listen}:{server.server_address[1]}", requests, server)
    finally:
        server.shutdown()
        server.server_close()
