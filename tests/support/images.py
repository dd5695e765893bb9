"""The catalogue of test images: real binaries assembled into OCI images with ``umoci``, pushed with ``skopeo``.

Each image is described by a small recipe (layers of file operations plus an
image config).  Building is done by the real tools users' images are made with
— ``umoci unpack``/``repack`` computes the layer diffs (so a deleted file becomes
a real ``.wh.`` whiteout), ``umoci raw add-layer`` appends hand-written tar
layers where a tool-made diff cannot express the case (an opaque directory, a
hardlink into a lower layer), ``umoci config`` writes the config — and
multi-platform indexes are written into the OCI layout by hand, because that is
the one thing neither tool makes.

Built layouts are cached under ``~/.cache/canrun-tests/images`` (or
``$CANRUN_TESTS_CACHE``), keyed by a hash of the recipe and of every host file it
copies, so a rerun only pushes.  The catalogue is used by ``tests/conftest.py``
and by ``scripts/demo.py``; it needs no network except, once, ``apt-get download
busybox-static:arm64`` for the arm64 binary.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("CANRUN_TESTS_CACHE", Path.home() / ".cache" / "canrun-tests"))
#: Bump when the build procedure changes in a way recipes do not capture.
BUILDER_VERSION = "4"
TAG = "img"  # the tag inside each OCI layout
FIXED_MTIME = 1_700_000_000  # reproducible layers: the same content gives the same digest
CREATED = "2023-11-14T22:13:20Z"

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_IN_TOTO = "application/vnd.in-toto+json"


class BuildError(RuntimeError):
    """A tool (umoci, skopeo, apt-get) failed while building or pushing the catalogue."""


# --- recipes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    """A regular file: copied from a host path, or literal bytes."""

    path: str
    source: str | None = None
    data: bytes | None = None
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str


@dataclass(frozen=True)
class Dir:
    path: str
    mode: int = 0o755


@dataclass(frozen=True)
class Remove:
    """Delete a path present in a lower layer: umoci writes the whiteout."""

    path: str


Op = File | Symlink | Dir | Remove


@dataclass(frozen=True)
class TarEntry:
    """One entry of a hand-written layer (``kind`` is a tarfile type: REGTYPE, DIRTYPE, LNKTYPE, SYMTYPE)."""

    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    link: str = ""


@dataclass(frozen=True)
class RawLayer:
    """A layer added verbatim (``umoci raw add-layer``), for whiteouts and links a diff cannot express."""

    entries: tuple[TarEntry, ...]


Layer = tuple[Op, ...] | RawLayer


@dataclass(frozen=True)
class Config:
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    user: str | None = None
    workingdir: str | None = None
    env: tuple[str, ...] = ()
    architecture: str = "amd64"
    os: str = "linux"


@dataclass(frozen=True)
class Image:
    """A single-platform image: layers applied in order, then the config."""

    name: str
    layers: tuple[Layer, ...]
    config: Config = Config()
    repo: str | None = None
    tag: str = "1.0"
    #: Recompress the layers with zstd while pushing.
    zstd: bool = False
    #: Overwrite the last layer's blob in the registry after pushing (image-corrupt).
    corrupt: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Index:
    """A multi-platform index over catalogue images: (image name, "os/arch[/variant]") entries.

    The platform is written as given (``linux/arm64/8`` keeps its odd variant); "" leaves it out.
    """

    name: str
    entries: tuple[tuple[str, str], ...]
    #: Add a buildx-style attestation manifest (platform unknown/unknown) for the first entry.
    attestation: bool = False
    repo: str | None = None
    tag: str = "1.0"
    doc: str = ""


Recipe = Image | Index


# --- real binaries -----------------------------------------------------------------------------------------

HOST_BUSYBOX = "/bin/busybox"  # Debian busybox-static: a static x86-64 ELF
HOST_LS = "/bin/ls"  # dynamic, PT_INTERP /lib64/ld-linux-x86-64.so.2
APPLETS = ("sh", "ls", "cat", "echo", "env", "sleep", "true", "id", "httpd")

PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
          b"app:x:1000:1000:app:/home/app:/bin/sh\n"
          b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"


def arm64_busybox() -> Path:
    """/bin/busybox from Debian's busybox-static:arm64 (apt-get download + dpkg-deb -x, cached)."""
    root = CACHE / "busybox-arm64"
    target = root / "bin" / "busybox"
    if target.is_file():
        return target
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob("busybox-static_*_arm64.deb"))
    if not found:
        proc = subprocess.run(["apt-get", "download", "busybox-static:arm64"], cwd=debs,
                              capture_output=True, text=True)
        found = sorted(debs.glob("busybox-static_*_arm64.deb"))
        if not found:
            raise BuildError("cannot fetch busybox-static:arm64 (needs `dpkg --add-architecture arm64 && "
                             f"apt-get update`, as scripts/setup.sh does): {proc.stderr.strip()[-300:]}")
    tmp = CACHE / f".busybox-arm64-{uuid.uuid4().hex}"
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(tmp)], check=True)
    if not (tmp / "bin" / "busybox").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"{found[-1]} has no bin/busybox")
    try:
        os.rename(tmp, root)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def shared_libraries(binary: str) -> list[str]:
    """The host paths of the shared libraries ``binary`` needs (from ldd), loader excluded."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split("=>")
        if len(parts) == 2:
            path = parts[1].split("(")[0].strip()
            if path.startswith("/"):
                libs.append(path)
    return libs


def busybox_root(binary: str, *, merged_usr: bool = False, applets: Iterable[str] = APPLETS) -> tuple[Op, ...]:
    """A minimal busybox root: the binary, applet symlinks, passwd/group, /tmp."""
    bindir = "/usr/bin" if merged_usr else "/bin"
    ops: list[Op] = [Dir("/etc"), Dir("/tmp", 0o1777), Dir("/root", 0o700), Dir("/home/app")]
    if merged_usr:
        ops += [Dir("/usr/bin"), Symlink("/bin", "usr/bin")]
    else:
        ops += [Dir("/bin")]
    ops.append(File(f"{bindir}/busybox", source=binary))
    ops += [Symlink(f"{bindir}/{a}", "busybox") for a in applets]
    ops += [File("/etc/passwd", data=PASSWD, mode=0o644), File("/etc/group", data=GROUP, mode=0o644)]
    return tuple(ops)


def glibc_ls(*, with_loader: bool) -> tuple[Op, ...]:
    """The host's dynamic /bin/ls at /usr/local/bin/ls with its libraries; the loader only if asked."""
    ops: list[Op] = [Dir("/usr/local/bin"), File("/usr/local/bin/ls", source=HOST_LS), Dir("/lib/x86_64-linux-gnu")]
    for lib in shared_libraries(HOST_LS):
        ops.append(File(f"/lib/x86_64-linux-gnu/{os.path.basename(lib)}", source=os.path.realpath(lib)))
    if with_loader:
        loader = os.path.realpath("/lib64/ld-linux-x86-64.so.2")
        ops += [File(f"/lib/x86_64-linux-gnu/{os.path.basename(loader)}", source=loader), Dir("/lib64"),
                Symlink("/lib64/ld-linux-x86-64.so.2", f"/lib/x86_64-linux-gnu/{os.path.basename(loader)}")]
    return tuple(ops)


