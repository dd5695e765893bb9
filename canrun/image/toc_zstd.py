"""zstd:chunked: find, verify and parse the table of contents containers/storage writes.

A zstd:chunked layer is an ordinary zstd tar stream (any runtime can pull it)
in which every file's content starts a new zstd frame, large files are cut
into several frames, and a skippable frame near the end holds the TOC: a
zstd-compressed JSON document listing every member with the offsets of its
frames and the digest of each chunk's uncompressed bytes.  Where the TOC is
and what it hashes to are layer annotations in the manifest (so they are as
trusted as the manifest digest):
``io.github.containers.zstd-chunked.manifest-position`` =
``offset:length:uncompressed length:type`` (type 1: zstd-compressed JSON) and
``…manifest-checksum`` = the digest of the ``length`` compressed bytes.
Debian's skopeo 1.9 writes the older ``io.containers.`` prefix; both are read.
See containers/storage ``pkg/chunked/compressor`` and
``pkg/chunked/internal/compression.go``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import zstandard

from canrun.image.limits import Limits
from canrun.image.toc import RangeReader, Toc, TocUnusable, check_digest, parse_entries, unzstd_bounded
from canrun.registry.base import Descriptor

PREFIXES = ("io.github.containers.zstd-chunked.", "io.containers.zstd-chunked.")
POSITION = "manifest-position"
CHECKSUM = "manifest-checksum"
#: The manifest type containers/storage writes (ManifestTypeCRFS): zstd-compressed JSON.
TYPE_CRFS = 1


def annotated(descriptor: Descriptor) -> bool:
    """The layer says it is zstd:chunked (it may still turn out unusable)."""
    return any(p + POSITION in descriptor.annotations for p in PREFIXES)


def _position(descriptor: Descriptor, where: str) -> tuple[int, int, int, str]:
    for prefix in PREFIXES:
        position = descriptor.annotations.get(prefix + POSITION)
        if position is not None:
            checksum = descriptor.annotations.get(prefix + CHECKSUM)
            break
    else:
        raise TocUnusable(f"{where}: no zstd:chunked manifest position annotation")
    if not checksum:
        raise TocUnusable(f"{where}: the zstd:chunked TOC position has no checksum annotation beside it")
    parts = position.split(":")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 19 for p in parts):
        raise TocUnusable(f"{where}: zstd:chunked manifest position {position!r} is not offset:length:size:type")
    offset, length, uncompressed, kind = (int(p) for p in parts)
    if kind != TYPE_CRFS:
        raise TocUnusable(f"{where}: zstd:chunked manifest type {kind} is not one canrun reads")
    return offset, length, uncompressed, check_digest(checksum, where)


async def read_toc(read: RangeReader, descriptor: Descriptor, limits: Limits) -> Toc:
    """The TOC of a zstd:chunked layer, verified against its annotated checksum; TocUnusable otherwise."""
    where = f"layer {descriptor.digest}"
    offset, length, uncompressed, checksum = _position(descriptor, where)
    if length <= 0 or length > limits.max_toc_bytes or uncompressed > limits.max_toc_bytes:
        raise TocUnusable(f"{where}: a {length}-byte TOC that unpacks to {uncompressed} bytes is over the "
                          f"{limits.max_toc_bytes}-byte limit")
    if descriptor.size >= 0 and offset + length > descriptor.size:
        raise TocUnusable(f"{where}: the TOC at {offset}+{length} lies beyond the {descriptor.size}-byte blob")
    raw = await read(offset, length)

    def decode() -> Toc:  # CPU work (hash, inflate, JSON): off the event loop
        if "sha256:" + hashlib.sha256(raw).hexdigest() != checksum:
            raise TocUnusable(f"{where}: the zstd:chunked TOC does not match its annotated checksum {checksum}")
        try:
            text = unzstd_bounded(raw, uncompressed, across_frames=True)
        except zstandard.ZstdError as exc:
            raise TocUnusable(f"{where}: the zstd:chunked TOC is not zstd data: {exc}") from exc
        if len(text) != uncompressed:
            raise TocUnusable(f"{where}: the zstd:chunked TOC unpacks to {len(text)} bytes, not the annotated "
                              f"{uncompressed}")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
            raise TocUnusable(f"{where}: the zstd:chunked TOC is not JSON") from exc
        if isinstance(doc, dict) and doc.get("version") not in (1, None):
            raise TocUnusable(f"{where}: zstd:chunked TOC version {doc.get('version')!r} is not one canrun reads")
        return Toc("zstd", parse_entries(doc, limit=offset, where=where, max_entries=limits.max_entries))

    return await asyncio.to_thread(decode)
