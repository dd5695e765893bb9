"""A fault-injecting HTTP proxy on loopback: a real registry behind it, misbehaving on demand.

What a healthy docker-registry never does, scripted per request: answer late
(``latency``), send its body a few bytes a second (``drip``), reset the
connection (``reset_after`` bytes of body, then RST) or close it early
(``truncate_after``), claim a wrong ``Content-Length``, answer a burst of
5xx/429 (``status`` for ``times`` requests), or send a body of its own making
(``body``, e.g. 700 MB of a token answer generated as it is sent).  Every
request is recorded (method, path) and the bytes of body sent are counted,
so tests can show what a client read and what it refused to.

With ``upstream=None`` there is no registry: requests no fault answers get 404.
It is a thread-per-connection ``http.server``, so drips and stalls in one
connection never hold another; ``close()`` ends the drips at once.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host",
        "content-length"}


@dataclass
class Fault:
    """What to do to requests whose path contains ``match`` (and whose method is ``method``, if given)."""

    match: str = ""
    method: str | None = None
    #: requests it applies to before it is used up (None: every one)
    times: int | None = None
    latency: float = 0.0
    #: body bytes per second (None: as fast as the socket takes them)
    drip: float | None = None
    #: answer this instead of forwarding (a 503/429 burst); the body is ``body`` or empty
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Callable[[], Iterable[bytes]] | None = None
    #: the Content-Length to claim (None: the true one if known, else a body delimited by closing)
    content_length: int | None = None
    reset_after: int | None = None
    truncate_after: int | None = None
    used: int = 0

    def applies(self, method: str, path: str) -> bool:
        return (self.match in path and (self.method is None or self.method == method)
                and (self.times is None or self.used < self.times))


class FaultProxy:
    def __init__(self, upstream: str | None = None) -> None:
        self.upstream = upstream  # "127.0.0.1:PORT" or None
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.body_bytes_sent = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                proxy._serve(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients hanging up mid-drip are the point of this server

        self._server = Server(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fault-proxy")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()
            self.body_bytes_sent = 0

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving --------------------------------------------------------------------------------

    def _pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path.split("?", 1)[0]))
            for fault in self.faults:
                if fault.applies(method, path):
                    fault.used += 1
                    return fault
        return None

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        request_body = h.rfile.read(length) if length else None
        fault = self._pick(h.command, h.path) or Fault()
        if fault.latency and self._stopping.wait(fault.latency):
            return
        upstream: http.client.HTTPConnection | None = None
        try:
            if fault.status is not None or self.upstream is None:
                status = fault.status if fault.status is not None else (200 if fault.body else 404)
                headers: list[tuple[str, str]] = list(fault.headers.items())
                chunks: Iterable[bytes] = fault.body() if fault.body else [b""]
                true_length = None if fault.body else 0
            else:
                upstream = http.client.HTTPConnection(self.upstream, timeout=60)
                sent = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
                upstream.request(h.command, h.path, body=request_body, headers=sent)
                resp = upstream.getresponse()
                status = resp.status
                headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
                headers += list(fault.headers.items())
                declared = resp.getheader("Content-Length")
                true_length = int(declared) if declared is not None else None
                chunks = fault.body() if fault.body else _read(resp)
            claimed = fault.content_length if fault.content_length is not None else true_length
            h.send_response(status)
            for k, v in headers:
                h.send_header(k, v)
            if claimed is not None:
                h.send_header("Content-Length", str(claimed))
            else:
                h.send_header("Connection", "close")
                h.close_connection = True
            h.end_headers()
            if h.command != "HEAD":
                self._send_body(h, fault, chunks)
            h.wfile.flush()
        except OSError:
            h.close_connection = True
        finally:
            if upstream is not None:
                upstream.close()

    def _send_body(self, h: BaseHTTPRequestHandler, fault: Fault, chunks: Iterable[bytes]) -> None:
        sent = 0
        for chunk in _pieces(chunks, fault.drip):
            cut = fault.reset_after if fault.reset_after is not None else fault.truncate_after
            if cut is not None and sent + len(chunk) >= cut:
                h.wfile.write(chunk[:cut - sent])
                h.wfile.flush()
                self._count(cut - sent)
                if fault.reset_after is not None:  # RST instead of FIN
                    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.connection.close()
                h.close_connection = True
                return
            h.wfile.write(chunk)
            if fault.drip is not None:
                h.wfile.flush()
                if self._stopping.wait(len(chunk) / fault.drip):
                    return
            sent += len(chunk)
            self._count(len(chunk))

    def _count(self, n: int) -> None:
        with self._lock:
            self.body_bytes_sent += n


def _read(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    while chunk := resp.read(65536):
        yield chunk


def _pieces(chunks: Iterable[bytes], drip: float | None) -> Iterator[bytes]:
    """The body re-cut into the pieces a drip sends (a tenth of a second's worth, at least one byte)."""
    if drip is None:
        yield from chunks
        return
    step = max(1, int(drip / 10))
    for chunk in chunks:
        for i in range(0, len(chunk), step):
            yield chunk[i:i + step]
