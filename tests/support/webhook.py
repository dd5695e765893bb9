"""A real webhook for tests: ``canrun``'s engine and AdmissionService behind uvicorn over TLS, in a thread.

The webhook, robustness and security suites each wrap this in a handle of their own (what they assert
on differs); how the server is put together is the same everywhere, and is the way ``canrun serve``
puts it together.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from canrun.config import Engine, Settings, WebhookSettings, open_engine
from canrun.kube.scheduling import NodePool
from canrun.platform import Platform
from canrun.webhook.app import create_app
from canrun.webhook.metrics import Metrics
from canrun.webhook.server import ReloadingTLS, ServerThread
from canrun.webhook.service import AdmissionService, PoolSource, static_pool

AMD64_ONLY = static_pool(NodePool.from_platforms([Platform("linux", "amd64")]))


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
