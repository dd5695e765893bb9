"""Turn a layer blob stream into a ``LayerIndex`` without ever holding the layer.

Pipeline, per layer: compressed chunks -> decompressor (bounded output pieces)
-> ``TarReader`` (headers parsed, file data skipped by arithmetic) -> entries.
Only the head of executables and the bytes of ``KEPT_FILES`` are copied.

Compression is recognised by magic number, as containerd's
``compression.DecompressStream`` does, so a blob whose media type says gzip
but that is plain tar is read the way the runtime will read it; the declared
compression only names the likely cause when such a blob is no tar either.  gzip goes through ISA-L (``isal.igzip_lib``,
several times faster than zlib) and continues across members (eStargz writes one member per file);
zstd goes through ``zstandard``'s ``stream_writer``, which bounds each output
piece and decodes across frames (zstd:chunked).

Where the CPU work runs: ``index_layer`` (async) only moves chunks from the
network iterator into a bounded queue; a worker thread runs ``index_stream``.
ISA-L, zstd and hashlib release the GIL while they work, so two layers indexed
concurrently use two cores for decompression; only the per-header Python work
serialises on the GIL.  bench/bench_layer.py measures it.
"""

from __future__ import annotations

import asyncio
import queue
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Literal

from canrun.errors import LayerError, LimitExceeded
from canrun.image.binary import parse_exec_header
from canrun.image.limits import DEFAULT_LIMITS, Limits
from canrun.image.model import KEPT_FILES, Entry, EntryType, LayerIndex
from canrun.image.tar import BLOCKDEV, CHAR, DIRECTORY, FIFO, HARDLINK, REGULAR, SYMLINK, TarMember, TarReader

try:  # ISA-L is a hard dependency, but a missing wheel on an odd platform must not break canrun.
    from isal import igzip_lib as _igzip

    _IsalError: type[Exception] = _igzip.IsalError
except ImportError:  # pragma: no cover - exercised only where isal is not installed
    _igzip = None  # type: ignore[assignment]
    _IsalError = zlib.error

import zstandard

Compression = Literal["auto", "gzip", "zstd", "none"]

#: Largest piece of decompressed output handed to the tar reader at once.
OUTPUT_PIECE = 1 << 20
#: Chunks buffered between the network and a worker thread (the registry client hands on ~1 MiB pieces).
QUEUE_DEPTH = 8

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_TYPES: dict[int, EntryType] = {
    REGULAR: EntryType.FILE,
    DIRECTORY: EntryType.DIR,
    SYMLINK: EntryType.SYMLINK,
    HARDLINK: EntryType.HARDLINK,
    CHAR: EntryType.CHAR,
    BLOCKDEV: EntryType.BLOCK,
    FIFO: EntryType.FIFO,
}

_WHITEOUT_PREFIX = ".wh."
_OPAQUE = ".wh..wh..opq"


# --------------------------------------------------------------------------- entries
def _entry_factory() -> Callable[..., Entry]:
    """A positional ``Entry`` constructor, cheaper than the frozen dataclass ``__init__``.

    A frozen dataclass sets each field through ``object.__setattr__`` by name;
    with 60k members per layer (and again when a cached index is loaded) that is
    a measurable share of the whole run.  Setting the slots through their
    descriptors does the same thing without the name lookups.  Entry has no
    ``__post_init__``, so the result is indistinguishable (tests compare both);
    the field check below makes a change to Entry fail at import, not silently.
    """
    names = tuple(f.name for f in fields(Entry))
    if names != ("path", "type", "mode", "uid", "gid", "size", "link", "exec") or hasattr(Entry, "__post_init__"):
        return Entry  # model changed: fall back to the normal constructor
    new = object.__new__
    s_path, s_type, s_mode, s_uid, s_gid, s_size, s_link, s_exec = (getattr(Entry, n).__set__ for n in names)

    def make(path: str, type: EntryType, mode: int, uid: int, gid: int, size: int, link: str | None, exec: object) -> Entry:
        e = new(Entry)
        s_path(e, path)
        s_type(e, type)
        s_mode(e, mode)
        s_uid(e, uid)
        s_gid(e, gid)
        s_size(e, size)
        s_link(e, link)
        s_exec(e, exec)
        return e

    return make


#: ``make_entry(path, type, mode, uid, gid, size, link, exec)`` — all eight arguments, positional.
make_entry: Callable[..., Entry] = _entry_factory()


# --------------------------------------------------------------------------- paths
def clean_path(name: str) -> str:
    """Absolute, lexically clean path; ``..`` stops at the root (containerd's RootPath).

    ``./usr/bin/`` -> ``/usr/bin``; ``../../etc/passwd`` -> ``/etc/passwd``; ``.`` -> ``/``.
    """
    if name.startswith("./"):
        name = name[2:]
    name = name.strip("/")
    if not name:
        return "/"
    if "//" not in name and "/." not in name and name[0] != ".":
        return "/" + name
    parts: list[str] = []
    for part in name.split("/"):
        if not part or part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


