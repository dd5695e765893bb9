"""Index a zstd:chunked or eStargz layer from its table of contents, reading only a few ranges of it.

The streaming indexer (``layer.py``) must inflate every byte of a layer to
learn its members; these two formats list the members in a TOC whose digest
the manifest names, and compress every file's chunks on their own.  So the
lazy path reads the TOC, feeds its entries through the very ``_Builder`` the
streaming indexer uses (same normalisation, whiteouts, kept files, exec
headers: the same ``LayerIndex``), and fetches only the chunks holding the
first bytes of the files the builder wants to look inside (executables, up to
``Limits.exec_head_size``; ``/etc/passwd``, ``/etc/group``) — adjacent
chunks coalesced into one ``Range`` request, each chunk checked against the
digest the TOC gives.

Everything either verifies or the layer is read as a stream (``None`` from
``lazy_index``): a TOC or chunk that does not match its digest, a registry
that ignores ``Range``, a layer without the annotations, a TOC over the
limits, or a plan that would fetch a large share of the layer anyway.  The
stream then verifies the blob digest and judges; nothing is ever guessed.

What is trusted: the manifest (by its digest) -> the TOC (by the annotated
digest) -> each chunk (by the TOC's digests).  The tar headers in the blob
are not read, so a producer whose TOC disagrees with its own tar stream is
judged by its TOC, as lazy-pulling snapshotters (stargz-snapshotter,
containers/storage) would run it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import zlib
from dataclasses import dataclass

import zstandard

from canrun.errors import LimitExceeded, RangeUnsupported
from canrun.image import toc_estargz, toc_zstd
from canrun.image.binary import BINPRM_BUF_SIZE, INTERP_BEYOND_HEAD, parse_exec_header
from canrun.image.layer import _Builder
from canrun.image.limits import Limits
from canrun.image.model import KEPT_FILES, ElfInfo, LayerIndex
from canrun.image.tar import REGULAR, TarMember
from canrun.image.toc import Chunk, RangeReader, Toc, TocEntry, TocUnusable, gunzip_bounded, unzstd_bounded
from canrun.registry.base import Descriptor, RegistryBackend
from canrun.registry.reference import Reference

log = logging.getLogger(__name__)

#: Two wanted chunks closer than this in the blob are fetched with one request (the gap is read and dropped).
#: Small: the gaps between executables are other files' bodies (bench/bench_lazy.py weighs bytes and requests).
COALESCE_GAP = 4 << 10
#: Rounds that read one more chunk of the executables whose program headers lie past what was read.
EXTRA_ROUNDS = 2
#: A run of coalesced chunks stops growing at this many bytes (a single chunk may be longer, up to MAX_CHUNK).
MAX_REQUEST = 8 << 20
#: Largest chunk (compressed or not) canrun fetches to read a file's head; a bigger one: stream the layer.
MAX_CHUNK = 32 << 20
#: Concurrent Range requests per layer.
REQUEST_CONCURRENCY = 8
#: Above this share of the blob, one stream is cheaper than many ranges: read it whole.
MAX_SHARE = 0.5
#: Range requests per layer (after coalescing) beyond which the layer is streamed instead.
MAX_REQUESTS = 2048


@dataclass
class LazyStats:
    """Bytes and requests one lazy read cost, for the bench and the logs."""

    requests: int = 0
    bytes: int = 0


def is_lazy(descriptor: Descriptor) -> bool:
    """The layer's annotations say it carries a table of contents canrun can read."""
    return toc_zstd.annotated(descriptor) or toc_estargz.annotated(descriptor)