def catalogue_recipes(arm64_binary: str | None) -> list[Recipe]:
    """Every image the integration tests and the demo use, by name.

    ``arm64_binary`` is the arm64 busybox; without it the arm64-dependent entries are left out
    (the demo on a machine that cannot fetch it still runs).
    """
    bb = busybox_root(HOST_BUSYBOX)
    shell = Config(cmd=("/bin/sh",))
    recipes: list[Recipe] = [
        Image("busybox-amd64", (bb,), Config(entrypoint=("/bin/busybox",), cmd=("httpd", "-f", "-p", "8080")),
              doc="static x86-64 busybox, single manifest"),
        Index("amd64-only", (("busybox-amd64", "linux/amd64"),), repo="test/amd64-only",
              doc="an index with only linux/amd64: platform-missing on arm64"),
        Image("usrmerge", (busybox_root(HOST_BUSYBOX, merged_usr=True),),
              Config(cmd=("sh", "-c", "exec sleep 3600"), env=("PATH=/usr/local/bin:/bin",)),
              doc="merged /usr: /bin -> usr/bin, command found through PATH"),
        Image("whiteout", (bb + (Dir("/app"), File("/app/server", source=HOST_BUSYBOX),
                                 File("/app/helper", source=HOST_BUSYBOX)),
                           (Remove("/app/server"),)),
              Config(entrypoint=("/app/server",)),
              doc="/app/server added in layer 1 and deleted (whiteout) in layer 2"),
        Image("opaque", (bb + (Dir("/opt/tool/bin"), File("/opt/tool/bin/run", source=HOST_BUSYBOX)),
                         RawLayer((TarEntry("opt/tool/", tarfile.DIRTYPE, mode=0o755),
                                   TarEntry("opt/tool/.wh..wh..opq"),
                                   TarEntry("opt/tool/README", data=b"moved to /usr/local/bin\n")))),
              Config(entrypoint=("/opt/tool/bin/run",)),
              doc="/opt/tool emptied by an opaque whiteout in layer 2"),
        Image("hardlink", (bb, RawLayer((TarEntry("usr/", tarfile.DIRTYPE, mode=0o755),
                                         TarEntry("usr/local/", tarfile.DIRTYPE, mode=0o755),
                                         TarEntry("usr/local/bin/", tarfile.DIRTYPE, mode=0o755),
                                         TarEntry("usr/local/bin/app", tarfile.LNKTYPE, mode=0o755, link="bin/busybox")))),
              Config(entrypoint=("/usr/local/bin/app",), cmd=("sleep", "3600")),
              doc="/usr/local/bin/app is a hardlink (layer 2) to /bin/busybox (layer 1)"),
        Image("scripts", (bb + (Dir("/app"),
                                File("/app/start.sh", data=b"#!/bin/sh\nexec sleep 3600\n"),
                                File("/app/crlf.sh", data=b"#!/bin/sh\r\nexec sleep 3600\r\n"),
                                File("/app/bash.sh", data=b"#!/bin/bash\nset -euo pipefail\nexec sleep 3600\n"),
                                File("/app/notes.txt", data=b"run me\n")),),
              Config(entrypoint=("/app/start.sh",)),
              doc="scripts: a good #!/bin/sh, a CRLF shebang, #!/bin/bash without bash, a text file"),
        Image("crlf", (bb + (Dir("/usr/local/bin"),
                             File("/usr/local/bin/entrypoint.sh",
                                  data=b"#!/bin/sh\r\nset -e\r\nexec \"$@\"\r\n")),),
              Config(entrypoint=("/usr/local/bin/entrypoint.sh",), cmd=("sleep", "3600")),
              doc="ENTRYPOINT script saved with CRLF line endings"),
        Image("bash-script", (bb + (Dir("/usr/local/bin"),
                                    File("/usr/local/bin/docker-entrypoint.sh",
                                         data=b"#!/bin/bash\nset -euo pipefail\nexec \"$@\"\n")),),
              Config(entrypoint=("/usr/local/bin/docker-entrypoint.sh",), cmd=("sleep", "3600")),
              doc="#!/bin/bash ENTRYPOINT in an image without bash"),
        Image("mode644", (bb + (Dir("/app"), File("/app/server", source=HOST_BUSYBOX, mode=0o644)),),
              Config(entrypoint=("/app/server",), cmd=("httpd", "-f")),
              doc="the binary lost its execute bits"),
        Image("mode700", (bb + (Dir("/app"), File("/app/server", source=HOST_BUSYBOX, mode=0o700)),),
              Config(entrypoint=("/app/server",), cmd=("httpd", "-f")),
              doc="root-owned 0700 binary: only root, or CAP_DAC_OVERRIDE, can exec it"),
        Image("named-user", (bb,), Config(cmd=("sleep", "3600"), user="app"),
              doc="USER app, present in /etc/passwd"),
        Image("missing-user", (bb,), Config(cmd=("sleep", "3600"), user="svc"),
              doc="USER svc, absent from /etc/passwd"),
        Image("no-command", (bb,), Config(), doc="no ENTRYPOINT and no CMD"),
        Image("dynamic-ls", (bb + glibc_ls(with_loader=False),), Config(entrypoint=("/usr/local/bin/ls",)),
              doc="glibc /bin/ls without /lib64/ld-linux-x86-64.so.2"),
        Image("dynamic-ls-loader", (bb + glibc_ls(with_loader=True),), Config(entrypoint=("/usr/local/bin/ls",)),
              doc="glibc /bin/ls with its loader and libraries"),
        # a layer of its own: skopeo would reuse an identical gzip blob already in the registry
        Image("zstd", (bb + (File("/etc/build-id", data=b"zstd-image\n", mode=0o644),),), shell, zstd=True,
              doc="busybox pushed with zstd-compressed layers"),
        Image("corrupt", (bb + (File("/etc/build-id", data=b"corrupt-image\n", mode=0o644),),), shell,
              corrupt=True, doc="its layer blob is overwritten in the registry's storage after the push"),
    ]
    if arm64_binary is not None:
        bb_arm = busybox_root(arm64_binary)
        amd_cfg = Config(entrypoint=("/bin/busybox",), cmd=("httpd", "-f", "-p", "8080"))
        recipes += [
            Image("busybox-arm64", (bb_arm,), Config(entrypoint=amd_cfg.entrypoint, cmd=amd_cfg.cmd,
                                                     architecture="arm64"),
                  doc="static aarch64 busybox, single manifest"),
            Image("busybox-amd64-labeled-arm64", (bb,), Config(entrypoint=amd_cfg.entrypoint, cmd=amd_cfg.cmd,
                                                               architecture="arm64"),
                  doc="x86-64 busybox whose config says arm64"),
            Index("busybox", (("busybox-amd64", "linux/amd64"), ("busybox-arm64", "linux/arm64")),
                  repo="test/busybox", tag="1.36", doc="multi-arch busybox (amd64 + arm64)"),
            Index("mislabeled", (("busybox-amd64", "linux/amd64"), ("busybox-amd64-labeled-arm64", "linux/arm64")),
                  repo="test/mislabeled", doc="the arm64 entry carries x86-64 busybox"),
            Index("attested", (("busybox-amd64", "linux/amd64"), ("busybox-arm64", "linux/arm64")),
                  attestation=True, repo="test/attested", doc="amd64 + arm64 + a buildx attestation manifest"),
        ]
    return recipes


