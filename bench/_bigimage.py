"""Build, once, the large realistic image the engine benchmark reads, as an OCI layout on disk.

Layers are real files from this machine (``/usr/lib`` and a CPython install),
written as gzip tar layers into an OCI image layout by hand (so the build does
not depend on the code under test), then pushed with ``skopeo``.  The layout
is cached under ``~/.cache/canrun-bench`` (``CANRUN_BENCH_CACHE``) because
building ~2 GB of gzip takes minutes and the benchmark is about reading it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("CANRUN_BENCH_CACHE", Path.home() / ".cache" / "canrun-bench"))

#: (layer name, source directories, byte budget, file budget): ≈2 GB and ≈60k files in all.
LAYERS: list[tuple[str, list[str], int, int]] = [
    ("usr-lib", ["/usr/lib/x86_64-linux-gnu", "/usr/lib/gcc", "/usr/lib/python3", "/usr/lib/jvm", "/usr/lib"],
     1_300_000_000, 25_000),
    ("python", [os.path.realpath(os.path.join(os.path.dirname(os.__file__), "..", "..")),
                os.path.expanduser("~/.pyenv")], 600_000_000, 30_000),
    ("share", ["/usr/share", "/usr/include"], 600_000_000, 30_000),
]


@dataclass
class BigImage:
    layout: Path
    tag: str
    files: int
    unpacked_bytes: int
    layer_digests: list[str]
    compressed_bytes: int


def _blob(layout: Path, data_path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(data_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    dest = layout / "blobs" / "sha256" / digest
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(data_path, dest)
    return f"sha256:{digest}", dest.stat().st_size


def _json_blob(layout: Path, doc: dict[str, object]) -> tuple[str, int]:
    tmp = layout / "tmp.json"
    tmp.write_bytes(json.dumps(doc, separators=(",", ":")).encode())
    return _blob(layout, tmp)


def _write_layer(layout: Path, roots: list[str], max_bytes: int, max_files: int, seen: set[str]) -> tuple[Path, int, int, str]:
    """Tar real files from ``roots`` (skipping ones already taken) until a budget is reached."""
    raw = layout / "layer.tar.gz"
    files = 0
    total = 0
    h = hashlib.sha256()  # diff_id: digest of the uncompressed tar

    class Hashing:
        def __init__(self, inner: gzip.GzipFile) -> None:
            self.inner = inner

        def write(self, data: bytes) -> int:
            h.update(data)
            return self.inner.write(data)

    with gzip.open(raw, "wb", compresslevel=6) as gz:
        tar = tarfile.open(fileobj=Hashing(gz), mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[arg-type]
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames) + [None]:  # type: ignore[list-item]
                    path = dirpath if name is None else os.path.join(dirpath, name)
                    if path in seen:
                        continue
                    try:
                        st = os.lstat(path)
                    except OSError:
                        continue
                    if not (os.path.isdir(path) or os.path.islink(path) or os.path.isfile(path)):
                        continue
                    if total + st.st_size > max_bytes or files >= max_files:
                        break
                    seen.add(path)
                    try:
                        tar.add(path, arcname=path.lstrip("/"), recursive=False)
                    except OSError:
                        continue
                    files += 1
                    total += st.st_size if os.path.isfile(path) and not os.path.islink(path) else 0
        tar.close()
    return raw, files, total, f"sha256:{h.hexdigest()}"


def build(force: bool = False) -> BigImage:
    layout = CACHE / "big-oci"
    meta = CACHE / "big-oci.json"
    if meta.exists() and not force:
        return BigImage(**{**json.loads(meta.read_text()), "layout": layout})
    shutil.rmtree(layout, ignore_errors=True)
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    seen: set[str] = set()
    layers, diff_ids = [], []
    files = unpacked = 0
    for _, roots, max_bytes, max_files in LAYERS:
        raw, n, size, diff_id = _write_layer(layout, roots, max_bytes, max_files, seen)
        digest, csize = _blob(layout, raw)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": csize})
        diff_ids.append(diff_id)
        files += n
        unpacked += size
    python = os.path.realpath(os.path.join(os.path.dirname(os.__file__), "..", "..", "bin", "python3"))
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Entrypoint": [python], "Cmd": ["-c", "pass"], "Env": ["PATH=/usr/bin:/bin"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cdigest, csize = _json_blob(layout, config)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
                "layers": layers}
    mdigest, msize = _json_blob(layout, manifest)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": msize,
         "annotations": {"org.opencontainers.image.ref.name": "big"}}]}))
    info = {"tag": "big", "files": files, "unpacked_bytes": unpacked, "layer_digests": [l["digest"] for l in layers],
            "compressed_bytes": sum(int(l["size"]) for l in layers)}
    meta.write_text(json.dumps(info))
    return BigImage(layout=layout, **info)  # type: ignore[arg-type]


def push(image: BigImage, registry_host: str, repo: str = "bench/big") -> str:
    ref = f"{registry_host}/{repo}:latest"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{image.layout}:{image.tag}",
                    f"docker://{ref}"], check=True)
    return ref
