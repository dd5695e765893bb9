"""Will the command exec?  runc's lookup followed by the kernel's ``execve``, modelled step by step.

Lookup (runc, Go's ``exec.LookPath``, inside the container root after volumes
are mounted and credentials dropped): a name containing ``/`` is a path,
relative to the working directory; a bare name walks ``$PATH`` and *skips*
directories and candidates the process may not execute (``faccessat(X_OK,
AT_EACCESS)``): none left is "executable file not found in $PATH".  The first
hit found through an empty or relative entry (``PATH=:/bin``) is refused
(Go >= 1.19, ErrDot), even when a later entry has the program.

execve (the kernel): every directory on the way needs search permission;
the file must be a regular file the process may execute (``generic_permission``:
one class applies; CAP_DAC_OVERRIDE allows it when *any* x bit is set); then
binfmt_script (``#!``: the interpreter must resolve and be executable itself,
recursively, at most 5 rewrites before ELOOP) or binfmt_elf (machine/class/
byte order must be the node's; PT_INTERP must resolve and be executable);
anything else is ENOEXEC — runc has no ``sh`` fallback.

Each failure becomes one finding whose message carries the evidence (path,
mode, owner, user, symlink hops, the layer that deleted it) and a fix hint
specific to the case.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from canrun.checks.context import ExecContext
from canrun.checks.process import Process
from canrun.checks.users import Identity, effective_security, prefixed_capabilities
from canrun.checks.volumes import MountedVolume, volume_hint
from canrun.findings import Finding, Severity, finding
from canrun.image.binary import INTERP_BEYOND_HEAD
from canrun.image.node import Node
from canrun.image.walk import (
    CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, EACCES, ELOOP, ENOENT, ENOTDIR, MAX_SYMLINKS, MAX_WALK_COMPONENTS, OK,
    UNKNOWN, Credentials, Mount, Resolution, WalkBudget, permission,
)
from canrun.image.model import ElfInfo, EntryType, ScriptInfo, UnknownFormat
from canrun.platform import elf_machine_name

#: exec_binprm allows this many #! rewrites; the next one is ELOOP (measured against the kernel in tests/oracle).
MAX_INTERP_DEPTH = 5
#: Path components one container's lookups walk at most (the command, its PATH candidates, interpreters,
#: loaders): a few kernel-sized lookups; a hostile image (padded symlinks, thousands of PATH entries) stops here.
JUDGE_WALK_COMPONENTS = 4 * MAX_WALK_COMPONENTS

_BLOCKING = {"command-not-found", "command-not-executable", "exec-format", "interpreter-not-found",
             "loader-not-found"}


def _elf_desc(info: ElfInfo) -> str:
    order = "LSB" if info.little_endian else "MSB"
    link = "static" if info.interpreter is None else "dynamic"
    return f"{elf_machine_name(info.machine, info.elf_class)} ELF {info.elf_class}-bit {order} ({link})"


def _hops(res: Resolution) -> list[dict[str, str]]:
    return [{"link": h.link, "target": h.target} for h in res.hops]


def _via(res: Resolution) -> str:
    """`` (/bin/sh -> busybox)`` when symlinks were followed."""
    if not res.hops:
        return ""
    return " (" + ", ".join(f"{h.link} -> {h.target}" for h in res.hops) + ")"


class Skip(Enum):
    """Why a PATH candidate was passed over."""

    UNSEARCHABLE = "unsearchable"
    DIRECTORY = "directory"
    NOT_EXECUTABLE = "not-executable"


@dataclass(frozen=True)
class Skipped:
    candidate: str
    reason: Skip
    #: The reason in words, with the evidence, for the message.
    detail: str


@dataclass
class PathSearch:
    """One walk of ``$PATH``: the entries searched, the hit, or the candidate inside an unknowable mount."""

    dirs: list[str]
    found: Resolution | None = None
    #: The empty ('.') or relative PATH entry the hit was found through, if it was.
    relative: str | None = None
    unknown: Resolution | None = None
    skipped: list[Skipped] = field(default_factory=list)


@dataclass
class Judge:
    """One verdict for one set of credentials (``checks/imageless.py`` reuses it without an image)."""

    ctx: ExecContext
    process: Process
    identity: Identity
    creds: Credentials
    mounts: Sequence[Mount]
    findings: list[Finding] = field(default_factory=list)
    #: Path components all of this judgement's lookups may walk together (bounded work per container).
    budget: WalkBudget = field(default_factory=lambda: WalkBudget(JUDGE_WALK_COMPONENTS))
    #: Facts for the mislabeled-image note: the ELF that would finally run.
    final_elf: ElfInfo | None = None
    final_path: str | None = None

    # ---------------------------------------------------------------- helpers
    def resolve(self, path: str) -> Resolution:
        return self.ctx.fs.resolve(path, self.process.cwd, creds=self.creds, mounts=self.mounts, budget=self.budget)

    def add(self, rule: str, message: str, *, hint: str | None = None, severity: Severity | None = None,
            **evidence: Any) -> None:
        self.findings.append(finding(rule, message, hint=hint, severity=severity, evidence=evidence))

    def who(self) -> str:
        return self.identity.describe() if self.creds == self.identity.creds else self.creds.describe()

    def why_missing(self, res: Resolution) -> str:
        """Why a resolution failed, in words, with the evidence."""
        if res.outcome == ELOOP:
            return f"{res.path} goes through more than {MAX_SYMLINKS} symbolic links (ELOOP){_via_short(res)}"
        if res.outcome == ENOTDIR:
            blocker = res.blocker
            what = blocker.type.value if blocker else "file"
            return f"{res.real} is a {what}, not a directory, so {res.path} cannot exist (ENOTDIR){_via(res)}"
        if res.outcome == EACCES and res.blocker is not None:
            b = res.blocker
            return (f"directory {b.path} (mode {b.mode_octal}, owner {b.owner}) is not searchable by "
                    f"{self.who()}{_via(res)}")
        missing = res.real or res.path
        text = f"{missing} does not exist"
        if res.hops:
            last = res.hops[-1]
            text = f"{res.path} is a symlink chain ending at {missing}, which does not exist{_via(res)}"
            if last.target == "":
                text = f"{last.link} is a symlink with an empty target"
        removed = self.ctx.fs.removed_by(missing) if missing else None
        if removed is not None:
            text += f" (deleted by {self.ctx.layer_label(removed)})"
        if res.mount is not None and isinstance(res.mount, MountedVolume):
            text += f" (in the {res.mount.describe()}, which replaces the image's {res.mount.path})"
        return text

    def evidence_of(self, res: Resolution, node: Node | None = None) -> dict[str, Any]:
        ev: dict[str, Any] = {"path": res.path, "resolved": res.real, "outcome": res.outcome, "hops": _hops(res),
                              "user": self.identity.evidence()}
        node = node or res.node or res.blocker
        if node is not None:
            ev.update(mode=node.mode_octal, uid=node.uid, gid=node.gid, type=node.type.value)
            if node.layer >= 0:
                ev["layer"] = node.layer + 1
            if node.volume:
                ev["volume"] = node.volume
        if res.outcome == ENOENT and res.real:
            removed = self.ctx.fs.removed_by(res.real)
            if removed is not None:
                ev["removed_by_layer"] = removed + 1
        return ev

    # ---------------------------------------------------------------- lookup
    def run(self, argv0: str) -> None:
        res = self.lookup(argv0)
        if res is not None:
            self.execve(res, argv0, depth=0, chain=[])

    def lookup(self, argv0: str) -> Resolution | None:
        origin = self.process.origin_phrase()
        if argv0 == "":
            self.add("command-not-found", f"the command ({origin}) is an empty string: "
                     f"exec: \"\": executable file not found in $PATH", path="")
            return None
        if "/" in argv0:
            res = self.resolve(argv0)
            if res.outcome == OK:
                return res
            self.path_failure(res, f"command {argv0!r} ({origin})")
            return None
        search = self.search_path(argv0)
        if search is None:
            self.add("not-verified", f"the command {argv0!r} is looked up on PATH, which comes from valueFrom: "
                     f"its value is only known at run time", path=argv0)
            return None
        if search.unknown is not None:
            candidate = search.unknown.path
            if search.unknown.reason:
                self.add("not-verified", f"looking up {argv0!r} on PATH was not judged: {search.unknown.reason}",
                         path=candidate, searched_entries=len(search.dirs))
                return None
            self.add("not-verified", f"looking up {argv0!r} on PATH reaches {candidate}, inside the "
                     f"{_mount_desc(search.unknown)}: whether it is there is only known at run time",
                     path=candidate, searched=search.dirs)
            return None
        if search.found is not None and search.relative:
            found = search.found
            self.add("command-not-found",
                     f"{argv0!r} ({origin}) is found on PATH only as {found.path}, through the "
                     f"{'empty' if search.relative == '.' else 'relative'} PATH entry {search.relative!r} "
                     f"(PATH={self.process.path_var}): runc's lookup (Go's exec.LookPath) refuses it: exec: "
                     f"\"{argv0}\": cannot run executable found relative to current directory",
                     hint=f"put absolute directories only in PATH (an empty entry, as in `PATH=:/bin` or a trailing "
                          f"`:`, means the working directory), or write the command as ./{argv0} or by its full path",
                     path=argv0, searched=search.dirs, relative_entry=search.relative, resolved=found.real,
                     user=self.identity.evidence())
            return None
        if search.found is not None:
            return search.found
        skipped = search.skipped
        dirs = search.dirs
        searched = ":".join(dirs) if dirs else "(empty)"
        detail = ""
        if skipped:
            detail = "; skipped " + "; ".join(f"{s.candidate} ({s.detail})" for s in skipped)
        hint = None
        not_executable = next((s for s in skipped if s.reason is Skip.NOT_EXECUTABLE), None)
        if not_executable is not None:
            hint = (f"set the execute bit on {not_executable.candidate} (chmod 0755, COPY --chmod=755) or run as a "
                    f"user that may execute it")
        elif not skipped:
            hint = (f"install {argv0} in the image, give its full path in `command`, or add its directory to "
                    f"PATH (the image Env or the container env)")
        self.add("command-not-found",
                 f"{argv0!r} ({origin}) is not on PATH for {self.who()}: executable file not found in $PATH "
                 f"(searched {searched}){detail}",
                 hint=hint, path=argv0, searched=dirs, skipped=[s.candidate for s in skipped],
                 user=self.identity.evidence())
        return None

    def search_path(self, program: str) -> PathSearch | None:
        """Walk ``$PATH`` for a bare name, skipping what the process may not execute; None if PATH is unknown.

        One walk for runc's lookup of the command and for ``env``'s lookup of a
        ``#!/usr/bin/env X`` program: both skip directories and candidates
        ``faccessat(X_OK)`` refuses, and an empty entry means the working
        directory.  They differ on a hit found through an empty or relative
        entry: Go's ``exec.LookPath`` (runc) stops there and refuses it with
        ErrDot, execvp (``env``) runs it; ``PathSearch.relative`` names that
        entry and the caller decides.
        """
        path_var = self.process.path_var
        if path_var is None:
            return None
        search = PathSearch([d or "." for d in path_var.split(":")] if path_var else [])
        for directory in search.dirs:
            candidate = posixpath.join(directory, program)
            res = self.resolve(candidate)
            if res.outcome == UNKNOWN:
                search.unknown = res
                return search
            if res.outcome != OK or res.node is None:
                if res.outcome == EACCES and res.blocker is not None:
                    search.skipped.append(Skipped(candidate, Skip.UNSEARCHABLE,
                                                  f"directory {res.blocker.path} is not searchable "
                                                  f"({res.blocker.mode_octal} {res.blocker.owner})"))
                continue
            node = res.node
            if node.type is EntryType.DIR:
                search.skipped.append(Skipped(candidate, Skip.DIRECTORY, "a directory"))
                continue
            if not permission(node, self.creds)[0]:
                search.skipped.append(Skipped(candidate, Skip.NOT_EXECUTABLE,
                                              f"not executable: mode {node.mode_octal}, owner {node.owner}"))
                continue
            search.found = res
            if not directory.startswith("/"):
                search.relative = directory
            return search
        return search

    def path_failure(self, res: Resolution, what: str, *, rule_missing: str = "command-not-found",
                     hint_missing: str | None = None) -> None:
        if res.outcome == UNKNOWN and res.reason:
            self.add("not-verified", f"{what} was not judged: {res.reason}", **self.evidence_of(res))
        elif res.outcome == UNKNOWN:
            self.add("not-verified", f"{what} is inside the {_mount_desc(res)}: canrun cannot see what will be "
                     f"there", **self.evidence_of(res))
        elif res.outcome == EACCES:
            b = res.blocker
            hint = (f"make {b.path} searchable (chmod o+x {b.path}, or 0755) or run as a user that owns it"
                    if b is not None else None)
            self.add("command-not-executable", f"{what} cannot be reached: {self.why_missing(res)}; "
                     f"execve fails with permission denied", hint=hint, **self.evidence_of(res))
        else:
            self.add(rule_missing, f"{what}: {self.why_missing(res)}", hint=hint_missing, **self.evidence_of(res))

    # ---------------------------------------------------------------- execve
    def execve(self, res: Resolution, name: str, *, depth: int, chain: list[str]) -> None:
        node = res.node
        assert node is not None
        what = _role(name, chain, self.process)
        if node.type is EntryType.DIR:
            self.add("command-not-executable", f"{what} is a directory{_via(res)}: execve fails with "
                     f"permission denied (exit 126)",
                     hint="point the command at a file inside that directory", **self.evidence_of(res))
            return
        if node.type is not EntryType.FILE:
            self.add("command-not-executable", f"{what} is a {node.type.value}, not a regular file{_via(res)}: "
                     f"execve fails with permission denied", **self.evidence_of(res))
            return
        allowed, _ = permission(node, self.creds)
        mount = res.mount if isinstance(res.mount, MountedVolume) else None
        if not allowed:
            self.not_executable(res, node, what, mount)
            return
        if node.volume is not None:
            self.add("not-verified", f"{what} comes from the {mount.describe() if mount else node.volume} "
                     f"with mode {node.mode_octal}: executable, but its content (ELF or #! line) is not visible "
                     f"to canrun", **self.evidence_of(res))
            return
        info = node.exec
        if isinstance(info, ElfInfo):
            self.elf(res, node, info, what)
        elif isinstance(info, ScriptInfo):
            self.script(res, node, info, what, depth=depth, chain=chain)
        elif isinstance(info, UnknownFormat):
            magic = info.magic.hex() or "nothing (empty file)"
            why = "a #! line the kernel rejects" if info.magic.startswith(b"#!") else \
                f"neither an ELF binary nor a #! script (it starts with {magic})"
            self.add("exec-format", f"{what} is {why}: execve fails with exec format error (ENOEXEC); "
                     f"runc does not fall back to sh", **self.evidence_of(res))
        else:
            self.add("not-verified", f"{what} has no readable exec header in the index", **self.evidence_of(res))

    def not_executable(self, res: Resolution, node: Node, what: str, mount: MountedVolume | None) -> None:
        if not node.mode & 0o111:
            why = "no execute bit at all"
        elif self.creds.uid == node.uid:
            why = "its owner has no execute bit (only the owner class applies to the owner)"
        elif self.creds.in_group(node.gid):
            why = f"its group {node.gid} has no execute bit (the group class applies)"
        else:
            why = "others have no execute bit"
        if mount is not None and node.volume is not None:
            hint = volume_hint(node, mount)
            where = f" from the {mount.describe()}"
        else:
            hint = (f"chmod 0755 {node.path} in the Dockerfile (COPY --chmod=755), or run as a user that may "
                    f"execute it")
            where = ""
            if node.layer >= 0:
                where = f" (added by {self.ctx.layer_label(node.layer)})"
        self.add("command-not-executable",
                 f"{what}{where} is mode {node.mode_octal} owned by {node.owner}: {why} for {self.who()}"
                 f"{_via(res)}; execve fails with permission denied (exit 126)",
                 hint=hint, **self.evidence_of(res))

    def elf(self, res: Resolution, node: Node, info: ElfInfo, what: str) -> None:
        node_platform = self.ctx.node
        runs = node_platform.runs_elf(info.elf_class, info.machine, info.little_endian)
        if not runs:
            self.add("exec-format", f"{what} is {_elf_desc(info)} code; a {node_platform} node cannot run it: "
                     f"exec format error (ENOEXEC)",
                     hint=f"build the binary for {node_platform} (GOARCH/--platform), or keep the pod off "
                          f"{node_platform} nodes",
                     elf_runs_on_node=False, machine=info.machine, elf_class=info.elf_class,
                     **self.evidence_of(res))
            return
        self.final_elf, self.final_path = info, node.path
        if info.interpreter is None:
            return
        if info.interpreter == INTERP_BEYOND_HEAD:
            self.add("not-verified", f"{what} is dynamically linked but its loader path lies beyond the bytes "
                     f"canrun reads: the loader was not checked", **self.evidence_of(res))
            return
        loader = info.interpreter
        lres = self.resolve(loader)
        if lres.outcome != OK:
            base = ("glibc" if "ld-linux" in loader else "musl" if "ld-musl" in loader else "its libc")
            self.path_failure(
                lres, f"{what} is a dynamically linked {_elf_desc(info)}; its loader {loader}",
                rule_missing="loader-not-found",
                hint_missing=(f"build a static binary (CGO_ENABLED=0, -static), or use a base image with "
                              f"{base} (the binary needs {loader})"))
            return
        lnode = lres.node
        assert lnode is not None
        lwhat = f"the loader {loader} of {what}"
        if lnode.type is not EntryType.FILE:
            self.add("command-not-executable", f"{lwhat} is a {lnode.type.value}, not a file{_via(lres)}",
                     **self.evidence_of(lres))
            return
        allowed, _ = permission(lnode, self.creds)
        if not allowed:
            self.not_executable(lres, lnode, lwhat, None)
            return
        linfo = lnode.exec
        if isinstance(linfo, ElfInfo):
            if not node_platform.runs_elf(linfo.elf_class, linfo.machine, linfo.little_endian):
                self.add("exec-format", f"{lwhat} is {_elf_desc(linfo)} code; a {node_platform} node cannot "
                         f"run it", elf_runs_on_node=False, **self.evidence_of(lres))
        elif lnode.volume is None:
            self.add("exec-format", f"{lwhat} is not an ELF file: execve fails (ELIBBAD)",
                     **self.evidence_of(lres))

    def script(self, res: Resolution, node: Node, info: ScriptInfo, what: str, *, depth: int,
               chain: list[str]) -> None:
        if depth >= MAX_INTERP_DEPTH:
            self.add("exec-format", f"{what} starts a chain of more than {MAX_INTERP_DEPTH} #! interpreters: "
                     f"execve fails with ELOOP", **self.evidence_of(res))
            return
        interp = info.interpreter
        line = info.line or f"#!{interp}"
        if not interp:
            # binfmt_script found a name that is empty ("#!", "#!\0…", "#!   \0"): open_exec("") walks no
            # component and ends at the working directory, and exec of a directory is EACCES.
            self.add("command-not-executable",
                     f"{what} starts with {line!r}, which names no interpreter before the end of the line or a NUL "
                     f"byte: the kernel opens the empty name, which is the working directory "
                     f"({self.process.cwd or '/'}), a directory: execve fails with permission denied (EACCES, "
                     f"exit 126)",
                     hint="write the interpreter's absolute path on the first line (for example #!/bin/sh), or "
                          "remove the #! line and run the file through its interpreter in `command`",
                     interpreter="", **self.evidence_of(res))
            return
        ires = self.resolve(interp)
        if ires.outcome == OK:
            assert ires.node is not None
            self.execve(ires, interp, depth=depth + 1, chain=[*chain, node.path])
            if posixpath.basename(interp) == "env" and info.argument:
                self.env_program(node, info)
            return
        if ires.outcome in (ENOENT, ENOTDIR, ELOOP) and "\r" in interp:
            clean = interp.replace("\r", "")
            exists = self.resolve(clean).outcome == OK
            tail = f" ({clean} itself {'exists' if exists else 'does not exist either'})"
            self.add("interpreter-not-found",
                     f"{what} has Windows (CRLF) line endings: its first line {line!r} asks the kernel for "
                     f"{interp!r}, with a carriage return, which does not exist{tail}; execve fails with "
                     f"no such file or directory",
                     hint="convert the script to LF line endings (dos2unix, `sed -i 's/\\r$//'`, or "
                          "`*.sh text eol=lf` in .gitattributes) before COPYing it into the image",
                     interpreter=interp, crlf=True, **self.evidence_of(res))
            return
        if ires.outcome in (ENOENT, ENOTDIR, ELOOP):
            self.add("interpreter-not-found",
                     f"{what} starts with {line!r} but {self.why_missing(ires)}; execve fails with no such file "
                     f"or directory",
                     hint=f"install {posixpath.basename(interp)} in the image, or change the #! line to an "
                          f"interpreter the image has (e.g. #!/bin/sh)",
                     interpreter=interp, **self.evidence_of(res))
            return
        self.path_failure(ires, f"the interpreter {interp} of {what}")

    def env_program(self, node: Node, info: ScriptInfo) -> None:
        """``#!/usr/bin/env X``: env looks X up on PATH at run time; a miss is exit 127 after exec succeeded."""
        program = _env_program(info.argument or "")
        if program is None or "$" in program:
            return
        if "/" in program:
            found = self.resolve(program).outcome == OK
        else:
            search = self.search_path(program)
            if search is None or search.unknown is not None:
                return
            found = search.found is not None
        if found:
            return
        crlf = program.endswith("\r")
        why = (f"the #! line has a carriage return (CRLF line endings), so env looks for {program!r}"
               if crlf else f"{program!r} is not on PATH ({self.process.path_var})")
        self.add("interpreter-not-found",
                 f"{node.path} starts with {info.line!r}: the container starts, then env fails (exit 127) "
                 f"because {why}",
                 severity=Severity.WARNING,
                 hint=("convert the script to LF line endings (dos2unix)" if crlf else
                       f"install {program} in the image, or add its directory to PATH"),
                 path=node.path, interpreter=program, crlf=crlf)


