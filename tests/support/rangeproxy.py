"""A small HTTP proxy in front of a registry: counts the blob bytes it passes, and can ignore ``Range``.

The lazy-layer tests and benches need two things a real registry does not
give: a registry that ignores ``Range`` (some CDNs and old proxies answer 200
with the whole blob) and the number of layer bytes that crossed the wire.
Requests are forwarded as they came (minus ``Range`` when asked); responses
are streamed back unchanged.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}


@dataclass
class ProxyCounters:
    blob_bytes: int = 0
    blob_requests: int = 0
    range_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.blob_bytes = self.blob_requests = self.range_requests = 0


class RangeProxy:
    """``RangeProxy(upstream="127.0.0.1:5000", ignore_range=True)``; ``.host`` is what to put in references."""

    def __init__(self, upstream: str, *, ignore_range: bool = False) -> None:
        self.upstream = upstream
        self.ignore_range = ignore_range
        self.counters = ProxyCounters()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._forward()

            def do_HEAD(self) -> None:  # noqa: N802
                self._forward()

            def _forward(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP and k.lower() != "host"}
                is_blob = "/blobs/" in self.path and self.command == "GET"
                if is_blob and any(k.lower() == "range" for k in headers):
                    with proxy.counters.lock:
                        proxy.counters.range_requests += 1
                    if proxy.ignore_range:
                        headers = {k: v for k, v in headers.items() if k.lower() != "range"}
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    conn.request(self.command, self.path, headers=headers)
                    resp = conn.getresponse()
                    self.send_response(resp.status)
                    length = resp.getheader("content-length")
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP:
                            self.send_header(k, v)
                    if length is None and self.command != "HEAD":
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    sent = 0
                    while True:
                        piece = resp.read(1 << 16)
                        if not piece:
                            break
                        try:
                            self.wfile.write(piece)
                        except (BrokenPipeError, ConnectionResetError):
                            self.close_connection = True
                            break
                        sent += len(piece)
                    if is_blob:
                        with proxy.counters.lock:
                            proxy.counters.blob_bytes += sent
                            proxy.counters.blob_requests += 1
                finally:
                    conn.close()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RangeProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
