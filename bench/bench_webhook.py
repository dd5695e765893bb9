"""Webhook benchmark: warm admissions over TLS with keep-alive on loopback, next to the floor.

The floor is an empty FastAPI endpoint that answers ``allowed: true`` behind the same uvicorn server and
the same TLS context, measured in the same run (this 2-core machine is noisy, so only ratios measured
side by side mean anything).  The canrun server judges a Deployment review (two containers, real images
in a local docker-registry) whose images were resolved once beforehand: the warm path.

Two measurements per server, each a bounded, self-stopping loop in a separate client process (so the
client does not share the servers' GIL):

* latency at a fixed rate of 200 requests/s (open loop: requests are sent on schedule whatever the
  answers do): p50, p99;
* sustained throughput: 8 keep-alive connections sending back to back for a few seconds.

Targets (issue "Webhook"): p99 ≤ 10 ms at 200 req/s; throughput ≥ 50 % of the empty endpoint's.

Run: ``.venv/bin/python bench/bench_webhook.py`` (or ``make bench``).

Measured on the 2-core development machine while other test suites ran on it (load average 4-6, so
the tails are the machine's more than the server's; rerun on a quiet machine):
          p50 ms   p99 ms  at req/s  max req/s
  floor     1.47    10.12       200       1103
  canrun    3.71    87.66       197        558   -> throughput 0.51 x floor (target met), p99 missed
In-process (no HTTP, no TLS) a warm admission of that review costs ~0.3 ms in ``AdmissionService.review``:
parsing the object into a Workload (~0.2 ms) dominates; the verdict itself comes from the verdict cache.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import FastAPI, Request  # noqa: E402  (module level: FastAPI resolves annotations here)
from fastapi.responses import Response  # noqa: E402

RATE = 200
LATENCY_SECONDS = 5.0
THROUGHPUT_SECONDS = 4.0
CONNECTIONS = 8


# -- the client (runs in its own process) ----------------------------------------------------------

class _Conn:
    """One keep-alive HTTPS connection speaking just enough HTTP/1.1 (a client far cheaper than the server)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, body: bytes) -> bytes:
        self.writer.write(b"POST /validate HTTP/1.1\r\nHost: canrun\r\nContent-Type: application/json\r\n"
                          b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        payload = await self.reader.readexactly(length)
        if status != b"200":
            raise RuntimeError(f"bad answer {status!r}: {payload[:200]!r}")
        return payload


async def _client(url: str, ca: str, body: dict[str, Any]) -> dict[str, float]:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca)
    idle: list[_Conn] = []
    opened = 0

    async def connection() -> _Conn:
        nonlocal opened
        if idle:
            return idle.pop()
        reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx, server_hostname=host)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        opened += 1
        return _Conn(reader, writer)

    def fresh() -> bytes:
        body["request"]["uid"] = str(uuid.uuid4())
        return json.dumps(body).encode()

    async def one() -> float:
        conn = await connection()
        data = fresh()
        start = time.perf_counter()
        answer = await conn.post(data)
        elapsed = time.perf_counter() - start
        if b'"response"' not in answer:
            raise RuntimeError(f"not an AdmissionReview: {answer[:200]!r}")
        idle.append(conn)
        return elapsed

    for _ in range(50):  # warm the connection and both caches
        await one()

    # latency at a fixed rate (open loop: requests go out on schedule whatever the answers do)
    tasks = []
    start = time.perf_counter()
    total = int(RATE * LATENCY_SECONDS)
    for i in range(total):
        delay = start + i / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    latencies = sorted(await asyncio.gather(*tasks))
    achieved = total / (time.perf_counter() - start)

    # throughput: closed loop, CONNECTIONS connections back to back
    done = 0
    stop_at = time.perf_counter() + THROUGHPUT_SECONDS

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await one()
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    throughput = done / (time.perf_counter() - t0)
    for conn in idle:
        conn.writer.close()
    return {"p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
            "rate": achieved, "throughput": throughput, "connections": opened}


def _measure(url: str, ca: Path, body: dict[str, Any]) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--client", url, str(ca), json.dumps(body)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


