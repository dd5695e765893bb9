"""The two snapshotters' layouts, proved with the kernel: a real overlay mount of per-layer directories, one tree.

containerd's default snapshotter, overlayfs, unpacks each layer into a
directory of its own (``archive.Apply`` on the upper directory, parents
resolved by ``fs.RootPath`` inside it, missing ones made by ``mkparent``) and
stacks them with an overlay mount; the native snapshotter unpacks each layer
over a copy of the ones below.  Here GNU tar does the unpacking, which resolves
parents and makes hard links with the kernel exactly as those code paths do:
into an empty directory per layer, mounted ``lowerdir=top:…:bottom`` (the
order matters: the first lowerdir is the top layer), or all into one
directory.  canrun indexes the very same tar bytes and merges them with the
same snapshotter model; every case compares its verdict with execve's in the
mounted root.
"""

from __future__ import annotations

import errno
import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from canrun.checks import check_container
from canrun.checks.context import ExecContext
from canrun.errors import ImageCorrupt
from canrun.findings import Severity
from canrun.image.fs import NATIVE, OVERLAYFS, MergedFS
from canrun.image.layer import index_stream
from canrun.image.model import ImageConfig, LayerIndex
from canrun.platform import Platform
from canrun.spec import Container, PodSpec

from .kernel import kernel_exec

pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts, chroot and setuid need root"),
]

AMD64 = Platform("linux", "amd64")
BUSYBOX = Path("/bin/busybox").read_bytes()
BLOCKING = {"command-not-found", "command-not-executable", "exec-format", "interpreter-not-found", "loader-not-found"}


