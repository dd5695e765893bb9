"""A lazy layer's table of contents, format-neutral: what ``lazy.py`` needs from zstd:chunked and eStargz.

Both formats list every tar member (type, mode, owner, link, size) in a JSON
document whose digest the manifest names, and cut each regular file's content
into chunks, each compressed on its own (a zstd frame, a gzip member) at an
offset the document gives, with the digest of its uncompressed bytes.  That is
enough to build a ``LayerIndex`` without reading the layer, and to read the
head of one file by fetching and checking only its first chunks.

``TocUnusable`` means "read this layer as a stream instead": a document that
does not match its digest, a chunk that does not match its, a registry that
ignores ``Range``, sizes over the limits.  It never turns into a verdict.
"""

from __future__ import annotations

import bisect
import io
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import zstandard

from canrun.errors import LayerError, LimitExceeded
from canrun.image.tar import BLOCKDEV, CHAR, DIRECTORY, FIFO, HARDLINK, REGULAR, SYMLINK

#: ``read(start, length)``: exactly those bytes of the blob (unverified), or RangeUnsupported.
RangeReader = Callable[[int, int], Awaitable[bytes]]

#: TOC ``type`` -> the tar module's normalised flag (both formats use the same names).
TOC_TYPES: dict[str, int] = {
    "reg": REGULAR,
    "dir": DIRECTORY,
    "symlink": SYMLINK,
    "hardlink": HARDLINK,
    "char": CHAR,
    "block": BLOCKDEV,
    "fifo": FIFO,
}


class TocUnusable(LayerError):
    """The table of contents cannot be trusted or used: read the whole layer instead."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One separately compressed piece of a file's content."""

    file_offset: int  # where its bytes start in the file
    size: int  # uncompressed bytes
    start: int  # compressed offset in the blob
    end: int  # compressed end (exclusive): the next thing written after it, an upper bound
    digest: str  # "sha256:<hex>" of the uncompressed bytes


@dataclass(slots=True)
class TocEntry:
    """One tar member as the table of contents states it (name not yet normalised)."""

    name: str
    type: int
    mode: int
    uid: int
    gid: int
    size: int
    linkname: str
    chunks: list[Chunk] = field(default_factory=list)


@dataclass(slots=True)
class Toc:
    codec: Literal["zstd", "gzip"]
    entries: list[TocEntry]


def check_digest(value: str, where: str) -> str:
    algo, _, hexd = value.partition(":")
    if algo != "sha256" or len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
        raise TocUnusable(f"{where}: digest {value!r} is not a sha256 digest")
    return value


def close_chunks(entries: list[TocEntry], starts: list[tuple[int, int, int, str]], file_ends: dict[int, int],
                 limit: int, where: str) -> None:
    """Give each chunk its compressed end: the next chunk start after it (or ``file_ends``/``limit``).

    ``starts`` holds (entry index, file offset, compressed start, digest) in TOC
    order, with sizes then derived from consecutive file offsets of one entry.
    """
    offsets = sorted({s for _, _, s, _ in starts} | {limit})
    for n, (index, file_offset, start, digest) in enumerate(starts):
        entry = entries[index]
        if not 0 < start < limit:
            raise TocUnusable(f"{where}: {entry.name} has data at offset {start}, outside 0..{limit}")
        last = n + 1 == len(starts) or starts[n + 1][0] != index
        size = (entry.size if last else starts[n + 1][1]) - file_offset
        if size <= 0 or file_offset + size > entry.size:
            raise TocUnusable(f"{where}: {entry.name} has chunks that do not tile its {entry.size} bytes")
        end = offsets[bisect.bisect_right(offsets, start)]
        if last and index in file_ends and start < file_ends[index] <= end:
            end = file_ends[index]
        entry.chunks.append(Chunk(file_offset, size, start, end, digest))
    for entry in entries:
        if entry.type == REGULAR and entry.size > 0:
            if not entry.chunks or entry.chunks[0].file_offset != 0:
                raise TocUnusable(f"{where}: {entry.name} has {entry.size} bytes but no chunk at its start")


