"""A real webhook for tests: ``canrun``'s engine and AdmissionService behind uvicorn over TLS, in a thread.

The webhook, robustness and security suites each wrap this in a handle of their own (what they assert
on differs); how the server is put together is the same everywhere, and is the way ``canrun serve``
puts it together.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from canrun.config import Engine, Settings, WebhookSettings, open_engine
from canrun.kube.scheduling import NodePool
from canrun.platform import Platform
from canrun.webhook.app import create_app
from canrun.webhook.metrics import Metrics
from canrun.webhook.server import ReloadingTLS, bind, make_server
from canrun.webhook.service import AdmissionService, PoolSource, static_pool

AMD64_ONLY = static_pool(NodePool.from_platforms([Platform("linux", "amd64")]))


class ServerThread:
    """The webhook server in a thread of its own with its own event loop (tests, bench).

    ``setup`` is an async context manager factory yielding the ASGI app; it runs on the
    server's loop, so whatever the app needs (an engine with its HTTP client) is made
    and closed on the loop that uses it.
    """

    def __init__(self, tls: ReloadingTLS, setup: Callable[[], AbstractAsyncContextManager[Any]], *,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.tls = tls
        self.setup = setup
        self.sock = bind(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.app: Any = None
        self._server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="canrun-webhook", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            async with self.setup() as app:
                self.app = app
                server = make_server(app, self.tls, host=self.host, port=self.port)
                self._server = server
                watcher = asyncio.create_task(self.tls.watch())
                waiter = asyncio.create_task(self._wait_started(server))
                try:
                    await server.serve(sockets=[self.sock])
                finally:
                    watcher.cancel()
                    waiter.cancel()
                    await asyncio.gather(watcher, waiter, return_exceptions=True)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
        finally:
            self._ready.set()

    async def _wait_started(self, server: uvicorn.Server) -> None:
        while not server.started:
            await asyncio.sleep(0.01)
        self._ready.set()

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None or not (self._server and self._server.started):
            raise RuntimeError(f"webhook server did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 20.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout)
        self.sock.close()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        """Run a coroutine on the server's loop (to reach the service from a test) and wait for it."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@dataclass
class Served:
    """A running webhook: its server thread, an HTTPS client trusting its CA, its service and engine."""

    thread: ServerThread
    client: httpx.Client
    service: AdmissionService
    engine: Engine

    def close(self) -> None:
        self.client.close()
        self.thread.stop()


def serve_webhook(settings: Settings, webhook: WebhookSettings, *, cert: Path, key: Path, ca_file: Path,
                  pool: PoolSource = AMD64_ONLY, cluster: Any = None, reload_interval: float = 5.0,
                  client_timeout: float = 30.0) -> Served:
    holder: dict[str, Any] = {}

    @asynccontextmanager
    async def setup() -> AsyncIterator[Any]:
        async with open_engine(settings) as engine:
            metrics = Metrics()
            metrics.watch_engine(lambda: getattr(engine.client, "stats", {}), lambda: engine.store.stats)
            service = AdmissionService(engine.validator, pool, settings=webhook, cluster=cluster, metrics=metrics)
            holder.update(service=service, engine=engine)
            yield create_app(service)

    thread = ServerThread(ReloadingTLS(cert, key, interval=reload_interval), setup).start()
    client = httpx.Client(base_url=thread.url, verify=ssl.create_default_context(cafile=str(ca_file)),
                          timeout=client_timeout)
    return Served(thread, client, holder["service"], holder["engine"])


@contextmanager
def stopped_at_exit() -> Iterator[list[Any]]:
    """A list to put running webhooks (anything with ``thread`` and ``client``) in; all stopped on exit."""
    running: list[Any] = []
    try:
        yield running
    finally:
        for hook in running:
            hook.client.close()
            hook.thread.stop()
