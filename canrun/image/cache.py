"""Content-addressed on-disk cache: layer indexes, verified blobs, short-lived tag lookups.

Layout under the root (default ``$CANRUN_CACHE_DIR`` or ``~/.cache/canrun``)::

    layers/sha256/<hex>.idx    LayerIndex, binary format below
    views/sha256/<hex>.fsv     merged view (MergedFS) of a platform manifest, by manifest digest
    blobs/sha256/<hex>         manifest/config bytes, re-verified against the name on read
    tags/<sha256 of key>.json  {"key", "digest", "media_type", "stored"}: TTL-bound

Concurrency: every write goes to a temp file in the target directory and is
``os.replace``d into place, so a reader sees the old file, the new one or none,
never a torn one — across processes and webhook replicas sharing a volume.
Anything unreadable (truncated, corrupt, an older format version, a blob whose
hash does not match) is a miss: the file is removed and the caller re-fetches.
No fsync: a crash leaves at worst a corrupt file, which is a miss.

Why not pickle or marshal: the directory may be shared, and both can be made to
do harmful things (pickle runs code; marshal is documented as unsafe against
malicious data).  The layer format is plain data — struct-packed records plus
NUL-joined UTF-8 strings, zstd-compressed — decoded with ``struct.iter_unpack``
and ``str.split``, so loading 60k entries is dominated by building the
``Entry`` objects.  A forged index cannot execute anything, but it can lie
about a layer's content: the cache directory must be writable only by the
canrun user (it is created 0700).

Views: a warm check of a large image only looks at a handful of paths, so
rebuilding the merged filesystem from its layer indexes (two Python objects per
path) is most of its time.  ``views/`` keeps the merged result of every
platform manifest the store has judged: preamble ``CRFV`` + version, then
zstd-compressed (with its content checksum) sections — JSON meta (manifest
digest, layer digests, node count, kept-file names), one ``fs.NODE_RECORD``
per node, NUL-joined paths, symlink targets, hardlink origins, exec headers
(JSON, as in the layer format), kept-file bytes, removed paths and the layer
that removed each.  ``decode_view`` checks sizes and type codes and builds only
the path index; ``FrozenMergedFS`` builds nodes on lookup.  A manifest digest
fixes its layers, so a view never goes stale — except when the merge rules in
``image/fs.py`` change: bump ``VIEW_VERSION`` then (an old version is a miss).

Size: ``max_bytes`` (default 2 GiB) bounds the directory; when a write finds
the last pruning older than ``PRUNE_INTERVAL`` it deletes least-recently-used
files (reads refresh mtime) down to 80% of the bound.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import zstandard

from canrun.image.fs import (NODE_HAS_EXEC, NODE_HAS_HARDLINK, NODE_HAS_LINK, NODE_RECORD, NODE_TYPES,
                             FrozenMergedFS, FrozenNodes, MergedFS)
from canrun.image.layer import make_entry
from canrun.image.model import ElfInfo, Entry, EntryType, ExecInfo, LayerIndex, ScriptInfo, UnknownFormat
from canrun.registry.reference import is_digest

T = TypeVar("T")

FORMAT_MAGIC = b"CRLI"
FORMAT_VERSION = 1
VIEW_MAGIC = b"CRFV"
#: Bump whenever MergedFS's merge rules change: a view saved by other rules would answer differently.
VIEW_VERSION = 1
_VIEW_SECTIONS = 9
DEFAULT_TAG_TTL = 300.0
DEFAULT_MAX_BYTES = 2 << 30
PRUNE_INTERVAL = 600.0

_PREAMBLE = struct.Struct("<4sH")
_SECTION = struct.Struct("<I")
# type code, flags (bit 0: has link), mode, uid, gid, size
_RECORD = struct.Struct("<BBHQQQ")
_TYPE_CODES: dict[EntryType, int] = {t: i for i, t in enumerate(EntryType)}
_TYPES_BY_CODE: list[EntryType] = list(EntryType)
_HAS_LINK = 1

_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


def default_root() -> Path:
    env = os.environ.get("CANRUN_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "canrun"


class _Corrupt(Exception):
    pass


def _sections(payload: bytes, count: int) -> list[bytes]:
    sections: list[bytes] = []
    pos = 0
    for _ in range(count):
        (length,) = _SECTION.unpack_from(payload, pos)
        pos += _SECTION.size
        if pos + length > len(payload):
            raise _Corrupt("section")
        sections.append(payload[pos : pos + length])
        pos += length
    if pos != len(payload):
        raise _Corrupt("trailing data")
    return sections


def _kept_files(names_and_sizes: list[list[object]], data: bytes) -> dict[str, bytes]:
    """The kept files (``/etc/passwd`` …), stored back to back in one section."""
    files: dict[str, bytes] = {}
    offset = 0
    for name, size in names_and_sizes:
        if not isinstance(size, int):
            raise _Corrupt("file size")
        files[str(name)] = data[offset : offset + size]
        offset += size
    if offset != len(data):
        raise _Corrupt("files")
    return files


# --------------------------------------------------------------------------- encoding
def _exec_to_json(index: int, info: ExecInfo) -> list[object]:
    if isinstance(info, ElfInfo):
        return [index, "elf", info.elf_class, info.little_endian, info.machine, info.interpreter, info.elf_type]
    if isinstance(info, ScriptInfo):
        return [index, "script", info.interpreter, info.argument, info.line]
    return [index, "unknown", info.magic.hex()]


def _exec_from_json(item: list[object]) -> tuple[int, ExecInfo]:
    index, kind = item[0], item[1]
    if not isinstance(index, int):
        raise _Corrupt("exec index")
    if kind == "elf":
        cls, little, machine, interp, etype = item[2:7]
        return index, ElfInfo(int(cls), bool(little), int(machine), None if interp is None else str(interp), int(etype))  # type: ignore[arg-type]
    if kind == "script":
        interp, arg, line = item[2:5]
        return index, ScriptInfo(str(interp), None if arg is None else str(arg), str(line))
    if kind == "unknown":
        return index, UnknownFormat(bytes.fromhex(str(item[2])))
    raise _Corrupt(f"exec kind {kind!r}")


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def encode_index(index: LayerIndex) -> bytes:
    """Serialise a LayerIndex (format documented in the module docstring)."""
    records = bytearray()
    pack = _RECORD.pack
    codes = _TYPE_CODES
    links: list[str] = []
    execs: list[list[object]] = []
    for i, e in enumerate(index.entries):
        flags = 0
        if e.link is not None:
            flags |= _HAS_LINK
            links.append(e.link)
        if e.exec is not None:
            execs.append(_exec_to_json(i, e.exec))
        records += pack(codes[e.type], flags, e.mode & 0xFFFF, e.uid, e.gid, e.size)
    file_names = list(index.files)
    meta = {
        "digest": index.digest,
        "size": index.size,
        "count": len(index.entries),
        "exec": execs,
        "files": [[name, len(index.files[name])] for name in file_names],
    }
    sections = [
        json.dumps(meta, separators=(",", ":")).encode(),
        bytes(records),
        _enc("\0".join(e.path for e in index.entries)),
        _enc("\0".join(links)),
        b"".join(index.files[name] for name in file_names),
    ]
    payload = b"".join(_SECTION.pack(len(s)) + s for s in sections)
    return _PREAMBLE.pack(FORMAT_MAGIC, FORMAT_VERSION) + zstandard.ZstdCompressor(level=3).compress(payload)


def decode_index(blob: bytes, digest: str | None = None) -> LayerIndex:
    """Inverse of ``encode_index``; raises ``_Corrupt`` on anything unexpected.

    The cyclic GC is paused while the entries are built: tens of thousands of
    new objects would otherwise trigger repeated full collections (~20% of
    the load time) that cannot find anything — entries hold no cycles.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _decode_index(blob, digest)
    finally:
        if enabled:
            gc.enable()


