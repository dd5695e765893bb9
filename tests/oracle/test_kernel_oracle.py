"""canrun's verdicts against the kernel's: same rootfs, same credentials, same command.

The rootfs is a real directory (static busybox, the host's dynamic /bin/ls
with its loader, an arm64 busybox, scripts, symlink chains, odd modes and
owners); canrun sees it exactly as it would see an image layer: tarred with
``tarfile`` and indexed by ``canrun.image.layer.index_stream``.  The kernel
sees it through chroot + execve under PTRACE_TRACEME (see kernel.py).

Every case asserts that canrun's blocking rule (or its absence) maps to the
errno the kernel returned, and that the rule is the specific one expected.
"""

from __future__ import annotations

import errno
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from canrun.checks import check_container
from canrun.checks.context import ExecContext
from canrun.checks.users import resolve_identity
from canrun.findings import Finding, Severity
from canrun.image.fs import MergedFS
from canrun.image.layer import index_stream
from canrun.image.model import ImageConfig
from canrun.platform import Platform
from canrun.spec import Container, EnvVar, PodSpec, SecurityContext

from .kernel import ERR_DOT, NOT_FOUND_IN_PATH, kernel_exec

pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(os.geteuid() != 0, reason="the kernel oracle needs root (chroot, setuid)"),
]

AMD64 = Platform("linux", "amd64")
GLIBC_LOADER = "/lib64/ld-linux-x86-64.so.2"
ERRNO_RULES = {
    errno.ENOENT: {"command-not-found", "interpreter-not-found", "loader-not-found"},
    errno.ENOTDIR: {"command-not-found"},
    errno.ELOOP: {"command-not-found", "exec-format"},
    errno.EACCES: {"command-not-executable"},
    errno.ENOEXEC: {"exec-format"},
    NOT_FOUND_IN_PATH: {"command-not-found"},
    ERR_DOT: {"command-not-found"},
}
BLOCKING = {"command-not-found", "command-not-executable", "exec-format", "interpreter-not-found", "loader-not-found"}


