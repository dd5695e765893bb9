"""--self-managed-certs against a real API server, as the shipped ServiceAccount: the Secret is created, the
shipped ValidatingWebhookConfiguration's caBundle is patched, the served certificate chains to that bundle
under the Service's DNS name, and a CA near its expiry is rotated with the old one kept in the bundle."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canrun import certs
from tests.apiserver.serve import start_serve
from tests.apiserver.test_manifests import MANIFESTS, for_1_20, install, render
from tests.support import tools
from tests.support.apiserver import ControlPlane

NAMESPACE = "canrun"
DNS_NAME = f"canrun.{NAMESPACE}.svc"


@pytest.fixture
def shipped_webhook_config(kubectl: ControlPlane) -> Iterator[dict[str, Any]]:
    """The base's RBAC, Service and the webhook configuration named canrun, registered as shipped (its Service
    reference resolves to no endpoints here: admissions fail open without being dialed)."""
    [kubectl_bin] = tools.require("kubectl-kustomize")
    install(kubectl, MANIFESTS / "base")
    [vwc] = [o for o in for_1_20(render(kubectl_bin, MANIFESTS / "base"))
             if o["kind"] == "ValidatingWebhookConfiguration"]
    vwc["webhooks"][0]["namespaceSelector"] = {"matchLabels": {"canrun-test": "never"}}
    kubectl.kubectl_ok("apply", "-f", "-", stdin=json.dumps(vwc))
    kubectl.kubectl_run("delete", "secret", "canrun-tls", "-n", NAMESPACE)
    try:
        yield vwc
    finally:
        kubectl.kubectl_run("delete", "validatingwebhookconfiguration", vwc["metadata"]["name"])
        kubectl.kubectl_run("delete", "secret", "canrun-tls", "-n", NAMESPACE)


def ca_bundle(plane: ControlPlane) -> bytes:
    vwc = json.loads(plane.kubectl_ok("get", "validatingwebhookconfiguration", "canrun", "-o", "json"))
    return base64.b64decode(vwc["webhooks"][0]["clientConfig"].get("caBundle", ""))


def secret(plane: ControlPlane) -> dict[str, bytes]:
    obj = json.loads(plane.kubectl_ok("get", "secret", "canrun-tls", "-n", NAMESPACE, "-o", "json"))
    return {k: base64.b64decode(v) for k, v in obj["data"].items()}


def served_chain_verifies(port: int, bundle: bytes, tmp: Path) -> bool:
    """A TLS handshake as the API server makes it: trusting only the caBundle, checking the Service name."""
    (tmp / "bundle.pem").write_bytes(bundle)
    ctx = ssl.create_default_context(cafile=str(tmp / "bundle.pem"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=DNS_NAME):
            return True
    except ssl.SSLError:
        return False


def serve(plane: ControlPlane, tmp: Path) -> Any:
    return start_serve(tmp, plane.service_account(NAMESPACE, "canrun"), "--self-managed-certs",
                       "--cert-namespace", NAMESPACE, "--cert-dir", str(tmp / "certs"), "--platform", "linux/amd64",
                       ca=None)


def test_self_managed_certificates_patch_the_real_ca_bundle(kubectl: ControlPlane,
                                                            shipped_webhook_config: dict[str, Any],
                                                            tmp_path: Path) -> None:
    assert ca_bundle(kubectl) == b""
    served = serve(kubectl, tmp_path / "first")
    try:
        data = secret(kubectl)
        assert set(data) >= {"ca.crt", "ca.key", "tls.crt", "tls.key"}
        assert ca_bundle(kubectl) == data["ca.crt"]
        assert served_chain_verifies(served.port, ca_bundle(kubectl), tmp_path)
        assert not served_chain_verifies(served.port, kubectl.ca_cert.read_bytes(), tmp_path)
    finally:
        served.stop()


def test_a_ca_near_expiry_is_rotated_and_the_old_one_kept_in_the_bundle(
        kubectl: ControlPlane, shipped_webhook_config: dict[str, Any], tmp_path: Path) -> None:
    old_ca = certs.generate_ca(validity=dt.timedelta(days=10))  # inside the 30-day rotation margin
    old_serving = certs.issue_serving_cert(old_ca, certs.service_dns_names("canrun", NAMESPACE),
                                           validity=dt.timedelta(days=5))
    manifest = certs.secret_manifest(NAMESPACE, "canrun-tls", old_ca, old_serving, include_ca_key=True)
    kubectl.kubectl_ok("apply", "-f", "-", stdin=json.dumps(manifest))
    served = serve(kubectl, tmp_path / "rotating")
    try:
        data = secret(kubectl)
        bundle = ca_bundle(kubectl)
        assert bundle == data["ca.crt"]
        cas = certs.load_certificates(bundle)
        assert len(cas) == 2, "the new CA, then the old one while it is still valid"
        assert cas[1].public_bytes(certs.serialization.Encoding.PEM) == old_ca.cert_pem
        assert cas[0].public_bytes(certs.serialization.Encoding.PEM) != old_ca.cert_pem
        assert data["tls.crt"] != old_serving.cert_pem
        assert served_chain_verifies(served.port, cas[0].public_bytes(certs.serialization.Encoding.PEM), tmp_path)
    finally:
        served.stop()