def _decode_index(blob: bytes, digest: str | None) -> LayerIndex:
    try:
        magic, version = _PREAMBLE.unpack_from(blob)
        if magic != FORMAT_MAGIC or version != FORMAT_VERSION:
            raise _Corrupt("format")
        payload = zstandard.ZstdDecompressor().decompress(blob[_PREAMBLE.size :], max_output_size=1 << 30)
        sections = _sections(payload, 5)
        meta = json.loads(sections[0])
        count = meta["count"]
        if digest is not None and meta["digest"] != digest:
            raise _Corrupt("digest")
        if len(sections[1]) != count * _RECORD.size:
            raise _Corrupt("records")
        paths = sections[2].decode("utf-8", "surrogateescape").split("\0") if count else []
        links = sections[3].decode("utf-8", "surrogateescape").split("\0")
        if len(paths) != count:
            raise _Corrupt("paths")
        execs = dict(_exec_from_json(item) for item in meta["exec"])
        types = _TYPES_BY_CODE
        entries: list[Entry] = []
        append = entries.append
        new = make_entry
        link_iter = iter(links)
        get_exec = execs.get
        for i, (path, (code, flags, mode, uid, gid, size)) in enumerate(zip(paths, _RECORD.iter_unpack(sections[1]))):
            link = next(link_iter) if flags & _HAS_LINK else None
            append(new(path, types[code], mode, uid, gid, size, link, get_exec(i)))
        files = _kept_files(meta["files"], sections[4])
        size = meta.get("size", -1)
        return LayerIndex(digest=str(meta["digest"]), entries=entries, files=files,
                          size=size if isinstance(size, int) else -1)
    except _Corrupt:
        raise
    except (
        struct.error,
        zstandard.ZstdError,
        ValueError,  # JSON, UnicodeDecodeError, bytes.fromhex
        KeyError,
        IndexError,
        TypeError,
        StopIteration,
    ) as exc:
        raise _Corrupt(str(exc)) from exc


