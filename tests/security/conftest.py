"""Real parts for the security tests: registries that require credentials, a redirecting proxy, a header
recorder, listeners that prove no connection was made, and a webhook whose every output is captured.

* ``auth_registries`` (session): a real ``docker-registry`` behind htpasswd Basic auth and one behind the
  real token flow (tests/support/tokenauth.py), each holding catalogue images copied in with ``skopeo``
  (with credentials), so what canrun reads there needs the secret.
* ``RedirectingProxy``: an HTTP proxy in front of a registry that forwards everything but answers blob GETs
  with a 307 to another host:port, as registries do for object storage.
* ``HeaderRecorder``: that other host; records every request's headers and serves the blob from the
  registry's storage.
* ``Listener``: a socket listening on an address; ``connections()`` counts handshakes the kernel
  completed (they queue in the backlog even without ``accept``), so "no TCP connection was made" is a fact.
* ``Observed``: everything a user or operator can see of a webhook: answers, JSON log lines (canrun and
  uvicorn loggers at DEBUG, root at WARNING), /metrics, Events in the API stand-in.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from canrun.config import CacheSettings, RegistryAccess, Settings, WebhookSettings
from canrun.webhook.logs import JsonFormatter
from canrun.webhook.service import AdmissionService, PoolSource
from tests.support.admission import review  # noqa: F401 (the security tests import it from here)
from tests.support.images import Catalogue
from tests.support.registry import RunningRegistry, start_registry
from tests.support.tls import CertAuthority, make_ca
from tests.support.webhook import AMD64_ONLY, ServerThread, serve_webhook, stopped_at_exit
from tests.support.tokenauth import TokenService, start_htpasswd_registry, start_token_registry, token_service
from tests.webhook.tlsutil import issue
from tests.webhook.tlsutil import make_ca as make_webhook_ca

USERNAME = "alice"
#: Images copied into the auth registries: one with an error finding, one that runs.
PRIVATE_IMAGES = {"whiteout": "private/whiteout:v1", "busybox-amd64": "private/busybox:v1"}


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def docker_config_json(auths: dict[str, tuple[str, str]]) -> dict[str, Any]:
    return {"auths": {host: {"auth": b64(f"{user}:{password}")} for host, (user, password) in auths.items()}}


@dataclass
class AuthRegistries:
    basic: RunningRegistry
    token: RunningRegistry
    tokens: TokenService
    password: str
    username: str = USERNAME

    @property
    def auth_string(self) -> str:
        """What a docker config's ``auth`` field and a Basic header carry."""
        return b64(f"{self.username}:{self.password}")

    def ref(self, which: str, image: str) -> str:
        host = self.basic.host if which == "basic" else self.token.host
        return f"{host}/{PRIVATE_IMAGES[image]}"

    def pull_secret(self, name: str, namespace: str, hosts: tuple[str, ...] | None = None) -> dict[str, Any]:
        """A kubernetes.io/dockerconfigjson Secret with the credentials for ``hosts`` (default: both)."""
        hosts = hosts or (self.basic.host, self.token.host)
        config = json.dumps(docker_config_json({h: (self.username, self.password) for h in hosts}))
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": name, "namespace": namespace},
                "data": {".dockerconfigjson": b64(config)}}

    def secrets(self) -> dict[str, str]:
        """Every spelling of the credentials that must never show up anywhere."""
        config = json.dumps(docker_config_json({self.basic.host: (self.username, self.password)}))
        return {"password": self.password, "auth": self.auth_string, "auth-urlsafe": base64.urlsafe_b64encode(
            f"{self.username}:{self.password}".encode()).decode(), "dockerconfigjson": b64(config)}


def assert_no_secrets(text: str, secrets_: dict[str, str], where: str) -> None:
    """No credential spelling and no JWT (every bearer token starts ``eyJ``, base64 of ``{"``) in ``text``."""
    for name, value in secrets_.items():
        assert value not in text, f"the {name} leaked into {where}"
    assert "eyJ" not in text, f"a bearer token (JWT) leaked into {where}"


