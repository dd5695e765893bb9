"""eStargz: find, verify and parse the table of contents stargz-snapshotter's ``estargz`` package writes.

An eStargz layer is an ordinary gzip tar stream (any runtime can pull it) in
which every file's content starts a new gzip member, large files are cut into
chunks of their own members, and the last tar member, ``stargz.index.json``, is
the TOC, in a gzip member of its own.  A fixed 51-byte footer (an empty gzip
member whose extra field holds ``%016x`` of the TOC's offset, then
``STARGZ``, under subfield id ``SG``) ends the blob, so the TOC is found with a
ranged read of the footer.  The footer is not covered by anything; the TOC is:
the layer annotation ``containerd.io/snapshot/stargz/toc.digest`` (part of the
manifest, so as trusted as its digest) is the digest of the TOC JSON, and each
chunk's ``chunkDigest`` the digest of its uncompressed bytes.  See
containerd/stargz-snapshotter ``estargz/build.go``, ``estargz/types.go``,
``estargz/gzip.go`` (the footer).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import zlib

from canrun.image.limits import Limits
from canrun.image.tar import REGULAR, TarReader
from canrun.image.toc import RangeReader, Toc, TocEntry, TocUnusable, check_digest, gunzip_bounded, parse_entries
from canrun.registry.base import Descriptor

TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
TOC_NAME = "stargz.index.json"
FOOTER_SIZE = 51
_FOOTER_HEAD = b"\x1f\x8b\x08\x04"


def annotated(descriptor: Descriptor) -> bool:
    return TOC_DIGEST in descriptor.annotations


def parse_footer(footer: bytes, where: str) -> int:
    """The TOC offset a 51-byte eStargz footer states."""
    if len(footer) != FOOTER_SIZE or not footer.startswith(_FOOTER_HEAD):
        raise TocUnusable(f"{where}: the blob does not end in an eStargz footer")
    xlen = int.from_bytes(footer[10:12], "little")
    if xlen != 26 or footer[12:14] != b"SG" or int.from_bytes(footer[14:16], "little") != 22:
        raise TocUnusable(f"{where}: the eStargz footer's extra field is not an SG subfield")
    payload = footer[16:38]
    if not payload.endswith(b"STARGZ"):
        raise TocUnusable(f"{where}: the eStargz footer has no STARGZ magic")
    try:
        offset = int(payload[:16], 16)
        if zlib.decompressobj(wbits=31).decompress(footer) != b"":
            raise ValueError("not empty")
    except (ValueError, zlib.error) as exc:
        raise TocUnusable(f"{where}: the eStargz footer is not a valid empty gzip member") from exc
    return offset


async def read_toc(read: RangeReader, descriptor: Descriptor, limits: Limits) -> Toc:
    """The TOC of an eStargz layer, verified against the annotated digest; TocUnusable otherwise.

    The TOC's own tar header is the last entry: the streaming
    indexer sees ``stargz.index.json`` as the layer's last member, and the two
    indexes must be the same.
    """
    where = f"layer {descriptor.digest}"
    expected = descriptor.annotations.get(TOC_DIGEST)
    if not expected:
        raise TocUnusable(f"{where}: no {TOC_DIGEST} annotation")
    check_digest(expected, where)
    size = descriptor.size
    if size < FOOTER_SIZE:
        raise TocUnusable(f"{where}: the layer's size is unknown or too small for an eStargz footer")
    offset = parse_footer(await read(size - FOOTER_SIZE, FOOTER_SIZE), where)
    length = size - FOOTER_SIZE - offset
    if not 0 < offset < size - FOOTER_SIZE or length > limits.max_toc_bytes:
        raise TocUnusable(f"{where}: the eStargz TOC at {offset} ({length} bytes) is out of bounds or over the "
                          f"{limits.max_toc_bytes}-byte limit")
    raw = await read(offset, length)

    def decode() -> Toc:  # CPU work (inflate, hash, JSON): off the event loop
        try:
            tar = gunzip_bounded(raw, limits.max_toc_bytes + 1024)
        except zlib.error as exc:
            raise TocUnusable(f"{where}: the eStargz TOC is not gzip data: {exc}") from exc
        header, text = _toc_member(tar, limits, where)
        if "sha256:" + hashlib.sha256(text).hexdigest() != expected:
            raise TocUnusable(f"{where}: the eStargz TOC does not match its annotated digest {expected}")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
            raise TocUnusable(f"{where}: the eStargz TOC is not JSON") from exc
        entries = parse_entries(doc, limit=offset, where=where, max_entries=limits.max_entries)
        entries.append(header)
        return Toc("gzip", entries)

    return await asyncio.to_thread(decode)


def _toc_member(tar: bytes, limits: Limits, where: str) -> tuple[TocEntry, bytes]:
    """The single tar member in the TOC's gzip member: its header as an entry, and its bytes."""
    members = []

    def want(member: object) -> int:
        return limits.max_toc_bytes

    reader = TarReader(limits, want, label=where)  # type: ignore[arg-type]
    try:
        members = list(reader.feed(tar))
    except Exception as exc:  # a TarReader error is a LayerError; any of them means "not a TOC"
        raise TocUnusable(f"{where}: the eStargz TOC is not a tar member: {exc}") from exc
    if len(members) != 1 or members[0].name != TOC_NAME or members[0].type != REGULAR:
        raise TocUnusable(f"{where}: the eStargz TOC member is not a lone {TOC_NAME}")
    m = members[0]
    data = m.data or b""
    if len(data) != m.size:
        raise TocUnusable(f"{where}: the eStargz TOC member is cut short")
    return TocEntry(m.name, m.type, m.mode, m.uid, m.gid, m.size, m.linkname), data
