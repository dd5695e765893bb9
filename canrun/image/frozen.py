"""A merged view loaded from the view cache: nodes packed in one record table, built only when looked up.

A warm check of a 60k-path image looks at a few dozen paths, so the view the
cache hands back (``image/codec.decode_view``) keeps its nodes as one packed
record per path and turns a record into a ``Node`` on first lookup (then
memoises it, so ``lookup(p) is lookup(p)``).  It answers every read exactly as
the ``MergedFS`` it was saved from; it has no way to apply a layer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence

from canrun.errors import ImageCorrupt
from canrun.image.model import ENTRY_TYPES, ExecInfo
from canrun.image.node import Node, Opaque
from canrun.image.walk import RootView, removed_by

#: One node of a frozen view: type code (``model.ENTRY_TYPES``), flags (``NODE_HAS_*``), mode, uid, gid,
#: size, layer, index into the links, into the hardlink origins (0 when the flag is unset).
NODE_RECORD = struct.Struct("<BBHQQQiII")
NODE_HAS_LINK, NODE_HAS_HARDLINK, NODE_HAS_EXEC = 1, 2, 4


class FrozenNodes:
    """Read-only ``path -> Node`` over a packed record table; nodes are built on first access and memoised.

    ``paths[i]`` is described by record ``i`` of ``records`` (``NODE_RECORD``);
    ``load_execs`` returns {record index: ExecInfo} and is called at most once,
    when the first node with an exec header is built.
    """

    __slots__ = ("_paths", "_index", "_records", "_links", "_hardlinks", "_load_execs", "_execs", "_memo")

    def __init__(self, paths: list[str], records: bytes, links: Sequence[str], hardlinks: Sequence[str],
                 load_execs: Callable[[], Mapping[int, ExecInfo]]) -> None:
        if len(records) != len(paths) * NODE_RECORD.size:
            raise ValueError("the record table does not match the path list")
        self._paths = paths
        self._index: dict[str, int] = dict(zip(paths, range(len(paths))))
        if len(self._index) != len(paths):
            raise ValueError("duplicate paths")
        self._records = records
        self._links = links
        self._hardlinks = hardlinks
        self._load_execs = load_execs
        self._execs: Mapping[int, ExecInfo] | None = None
        self._memo: dict[str, Node] = {}

    def _build(self, i: int, path: str) -> Node:
        code, flags, mode, uid, gid, size, layer, link, hardlink = NODE_RECORD.unpack_from(self._records,
                                                                                          i * NODE_RECORD.size)
        try:
            exec_info = None
            if flags & NODE_HAS_EXEC:
                if self._execs is None:
                    self._execs = self._load_execs()
                exec_info = self._execs[i]
            return Node(path, ENTRY_TYPES[code], mode, uid, gid, size,
                        self._links[link] if flags & NODE_HAS_LINK else None, exec_info, layer,
                        self._hardlinks[hardlink] if flags & NODE_HAS_HARDLINK else None)
        except (IndexError, KeyError, ValueError) as exc:
            # The cache checks its file whole (zstd checksum, table sizes) before this runs, so only a
            # file forged to pass those gets here; name it rather than fail with a traceback.
            raise ImageCorrupt(f"the cached merged view holds a broken record for {path!r} ({exc!r}); "
                               "delete the canrun cache directory") from exc

    def get(self, path: str) -> Node | None:
        node = self._memo.get(path)
        if node is not None:
            return node
        i = self._index.get(path)
        if i is None:
            return None
        node = self._memo[path] = self._build(i, path)
        return node

    def __contains__(self, path: object) -> bool:
        return path in self._index

    def __len__(self) -> int:
        return len(self._paths)

    def paths(self) -> list[str]:
        return self._paths


class FrozenMergedFS(RootView):
    """Every read of ``MergedFS`` over a ``FrozenNodes`` table; directory listings derived on first use."""

    def __init__(self, nodes: FrozenNodes, files: Mapping[str, bytes], removed: Mapping[str, int],
                 layer_digests: Sequence[str]) -> None:
        if "/" not in nodes:
            raise ValueError("a merged view without a root")
        self._nodes = nodes
        self._files = dict(files)
        self._removed = dict(removed)
        self.layer_digests = list(layer_digests)
        self._listing: dict[str, list[str]] | None = None

    # ------------------------------------------------------------------ Tree
    def node(self, path: str) -> Node | Opaque | None:
        return self._nodes.get(path)

    def children(self, path: str) -> list[str]:
        if self._listing is None:
            listing: dict[str, list[str]] = {}
            for p in self._nodes.paths():
                if p != "/":
                    cut = p.rfind("/")
                    listing.setdefault(p[:cut] if cut > 0 else "/", []).append(p[cut + 1:])
            self._listing = listing
        return sorted(self._listing.get(path, ()))

    def removed_by(self, path: str) -> int | None:
        return removed_by(self._removed, path)

    def kept_bytes(self, path: str) -> bytes | None:
        return self._files.get(path)

    # ------------------------------------------------------------------ what the cache and inspect read
    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, path: object) -> bool:
        return path in self._nodes

    def paths(self) -> Iterable[str]:
        return self._nodes.paths()

    def nodes(self) -> Iterable[Node]:
        get = self._nodes.get
        return (get(p) for p in self._nodes.paths())  # type: ignore[misc]

    def kept_files(self) -> Mapping[str, bytes]:
        return self._files

    def removals(self) -> Mapping[str, int]:
        return self._removed


__all__ = ["FrozenMergedFS", "FrozenNodes", "NODE_HAS_EXEC", "NODE_HAS_HARDLINK", "NODE_HAS_LINK", "NODE_RECORD"]