# --- building ----------------------------------------------------------------------------------------------


def _run(cmd: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recipe_key(recipe: Recipe, parts: dict[str, str] | None = None) -> str:
    """A content hash: the recipe, every host file it copies, component keys (indexes), the builder version."""
    h = hashlib.sha256(f"{BUILDER_VERSION}\n{recipe!r}\n".encode())
    if isinstance(recipe, Image):
        for layer in recipe.layers:
            if isinstance(layer, tuple):
                for op in layer:
                    if isinstance(op, File) and op.source:
                        h.update(_file_hash(op.source).encode())
    for name, key in sorted((parts or {}).items()):
        h.update(f"{name}={key}\n".encode())
    return h.hexdigest()[:16]


def _apply(rootfs: Path, op: Op) -> None:
    target = rootfs / op.path.lstrip("/")
    if isinstance(op, Dir):
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(op.mode)
    elif isinstance(op, Symlink):
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(op.target)
    elif isinstance(op, File):
        target.parent.mkdir(parents=True, exist_ok=True)
        if op.source is not None:
            shutil.copyfile(op.source, target)
        else:
            target.write_bytes(op.data or b"")
        os.chown(target, op.uid, op.gid)
        target.chmod(op.mode)
    elif isinstance(op, Remove):
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()


def _normalise_times(rootfs: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(rootfs, (FIXED_MTIME, FIXED_MTIME))


def _raw_tar(layer: RawLayer) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in layer.entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.kind
            info.mode = e.mode
            info.linkname = e.link
            info.mtime = FIXED_MTIME
            info.size = len(e.data) if e.kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(e.data) if e.kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def _config_args(cfg: Config) -> list[str]:
    args = ["--architecture", cfg.architecture, "--os", cfg.os, "--clear=config.env", f"--created={CREATED}"]
    if cfg.entrypoint is not None:
        args += [f"--config.entrypoint={a}" for a in cfg.entrypoint]
    if cfg.cmd is not None:
        args += [f"--config.cmd={a}" for a in cfg.cmd]
    if cfg.user is not None:
        args += [f"--config.user={cfg.user}"]
    if cfg.workingdir is not None:
        args += [f"--config.workingdir={cfg.workingdir}"]
    args += [f"--config.env={e}" for e in cfg.env]
    return args


def build_image(recipe: Image) -> Path:
    """The OCI layout (tag ``img``) for one image recipe, from the cache or built now."""
    key = recipe_key(recipe)
    dest = CACHE / "images" / f"{recipe.name}-{key}"
    if (dest / "index.json").is_file():
        return dest
    work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.name}-", dir=_ensure(CACHE / "images")))
    try:
        layout, bundle = work / "oci", work / "bundle"
        image = f"{layout}:{TAG}"
        _run(["umoci", "init", "--layout", str(layout)])
        _run(["umoci", "new", "--image", image])
        unpacked = False
        for layer in recipe.layers:
            if isinstance(layer, RawLayer):
                tar_path = work / "layer.tar"
                tar_path.write_bytes(_raw_tar(layer))
                _run(["umoci", "raw", "add-layer", "--no-history", "--image", image, str(tar_path)])
                shutil.rmtree(bundle, ignore_errors=True)
                unpacked = False
                continue
            if not unpacked:
                shutil.rmtree(bundle, ignore_errors=True)
                _run(["umoci", "unpack", "--image", image, str(bundle)])
                unpacked = True
            rootfs = bundle / "rootfs"
            for op in layer:
                _apply(rootfs, op)
            _normalise_times(rootfs)
            _run(["umoci", "repack", "--refresh-bundle", "--no-history", "--image", image, str(bundle)])
        _run(["umoci", "config", "--no-history", "--image", image, *_config_args(recipe.config)])
        _run(["umoci", "gc", "--layout", str(layout)])
        try:
            os.rename(layout, dest)
        except OSError:
            if not (dest / "index.json").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def _top_descriptor(layout: Path) -> dict[str, object]:
    index = json.loads((layout / "index.json").read_text())
    for d in index["manifests"]:
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == TAG:
            return d
    raise BuildError(f"{layout} has no tag {TAG}")


def _put_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = _blob_path(layout, digest)
    if not path.exists():
        path.write_bytes(data)
    return digest, len(data)


def _platform_dict(text: str) -> dict[str, str] | None:
    """``os/arch[/variant]`` as an index entry's platform, written as given; "" writes no platform at all."""
    if not text:
        return None
    parts = text.split("/")
    d = {"architecture": parts[1], "os": parts[0]}
    if len(parts) > 2:
        d["variant"] = parts[2]
    return d


def build_index(recipe: Index, layouts: dict[str, Path], keys: dict[str, str]) -> Path:
    """An OCI layout whose tag ``img`` is an image index over the component images' manifests."""
    key = recipe_key(recipe, {n: keys[n] for n, _ in recipe.entries})
    dest = CACHE / "images" / f"{recipe.name}-{key}"
    if (dest / "index.json").is_file():
        return dest
    work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.name}-", dir=_ensure(CACHE / "images")))
    try:
        layout = work / "oci"
        blobs = _ensure(layout / "blobs" / "sha256")
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        entries: list[dict[str, object]] = []
        for name, platform in recipe.entries:
            src = layouts[name]
            for blob in (src / "blobs" / "sha256").iterdir():
                if not (blobs / blob.name).exists():
                    os.link(blob, blobs / blob.name)
            top = _top_descriptor(src)
            entry = {"mediaType": top["mediaType"], "digest": top["digest"], "size": top["size"]}
            if (platform_doc := _platform_dict(platform)) is not None:
                entry["platform"] = platform_doc
            entries.append(entry)
        if recipe.attestation:
            entries.append(_attestation(layout, str(entries[0]["digest"])))
        index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries}
        digest, size = _put_blob(layout, json.dumps(index, indent=2).encode())
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": MT_OCI_INDEX, "digest": digest, "size": size,
             "annotations": {"org.opencontainers.image.ref.name": TAG}}]}))
        try:
            os.rename(layout, dest)
        except OSError:
            if not (dest / "index.json").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _attestation(layout: Path, subject: str) -> dict[str, object]:
    """A buildx-style provenance attestation manifest for ``subject`` (platform unknown/unknown)."""
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1",
                            "predicateType": "https://slsa.dev/provenance/v0.2",
                            "subject": [{"name": "_", "digest": {"sha256": subject.split(":")[1]}}],
                            "predicate": {"builder": {"id": "canrun-tests"}}}).encode()
    layer_digest, layer_size = _put_blob(layout, statement)
    config = json.dumps({"architecture": "unknown", "os": "unknown", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    cfg_digest, cfg_size = _put_blob(layout, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": MT_IN_TOTO, "digest": layer_digest, "size": layer_size,
                    "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}],
    }).encode()
    digest, size = _put_blob(layout, manifest)
    return {"mediaType": MT_OCI_MANIFEST, "digest": digest, "size": size,
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                            "vnd.docker.reference.digest": subject}}


