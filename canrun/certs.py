"""The webhook's TLS: a private CA, a serving certificate for the Service, and their rotation.

The API server only calls webhooks over HTTPS and trusts exactly the CA in the
ValidatingWebhookConfiguration's ``caBundle``.  Three ways to get there:

* ``canrun certs`` writes a CA, a serving certificate, a Secret manifest and the
  caBundle to files (for people who manage certificates by hand);
* the ``cert-manager`` overlay lets cert-manager issue and inject them;
* ``canrun serve --self-managed-certs`` runs ``CertManager``: the CA and the
  serving pair live in one Secret, every replica checks them periodically,
  rotates them before expiry, writes them to a local directory the server
  reloads from, and patches the caBundle (Gatekeeper's cert-controller idea).

Keys are ECDSA P-256.  Validity: CA 10 years, serving certificate 1 year,
rotation 30 days before expiry (all arguments).  When the CA itself is replaced,
the old CA stays in ``ca.crt``/caBundle until it expires, so certificates signed
by either are trusted during the switch.  Two replicas rotating at once cannot
overwrite each other: writes carry the resourceVersion they read, and the loser
re-reads and adopts the winner's certificates.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from canrun.errors import CanrunError, ClusterConflict, UsageError

if TYPE_CHECKING:
    from canrun.kube.client import Cluster

log = logging.getLogger("canrun.certs")

CA_VALIDITY = dt.timedelta(days=3650)
SERVING_VALIDITY = dt.timedelta(days=365)
ROTATE_BEFORE = dt.timedelta(days=30)
#: Backdating of notBefore, so a node whose clock is a little behind still accepts a fresh certificate.
CLOCK_SKEW = dt.timedelta(minutes=5)

SECRET_NAME = "canrun-tls"
SERVICE = "canrun"
WEBHOOK_CONFIG = "canrun"
_SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class CertKeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @cached_property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @cached_property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("not an ECDSA key")
        return key

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    def key_matches(self) -> bool:
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        enc = serialization.Encoding.DER
        return bool(self.certificate.public_key().public_bytes(enc, pub)
                    == self.private_key.public_key().public_bytes(enc, pub))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate_ca(common_name: str = "canrun-webhook-ca", *, validity: dt.timedelta = CA_VALIDITY,
                now: dt.datetime | None = None) -> CertKeyPair:
    """A self-signed CA that may only sign end-entity certificates (pathlen 0)."""
    now = now or _utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "canrun")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return CertKeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_serving_cert(ca: CertKeyPair, dns_names: Sequence[str], *, validity: dt.timedelta = SERVING_VALIDITY,
                       now: dt.datetime | None = None,
                       ip_addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = ()) -> CertKeyPair:
    """A TLS server certificate for ``dns_names`` (all in the SAN; the API server checks nothing else)."""
    if not dns_names:
        raise UsageError("a serving certificate needs at least one DNS name")
    now = now or _utcnow()
    not_after = min(now + validity, ca.not_after)  # never outlive the CA that vouches for it
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0][:64])]))
            .issuer_name(ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]
                                                       + [x509.IPAddress(ip) for ip in ip_addresses]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
                           critical=False)
            .sign(ca.private_key, hashes.SHA256()))
    return CertKeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def service_dns_names(service: str = SERVICE, namespace: str = "canrun") -> list[str]:
    """Every name the API server may use for the webhook Service."""
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local",
            f"{service}.{namespace}", service]


def needs_rotation(cert_pem: bytes, now: dt.datetime | None = None, margin: dt.timedelta = ROTATE_BEFORE) -> bool:
    """True when the certificate expires within ``margin``, is not valid yet, or cannot be read."""
    now = now or _utcnow()
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return True
    return now >= cert.not_valid_after_utc - margin or now < cert.not_valid_before_utc


def ca_bundle(ca_pem: bytes) -> str:
    """The ``caBundle`` value of a webhook clientConfig: the PEM, base64-encoded."""
    return base64.b64encode(ca_pem).decode()


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (a caBundle may hold the old CA beside the new one)."""
    return x509.load_pem_x509_certificates(pem)