# --------------------------------------------------------------------------- indexing
class _Builder:
    """Turns tar members into entries; decides which member bytes are worth keeping."""

    def __init__(self, digest: str, limits: Limits) -> None:
        self.digest = digest
        self.limits = limits
        self.entries: list[Entry] = []
        self.files: dict[str, bytes] = {}
        self._head = limits.exec_head_size

    def want(self, member: TarMember) -> int:
        path = member.path = clean_path(member.name)
        if member.mode & 0o111:
            return self._head
        if path in KEPT_FILES:
            if member.size > self.limits.max_kept_file_size:
                raise LimitExceeded(
                    f"layer {self.digest}: {path} is {member.size} bytes, over the "
                    f"{self.limits.max_kept_file_size}-byte limit for files canrun reads"
                )
            return member.size
        return 0

    def add(self, member: TarMember) -> None:
        path = member.path or clean_path(member.name)
        if ".wh." in path:
            slash = path.rfind("/")
            base = path[slash + 1 :]
            if base.startswith(_WHITEOUT_PREFIX):
                parent = path[:slash] or "/"
                if base == _OPAQUE:
                    self.entries.append(Entry(parent, EntryType.OPAQUE, member.mode, member.uid, member.gid))
                elif not base.startswith(_WHITEOUT_PREFIX + _WHITEOUT_PREFIX):  # other .wh..wh. are aufs metadata
                    target = clean_path(parent + "/" + base[len(_WHITEOUT_PREFIX) :])
                    self.entries.append(Entry(target, EntryType.WHITEOUT, member.mode, member.uid, member.gid))
                self.files.pop(parent + "/" + base[len(_WHITEOUT_PREFIX) :], None)
                return
        if path == "/":
            return  # containerd ignores members that resolve to the root itself
        kind = member.type
        link: str | None = None
        exec_info = None
        if kind == REGULAR:
            if member.mode & 0o111 and not member.sparse:
                head = member.data or b""
                exec_info = parse_exec_header(head, complete=len(head) >= member.size)
            if path in KEPT_FILES:
                self.files[path] = (member.data or b"") if member.size else b""
            elif self.files:
                self.files.pop(path, None)
        else:
            if kind == HARDLINK:
                link = clean_path(member.linkname)
            elif kind == SYMLINK:
                link = member.linkname
            if path in self.files:
                del self.files[path]  # a later member at the same path replaces the file
        self.entries.append(make_entry(path, _TYPES[kind], member.mode, member.uid, member.gid, member.size, link, exec_info))


@dataclass
class _Progress:
    """Where we are, for error messages and ratio limits."""

    compressed: int = 0
    uncompressed: int = 0


def _detect(first: bytes) -> str:
    """Compression by magic number, as containerd's DecompressStream decides it (the media type plays no part)."""
    if first.startswith(_GZIP_MAGIC):
        return "gzip"
    if first.startswith(_ZSTD_MAGIC):
        return "zstd"
    if len(first) >= 4 and int.from_bytes(first[:4], "little") & 0xFFFFFFF0 == 0x184D2A50:
        return "zstd"  # a skippable frame first (zstd:chunked metadata); containerd detects it too
    return "none"


def index_stream(
    chunks: Iterable[bytes],
    *,
    digest: str,
    compression: Compression = "auto",
    limits: Limits = DEFAULT_LIMITS,
    deadline: float | None = None,
) -> LayerIndex:
    """Index a layer from its (compressed) bytes, in any chunking; safe to run in a thread.

    Raises ``LayerError`` (bad compression, bad or truncated tar, unsupported
    member types) or ``LimitExceeded`` (see ``Limits``), both naming the layer
    digest and the offset where reading stopped.
    """
    if deadline is None:
        deadline = time.monotonic() + limits.max_seconds
    builder = _Builder(digest, limits)
    reader = TarReader(limits, builder.want, label=f"layer {digest}")
    progress = _Progress()
    iterator = iter(chunks)
    first = b""
    for first in iterator:
        if first:
            break
    kind = _detect(first)
    source = _chain(first, iterator, progress)
    max_total = limits.max_total_bytes
    ratio_floor = limits.ratio_floor
    max_ratio = limits.max_ratio if kind != "none" else float("inf")
    feed = reader.feed
    add = builder.add

    def consume(piece: bytes) -> None:
        total = progress.uncompressed = progress.uncompressed + len(piece)
        if total > max_total:
            raise LimitExceeded(
                f"layer {digest}: more than {max_total} bytes uncompressed "
                f"(at compressed offset {progress.compressed}): refusing a decompression bomb"
            )
        if total > ratio_floor and total > max_ratio * max(progress.compressed, 1):
            raise LimitExceeded(
                f"layer {digest}: compression ratio above {limits.max_ratio:g} "
                f"({total} bytes from {progress.compressed}): refusing a decompression bomb"
            )
        if time.monotonic() > deadline:
            raise LimitExceeded(f"layer {digest}: indexing took longer than {limits.max_seconds:g} s")
        if not reader.ended:
            for member in feed(piece):
                add(member)

    try:
        if kind == "gzip":
            _gunzip(source, consume, progress, digest)
        elif kind == "zstd":
            _unzstd(source, consume, progress, digest)
        else:
            for chunk in source:
                consume(chunk)
        reader.close()
    except LayerError as exc:
        if kind != "none" or compression not in ("gzip", "zstd") or isinstance(exc, LimitExceeded):
            raise
        # The hint: a blob its media type calls compressed that is no tar either was most likely mangled.
        raise LayerError(f"{exc} (its media type says {compression}, but it does not start with the "
                         f"{compression} magic number, so it was read as plain tar, as containerd reads it)") from exc
    return LayerIndex(digest=digest, entries=builder.entries, files=builder.files)


