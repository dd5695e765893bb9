"""The registry client against a real docker-registry on loopback."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import pytest_asyncio

from canrun.errors import ImageCorrupt, ImageNotFound, LimitExceeded, RegistryUnreachable
from canrun.image.manifest import ImageIndex, ImageManifest, parse_manifest, select_manifest
from canrun.platform import Platform
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.registry.reference import Reference
from tests.registry.conftest import Content
from tests.support.registry import free_port

pytestmark = pytest.mark.registry


@pytest_asyncio.fixture(loop_scope="function")
async def client() -> RegistryClient:
    c = RegistryClient(RegistrySettings(timeout=10))
    yield c  # type: ignore[misc]
    await c.aclose()


async def test_index_resolves_with_head_and_selects_per_architecture(client: RegistryClient, content: Content) -> None:
    ref = Reference.parse(f"{content.registry.host}/multi:v1")
    top = await client.resolve(ref)
    assert top.digest == content.index_digest
    assert top.media_type == "application/vnd.oci.image.index.v1+json"
    _, body = await client.manifest(ref, top.digest)
    index = parse_manifest(top, body)
    assert isinstance(index, ImageIndex)
    assert content.attestation_digest in [d.digest for d in index.manifests]
    assert content.attestation_digest not in [d.digest for d in index.images()]
    for arch, pushed in (("amd64", content.amd64), ("arm64", content.arm64)):
        chosen = select_manifest(index, Platform("linux", arch))
        assert chosen is not None and chosen.digest == pushed["digest"]
        desc, mbody = await client.manifest(ref, chosen.digest)
        manifest = parse_manifest(desc, mbody)
        assert isinstance(manifest, ImageManifest)
        config = await client.blob(ref, manifest.config.digest, max_size=1 << 20)
        assert json.loads(config)["architecture"] == arch
        layer = manifest.layers[0]
        async with client.stream_blob(ref, layer.digest, layer.size) as chunks:
            data = b"".join([c async for c in chunks])
        assert data == pushed["layer_bytes"]
    assert select_manifest(index, Platform("linux", "s390x")) is None


async def test_digest_reference_and_tag_plus_digest_fetch_by_digest(client: RegistryClient,
                                                                    content: Content) -> None:
    pinned = Reference.parse(f"{content.registry.host}/multi:no-such-tag@{content.index_digest}")
    top = await client.resolve(pinned)
    assert top.digest == content.index_digest
    desc, body = await client.manifest(pinned)
    assert desc.digest == content.index_digest
    assert "sha256:" + hashlib.sha256(body).hexdigest() == content.index_digest


async def test_single_manifest_image_copied_by_skopeo(client: RegistryClient, content: Content) -> None:
    ref = Reference.parse(f"{content.registry.host}/single:v1")
    top = await client.resolve(ref)
    assert top.digest == content.single_digest
    desc, body = await client.manifest(ref, top.digest)
    manifest = parse_manifest(desc, body)
    assert isinstance(manifest, ImageManifest)
    assert [d.digest for d in manifest.layers] == content.single_layers
    config = json.loads(await client.blob(ref, manifest.config.digest, max_size=1 << 20))
    assert config["os"] == "linux"
    total = 0
    async with client.stream_blob(ref, manifest.layers[-1].digest, manifest.layers[-1].size) as chunks:
        async for chunk in chunks:
            total += len(chunk)
    assert total == manifest.layers[-1].size > 100_000  # busybox is in there


async def test_blob_corrupted_in_registry_storage_is_image_corrupt(client: RegistryClient, content: Content) -> None:
    ref = Reference.parse(f"{content.registry.host}/corrupt:v1")
    digest = str(content.corrupt["layer"]["digest"])  # type: ignore[index]
    size = int(content.corrupt["layer"]["size"])  # type: ignore[index]
    with pytest.raises(ImageCorrupt, match=digest):
        async with client.stream_blob(ref, digest, size) as chunks:
            async for _ in chunks:
                pass
    with pytest.raises(ImageCorrupt, match=digest):
        await client.blob(ref, digest, max_size=1 << 20)


async def test_blob_over_max_size_is_refused(client: RegistryClient, content: Content) -> None:
    ref = Reference.parse(f"{content.registry.host}/multi:v1")
    layer = content.amd64["layer"]
    with pytest.raises(LimitExceeded, match="limit"):
        await client.blob(ref, str(layer["digest"]), max_size=10)  # type: ignore[index]


async def test_stream_longer_than_the_descriptor_is_cut_off(client: RegistryClient, content: Content) -> None:
    ref = Reference.parse(f"{content.registry.host}/multi:v1")
    layer = content.amd64["layer"]
    with pytest.raises(ImageCorrupt, match="descriptor says"):
        async with client.stream_blob(ref, str(layer["digest"]), int(layer["size"]) - 1) as chunks:  # type: ignore[index]
            async for _ in chunks:
                pass


@pytest.mark.parametrize("image", ["multi:nope", "nothere/at-all:v1",
                                   "multi@sha256:" + "0" * 64])
async def test_unknown_tags_repositories_and_digests_are_not_found(client: RegistryClient, content: Content,
                                                                   image: str) -> None:
    ref = Reference.parse(f"{content.registry.host}/{image}")
    with pytest.raises(ImageNotFound) as info:
        top = await client.resolve(ref)
        await client.manifest(ref, top.digest)
    assert info.value.status == 404 and content.registry.host in str(info.value)


async def test_unknown_blob_is_not_found(client: RegistryClient, content: Content) -> None:
    ref = Reference.parse(f"{content.registry.host}/multi:v1")
    with pytest.raises(ImageNotFound, match="blob"):
        await client.blob(ref, "sha256:" + "1" * 64, max_size=100)


async def test_unreachable_port_is_registry_unreachable(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    async with RegistryClient(RegistrySettings(retries=1, backoff=0.01)) as c:
        with pytest.raises(RegistryUnreachable, match=f"127.0.0.1:{port}") as info:
            await c.resolve(Reference.parse(f"127.0.0.1:{port}/app:v1"))
        assert info.value.host == f"127.0.0.1:{port}"
        assert c.stats.snapshot()[(f"127.0.0.1:{port}", "connect")] == 2  # tried, retried once, gave up