# -- the servers -------------------------------------------------------------------------------------

def main() -> int:
    from canrun.config import Settings, WebhookSettings, open_engine
    from canrun.kube.scheduling import NodePool
    from canrun.platform import Platform
    from canrun.webhook.app import create_app
    from canrun.webhook.metrics import Metrics
    from canrun.webhook.server import ReloadingTLS, ServerThread
    from canrun.webhook.service import AdmissionService, static_pool
    from tests.support import images
    from tests.support.registry import start_registry
    from tests.webhook.tlsutil import issue, make_ca

    work = Path(tempfile.mkdtemp(prefix="canrun-bench-webhook-"))
    registry = start_registry(work / "registry")
    servers: list[ServerThread] = []
    try:
        recipes = [r for r in images.catalogue_recipes(None) if r.name in ("busybox-amd64", "bash-script")]
        catalogue = images.publish(registry.host, registry.blob_path, recipes=recipes)
        ca = make_ca()
        ca_file = ca.write(work / "ca.pem")
        issue(ca, work / "tls.crt", work / "tls.key")
        tls = ReloadingTLS(work / "tls.crt", work / "tls.key", interval=3600)

        @asynccontextmanager
        async def floor_app() -> AsyncIterator[Any]:
            app = FastAPI()

            @app.post("/validate")
            async def validate(request: Request) -> Response:
                uid = json.loads(await request.body())["request"]["uid"]
                return Response(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                            "response": {"uid": uid, "allowed": True}}),
                                media_type="application/json")
            yield app

        settings = Settings(insecure_registries=(registry.host,), ssrf_guard=True, cache_dir=work / "cache")

        @asynccontextmanager
        async def canrun_app() -> AsyncIterator[Any]:
            async with open_engine(settings) as engine:
                service = AdmissionService(engine.validator,
                                           static_pool(NodePool.from_platforms([Platform("linux", "amd64")])),
                                           settings=WebhookSettings(default_mode="warn"), metrics=Metrics())
                yield create_app(service)

        body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "x", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": "shop", "name": "web", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:argocd:argocd-application-controller"},
            "object": {"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                       "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                                    {"name": "web", "image": catalogue.ref("busybox-amd64"),
                                     "args": ["httpd", "-f", "-p", "8080"], "ports": [{"containerPort": 8080}],
                                     "env": [{"name": "MODE", "value": "prod"}],
                                     "securityContext": {"runAsNonRoot": True, "runAsUser": 1000}},
                                    {"name": "entry", "image": catalogue.ref("bash-script")}]}}}},
            "dryRun": False}}

        results = {}
        for name, setup in (("floor", floor_app), ("canrun", canrun_app)):
            server = ServerThread(tls, setup).start()
            servers.append(server)
            results[name] = _measure(server.url, ca_file, body)
            server.stop()
            servers.remove(server)
    finally:
        for server in servers:
            server.stop()
        registry.stop()

    floor, ours = results["floor"], results["canrun"]
    print(f"{'':8}{'p50 ms':>9}{'p99 ms':>9}{'at req/s':>10}{'max req/s':>11}")
    for name, r in results.items():
        print(f"{name:8}{r['p50']:9.2f}{r['p99']:9.2f}{r['rate']:10.0f}{r['throughput']:11.0f}")
    ratio = ours["throughput"] / floor["throughput"]
    print(f"canrun / floor: p50 {ours['p50'] / floor['p50']:.2f}x, p99 {ours['p99'] / floor['p99']:.2f}x, "
          f"throughput {ratio:.2f}x")
    ok_p99 = ours["p99"] <= 10.0
    ok_tp = ratio >= 0.5
    print(f"target p99 <= 10 ms at {RATE} req/s: {'met' if ok_p99 else 'MISSED'}; "
          f"throughput >= 0.5 x floor: {'met' if ok_tp else 'MISSED'}")
    return 0 if ok_p99 and ok_tp else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        print(json.dumps(asyncio.run(_client(sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))))
        raise SystemExit(0)
    raise SystemExit(main())