# --------------------------------------------------------------------------- merged views
def _split(section: bytes, count: int) -> list[str]:
    items = section.decode("utf-8", "surrogateescape").split("\0") if count else []
    if len(items) != count:
        raise _Corrupt("string table")
    return items


def encode_view(fs: MergedFS, digest: str) -> bytes:
    """Serialise a merged view saved for platform manifest ``digest`` (format in the module docstring)."""
    records = bytearray()
    pack = NODE_RECORD.pack
    codes = {t: i for i, t in enumerate(NODE_TYPES)}
    paths: list[str] = []
    links: list[str] = []
    hardlinks: list[str] = []
    execs: list[list[object]] = []
    for i, node in enumerate(fs.nodes()):
        flags = link = hardlink = 0
        if node.link is not None:
            flags |= NODE_HAS_LINK
            link = len(links)
            links.append(node.link)
        if node.hardlink is not None:
            flags |= NODE_HAS_HARDLINK
            hardlink = len(hardlinks)
            hardlinks.append(node.hardlink)
        if node.exec is not None:
            flags |= NODE_HAS_EXEC
            execs.append(_exec_to_json(i, node.exec))
        paths.append(node.path)
        records += pack(codes[node.type], flags, node.mode & 0xFFFF, node.uid, node.gid, node.size, node.layer,
                        link, hardlink)
    files = fs.kept_files()
    file_names = list(files)
    removed = fs.removals()
    meta = {
        "digest": digest,
        "layers": list(fs.layer_digests),
        "count": len(paths),
        "links": len(links),
        "hardlinks": len(hardlinks),
        "removed": len(removed),
        "files": [[name, len(files[name])] for name in file_names],
    }
    sections = [
        json.dumps(meta, separators=(",", ":")).encode(),
        bytes(records),
        _enc("\0".join(paths)),
        _enc("\0".join(links)),
        _enc("\0".join(hardlinks)),
        json.dumps(execs, separators=(",", ":")).encode(),
        b"".join(files[name] for name in file_names),
        _enc("\0".join(removed)),
        struct.pack(f"<{len(removed)}i", *removed.values()),
    ]
    payload = b"".join(_SECTION.pack(len(s)) + s for s in sections)
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    return _PREAMBLE.pack(VIEW_MAGIC, VIEW_VERSION) + compressor.compress(payload)