@pytest.fixture(scope="session")
def token_ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("token-ca"))


def _copy(src: str, dest: str, creds: str | None) -> None:
    auth = ["--dest-creds", creds] if creds else []
    proc = subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                           *auth, f"docker://{src}", f"docker://{dest}"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"skopeo copy {src} -> {dest} failed: {proc.stderr[-800:]}")


@pytest.fixture(scope="session")
def auth_registries(catalogue: Catalogue, token_ca: CertAuthority,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthRegistries]:
    password = "pw-" + secrets.token_hex(16)
    work = tmp_path_factory.mktemp("auth-registries")
    line = subprocess.run(["htpasswd", "-Bbn", USERNAME, password], check=True, capture_output=True,
                          text=True).stdout.strip()
    (work / "htpasswd").write_text(line + "\n")
    (work / "token").mkdir()
    # the token registry's storage is filled through an open registry first (the token stand-in's answers
    # are enough for canrun and docker-registry, not for skopeo's push), then served behind token auth
    filler = start_registry(work / "token")
    try:
        for name, repo in PRIVATE_IMAGES.items():
            _copy(catalogue.ref(name), f"{filler.host}/{repo}", None)
    finally:
        filler.stop()
    basic = start_htpasswd_registry(work / "basic", work / "htpasswd")
    try:
        for name, repo in PRIVATE_IMAGES.items():
            _copy(catalogue.ref(name), f"{basic.host}/{repo}", f"{USERNAME}:{password}")
        with token_service(token_ca, work / "token", username=USERNAME, password=password) as tokens:
            token = start_token_registry(work / "token", token_ca, tokens)
            try:
                yield AuthRegistries(basic, token, tokens, password)
            finally:
                token.stop()
    finally:
        basic.stop()


# -- a redirecting proxy and a header recorder ------------------------------------------------------------

@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