def _chain(first: bytes, rest: Iterator[bytes], progress: _Progress) -> Iterator[bytes]:
    if first:
        progress.compressed += len(first)
        yield first
    for chunk in rest:
        if chunk:
            progress.compressed += len(chunk)
            yield chunk


# --------------------------------------------------------------------------- gzip
class _ZlibGzip:
    """zlib behind the IgzipDecompressor interface (fallback when ISA-L is missing)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)
        self._tail = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._tail:
            data = self._tail + data
        out = self._d.decompress(data, max_length)
        self._tail = self._d.unconsumed_tail
        return out

    @property
    def needs_input(self) -> bool:
        return not self._tail

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


def _new_gzip() -> object:
    if _igzip is not None:
        return _igzip.IgzipDecompressor(flag=_igzip.DECOMP_GZIP)
    return _ZlibGzip()


Consume = Callable[[bytes], None]


def _gunzip(source: Iterator[bytes], consume: Consume, progress: _Progress, digest: str) -> None:
    """Decompress a (multi-member) gzip stream in pieces of at most OUTPUT_PIECE bytes.

    After each member's trailer (CRC and length checked by the decompressor) the
    next member starts; bytes after the last member must be another member, as
    for Go's multistream gzip reader.
    """
    decomp = None
    members = 0
    for chunk in source:
        data = chunk
        while True:
            if decomp is None:
                if not data:
                    break
                decomp = _new_gzip()
            try:
                out = decomp.decompress(data, OUTPUT_PIECE)  # type: ignore[attr-defined]
            except (_IsalError, zlib.error, EOFError, ValueError) as exc:
                what = "bad gzip data" if members == 0 else f"bad gzip data after member {members}"
                raise LayerError(f"layer {digest}: {what} near compressed offset {progress.compressed}: {exc}") from exc
            data = b""
            if out:
                consume(out)
            if decomp.eof:  # type: ignore[attr-defined]
                members += 1
                data = decomp.unused_data  # type: ignore[attr-defined]
                decomp = None
                continue
            if decomp.needs_input:  # type: ignore[attr-defined]
                break
    if decomp is not None:
        raise LayerError(f"layer {digest}: gzip stream truncated at compressed offset {progress.compressed}")


# --------------------------------------------------------------------------- zstd
class _ZstdFrames:
    """Walks zstd frame and block headers to tell whether the input ended on a frame boundary.

    ``zstandard``'s streaming APIs silently accept a stream cut inside a frame;
    reading the 3-byte block headers (and skipping block bodies by their stated
    size) costs next to nothing and makes a truncated layer an error, as it is
    for containerd's decoder.
    """

    def __init__(self) -> None:
        self._buf = b""  # header bytes being assembled
        self._skip = 0
        self._state = "magic"  # magic | skipsize | fhd | fheader | block | checksum
        self._need = 4
        self._header_rest = 0
        self._checksum = False

    @property
    def at_boundary(self) -> bool:
        return self._state == "magic" and not self._buf and not self._skip

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._buf), n - pos)
            self._buf += data[pos : pos + take]
            pos += take
            if len(self._buf) < self._need:
                return
            field, self._buf = self._buf, b""
            self._advance(field)

    def _advance(self, field: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(field, "little")
            if magic == 0xFD2FB528:
                self._state, self._need = "fhd", 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._state, self._need = "skipsize", 4
            else:
                raise ValueError(f"not a zstd frame (magic {field.hex()})")
        elif state == "skipsize":
            self._skip = int.from_bytes(field, "little")
            self._state, self._need = "magic", 4
        elif state == "fhd":
            fhd = field[0]
            fcs_flag, single = fhd >> 6, (fhd >> 5) & 1
            self._checksum = bool(fhd & 4)
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + ((1 if single else 0), 2, 4, 8)[fcs_flag]
            if rest:
                self._state, self._need = "fheader", rest
            else:
                self._state, self._need = "block", 3
        elif state == "fheader":
            self._state, self._need = "block", 3
        elif state == "block":
            header = int.from_bytes(field, "little")
            last, btype, bsize = header & 1, (header >> 1) & 3, header >> 3
            if btype == 3:
                raise ValueError("reserved zstd block type")
            self._skip = 1 if btype == 1 else bsize
            if last:
                if self._checksum:
                    self._state, self._need = "checksum", 4
                else:
                    self._state, self._need = "magic", 4
        elif state == "checksum":
            self._state, self._need = "magic", 4


class _Sink:
    """The ``stream_writer`` target: each bounded output piece goes straight to the tar reader.

    Pushing (instead of collecting what one ``write`` produced) keeps memory
    bounded even when a few input bytes expand to gigabytes: limits are checked
    per piece, and an exception raised here aborts the decompressor's call.
    """

    def __init__(self, consume: Consume) -> None:
        self._consume = consume

    def write(self, data: bytes) -> int:
        self._consume(bytes(data))
        return len(data)


def _unzstd(source: Iterator[bytes], consume: Consume, progress: _Progress, digest: str) -> None:
    frames = _ZstdFrames()
    writer = zstandard.ZstdDecompressor().stream_writer(_Sink(consume), write_size=OUTPUT_PIECE, closefd=False)
    for chunk in source:
        try:
            frames.feed(chunk)
            writer.write(chunk)
        except (zstandard.ZstdError, ValueError) as exc:
            raise LayerError(f"layer {digest}: bad zstd data near compressed offset {progress.compressed}: {exc}") from exc
    if not frames.at_boundary:
        raise LayerError(f"layer {digest}: zstd stream truncated at compressed offset {progress.compressed}")


# --------------------------------------------------------------------------- async
class _Abort(Exception):
    """Tells the worker that the producer stopped (network error, cancellation)."""


class _ChunkPipe:
    """Bounded hand-off from the event loop to one worker thread.

    The producer awaits a semaphore slot per chunk (back-pressure without
    blocking the loop); the worker releases slots with ``call_soon_threadsafe``.
    ``queue.SimpleQueue`` is lock-free for one producer and one consumer.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int, deadline: float, digest: str, seconds: float) -> None:
        self._loop = loop
        self._slots = asyncio.Semaphore(depth)
        self._queue: queue.SimpleQueue[bytes | None | BaseException] = queue.SimpleQueue()
        self._deadline = deadline
        self._digest = digest
        self._seconds = seconds
        self.worker_done = False

    async def put(self, chunk: bytes) -> bool:
        await self._slots.acquire()
        if self.worker_done:
            return False
        self._queue.put(chunk)
        return True

    def finish(self, error: BaseException | None = None) -> None:
        self._queue.put(error)

    def release_all(self) -> None:
        """Worker finished: wake a producer that may be waiting for a slot."""
        self.worker_done = True
        self._slots.release()

    def __iter__(self) -> Iterator[bytes]:
        release = self._slots.release
        call = self._loop.call_soon_threadsafe
        while True:
            remaining = self._deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                raise LimitExceeded(
                    f"layer {self._digest}: indexing took longer than {self._seconds:g} s (waiting for data)"
                ) from None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise _Abort() from item
            call(release)
            yield item


