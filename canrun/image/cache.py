"""The on-disk cache: layer indexes, merged views, verified blobs, short-lived tag lookups.

Layout of the keys (the file store puts each under its root, default
``$CANRUN_CACHE_DIR`` or ``~/.cache/canrun``)::

    layers/sha256/<hex>.idx    LayerIndex (``image/codec.py``)
    views/sha256/<hex>.<snapshotter>.fsv
                               merged view of a platform manifest as that snapshotter lays it out (``image/codec.py``)
    blobs/sha256/<hex>         manifest/config bytes, re-verified against the name on read
    tags/<sha256 of key>.json  {"key", "digest", "media_type", "stored"}: TTL-bound

``Cache`` decides what is kept under which key and what a hit must satisfy;
where the bytes live is a ``BlobStore``: four calls (read, write, discard,
prune).  A second, ``shared`` store (``image/redis_store.py``, one for every
replica) may sit beside the local one: every record is written to both and
read from the local store first, then the shared one; a shared hit is
verified like a local one and then copied to the local store.  Anything
unreadable (truncated, corrupt, an older format version, a blob whose hash
does not match) is a miss in the store it came from: the record is discarded
there and the next store (or the registry) is asked.

``FileStore``: every write goes to a temp file in the target directory and is
``os.replace``d into place, so a reader sees the old file, the new one or none,
never a torn one, across processes and webhook replicas sharing a volume.  No
fsync: a crash leaves at worst a corrupt file, which is a miss.  The directory
is created 0700: a forged index cannot execute anything, but it can lie about
a layer.  ``max_bytes`` (default 2 GiB) bounds it; when a write finds the last
pruning older than ``PRUNE_INTERVAL`` it deletes least-recently-used files
(reads refresh mtime) down to 80% of the bound.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from canrun.image.codec import CorruptRecord, SavedView, decode_index, decode_view, encode_index, encode_view
from canrun.image.frozen import FrozenMergedFS
from canrun.image.layout import OVERLAYFS
from canrun.image.model import LayerIndex
from canrun.registry.reference import HASHES, is_digest

T = TypeVar("T")

DEFAULT_TAG_TTL = 300.0
DEFAULT_MAX_BYTES = 2 << 30
PRUNE_INTERVAL = 600.0

_KINDS = ("layers", "views", "blobs", "tags")


def default_root() -> Path:
    env = os.environ.get("CANRUN_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "canrun"


class BlobStore(Protocol):
    """Where the cache's records live, by key (``layers/sha256/<hex>.idx`` …).  Safe across processes."""

    def read(self, key: str, *, touch: bool = True) -> bytes | None:
        """The record, or None; ``touch`` marks it recently used."""

    def write(self, key: str, data: bytes) -> None:
        """Store atomically; a store that cannot write is not an error, only slower."""

    def discard(self, key: str) -> None:
        """Forget a record (a corrupt one, or one its reader found inconsistent)."""

    def prune(self, max_bytes: int | None = None) -> int:
        """Drop least-recently-used records until under the bound; returns the bytes freed."""