class _Server:
    """A ThreadingHTTPServer on ``listen`` in a daemon thread, recording requests."""

    def __init__(self, listen: str, handle: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.requests: list[Recorded] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                with lock:
                    outer.requests.append(Recorded(self.command, self.path,
                                                   {k.lower(): v for k, v in self.headers.items()}))
                handle(self)

            do_GET = do_HEAD = do_POST = _serve

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
                pass

        family = socket.AF_INET6 if ":" in listen else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self.server = Server((listen, 0), Handler)
        self.port = int(self.server.server_address[1])
        self.listen = listen
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        name = f"[{self.listen}]" if ":" in self.listen else self.listen
        return f"{name}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _reply(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    if "content-length" not in {k.lower() for k in headers}:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


class HeaderRecorder(_Server):
    """The "object storage" a registry redirects blob reads to: records headers, serves the blob bytes."""

    def __init__(self, listen: str, blob_path: Callable[[str], Path]) -> None:
        def handle(h: BaseHTTPRequestHandler) -> None:
            digest = h.path.rsplit("/", 1)[-1].split("?", 1)[0]
            try:
                body = blob_path(digest).read_bytes()
            except (OSError, ValueError):
                _reply(h, 404, {}, b"")
                return
            _reply(h, 200, {"Content-Type": "application/octet-stream"}, body)

        super().__init__(listen, handle)


class RedirectingProxy(_Server):
    """Forwards to ``upstream`` (auth headers included), recording them; blob GETs get a 307 to ``redirect_to``."""

    def __init__(self, upstream: str, redirect_to: Callable[[str], str] | None = None,
                 listen: str = "127.0.0.1") -> None:
        client = httpx.Client(timeout=30)

        def handle(h: BaseHTTPRequestHandler) -> None:
            if redirect_to is not None and h.command == "GET" and "/blobs/sha256:" in h.path:
                digest = h.path.rsplit("/", 1)[-1]
                _reply(h, 307, {"Location": redirect_to(digest)}, b"")
                return
            fwd = {k: v for k, v in h.headers.items() if k.lower() in ("authorization", "accept")}
            resp = client.request(h.command, f"http://{upstream}{h.path}", headers=fwd)
            keep = {k: v for k, v in resp.headers.items()
                    if k.lower() in ("content-type", "docker-content-digest", "www-authenticate", "content-length",
                                     "docker-distribution-api-version", "location")}
            if h.command == "HEAD":
                _reply(h, resp.status_code, keep, b"")
            else:
                keep.pop("content-length", None)
                keep.pop("Content-Length", None)
                _reply(h, resp.status_code, keep, resp.content)

        super().__init__(listen, handle)
        self._client = client

    def stop(self) -> None:
        super().stop()
        self._client.close()


# -- listeners that prove nothing connected ----------------------------------------------------------------

class Listener:
    """A listening socket nobody accepts on: a completed handshake waits in the backlog, so it is countable."""

    def __init__(self, address: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0

    def connections(self) -> int:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return self.accepted
            conn.close()
            self.accepted += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listeners() -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(address: str = "127.0.0.1", port: int = 0) -> Listener:
        listener = Listener(address, port)
        made.append(listener)
        return listener

    yield make
    for listener in made:
        listener.close()


# -- a webhook with everything observable ------------------------------------------------------------------

@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """canrun's and uvicorn's loggers at DEBUG (what ``--log-level debug`` emits) as JSON lines, root at WARNING."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    saved = []
    for name, level in (("canrun", logging.DEBUG), ("uvicorn", logging.DEBUG), ("", logging.WARNING)):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, list(logger.handlers)))
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield stream
    finally:
        for logger, level, handlers in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)


@dataclass
class Hook:
    thread: ServerThread
    client: httpx.Client
    service: AdmissionService
    engine: Any
    answers: list[str] = field(default_factory=list)

    def review(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.client.post("/validate", json=body)
        self.answers.append(resp.text)
        assert resp.status_code == 200, resp.text
        return dict(resp.json()["response"])

    def drain(self) -> None:
        self.thread.call(self.service.drain())

    def metrics(self) -> str:
        return self.client.get("/metrics").text


@pytest.fixture
def start_hook(tmp_path: Path) -> Iterator[Callable[..., Hook]]:
    ca = make_webhook_ca()
    ca_file = ca.write(tmp_path / "webhook-ca.pem")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    issue(ca, cert, key, common_name="canrun-security")

    def start(*, insecure: tuple[str, ...] = (), allow: tuple[str, ...] = (), blocked: tuple[str, ...] = (),
              mode: str = "warn", cluster: Any = None, pool: PoolSource | None = None,
              docker_config: Path | None = None, deadline: float = 10.0) -> Hook:
        settings = Settings(registry=RegistryAccess(insecure=insecure, ssrf_guard=True, allow_hosts=allow,
                                                   blocked_networks=blocked, docker_config=docker_config, timeout=5),
                            cache=CacheSettings(dir=tmp_path / f"cache-{uuid.uuid4().hex[:8]}"))
        webhook = WebhookSettings(default_mode=mode, deadline=deadline, warm_interval=0.0)
        served = serve_webhook(settings, webhook, cert=cert, key=key, ca_file=ca_file, pool=pool or AMD64_ONLY,
                               cluster=cluster, client_timeout=60)
        hook = Hook(served.thread, served.client, served.service, served.engine)
        running.append(hook)
        return hook

    with stopped_at_exit() as running:
        yield start


def pod(images: list[str], *, namespace: str = "tenant", name: str = "web",
        pull_secrets: tuple[str, ...] = (), service_account: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    if service_account:
        spec["serviceAccountName"] = service_account
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                           "uid": str(uuid.uuid4())}, "spec": spec}


@pytest.fixture(autouse=True)
def _no_user_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's own ~/.docker/config.json must not lend credentials to these tests."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


def second_loopback() -> str:
    """Another loopback address (a different host for the client), else 127.0.0.1 (a different port)."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return "127.0.0.1"