def parse_entries(doc: object, *, limit: int, where: str, max_entries: int) -> list[TocEntry]:
    """The ``entries`` of a zstd:chunked or eStargz TOC document, checked, with every chunk placed.

    ``limit`` is where file data must end (the TOC's own offset).  A ``chunk``
    entry continues the regular file just before it; a file listed without
    ``chunkDigest`` is one chunk, checked against the file's ``digest``.
    Digest strings are not validated here: a malformed one simply never
    matches the bytes it is compared with.  This loop runs once per member
    (tens of thousands), so it reads the dicts directly.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise TocUnusable(f"{where}: the table of contents has no entries list")
    raw_entries: list[object] = doc["entries"]
    if len(raw_entries) > max_entries:
        raise LimitExceeded(f"{where}: the table of contents lists {len(raw_entries)} entries, more than the "
                            f"{max_entries} canrun reads")
    entries: list[TocEntry] = []
    starts: list[tuple[int, int, int, str]] = []
    file_ends: dict[int, int] = {}
    types = TOC_TYPES
    append = entries.append
    for raw in raw_entries:
        if type(raw) is not dict:
            raise TocUnusable(f"{where}: an entry is not an object")
        get = raw.get
        name = get("name")
        kind = get("type")
        if type(name) is not str or type(kind) is not str:
            raise TocUnusable(f"{where}: an entry has no name or type")
        if kind == "chunk":
            owner = len(entries) - 1
            if owner < 0 or entries[owner].name != name or not starts or starts[-1][0] != owner:
                raise TocUnusable(f"{where}: a chunk of {name!r} does not follow its file")
            file_offset, offset, digest = get("chunkOffset"), get("offset"), get("chunkDigest")
            if type(file_offset) is not int or type(offset) is not int or type(digest) is not str \
                    or file_offset <= starts[-1][1]:
                raise TocUnusable(f"{where}: a chunk of {name!r} is malformed or out of order")
            starts.append((owner, file_offset, offset, digest))
            continue
        flag = types.get(kind)
        if flag is None:
            raise TocUnusable(f"{where}: entry {name!r} has unknown type {kind!r}")
        mode, uid, gid, size = get("mode", 0), get("uid", 0), get("gid", 0), get("size", 0) if flag == REGULAR else 0
        link = get("linkName", "")
        if type(mode) is not int or type(uid) is not int or type(gid) is not int or type(size) is not int \
                or (uid | gid | size) < 0 or mode < 0 or type(link) is not str:
            raise TocUnusable(f"{where}: entry {name!r} has a malformed mode, owner, size or link")
        append(TocEntry(name, flag, mode & 0o7777, uid, gid, size, link))
        if size > 0:
            digest = get("chunkDigest")
            offset = get("offset")
            if not digest:
                first = get("chunkSize")
                if first and first != size:
                    raise TocUnusable(f"{where}: {name!r} is chunked but its first chunk has no digest")
                digest = get("digest")
            if type(offset) is not int or type(digest) is not str:
                raise TocUnusable(f"{where}: {name!r} has no data offset or digest")
            starts.append((len(entries) - 1, 0, offset, digest))
            end = get("endOffset")
            if end:
                if type(end) is not int:
                    raise TocUnusable(f"{where}: {name!r} has a malformed endOffset")
                file_ends[len(entries) - 1] = end
    close_chunks(entries, starts, file_ends, limit, where)
    return entries


def unzstd_bounded(data: bytes, limit: int, *, across_frames: bool) -> bytes:
    """At most ``limit + 1`` bytes of what ``data`` decompresses to (a bomb stops there)."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=across_frames)
    out = bytearray()
    while len(out) <= limit:
        piece = reader.read(limit + 1 - len(out))
        if not piece:
            break
        out += piece
    return bytes(out)


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the first gzip member in ``data`` (a bomb stops there)."""
    decomp = zlib.decompressobj(wbits=31)
    return decomp.decompress(data, limit + 1)
