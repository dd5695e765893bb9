"""The cache's two binary formats: a layer index (``.idx``) and a merged view (``.fsv``).

Why not pickle or marshal: the cache directory may be shared, and both can be
made to do harmful things (pickle runs code; marshal is documented as unsafe
against malicious data).  Both formats are plain data: a preamble (magic +
version), then zstd-compressed length-prefixed sections of struct-packed
records, NUL-joined UTF-8 strings and small JSON documents, decoded with
``struct.iter_unpack`` and ``str.split``.  A forged file cannot execute
anything, but it can lie about a layer's content: the cache must be writable
only by the canrun user.

Layer index: JSON meta (digest, size, entry count, exec headers, kept-file
names and sizes), one ``_RECORD`` per entry, the paths, the symlink/hardlink
targets, the kept-file bytes.  Loading 60k entries is dominated by building
the ``Entry`` objects.

Merged view: JSON meta (manifest digest, snapshotter, layer digests, node count, kept-file
names), one ``frozen.NODE_RECORD`` per node, NUL-joined paths, symlink
targets, hardlink origins, exec headers (JSON, as in the layer format),
kept-file bytes, removed paths and the layer that removed each, with zstd's
content checksum.  ``decode_view`` checks sizes and type codes and builds
only the path index; ``FrozenMergedFS`` builds nodes on lookup.  A manifest
digest fixes its layers, so a view never goes stale, except when the merge
rules in ``image/fs.py`` change: bump ``VIEW_VERSION`` then (an old version
does not decode, which the cache treats as a miss).
"""

from __future__ import annotations

import gc
import json
import struct
from collections.abc import Iterable, Mapping
from typing import Protocol

import zstandard

from canrun.image.frozen import NODE_HAS_EXEC, NODE_HAS_HARDLINK, NODE_HAS_LINK, NODE_RECORD, FrozenMergedFS, FrozenNodes
from canrun.image.layer import make_entry
from canrun.image.layout import OVERLAYFS
from canrun.image.model import (ENTRY_TYPE_CODES, ENTRY_TYPES, ElfInfo, Entry, ExecInfo, LayerIndex, ScriptInfo,
                                UnknownFormat)
from canrun.image.node import Node

FORMAT_MAGIC = b"CRLI"
FORMAT_VERSION = 1
VIEW_MAGIC = b"CRFV"
#: Bump whenever MergedFS's merge rules change: a view saved by other rules would answer differently.
#: 2: the snapshotter (overlayfs or native) is part of the view.
VIEW_VERSION = 2
_VIEW_SECTIONS = 9

_PREAMBLE = struct.Struct("<4sH")
_SECTION = struct.Struct("<I")
# type code, flags (bit 0: has link), mode, uid, gid, size
_RECORD = struct.Struct("<BBHQQQ")
_HAS_LINK = 1


class CorruptRecord(Exception):
    """A cached file that does not decode: the cache treats it as a miss and removes it."""


def _sections(payload: bytes, count: int) -> list[bytes]:
    sections: list[bytes] = []
    pos = 0
    for _ in range(count):
        (length,) = _SECTION.unpack_from(payload, pos)
        pos += _SECTION.size
        if pos + length > len(payload):
            raise CorruptRecord("section")
        sections.append(payload[pos : pos + length])
        pos += length
    if pos != len(payload):
        raise CorruptRecord("trailing data")
    return sections


