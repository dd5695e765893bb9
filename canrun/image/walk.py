"""Path resolution inside an image's root with the kernel's rules, over any view that answers four reads.

``resolve`` walks a path component by component as the kernel's ``path_walk``
does, for a given set of credentials: search permission on every directory,
symlinks followed inside the root (absolute targets restart at the root,
``..`` stops at it), at most 40 symlinks per lookup (ELOOP), ENOENT and
ENOTDIR where the kernel says so.  It returns every hop, so ``canrun inspect``
can show how a path was reached and the checks can say why it was not.

The walk needs only ``Tree``: the node at a real path, a directory's children,
the layer that removed a path and the kept bytes of a file.  Three views
answer it: the view being merged from layers (``image/fs.MergedFS``), the view
loaded from the cache (``image/frozen.FrozenMergedFS``) and the image nobody
could read (``checks/imageless.UnknownImageFS``).  ``RootView`` gives each of
them the derived reads (``resolve``, ``file``, ``real_path``, ``lookup``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from canrun.image.model import EntryType
from canrun.image.node import Node, Opaque, ancestors, clean, components, join, parent_of

#: The kernel's MAXSYMLINKS: the 41st symlink of one lookup fails with ELOOP.
MAX_SYMLINKS = 40
#: containerd's RootPath gives up after this many links while unpacking.
ROOTPATH_MAX_LINKS = 255
#: The most components one lookup can make the kernel walk: the path and 40 symlink bodies, each shorter than
#: PATH_MAX (4096 bytes: symlink(2) refuses longer targets, so no unpacked layer holds one), at one component
#: per two bytes (``./``).  A walk past it cannot be the kernel's; it stops there (UNKNOWN, with a reason).
MAX_WALK_COMPONENTS = (MAX_SYMLINKS + 1) * 2048

# Capability names (without the CAP_ prefix) that bypass discretionary access checks.
CAP_DAC_OVERRIDE = "DAC_OVERRIDE"
CAP_DAC_READ_SEARCH = "DAC_READ_SEARCH"

_DIR, _FILE, _SYMLINK = EntryType.DIR, EntryType.FILE, EntryType.SYMLINK

#: Outcomes of a resolution, named after the errno the kernel would return.
OK, ENOENT, ENOTDIR, ELOOP, EACCES, UNKNOWN = "ok", "ENOENT", "ENOTDIR", "ELOOP", "EACCES", "UNKNOWN"


class Tree(Protocol):
    """The four reads a path walk needs from a view of the root filesystem."""

    def node(self, path: str) -> Node | Opaque | None:
        """The node stored at a real path (no link following), Opaque if unknowable, None if absent."""

    def children(self, path: str) -> list[str]:
        """The names in the directory at a real path, sorted."""

    def removed_by(self, path: str) -> int | None:
        """The 0-based layer whose whiteout deleted ``path`` (or one of its ancestors), if one did."""

    def kept_bytes(self, path: str) -> bytes | None:
        """The bytes of a kept file (``/etc/passwd`` …) stored at a real path."""


class Mount(Protocol):
    """Something mounted over the image at ``path`` (a pod volume, a runtime tmpfs)."""

    path: str
    name: str

    def node(self, rel: str) -> Node | Opaque | None:
        """The node at ``rel`` inside the mount ("" is the mount root), Opaque if unknowable, None if absent."""


@dataclass(frozen=True)
class Credentials:
    """Who walks and execs: the process's fsuid/fsgid, supplementary groups and effective capabilities."""

    uid: int = 0
    gid: int = 0
    groups: frozenset[int] = frozenset()
    caps: frozenset[str] = frozenset({CAP_DAC_OVERRIDE})

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.groups

    def without(self, *caps: str) -> Credentials:
        return Credentials(self.uid, self.gid, self.groups, self.caps - set(caps))

    def with_caps(self, *caps: str) -> Credentials:
        return Credentials(self.uid, self.gid, self.groups, self.caps | set(caps))

    def describe(self) -> str:
        groups = sorted(self.groups - {self.gid})
        extra = f" groups {','.join(map(str, groups))}" if groups else ""
        return f"uid {self.uid} gid {self.gid}{extra}"


ROOT = Credentials()

MAY_EXEC = 1


def permission(node: Node, creds: Credentials) -> tuple[bool, bool]:
    """The kernel's ``generic_permission`` for MAY_EXEC (search on directories, execute on files).

    Exactly one class applies: owner if the uid matches, else group if any of
    the process's gids matches, else other.  Returns (allowed, allowed_only_by_a_capability).
    CAP_DAC_OVERRIDE grants search on any directory and exec on a file with
    *any* x bit; CAP_DAC_READ_SEARCH grants search on directories.
    """
    mode = node.mode
    if creds.uid == node.uid:
        bits = (mode >> 6) & 7
    elif creds.in_group(node.gid):
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    if bits & MAY_EXEC:
        return True, False
    caps = creds.caps
    if node.type is _DIR:
        if CAP_DAC_OVERRIDE in caps or CAP_DAC_READ_SEARCH in caps:
            return True, True
        return False, False
    if CAP_DAC_OVERRIDE in caps and mode & 0o111:
        return True, True
    return False, False


