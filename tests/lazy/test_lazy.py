"""Lazy layers (zstd:chunked from skopeo, eStargz from crane) indexed from their TOC against a real registry.

Every lazy index is compared with the streaming indexer's index of the very
same blob; the hostile cases check that anything unverifiable ends in the
stream (or its error), never in an index built from unverified bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import zstandard

from canrun.errors import ImageCorrupt, LayerError
from canrun.image import lazy
from canrun.image.layer import index_layer, index_stream
from canrun.image.layout import NATIVE
from canrun.image.limits import Limits
from canrun.image.manifest import ImageManifest, layer_compression, parse_manifest
from canrun.image.model import LayerIndex
from canrun.image.store import ImageStore
from canrun.platform import Platform
from canrun.registry.base import Descriptor
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.registry.reference import Reference
from tests.lazy.conftest import LazyImages, lazy_recipe, push_estargz, push_zstd_chunked
from tests.support import images
from tests.support.rangeproxy import RangeProxy
from tests.support.registry import start_registry

pytestmark = pytest.mark.registry

ZSTD_POSITION = "io.containers.zstd-chunked.manifest-position"
ZSTD_CHECKSUM = "io.containers.zstd-chunked.manifest-checksum"
ESTARGZ_DIGEST = "containerd.io/snapshot/stargz/toc.digest"


@pytest_asyncio.fixture(loop_scope="function")
async def client() -> AsyncIterator[RegistryClient]:
    c = RegistryClient(RegistrySettings(timeout=20))
    yield c
    await c.aclose()


def ref_of(lazy_images: LazyImages, fmt: str) -> str:
    if fmt == "estargz":
        if lazy_images.estargz_ref is None:
            pytest.skip(lazy_images.estargz_skip)
        return lazy_images.estargz_ref
    return lazy_images.zstd_ref


async def layers_of(client: RegistryClient, ref: Reference) -> list[Descriptor]:
    desc, body = await client.manifest(ref)
    manifest = parse_manifest(desc, body)
    assert isinstance(manifest, ImageManifest)
    return manifest.layers


async def streamed(client: RegistryClient, ref: Reference, layer: Descriptor) -> LayerIndex:
    async with client.stream_blob(ref, layer.digest, layer.size) as chunks:
        return await index_layer(chunks, digest=layer.digest, compression=layer_compression(layer.media_type))


def view_layers(store_layers: list[LayerIndex]) -> list[tuple[list[object], dict[str, bytes]]]:
    return [(list(layer.entries), dict(layer.files)) for layer in store_layers]


@pytest.mark.parametrize("fmt", ["zstd-chunked", "estargz"])
async def test_the_toc_index_is_the_streaming_index_of_the_same_layer(client: RegistryClient,
                                                                      lazy_images: LazyImages, fmt: str) -> None:
    ref = Reference.parse(ref_of(lazy_images, fmt))
    layers = await layers_of(client, ref)
    assert len(layers) == 3 and all(lazy.is_lazy(layer) for layer in layers)
    for layer in layers:
        stats = lazy.LazyStats()
        index = await lazy.lazy_index(client, ref, layer, Limits(), stats)
        assert index is not None, layer
        full = await streamed(client, ref, layer)
        assert index.entries == full.entries
        assert index.files == full.files
        assert index.size == layer.size
    big = max(layers, key=lambda d: d.size)
    stats = lazy.LazyStats()
    index = await lazy.lazy_index(client, ref, big, Limits(), stats)
    assert index is not None
    # the 12 MiB model file and the bodies of the binaries stay in the registry
    assert stats.bytes < big.size * (0.45 if fmt == "estargz" else 0.05), stats
    paths = {e.path: e for e in index.entries}
    assert paths["/app/server"].mode == 0o4750 and paths["/app/server"].gid == 1000
    assert paths["/app/model.bin"].exec is None and paths["/app/model.bin"].size == 12 << 20
    assert paths["/usr/local/bin/ls"].exec.interpreter == "/lib64/ld-linux-x86-64.so.2"  # type: ignore[union-attr]
    assert paths["/app/crlf.sh"].exec.interpreter == "/bin/sh\r"  # type: ignore[union-attr]
    assert index.files["/etc/passwd"] == images.PASSWD


async def test_zstd_chunked_layers_index_as_their_gzip_originals(client: RegistryClient,
                                                                lazy_images: LazyImages) -> None:
    """skopeo recompressed umoci's tar streams: the store's lazy indexes equal the gzip layers' streamed ones."""
    # The native snapshotter: the fixture's layer 3 hard-links a file of layer 1, which overlayfs cannot unpack;
    # these tests are about the indexes, not the merge.
    store = ImageStore(client, snapshotter=NATIVE)
    view = await store.view(await store.select(Reference.parse(lazy_images.zstd_ref), Platform("linux", "amd64")))
    assert store.stats["layers_lazy"] == 3
    top = json.loads((lazy_images.layout / "index.json").read_text())["manifests"][0]
    manifest = json.loads((lazy_images.layout / "blobs/sha256" / top["digest"].split(":")[1]).read_text())
    originals = []
    for layer in manifest["layers"]:
        blob = (lazy_images.layout / "blobs/sha256" / layer["digest"].split(":")[1]).read_bytes()
        originals.append(index_stream([blob], digest=layer["digest"]))
    assert view_layers(view.layers) == view_layers(originals)
    assert view.fs.lookup("/app/again") is not None and view.fs.lookup("/app/start.sh") is None