# --- the catalogue in a registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PushedImage:
    name: str
    ref: str  # host:port/repo:tag
    digest: str  # what the tag points at (index or manifest)
    layout: Path
    doc: str = ""
    layers: tuple[str, ...] = ()  # the pushed manifest's layer digests (single-platform images)


@dataclass
class Catalogue:
    """The catalogue pushed into one registry: ``catalogue.ref("busybox")`` is a pullable reference."""

    host: str
    images: dict[str, PushedImage] = field(default_factory=dict)
    #: A reference on a port nothing listens on.
    unreachable: str = ""

    def ref(self, name: str) -> str:
        if name == "unreachable":
            return self.unreachable
        return self.images[name].ref

    def __getitem__(self, name: str) -> PushedImage:
        return self.images[name]

    def __contains__(self, name: object) -> bool:
        return name in self.images


def build_all(recipes: Sequence[Recipe], *, workers: int = 4) -> tuple[dict[str, Path], dict[str, str]]:
    """Build (or take from the cache) every recipe; indexes after the images they reference."""
    images = [r for r in recipes if isinstance(r, Image)]
    keys = {r.name: recipe_key(r) for r in images}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        layouts = dict(zip((r.name for r in images), pool.map(build_image, images)))
    for r in recipes:
        if isinstance(r, Index):
            layouts[r.name] = build_index(r, layouts, keys)
            keys[r.name] = layouts[r.name].name.rsplit("-", 1)[1]
    return layouts, keys