@dataclass(frozen=True)
class Hop:
    """One symlink followed: the link's real path and its raw target."""

    link: str
    target: str


@dataclass
class Resolution:
    """How a path resolved: the final node or the errno, with every symlink hop on the way."""

    path: str
    cwd: str
    outcome: str
    #: Real path reached (for failures: the path that failed: the missing name, the unsearchable dir …).
    real: str
    node: Node | None = None
    hops: list[Hop] = field(default_factory=list)
    #: The directory whose search permission was refused (EACCES), or the non-directory (ENOTDIR).
    blocker: Node | None = None
    #: The mount that made the outcome UNKNOWN (or that the final node comes from).
    mount: Mount | None = None
    #: Some directory was searchable only through CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH.
    used_capability: bool = False
    #: Why an UNKNOWN outcome that no mount caused is unknown (the walk ran out of work).
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == OK


def root_path(lookup: Callable[[str], Node | Opaque | None], path: str) -> str:
    """containerd's ``fs.RootPath``: follow symlinks that exist, keep missing components literally.

    ``lookup`` answers the node at a real path; what it cannot tell (Opaque) is
    kept literally, so over an unread image this only normalises.
    """
    node = lookup(path)
    if isinstance(node, Node) and node.type is _DIR:
        return path
    pending = components(path)
    pending.reverse()
    current = "/"
    links = 0
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            current = parent_of(current)
            continue
        child = join(current, name)
        node = lookup(child)
        if isinstance(node, Node) and node.type is _SYMLINK:
            links += 1
            if links > ROOTPATH_MAX_LINKS:
                return child
            target = node.link or ""
            parts = components(target)
            parts.reverse()
            pending.extend(parts)
            if target.startswith("/"):
                current = "/"
            continue
        current = child
    return current


def root_path_memo(lookup: Callable[[str], Node | Opaque | None], memo: dict[str, str], path: str) -> str:
    """``root_path`` of a clean absolute path, resolved one component at a time over memoised prefixes.

    RootPath(a/b/c) is RootPath(RootPath(a/b)/c): a prefix resolves the same
    whatever follows it, so while the tree's symlinks stay as they are (the
    caller clears ``memo`` when one is added or a node removed) each prefix is
    resolved once, however many entries sit under it and however long the
    symlink chain it goes through.
    """
    if path == "/":
        return "/"
    hit = memo.get(path)
    if hit is not None:
        return hit
    comps = components(path)
    start, current = 0, "/"
    for i in range(len(comps) - 1, 0, -1):
        found = memo.get("/" + "/".join(comps[:i]))
        if found is not None:
            start, current = i, found
            break
    for j in range(start, len(comps)):
        current = root_path(lookup, join(current, comps[j]))
        memo["/" + "/".join(comps[:j + 1])] = current
    return current


def removed_by(removals: Mapping[str, int], path: str) -> int | None:
    """The layer that removed ``path`` or its nearest removed ancestor, from a ``real path -> layer`` table."""
    current = path
    while True:
        layer = removals.get(current)
        if layer is not None:
            return layer
        if current == "/":
            return None
        current = parent_of(current)


class WalkBudget:
    """Path components several lookups may walk together (one container's judgement): work stays bounded
    however many ``PATH`` entries lead through however many padded symlinks."""

    __slots__ = ("left", "total")

    def __init__(self, components: int) -> None:
        self.left = self.total = components


def resolve(tree: Tree, path: str, cwd: str = "/", *, creds: Credentials = ROOT, follow: bool = True,
            mounts: Sequence[Mount] = (), budget: WalkBudget | None = None) -> Resolution:
    """Walk ``path`` as the kernel does for ``creds``, with ``mounts`` laid over ``tree``.

    The walk visits at most ``MAX_WALK_COMPONENTS`` components, and no more
    than ``budget`` has left; past either it stops with UNKNOWN and a reason.
    """
    return _Walk(tree, creds, mounts, budget).walk(path, cwd, follow)


def read_file(tree: Tree, path: str) -> bytes | None:
    """Contents of a kept file (``/etc/passwd``, ``/etc/group``), following symlinks as root."""
    res = resolve(tree, path)
    if not res.ok or res.node is None or res.node.type is not _FILE:
        return None
    return tree.kept_bytes(res.node.path)


class RootView(ABC):
    """A view of an image's root filesystem: the ``Tree`` reads plus what every view derives from them."""

    #: The layers the view was merged from, bottom first.
    layer_digests: list[str]

    @abstractmethod
    def node(self, path: str) -> Node | Opaque | None: ...

    @abstractmethod
    def children(self, path: str) -> list[str]: ...

    @abstractmethod
    def removed_by(self, path: str) -> int | None: ...

    @abstractmethod
    def kept_bytes(self, path: str) -> bytes | None: ...

    def lookup(self, path: str) -> Node | None:
        """The node stored at a real path (no link following, no permission checks)."""
        node = self.node(clean(path))
        return node if isinstance(node, Node) else None

    def real_path(self, path: str) -> str:
        """The path with every existing symlink followed inside the root (missing parts kept)."""
        return root_path(self.node, clean(path))

    def file(self, path: str) -> bytes | None:
        return read_file(self, path)

    def resolve(self, path: str, cwd: str = "/", *, creds: Credentials = ROOT, follow: bool = True,
                mounts: Sequence[Mount] = (), budget: WalkBudget | None = None) -> Resolution:
        return resolve(self, path, cwd, creds=creds, follow=follow, mounts=mounts, budget=budget)