def serving_problems(ca_pem: bytes, cert_pem: bytes, key_pem: bytes, dns_names: Sequence[str], *,
                     now: dt.datetime | None = None, margin: dt.timedelta = ROTATE_BEFORE) -> list[str]:
    """Why a stored serving pair must not be used as it is (empty: it is fine)."""
    now = now or _utcnow()
    try:
        pair = CertKeyPair(cert_pem, key_pem)
        cert = pair.certificate
        if not pair.key_matches():
            return ["the private key does not belong to the certificate"]
        cas = load_certificates(ca_pem)
    except ValueError as exc:
        return [f"unreadable certificate or key ({exc})"]
    problems = []
    if needs_rotation(cert_pem, now, margin):
        problems.append(f"serving certificate expires {cert.not_valid_after_utc:%Y-%m-%d} (within the margin)")
    if needs_rotation(cas[0].public_bytes(serialization.Encoding.PEM), now, margin):
        problems.append(f"CA expires {cas[0].not_valid_after_utc:%Y-%m-%d} (within the margin)")
    try:
        cert.verify_directly_issued_by(cas[0])
    except (ValueError, TypeError, InvalidSignature):
        problems.append("serving certificate is not signed by the current CA")
    try:
        sans = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                   .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = set()
    missing = [n for n in dns_names if n not in sans]
    if missing:
        problems.append(f"serving certificate does not name {', '.join(missing)}")
    return problems


def secret_manifest(namespace: str, name: str, ca: CertKeyPair, serving: CertKeyPair,
                    *, include_ca_key: bool = False) -> dict[str, Any]:
    """A ``kubernetes.io/tls`` Secret with tls.crt, tls.key and ca.crt (and ca.key if asked)."""
    data = {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem, "ca.crt": ca.cert_pem}
    if include_ca_key:
        data["ca.key"] = ca.key_pem
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "canrun", "app.kubernetes.io/component": "webhook-tls"}},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


# --- files --------------------------------------------------------------------------------------

def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def write_tls_dir(directory: Path, files: dict[str, bytes]) -> bool:
    """Publish ``files`` in ``directory`` atomically, the way the kubelet updates Secret volumes.

    The files go to a fresh ``..<stamp>`` directory, then the ``..data`` symlink is
    swapped with one rename, and ``tls.crt`` etc. are symlinks through ``..data``: a
    reader never sees a new certificate beside an old key.  Returns False (and writes
    nothing) when the content is already there.
    """
    directory.mkdir(parents=True, exist_ok=True)
    current = directory / "..data"
    if current.exists() and all((current / n).is_file() and (current / n).read_bytes() == v for n, v in files.items()):
        return False
    stamp = directory / f"..{dt.datetime.now(dt.timezone.utc):%Y_%m_%d_%H_%M_%S}.{secrets.token_hex(4)}"
    stamp.mkdir(mode=0o700)
    for name, value in files.items():
        _write_private(stamp / name, value, 0o600 if name.endswith(".key") else 0o644)
    tmp_link = directory / f"..data_tmp.{secrets.token_hex(4)}"
    os.symlink(stamp.name, tmp_link)
    old = os.readlink(current) if current.is_symlink() else None
    os.replace(tmp_link, current)
    for name in files:
        link = directory / name
        if not link.is_symlink():
            if link.exists():
                link.unlink()
            os.symlink(f"..data/{name}", link)
    if old and old != stamp.name:
        for stale in (directory / old).glob("*"):
            stale.unlink()
        (directory / old).rmdir()
    return True


def write_self_signed(directory: Path, hosts: Sequence[str]) -> tuple[Path, Path]:
    """A throwaway CA + serving pair for ``hosts`` in ``directory``; returns (cert, key) paths.

    For a standalone ``canrun serve`` outside a cluster; ``ca.crt`` is written too so a
    client can trust it.  IP addresses among ``hosts`` go in as IP SANs.
    """
    dns, ips = [], []
    for host in hosts:
        try:
            ips.append(ipaddress.ip_address(host))
        except ValueError:
            dns.append(host)
    ca = generate_ca()
    serving = issue_serving_cert(ca, dns or ["localhost"], ip_addresses=ips)
    write_tls_dir(Path(directory), {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem, "ca.crt": ca.cert_pem})
    return Path(directory) / "tls.crt", Path(directory) / "tls.key"


# --- in-cluster management --------------------------------------------------------------------------

def default_namespace() -> str:
    """The namespace canrun runs in: the ServiceAccount's, else $POD_NAMESPACE, else ``canrun``."""
    try:
        return _SA_NAMESPACE_FILE.read_text().strip() or "canrun"
    except OSError:
        return os.environ.get("POD_NAMESPACE") or "canrun"


@dataclass(frozen=True)
class CertState:
    """What ``CertManager.ensure`` settled on."""

    ca_bundle_pem: bytes  # the current CA, then any older CA still valid
    serving: CertKeyPair
    cert_file: Path
    key_file: Path
    ca_file: Path
    rotated: bool  # this call generated new certificates
    files_changed: bool
    ca_bundle_patched: bool
    #: Why the caBundle could not be patched (the configuration is missing, RBAC); retried on the next check.
    ca_bundle_error: str | None = None