async def test_a_registry_that_ignores_range_gets_the_stream(client: RegistryClient, lazy_images: LazyImages) -> None:
    with RangeProxy(lazy_images.registry.host, ignore_range=True) as proxy:
        ref = Reference.parse(lazy_images.zstd_ref.replace(lazy_images.registry.host, proxy.host))
        layers = await layers_of(client, ref)
        assert await lazy.lazy_index(client, ref, layers[0], Limits()) is None
        assert proxy.counters.range_requests == 1
        store = ImageStore(client, snapshotter=NATIVE)
        view = await store.view(await store.select(ref, Platform("linux", "amd64")))
        assert store.stats["layers_lazy"] == 0 and store.stats["layers_fetched"] == 3
        assert proxy.counters.blob_bytes >= sum(layer.size for layer in layers)
        direct = await lazy.lazy_index(client, Reference.parse(lazy_images.zstd_ref), layers[0], Limits())
        assert direct is not None
        assert [view.layers[0].entries, view.layers[0].files] == [direct.entries, direct.files]


async def test_layer_bytes_on_the_wire(client: RegistryClient, lazy_images: LazyImages) -> None:
    """What a cold check of the zstd:chunked image costs, counted at a proxy: the TOCs and a few chunks."""
    with RangeProxy(lazy_images.registry.host) as proxy:
        ref = Reference.parse(lazy_images.zstd_ref.replace(lazy_images.registry.host, proxy.host))
        store = ImageStore(client, snapshotter=NATIVE)
        await store.view(await store.select(ref, Platform("linux", "amd64")))
        total = sum(layer.size for layer in await layers_of(client, ref))
        assert store.stats["layers_lazy"] == 3
        assert proxy.counters.blob_bytes < 0.05 * total, (proxy.counters, total)


def _with_annotations(lazy_images: LazyImages, ref: str, tag: str, change: dict[str, str | None]) -> str:
    doc = copy.deepcopy(lazy_images.manifest(ref))
    for layer in doc["layers"]:  # type: ignore[union-attr]
        notes = layer.setdefault("annotations", {})
        for key, value in change.items():
            if value is None:
                notes.pop(key, None)
            else:
                notes[key] = value
    new_ref = ref.rsplit(":", 1)[0] + ":" + tag
    lazy_images.put_manifest(new_ref, doc)
    return new_ref


@pytest.mark.parametrize(("fmt", "change"), [
    ("zstd-chunked", {ZSTD_CHECKSUM: "sha256:" + "0" * 64}),
    ("zstd-chunked", {ZSTD_CHECKSUM: None}),
    ("zstd-chunked", {ZSTD_POSITION: None, ZSTD_CHECKSUM: None}),
    ("estargz", {ESTARGZ_DIGEST: "sha256:" + "0" * 64}),
    ("estargz", {ESTARGZ_DIGEST: None}),
], ids=["zstd-lying-checksum", "zstd-no-checksum", "zstd-no-annotations", "estargz-lying-digest",
        "estargz-no-annotation"])
async def test_an_unverifiable_toc_falls_back_to_the_stream(client: RegistryClient, lazy_images: LazyImages,
                                                            fmt: str, change: dict[str, str | None]) -> None:
    original = ref_of(lazy_images, fmt)
    ref = Reference.parse(_with_annotations(lazy_images, original, "altered", change))
    store = ImageStore(client, snapshotter=NATIVE)
    view = await store.view(await store.select(ref, Platform("linux", "amd64")))
    assert store.stats["layers_lazy"] == 0 and store.stats["layers_fetched"] == 3
    good = ImageStore(client, snapshotter=NATIVE)
    reference = await good.view(await good.select(Reference.parse(original), Platform("linux", "amd64")))
    assert good.stats["layers_lazy"] == 3
    assert view_layers(view.layers) == view_layers(reference.layers)