class _Walk:
    """The state of one lookup."""

    def __init__(self, tree: Tree, creds: Credentials, mounts: Sequence[Mount], budget: WalkBudget | None) -> None:
        self.tree = tree
        self.creds = creds
        self.budget = budget
        self.steps = 0
        self.mounts = sorted(mounts, key=lambda m: len(m.path), reverse=True)
        self._mount_dirs: set[str] = set()
        for m in self.mounts:
            self._mount_dirs.update(ancestors(m.path))

    def node_at(self, path: str) -> tuple[Node | Opaque | None, Mount | None]:
        for m in self.mounts:
            if path == m.path:
                return m.node(""), m
            if path.startswith(m.path + "/") or m.path == "/":
                return m.node(path[len(m.path) + 1:] if m.path != "/" else path[1:]), m
        node = self.tree.node(path)
        if node is None and path in self._mount_dirs:
            # runc creates missing mount points (and their parents) as root-owned directories
            return Node(path, _DIR, 0o755), None
        return node, None

    def walk(self, path: str, cwd: str, follow: bool) -> Resolution:
        res = Resolution(path=path, cwd=cwd, outcome=OK, real="/")
        if not path:
            res.outcome, res.real = ENOENT, ""
            return res
        trailing_slash = path.endswith("/")
        if path.startswith("/"):
            current = "/"
        else:
            base = self.walk(cwd or "/", "/", True)
            if base.outcome == ENOENT:
                # runc creates a missing working directory (root-owned 0755) before it execs
                current = clean(cwd)
                self._mount_dirs.add(current)
                self._mount_dirs.update(ancestors(current))
            elif not base.ok:
                base.path, base.cwd = path, cwd
                return base
            else:
                current = base.real
                res.used_capability = base.used_capability
        pending = components(path)
        pending.reverse()
        links = 0
        current_node, _ = self.node_at(current)
        budget = self.budget
        while pending:
            name = pending.pop()
            self.steps += 1
            if self.steps > MAX_WALK_COMPONENTS or (budget is not None and budget.left <= 0):
                res.outcome, res.real = UNKNOWN, current
                res.reason = (f"resolving {path} walks more than {MAX_WALK_COMPONENTS} path components, more "
                              f"than the kernel ever walks for one lookup" if self.steps > MAX_WALK_COMPONENTS else
                              f"judging this container took more than {budget.total if budget else 0} path "
                              f"components of lookups (symlinks padded with ./, a PATH of many entries), the "
                              f"most canrun spends on one container")
                return res
            if budget is not None:
                budget.left -= 1
            # may_lookup: search permission on the directory we are in
            if isinstance(current_node, Node):
                allowed, by_cap = permission(current_node, self.creds)
                if not allowed:
                    res.outcome, res.real, res.blocker = EACCES, current, current_node
                    return res
                res.used_capability |= by_cap
            if name == ".":
                continue
            if name == "..":
                current = parent_of(current)
                current_node, _ = self.node_at(current)
                continue
            child = join(current, name)
            node, mount = self.node_at(child)
            if isinstance(node, Opaque):
                res.outcome, res.real, res.mount = UNKNOWN, child, mount
                return res
            if node is None:
                res.outcome, res.real, res.mount = ENOENT, child, mount
                return res
            last = not pending
            if node.type is _SYMLINK and (not last or follow or trailing_slash):
                links += 1
                if links > MAX_SYMLINKS:
                    res.outcome, res.real = ELOOP, child
                    return res
                target = node.link or ""
                res.hops.append(Hop(child, target))
                if not target:
                    res.outcome, res.real = ENOENT, child
                    return res
                parts = components(target)
                parts.reverse()
                pending.extend(parts)
                if target.startswith("/"):
                    current = "/"
                    current_node, _ = self.node_at("/")
                continue
            if not last and node.type is not _DIR:
                res.outcome, res.real, res.blocker = ENOTDIR, child, node
                return res
            current, current_node = child, node
            res.mount = mount
        if trailing_slash and isinstance(current_node, Node) and current_node.type is not _DIR:
            res.outcome, res.real, res.blocker = ENOTDIR, current, current_node
            return res
        res.real = current
        res.node = current_node if isinstance(current_node, Node) else None
        return res


__all__ = [
    "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "Credentials", "EACCES", "ELOOP", "ENOENT", "ENOTDIR", "Hop",
    "MAX_SYMLINKS", "Mount", "OK", "ROOT", "ROOTPATH_MAX_LINKS", "Resolution", "RootView", "Tree", "UNKNOWN",
    "MAX_WALK_COMPONENTS", "WalkBudget", "permission", "read_file", "removed_by", "resolve", "root_path",
    "root_path_memo",
]