class CertManager:
    """Keep the webhook's CA and serving certificate valid in a Secret, on disk and in the caBundle."""

    def __init__(self, cluster: Cluster, *, namespace: str | None = None, service: str = SERVICE,
                 secret_name: str = SECRET_NAME, webhook_config: str | None = WEBHOOK_CONFIG,
                 cert_dir: Path | str | None = None, margin: dt.timedelta = ROTATE_BEFORE,
                 ca_validity: dt.timedelta = CA_VALIDITY, serving_validity: dt.timedelta = SERVING_VALIDITY,
                 interval: float = 600.0, clock: Callable[[], dt.datetime] = _utcnow,
                 on_change: Callable[[CertState], None] | None = None) -> None:
        self.cluster = cluster
        self.namespace = namespace or default_namespace()
        self.service, self.secret_name, self.webhook_config = service, secret_name, webhook_config
        self.cert_dir = Path(cert_dir) if cert_dir else Path(tempfile.gettempdir()) / "canrun-tls"
        self.margin, self.ca_validity, self.serving_validity = margin, ca_validity, serving_validity
        self.interval, self.clock, self.on_change = interval, clock, on_change
        self.dns_names = service_dns_names(service, self.namespace)
        self.state: CertState | None = None

    def ensure(self) -> tuple[Path, Path]:
        """Make Secret, files and caBundle current; returns the (cert, key) paths to serve from."""
        state = self.reconcile()
        return state.cert_file, state.key_file

    def reconcile(self) -> CertState:
        for _ in range(5):
            try:
                state = self._reconcile_once()
            except ClusterConflict:
                log.info("another replica updated secret %s/%s first; adopting its certificates",
                         self.namespace, self.secret_name)
                continue
            self.state = state
            if (state.rotated or state.files_changed) and self.on_change is not None:
                self.on_change(state)
            return state
        raise ClusterConflict(f"secret {self.namespace}/{self.secret_name} kept changing while rotating it")

    def _reconcile_once(self) -> CertState:
        now = self.clock()
        obj = self.cluster.get_object("v1", "Secret", self.secret_name, self.namespace)
        data: dict[str, bytes] = {}
        if obj is not None:
            try:
                data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            except (ValueError, TypeError):
                data = {}
        need = ("ca.crt", "ca.key", "tls.crt", "tls.key")
        if all(k in data for k in need):
            problems = serving_problems(data["ca.crt"], data["tls.crt"], data["tls.key"], self.dns_names,
                                        now=now, margin=self.margin)
        else:
            problems = ["no certificates yet"] if obj is None else [f"secret lacks {', '.join(k for k in need if k not in data)}"]
        rotated = False
        if problems:
            log.info("issuing webhook certificates for %s: %s", self.dns_names[0], "; ".join(problems))
            data = self._renew(data, now)
            rv = (obj or {}).get("metadata", {}).get("resourceVersion")
            self.cluster.apply_secret(self.namespace, self.secret_name, data, "kubernetes.io/tls",
                                      labels={"app.kubernetes.io/name": "canrun",
                                              "app.kubernetes.io/component": "webhook-tls"},
                                      create_only=obj is None, resource_version=None if obj is None else rv)
            rotated = True
        files_changed = write_tls_dir(self.cert_dir, {"tls.crt": data["tls.crt"], "tls.key": data["tls.key"],
                                                      "ca.crt": data["ca.crt"]})
        patched, error = False, None
        if self.webhook_config:
            # Serving must not wait for the webhook configuration: it may be applied after the
            # Deployment, and until its caBundle is set the API server simply does not call us
            # (failurePolicy Ignore).  The next check patches it.
            try:
                patched = self.cluster.patch_webhook_ca_bundle(self.webhook_config, data["ca.crt"])
                # pin mode's mutating webhook (an optional component) shares the name and the CA
                patched |= self.cluster.patch_webhook_ca_bundle(self.webhook_config, data["ca.crt"],
                                                                kind="MutatingWebhookConfiguration",
                                                                missing_ok=True)
            except ClusterConflict:
                raise
            except CanrunError as exc:
                error = str(exc)
                log.warning("caBundle not patched yet: %s", exc)
        return CertState(data["ca.crt"], CertKeyPair(data["tls.crt"], data["tls.key"]),
                         self.cert_dir / "tls.crt", self.cert_dir / "tls.key", self.cert_dir / "ca.crt",
                         rotated, files_changed, patched, error)

    def _renew(self, old: dict[str, bytes], now: dt.datetime) -> dict[str, bytes]:
        """New serving pair; the CA is kept unless it is unusable or near its own expiry."""
        ca: CertKeyPair | None = None
        previous: list[x509.Certificate] = []
        if "ca.crt" in old and "ca.key" in old:
            try:
                previous = load_certificates(old["ca.crt"])
                candidate = CertKeyPair(previous[0].public_bytes(serialization.Encoding.PEM), old["ca.key"])
                if candidate.key_matches() and not needs_rotation(candidate.cert_pem, now, self.margin):
                    ca = candidate
            except ValueError:
                previous = []
        if ca is None:
            ca = generate_ca(validity=self.ca_validity, now=now)
        serving = issue_serving_cert(ca, self.dns_names, validity=self.serving_validity, now=now)
        bundle = ca.cert_pem
        for cert in previous:  # keep older CAs trusted until they expire, for replicas still serving their certs
            pem = cert.public_bytes(serialization.Encoding.PEM)
            if pem != ca.cert_pem and cert.not_valid_after_utc > now:
                bundle += pem
        return {"ca.crt": bundle, "ca.key": ca.key_pem, "tls.crt": serving.cert_pem, "tls.key": serving.key_pem}

    async def run(self) -> None:
        """Re-check every ``interval`` seconds until cancelled; errors are logged and retried sooner."""
        while True:
            try:
                state = await asyncio.to_thread(self.reconcile)
                delay = self.interval if state.ca_bundle_error is None else min(self.interval, 30.0)
            except CanrunError as exc:
                log.warning("certificate check failed: %s", exc)
                delay = min(self.interval, 30.0)
            await asyncio.sleep(delay)


