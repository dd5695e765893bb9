"""A real Kubernetes control plane on loopback: Debian's etcd and a kube-apiserver v1.20.2 built from Debian's
source (``scripts/build-tools.sh``), with real TLS, real client-certificate authentication and RBAC.

There is no controller-manager and no scheduler: objects are stored, validated, admitted (webhooks included)
and watched, but nothing reconciles them. That is what these tests need. The flags that follow from it:

* ``--disable-admission-plugins=ServiceAccount``: without the token controller no ServiceAccount exists
  for a pod to default to, and the plugin would refuse every pod.
* ``--endpoint-reconciler-type=none``: there is no kubelet-reachable address to publish for the
  ``kubernetes`` Service.
* ``--insecure-port=0``: 1.20 still opens an unauthenticated port 8080 unless told not to.
* ``--enable-aggregator-routing``: a webhook that names a Service is reached through that Service's
  Endpoints, which nothing fills here, so the server fails such a call at once instead of dialing a cluster
  IP (10.96.0.0/12 is not loopback). Webhooks under test are registered by ``url`` on 127.0.0.1.

Identities are client certificates signed by the cluster CA: ``admin()`` is in ``system:masters``, and
``identity("system:serviceaccount:canrun:canrun", ...)`` is a certificate whose user name is the
ServiceAccount's, so RBAC treats it exactly as that ServiceAccount (RBAC matches ServiceAccount subjects by
user name) -- canrun then runs with precisely the rights the shipped manifests grant.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

READY_TIMEOUT = 90.0


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(openssl: Path, *args: str, cwd: Path) -> None:
    out = subprocess.run([str(openssl), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args[:2])} failed: {out.stderr.strip()[-500:]}")


@dataclass(frozen=True)
class Identity:
    """A user of the API server: a client certificate and a kubeconfig that presents it."""

    user: str
    groups: tuple[str, ...]
    cert: Path
    key: Path
    kubeconfig: Path


@dataclass
class ControlPlane:
    workdir: Path
    openssl: Path
    kubectl: Path | None
    port: int
    ca_cert: Path
    ca_key: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _identities: dict[str, Identity] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # --- identities --------------------------------------------------------------------------------

    def identity(self, user: str, groups: Sequence[str] = ()) -> Identity:
        """A client certificate for ``user`` in ``groups`` (plus system:authenticated, added by the server)."""
        name = f"{user}|{'|'.join(groups)}"
        if name in self._identities:
            return self._identities[name]
        safe = "".join(ch if ch.isalnum() else "-" for ch in name)[:80] + f"-{len(self._identities)}"
        d = self.workdir / "users" / safe
        d.mkdir(parents=True, exist_ok=True)
        subject = "".join(f"/O={g}" for g in groups) + f"/CN={user}"
        _openssl(self.openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj", subject, cwd=d)
        (d / "client.ext").write_text("extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n")
        _openssl(self.openssl, "x509", "-req", "-in", "client.csr", "-CA", str(self.ca_cert), "-CAkey",
                 str(self.ca_key), "-CAcreateserial", "-days", "2", "-out", "client.crt", "-extfile", "client.ext",
                 cwd=d)
        kubeconfig = d / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url,
                                                      "certificate-authority": str(self.ca_cert)}}],
            "users": [{"name": "user", "user": {"client-certificate": str(d / "client.crt"),
                                                "client-key": str(d / "client.key")}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
        }))
        ident = Identity(user, tuple(groups), d / "client.crt", d / "client.key", kubeconfig)
        self._identities[name] = ident
        return ident

    def admin(self) -> Identity:
        return self.identity("canrun-test-admin", ["system:masters"])

    def service_account(self, namespace: str, name: str) -> Identity:
        """The ServiceAccount ``namespace/name`` as RBAC sees it, carried by a client certificate."""
        return self.identity(f"system:serviceaccount:{namespace}:{name}",
                             ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"])

    # --- kubectl -----------------------------------------------------------------------------------

    def kubectl_run(self, *args: str, as_: Identity | None = None, stdin: str | None = None,
                    timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        if self.kubectl is None:
            raise ControlPlaneError("no kubectl")
        ident = as_ or self.admin()
        env = {**os.environ, "KUBECONFIG": str(ident.kubeconfig)}
        return subprocess.run([str(self.kubectl), *args], input=stdin, capture_output=True, text=True,
                              timeout=timeout, env=env)

    def kubectl_ok(self, *args: str, as_: Identity | None = None, stdin: str | None = None,
                   timeout: float = 120.0) -> str:
        out = self.kubectl_run(*args, as_=as_, stdin=stdin, timeout=timeout)
        if out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}")
        return out.stdout

    # --- lifecycle ---------------------------------------------------------------------------------

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.processes.clear()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        try:
            return (self.workdir / f"{name}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _pki(openssl: Path, d: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1 and the ServiceAccount token key pair."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=canrun-test-cluster-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl(openssl, "req", "-new", *ec, "-keyout", "serving.key", "-out", "serving.csr",
             "-subj", "/CN=kube-apiserver", cwd=d)
    (d / "serving.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                                   "keyUsage=critical,digitalSignature\n")
    _openssl(openssl, "x509", "-req", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "serving.crt", "-extfile", "serving.ext", cwd=d)
    _openssl(openssl, "genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl(openssl, "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def _wait_ready(plane: ControlPlane, deadline: float) -> None:
    admin = plane.admin()
    ctx = ssl.create_default_context(cafile=str(plane.ca_cert))
    ctx.load_cert_chain(str(admin.cert), str(admin.key))
    last = ""
    while time.monotonic() < deadline:
        for proc, name in zip(plane.processes, ("etcd", "kube-apiserver")):
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited {proc.returncode}:\n{plane.log_tail(name)}")
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", plane.port, context=ctx, timeout=5)
            conn.request("GET", "/readyz")
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            conn.close()
            if resp.status == 200:
                return
            last = f"HTTP {resp.status}: {body[-300:]}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.25)
    raise ControlPlaneError(f"kube-apiserver not ready after {READY_TIMEOUT:.0f} s ({last}):\n"
                            f"{plane.log_tail('kube-apiserver')}")


def start_control_plane(workdir: Path, *, apiserver: Path, etcd: Path, openssl: Path,
                        kubectl: Path | None) -> ControlPlane:
    pki = workdir / "pki"
    _pki(openssl, pki)
    port, etcd_port, peer_port = free_port(), free_port(), free_port()
    plane = ControlPlane(workdir, openssl, kubectl, port, pki / "ca.crt", pki / "ca.key")
    try:
        etcd_log = open(workdir / "etcd.log", "wb")
        plane.processes.append(subprocess.Popen([
            str(etcd), "--name", "canrun-test", "--data-dir", str(workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"canrun-test=http://127.0.0.1:{peer_port}",
            "--log-level", "warn",
        ], stdout=etcd_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        api_log = open(workdir / "kube-apiserver.log", "wb")
        plane.processes.append(subprocess.Popen([
            str(apiserver),
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            "--insecure-port=0", "--endpoint-reconciler-type=none", "--enable-aggregator-routing=true",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--tls-cert-file={pki / 'serving.crt'}", f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/12", "--authorization-mode=RBAC", "--allow-privileged=true",
            "--profiling=false", "--disable-admission-plugins=ServiceAccount", "--v=1",
        ], stdout=api_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        _wait_ready(plane, time.monotonic() + READY_TIMEOUT)
    except BaseException:
        plane.stop()
        raise
    return plane
