"""TLS and authentication against real docker-registry instances: a private CA, htpasswd Basic auth,
and the distribution token flow with an in-process token server whose JWTs the registry verifies."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from canrun.errors import RegistryAuthError, RegistryUnreachable
from canrun.registry.auth import Credential, Keychain, use_keychain
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.registry.reference import Reference
from tests.registry.conftest import push_image
from tests.support.httpstub import StubRequest, StubResponse, stub_server
from tests.support.registry import RunningRegistry, start_registry
from tests.support.tls import CertAuthority, make_ca
from tests.support.tokenauth import (TokenService, start_htpasswd_registry, start_tls_registry,
                                     start_token_registry, token_service)

pytestmark = pytest.mark.registry

PASSWORD = "s3cret-Pa55word"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def docker_config(tmp_path: Path, host: str, user: str, password: str) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {host: {"auth": b64(f"{user}:{password}")}}}))
    return str(path)


async def read_image(client: RegistryClient, ref: Reference) -> bytes:
    """Resolve, fetch the manifest and the config: what the engine does first."""
    top = await client.resolve(ref)
    _, body = await client.manifest(ref, top.digest)
    config = json.loads(body)["config"]
    return await client.blob(ref, config["digest"], max_size=1 << 20)


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


# --------------------------------------------------------------------------- TLS
@pytest.fixture(scope="session")
def tls_registry(ca: CertAuthority, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    work = tmp_path_factory.mktemp("tls-registry")
    server = ca.issue(work, "registry", hosts=("127.0.0.1", "localhost"))
    reg = start_tls_registry(work, server.cert, server.key)
    push_image(reg.url, "app", "v1", "amd64", {"bin/app": b"tls"}, verify=str(ca.cert_path))
    yield reg
    reg.stop()


async def test_tls_registry_works_with_the_ca_file(tls_registry: RunningRegistry, ca: CertAuthority) -> None:
    async with RegistryClient(RegistrySettings(ca_file=str(ca.cert_path))) as c:
        config = await read_image(c, Reference.parse(f"{tls_registry.host}/app:v1"))
    assert json.loads(config)["architecture"] == "amd64"


async def test_tls_registry_without_the_ca_fails_clearly_and_never_downgrades(tls_registry: RunningRegistry) -> None:
    async with RegistryClient(RegistrySettings()) as c:
        with pytest.raises(RegistryUnreachable) as info:
            await c.resolve(Reference.parse(f"{tls_registry.host}/app:v1"))
    message = str(info.value)
    assert "certificate" in message and "not trusted" in message and "--ca-file" in message
    assert tls_registry.host in message


async def test_insecure_host_skips_verification(tls_registry: RunningRegistry) -> None:
    async with RegistryClient(RegistrySettings(insecure_hosts=frozenset({tls_registry.host}))) as c:
        config = await read_image(c, Reference.parse(f"{tls_registry.host}/app:v1"))
    assert json.loads(config)["os"] == "linux"


# --------------------------------------------------------------------------- htpasswd (Basic)
@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    work = tmp_path_factory.mktemp("basic-registry")
    line = subprocess.run(["htpasswd", "-Bbn", "alice", PASSWORD], check=True, capture_output=True,
                          text=True).stdout.strip()
    (work / "htpasswd").write_text(line + "\n")
    reg = start_htpasswd_registry(work, work / "htpasswd")
    push_image(reg.url, "private/app", "v1", "arm64", {"bin/app": b"basic"}, auth=("alice", PASSWORD))
    yield reg
    reg.stop()


async def test_basic_auth_with_docker_config_credentials(basic_registry: RunningRegistry, tmp_path: Path) -> None:
    settings = RegistrySettings(docker_config=docker_config(tmp_path, f"http://{basic_registry.host}", "alice",
                                                            PASSWORD))
    async with RegistryClient(settings) as c:
        config = await read_image(c, Reference.parse(f"{basic_registry.host}/private/app:v1"))
    assert json.loads(config)["architecture"] == "arm64"


async def test_wrong_basic_credentials_are_an_auth_error_without_the_password(
        basic_registry: RunningRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "wrong-Pa55-" + "x" * 8
    settings = RegistrySettings(docker_config=docker_config(tmp_path, basic_registry.host, "alice", wrong))
    with caplog.at_level(logging.DEBUG):
        async with RegistryClient(settings) as c:
            with pytest.raises(RegistryAuthError) as info:
                await c.resolve(Reference.parse(f"{basic_registry.host}/private/app:v1"))
            assert wrong not in repr(c) and wrong not in repr(c.settings)
    assert info.value.status == 401 and "with the configured credentials" in str(info.value)
    for text in (str(info.value), repr(info.value), caplog.text):
        assert wrong not in text and b64(f"alice:{wrong}") not in text


async def test_no_credentials_is_an_auth_error_that_says_so(basic_registry: RunningRegistry) -> None:
    async with RegistryClient(RegistrySettings()) as c:
        with pytest.raises(RegistryAuthError, match="anonymously"):
            await c.resolve(Reference.parse(f"{basic_registry.host}/private/app:v1"))


async def test_request_keychain_is_used_first_and_only_for_its_host(basic_registry: RunningRegistry,
                                                                   tmp_path: Path) -> None:
    settings = RegistrySettings(docker_config=docker_config(tmp_path, basic_registry.host, "alice", "wrong"))
    ref = Reference.parse(f"{basic_registry.host}/private/app:v1")
    async with RegistryClient(settings) as c:
        with use_keychain(Keychain({basic_registry.host: Credential("alice", PASSWORD)})):
            await read_image(c, ref)  # the pod's secret wins over the operator's (wrong) config
        with use_keychain(Keychain({"other.example.com": Credential("alice", PASSWORD)})):
            with pytest.raises(RegistryAuthError):  # a secret for another host is never sent here
                await c.resolve(ref)


async def test_credential_helper_on_path_logs_in_to_a_real_registry(basic_registry: RunningRegistry, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``credHelpers`` in the operator's config.json: docker's protocol with a real docker-credential-* program."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "asked"
    helper = bin_dir / "docker-credential-canrun-test"
    helper.write_text(f'#!/bin/sh\nread url\necho "$1 $url" >> {asked}\n'
                      f'echo \'{{"ServerURL":"x","Username":"alice","Secret":"{PASSWORD}"}}\'\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {}, "credHelpers": {basic_registry.host: "canrun-test"}}))
    async with RegistryClient(RegistrySettings(docker_config=str(config))) as c:
        data = await read_image(c, Reference.parse(f"{basic_registry.host}/private/app:v1"))
        assert PASSWORD not in repr(c)
    assert json.loads(data)["architecture"] == "arm64"
    assert asked.read_text().splitlines() == [f"get {basic_registry.host}"]  # asked once, then remembered
    # the same config without the helper installed: anonymous, and the refusal says so
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    async with RegistryClient(RegistrySettings(docker_config=str(config))) as c:
        with pytest.raises(RegistryAuthError, match="anonymously"):
            await c.resolve(Reference.parse(f"{basic_registry.host}/private/app:v1"))


# --------------------------------------------------------------------------- token auth (real registry)
@dataclass
class TokenSetup:
    registry: RunningRegistry
    tokens: TokenService


@pytest.fixture(scope="session")
def token_setup(ca: CertAuthority, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenSetup]:
    work = tmp_path_factory.mktemp("token-registry")
    # fill the storage through an open registry, then serve the same storage behind token auth
    filler = start_registry(work)
    push_image(filler.url, "team/app", "v1", "amd64", {"bin/app": b"token"})
    filler.stop()
    with token_service(ca, work) as tokens:
        reg = start_token_registry(work, ca, tokens)
        yield TokenSetup(reg, tokens)
        reg.stop()


async def test_token_flow_with_a_real_registry_and_token_caching(token_setup: TokenSetup, tmp_path: Path) -> None:
    reg, tokens = token_setup.registry, token_setup.tokens
    settings = RegistrySettings(docker_config=docker_config(tmp_path, reg.host, tokens.username, tokens.password))
    before = len(tokens.token_requests)
    async with RegistryClient(settings) as c:
        ref = Reference.parse(f"{reg.host}/team/app:v1")
        config = await read_image(c, ref)
        await read_image(c, ref)
    assert json.loads(config)["architecture"] == "amd64"
    asked = tokens.token_requests[before:]
    assert len(asked) == 1  # one token for the scope, reused for HEAD, GETs and blobs
    query = parse_qs(urlsplit(asked[0].path).query)
    assert query["scope"] == ["repository:team/app:pull"] and query["service"] == ["canrun-test-registry"]
    assert asked[0].headers["authorization"] == "Basic " + b64(f"{tokens.username}:{tokens.password}")


async def test_token_flow_anonymous_and_wrong_password_are_auth_errors(token_setup: TokenSetup,
                                                                       tmp_path: Path) -> None:
    reg, tokens = token_setup.registry, token_setup.tokens
    ref = Reference.parse(f"{reg.host}/team/app:v1")
    async with RegistryClient(RegistrySettings()) as c:
        with pytest.raises(RegistryAuthError, match="anonymously"):
            await c.resolve(ref)
    settings = RegistrySettings(docker_config=docker_config(tmp_path, reg.host, tokens.username, "not-it-123"))
    async with RegistryClient(settings) as c:
        with pytest.raises(RegistryAuthError, match="token server") as info:
            await c.resolve(ref)
    assert "not-it-123" not in str(info.value)


async def test_tokens_are_not_shared_between_request_keychains(token_setup: TokenSetup) -> None:
    """A token got with one pod's secret must not serve a request that has no secret."""
    reg, tokens = token_setup.registry, token_setup.tokens
    ref = Reference.parse(f"{reg.host}/team/app:v1")
    async with RegistryClient(RegistrySettings()) as c:
        with use_keychain(Keychain({reg.host: Credential(tokens.username, tokens.password)})):
            await read_image(c, ref)
        with pytest.raises(RegistryAuthError):
            await c.resolve(ref)