async def lazy_index(backend: RegistryBackend, ref: Reference, descriptor: Descriptor, limits: Limits,
                     stats: LazyStats | None = None) -> LayerIndex | None:
    """The layer's index from its TOC, or None when it must be read as a stream (the reason is logged).

    Raises only what the stream would raise for the same layer (LimitExceeded
    for too many entries or a kept file over its limit) and registry errors
    other than ``RangeUnsupported`` (an unreachable registry stays unreachable).
    """
    read_range = getattr(backend, "read_range", None)
    if read_range is None or not is_lazy(descriptor) or descriptor.size <= 0:
        return None
    stats = stats if stats is not None else LazyStats()

    async def read(start: int, length: int) -> bytes:
        data: bytes = await read_range(ref, descriptor.digest, start, length, size=descriptor.size)
        stats.requests += 1
        stats.bytes += len(data)
        return data

    async def build() -> LayerIndex:
        if toc_zstd.annotated(descriptor):
            toc = await toc_zstd.read_toc(read, descriptor, limits)
        else:
            toc = await toc_estargz.read_toc(read, descriptor, limits)
        return await _index_from_toc(toc, read, descriptor, limits)

    started = time.monotonic()
    try:
        index = await asyncio.wait_for(build(), limits.max_seconds)
    except asyncio.TimeoutError as exc:
        raise LimitExceeded(f"layer {descriptor.digest}: indexing took longer than {limits.max_seconds:g} s") from exc
    except (TocUnusable, RangeUnsupported) as exc:
        log.info("%s: reading the whole layer: %s", ref, exc)
        return None
    log.debug("%s: layer %s indexed from its TOC: %d entries, %d requests, %d bytes, %.3f s", ref,
              descriptor.digest, len(index.entries), stats.requests, stats.bytes, time.monotonic() - started)
    return index


async def _index_from_toc(toc: Toc, read: RangeReader, descriptor: Descriptor, limits: Limits) -> LayerIndex:
    builder = _Builder(descriptor.digest, limits)
    members: list[TarMember] = []
    wanted: list[tuple[TarMember, TocEntry, int]] = []

    def plan() -> None:
        for entry in toc.entries:
            member = TarMember(entry.name, entry.type, entry.mode, entry.uid, entry.gid, entry.size, entry.linkname, 0)
            want = builder.want(member)  # raises LimitExceeded for an oversized kept file, as the stream does
            members.append(member)
            if entry.type == REGULAR:
                if want and entry.size:
                    wanted.append((member, entry, min(want, entry.size)))
                elif want:
                    member.data = b""

    await asyncio.to_thread(plan)  # per-member Python work, tens of thousands of times: off the event loop
    heads = _Heads(toc.codec, read, descriptor)
    # First round: enough for the kernel's 256-byte buffer and, nearly always, the ELF program headers.
    # Kept files (/etc/passwd, /etc/group) are read whole.
    await heads.fetch([(entry, need if member.path in KEPT_FILES else
                        min(need, max(BINPRM_BUF_SIZE, _first_chunk(entry)))) for member, entry, need in wanted])
    # Then, for the few whose program headers or PT_INTERP lie further in, one more chunk at a time
    # (a couple of rounds), and finally all of the head.
    pending = [(member, entry, need) for member, entry, need in wanted if member.path not in KEPT_FILES]
    for round_ in range(EXTRA_ROUNDS + 1):
        more = []
        for item in pending:
            _, entry, need = item
            head = heads.prefix(entry, need)
            if len(head) < need and _needs_more(head, entry.size):
                more.append(item)
        if not more:
            break
        last = round_ == EXTRA_ROUNDS
        await heads.fetch([(entry, need if last else min(need, _next_chunk_end(entry, len(heads.prefix(entry, need)))))
                           for _, entry, need in more])
        pending = more
    for member, entry, need in wanted:
        member.data = heads.prefix(entry, need)

    def build() -> None:
        add = builder.add
        for member in members:
            add(member)

    await asyncio.to_thread(build)
    return LayerIndex(digest=descriptor.digest, entries=builder.entries, files=builder.files, size=descriptor.size)


def _first_chunk(entry: TocEntry) -> int:
    return entry.chunks[0].size if entry.chunks else 0


def _next_chunk_end(entry: TocEntry, have: int) -> int:
    """The file offset where the chunk holding byte ``have`` ends."""
    for chunk in entry.chunks:
        if chunk.file_offset + chunk.size > have:
            return chunk.file_offset + chunk.size
    return entry.size


def _needs_more(head: bytes, size: int) -> bool:
    """Would a longer head (up to the builder's) change what the streaming indexer records?

    ``parse_exec_header`` looks at the first 256 bytes, and for ELF at the
    program headers and the PT_INTERP string: when those lie beyond ``head``
    it says ``INTERP_BEYOND_HEAD``.  Any other answer is final.
    """
    if len(head) < BINPRM_BUF_SIZE:
        return True
    info = parse_exec_header(head, complete=len(head) >= size)
    return isinstance(info, ElfInfo) and info.interpreter == INTERP_BEYOND_HEAD


