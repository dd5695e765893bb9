"""The data an indexed layer and an image view are made of.

A layer is reduced, once, to a list of ``Entry`` records (path, type, mode,
owner, link, size) plus, for regular files with any execute bit, the few facts
``execve`` cares about (``ExecInfo``), and the bytes of a handful of small files
the checks need (``/etc/passwd``, ``/etc/group``).  That record is what the
on-disk cache stores, keyed by the layer digest, so a layer is never read twice.

Whiteouts are kept as entries of their own (``WHITEOUT`` names the path they
delete, ``OPAQUE`` the directory whose lower children they hide): applying them
is the merged view's job, not the indexer's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from canrun.platform import Platform


class EntryType(str, Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"
    WHITEOUT = "whiteout"
    OPAQUE = "opaque"


#: The type codes the cache formats store (a type's index here); append only, or bump both formats.
ENTRY_TYPES: tuple[EntryType, ...] = tuple(EntryType)
ENTRY_TYPE_CODES: dict[EntryType, int] = {t: i for i, t in enumerate(ENTRY_TYPES)}


@dataclass(frozen=True, slots=True)
class ElfInfo:
    """ELF identity of an executable: what the kernel's binfmt_elf checks before running it."""

    elf_class: int  # 32 or 64
    little_endian: bool
    machine: int  # e_machine
    #: PT_INTERP (the dynamic loader, e.g. /lib64/ld-linux-x86-64.so.2); None for static binaries.
    interpreter: str | None = None
    #: e_type: 2 ET_EXEC, 3 ET_DYN, other values cannot be executed.
    elf_type: int = 2


@dataclass(frozen=True, slots=True)
class ScriptInfo:
    """A ``#!`` line as binfmt_script reads it.

    ``interpreter`` ends at the first space or tab, exactly as the kernel cuts
    it, so a CRLF file keeps its ``\\r`` (``/bin/sh\\r``) — that is the bug.
    """

    interpreter: str
    argument: str | None = None
    #: The whole first line (without ``\\n``), for messages.
    line: str = ""


@dataclass(frozen=True, slots=True)
class UnknownFormat:
    """Neither ELF nor ``#!``: execve fails with ENOEXEC (runc has no ``sh`` fallback)."""

    magic: bytes = b""


ExecInfo = ElfInfo | ScriptInfo | UnknownFormat


@dataclass(frozen=True, slots=True)
class Entry:
    """One tar member after normalisation.

    ``path`` is absolute and lexically clean (``/usr/bin/ls``; ``..`` stops at
    the root as containerd's apply does).  ``link`` is the raw symlink target,
    or for a hardlink the clean absolute path of the file it names.  ``mode``
    holds the permission bits (``0o7777``).  ``exec`` is only filled for
    regular files with at least one execute bit.
    """

    path: str
    type: EntryType
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    link: str | None = None
    exec: ExecInfo | None = None


#: Small files whose bytes are kept in the index because checks read them.
KEPT_FILES: frozenset[str] = frozenset({"/etc/passwd", "/etc/group"})


@dataclass(slots=True)
class LayerIndex:
    """Everything canrun keeps of one layer."""

    digest: str
    entries: list[Entry]
    #: Contents of KEPT_FILES present in this layer (by clean absolute path).
    files: dict[str, bytes] = field(default_factory=dict)
    #: Bytes of the (compressed) blob as read and verified against its digest; -1 when not known.
    size: int = -1


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config that decide what a container execs and as whom."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    user: str = ""
    working_dir: str = ""
    platform: Platform | None = None

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ImageConfig:
        """Build from an OCI/Docker image config document (its ``config`` object and platform)."""
        cfg = data.get("config") or {}
        if not isinstance(cfg, dict):
            cfg = {}

        def strings(value: object) -> tuple[str, ...] | None:
            if value is None:
                return None
            if isinstance(value, str):
                return (value,)
            if isinstance(value, list):
                return tuple(str(v) for v in value)
            return None

        entrypoint = strings(cfg.get("Entrypoint"))
        if entrypoint == ("",):  # Docker writes [""] for "ENTRYPOINT []"-like resets: counts as absent
            entrypoint = None
        platform = None
        if data.get("architecture") or data.get("os"):
            platform = Platform.from_dict(data)
        return cls(
            entrypoint=entrypoint,
            cmd=strings(cfg.get("Cmd")),
            env=strings(cfg.get("Env")) or (),
            user=str(cfg.get("User") or ""),
            working_dir=str(cfg.get("WorkingDir") or ""),
            platform=platform,
        )