# --------------------------------------------------------------------------- token flow stand-in
async def test_token_stand_in_access_token_identity_token_and_expiry() -> None:
    """What docker-registry's token config cannot show: ``access_token``, the OAuth2 refresh-token POST,
    a realm on another host, and re-fetching once a token expires."""
    issued: list[str] = []

    def token_handler(req: StubRequest) -> StubResponse:
        form = parse_qs(req.body.decode())
        if req.method != "POST" or form.get("grant_type") != ["refresh_token"] \
                or form.get("refresh_token") != ["idtok-123"]:
            return StubResponse(401)
        issued.append(f"tok{len(issued)}")
        body = json.dumps({"access_token": issued[-1], "expires_in": 1}).encode()  # below the 60 s floor
        return StubResponse(200, {"Content-Type": "application/json"}, body)

    with stub_server(token_handler) as auth:
        def registry(req: StubRequest) -> StubResponse:
            challenge = f'Bearer realm="{auth.url}/token",service="stub",scope="repository:app:pull"'
            if req.headers.get("authorization") not in {f"Bearer {t}" for t in issued}:
                return StubResponse(401, {"WWW-Authenticate": challenge})
            return StubResponse(200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                                      "Docker-Content-Digest": "sha256:" + "a" * 64})

        with stub_server(registry) as srv:
            chain = Keychain({srv.host: Credential(identity_token="idtok-123")})
            async with RegistryClient(RegistrySettings(keychain=chain)) as c:
                ref = Reference.parse(f"{srv.host}/app:v1")
                assert (await c.resolve(ref)).digest == "sha256:" + "a" * 64
                await c.resolve(ref)
                assert issued == ["tok0"]  # cached: 1 s is raised to the spec's 60 s minimum
                c.auth.tokens = {k: (t, 0.0) for k, (t, _) in c.auth.tokens.items()}  # age the token
                await c.resolve(ref)
                assert issued == ["tok0", "tok1"]
            assert all(r.headers.get("authorization") is None for r in auth.requests)
