"""Lazy layers made by the real producers: skopeo (zstd:chunked) and crane (eStargz), in a real registry.

One umoci-built image (executables, scripts, passwd/group, a big data file,
then a whiteout layer and a hand-written layer with an opaque directory and a
hardlink) is pushed two ways (and kept as built, gzip, on disk): by ``skopeo copy
--dest-compress-format zstd:chunked``, and by ``GGCR_EXPERIMENT_ESTARGZ=1 crane
append`` layer by layer.  crane is the one ``scripts/setup.sh`` builds; its
tests skip, with the reason, when it is missing.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import images, tools
from tests.support.registry import RunningRegistry, start_registry

#: scripts/build-tools.sh builds it; tests/support/tools.py knows where (or why not).
CRANE = tools.find("crane").path or tools.cache_dir() / "bin" / "crane"

#: Incompressible, not executable: the bytes a lazy read must not fetch.
DATA = random.Random(11).randbytes(12 << 20)


def lazy_recipe() -> images.Image:
    bb = images.busybox_root(images.HOST_BUSYBOX)
    layer1 = bb + images.glibc_ls(with_loader=True) + (
        images.Dir("/app"),
        images.File("/app/start.sh", data=b"#!/bin/sh\nexec sleep 3600\n"),
        images.File("/app/crlf.sh", data=b"#!/bin/sh\r\nexec sleep 3600\r\n"),
        images.File("/app/server", source=images.HOST_BUSYBOX, mode=0o4750, gid=1000),
        images.File("/app/empty", data=b"", mode=0o755),
        images.File("/app/model.bin", data=DATA, mode=0o644),
    )
    layer2 = (images.Remove("/app/start.sh"),)
    layer3 = images.RawLayer((
        images.TarEntry("opt/", tarfile.DIRTYPE, mode=0o755),
        images.TarEntry("opt/.wh..wh..opq"),
        images.TarEntry("opt/README", data=b"nothing here\n"),
        images.TarEntry("app/", tarfile.DIRTYPE, mode=0o755),
        images.TarEntry("app/again", tarfile.LNKTYPE, mode=0o755, link="app/server"),
    ))
    return images.Image("lazy-layers", (layer1, layer2, layer3),
                        images.Config(entrypoint=("/app/server",), cmd=("httpd", "-f")))


@dataclass
class LazyImages:
    registry: RunningRegistry
    #: The umoci-built OCI layout (gzip layers) all three come from. Not pushed: skopeo would then
    #: reuse its gzip blobs instead of writing zstd:chunked ones.
    layout: Path
    zstd_ref: str
    estargz_ref: str | None  # None: no crane (skip reason in estargz_skip)
    estargz_skip: str = ""

    def manifest(self, ref: str) -> dict[str, object]:
        host, _, rest = ref.partition("/")
        repo, _, tag = rest.rpartition(":")
        r = httpx.get(f"http://{host}/v2/{repo}/manifests/{tag}",
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                         "application/vnd.docker.distribution.manifest.v2+json"})
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def put_manifest(self, ref: str, doc: dict[str, object]) -> None:
        host, _, rest = ref.partition("/")
        repo, _, tag = rest.rpartition(":")
        r = httpx.put(f"http://{host}/v2/{repo}/manifests/{tag}", content=json.dumps(doc).encode(),
                      headers={"Content-Type": str(doc.get("mediaType") or images.MT_OCI_MANIFEST)})
        assert r.status_code == 201, r.text


def _layer_tars(layout: Path, out: Path) -> list[Path]:
    top = json.loads((layout / "index.json").read_text())["manifests"][0]
    manifest = json.loads((layout / "blobs" / "sha256" / top["digest"].split(":")[1]).read_text())
    tars = []
    for n, layer in enumerate(manifest["layers"]):
        path = out / f"layer{n}.tar"
        path.write_bytes(gzip.decompress((layout / "blobs" / "sha256" / layer["digest"].split(":")[1]).read_bytes()))
        tars.append(path)
    return tars


def push_estargz(layout: Path, ref: str, work: Path) -> None:
    """``crane append`` each layer of ``layout`` onto the last, eStargz-converted (GGCR_EXPERIMENT_ESTARGZ=1)."""
    env = {**os.environ, "GGCR_EXPERIMENT_ESTARGZ": "1"}
    base: list[str] = []
    for tar in _layer_tars(layout, work):
        subprocess.run([str(CRANE), "append", "--insecure", *base, "-f", str(tar), "-t", ref], env=env,
                       check=True, capture_output=True)
        base = ["-b", ref]


def push_zstd_chunked(layout: Path, ref: str) -> None:
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-compress-format",
                    "zstd:chunked", f"oci:{layout}:{images.TAG}", f"docker://{ref}"], check=True, capture_output=True)


def publish_lazy(registry: RunningRegistry, work: Path) -> LazyImages:
    layout = images.build_image(lazy_recipe())
    zstd_ref = f"{registry.host}/lazy/zstd-chunked:1"
    push_zstd_chunked(layout, zstd_ref)
    estargz_ref: str | None = f"{registry.host}/lazy/estargz:1"
    skip = ""
    if not os.access(CRANE, os.X_OK):
        estargz_ref, skip = None, f"crane: {tools.find('crane').reason}"
    else:
        push_estargz(layout, estargz_ref, work)
    return LazyImages(registry, layout, zstd_ref, estargz_ref, skip)


@pytest.fixture(scope="module")
def lazy_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LazyImages]:
    """A registry of its own (the hostile tests damage blobs in its storage) holding the three pushes."""
    work = tmp_path_factory.mktemp("lazy")
    registry = start_registry(work / "registry")
    try:
        yield publish_lazy(registry, work)
    finally:
        registry.stop()
