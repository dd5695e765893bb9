"""``canrun serve`` as a real process on loopback, for the real API server to call.

It runs as a user whose rights are exactly the shipped ClusterRole's (a ServiceAccount-named client
certificate, see tests/support/apiserver.py), so what it does in these tests it can do in a cluster.
"""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.apiserver import ControlPlane, Identity, _openssl, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    ca: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", verify=ssl.create_default_context(cafile=str(self.ca)),
                         timeout=10).text


def serving_cert(plane: ControlPlane, directory: Path) -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1 signed by the cluster CA (which the caBundle will name)."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(plane.openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=canrun-test-webhook", cwd=directory)
    (directory / "tls.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _openssl(plane.openssl, "x509", "-req", "-in", "tls.csr", "-CA", str(plane.ca_cert), "-CAkey", str(plane.ca_key),
             "-CAcreateserial", "-days", "2", "-out", "tls.crt", "-extfile", "tls.ext", cwd=directory)
    return directory / "tls.crt", directory / "tls.key"


def start_serve(workdir: Path, identity: Identity, *args: str, ca: Path | None, port: int | None = None,
                ready_path: str = "/healthz", timeout: float = 90.0) -> Served:
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = workdir / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(HOME=str(workdir), CANRUN_CACHE_DIR=str(workdir / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "canrun", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--kubeconfig", str(identity.kubeconfig), "--log-level", "info", *args],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            cwd=ROOT)
    served = Served(proc, port, log, ca or Path("/nonexistent"))
    if ca is not None:
        ctx = ssl.create_default_context(cafile=str(ca))
    else:  # self-managed certificates: the CA is made by canrun itself; the test checks the chain afterwards
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"canrun serve exited {proc.returncode}:\n{served.log_text()[-3000:]}")
        try:
            if httpx.get(f"{served.url}{ready_path}", verify=ctx, timeout=2).status_code == 200:
                return served
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    served.stop()
    raise AssertionError(f"canrun serve not ready in {timeout:.0f} s:\n{served.log_text()[-3000:]}")


def webhook_configuration(plane: ControlPlane, name: str, url: str, *, namespace_selector: dict[str, Any],
                          failure_policy: str = "Ignore", timeout_seconds: int = 10) -> dict[str, Any]:
    """The shipped ValidatingWebhookConfiguration's webhook, reached by URL on loopback instead of a Service."""
    shipped = yaml.safe_load((ROOT / "manifests" / "base" / "validatingwebhookconfiguration.yaml").read_text())
    [hook] = shipped["webhooks"]
    hook = {**hook, "clientConfig": {"url": f"{url}/validate",
                                     "caBundle": base64.b64encode(plane.ca_cert.read_bytes()).decode()},
            "namespaceSelector": namespace_selector, "failurePolicy": failure_policy,
            "timeoutSeconds": timeout_seconds}
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name}, "webhooks": [hook]}
