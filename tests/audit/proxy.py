"""A counting HTTP proxy in front of a registry: proves "each manifest and layer is fetched once".

canrun talks to the proxy as if it were the registry (plain HTTP, same paths);
every request is forwarded unchanged to the real ``docker-registry`` and logged
as (method, path).  Used by the audit tests and ``bench/bench_audit.py``.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host"}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client closing its keep-alive connection is not an error worth a traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream  # "127.0.0.1:PORT"
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.requests.append((self.command, self.path.split("?", 1)[0]))
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data) if self.command != "HEAD"
                                                       else int(resp.getheader("Content-Length") or 0)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def counts(self, method: str | None = None) -> Counter[str]:
        with self._lock:
            return Counter(path for m, path in self.requests if method is None or m == method)

    def content_fetches(self) -> Counter[str]:
        """GETs of manifests and blobs, by path (the version check ``/v2/`` left out)."""
        return Counter(p for p, n in self.counts("GET").items() for _ in range(n)
                       if "/manifests/" in p or "/blobs/" in p)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