def decode_view(blob: bytes, digest: str | None = None) -> FrozenMergedFS:
    """Inverse of ``encode_view``; raises ``_Corrupt`` on anything unexpected.

    Only what every lookup needs is done here (decompress, split the path
    list, index it); nodes and exec headers are decoded on first use.  The
    zstd checksum and the table checks below catch a damaged file now, not
    halfway through a check.
    """
    try:
        magic, version = _PREAMBLE.unpack_from(blob)
        if magic != VIEW_MAGIC or version != VIEW_VERSION:
            raise _Corrupt("format")
        payload = zstandard.ZstdDecompressor().decompress(blob[_PREAMBLE.size :], max_output_size=1 << 30)
        sections = _sections(payload, _VIEW_SECTIONS)
        meta = json.loads(sections[0])
        if digest is not None and meta["digest"] != digest:
            raise _Corrupt("digest")
        count = meta["count"]
        records = sections[1]
        if not isinstance(count, int) or len(records) != count * NODE_RECORD.size:
            raise _Corrupt("records")
        if count and max(records[0 :: NODE_RECORD.size]) >= len(NODE_TYPES):
            raise _Corrupt("type code")
        paths = _split(sections[2], count)
        links = _split(sections[3], meta["links"])
        hardlinks = _split(sections[4], meta["hardlinks"])
        exec_json = sections[5]
        files = _kept_files(meta["files"], sections[6])
        removed_count = meta["removed"]
        removed_paths = _split(sections[7], removed_count)
        removed = dict(zip(removed_paths, struct.unpack(f"<{removed_count}i", sections[8])))
        layer_digests = [str(d) for d in meta["layers"]]

        def load_execs() -> dict[int, ExecInfo]:
            try:
                return dict(_exec_from_json(item) for item in json.loads(exec_json))
            except (_Corrupt, ValueError, TypeError, IndexError) as exc:
                raise KeyError(f"exec headers: {exc}") from exc  # FrozenNodes reports it as ImageCorrupt

        return FrozenMergedFS(FrozenNodes(paths, records, links, hardlinks, load_execs), files, removed,
                              layer_digests)
    except _Corrupt:
        raise
    except (struct.error, zstandard.ZstdError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise _Corrupt(str(exc)) from exc


# --------------------------------------------------------------------------- cache
class Cache:
    """The on-disk cache.  Every method is safe to call from several processes at once."""

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        tag_ttl: float = DEFAULT_TAG_TTL,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.tag_ttl = tag_ttl
        self.max_bytes = max_bytes

    # ------------------------------------------------------------ layer indexes
    def get_layer(self, digest: str) -> LayerIndex | None:
        return self._get_decoded("layers", digest, ".idx", decode_index)

    def put_layer(self, index: LayerIndex) -> None:
        self._put_encoded("layers", index.digest, ".idx", lambda: encode_index(index))

    # ------------------------------------------------------------ merged views
    def get_view(self, manifest_digest: str) -> FrozenMergedFS | None:
        """The merged filesystem saved for a platform manifest, read-only and decoded lazily."""
        return self._get_decoded("views", manifest_digest, ".fsv", decode_view)

    def put_view(self, manifest_digest: str, fs: MergedFS) -> None:
        """Save ``fs``, merged from every layer of ``manifest_digest``, only after those layers were checked."""
        self._put_encoded("views", manifest_digest, ".fsv", lambda: encode_view(fs, manifest_digest))

    def _get_decoded(self, kind: str, digest: str, suffix: str, decode: Callable[[bytes, str], T]) -> T | None:
        """A derived record by digest; anything undecodable is a miss, and removed."""
        path = self._content_path(kind, digest, suffix)
        if path is None:
            return None
        data = self._read(path)
        if data is None:
            return None
        try:
            return decode(data, digest)
        except _Corrupt:
            self._discard(path)
            return None

    def _put_encoded(self, kind: str, digest: str, suffix: str, encode: Callable[[], bytes]) -> None:
        path = self._content_path(kind, digest, suffix)
        if path is not None:
            self._write(path, encode())

    def discard_view(self, manifest_digest: str) -> None:
        """Drop a view its caller found inconsistent with the manifest (a miss from then on)."""
        path = self._content_path("views", manifest_digest, ".fsv")
        if path is not None:
            self._discard(path)

    # ------------------------------------------------------------ blobs
    def get_blob(self, digest: str) -> bytes | None:
        """A manifest or config by digest, re-hashed on read: a tampered file is a miss."""
        path = self._content_path("blobs", digest, "")
        if path is None:
            return None
        data = self._read(path)
        if data is None:
            return None
        algorithm, _, expected = digest.partition(":")
        if _HASHES[algorithm](data).hexdigest() != expected:
            self._discard(path)
            return None
        return data

    def put_blob(self, digest: str, data: bytes) -> None:
        """Store verified content; content that does not match ``digest`` is refused (ValueError)."""
        path = self._content_path("blobs", digest, "")
        if path is None:
            return
        algorithm, _, expected = digest.partition(":")
        if _HASHES[algorithm](data).hexdigest() != expected:
            raise ValueError(f"refusing to cache content that does not match {digest}")
        self._write(path, data)

    # ------------------------------------------------------------ tags
    def get_tag(self, key: str, *, ttl: float | None = None) -> tuple[str, str] | None:
        """(digest, media type) stored for a tag reference less than ``ttl`` seconds ago."""
        path = self._tag_path(key)
        data = self._read(path, touch=False)
        if data is None:
            return None
        try:
            record = json.loads(data)
            stored, digest, media_type = float(record["stored"]), record["digest"], record["media_type"]
            if record["key"] != key or not isinstance(digest, str) or not isinstance(media_type, str):
                raise ValueError("mismatched record")
        except (ValueError, KeyError, TypeError):
            self._discard(path)
            return None
        age = time.time() - stored
        if age > (self.tag_ttl if ttl is None else ttl) or age < -60:
            return None
        return digest, media_type

    def put_tag(self, key: str, digest: str, media_type: str) -> None:
        record = {"key": key, "digest": digest, "media_type": media_type, "stored": time.time()}
        self._write(self._tag_path(key), json.dumps(record).encode())

    # ------------------------------------------------------------ housekeeping
    def prune(self, max_bytes: int | None = None) -> int:
        """Delete least-recently-used files until the cache is under ``max_bytes``; returns bytes freed."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        if limit is None:
            return 0
        files: list[tuple[float, int, Path]] = []
        for sub in ("layers", "views", "blobs", "tags"):
            base = self.root / sub
            if not base.is_dir():
                continue
            for dirpath, _dirs, names in os.walk(base):
                for name in names:
                    p = Path(dirpath) / name
                    try:
                        st = p.stat()
                    except OSError:
                        continue
                    files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        freed = 0
        if total <= limit:
            return 0
        target = int(limit * 0.8)
        for _mtime, size, p in sorted(files):
            if total - freed <= target:
                break
            try:
                p.unlink()
                freed += size
            except OSError:
                pass
        return freed

    def _maybe_prune(self) -> None:
        if self.max_bytes is None:
            return
        marker = self.root / ".pruned"
        try:
            if time.time() - marker.stat().st_mtime < PRUNE_INTERVAL:
                return
        except OSError:
            pass
        try:
            marker.touch()
        except OSError:
            return
        self.prune()

    # ------------------------------------------------------------ files
    def _content_path(self, kind: str, digest: str, suffix: str) -> Path | None:
        if not is_digest(digest):
            return None  # never cache under a name we did not validate (path traversal, odd algorithms)
        algorithm, _, hexpart = digest.partition(":")
        return self.root / kind / algorithm / (hexpart + suffix)

    def _tag_path(self, key: str) -> Path:
        return self.root / "tags" / (hashlib.sha256(key.encode()).hexdigest() + ".json")

    def _read(self, path: Path, *, touch: bool = True) -> bytes | None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if touch and self.max_bytes is not None:
            try:
                os.utime(path)  # LRU for prune()
            except OSError:
                pass
        return data

    def _write(self, path: Path, data: bytes) -> None:
        """Atomic replace; a cache that cannot be written is not an error, only slower."""
        try:
            if not path.parent.is_dir():
                self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError:
            return
        self._maybe_prune()

    def _discard(self, path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass
