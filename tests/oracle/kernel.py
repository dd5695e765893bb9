"""Ask the kernel: chroot, drop to a uid/gid/groups with a chosen capability set, execve under PTRACE_TRACEME.

A child that stops with SIGTRAP got through execve (the program never runs:
it is killed at the stop); a child whose execve fails writes the errno to a
pipe.  For a bare command name the child does what runc's Go ``exec.LookPath``
does — stat each ``$PATH`` candidate, skip directories, ``faccessat(X_OK,
AT_EACCESS)`` — with the kernel answering each question.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import signal
import struct
from dataclasses import dataclass

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long

PTRACE_TRACEME = 0
PR_SET_KEEPCAPS = 8
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
#: Linux capability numbers (linux/capability.h), by the names canrun uses (no CAP_ prefix).
CAP_BITS = {name: bit for bit, name in enumerate((
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
))}

NOT_FOUND_IN_PATH = -1
#: runc's lookup (Go's exec.LookPath, Go >= 1.19) found the name only through an empty or relative PATH entry.
ERR_DOT = -2


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _permitted() -> int:
    """This process's permitted set: capset cannot raise beyond it (a CI container may lack some).

    Read before the chroot, where there is no /proc.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapPrm:"):
                return int(line.split()[1], 16)
    return 0


def _capset(caps: frozenset[str], permitted: int) -> None:
    mask = 0
    for name in caps:
        if name in CAP_BITS:
            mask |= 1 << CAP_BITS[name]
    mask &= permitted
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = mask & 0xFFFFFFFF
    data[1].effective = data[1].permitted = mask >> 32
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


@dataclass(frozen=True)
class KernelResult:
    errno: int  # 0: execve succeeded; NOT_FOUND_IN_PATH: the PATH walk found nothing

    @property
    def name(self) -> str:
        if self.errno == 0:
            return "ok"
        if self.errno == NOT_FOUND_IN_PATH:
            return "not-in-PATH"
        if self.errno == ERR_DOT:
            return "ErrDot"
        return errno.errorcode.get(self.errno, str(self.errno))


def _lookpath(name: str, path_var: str) -> str | int:
    """runc's lookup of a bare name: the first executable hit, ERR_DOT if that hit is relative, or NOT_FOUND.

    This is not the kernel (which has no PATH) but runc's Go code, written here as
    Go's os/exec lp_unix.go has it: stat, skip directories, eaccess(X_OK); a hit
    whose joined path is not absolute is refused (ErrDot) instead of exec'd.
    """
    for directory in path_var.split(":") if path_var else []:
        candidate = os.path.join(directory or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o040000:
            continue
        if os.access(candidate, os.X_OK, effective_ids=True):
            return candidate if os.path.isabs(candidate) else ERR_DOT
    return NOT_FOUND_IN_PATH


def kernel_exec(root: str, command: str, *, uid: int, gid: int, groups: tuple[int, ...], caps: frozenset[str],
                cwd: str = "/", path_var: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                ) -> KernelResult:
    """What execve says about ``command`` inside ``root`` for these credentials."""
    permitted = _permitted()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            os.close(read_fd)
            os.chroot(root)
            os.chdir(cwd)
            os.setgroups(list(groups))
            os.setgid(gid)
            if _libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl")
            os.setuid(uid)
            _capset(caps, permitted)
            target = command
            if "/" not in command:
                found = _lookpath(command, path_var)
                if isinstance(found, int):
                    os.write(write_fd, struct.pack("i", found))
                    os._exit(0)
                target = found
            if _libc.ptrace(PTRACE_TRACEME, 0, None, None) != 0:
                raise OSError(ctypes.get_errno(), "ptrace")
            os.execve(target, [target], {"PATH": path_var})
        except OSError as exc:
            os.write(write_fd, struct.pack("i", exc.errno or 0))
        except BaseException:  # noqa: BLE001 - anything else must not escape the child
            code = 3
        os._exit(code)
    os.close(write_fd)
    try:
        _, status = os.waitpid(pid, 0)
        if os.WIFSTOPPED(status):
            assert os.WSTOPSIG(status) == signal.SIGTRAP, status
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return KernelResult(0)
        data = os.read(read_fd, 4)
        if os.WEXITSTATUS(status) != 0 or len(data) != 4:
            raise RuntimeError(f"oracle child failed before execve (status {status})")
        return KernelResult(struct.unpack("i", data)[0])
    finally:
        os.close(read_fd)
