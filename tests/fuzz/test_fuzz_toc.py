"""Lazy-layer tables of contents (zstd:chunked, eStargz): the annotations, the footer and the JSON document.

The strategies build TOCs that pass the digest checks (the digest is computed over whatever was
generated, as an attacker who controls the manifest can do) so that the parser behind them is reached.
Assertion: only ``CanrunError`` subclasses (``TocUnusable``, ``LimitExceeded``) escape, in bounded time
and memory.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
from typing import Any

import zstandard
from hypothesis import given
from hypothesis import strategies as st

from canrun.image import toc_estargz, toc_zstd
from canrun.image.limits import Limits
from canrun.image.toc import Toc, parse_entries
from canrun.registry.base import Descriptor

from .budget import FUZZ, bounded
from .test_fuzz_documents import hostile, maybe_hostile

LIMITS = Limits(max_entries=50, max_toc_bytes=1 << 20)
BLOB_DIGEST = "sha256:" + "cd" * 32

entry = st.fixed_dictionaries({
    "name": maybe_hostile(st.sampled_from(["bin/sh", "etc/passwd", "a", ""])),
    "type": maybe_hostile(st.sampled_from(["reg", "dir", "symlink", "hardlink", "char", "block", "fifo", "chunk"])),
}, optional={
    "mode": maybe_hostile(st.integers(0, 0o7777)), "uid": maybe_hostile(st.integers(0, 2**32)),
    "gid": maybe_hostile(st.integers(0, 2**32)), "size": maybe_hostile(st.integers(0, 1 << 20)),
    "linkName": maybe_hostile(st.text(max_size=5)), "offset": maybe_hostile(st.integers(0, 1 << 20)),
    "endOffset": maybe_hostile(st.integers(0, 1 << 20)), "chunkOffset": maybe_hostile(st.integers(0, 1 << 20)),
    "chunkSize": maybe_hostile(st.integers(0, 1 << 20)), "chunkDigest": maybe_hostile(st.just("sha256:" + "0" * 64)),
    "digest": maybe_hostile(st.just("sha256:" + "1" * 64)),
})
documents = st.one_of(st.fixed_dictionaries({"version": maybe_hostile(st.just(1)),
                                             "entries": maybe_hostile(st.lists(entry, max_size=8))}), hostile)


@FUZZ
@given(documents, st.integers(-1, 1 << 21))
def test_parse_entries_raises_only_canrun_errors(doc: Any, limit: int) -> None:
    bounded(lambda: parse_entries(doc, limit=limit, where="fuzz", max_entries=LIMITS.max_entries))


def _serve(blob: bytes):  # type: ignore[no-untyped-def]
    async def read(start: int, length: int) -> bytes:
        return blob[start:start + length]
    return read


def zstd_case(doc: Any, raw: bytes | None, position: str | None, prefix: str, size_delta: int) -> tuple[bytes, Descriptor]:
    text = raw if raw is not None else json.dumps(doc).encode()
    toc = zstandard.ZstdCompressor().compress(text)
    body = b"\0" * 64
    blob = body + toc
    annotations = {prefix + toc_zstd.POSITION: position or f"{len(body)}:{len(toc)}:{len(text)}:1",
                   prefix + toc_zstd.CHECKSUM: "sha256:" + hashlib.sha256(toc).hexdigest()}
    return blob, Descriptor(media_type="application/vnd.oci.image.layer.v1.tar+zstd", digest=BLOB_DIGEST,
                            size=len(blob) + size_delta, annotations=annotations)


positions = st.one_of(st.none(), st.none(), st.lists(st.sampled_from(["0", "1", "64", "9" * 30, "-1", "", "x", "1" * 19]),
                                                     max_size=5).map(":".join))


@FUZZ
@given(documents, st.one_of(st.none(), st.binary(max_size=64), st.just(b"[" * 50_000)), positions,
       st.sampled_from(toc_zstd.PREFIXES), st.sampled_from([0, 0, -10, 10]))
def test_zstd_chunked_toc_raises_only_canrun_errors(doc: Any, raw: bytes | None, position: str | None, prefix: str,
                                                    size_delta: int) -> None:
    blob, descriptor = zstd_case(doc, raw, position, prefix, size_delta)
    outcome = bounded(lambda: asyncio.run(toc_zstd.read_toc(_serve(blob), descriptor, LIMITS)))
    assert isinstance(outcome, (Toc, BaseException))


def estargz_blob(doc: Any, raw: bytes | None, name: str, footer_offset_delta: int) -> tuple[bytes, str]:
    text = raw if raw is not None else json.dumps(doc).encode()
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo(name)
        info.size = len(text)
        tf.addfile(info, io.BytesIO(text))
    body = gzip.compress(b"\0" * 1024)
    toc = gzip.compress(tar.getvalue()[:-1024])  # the TOC member without the end-of-archive blocks
    offset = len(body) + footer_offset_delta
    extra = b"SG" + (22).to_bytes(2, "little") + b"%016xSTARGZ" % max(offset, 0)
    footer = (b"\x1f\x8b\x08\x04" + b"\0" * 6 + len(extra).to_bytes(2, "little") + extra
              + b"\x01\x00\x00\xff\xff" + b"\0" * 8)  # an empty stored block, CRC32 0, ISIZE 0
    return body + toc + footer, "sha256:" + hashlib.sha256(text).hexdigest()


@FUZZ
@given(documents, st.one_of(st.none(), st.binary(max_size=64), st.just(b"[" * 50_000)),
       st.sampled_from([toc_estargz.TOC_NAME, toc_estargz.TOC_NAME, "other.json"]), st.sampled_from([0, 0, 5, -5, 10**6]),
       st.one_of(st.none(), st.binary(min_size=51, max_size=51)))
def test_estargz_toc_raises_only_canrun_errors(doc: Any, raw: bytes | None, name: str, delta: int,
                                               footer: bytes | None) -> None:
    blob, toc_digest = estargz_blob(doc, raw, name, delta)
    if footer is not None:
        blob = blob[:-51] + footer
    descriptor = Descriptor(media_type="application/vnd.oci.image.layer.v1.tar+gzip", digest=BLOB_DIGEST,
                            size=len(blob), annotations={toc_estargz.TOC_DIGEST: toc_digest})
    outcome = bounded(lambda: asyncio.run(toc_estargz.read_toc(_serve(blob), descriptor, LIMITS)))
    assert isinstance(outcome, (Toc, BaseException))


def test_the_estargz_builder_here_makes_a_readable_toc() -> None:
    """Without this the property above could be exercising nothing but the footer check."""
    doc = {"version": 1, "entries": [{"name": "etc", "type": "dir", "mode": 0o755}]}
    blob, toc_digest = estargz_blob(doc, None, toc_estargz.TOC_NAME, 0)
    descriptor = Descriptor(media_type="application/vnd.oci.image.layer.v1.tar+gzip", digest=BLOB_DIGEST,
                            size=len(blob), annotations={toc_estargz.TOC_DIGEST: toc_digest})
    toc = asyncio.run(toc_estargz.read_toc(_serve(blob), descriptor, LIMITS))
    assert [e.name for e in toc.entries] == ["etc", toc_estargz.TOC_NAME]


def test_the_zstd_builder_here_makes_a_readable_toc() -> None:
    doc = {"version": 1, "entries": [{"name": "etc", "type": "dir", "mode": 0o755}]}
    blob, descriptor = zstd_case(doc, None, None, toc_zstd.PREFIXES[0], 0)
    toc = asyncio.run(toc_zstd.read_toc(_serve(blob), descriptor, LIMITS))
    assert [e.name for e in toc.entries] == ["etc"]