def _write(path: Path, data: bytes, mode: int, uid: int = 0, gid: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory, arm64_busybox: Path) -> Path:
    root = tmp_path_factory.mktemp("oracle") / "rootfs"
    busybox = Path("/bin/busybox").read_bytes()
    ls = Path("/bin/ls").read_bytes()
    loader_real = Path(GLIBC_LOADER).resolve()
    assert GLIBC_LOADER.encode() in ls, "the host /bin/ls must be a glibc binary"

    for d in ("bin", "etc", "lib64", "usr/bin", "usr/local/bin", "app/dir", "l", "m", "s", "p1", "p2", "p3"):
        (root / d).mkdir(parents=True, exist_ok=True)
    _write(root / "bin/busybox", busybox, 0o755)
    (root / "bin/sh").symlink_to("busybox")
    os.link(root / "bin/busybox", root / "usr/bin/env")
    # the loader: a real file in a lib dir, reached through an absolute symlink as on Debian
    _write(root / "usr/lib/x86_64-linux-gnu" / loader_real.name, loader_real.read_bytes(), 0o755)
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to(f"/usr/lib/x86_64-linux-gnu/{loader_real.name}")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\napp:x:1000:\nstaff:x:50:app\n")

    app = root / "app"
    _write(app / "static", busybox, 0o755)
    _write(app / "noexec", busybox, 0o644)
    _write(app / "root700", busybox, 0o700)
    _write(app / "root710", busybox, 0o710)
    _write(app / "user700", busybox, 0o700, uid=1000, gid=1000)
    _write(app / "owner605", busybox, 0o605, uid=1000, gid=1000)
    _write(app / "group750", busybox, 0o750, uid=0, gid=50)
    _write(app / "ls", ls, 0o755)
    _write(app / "ls-noloader", ls.replace(GLIBC_LOADER.encode(), b"/lib64/ld-linux-x86-64.so.9"), 0o755)
    _write(app / "arm64", arm64_busybox.read_bytes(), 0o755)
    _write(app / "empty", b"", 0o755)
    _write(app / "garbage", b"hello world\n", 0o755)
    _write(app / "good.sh", b"#!/bin/sh\necho hi\n", 0o755)
    _write(app / "crlf.sh", b"#!/bin/sh\r\necho hi\r\n", 0o755)
    _write(app / "bash.sh", b"#!/bin/bash\necho hi\n", 0o755)
    _write(app / "relinterp.sh", b"#!bin/sh\n", 0o755)
    _write(app / "via-noexec.sh", b"#!/app/noexec\n", 0o755)
    _write(app / "via-arm64.sh", b"#!/app/arm64 sh\n", 0o755)
    _write(app / "via-dynamic.sh", b"#!/app/ls-noloader\n", 0o755)
    _write(app / "spaces.sh", b"#!   /bin/sh   -e  \n", 0o755)
    # #!/usr/bin/env X: the kernel only needs env; a missing X fails later, inside env (exit 127)
    _write(app / "env-sh.sh", b"#!/usr/bin/env sh\necho hi\n", 0o755)
    _write(app / "env-missing.sh", b"#!/usr/bin/env nosuchprog\n", 0o755)
    _write(app / "env-crlf.sh", b"#!/usr/bin/env sh\r\necho hi\r\n", 0o755)
    _write(app / "env-static.sh", b"#!/usr/bin/env static\n", 0o755)
    # #! with an empty interpreter name: the kernel opens "", the working directory (EACCES)
    _write(app / "bang-only", b"#!", 0o755)
    _write(app / "bang-nul", b"#!\0./perl\n", 0o755)
    _write(app / "bang-spaces-nul", b"#!   \0\n", 0o755)
    (app / "dangling").symlink_to("nothere")
    (app / "loop-a").symlink_to("loop-b")
    (app / "loop-b").symlink_to("loop-a")
    (app / "abs-link").symlink_to("/bin/sh")
    (app / "dotdot-link").symlink_to("../../../../bin/busybox")
    # 40 symlinks resolve, 41 do not
    for prefix, count in (("l", 40), ("m", 41)):
        for i in range(count):
            target = f"/{prefix}/s{i + 1}" if i < count - 1 else "/bin/busybox"
            (root / prefix / f"s{i}").symlink_to(target)
    # #! chains: 5 rewrites work, 6 are ELOOP
    for prefix, count in (("p1", 5), ("p2", 6)):
        for i in range(count):
            nxt = f"/{prefix}/{i + 1}" if i < count - 1 else "/bin/busybox"
            _write(root / prefix / str(i), f"#!{nxt}\n".encode(), 0o755)
    # unsearchable directory
    (root / "secret").mkdir(mode=0o700)
    _write(root / "secret/tool", busybox, 0o755)
    os.chmod(root / "secret", 0o700)
    # PATH lookup: a non-executable candidate first, a directory, then the real one
    _write(root / "usr/local/bin/tool", busybox, 0o644)
    (root / "usr/local/sbin/tool").mkdir(parents=True)
    _write(root / "usr/bin/tool", busybox, 0o755)
    _write(root / "usr/local/bin/only-noexec", busybox, 0o644)
    _write(root / "usr/local/bin/only-root700", busybox, 0o700)
    return root


@pytest.fixture(scope="session")
def image_fs(rootfs: Path) -> MergedFS:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(rootfs), arcname=".")
    data = buf.getvalue()
    chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    return MergedFS.from_layers([index_stream(chunks, digest="sha256:" + "0" * 64)])


@dataclass(frozen=True)
class Case:
    command: str
    expect: str | None  # the blocking rule canrun must give, None for "runs"
    uid: int = 0
    gid: int | None = None
    drop: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    runtime: str = "containerd"
    supplemental: tuple[int, ...] = ()
    cwd: str = "/"
    privileged: bool = False
    path: str | None = None  # the container's PATH (default: the image default PATH)
    warning: bool = False  # a DAC_OVERRIDE warning is expected
    id: str = field(default="")


