"""Certificates: real TLS handshakes with what canrun generates, rotation, and CertManager in a cluster."""

from __future__ import annotations

import base64
import datetime as dt
import io
import socket
import ssl
import threading
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from canrun import certs
from canrun.cli import main
from canrun.kube.client import Cluster
from tests.support.kubeapi import KubeAPIStandIn

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
DNS = certs.service_dns_names("canrun", "canrun")


def handshake(cert_file: Path, key_file: Path, ca_pem: bytes, server_hostname: str | None) -> dict:
    """Serve one TLS handshake on loopback with the pair; connect trusting only ``ca_pem``."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(cert_file), str(key_file))
    client_ctx = ssl.create_default_context(cadata=ca_pem.decode())
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                assert tls.recv(2) == b"ok"
                return tls.getpeercert()
    finally:
        thread.join(10)
        listener.close()


@pytest.fixture(scope="module")
def ca() -> certs.CertKeyPair:
    return certs.generate_ca(now=NOW)


@pytest.fixture(scope="module")
def serving(ca: certs.CertKeyPair) -> certs.CertKeyPair:
    return certs.issue_serving_cert(ca, DNS, now=NOW)


def write_pair(tmp_path: Path, pair: certs.CertKeyPair) -> tuple[Path, Path]:
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    return tmp_path / "tls.crt", tmp_path / "tls.key"


# --- the certificates themselves ----------------------------------------------------------------

def test_ca_and_serving_certificate_shape(ca: certs.CertKeyPair, serving: certs.CertKeyPair) -> None:
    for pair in (ca, serving):
        assert isinstance(pair.private_key.curve, ec.SECP256R1)
        assert pair.key_matches()
    assert ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ca.not_after - NOW >= dt.timedelta(days=3649)
    assert serving.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = serving.certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert dt.timedelta(days=364) <= serving.not_after - NOW <= dt.timedelta(days=366)
    sans = serving.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "canrun.canrun.svc", "canrun.canrun.svc.cluster.local", "canrun.canrun", "canrun"}


def test_real_tls_handshake_for_the_service_name(tmp_path: Path) -> None:
    ca = certs.generate_ca()
    pair = certs.issue_serving_cert(ca, DNS)
    cert_file, key_file = write_pair(tmp_path, pair)
    peer = handshake(cert_file, key_file, ca.cert_pem, "canrun.canrun.svc")
    assert ("DNS", "canrun.canrun.svc") in peer["subjectAltName"]


def test_handshake_fails_for_another_name_or_another_ca(tmp_path: Path) -> None:
    ca = certs.generate_ca()
    cert_file, key_file = write_pair(tmp_path, certs.issue_serving_cert(ca, DNS))
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        handshake(cert_file, key_file, ca.cert_pem, "canrun.other.svc")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(cert_file, key_file, certs.generate_ca().cert_pem, "canrun.canrun.svc")


def test_self_signed_for_localhost_and_ip(tmp_path: Path) -> None:
    cert_file, key_file = certs.write_self_signed(tmp_path / "tls", ["localhost", "127.0.0.1"])
    ca_pem = (tmp_path / "tls" / "ca.crt").read_bytes()
    assert handshake(cert_file, key_file, ca_pem, "127.0.0.1")
    assert handshake(cert_file, key_file, ca_pem, "localhost")


def test_rotation_decision(serving: certs.CertKeyPair) -> None:
    expiry = serving.not_after
    assert not certs.needs_rotation(serving.cert_pem, NOW)
    assert not certs.needs_rotation(serving.cert_pem, expiry - dt.timedelta(days=31))
    assert certs.needs_rotation(serving.cert_pem, expiry - dt.timedelta(days=29))
    assert certs.needs_rotation(serving.cert_pem, expiry - dt.timedelta(days=29), dt.timedelta(days=10)) is False
    assert certs.needs_rotation(serving.cert_pem, expiry + dt.timedelta(days=1))
    assert certs.needs_rotation(serving.cert_pem, NOW - dt.timedelta(days=1))  # not valid yet
    assert certs.needs_rotation(b"not a certificate", NOW)


def test_stored_pair_problems(ca: certs.CertKeyPair, serving: certs.CertKeyPair) -> None:
    assert certs.serving_problems(ca.cert_pem, serving.cert_pem, serving.key_pem, DNS, now=NOW) == []
    other = certs.generate_ca(now=NOW)
    assert any("not signed by the current CA" in p for p in
               certs.serving_problems(other.cert_pem, serving.cert_pem, serving.key_pem, DNS, now=NOW))
    assert any("does not name canrun.x.svc" in p for p in
               certs.serving_problems(ca.cert_pem, serving.cert_pem, serving.key_pem, ["canrun.x.svc"], now=NOW))
    assert certs.serving_problems(ca.cert_pem, serving.cert_pem, ca.key_pem, DNS, now=NOW) == [
        "the private key does not belong to the certificate"]


def test_certs_command_writes_files_secret_and_bundle(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["certs", "--namespace", "tools", "--out", str(tmp_path / "c")], stdout=out) == 0
    d = tmp_path / "c"
    secret = yaml.safe_load((d / "secret.yaml").read_text())
    assert secret["type"] == "kubernetes.io/tls" and secret["metadata"]["namespace"] == "tools"
    assert base64.b64decode(secret["data"]["tls.crt"]) == (d / "tls.crt").read_bytes()
    assert base64.b64decode((d / "ca-bundle.b64").read_text()) == (d / "ca.crt").read_bytes()
    assert "ca.key" not in secret["data"]  # the CA key stays with the operator
    assert (d / "ca.key").stat().st_mode & 0o077 == 0
    peer = handshake(d / "tls.crt", d / "tls.key", (d / "ca.crt").read_bytes(), "canrun.tools.svc")
    assert peer
    err = io.StringIO()
    assert main(["certs", "--out", str(d)], stdout=io.StringIO(), stderr=err) == 2
    assert "--force" in err.getvalue()


# --- CertManager against the API stand-in ------------------------------------------------------

@pytest.fixture
def webhook_config(kubeapi: KubeAPIStandIn) -> KubeAPIStandIn:
    kubeapi.add({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                 "metadata": {"name": "canrun"},
                 "webhooks": [{"name": n, "clientConfig": {"service": {"name": "canrun", "namespace": "canrun"}},
                               "sideEffects": "NoneOnDryRun", "admissionReviewVersions": ["v1"]}
                              for n in ("pods.canrun.io", "workloads.canrun.io")]})
    return kubeapi


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def manager(cluster: Cluster, tmp_path: Path, clock: Clock, name: str = "a") -> certs.CertManager:
    return certs.CertManager(cluster, namespace="canrun", cert_dir=tmp_path / name, clock=clock)


def bundle_in_cluster(api: KubeAPIStandIn) -> list[bytes]:
    vwc = api.get("ValidatingWebhookConfiguration", "canrun")
    assert vwc is not None
    return [base64.b64decode(h["clientConfig"]["caBundle"]) for h in vwc["webhooks"]]


def test_first_start_creates_secret_files_and_ca_bundle(webhook_config: KubeAPIStandIn, cluster: Cluster,
                                                         tmp_path: Path, clock: Clock) -> None:
    cert_file, key_file = manager(cluster, tmp_path, clock).ensure()
    secret = webhook_config.get("Secret", "canrun-tls", "canrun")
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    assert bundle_in_cluster(webhook_config) == [ca_pem, ca_pem]
    assert cert_file.read_bytes() == base64.b64decode(secret["data"]["tls.crt"])
    assert handshake(cert_file, key_file, ca_pem, "canrun.canrun.svc")


def test_second_replica_adopts_and_nothing_is_rewritten(webhook_config: KubeAPIStandIn, cluster: Cluster,
                                                        tmp_path: Path, clock: Clock) -> None:
    first = manager(cluster, tmp_path, clock, "a")
    first.ensure()
    writes = [r for r in webhook_config.requests if r[0] in ("POST", "PUT", "PATCH")]
    second = manager(cluster, tmp_path, clock, "b")
    state = second.reconcile()
    assert not state.rotated and not state.ca_bundle_patched
    assert (tmp_path / "b" / "tls.crt").read_bytes() == (tmp_path / "a" / "tls.crt").read_bytes()
    assert [r for r in webhook_config.requests if r[0] in ("POST", "PUT", "PATCH")] == writes
    assert first.reconcile().files_changed is False


def test_serving_rotation_keeps_the_ca(webhook_config: KubeAPIStandIn, cluster: Cluster,
                                       tmp_path: Path, clock: Clock) -> None:
    m = manager(cluster, tmp_path, clock)
    m.ensure()
    old_cert = (tmp_path / "a" / "tls.crt").read_bytes()
    old_bundle = bundle_in_cluster(webhook_config)
    seen: list[certs.CertState] = []
    m.on_change = seen.append
    clock.now += dt.timedelta(days=340)  # 25 days before the serving certificate expires
    state = m.reconcile()
    assert state.rotated and state.files_changed and len(seen) == 1
    assert (tmp_path / "a" / "tls.crt").read_bytes() != old_cert
    assert bundle_in_cluster(webhook_config) == old_bundle and not state.ca_bundle_patched
    assert not certs.needs_rotation(state.serving.cert_pem, clock.now)


def test_ca_rotation_keeps_the_old_ca_trusted(webhook_config: KubeAPIStandIn, cluster: Cluster,
                                              tmp_path: Path, clock: Clock) -> None:
    m = manager(cluster, tmp_path, clock)
    m.ensure()
    [old_ca] = certs.load_certificates(bundle_in_cluster(webhook_config)[0])
    clock.now = old_ca.not_valid_after_utc - dt.timedelta(days=20)
    state = m.reconcile()
    assert state.rotated and state.ca_bundle_patched
    new_bundle = certs.load_certificates(bundle_in_cluster(webhook_config)[0])
    assert len(new_bundle) == 2 and new_bundle[1] == old_ca and new_bundle[0] != old_ca
    state.serving.certificate.verify_directly_issued_by(new_bundle[0])


def test_broken_secret_is_replaced(webhook_config: KubeAPIStandIn, cluster: Cluster,
                                   tmp_path: Path, clock: Clock) -> None:
    webhook_config.add({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                        "metadata": {"name": "canrun-tls", "namespace": "canrun"},
                        "data": {"tls.crt": base64.b64encode(b"junk").decode(), "tls.key": "",
                                 "ca.crt": "", "ca.key": ""}})
    cert_file, key_file = manager(cluster, tmp_path, clock).ensure()
    ca_pem = (tmp_path / "a" / "ca.crt").read_bytes()
    assert handshake(cert_file, key_file, ca_pem, "canrun.canrun.svc")


def test_lost_race_adopts_the_winner(webhook_config: KubeAPIStandIn, cluster: Cluster,
                                     tmp_path: Path, clock: Clock) -> None:
    winner = certs.generate_ca()
    pair = certs.issue_serving_cert(winner, DNS)
    # our create is refused as if another replica had just created the Secret; then theirs is there
    webhook_config.fail("POST", r"/namespaces/canrun/secrets$", 409)
    original_get = cluster.get_object
    calls = {"n": 0}

    def racing_get(*args: object, **kwargs: object) -> dict | None:
        calls["n"] += 1
        if calls["n"] == 2:  # after our failed create, the winner's Secret exists
            webhook_config.add(certs.secret_manifest("canrun", "canrun-tls", winner, pair, include_ca_key=True))
        return original_get(*args, **kwargs)  # type: ignore[arg-type]

    cluster.get_object = racing_get  # type: ignore[method-assign]
    m = manager(cluster, tmp_path, clock)
    m.ensure()
    assert (tmp_path / "a" / "tls.crt").read_bytes() == pair.cert_pem
    assert bundle_in_cluster(webhook_config)[0] == winner.cert_pem


def test_serving_starts_before_the_webhook_configuration_exists(kubeapi: KubeAPIStandIn, cluster: Cluster,
                                                                tmp_path: Path, clock: Clock) -> None:
    m = manager(cluster, tmp_path, clock)
    state = m.reconcile()
    assert state.cert_file.exists() and not state.ca_bundle_patched
    assert state.ca_bundle_error and "ValidatingWebhookConfiguration canrun not found" in state.ca_bundle_error
    kubeapi.add({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                 "metadata": {"name": "canrun"}, "webhooks": [{"name": "validate.canrun.io", "clientConfig": {}}]})
    later = m.reconcile()
    assert later.ca_bundle_patched and later.ca_bundle_error is None and not later.rotated
    assert bundle_in_cluster(kubeapi) == [state.ca_bundle_pem]


def test_pin_modes_mutating_configuration_gets_the_same_ca_when_installed(webhook_config: KubeAPIStandIn,
                                                                         cluster: Cluster, tmp_path: Path,
                                                                         clock: Clock) -> None:
    webhook_config.add({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                        "metadata": {"name": "canrun"},
                        "webhooks": [{"name": "pin.canrun.io", "clientConfig": {"service": {
                            "name": "canrun", "namespace": "canrun", "path": "/mutate"}},
                            "sideEffects": "NoneOnDryRun", "admissionReviewVersions": ["v1"]}]})
    manager(cluster, tmp_path, clock).ensure()
    mwc = webhook_config.get("MutatingWebhookConfiguration", "canrun")
    assert mwc is not None
    assert [base64.b64decode(h["clientConfig"]["caBundle"]) for h in mwc["webhooks"]] == \
        bundle_in_cluster(webhook_config)[:1]


def test_without_pin_mode_installed_only_the_validating_configuration_is_patched(
        webhook_config: KubeAPIStandIn, cluster: Cluster, tmp_path: Path, clock: Clock) -> None:
    state = manager(cluster, tmp_path, clock).reconcile()
    assert state.ca_bundle_patched and state.ca_bundle_error is None
    assert webhook_config.get("MutatingWebhookConfiguration", "canrun") is None