def _tar(*members: tuple[str, str, str | bytes | None]) -> bytes:
    """A layer tar: (name, kind, data-or-link) with kind dir/file/symlink/hardlink, written as image builders do."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "file":
                data = value if isinstance(value, bytes) else b""
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(value)
                tar.addfile(info)
    return buf.getvalue()


MERGED_USR = _tar(("usr", "dir", None), ("usr/bin", "dir", None), ("usr/bin/busybox", "file", BUSYBOX),
                  ("usr/bin/sh", "symlink", "busybox"), ("bin", "symlink", "usr/bin"))
#: A layer that writes bin/tool with no bin/ entry of its own (COPY tool /bin/ in some builders).
TOOL_IN_BIN = _tar(("bin/tool", "file", BUSYBOX))
#: The same layer as docker/buildkit write it for a merged-/usr base: through the real directory.
TOOL_IN_USR_BIN = _tar(("usr/bin/tool", "file", BUSYBOX))
BUSYBOX_LAYER = _tar(("bin", "dir", None), ("bin/busybox", "file", BUSYBOX))
#: A hard link to a file of the layer below (a layer differ that links instead of copying).
LINK_TO_LOWER = _tar(("usr", "dir", None), ("usr/bin", "dir", None), ("usr/bin/env", "hardlink", "bin/busybox"))


def _index(stack: list[bytes]) -> list[LayerIndex]:
    return [index_stream([data], digest="sha256:" + f"{i:064x}") for i, data in enumerate(stack)]


def _untar(data: bytes, into: Path) -> bool:
    into.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["tar", "-x", "--numeric-owner", "-p", "-C", str(into)], input=data,
                          capture_output=True, check=False)
    return done.returncode == 0


@contextmanager
def _layout(stack: list[bytes], snapshotter: str, base: Path) -> Iterator[Path | None]:
    """The container root as the snapshotter lays it out; None when it cannot unpack a layer."""
    if snapshotter == NATIVE:
        root = base / "native"
        yield root if all(_untar(data, root) for data in stack) else None
        return
    layers = [base / f"layer{i}" for i in range(len(stack))]
    if not all(_untar(data, d) for data, d in zip(stack, layers)):
        yield None
        return
    merged = base / "merged"
    merged.mkdir()
    lowerdir = ":".join(str(d) for d in reversed(layers))  # the top layer first
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowerdir}", str(merged)], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def _verdict(fs: MergedFS, command: str) -> list[str]:
    container = Container(name="c", image="oracle", command=(command,))
    ctx = ExecContext(container=container, pod=PodSpec(containers=(container,)), config=ImageConfig(), fs=fs,
                      node=AMD64, image_platform=AMD64)
    return [f.rule for f in check_container(ctx) if f.severity is Severity.ERROR and f.rule in BLOCKING]


@dataclass(frozen=True)
class Case:
    name: str
    stack: tuple[bytes, ...]
    snapshotter: str
    command: str
    expect: str | None  # canrun's blocking rule, None for "runs"


CASES = [
    # bin/tool over /bin -> usr/bin: overlayfs makes a real /bin that hides the symlink ...
    Case("bin-tool", (MERGED_USR, TOOL_IN_BIN), OVERLAYFS, "/bin/tool", None),
    Case("bin-tool", (MERGED_USR, TOOL_IN_BIN), OVERLAYFS, "/usr/bin/tool", "command-not-found"),
    Case("bin-tool", (MERGED_USR, TOOL_IN_BIN), OVERLAYFS, "/bin/sh", "command-not-found"),
    Case("bin-tool", (MERGED_USR, TOOL_IN_BIN), OVERLAYFS, "/usr/bin/sh", None),
    # ... the native snapshotter follows the symlink, as one tree does
    Case("bin-tool", (MERGED_USR, TOOL_IN_BIN), NATIVE, "/bin/tool", None),
    Case("bin-tool", (MERGED_USR, TOOL_IN_BIN), NATIVE, "/usr/bin/tool", None),
    Case("bin-tool", (MERGED_USR, TOOL_IN_BIN), NATIVE, "/bin/sh", None),
    # written through the real directory, both agree
    Case("usr-bin-tool", (MERGED_USR, TOOL_IN_USR_BIN), OVERLAYFS, "/bin/tool", None),
    Case("usr-bin-tool", (MERGED_USR, TOOL_IN_USR_BIN), OVERLAYFS, "/bin/sh", None),
    Case("usr-bin-tool", (MERGED_USR, TOOL_IN_USR_BIN), NATIVE, "/bin/tool", None),
    # a hard link to a lower layer's file: native makes it, overlayfs cannot (the pull fails)
    Case("link-to-lower", (BUSYBOX_LAYER, LINK_TO_LOWER), NATIVE, "/usr/bin/env", None),
    Case("link-to-lower", (BUSYBOX_LAYER, LINK_TO_LOWER), OVERLAYFS, "/usr/bin/env", "unpack"),
    # lowerdir order: the upper layer's file wins over the lower one's symlink at the same path
    Case("order", (MERGED_USR, _tar(("bin", "dir", None), ("bin/sh", "file", b"not a program"))), OVERLAYFS,
         "/bin/sh", "exec-format"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.snapshotter}-{c.name}-{c.command}" for c in CASES])
def test_snapshotter_layout_agrees_with_the_kernel(case: Case, tmp_path: Path) -> None:
    layers = _index(list(case.stack))
    with _layout(list(case.stack), case.snapshotter, tmp_path) as root:
        if case.expect == "unpack":
            assert root is None  # tar's link(2) failed: no such file in the layer's own directory
            with pytest.raises(ImageCorrupt, match="overlayfs snapshotter: the hard link /usr/bin/env names "
                                                   "/bin/busybox, a file of a lower layer"):
                MergedFS.from_layers(layers, OVERLAYFS)
            return
        assert root is not None
        kernel = kernel_exec(str(root), case.command, uid=0, gid=0, groups=(0,),
                             caps=frozenset({"DAC_OVERRIDE", "DAC_READ_SEARCH"}))
    blocking = _verdict(MergedFS.from_layers(layers, case.snapshotter), case.command)
    if kernel.errno == 0:
        assert blocking == [], kernel.name
    else:
        assert len(blocking) == 1 and kernel.errno in (errno.ENOENT, errno.ENOEXEC), (kernel.name, blocking)
    assert (blocking[0] if blocking else None) == case.expect, kernel.name
