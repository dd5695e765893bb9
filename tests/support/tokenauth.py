"""A distribution token server (the "auth: token:" side of docker-registry), run in-process.

It checks Basic credentials, grants the requested ``repository:<name>:pull``
scope to the right user (anonymous callers get a token with no access, as
Docker Hub does for private repositories), and signs RS256 JWTs with a key
whose certificate chains to the test CA; the registry is configured with that
CA as ``rootcertbundle`` and verifies the ``x5c`` header, so the tokens are
checked for real.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from tests.support.httpstub import StubRequest, StubResponse, StubServer, stub_server
from tests.support.registry import RunningRegistry, start_registry
from tests.support.tls import CertAuthority

ISSUER = "canrun-test-issuer"
SERVICE = "canrun-test-registry"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenService:
    stub: StubServer
    username: str
    password: str

    @property
    def realm(self) -> str:
        return f"{self.stub.url}/token"

    @property
    def token_requests(self) -> list[StubRequest]:
        return self.stub.requests_to("/token")


@contextmanager
def token_service(ca: CertAuthority, workdir: Path, *, username: str = "alice",
                  password: str | None = None, expires_in: int = 300) -> Iterator[TokenService]:
    password = password or secrets.token_urlsafe(12)
    signer = ca.issue(workdir, "token-signer", hosts=("token-signer",), rsa_key=True)
    x5c = [base64.b64encode(signer.cert_obj.public_bytes(serialization.Encoding.DER)).decode()]

    def sign(claims: dict[str, object]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": x5c}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = signer.key_obj.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[attr-defined]
        return f"{signing_input}.{_b64(signature)}"

    def handle(req: StubRequest) -> StubResponse:
        query = parse_qs(urlsplit(req.path).query)
        auth = req.headers.get("authorization", "")
        user = None
        if auth.startswith("Basic "):
            got_user, _, got_pass = base64.b64decode(auth[6:]).decode().partition(":")
            if (got_user, got_pass) != (username, password):
                return StubResponse(401, {"Content-Type": "application/json"}, b'{"details":"bad credentials"}')
            user = got_user
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and user is not None:
                access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a == "pull"]})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": query.get("service", [""])[0], "exp": now + expires_in,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        body = json.dumps({"token": sign(claims), "expires_in": expires_in, "issued_at": ""}).encode()
        return StubResponse(200, {"Content-Type": "application/json"}, body)

    with stub_server(handle) as stub:
        yield TokenService(stub, username, password)


def start_token_registry(workdir: Path, ca: CertAuthority, service: TokenService) -> RunningRegistry:
    config = (
        "auth:\n  token:\n"
        f"    realm: {service.realm}\n"
        f"    service: {SERVICE}\n"
        f"    issuer: {ISSUER}\n"
        f"    rootcertbundle: {ca.cert_path}\n"
    )
    return start_registry(workdir, extra_config=config)


def start_htpasswd_registry(workdir: Path, htpasswd_file: Path) -> RunningRegistry:
    config = f"auth:\n  htpasswd:\n    realm: canrun-test\n    path: {htpasswd_file}\n"
    return start_registry(workdir, extra_config=config)


def start_tls_registry(workdir: Path, cert: Path, key: Path) -> RunningRegistry:
    config = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
    return start_registry(workdir, extra_config=config, scheme="https")
