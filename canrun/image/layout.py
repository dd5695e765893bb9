"""How the runtime lays an image's layers out on the node: the snapshotter, which decides the merge rules.

containerd's default, ``overlayfs``, unpacks every layer into a directory of
its own (parents resolved, and hard links made, inside that directory only)
and stacks the directories with an overlay mount; ``native`` unpacks every
layer over a full copy of the ones below, one tree.  ``image/fs.py`` merges by
either; the view cache keeps one view per snapshotter.
"""

from __future__ import annotations

OVERLAYFS = "overlayfs"
NATIVE = "native"
SNAPSHOTTERS = (OVERLAYFS, NATIVE)

__all__ = ["NATIVE", "OVERLAYFS", "SNAPSHOTTERS"]
