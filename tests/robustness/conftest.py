"""Robustness fixtures: hostile images in the session's real registry, the CLI as a child process, a webhook.

* ``hostile``: every hostile image of ``cases.py`` pushed (httpx PUTs) into ``local_registry`` once per
  session, the digest-mismatch one then damaged on disk.
* ``run_cli``: ``python -m canrun …`` as a child process with a wall-clock watchdog; returns exit code,
  stdout, stderr and the child's peak RSS (``wait4`` rusage), so memory bounds are measured, not guessed.
* ``webhook``: one real webhook (uvicorn, TLS, engine, service) per module, built the way
  ``canrun serve`` builds it, talking to the session registry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from canrun.config import CacheSettings, RegistryAccess, Settings, WebhookSettings
from canrun.image.limits import Limits
from canrun.webhook.service import AdmissionService
from tests.robustness import cases
from tests.robustness.hostile import Pusher
from tests.support.registry import RunningRegistry
from tests.support.webhook import ServerThread, serve_webhook, stopped_at_exit
from tests.webhook.tlsutil import issue, make_ca

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- hostile catalogue

@pytest.fixture(scope="session")
def hostile(local_registry: RunningRegistry) -> dict[str, cases.Pushed]:
    pusher = Pusher(local_registry.host)
    try:
        return cases.push_all(pusher, local_registry.blob_path)
    finally:
        pusher.close()


# --------------------------------------------------------------------------- the CLI as a process

@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    max_rss_mb: float
    seconds: float

    def assert_clean(self) -> None:
        """No traceback, no Python exception repr leaking to the user."""
        for stream in (self.stdout, self.stderr):
            assert "Traceback (most recent call last)" not in stream, stream[-3000:]


def run_cli(args: list[str], *, stdin: Any = subprocess.DEVNULL, kill_after: float = 120.0,
            cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run ``canrun`` in a child; a child still running after ``kill_after`` s is killed and the test fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "canrun", *args], stdin=stdin, stdout=out, stderr=err,
                                cwd=cwd or ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                                start_new_session=True)
        hung = threading.Event()

        def watchdog() -> None:
            hung.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(kill_after, watchdog)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        result = CliResult(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                           usage.ru_maxrss / 1024, seconds)
    assert not hung.is_set(), f"canrun {' '.join(args)} hung (> {kill_after}s): {result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="session")
def cli() -> Callable[..., CliResult]:
    return run_cli


# --------------------------------------------------------------------------- manifests

def deployment(name: str, image: str, **container: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": image, **container}]}}}}


def pod_review(image: str, *, name: str = "web") -> dict[str, Any]:
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"containers": [{"name": "app", "image": image}]}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": "default", "name": name, "operation": "CREATE",
                        "userInfo": {"username": "tester"}, "object": obj, "dryRun": False}}


# --------------------------------------------------------------------------- the webhook

@dataclass
class Webhook:
    thread: ServerThread
    client: httpx.Client
    service: AdmissionService
    deadline: float

    def post(self, body: Any) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        resp = self.client.post("/validate", content=body if isinstance(body, bytes) else None,
                                json=None if isinstance(body, bytes) else body,
                                headers={"Content-Type": "application/json"})
        return resp, time.monotonic() - started

    def drain(self, timeout: float = 60.0) -> None:
        """Wait (bounded) for background validations, so a hostile image's work provably ends."""
        self.thread.call(_bounded_drain(self.service, timeout))


async def _bounded_drain(service: AdmissionService, timeout: float) -> None:
    import asyncio

    await asyncio.wait_for(service.drain(), timeout)


def start_webhook(tmp: Path, *, registries: tuple[str, ...], deadline: float, limits: Limits | None = None,
                  timeout: float = 10.0, mode: str = "enforce") -> Webhook:
    ca = make_ca()
    ca_file = ca.write(tmp / "ca.pem")
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    issue(ca, cert, key)
    settings = Settings(registry=RegistryAccess(insecure=registries, ssrf_guard=True, timeout=timeout),
                        cache=CacheSettings(enabled=False), limits=limits or Limits())
    hook = WebhookSettings(default_mode=mode, deadline=deadline, warm_interval=0.0)
    served = serve_webhook(settings, hook, cert=cert, key=key, ca_file=ca_file, client_timeout=deadline + 30)
    return Webhook(served.thread, served.client, served.service, deadline)


@pytest.fixture(scope="module")
def webhook_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Webhook]]:
    with stopped_at_exit() as running:
        def make(**kw: Any) -> Webhook:
            hook = start_webhook(tmp_path_factory.mktemp("webhook"), **kw)
            running.append(hook)
            return hook

        yield make
