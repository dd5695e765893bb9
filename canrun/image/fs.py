"""The merged root filesystem of an image, built from its layer indexes as the node's snapshotter lays them out.

``MergedFS.from_layers`` applies layer indexes bottom-up the way containerd's
``archive.Apply`` unpacks them (OCI whiteout semantics), for either snapshotter
(``image/layout.py``):

* ``.wh.NAME`` (a ``WHITEOUT`` entry) deletes NAME from the layers *below*;
  a layer's own entries are never hidden by its own whiteouts;
* ``.wh..wh..opq`` (``OPAQUE``) hides every lower child of its directory,
  wherever it sits in the layer's tar;
* an entry over an existing path replaces it (and its subtree), except a
  directory over a directory, which only takes the new metadata;
* missing parents are created (``mkparent``) as ``0755 root:root``.

Where the two differ is the tree an entry's parents are resolved in:

* ``native`` unpacks every layer over a copy of the ones below, so parents
  resolve through symlinks of any layer (``fs.RootPath``): ``bin/tool`` lands
  in ``/usr/bin`` on a merged-/usr image, and a hardlink may name a file of a
  lower layer (it becomes the same inode: type, mode, owner, exec header);
* ``overlayfs`` (containerd's default) unpacks every layer but the first into
  an empty upper directory of its own, so parents resolve through that
  layer's symlinks only: ``bin/tool`` over a lower ``/bin -> usr/bin`` makes a
  real ``/bin`` directory, which hides the symlink in the overlay mount
  (``/usr/bin/tool`` does not exist, ``/bin/sh`` disappears); a directory
  ``mkparent`` makes copies the metadata of the lower directory the path led
  to; a hardlink must name a file of the same layer, or ``link(2)`` fails and
  so does the pull (``ImageCorrupt``).

Nodes are kept in one dict keyed by their real path plus a set of child names
per directory, so a whole 60k-entry image merges in a fraction of a second and
removing a subtree costs only its size.  Every stored path is *real*: no
stored node has a symlink or a non-directory among its ancestors.

This is the view *being built*; ``image/frozen.py`` holds the one loaded from
the cache, and ``image/walk.py`` the path walk both answer.  The walker's
names are re-exported here: ``canrun.image.fs`` is where the rest of canrun
gets a view and what it reads from one.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping, Sequence

from canrun.errors import ImageCorrupt
from canrun.image.frozen import FrozenMergedFS, FrozenNodes
from canrun.image.layout import NATIVE, OVERLAYFS, SNAPSHOTTERS
from canrun.image.model import Entry, EntryType, LayerIndex
from canrun.image.node import NO_LAYER, Node, Opaque, components, join, parent_of
from canrun.image.walk import (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, EACCES, ELOOP, ENOENT, ENOTDIR, MAX_SYMLINKS,
                               OK, ROOT, UNKNOWN, Credentials, Hop, Mount, Resolution, RootView, Tree, permission,
                               removed_by, root_path, root_path_memo)

_FILE, _DIR, _SYMLINK, _HARDLINK = EntryType.FILE, EntryType.DIR, EntryType.SYMLINK, EntryType.HARDLINK
_WHITEOUT, _OPAQUE = EntryType.WHITEOUT, EntryType.OPAQUE
_parent, _join, _split = parent_of, join, components

class MergedFS(RootView):
    """The image's root filesystem after every layer is applied: the view being built."""

    def __init__(self, snapshotter: str = OVERLAYFS) -> None:
        if snapshotter not in SNAPSHOTTERS:
            raise ValueError(f"unknown snapshotter {snapshotter!r}: expected one of {', '.join(SNAPSHOTTERS)}")
        self.snapshotter = snapshotter
        self._nodes: dict[str, Node] = {"/": Node("/", _DIR, 0o755)}
        self._children: dict[str, set[str]] = {"/": set()}
        self._files: dict[str, bytes] = {}
        #: real path -> 0-based layer whose whiteout (or opaque marker) deleted it
        self._removed: dict[str, int] = {}
        self.layer_digests: list[str] = []
        #: literal parent path -> real path, for the merge (cleared whenever a symlink appears or a node goes)
        self._parents: dict[str, str] = {}
        #: the same for the layer being unpacked into its own directory (overlayfs)
        self._own_parents: dict[str, str] = {}

    # ------------------------------------------------------------------ building
    @classmethod
    def from_layers(cls, layers: Sequence[LayerIndex], snapshotter: str = OVERLAYFS) -> MergedFS:
        """Merge bottom-up, with the cyclic GC paused: the nodes hold no cycles, and collections over tens of
        thousands of new objects cost a fifth of the merge."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            fs = cls(snapshotter)
            for number, layer in enumerate(layers):
                fs.apply(layer, number)
            return fs
        finally:
            if enabled:
                gc.enable()

    def apply(self, layer: LayerIndex, number: int | None = None) -> None:
        """Apply one layer on top of the current state (``number``: its 0-based position)."""
        if number is None:
            number = len(self.layer_digests)
        self.layer_digests.append(layer.digest)
        if self.snapshotter == OVERLAYFS and number > 0:
            # The first layer is unpacked into an empty bind mount: the same on both snapshotters.
            self._apply_overlay(layer, number)
            return
        entries = layer.entries
        # Whiteouts first: they only ever concern lower layers.
        deletions = [e for e in entries if e.type is _WHITEOUT or e.type is _OPAQUE]
        for entry in deletions:
            if entry.type is _OPAQUE:
                directory = self._root_path(entry.path)
                node = self._nodes.get(directory)
                if node is not None and node.type is _DIR:
                    for name in list(self._children.get(directory, ())):
                        child = _join(directory, name)
                        self._remove(child)
                        self._removed[child] = number
            else:
                parent = self._root_path(_parent(entry.path))
                real = _join(parent, entry.path.rsplit("/", 1)[1])
                if real in self._nodes:
                    self._remove(real)
                self._removed[real] = number
        files = layer.files
        for entry in entries:
            kind = entry.type
            if kind is _WHITEOUT or kind is _OPAQUE:
                continue
            self._add(entry, number, files)

    def _apply_overlay(self, layer: LayerIndex, number: int) -> None:
        """One layer as containerd's overlayfs snapshotter unpacks it: into a directory of its own.

        ``own`` is that directory: what the layer has written so far (its
        entries and the parents ``mkparent`` made), by real path.  Parents are
        resolved through the layer's own symlinks only, so ``bin/tool`` over a
        lower ``/bin -> usr/bin`` makes a real ``/bin`` that hides the symlink;
        whiteouts and opaque markers are applied in tar order (overlay
        whiteouts in the upper directory, which only ever hide lower layers);
        a hard link must name a file of the same layer.
        """
        own: dict[str, Node] = {"/": self._nodes["/"]}
        self._own_parents = {}
        files = layer.files
        for entry in layer.entries:
            kind = entry.type
            if kind is _OPAQUE:
                directory = self._overlay_dir(own, entry.path)
                for name in list(self._children.get(directory, ())):
                    child = _join(directory, name)
                    if child not in own:
                        self._remove(child)
                        self._removed[child] = number
            elif kind is _WHITEOUT:
                parent = self._overlay_dir(own, _parent(entry.path))
                real = _join(parent, entry.path.rsplit("/", 1)[1])
                if real not in own:
                    if real in self._nodes:
                        self._remove(real)
                    self._removed[real] = number
            else:
                self._add(entry, number, files, own)

    def _overlay_dir(self, own: dict[str, Node], path: str) -> str:
        """The layer directory's real path for ``path``, every component made a directory there (``mkparent``).

        A component the layer lacks but a lower layer has as a directory merges
        with it; one a lower layer has as anything else (a symlink, a file) is
        hidden by the new directory, which copies the metadata of the lower
        directory the path led to (``mkparent``'s copyDirInfo), else 0755 root.
        """
        real = root_path_memo(own.get, self._own_parents, path)
        node = own.get(real)
        if node is not None and node.type is _DIR:
            return real
        nodes = self._nodes
        current = "/"
        for name in _split(real):
            child = _join(current, name)
            mine = own.get(child)
            if mine is None or mine.type is not _DIR:
                lower = nodes.get(child)
                if mine is None and lower is not None and lower.type is _DIR:
                    own[child] = lower
                else:
                    shown = nodes.get(root_path(nodes.get, child))
                    mode, uid, gid = ((shown.mode, shown.uid, shown.gid) if shown is not None and shown.type is _DIR
                                      else (0o755, 0, 0))
                    if lower is not None:
                        self._remove(child)
                        self._forget(own, child)
                    made = nodes[child] = Node(child, _DIR, mode, uid, gid)
                    self._children[child] = set()
                    self._children[current].add(name)
                    self._removed.pop(child, None)
                    own[child] = made
            current = child
        return current

    def _forget(self, own: dict[str, Node], path: str) -> None:
        """Drop ``path`` and what the layer wrote under it from ``own`` (it was just replaced)."""
        self._own_parents.clear()
        own.pop(path, None)
        prefix = path + "/"
        for stale in [p for p in own if p.startswith(prefix)]:
            del own[stale]

    def _add(self, entry: Entry, number: int, files: Mapping[str, bytes], own: dict[str, Node] | None = None) -> None:
        """Place one entry; ``own`` is the layer's directory under the overlayfs snapshotter (None: native)."""
        nodes = self._nodes
        path = entry.path
        cut = path.rfind("/")
        parent = path[:cut] if cut > 0 else "/"
        name = path[cut + 1:]
        if own is not None:
            parent = self._overlay_dir(own, parent)
            path = _join(parent, name)
        else:
            pnode = nodes.get(parent)
            if pnode is None or pnode.type is not _DIR:
                parent = self._ensure_dir(self._root_path(parent))
                path = _join(parent, name)
        kind = entry.type
        existing = nodes.get(path)
        if kind is _DIR and existing is not None and existing.type is _DIR:
            existing.mode, existing.uid, existing.gid, existing.layer = entry.mode, entry.uid, entry.gid, number
            if own is not None:
                own[path] = existing
            return
        if kind is _HARDLINK:
            target = self._link_target(entry, number, own)
            if target is None:
                return  # native: containerd's apply fails on such a layer; we keep what can be kept
            node = Node(path, target.type, target.mode, target.uid, target.gid, target.size, target.link,
                        target.exec, number, target.path)
            content = self._files.get(target.path)
        else:
            node = Node(path, kind, entry.mode, entry.uid, entry.gid, entry.size, entry.link, entry.exec, number)
            content = files.get(entry.path) if kind is _FILE else None
        if existing is not None:
            self._remove(path)
            if own is not None:
                self._forget(own, path)
        nodes[path] = node
        self._children[parent].add(name)
        if kind is _DIR:
            self._children[path] = set()
        if content is not None:
            self._files[path] = content
        self._removed.pop(path, None)
        if kind is _SYMLINK:
            self._parents.clear()
            self._own_parents.clear()
        if own is not None:
            own[path] = node

    def _link_target(self, entry: Entry, number: int, own: dict[str, Node] | None) -> Node | None:
        """The file a hard link names: anywhere in the merged root (native), in the same layer (overlayfs)."""
        link = entry.link or "/"
        if own is None:
            target = self._nodes.get(self._hardlink_path(link))
            return target if target is not None and target.type is not _DIR else None
        where = _join(root_path(own.get, _parent(link)), link.rsplit("/", 1)[1]) if link != "/" else "/"
        target = own.get(where)
        if target is None or target.type is _DIR:
            lower = self._nodes.get(self._hardlink_path(link))
            why = ("a file of a lower layer" if lower is not None and lower.type is not _DIR
                   else "nothing this layer holds")
            raise ImageCorrupt(
                f"layer {number + 1} ({self.layer_digests[number]}) cannot be unpacked by containerd's overlayfs "
                f"snapshotter: the hard link {entry.path} names {link}, {why}; the snapshotter unpacks each layer "
                f"into a directory of its own, where link(2) finds no such file, so the pull fails (rebuild the "
                f"image so the layer holds the file itself, as docker/buildkit do)")
        return target

    def _ensure_dir(self, path: str) -> str:
        """Create implied directories (0755 root:root) down to ``path``, a real path; returns it."""
        nodes = self._nodes
        node = nodes.get(path)
        if node is not None and node.type is _DIR:
            return path
        current = "/"
        for name in _split(path):
            child = _join(current, name)
            node = nodes.get(child)
            if node is None or node.type is not _DIR:
                if node is not None:
                    self._remove(child)  # containerd would fail here; a directory wins so the entry lands
                nodes[child] = Node(child, _DIR, 0o755)
                self._children[child] = set()
                self._children[current].add(name)
                self._removed.pop(child, None)
            current = child
        return current

    def _remove(self, path: str) -> None:
        node = self._nodes.pop(path, None)
        if node is None:
            return
        self._parents.clear()
        self._files.pop(path, None)
        parent = _parent(path)
        siblings = self._children.get(parent)
        if siblings is not None:
            siblings.discard(path[len(parent) + 1:] if parent != "/" else path[1:])
        if node.type is _DIR:
            stack = [path]
            while stack:
                current = stack.pop()
                for name in self._children.pop(current, ()):
                    child = _join(current, name)
                    gone = self._nodes.pop(child, None)
                    self._files.pop(child, None)
                    if gone is not None and gone.type is _DIR:
                        stack.append(child)

    def _root_path(self, path: str) -> str:
        """containerd's ``fs.RootPath`` over what is merged so far (memoised per prefix)."""
        if path != "/" and ("/." in path or "//" in path or path.endswith("/")):
            return root_path(self._nodes.get, path)  # not a clean path: the plain walk handles . and ..
        return root_path_memo(self._nodes.get, self._parents, path)

    def _hardlink_path(self, link: str) -> str:
        """The hardlink target: its parent through symlinks, its last component as is (link(2) does not follow)."""
        return _join(self._root_path(_parent(link)), link.rsplit("/", 1)[1]) if link != "/" else "/"

    # ------------------------------------------------------------------ Tree
    def node(self, path: str) -> Node | Opaque | None:
        return self._nodes.get(path)

    def children(self, path: str) -> list[str]:
        return sorted(self._children.get(path, ()))

    def removed_by(self, path: str) -> int | None:
        return removed_by(self._removed, path)

    def kept_bytes(self, path: str) -> bytes | None:
        return self._files.get(path)

    # ------------------------------------------------------------------ what the cache and inspect read
    def nodes(self) -> Iterable[Node]:
        """Every node, in ``paths()`` order (what the view cache saves)."""
        return self._nodes.values()

    def kept_files(self) -> Mapping[str, bytes]:
        """Contents of KEPT_FILES by the real path of the node holding them."""
        return self._files

    def removals(self) -> Mapping[str, int]:
        """Real path -> 0-based layer whose whiteout (or opaque marker) deleted it."""
        return self._removed

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, path: object) -> bool:
        return path in self._nodes

    def paths(self) -> Iterable[str]:
        return self._nodes.keys()


__all__ = [
    "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "Credentials", "EACCES", "ELOOP", "ENOENT", "ENOTDIR",
    "FrozenMergedFS", "FrozenNodes", "Hop", "MAX_SYMLINKS", "MergedFS", "Mount", "NATIVE",
    "NO_LAYER", "Node", "OK", "OVERLAYFS", "Opaque", "ROOT", "Resolution", "RootView", "SNAPSHOTTERS", "Tree",
    "UNKNOWN", "permission",
]
