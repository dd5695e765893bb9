"""A registry that misbehaves on purpose (tests/support/faults.py in front of the real docker-registry, or
alone): every read is bounded in bytes and in time, slow registries do not starve others, a failed layer
leaves no sibling running, credentials stay with their registry, and secrets never reach the output."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from canrun.errors import (CanrunError, ImageCorrupt, LimitExceeded, RegistryAuthError, RegistryError,
                           RegistryUnreachable)
from canrun.image.store import ImageStore, read_deadline
from canrun.platform import Platform
from canrun.registry.auth import Credential, Keychain
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.registry.reference import Reference
from tests.robustness.conftest import deployment, run_cli
from tests.robustness.hostile import LAYER_GZIP, Pusher, digest_of, gz, member, tar
from tests.support.faults import Fault, FaultProxy
from tests.support.httpstub import StubRequest, StubResponse, stub_server

pytestmark = pytest.mark.timeout(120)
MIB = 1 << 20
AMD64 = Platform("linux", "amd64")


def settings(**kw: Any) -> RegistrySettings:
    return RegistrySettings(**{"backoff": 0.01, "timeout": 5.0, "docker_config": None, **kw})


@pytest.fixture(scope="module")
def images(local_registry: Any) -> dict[str, str]:
    """Repository:tag -> digest of each pushed layer, for a one-layer and a two-layer image."""
    pusher = Pusher(local_registry.host)
    small = gz(tar(member("bin/app", b"#!/bin/sh\necho hi\n"), member("bin/sh", b"\x7fELF" + bytes(60))))
    pusher.image("hostile/one", "v1", [(LAYER_GZIP, small)])
    second = gz(tar(member("etc/big", random.Random(1).randbytes(600_000))))  # incompressible: ~600 KB of gzip
    pusher.image("hostile/two", "v1", [(LAYER_GZIP, small), (LAYER_GZIP, second)])
    other = gz(tar(member("bin/app", b"#!/bin/sh\necho other\n"), member("bin/sh", b"\x7fELF" + bytes(61))))
    pusher.image("hostile/other", "v1", [(LAYER_GZIP, other)])
    pusher.close()
    return {"small": digest_of(small), "second": digest_of(second)}


async def view(store: ImageStore, image: str) -> Any:
    selection = await store.select(Reference.parse(image), AMD64)
    return await store.view(selection)


# -- bytes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [True, False])
async def test_a_token_endpoint_answering_700_mb_is_refused_after_a_few_kb(declared: bool) -> None:
    def endless() -> Iterator[bytes]:
        piece = b" " * MIB
        for _ in range(700):
            yield piece

    with FaultProxy() as token:
        token.add(Fault("/token", body=endless, content_length=700 * MIB if declared else None))

        def registry(req: StubRequest) -> StubResponse:
            return StubResponse(401, {"WWW-Authenticate": f'Bearer realm="{token.url}/token",service="s"'})

        with stub_server(registry) as srv:
            started = time.monotonic()
            async with RegistryClient(settings(retries=0)) as c:
                with pytest.raises(RegistryAuthError, match="larger than 64 KiB"):
                    await c.resolve(Reference.parse(f"{srv.host}/app:v1"))
        time.sleep(0.2)
        assert token.body_bytes_sent < 32 * MIB  # the socket buffers a little; nothing like 700 MB was read
        assert time.monotonic() - started < 10


# -- time -------------------------------------------------------------------------------------------


async def test_a_dripping_manifest_is_cut_off_after_one_timeout(local_registry: Any, images: dict[str, str]) -> None:
    with FaultProxy(local_registry.host) as proxy:
        proxy.add(Fault("/manifests/", method="GET", drip=2.0))
        started = time.monotonic()
        async with RegistryClient(settings(timeout=2.0)) as c:
            with pytest.raises(RegistryUnreachable, match="too slowly"):
                await c.manifest(Reference.parse(f"{proxy.host}/hostile/one:v1"))
        assert time.monotonic() - started < 6


async def test_a_dripping_layer_is_cut_off_and_its_slot_released(local_registry: Any,
                                                                   images: dict[str, str]) -> None:
    with FaultProxy(local_registry.host) as proxy:
        proxy.add(Fault(f"/blobs/{images['second']}", method="GET", drip=2000.0))
        async with RegistryClient(settings(timeout=1.0)) as c:
            store = ImageStore(c, layer_concurrency=1)
            started = time.monotonic()
            with pytest.raises(RegistryUnreachable, match="arrives too slowly"):
                await view(store, f"{proxy.host}/hostile/two:v1")
            assert time.monotonic() - started < 8
            # the slot is free again: the same registry serves the next image at once
            assert (await view(store, f"{proxy.host}/hostile/one:v1")).layers


async def test_every_image_read_has_a_total_deadline(local_registry: Any, images: dict[str, str]) -> None:
    with FaultProxy(local_registry.host) as proxy:
        proxy.add(Fault("/blobs/", method="GET", latency=30.0))  # each read is in time; the whole is not
        async with RegistryClient(settings(timeout=60.0)) as c:
            store = ImageStore(c)
            started = time.monotonic()
            with read_deadline(1.5), pytest.raises(LimitExceeded, match="not read within 1.5s"):
                await view(store, f"{proxy.host}/hostile/one:v1")
            assert time.monotonic() - started < 5


async def test_a_slow_registry_does_not_delay_images_from_another(local_registry: Any,
                                                                   images: dict[str, str]) -> None:
    with FaultProxy(local_registry.host) as slow:
        slow.add(Fault("/blobs/", method="GET", latency=20.0))
        async with RegistryClient(settings(timeout=60.0)) as c:
            store = ImageStore(c, layer_concurrency=1)
            stuck = asyncio.ensure_future(view(store, f"{slow.host}/hostile/one:v1"))
            for _ in range(100):
                if slow.count("GET", "/blobs/"):
                    break
                await asyncio.sleep(0.05)
            assert slow.count("GET", "/blobs/") and not stuck.done()
            # another registry (an image of its own: the same layer digest would rightly share the transfer)
            healthy = await asyncio.wait_for(view(store, f"{local_registry.host}/hostile/other:v1"), 10)
            assert healthy.layers
            await store.aclose()
            assert stuck.done()


async def test_a_5xx_burst_is_retried_and_resets_and_truncations_are_errors(local_registry: Any,
                                                                            images: dict[str, str]) -> None:
    ref = "/hostile/one:v1"
    with FaultProxy(local_registry.host) as proxy:
        proxy.add(Fault("/manifests/", status=503, times=2, headers={"Retry-After": "0"}))
        async with RegistryClient(settings()) as c:
            assert (await view(ImageStore(c), proxy.host + ref)).layers
        for fault, error in ((Fault("/blobs/", method="GET", reset_after=100), RegistryUnreachable),
                             (Fault("/blobs/", method="GET", truncate_after=100), RegistryError),
                             (Fault("/blobs/", method="GET", content_length=10), ImageCorrupt)):
            proxy.clear()
            proxy.add(fault)
            async with RegistryClient(settings(retries=0)) as c:
                with pytest.raises(error):
                    await view(ImageStore(c), proxy.host + ref)


def test_a_failed_layer_leaves_no_sibling_running(local_registry: Any, images: dict[str, str],
                                                  tmp_path: Path) -> None:
    with FaultProxy(local_registry.host) as proxy:
        proxy.add(Fault(f"/blobs/{images['small']}", method="GET", status=404))
        proxy.add(Fault(f"/blobs/{images['second']}", method="GET", drip=1.0))
        path = tmp_path / "app.yaml"
        path.write_text(yaml.safe_dump(deployment("app", f"{proxy.host}/hostile/two:v1")))
        result = run_cli(["check", "-f", str(path), "--no-cache", "--timeout", "30"], kill_after=60)
    result.assert_clean()
    assert "never retrieved" not in result.stderr and "_Abort" not in result.stderr, result.stderr
    assert result.seconds < 20, result.seconds  # the dripping sibling was cancelled, not waited for


# -- credentials ------------------------------------------------------------------------------------


async def test_credentials_are_not_sent_to_a_realm_named_by_a_host_we_were_redirected_to() -> None:
    with stub_server(lambda req: StubResponse(200, {}, b'{"token": "stolen"}')) as evil_token:
        def storage(req: StubRequest) -> StubResponse:
            return StubResponse(401, {"WWW-Authenticate": f'Bearer realm="{evil_token.url}/token",service="evil"'})

        with stub_server(storage) as evil:
            basic = "Basic " + base64.b64encode(b"alice:s3cret-pass").decode()

            def registry(req: StubRequest) -> StubResponse:
                if req.headers.get("authorization") != basic:
                    return StubResponse(401, {"WWW-Authenticate": 'Basic realm="reg"'})
                if req.path.startswith("/v2/app/blobs/"):
                    return StubResponse(307, {"Location": f"{evil.url}/storage/blob"})
                return StubResponse(200)

            with stub_server(registry) as srv:
                chain = Keychain({srv.host: Credential("alice", "s3cret-pass")})
                async with RegistryClient(settings(keychain=chain, retries=0)) as c:
                    with pytest.raises(RegistryAuthError, match="redirected") as info:
                        await c.blob(Reference.parse(f"{srv.host}/app:v1"), "sha256:" + "a" * 64, max_size=100)
    assert evil_token.requests == []  # its realm was never asked, least of all with alice's password
    assert all("authorization" not in r.headers for r in evil.requests)
    assert "s3cret-pass" not in str(info.value)


def test_a_registry_echoing_the_password_does_not_get_it_printed(tmp_path: Path) -> None:
    password = "hunter2-very-secret"
    basic = "Basic " + base64.b64encode(f"bob:{password}".encode()).decode()

    def registry(req: StubRequest) -> StubResponse:
        if req.headers.get("authorization") != basic:
            return StubResponse(401, {"WWW-Authenticate": 'Basic realm="reg"'})
        if req.path == "/v2/":
            return StubResponse(200)
        echo = json.dumps({"errors": [{"code": f"DENIED {password} {basic}", "message": password}]}).encode()
        return StubResponse(403, {"Content-Type": "application/json"}, echo)

    with stub_server(registry) as srv:
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"auths": {srv.host: {"username": "bob", "password": password}}}))
        path = tmp_path / "app.yaml"
        path.write_text(yaml.safe_dump(deployment("app", f"{srv.host}/app@sha256:{'b' * 64}")))
        outputs = []
        for fmt in ("text", "json"):
            result = run_cli(["check", "-f", str(path), "--no-cache", "--docker-config", str(config),
                              "--format", fmt], kill_after=60)
            result.assert_clean()
            outputs.append(result.stdout + result.stderr)
    assert all("DENIED" in out and "<redacted>" in out for out in outputs), outputs
    assert not any(password in out or basic.split()[1] in out for out in outputs), outputs


def test_redaction_covers_every_canrun_error() -> None:
    Credential("carol", "pa55word-xyz")
    assert str(CanrunError("the registry said pa55word-xyz")) == "the registry said <redacted>"