def _env_program(argument: str) -> str | None:
    """The program ``env`` runs from a ``#!/usr/bin/env ARG`` line (``-S`` split, options and VAR=x skipped)."""
    words = argument.split() if argument.startswith("-S") or " " in argument else [argument]
    if words and words[0].startswith("-S"):
        rest = words[0][2:]
        words = ([rest] if rest else []) + words[1:]
    skip_next = False
    for word in words:
        if skip_next:
            skip_next = False
            continue
        if word in ("-u", "--unset", "-C", "--chdir"):
            skip_next = True
            continue
        if word.startswith("-") or ("=" in word and not word.startswith("=")):
            continue
        return word
    return None


def _via_short(res: Resolution) -> str:
    if not res.hops:
        return ""
    first = res.hops[0]
    return f" (starting {first.link} -> {first.target})"


def _mount_desc(res: Resolution) -> str:
    if isinstance(res.mount, MountedVolume):
        return res.mount.describe()
    return "a volume"


def _role(name: str, chain: list[str], process: Process) -> str:
    if not chain:
        return f"the command {name!r} ({process.origin_phrase()})"
    return f"the #! interpreter {name} of {chain[-1]}"


def _prefix_note(ctx: ExecContext) -> str:
    """Why a ``CAP_``-prefixed add/drop did not do what its author meant (containerd only)."""
    sec = effective_security(ctx.pod, ctx.container)
    names = prefixed_capabilities(ctx.runtime, (*sec.capabilities_add, *sec.capabilities_drop))
    if not names:
        return ""
    listed = ", ".join(names)
    return (f"; note that containerd prepends CAP_ to capability names, so {listed} names nothing it knows "
            f"and is ignored: write them without the CAP_ prefix")


