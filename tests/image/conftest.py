"""Fixtures for the image tests: real binaries (host and arm64 busybox) and umoci-built layers.

The arm64 busybox comes from Debian's ``busybox-static:arm64`` package, fetched
once with ``apt-get download`` (CI must have run ``dpkg --add-architecture arm64
&& apt-get update``) and cached under ``~/.cache/canrun-tests``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("CANRUN_TESTS_CACHE", Path.home() / ".cache" / "canrun-tests"))


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, *, mode: int = 0o644, link: str = "", uid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.uid = uid
    return info


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


@pytest.fixture(scope="session")
def arm64_busybox() -> Path:
    """/bin/busybox from Debian's busybox-static:arm64, extracted with dpkg-deb."""
    target = CACHE / "busybox-arm64" / "bin" / "busybox"
    if target.is_file():
        return target
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob("busybox-static_*_arm64.deb"))
    if not found:
        proc = subprocess.run(
            ["apt-get", "download", "busybox-static:arm64"], cwd=debs, capture_output=True, text=True
        )
        found = sorted(debs.glob("busybox-static_*_arm64.deb"))
        if not found:
            pytest.fail(
                "cannot fetch busybox-static:arm64 (CI must run `dpkg --add-architecture arm64 && apt-get update`): "
                + proc.stderr[-500:]
            )
    root = CACHE / "busybox-arm64"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True)
    if not target.is_file():
        pytest.fail(f"{found[-1]} has no bin/busybox")
    return target


@pytest.fixture(scope="session")
def umoci_image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """An OCI layout built by umoci: layer 1 adds busybox and links, layer 2 deletes and makes opaque.

    Returns {"layout": Path, "layers": [(digest, media_type, blob path), ...]}.
    """
    if shutil.which("umoci") is None:
        pytest.fail("umoci is not installed (apt-get install umoci)")
    work = tmp_path_factory.mktemp("umoci")
    layout = work / "oci"
    bundle = work / "bundle"

    def umoci(*args: str) -> None:
        subprocess.run(["umoci", *args], check=True, capture_output=True)

    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:t")
    umoci("unpack", "--image", f"{layout}:t", str(bundle))
    rootfs = bundle / "rootfs"
    for d in ("bin", "etc", "opt/keep", "usr/lib/app"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    os.link(rootfs / "bin" / "busybox", rootfs / "bin" / "ls")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (rootfs / "usr" / "lib" / "app" / "run.sh").write_text("#!/bin/sh\r\necho hi\r\n")
    (rootfs / "usr" / "lib" / "app" / "run.sh").chmod(0o755)
    (rootfs / "opt" / "keep" / "old").write_text("x")
    (rootfs / "usr" / "lib" / "app" / "gone").write_text("x")
    umoci("repack", "--refresh-bundle", "--image", f"{layout}:t", str(bundle))
    # Second layer: a deletion (whiteout) and a directory emptied and refilled (opaque or per-file whiteouts).
    (rootfs / "usr" / "lib" / "app" / "gone").unlink()
    shutil.rmtree(rootfs / "opt" / "keep")
    (rootfs / "opt" / "keep").mkdir()
    (rootfs / "opt" / "keep" / "new").write_text("y")
    umoci("repack", "--image", f"{layout}:t", str(bundle))

    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text())
    layers = [
        (layer["digest"], layer["mediaType"], layout / "blobs" / "sha256" / layer["digest"].split(":")[1])
        for layer in manifest["layers"]
    ]
    return {"layout": layout, "layers": layers}
