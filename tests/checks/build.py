"""Small builders for layer indexes, images and pod specs used by the check tests."""

from __future__ import annotations

from canrun.checks import check_container
from canrun.checks.context import ExecContext
from canrun.findings import Finding
from canrun.image.fs import NATIVE, OVERLAYFS, MergedFS
from canrun.image.model import ElfInfo, Entry, EntryType, ImageConfig, LayerIndex, ScriptInfo, UnknownFormat
from canrun.platform import Platform
from canrun.spec import Container, EnvVar, PodSpec, SecurityContext, Volume, VolumeMount

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
STATIC_AMD64 = ElfInfo(64, True, 62, None)
STATIC_ARM64 = ElfInfo(64, True, 183, None)
GLIBC_LOADER = "/lib64/ld-linux-x86-64.so.2"
DYN_AMD64 = ElfInfo(64, True, 62, GLIBC_LOADER, 3)

F, D, L, H = EntryType.FILE, EntryType.DIR, EntryType.SYMLINK, EntryType.HARDLINK
WH, OPQ = EntryType.WHITEOUT, EntryType.OPAQUE


def d(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, D, mode, uid, gid)


def f(path: str, mode: int = 0o644, uid: int = 0, gid: int = 0, exec=None) -> Entry:
    if exec is None and mode & 0o111:
        exec = STATIC_AMD64
    return Entry(path, F, mode, uid, gid, 100, None, exec)


def script(path: str, line: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    from canrun.image.binary import parse_shebang

    info = parse_shebang(line.encode() + b"\n")
    return Entry(path, F, mode, uid, gid, 100, None, info)


def sym(path: str, target: str) -> Entry:
    return Entry(path, L, 0o777, 0, 0, 0, target)


def hard(path: str, target: str) -> Entry:
    return Entry(path, H, 0o644, 0, 0, 0, target)


def wh(path: str) -> Entry:
    return Entry(path, WH, 0o644)


def opq(directory: str) -> Entry:
    return Entry(directory, OPQ, 0o644)


def layer(*entries: Entry, files: dict[str, bytes] | None = None, digest: str = "") -> LayerIndex:
    return LayerIndex(digest=digest or f"sha256:{id(entries):064x}"[:71], entries=list(entries), files=files or {})


def merged(*layers: LayerIndex, snapshotter: str = OVERLAYFS) -> MergedFS:
    return MergedFS.from_layers(list(layers), snapshotter)


PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n"
GROUP = b"root:x:0:\napp:x:1000:\nstaff:x:50:app,web\nweb:x:33:\n"


def base_layer(*extra: Entry) -> LayerIndex:
    """A small busybox-like base: /bin/sh, /bin/busybox, /etc/passwd and /etc/group."""
    return layer(
        d("/bin"), d("/etc"), d("/usr"), d("/usr/bin"), d("/tmp", 0o1777),
        f("/bin/busybox", 0o755), sym("/bin/sh", "busybox"), hard("/bin/ls", "/bin/busybox"),
        f("/etc/passwd"), f("/etc/group"), *extra,
        files={"/etc/passwd": PASSWD, "/etc/group": GROUP},
    )


def container(command=None, args=None, *, env=(), user=None, group=None, non_root=None, add=(), drop=(),
              working_dir=None, mounts=()) -> Container:
    sc = None
    if any(v is not None for v in (user, group, non_root)) or add or drop:
        sc = SecurityContext(run_as_user=user, run_as_group=group, run_as_non_root=non_root,
                             capabilities_add=tuple(add), capabilities_drop=tuple(drop))
    return Container(
        name="app", image="example.test/app:1",
        command=tuple(command) if command is not None else None,
        args=tuple(args) if args is not None else None,
        env=tuple(EnvVar(k, v) for k, v in env), working_dir=working_dir, security_context=sc,
        volume_mounts=tuple(mounts))


def run(fs: MergedFS, c: Container | None = None, *, config: ImageConfig | None = None, node: Platform = AMD64,
        volumes: tuple[Volume, ...] = (), pod_sc: SecurityContext | None = None, runtime: str = "containerd",
        image_platform: Platform | None = None) -> list[Finding]:
    c = c or container()
    config = config or ImageConfig()
    pod = PodSpec(containers=(c,), volumes=volumes, security_context=pod_sc)
    ctx = ExecContext(container=c, pod=pod, config=config, fs=fs, node=node,
                      image_platform=image_platform or node, runtime=runtime)
    return check_container(ctx)


def rules(findings: list[Finding]) -> list[str]:
    return [x.rule for x in findings]


def errors(findings: list[Finding]) -> list[Finding]:
    return [x for x in findings if x.severity.value == "error"]


__all__ = ["AMD64", "ARM64", "NATIVE", "OVERLAYFS", "ScriptInfo", "UnknownFormat", "VolumeMount"]