def _kept_files(names_and_sizes: list[list[object]], data: bytes) -> dict[str, bytes]:
    """The kept files (``/etc/passwd`` …), stored back to back in one section."""
    files: dict[str, bytes] = {}
    offset = 0
    for name, size in names_and_sizes:
        if not isinstance(size, int):
            raise CorruptRecord("file size")
        files[str(name)] = data[offset : offset + size]
        offset += size
    if offset != len(data):
        raise CorruptRecord("files")
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
        raise CorruptRecord("exec index")
    if kind == "elf":
        cls, little, machine, interp, etype = item[2:7]
        return index, ElfInfo(int(cls), bool(little), int(machine), None if interp is None else str(interp), int(etype))  # type: ignore[arg-type]
    if kind == "script":
        interp, arg, line = item[2:5]
        return index, ScriptInfo(str(interp), None if arg is None else str(arg), str(line))
    if kind == "unknown":
        return index, UnknownFormat(bytes.fromhex(str(item[2])))
    raise CorruptRecord(f"exec kind {kind!r}")


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def encode_index(index: LayerIndex) -> bytes:
    """Serialise a LayerIndex (format documented in the module docstring)."""
    records = bytearray()
    pack = _RECORD.pack
    codes = ENTRY_TYPE_CODES
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
    """Inverse of ``encode_index``; raises ``CorruptRecord`` on anything unexpected.

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
            raise CorruptRecord("format")
        payload = zstandard.ZstdDecompressor().decompress(blob[_PREAMBLE.size :], max_output_size=1 << 30)
        sections = _sections(payload, 5)
        meta = json.loads(sections[0])
        count = meta["count"]
        if digest is not None and meta["digest"] != digest:
            raise CorruptRecord("digest")
        if len(sections[1]) != count * _RECORD.size:
            raise CorruptRecord("records")
        paths = sections[2].decode("utf-8", "surrogateescape").split("\0") if count else []
        links = sections[3].decode("utf-8", "surrogateescape").split("\0")
        if len(paths) != count:
            raise CorruptRecord("paths")
        execs = dict(_exec_from_json(item) for item in meta["exec"])
        types = ENTRY_TYPES
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
    except CorruptRecord:
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
        raise CorruptRecord(str(exc)) from exc


# --------------------------------------------------------------------------- merged views
class SavedView(Protocol):
    """What ``encode_view`` reads from a merged view (``MergedFS`` and ``FrozenMergedFS`` both answer it)."""

    layer_digests: list[str]

    def nodes(self) -> Iterable[Node]: ...

    def kept_files(self) -> Mapping[str, bytes]: ...

    def removals(self) -> Mapping[str, int]: ...


def _split(section: bytes, count: int) -> list[str]:
    items = section.decode("utf-8", "surrogateescape").split("\0") if count else []
    if len(items) != count:
        raise CorruptRecord("string table")
    return items


def encode_view(fs: SavedView, digest: str, snapshotter: str = OVERLAYFS) -> bytes:
    """Serialise a merged view saved for platform manifest ``digest`` (format in the module docstring)."""
    records = bytearray()
    pack = NODE_RECORD.pack
    codes = ENTRY_TYPE_CODES
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
        "snapshotter": snapshotter,
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


def decode_view(blob: bytes, digest: str | None = None, snapshotter: str | None = None) -> FrozenMergedFS:
    """Inverse of ``encode_view``; raises ``CorruptRecord`` on anything unexpected.

    Only what every lookup needs is done here (decompress, split the path
    list, index it); nodes and exec headers are decoded on first use.  The
    zstd checksum and the table checks below catch a damaged file now, not
    halfway through a check.
    """
    try:
        magic, version = _PREAMBLE.unpack_from(blob)
        if magic != VIEW_MAGIC or version != VIEW_VERSION:
            raise CorruptRecord("format")
        payload = zstandard.ZstdDecompressor().decompress(blob[_PREAMBLE.size :], max_output_size=1 << 30)
        sections = _sections(payload, _VIEW_SECTIONS)
        meta = json.loads(sections[0])
        if digest is not None and meta["digest"] != digest:
            raise CorruptRecord("digest")
        if snapshotter is not None and meta["snapshotter"] != snapshotter:
            raise CorruptRecord("snapshotter")
        count = meta["count"]
        records = sections[1]
        if not isinstance(count, int) or len(records) != count * NODE_RECORD.size:
            raise CorruptRecord("records")
        if count and max(records[0 :: NODE_RECORD.size]) >= len(ENTRY_TYPES):
            raise CorruptRecord("type code")
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
            except (CorruptRecord, ValueError, TypeError, IndexError) as exc:
                raise KeyError(f"exec headers: {exc}") from exc  # FrozenNodes reports it as ImageCorrupt

        return FrozenMergedFS(FrozenNodes(paths, records, links, hardlinks, load_execs), files, removed,
                              layer_digests)
    except CorruptRecord:
        raise
    except (struct.error, zstandard.ZstdError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise CorruptRecord(str(exc)) from exc


__all__ = ["CorruptRecord", "FORMAT_VERSION", "SavedView", "VIEW_VERSION", "decode_index", "decode_view",
           "encode_index", "encode_view"]
