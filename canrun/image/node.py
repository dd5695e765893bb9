"""The inode record every view of an image's root filesystem hands out, and the path arithmetic on real paths.

A *real* path is absolute, lexically clean and has no symlink or non-directory
among its ancestors: the key every view stores its nodes under.
"""

from __future__ import annotations

from dataclasses import dataclass

from canrun.image.model import EntryType, ExecInfo

#: ``Node.layer`` of nodes nobody's layer created (the root, implied parents, volume content).
NO_LAYER = -1


@dataclass(slots=True)
class Node:
    """One inode of the merged view, at its real path.

    ``layer`` is the 0-based index of the layer that last wrote it (NO_LAYER for
    implied directories); ``hardlink`` the path it was hardlinked from, if any;
    ``volume`` names the pod volume it comes from when a check overlays mounts.
    """

    path: str
    type: EntryType
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    size: int = 0
    link: str | None = None
    exec: ExecInfo | None = None
    layer: int = NO_LAYER
    hardlink: str | None = None
    volume: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.type is EntryType.DIR

    @property
    def mode_octal(self) -> str:
        return f"{self.mode & 0o7777:04o}"

    @property
    def owner(self) -> str:
        return f"{self.uid}:{self.gid}"


class Opaque:
    """What a view answers for content canrun cannot see (emptyDir, PVC, hostPath, an unread image …)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def parent_of(path: str) -> str:
    i = path.rfind("/")
    return path[:i] if i > 0 else "/"


def join(parent: str, name: str) -> str:
    return "/" + name if parent == "/" else parent + "/" + name


def components(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def clean(path: str) -> str:
    """``/a//b/`` -> ``/a/b`` (no ``.``/``..`` processing: callers that need it walk)."""
    return path if path == "/" else "/" + "/".join(components(path))


def ancestors(path: str) -> list[str]:
    out = []
    while path != "/":
        path = parent_of(path)
        out.append(path)
    return out


__all__ = ["NO_LAYER", "Node", "Opaque", "ancestors", "clean", "components", "join", "parent_of"]