CASES = [
    Case("/app/static", None),
    Case("/bin/sh", None),
    Case("/app/abs-link", None),
    Case("/app/dotdot-link", None),
    Case("/app/missing", "command-not-found"),
    Case("/app/dangling", "command-not-found"),
    Case("/app/loop-a", "command-not-found"),
    Case("/app/static/x", "command-not-found"),
    Case("/l/s0", None),
    Case("/m/s0", "command-not-found"),
    Case("/app/dir", "command-not-executable"),
    Case("/app/noexec", "command-not-executable"),
    Case("/app/noexec", "command-not-executable", uid=1000),
    # no x bit at all: EACCES even for root with every capability (canrun judges this without the image)
    Case("/app/noexec", "command-not-executable", add=("ALL",)),
    Case("/app/root700", None),
    Case("/app/root700", None, uid=1000, warning=True),
    Case("/app/root700", "command-not-executable", uid=1000, runtime="docker"),
    Case("/app/root700", "command-not-executable", uid=1000, drop=("ALL",)),
    Case("/app/root700", None, uid=1000, runtime="cri-o", warning=True),
    # privileged: every capability, whatever drop says (containerd applies the list, then WithPrivileged)
    Case("/app/root710", None, uid=1000, drop=("ALL",), privileged=True, warning=True),
    Case("/app/root710", "command-not-executable", uid=1000, drop=("ALL",)),
    Case("/app/root710", "command-not-executable", uid=1000, privileged=True, runtime="docker"),
    Case("/secret/tool", None, uid=1000, drop=("ALL",), privileged=True, warning=True),
    Case("/app/user700", None),
    Case("/app/user700", "command-not-executable", drop=("ALL",)),
    Case("/app/user700", None, uid=1000, drop=("ALL",)),
    Case("/app/owner605", "command-not-executable", uid=1000, drop=("ALL",)),
    Case("/app/owner605", None, uid=2000, gid=2000, drop=("ALL",)),
    Case("/app/group750", None, uid=1000, drop=("ALL",)),  # app is in staff (50) via /etc/group
    Case("/app/group750", "command-not-executable", uid=2000, gid=2000, drop=("ALL",)),
    Case("/app/group750", None, uid=2000, gid=2000, drop=("ALL",), supplemental=(50,)),
    Case("/secret/tool", None, uid=1000, warning=True),
    Case("/secret/tool", "command-not-executable", uid=1000, drop=("ALL",)),
    Case("/app/ls", None),
    Case("/app/ls-noloader", "loader-not-found"),
    Case("/app/arm64", "exec-format"),
    Case("/app/empty", "exec-format"),
    Case("/app/garbage", "exec-format"),
    Case("/app/good.sh", None),
    Case("/app/spaces.sh", None),
    Case("/app/crlf.sh", "interpreter-not-found"),
    Case("/app/bash.sh", "interpreter-not-found"),
    Case("/app/env-sh.sh", None),
    Case("/app/env-missing.sh", None),  # execve succeeds: canrun only warns (interpreter-not-found, warning)
    Case("/app/env-crlf.sh", None),
    Case("/app/relinterp.sh", None),
    Case("/app/relinterp.sh", "interpreter-not-found", cwd="/app"),
    Case("/app/via-noexec.sh", "command-not-executable"),
    Case("/app/via-arm64.sh", "exec-format"),
    Case("/app/via-dynamic.sh", "loader-not-found"),
    Case("/p1/0", None),
    Case("/p2/0", "exec-format"),
    Case("./static", None, cwd="/app"),
    Case("../bin/busybox", None, cwd="/app"),
    Case("tool", None),
    Case("tool", None, uid=1000, drop=("ALL",)),
    Case("only-noexec", "command-not-found"),
    Case("only-root700", None),
    Case("only-root700", "command-not-found", uid=1000, drop=("ALL",)),
    Case("nosuchcommand", "command-not-found"),
    # runc's lookup is Go's exec.LookPath: a hit through an empty or relative PATH entry is refused (ErrDot) ...
    Case("static", "command-not-found", cwd="/app", path=":/bin"),
    Case("sh", "command-not-found", path="bin:/usr/bin"),
    Case("static", "command-not-found", cwd="/app", path="/usr/bin:.:/bin"),
    # ... but only a hit: an empty entry that finds nothing is passed over, and a name with a slash is a path
    Case("sh", None, cwd="/app", path=":/bin"),
    Case("./static", None, cwd="/app", path=":/bin"),
    # env (execvp) runs what it finds through a relative entry: the #! exec itself succeeds either way
    Case("/app/env-static.sh", None, cwd="/app", path=":/bin"),
    Case("/app/bang-only", "command-not-executable"),
    Case("/app/bang-nul", "command-not-executable"),
    Case("/app/bang-spaces-nul", "command-not-executable", cwd="/app"),
    Case("sh", None),
]


