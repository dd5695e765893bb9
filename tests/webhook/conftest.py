"""The webhook under test: a real uvicorn server over real TLS on loopback, a real registry behind a slow proxy.

* ``tls_dir``: a CA and a serving certificate (``cryptography``), the client trusts the CA.
* ``slow_proxy``: a TCP proxy on loopback in front of the session's docker-registry that can hold each HTTP
  request for ``delay`` seconds and records every request line, so tests count what reached the registry.
* ``start_webhook``: starts ``canrun serve``'s app (engine, service, FastAPI, uvicorn, TLS) in a thread with
  the given settings and returns a handle with an httpx client that verifies the server against the CA.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from canrun.config import CacheSettings, PolicySettings, RegistryAccess, Settings, WebhookSettings
from canrun.kube.scheduling import NodePool
from canrun.platform import Platform
from canrun.webhook.service import AdmissionService, PoolSource, static_pool
from tests.support.admission import review  # noqa: F401 (the webhook tests import it from here)
from tests.support.registry import RunningRegistry
from tests.support.webhook import ServerThread, serve_webhook, stopped_at_exit
from tests.webhook.tlsutil import CA, issue, make_ca

_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.[01]\r\n")


class SlowProxy:
    """Forwards TCP to ``upstream``; holds each HTTP request ``delay`` seconds; logs request lines."""

    def __init__(self, upstream: str) -> None:
        self.upstream_host, port = upstream.rsplit(":", 1)
        self.upstream_port = int(port)
        self.delay = 0.0
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="slow-proxy")
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._started.set()
            async with self._server:
                try:
                    await self._server.serve_forever()
                except asyncio.CancelledError:
                    pass

        asyncio.run(main())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            writer.close()
            return

        async def client_to_upstream() -> None:
            while chunk := await reader.read(65536):
                lines = [(m.group(1).decode(), m.group(2).decode()) for m in _REQUEST_LINE.finditer(chunk)]
                if lines:
                    with self._lock:
                        self.requests.extend(lines)
                    if self.delay:
                        await asyncio.sleep(self.delay)
                up_writer.write(chunk)
                await up_writer.drain()
            up_writer.close()

        async def upstream_to_client() -> None:
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(client_to_upstream(), upstream_to_client())
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a closed connection or the proxy stopping
        finally:
            writer.close()
            up_writer.close()

    def start(self) -> SlowProxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None:
            def shutdown() -> None:  # on the proxy's loop: no task can finish the loop between two calls
                server.close()
                for task in asyncio.all_tasks(loop):
                    task.cancel()
            try:
                loop.call_soon_threadsafe(shutdown)
            except RuntimeError:
                pass  # the loop has already ended
        self._thread.join(10)


@pytest.fixture
def slow_proxy(local_registry: RunningRegistry) -> Iterator[SlowProxy]:
    proxy = SlowProxy(local_registry.host).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@dataclass
class TLSFiles:
    ca: CA
    ca_file: Path
    cert: Path
    key: Path


@pytest.fixture
def tls_dir(tmp_path: Path) -> TLSFiles:
    ca = make_ca()
    files = TLSFiles(ca, ca.write(tmp_path / "ca.pem"), tmp_path / "tls.crt", tmp_path / "tls.key")
    issue(ca, files.cert, files.key, common_name="canrun-webhook-1")
    return files


@dataclass
class Webhook:
    """A running webhook and a client for it."""

    thread: ServerThread
    client: httpx.Client
    tls: TLSFiles
    service: AdmissionService | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def review(self, body: dict[str, Any], path: str = "/validate") -> dict[str, Any]:
        resp = self.client.post(path, json=body)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == body["request"]["uid"]
        return answer["response"]

    def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.review(body, "/mutate")

    def drain(self) -> None:
        """Wait for the service's background work (resolutions past the deadline, events)."""
        assert self.service is not None
        self.thread.call(self.service.drain())

    def metrics(self) -> str:
        return self.client.get("/metrics").text


StartWebhook = Callable[..., Webhook]


@pytest.fixture
def start_webhook(tls_dir: TLSFiles, tmp_path: Path) -> Iterator[StartWebhook]:
    def start(*, registries: tuple[str, ...] = (), mode: str = "enforce", deadline: float = 5.0,
              strict: bool = False, platforms: tuple[str, ...] = ("linux/amd64",), cluster: Any = None,
              pool: PoolSource | None = None, allow_hosts: tuple[str, ...] = (), warm_interval: float = 0.0,
              use_cache: bool = True, verdict_ttl: float = 60.0,
              blocked_networks: tuple[str, ...] = ()) -> Webhook:
        settings = Settings(registry=RegistryAccess(insecure=registries, ssrf_guard=True, allow_hosts=allow_hosts,
                                                   blocked_networks=blocked_networks, timeout=10),
                            policy=PolicySettings(strict=strict),
                            cache=CacheSettings(dir=tmp_path / f"cache-{uuid.uuid4().hex[:8]}", enabled=use_cache))
        webhook = WebhookSettings(default_mode=mode, deadline=deadline, strict=strict, warm_interval=warm_interval,
                                  verdict_ttl=verdict_ttl)
        static = static_pool(NodePool.from_platforms([Platform.parse(p) for p in platforms]))
        served = serve_webhook(settings, webhook, cert=tls_dir.cert, key=tls_dir.key, ca_file=tls_dir.ca_file,
                               pool=pool or static, cluster=cluster, reload_interval=0.2)
        hook = Webhook(served.thread, served.client, tls_dir, served.service)
        running.append(hook)
        return hook

    with stopped_at_exit() as running:
        yield start


# -- AdmissionReview bodies --------------------------------------------------------------------------------

def container(image: str, name: str = "app", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, **extra}


def pod(containers: list[dict[str, Any]], *, name: str = "web", namespace: str = "default",
        annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": containers, **spec}}


def deployment(containers: list[dict[str, Any]], *, name: str = "web", namespace: str = "default",
               replicas: int = 1, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}}}


def cronjob(containers: list[dict[str, Any]], *, name: str = "nightly", namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name, "namespace": namespace},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": containers}}}}}}