# --- ``canrun certs`` ---------------------------------------------------------------------------------

def add_arguments(p: Any) -> None:
    """The flags of ``canrun certs``."""
    p.add_argument("--namespace", default="canrun", help="namespace of the webhook Service (default canrun)")
    p.add_argument("--service", default=SERVICE, help="name of the webhook Service (default canrun)")
    p.add_argument("--secret-name", default=SECRET_NAME, help=f"name of the Secret manifest (default {SECRET_NAME})")
    p.add_argument("--out", type=Path, default=Path("canrun-certs"), metavar="DIR",
                   help="directory to write into (default ./canrun-certs)")
    p.add_argument("--ca-days", type=int, default=CA_VALIDITY.days, help="CA validity in days (default 3650)")
    p.add_argument("--days", type=int, default=SERVING_VALIDITY.days,
                   help="serving certificate validity in days (default 365)")
    p.add_argument("--force", action="store_true", help="overwrite files already in --out")


def run_command(args: Any, stdout: Any) -> int:
    """Write ca.crt, ca.key, tls.crt, tls.key, secret.yaml and ca-bundle.b64 into ``args.out``."""
    import yaml

    if args.days <= 0 or args.ca_days <= 0:
        raise UsageError("--days and --ca-days must be positive")
    out: Path = args.out
    names = ("ca.crt", "ca.key", "tls.crt", "tls.key", "secret.yaml", "ca-bundle.b64")
    clash = [n for n in names if (out / n).exists()]
    if clash and not args.force:
        raise UsageError(f"{out} already holds {', '.join(clash)}; pass --force to replace them")
    ca = generate_ca(validity=dt.timedelta(days=args.ca_days))
    dns = service_dns_names(args.service, args.namespace)
    serving = issue_serving_cert(ca, dns, validity=dt.timedelta(days=args.days))
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_private(out / "ca.key", ca.key_pem)
        _write_private(out / "tls.key", serving.key_pem)
        _write_private(out / "ca.crt", ca.cert_pem, 0o644)
        _write_private(out / "tls.crt", serving.cert_pem, 0o644)
        _write_private(out / "secret.yaml", yaml.safe_dump(
            secret_manifest(args.namespace, args.secret_name, ca, serving), sort_keys=False).encode())
        _write_private(out / "ca-bundle.b64", (ca_bundle(ca.cert_pem) + "\n").encode(), 0o644)
    except OSError as exc:
        raise UsageError(f"cannot write certificates to {out}: {exc.strerror or exc}") from exc
    stdout.write(
        f"wrote {', '.join(names)} to {out}\n"
        f"serving certificate for {', '.join(dns)}, valid until {serving.not_after:%Y-%m-%d}\n"
        f"next: kubectl apply -f {out / 'secret.yaml'}, run canrun serve with --tls-cert/--tls-key from that "
        f"Secret, and set the ValidatingWebhookConfiguration's caBundle to the content of {out / 'ca-bundle.b64'}\n"
        f"(keep ca.key offline: it can sign certificates the API server would trust for this webhook)\n")
    return 0