def _id(case: Case) -> str:
    extra = [f"uid{case.uid}"]
    if case.drop:
        extra.append("drop-" + "-".join(case.drop))
    if case.add:
        extra.append("add-" + "-".join(case.add))
    if case.runtime != "containerd":
        extra.append(case.runtime)
    if case.privileged:
        extra.append("privileged")
    if case.supplemental:
        extra.append("groups")
    if case.cwd != "/":
        extra.append("cwd" + case.cwd.replace("/", "_"))
    if case.path is not None:
        extra.append("PATH=" + case.path)
    return case.command + "[" + ",".join(extra) + "]"


def _verdict(fs: MergedFS, case: Case) -> tuple[list[Finding], object]:
    sc = SecurityContext(run_as_user=case.uid, run_as_group=case.gid, capabilities_add=case.add,
                         capabilities_drop=case.drop, privileged=case.privileged or None)
    env = (EnvVar("PATH", case.path),) if case.path is not None else ()
    container = Container(name="c", image="oracle", command=(case.command,), security_context=sc,
                          working_dir=case.cwd, env=env)
    pod = PodSpec(containers=(container,), security_context=SecurityContext(supplemental_groups=case.supplemental))
    ctx = ExecContext(container=container, pod=pod, config=ImageConfig(), fs=fs, node=AMD64, image_platform=AMD64,
                      runtime=case.runtime)
    findings = check_container(ctx)
    identity, _ = resolve_identity(pod, container, "", fs, case.runtime)
    return findings, identity


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_canrun_agrees_with_the_kernel(case: Case, rootfs: Path, image_fs: MergedFS) -> None:
    findings, identity = _verdict(image_fs, case)
    assert identity is not None
    blocking = [f.rule for f in findings if f.severity is Severity.ERROR and f.rule in BLOCKING]
    kernel = kernel_exec(str(rootfs), case.command, uid=identity.uid, gid=identity.gid,
                         groups=identity.groups, caps=identity.creds.caps, cwd=case.cwd,
                         **({"path_var": case.path} if case.path is not None else {}))
    messages = [f.message for f in findings]
    if kernel.errno == 0:
        assert blocking == [], (kernel.name, messages)
    else:
        assert len(blocking) == 1, (kernel.name, messages)
        assert blocking[0] in ERRNO_RULES[kernel.errno], (kernel.name, messages)
    assert (blocking[0] if blocking else None) == case.expect, (kernel.name, messages)
    warned = any(f.severity is Severity.WARNING and f.evidence.get("hangs_on") for f in findings)
    assert warned is case.warning, messages


def test_oracle_rootfs_has_no_binfmt_misc_for_arm64() -> None:
    """If qemu-user were registered for aarch64, the arm64 case would run and the oracle would be wrong."""
    misc = Path("/proc/sys/fs/binfmt_misc")
    registered = [p.name for p in misc.iterdir()] if misc.is_dir() else []
    assert not any("aarch64" in name or "arm64" in name for name in registered)