class _Heads:
    """Fetches, verifies and keeps the chunks of the files whose heads are wanted."""

    def __init__(self, codec: str, read: RangeReader, descriptor: Descriptor) -> None:
        self._codec = codec
        self._read = read
        self._descriptor = descriptor
        self._where = f"layer {descriptor.digest}"
        self._chunks: dict[tuple[int, int], bytes] = {}  # (id(entry), file offset) -> verified bytes
        self._slots = asyncio.Semaphore(REQUEST_CONCURRENCY)
        self._fetched = 0
        self._requests = 0

    def prefix(self, entry: TocEntry, need: int) -> bytes:
        parts = []
        have = 0
        for chunk in entry.chunks:
            data = self._chunks.get((id(entry), chunk.file_offset))
            if data is None or have >= need:
                break
            parts.append(data)
            have += len(data)
        return b"".join(parts)[:need]

    async def fetch(self, wants: list[tuple[TocEntry, int]]) -> None:
        """Fetch every chunk that holds a byte below ``need`` of its entry, and not fetched yet."""
        todo: list[tuple[TocEntry, Chunk]] = []
        for entry, need in wants:
            for chunk in entry.chunks:
                if chunk.file_offset >= need:
                    break
                if (id(entry), chunk.file_offset) not in self._chunks:
                    if chunk.size > MAX_CHUNK or chunk.end - chunk.start > MAX_CHUNK:
                        raise TocUnusable(f"{self._where}: a {chunk.size}-byte chunk of {entry.name} is over the "
                                          f"{MAX_CHUNK}-byte limit for a lazy read")
                    todo.append((entry, chunk))
        if not todo:
            return
        todo.sort(key=lambda item: item[1].start)
        runs: list[tuple[int, int, list[tuple[TocEntry, Chunk]]]] = []
        for entry, chunk in todo:
            if runs and chunk.start - runs[-1][1] <= COALESCE_GAP and chunk.end - runs[-1][0] <= MAX_REQUEST:
                start, end, items = runs[-1]
                items.append((entry, chunk))
                runs[-1] = (start, max(end, chunk.end), items)
            else:
                runs.append((chunk.start, chunk.end, [(entry, chunk)]))
        self._requests += len(runs)
        if self._requests > MAX_REQUESTS:
            raise TocUnusable(f"{self._where}: the heads to read need more than {MAX_REQUESTS} requests: "
                              f"a stream is cheaper")
        planned = self._fetched + sum(end - start for start, end, _ in runs)
        if planned > MAX_SHARE * self._descriptor.size:
            raise TocUnusable(f"{self._where}: the heads to read come to {planned} of {self._descriptor.size} "
                              f"bytes: a stream is cheaper")
        self._fetched = planned
        bodies = await asyncio.gather(*(self._get(start, end) for start, end, _ in runs))
        decoded = await asyncio.to_thread(self._decode_all, list(zip(runs, bodies)))
        self._chunks.update(decoded)

    async def _get(self, start: int, end: int) -> bytes:
        async with self._slots:
            return await self._read(start, end - start)

    def _decode_all(self, fetched: list[tuple[tuple[int, int, list[tuple[TocEntry, Chunk]]], bytes]]
                    ) -> dict[tuple[int, int], bytes]:
        out: dict[tuple[int, int], bytes] = {}
        for (start, _end, items), body in fetched:
            for entry, chunk in items:
                piece = body[chunk.start - start : chunk.end - start]
                out[(id(entry), chunk.file_offset)] = self._decode(entry, chunk, piece)
        return out

    def _decode(self, entry: TocEntry, chunk: Chunk, piece: bytes) -> bytes:
        try:
            # The member or frame may go on past the chunk (tar padding, the next headers): only its
            # first ``size`` bytes are the chunk.
            if self._codec == "zstd":
                data = unzstd_bounded(piece, chunk.size, across_frames=True)
            else:
                data = gunzip_bounded(piece, chunk.size)
        except (zstandard.ZstdError, zlib.error) as exc:
            raise TocUnusable(f"{self._where}: the chunk of {entry.name} at {chunk.start} does not decompress: "
                              f"{exc}") from exc
        data = data[: chunk.size]
        if len(data) != chunk.size or "sha256:" + hashlib.sha256(data).hexdigest() != chunk.digest:
            raise TocUnusable(f"{self._where}: the chunk of {entry.name} at {chunk.start} does not match its "
                              f"digest in the TOC")
        return data


__all__ = ["LazyStats", "is_lazy", "lazy_index"]