def push(layout: Path, ref: str, *, multi: bool = False, zstd: bool = False) -> str:
    """``skopeo copy`` an OCI layout's tag to ``ref`` over plain HTTP; returns the pushed digest."""
    with tempfile.NamedTemporaryFile(prefix="digest-") as digestfile:
        cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", digestfile.name]
        if multi:
            cmd.append("--all")
        if zstd:
            cmd += ["--dest-compress-format", "zstd"]
        _run([*cmd, f"oci:{layout}:{TAG}", f"docker://{ref}"])
        return Path(digestfile.name).read_text().strip()


def _manifest_layers(layout: Path) -> tuple[str, ...]:
    top = _top_descriptor(layout)
    manifest = json.loads(_blob_path(layout, str(top["digest"])).read_text())
    return tuple(layer["digest"] for layer in manifest.get("layers", []))


def corrupt_blob(blob: Path) -> None:
    """Flip bytes in the middle of a stored blob, keeping its size: only a digest check notices."""
    data = bytearray(blob.read_bytes())
    mid = len(data) // 2
    for i in range(mid, min(mid + 64, len(data))):
        data[i] ^= 0xFF
    blob.write_bytes(bytes(data))


def publish(registry_host: str, blob_path: Callable[[str], Path], *, recipes: Sequence[Recipe] | None = None,
            unreachable_port: int | None = None, workers: int = 4,
            names: dict[str, str] | None = None) -> Catalogue:
    """Build and push the catalogue into the registry at ``registry_host``; corrupt what asks for it.

    ``blob_path`` maps a digest to the registry's storage file (``RunningRegistry.blob_path``).
    ``names`` ({recipe name: "repo:tag"}) pushes only those recipes, under those names.
    """
    if recipes is None:
        recipes = catalogue_recipes(str(arm64_busybox()))
    layouts, _ = build_all(recipes, workers=workers)
    catalogue = Catalogue(host=registry_host)
    if names is not None:
        recipes = [r for r in recipes if r.name in names]

    def one(r: Recipe) -> PushedImage:
        repo_tag = names[r.name] if names is not None else f"{r.repo or 'test/' + r.name}:{r.tag}"
        ref = f"{registry_host}/{repo_tag}"
        digest = push(layouts[r.name], ref, multi=isinstance(r, Index), zstd=isinstance(r, Image) and r.zstd)
        layers = _manifest_layers(layouts[r.name]) if isinstance(r, Image) and not r.zstd else ()
        return PushedImage(r.name, ref, digest, layouts[r.name], r.doc, layers)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for pushed in pool.map(one, recipes):
            catalogue.images[pushed.name] = pushed
    for r in recipes:
        if isinstance(r, Image) and r.corrupt:
            corrupt_blob(blob_path(catalogue.images[r.name].layers[-1]))
    if unreachable_port is not None:
        catalogue.unreachable = f"127.0.0.1:{unreachable_port}/test/nowhere:1.0"
    return catalogue