class FileStore:
    """A ``BlobStore`` in a directory, shared safely by processes through atomic renames."""

    def __init__(self, root: Path | str | None = None, *, max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.max_bytes = max_bytes

    def path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str, *, touch: bool = True) -> bytes | None:
        path = self.path(key)
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

    def write(self, key: str, data: bytes) -> None:
        path = self.path(key)
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

    def discard(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except OSError:
            pass

    def prune(self, max_bytes: int | None = None) -> int:
        limit = self.max_bytes if max_bytes is None else max_bytes
        if limit is None:
            return 0
        files: list[tuple[float, int, Path]] = []
        for sub in _KINDS:
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


class Cache:
    """The cache's records and what a hit must satisfy.  Every method is safe to call from several processes."""

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        tag_ttl: float = DEFAULT_TAG_TTL,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        store: BlobStore | None = None,
        shared: BlobStore | None = None,
    ) -> None:
        self.store: BlobStore = store if store is not None else FileStore(root, max_bytes=max_bytes)
        #: The store every replica shares (Redis), read after ``store`` misses; None: local only.
        self.shared = shared
        self.tag_ttl = tag_ttl

    def _read(self, key: str, accept: Callable[[bytes], T | None], *, touch: bool = True) -> T | None:
        """The first record of ``key`` that ``accept`` takes (local store, then shared), or None.

        ``accept`` returns the decoded value, None for a record that is sound but not usable (an expired
        tag), or raises ``CorruptRecord``: that record is discarded from its store.  A shared record
        accepted is copied, byte for byte, to the local store.
        """
        for store in (self.store, self.shared):
            if store is None:
                continue
            data = store.read(key, touch=touch)
            if data is None:
                continue
            try:
                value = accept(data)
            except CorruptRecord:
                store.discard(key)
                continue
            if value is None:
                continue
            if store is self.shared:
                self.store.write(key, data)
            return value
        return None

    def _write(self, key: str, data: bytes) -> None:
        self.store.write(key, data)
        if self.shared is not None:
            self.shared.write(key, data)

    def _discard(self, key: str) -> None:
        self.store.discard(key)
        if self.shared is not None:
            self.shared.discard(key)

    def close(self) -> None:
        """Let the shared store finish (a bounded wait for its queued writes) and release it."""
        close = getattr(self.shared, "close", None)
        if close is not None:
            close()

    @property
    def root(self) -> Path | None:
        """The directory of a file store (None for another store)."""
        return self.store.root if isinstance(self.store, FileStore) else None

    # ------------------------------------------------------------ layer indexes
    def get_layer(self, digest: str) -> LayerIndex | None:
        return self._get_decoded("layers", digest, ".idx", decode_index)

    def put_layer(self, index: LayerIndex) -> None:
        self._put_encoded("layers", index.digest, ".idx", lambda: encode_index(index))

    # ------------------------------------------------------------ merged views
    def get_view(self, manifest_digest: str, snapshotter: str = OVERLAYFS) -> FrozenMergedFS | None:
        """The merged filesystem saved for a platform manifest and snapshotter, read-only and decoded lazily."""
        return self._get_decoded("views", manifest_digest, f".{snapshotter}.fsv",
                                 lambda data, digest: decode_view(data, digest, snapshotter))

    def put_view(self, manifest_digest: str, fs: SavedView, snapshotter: str = OVERLAYFS) -> None:
        """Save ``fs``, merged from every layer of ``manifest_digest``, only after those layers were checked."""
        self._put_encoded("views", manifest_digest, f".{snapshotter}.fsv",
                          lambda: encode_view(fs, manifest_digest, snapshotter))

    def discard_view(self, manifest_digest: str, snapshotter: str = OVERLAYFS) -> None:
        """Drop a view its caller found inconsistent with the manifest (a miss from then on)."""
        key = content_key("views", manifest_digest, f".{snapshotter}.fsv")
        if key is not None:
            self._discard(key)

    def _get_decoded(self, kind: str, digest: str, suffix: str, decode: Callable[[bytes, str], T]) -> T | None:
        """A derived record by digest; anything undecodable is a miss, and removed."""
        key = content_key(kind, digest, suffix)
        if key is None:
            return None
        return self._read(key, lambda data: decode(data, digest))

    def _put_encoded(self, kind: str, digest: str, suffix: str, encode: Callable[[], bytes]) -> None:
        key = content_key(kind, digest, suffix)
        if key is None:
            return
        try:
            data = encode()
        except (struct.error, OverflowError, ValueError):
            return  # a record the format cannot hold (a number beyond its field) is not cached: only slower
        self._write(key, data)

    # ------------------------------------------------------------ blobs
    def get_blob(self, digest: str) -> bytes | None:
        """A manifest or config by digest, re-hashed on read: a tampered record is a miss."""
        key = content_key("blobs", digest, "")
        if key is None:
            return None

        def verified(data: bytes) -> bytes:
            if not _matches(digest, data):
                raise CorruptRecord(f"content does not match {digest}")
            return data

        return self._read(key, verified)

    def put_blob(self, digest: str, data: bytes) -> None:
        """Store verified content; content that does not match ``digest`` is refused (ValueError)."""
        key = content_key("blobs", digest, "")
        if key is None:
            return
        if not _matches(digest, data):
            raise ValueError(f"refusing to cache content that does not match {digest}")
        self._write(key, data)

    # ------------------------------------------------------------ tags
    def get_tag(self, key: str, *, ttl: float | None = None) -> tuple[str, str] | None:
        """(digest, media type) stored for a tag reference less than ``ttl`` seconds ago."""
        limit = self.tag_ttl if ttl is None else ttl

        def fresh(data: bytes) -> tuple[str, str] | None:
            try:
                record = json.loads(data)
                stored, digest, media_type = float(record["stored"]), record["digest"], record["media_type"]
                if record["key"] != key or not isinstance(digest, str) or not isinstance(media_type, str) \
                        or not is_digest(digest):
                    raise ValueError("mismatched record")
            except (ValueError, KeyError, TypeError) as exc:
                raise CorruptRecord(str(exc)) from exc
            age = time.time() - stored
            if age > limit or age < -60:
                return None
            return digest, media_type

        return self._read(tag_key(key), fresh, touch=False)

    def put_tag(self, key: str, digest: str, media_type: str) -> None:
        record = {"key": key, "digest": digest, "media_type": media_type, "stored": time.time()}
        self._write(tag_key(key), json.dumps(record).encode())

    # ------------------------------------------------------------ housekeeping
    def prune(self, max_bytes: int | None = None) -> int:
        """Delete least-recently-used records until the cache is under ``max_bytes``; returns bytes freed."""
        return self.store.prune(max_bytes)


def content_key(kind: str, digest: str, suffix: str) -> str | None:
    """``kind/<algorithm>/<hex><suffix>``, or None for a digest we did not validate (no traversal, odd algorithms)."""
    if not is_digest(digest):
        return None
    algorithm, _, hexpart = digest.partition(":")
    return f"{kind}/{algorithm}/{hexpart}{suffix}"


def tag_key(key: str) -> str:
    return "tags/" + hashlib.sha256(key.encode()).hexdigest() + ".json"


def _matches(digest: str, data: bytes) -> bool:
    algorithm, _, expected = digest.partition(":")
    return HASHES[algorithm](data).hexdigest() == expected


__all__ = ["BlobStore", "Cache", "FileStore", "content_key", "decode_index", "decode_view", "default_root",
           "encode_index", "encode_view"]
