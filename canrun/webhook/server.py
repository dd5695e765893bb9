"""uvicorn over TLS, with certificates reloaded from disk without a restart.

The API server only talks HTTPS to webhooks, and serving certificates rotate
(cert-manager renews them into the mounted Secret; ``--self-managed-certs``
rotates its own).  A restart on every rotation would drop in-flight admissions,
so the server keeps one ``ssl.SSLContext`` for its whole life and loads the new
chain into it when the files change: OpenSSL copies the certificate into each
connection when the handshake starts, so connections opened after the reload
see the new certificate and open ones keep theirs.

A new pair is first loaded into a scratch context: a half-written file or a key
that does not match its certificate is reported and retried at the next check,
and never leaves the live context with a new certificate and an old key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from canrun.errors import UsageError

log = logging.getLogger("canrun.webhook.server")


def _context(certfile: str, keyfile: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


@dataclass(frozen=True)
class _Stamp:
    cert: tuple[int, int, int]
    key: tuple[int, int, int]


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ReloadingTLS:
    """A server SSLContext that follows the certificate and key files on disk."""

    def __init__(self, certfile: str | Path, keyfile: str | Path, *, interval: float = 5.0) -> None:
        self.certfile = str(certfile)
        self.keyfile = str(keyfile)
        self.interval = interval
        self.reloads = 0
        try:
            self.context = _context(self.certfile, self.keyfile)
            self._stamp: _Stamp | None = _Stamp(_stamp(self.certfile), _stamp(self.keyfile))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load the TLS certificate {self.certfile} and key {self.keyfile}: {exc}") from exc

    def check(self) -> bool:
        """Reload if either file changed since the last load; True when a new chain is now served."""
        try:
            stamp = _Stamp(_stamp(self.certfile), _stamp(self.keyfile))
        except OSError as exc:  # mid-rotation (a Secret volume swaps a symlink): try again next time
            log.warning("TLS files not readable (%s); keeping the current certificate", exc)
            return False
        if stamp == self._stamp:
            return False
        try:
            _context(self.certfile, self.keyfile)  # prove the pair before touching the live context
            self.context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            log.warning("new TLS certificate not loaded (%s); keeping the current one", exc)
            return False
        self._stamp = stamp
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.certfile)
        return True

    async def watch(self) -> None:
        """Check the files every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.check()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket bound now, so the port (even port 0) is known before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without it a response written in two parts (headers, body) waits
    # for the client's delayed ACK, 40 ms per admission
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def make_server(app: Any, tls: ReloadingTLS, *, host: str, port: int, log_level: str = "warning",
                keep_alive: int = 75) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, ssl_certfile=tls.certfile, ssl_keyfile=tls.keyfile,
        ssl_context_factory=lambda _config, _default: tls.context,
        log_config=None, log_level=log_level, access_log=False, lifespan="on",
        # the API server keeps connections open; close idle ones later than it does
        timeout_keep_alive=keep_alive, server_header=False, date_header=False,
    )
    return uvicorn.Server(config)


async def serve(app: Any, tls: ReloadingTLS, *, host: str = "0.0.0.0", port: int = 8443,
                sock: socket.socket | None = None, log_level: str = "warning",
                started: Callable[[], None] | None = None,
                also: list[Callable[[], Awaitable[None]]] | None = None) -> None:
    """Run the app until the server exits (SIGTERM/SIGINT in the main thread, or ``should_exit``)."""
    server = make_server(app, tls, host=host, port=port, log_level=log_level)
    sock = sock or bind(host, port)
    watcher = asyncio.create_task(tls.watch(), name="tls-reload")
    extra = [asyncio.create_task(fn()) for fn in (also or [])]

    async def notify() -> None:
        while not server.started:
            await asyncio.sleep(0.01)
        if started is not None:
            started()

    notifier = asyncio.create_task(notify())
    try:
        await server.serve(sockets=[sock])
    finally:
        for task in (watcher, notifier, *extra):
            task.cancel()
        await asyncio.gather(watcher, notifier, *extra, return_exceptions=True)