async def index_layer(
    chunks: AsyncIterator[bytes],
    *,
    digest: str,
    compression: Compression = "auto",
    limits: Limits = DEFAULT_LIMITS,
) -> LayerIndex:
    """Index a layer arriving as async chunks; the CPU work runs in a worker thread.

    The chunk iterator is always consumed to its end (or until an error), so a
    registry stream that verifies the digest at its end gets to do so.  Errors
    of the iterator itself (network, digest mismatch) propagate unchanged.
    """
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + limits.max_seconds
    pipe = _ChunkPipe(loop, QUEUE_DEPTH, deadline, digest, limits.max_seconds)

    def work() -> LayerIndex:
        try:
            return index_stream(pipe, digest=digest, compression=compression, limits=limits, deadline=deadline)
        finally:
            loop.call_soon_threadsafe(pipe.release_all)

    worker = loop.run_in_executor(None, work)
    try:
        async for chunk in chunks:
            if not await pipe.put(chunk):
                break  # the worker stopped early: its result (an error) tells why
        else:
            pipe.finish()
    except BaseException as exc:  # network error, digest mismatch, cancellation
        pipe.finish(exc)
        try:
            await asyncio.shield(worker)
        except _Abort:
            pass
        except LayerError:
            pass  # the producer's error is the one worth reporting
        raise
    return await worker