def _errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.ERROR and f.rule in _BLOCKING]


def judge_command(ctx: ExecContext, argv0: str, process: Process, identity: Identity,
                  mounts: Sequence[Mount]) -> list[Finding]:
    """Findings for exec'ing ``argv0`` as ``identity``, including where the verdict hangs on CAP_DAC_OVERRIDE."""
    judge = Judge(ctx, process, identity, identity.creds, mounts)
    judge.run(argv0)
    found = judge.findings
    errors = _errors(found)
    dac = (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)
    if identity.uid != 0 and not errors and any(c in identity.creds.caps for c in dac):
        without = Judge(ctx, process, identity, identity.creds.without(*dac), mounts)
        without.run(argv0)
        denied = [f for f in _errors(without.findings) if f.rule in ("command-not-executable", "command-not-found")]
        if denied:
            f = denied[0]
            ev = f.evidence
            what = ev.get("resolved") or ev.get("path")
            kind = "directory" if ev.get("type") == "dir" else "file"
            if effective_security(ctx.pod, ctx.container).privileged:
                keeps, without = ("is privileged (every capability, CAP_DAC_OVERRIDE among them)",
                                  "without privileged: true")
            else:
                keeps, without = ("keeps CAP_DAC_OVERRIDE",
                                  "with capabilities.drop: [ALL] (the restricted Pod Security profile)")
            found.append(finding(
                "command-not-executable",
                f"{kind} {what} is mode {ev.get('mode')} owned by {ev.get('uid')}:{ev.get('gid')}: "
                f"{identity.describe()} runs {argv0!r} under {ctx.runtime} only because the container {keeps}; "
                f"it fails with permission denied under Docker/cri-dockerd or {without}{_prefix_note(ctx)}",
                severity=Severity.WARNING,
                hint=f.hint,
                evidence={**f.evidence, "hangs_on": "CAP_DAC_OVERRIDE"}))
    elif identity.uid != 0 and errors and CAP_DAC_OVERRIDE not in identity.creds.caps:
        withcap = Judge(ctx, process, identity, identity.creds.with_caps(CAP_DAC_OVERRIDE), mounts)
        withcap.run(argv0)
        if not _errors(withcap.findings):
            reason = ("Docker (cri-dockerd) clears the capabilities of non-root users"
                      if ctx.runtime == "docker" and CAP_DAC_OVERRIDE in identity.capabilities
                      else "capabilities.drop removes CAP_DAC_OVERRIDE") + _prefix_note(ctx)
            found = [
                f if f not in errors else f.with_context(
                    message=f"{f.message} ({reason}; with CAP_DAC_OVERRIDE it would run)",
                    evidence={**f.evidence, "hangs_on": "CAP_DAC_OVERRIDE"})
                for f in found]
    if judge.final_elf is not None and not _errors(found):
        img = ctx.image_platform
        if ctx.node.match_rank(img) is None:
            found.append(finding(
                "not-verified",
                f"the image config says {img}, but {judge.final_path} is {_elf_desc(judge.final_elf)} code that "
                f"runs on {ctx.node}: judged by the code, not the label",
                evidence={"elf_runs_on_node": True, "path": judge.final_path, "image_platform": str(img)}))
    return found


def check_exec(ctx: ExecContext, process: Process, identity: Identity, mounts: Sequence[Mount]) -> list[Finding]:
    """runc's lookup and the kernel's execve of the process's argv[0], with ``mounts`` over the image."""
    if process.unknown_vars and any(f"$({v})" in process.argv[0] for v in process.unknown_vars):
        return []
    return judge_command(ctx, process.argv[0], process, identity, mounts)


__all__ = ["MAX_INTERP_DEPTH", "check_exec", "judge_command"]