async def test_toc_bombs_are_refused_before_they_are_read(client: RegistryClient, lazy_images: LazyImages) -> None:
    ref = Reference.parse(lazy_images.zstd_ref)
    layer = max(await layers_of(client, ref), key=lambda d: d.size)
    offset, length, size, kind = layer.annotations[ZSTD_POSITION].split(":")
    # an annotation announcing a terabyte of TOC: nothing is read
    huge = Descriptor(layer.media_type, layer.digest, layer.size,
                      annotations={**layer.annotations, ZSTD_POSITION: f"{offset}:{length}:{1 << 40}:{kind}"})
    stats = lazy.LazyStats()
    assert await lazy.lazy_index(client, ref, huge, Limits(), stats) is None
    assert stats.requests == 0
    # a TOC that inflates past what its annotation said: read up to that bound, then refused
    short = Descriptor(layer.media_type, layer.digest, layer.size,
                       annotations={**layer.annotations, ZSTD_POSITION: f"{offset}:{length}:100:{kind}"})
    assert await lazy.lazy_index(client, ref, short, Limits()) is None
    # a TOC over the configured limit
    assert await lazy.lazy_index(client, ref, layer, Limits(max_toc_bytes=int(size) - 1)) is None
    assert await lazy.lazy_index(client, ref, layer, Limits()) is not None
    if lazy_images.estargz_ref is not None:
        eref = Reference.parse(lazy_images.estargz_ref)
        elayer = max(await layers_of(client, eref), key=lambda d: d.size)
        assert await lazy.lazy_index(client, eref, elayer, Limits(max_toc_bytes=1024)) is None
        assert await lazy.lazy_index(client, eref, elayer, Limits()) is not None


def _first_chunk_of(blob: bytes, annotations: dict[str, str], fmt: str, name: str) -> tuple[int, int]:
    """Where the first chunk of ``name`` lies in the blob, read from its (genuine) TOC."""
    if fmt == "zstd-chunked":
        offset, length, size, _ = (int(p) for p in annotations[ZSTD_POSITION].split(":"))
        doc = json.loads(zstandard.ZstdDecompressor().decompress(blob[offset:offset + length], max_output_size=size))
    else:
        import zlib

        toc_at = int(blob[-51:][16:32], 16)
        tar = zlib.decompressobj(wbits=31).decompress(blob[toc_at:-51])
        size = int(tar[124:136].rstrip(b"\0 "), 8)
        doc = json.loads(tar[512:512 + size])
    entries = doc["entries"]
    starts = sorted({e["offset"] for e in entries if e.get("offset")})
    entry = next(e for e in entries if e["name"].lstrip("./") == name)
    start = entry["offset"]
    return start, next(s for s in starts if s > start)


@pytest.mark.parametrize("fmt", ["zstd-chunked", "estargz"])
async def test_a_chunk_that_does_not_match_its_digest_is_never_believed(client: RegistryClient, tmp_path: Path,
                                                                       lazy_images: LazyImages, fmt: str,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    ref_of(lazy_images, fmt)  # skips eStargz without crane
    registry = start_registry(tmp_path / "registry")  # its blobs are damaged below: not the module's registry
    try:
        target = f"{registry.host}/lazy/damaged:1"
        layout = images.build_image(lazy_recipe())
        if fmt == "zstd-chunked":
            push_zstd_chunked(layout, target)
        else:
            push_estargz(layout, target, tmp_path)
        ref = Reference.parse(target)
        layer = (await layers_of(client, ref))[0]
        path = registry.blob_path(layer.digest)
        blob = path.read_bytes()
        start, end = _first_chunk_of(blob, layer.annotations, fmt, "bin/busybox")
        damaged = bytearray(blob)
        for i in range(start + (end - start) // 2, min(end, start + (end - start) // 2 + 8)):
            damaged[i] ^= 0x55
        path.write_bytes(bytes(damaged))
        with caplog.at_level(logging.INFO, logger="canrun.image.lazy"):
            assert await lazy.lazy_index(client, ref, layer, Limits()) is None
        assert "bin/busybox" in caplog.text
        store = ImageStore(client, snapshotter=NATIVE)
        # the stream then meets the damage itself (zstd's frame checksum, or the blob digest)
        with pytest.raises((ImageCorrupt, LayerError)) as caught:
            await store.view(await store.select(ref, Platform("linux", "amd64")))
        assert caught.value.rule == "image-corrupt"
    finally:
        registry.stop()


