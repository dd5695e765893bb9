"""Registry behaviour a healthy docker-registry never shows on demand, from a scripted loopback server:
retries, timeouts, redirects to storage, HEAD without a digest, lying bodies, and the SSRF guard."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import ipaddress
import json
import socket
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from canrun.errors import (ImageCorrupt, ImageNotFound, RegistryHTTPError, RegistryRefused, RegistryUnreachable,
                           UnsupportedManifest)
from canrun.registry.auth import Credential, Keychain
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.registry.reference import Reference
from tests.support.httpstub import StubRequest, StubResponse, stub_server

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + "1" * 64, "size": 2}, "layers": []}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
BLOB = b"layer bytes " * 1000
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
OCI = "application/vnd.oci.image.manifest.v1+json"


def fast(**kw: object) -> RegistrySettings:
    return RegistrySettings(**{"backoff": 0.01, "timeout": 5.0, **kw})  # type: ignore[arg-type]


def registry_handler(*, blob: Callable[[StubRequest], StubResponse] | None = None,
                     manifest_headers: dict[str, str] | None = None, body: bytes = MANIFEST,
                     basic: tuple[str, str] | None = None) -> Callable[[StubRequest], StubResponse]:
    """A minimal registry: /v2/, one manifest (tag v1 and its digest), one blob."""
    expected = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode() if basic else None

    def handle(req: StubRequest) -> StubResponse:
        if expected and req.headers.get("authorization") != expected and not req.path.startswith("/storage"):
            return StubResponse(401, {"WWW-Authenticate": 'Basic realm="stub"'})
        if req.path == "/v2/":
            return StubResponse(200)
        if req.path.startswith("/v2/app/manifests/"):
            headers = {"Content-Type": OCI, "Docker-Content-Digest": MANIFEST_DIGEST}
            if manifest_headers is not None:
                headers = manifest_headers
            return StubResponse(200, headers, body)
        if req.path.startswith("/v2/app/blobs/") and blob is not None:
            return blob(req)
        return StubResponse(404, {"Content-Type": "application/json"},
                            b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
    return handle


async def test_503_then_200_is_retried_honouring_retry_after() -> None:
    calls = {"n": 0}
    inner = registry_handler()

    def handle(req: StubRequest) -> StubResponse:
        if req.path.startswith("/v2/app/manifests/"):
            calls["n"] += 1
            if calls["n"] <= 2:
                return StubResponse(503, {"Retry-After": "0"})
        return inner(req)

    with stub_server(handle) as srv:
        async with RegistryClient(fast()) as c:
            top = await c.resolve(Reference.parse(f"{srv.host}/app:v1"))
            assert top.digest == MANIFEST_DIGEST
            stats = c.stats.snapshot()
    assert stats[(srv.host, "503")] == 2 and stats[(srv.host, "200")] >= 2


async def test_retries_are_bounded_and_the_error_names_host_and_status() -> None:
    with stub_server(lambda req: StubResponse(200) if req.path == "/v2/" else StubResponse(429)) as srv:
        async with RegistryClient(fast(retries=2)) as c:
            with pytest.raises(RegistryHTTPError) as info:
                await c.manifest(Reference.parse(f"{srv.host}/app:v1"))
    assert info.value.status == 429 and srv.host in str(info.value) and "429" in str(info.value)
    assert len(srv.requests_to("/v2/app/")) == 3  # the first try and two retries


async def test_a_slow_registry_times_out_as_unreachable() -> None:
    def handle(req: StubRequest) -> StubResponse:
        return StubResponse(200, delay=3.0) if req.path.startswith("/v2/app") else StubResponse(200)

    with stub_server(handle) as srv:
        async with RegistryClient(fast(timeout=0.3)) as c:
            with pytest.raises(RegistryUnreachable, match="timed out after 0.3s"):
                await c.resolve(Reference.parse(f"{srv.host}/app:v1"))
            assert c.stats.snapshot()[(srv.host, "timeout")] == 1


async def test_head_without_digest_falls_back_to_get_once() -> None:
    handler = registry_handler(manifest_headers={"Content-Type": OCI})  # no Docker-Content-Digest
    with stub_server(handler) as srv:
        async with RegistryClient(fast()) as c:
            ref = Reference.parse(f"{srv.host}/app:v1")
            top = await c.resolve(ref)
            desc, body = await c.manifest(ref, top.digest)
    assert top.digest == MANIFEST_DIGEST and body == MANIFEST
    methods = [r.method for r in srv.requests_to("/v2/app/manifests/")]
    assert methods == ["HEAD", "GET"]  # the manifest() after resolve() is not fetched again


async def test_head_with_digest_costs_no_get() -> None:
    with stub_server(registry_handler()) as srv:
        async with RegistryClient(fast()) as c:
            await c.resolve(Reference.parse(f"{srv.host}/app:v1"))
    assert [r.method for r in srv.requests_to("/v2/app/manifests/")] == ["HEAD"]
    assert "application/vnd.oci.image.index.v1+json" in srv.requests_to("/v2/app/manifests/")[0].headers["accept"]


async def test_manifest_that_does_not_match_its_digest_is_corrupt() -> None:
    lying = MANIFEST.replace(b'"layers": []', b'"layers": [] ')
    with stub_server(registry_handler(body=lying)) as srv:
        async with RegistryClient(fast()) as c:
            ref = Reference.parse(f"{srv.host}/app:v1")
            with pytest.raises(ImageCorrupt, match=MANIFEST_DIGEST):
                await c.manifest(ref)
            with pytest.raises(ImageCorrupt, match=MANIFEST_DIGEST):
                await c.manifest(ref, MANIFEST_DIGEST)


async def test_schema1_is_refused_with_a_clear_message() -> None:
    headers = {"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"}
    with stub_server(registry_handler(manifest_headers=headers)) as srv:
        async with RegistryClient(fast()) as c:
            with pytest.raises(UnsupportedManifest, match="schema 1"):
                await c.resolve(Reference.parse(f"{srv.host}/app:v1"))


async def test_redirects_keep_authorization_on_the_same_host_and_drop_it_elsewhere() -> None:
    """Registries send blobs to object storage: credentials must not follow them there."""
    with stub_server(lambda req: StubResponse(200, {}, BLOB)) as storage:
        def blob(req: StubRequest) -> StubResponse:
            if "other" in req.path:
                return StubResponse(307, {"Location": f"{storage.url}/bucket/blob?X-Signature=s3cr3t"})
            return StubResponse(302, {"Location": "/storage/same-host"})

        def handle(req: StubRequest) -> StubResponse:
            if req.path == "/storage/same-host":
                return StubResponse(307, {"Location": f"/v2/app/blobs/{BLOB_DIGEST}?other=1"})
            return registry_handler(blob=blob, basic=("u", "pw"))(req)

        with stub_server(handle) as srv:
            chain = Keychain({srv.host: Credential("u", "pw")})
            async with RegistryClient(fast(keychain=chain)) as c:
                ref = Reference.parse(f"{srv.host}/app:v1")
                data = await c.blob(ref, BLOB_DIGEST, max_size=1 << 20)
            assert data == BLOB
            same_host = [r for r in srv.requests if r.path.startswith(("/storage", f"/v2/app/blobs/{BLOB_DIGEST}"))]
            assert [r.path for r in same_host] == [f"/v2/app/blobs/{BLOB_DIGEST}", "/storage/same-host",
                                                   f"/v2/app/blobs/{BLOB_DIGEST}?other=1"]
            assert all(r.headers.get("authorization", "").startswith("Basic ") for r in same_host)
    assert len(storage.requests) == 1
    assert "authorization" not in storage.requests[0].headers


async def test_redirect_loops_are_capped() -> None:
    def blob(req: StubRequest) -> StubResponse:
        return StubResponse(302, {"Location": f"/v2/app/blobs/{BLOB_DIGEST}"})

    with stub_server(registry_handler(blob=blob)) as srv:
        async with RegistryClient(fast(max_redirects=3)) as c:
            with pytest.raises(RegistryHTTPError, match="more than 3 redirects"):
                await c.blob(Reference.parse(f"{srv.host}/app:v1"), BLOB_DIGEST, max_size=100)
    assert len(srv.requests_to("/v2/app/blobs/")) == 4


async def test_ssrf_guard_refuses_loopback_and_metadata_and_allows_listed_hosts() -> None:
    with stub_server(registry_handler()) as srv:
        async with RegistryClient(fast(ssrf_guard=True)) as c:
            with pytest.raises(RegistryRefused, match="loopback address") as info:
                await c.resolve(Reference.parse(f"{srv.host}/app:v1"))
            assert "allowed registry hosts" in str(info.value)
            with pytest.raises(RegistryUnreachable, match="metadata"):
                await c.resolve(Reference.parse("169.254.169.254/latest/meta-data:x"))
            with pytest.raises(RegistryUnreachable, match="link-local"):
                await c.resolve(Reference.parse("169.254.10.1:5000/app:v1"))
            with pytest.raises(RegistryUnreachable, match="loopback"):
                await c.resolve(Reference.parse("localhost:5000/app:v1"))
            assert c.stats.snapshot()[(srv.host, "ssrf")] == 1
            # a name that does not resolve is unreachable, not refused: no "ssrf" count, no allow-list remedy
            with pytest.raises(RegistryUnreachable, match="cannot resolve") as info:
                await c.resolve(Reference.parse("no-such-registry.invalid/app:v1"))
            assert not isinstance(info.value, RegistryRefused)
            assert ("no-such-registry.invalid", "ssrf") not in c.stats.snapshot()
        assert srv.requests == []  # refused before any request
        async with RegistryClient(fast(ssrf_guard=True, allow_hosts=frozenset({srv.host}))) as c:
            assert (await c.resolve(Reference.parse(f"{srv.host}/app:v1"))).digest == MANIFEST_DIGEST
        async with RegistryClient(fast(ssrf_guard=True, allow_hosts=frozenset({"127.0.0.1"}),
                                       blocked_networks=("127.0.0.0/8",))) as c:
            # an explicit allow wins over a blocked network
            assert (await c.resolve(Reference.parse(f"{srv.host}/app:v1"))).digest == MANIFEST_DIGEST
        async with RegistryClient(fast()) as c:  # guard off (the CLI default)
            assert (await c.resolve(Reference.parse(f"{srv.host}/app:v1"))).digest == MANIFEST_DIGEST


async def test_ssrf_guard_checks_redirect_targets() -> None:
    def blob(req: StubRequest) -> StubResponse:
        return StubResponse(307, {"Location": "http://169.254.169.254/latest/meta-data/"})

    with stub_server(registry_handler(blob=blob)) as srv:
        async with RegistryClient(fast(ssrf_guard=True, allow_hosts=frozenset({srv.host}))) as c:
            with pytest.raises(RegistryUnreachable, match="169.254.169.254"):
                await c.blob(Reference.parse(f"{srv.host}/app:v1"), BLOB_DIGEST, max_size=100)


async def test_ssrf_guard_blocks_configured_networks() -> None:
    async with RegistryClient(fast(ssrf_guard=True, blocked_networks=("10.0.0.0/8",))) as c:
        with pytest.raises(RegistryUnreachable, match="blocked network 10.0.0.0/8"):
            await c.resolve(Reference.parse("10.1.2.3:5000/app:v1"))


async def test_ssrf_guard_checks_token_realms() -> None:
    """A hostile registry may name the metadata service as its token realm."""
    def handle(req: StubRequest) -> StubResponse:
        return StubResponse(401, {"WWW-Authenticate": 'Bearer realm="http://169.254.169.254/token",service="x"'})

    with stub_server(handle) as srv:
        async with RegistryClient(fast(ssrf_guard=True, allow_hosts=frozenset({srv.host}))) as c:
            with pytest.raises(RegistryUnreachable, match="169.254.169.254"):
                await c.resolve(Reference.parse(f"{srv.host}/app:v1"))


async def test_a_consumer_may_stop_reading_a_layer_early() -> None:
    def blob(req: StubRequest) -> StubResponse:
        return StubResponse(200, {}, BLOB)

    with stub_server(registry_handler(blob=blob)) as srv:
        async with RegistryClient(fast()) as c:
            ref = Reference.parse(f"{srv.host}/app:v1")
            async with c.stream_blob(ref, BLOB_DIGEST, len(BLOB)) as chunks:
                async for _ in chunks:
                    break
            # the client is still usable afterwards
            assert await c.blob(ref, BLOB_DIGEST, max_size=1 << 20) == BLOB


@pytest.mark.parametrize("status, retried", [(500, True), (502, True), (504, True), (501, False), (404, False)])
async def test_which_statuses_are_retried(status: int, retried: bool) -> None:
    """5xx that can heal (500/502/503/504) and 429 are retried; 501 and 4xx are answers, not hiccups."""
    calls = {"n": 0}
    inner = registry_handler()

    def handle(req: StubRequest) -> StubResponse:
        if req.path.startswith("/v2/app/manifests/"):
            calls["n"] += 1
            if calls["n"] == 1:
                return StubResponse(status)
        return inner(req)

    with stub_server(handle) as srv:
        async with RegistryClient(fast()) as c:
            ref = Reference.parse(f"{srv.host}/app:v1")
            if retried:
                assert (await c.manifest(ref))[0].digest == MANIFEST_DIGEST
            else:
                with pytest.raises((RegistryHTTPError, ImageNotFound)):
                    await c.manifest(ref)
    assert calls["n"] == (2 if retried else 1)


def test_backoff_doubles_with_jitter_and_honours_retry_after_within_the_cap() -> None:
    client = RegistryClient(RegistrySettings(backoff=0.2, max_backoff=10.0))
    for attempt in range(6):
        base = min(10.0, 0.2 * 2 ** attempt)
        for _ in range(20):
            assert base * 0.5 <= client.transport.backoff(attempt, None) <= base
    assert client.transport.backoff(0, "3") == 3.0
    assert client.transport.backoff(0, "3600") == 10.0  # a registry cannot park the check for an hour
    soon = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=5), usegmt=True)
    assert 3.0 <= client.transport.backoff(0, soon) <= 5.0
    past = email.utils.format_datetime(datetime.now(timezone.utc) - timedelta(seconds=60), usegmt=True)
    assert client.transport.backoff(0, past) == 0.0
    assert 0.1 <= client.transport.backoff(0, "soon-ish") <= 0.2  # unreadable: the normal backoff


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(addr).is_loopback else addr


async def test_plain_http_only_for_loopback_and_insecure_hosts() -> None:
    """A remote registry speaking plain HTTP is never read over it unless listed as insecure (as docker does)."""
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback address")
    with stub_server(registry_handler(), listen=addr) as srv:
        async with RegistryClient(fast(retries=0)) as c:
            with pytest.raises(RegistryUnreachable, match="TLS"):
                await c.resolve(Reference.parse(f"{srv.host}/app:v1"))
        assert srv.requests == []  # not one plain-HTTP request went out
        async with RegistryClient(fast(insecure_hosts=frozenset({srv.host}))) as c:
            assert (await c.resolve(Reference.parse(f"{srv.host}/app:v1"))).digest == MANIFEST_DIGEST
    with stub_server(registry_handler()) as local:  # loopback: plain HTTP without being told
        async with RegistryClient(fast()) as c:
            assert (await c.resolve(Reference.parse(f"{local.host}/app:v1"))).digest == MANIFEST_DIGEST


async def test_the_user_agent_names_the_installed_version() -> None:
    import canrun

    with stub_server(registry_handler()) as srv:
        async with RegistryClient(fast()) as c:
            await c.resolve(Reference.parse(f"{srv.host}/app:v1"))
    assert {r.headers.get("user-agent") for r in srv.requests} == {f"canrun/{canrun.__version__}"}
