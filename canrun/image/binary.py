"""What ``execve`` will make of a file, judged from its first bytes.

Two binary formats matter to a container's command: ELF (``binfmt_elf``) and
``#!`` scripts (``binfmt_script``).  Both are parsed the way the kernel parses
them, not the way ``file(1)`` describes them, because the question is "will
execve succeed", so the rules that make the kernel return ENOEXEC are the
rules reproduced here:

* ELF: magic, class and byte order decide how the rest is read; ``e_type`` must
  be ET_EXEC or ET_DYN; ``e_phentsize`` must be the size of one program header
  of that class and the table at most 64 KiB; the first PT_INTERP names the
  loader, and must be 2..4096 bytes ending in NUL.  A file breaking those rules
  is reported as ``UnknownFormat`` (ENOEXEC), like a file with no known magic.
  Machine and class are *not* judged here: that depends on the node.
* ``#!``: the kernel reads BINPRM_BUF_SIZE (256) bytes, takes the line up to the
  first newline (or NUL), skips spaces/tabs, ends the interpreter at the next
  space/tab/NUL and passes the rest, trimmed, as one argument.  ``\\r`` is not
  whitespace to it, so a CRLF script asks for ``/bin/sh\\r``.

The indexer keeps only the first ``Limits.exec_head_size`` bytes of each
executable.  If the program headers or the PT_INTERP string lie beyond them
(and the file is longer), the loader is unknown: ``interpreter`` is then
``INTERP_BEYOND_HEAD`` instead of a guess.
"""

from __future__ import annotations

import struct

from canrun.image.model import ElfInfo, ExecInfo, ScriptInfo, UnknownFormat

#: ``ElfInfo.interpreter`` when PT_INTERP exists but was not within the bytes we kept.
INTERP_BEYOND_HEAD = "?"

BINPRM_BUF_SIZE = 256
_PATH_MAX = 4096
_ET_EXEC, _ET_DYN = 2, 3
_PT_INTERP = 3

# e_ident: magic, EI_CLASS, EI_DATA (the rest of the 16 bytes does not matter to the kernel).
_IDENT = struct.Struct("4sBB")

# (class, little endian) -> (ELF header after e_ident, program header, p_type/p_offset/p_filesz positions)
# ELF header after ident: e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags,
# e_ehsize, e_phentsize, e_phnum.
_LAYOUTS: dict[tuple[int, bool], tuple[struct.Struct, struct.Struct]] = {}
for _cls, _word in ((32, "I"), (64, "Q")):
    for _little, _order in ((True, "<"), (False, ">")):
        _ehdr = struct.Struct(f"{_order}16xHHI{_word}{_word}{_word}IHHH")
        if _cls == 32:
            # p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align
            _phdr = struct.Struct(f"{_order}IIIIIIII")
        else:
            # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
            _phdr = struct.Struct(f"{_order}IIQQQQQQ")
        _LAYOUTS[(_cls, _little)] = (_ehdr, _phdr)


def _phdr_type_offset_size(cls: int, fields: tuple[int, ...]) -> tuple[int, int, int]:
    if cls == 32:
        return fields[0], fields[1], fields[4]
    return fields[0], fields[2], fields[5]


def parse_exec_header(head: bytes, *, complete: bool = False) -> ExecInfo:
    """Classify an executable from its first bytes; never raises.

    ``complete`` says ``head`` is the whole file: then anything missing from it
    is missing from the file (ENOEXEC/EIO for the kernel) rather than merely
    not kept, so no ``INTERP_BEYOND_HEAD`` is reported.
    """
    if head[:4] == b"\x7fELF":
        return parse_elf(head, complete=complete)
    if head[:2] == b"#!":
        return parse_shebang(head)
    return UnknownFormat(magic=bytes(head[:4]))


def parse_elf(head: bytes, *, complete: bool = False) -> ExecInfo:
    """ELF identity and PT_INTERP, or ``UnknownFormat`` where binfmt_elf says ENOEXEC."""
    refused = UnknownFormat(magic=bytes(head[:4]))
    if len(head) < _IDENT.size:
        return refused
    _, ei_class, ei_data = _IDENT.unpack_from(head)
    cls = {1: 32, 2: 64}.get(ei_class)
    if cls is None or ei_data not in (1, 2):
        return refused
    little = ei_data == 1
    ehdr, phdr = _LAYOUTS[(cls, little)]
    if len(head) < ehdr.size:
        return refused  # a header cut short is a file cut short: nothing else could be the reason
    e_type, e_machine, _version, _entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize, e_phnum = ehdr.unpack_from(head)
    if e_type not in (_ET_EXEC, _ET_DYN):
        return refused
    if e_phentsize != phdr.size:
        return refused
    table = e_phnum * phdr.size
    if table == 0 or table > 65536:
        return refused
    info = {"elf_class": cls, "little_endian": little, "machine": e_machine, "elf_type": e_type}
    if e_phoff + table > len(head):
        if complete:
            return refused  # kernel_read of the program headers comes up short
        return ElfInfo(interpreter=INTERP_BEYOND_HEAD, **info)
    for index in range(e_phnum):
        p_type, p_offset, p_filesz = _phdr_type_offset_size(cls, phdr.unpack_from(head, e_phoff + index * phdr.size))
        if p_type != _PT_INTERP:
            continue
        # Only the first PT_INTERP counts; its size and NUL terminator are checked before use.
        if p_filesz > _PATH_MAX or p_filesz < 2:
            return refused
        if p_offset + p_filesz > len(head):
            if complete:
                return refused
            return ElfInfo(interpreter=INTERP_BEYOND_HEAD, **info)
        raw = head[p_offset : p_offset + p_filesz]
        if raw[-1] != 0:
            return refused
        path = raw[: raw.index(0)]  # the kernel opens it as a C string
        return ElfInfo(interpreter=path.decode("utf-8", "surrogateescape"), **info)
    return ElfInfo(interpreter=None, **info)


def _spacetab(c: int) -> bool:
    return c == 0x20 or c == 0x09


def parse_shebang(head: bytes) -> ExecInfo:
    """A ``#!`` line exactly as fs/binfmt_script.c (Linux >= 5.0) cuts it.

    Anything the kernel refuses (no interpreter, or an interpreter path that
    may have been truncated by the 256-byte buffer) is ENOEXEC:
    ``UnknownFormat(magic=b"#!")``.
    """
    refused = UnknownFormat(magic=bytes(head[:4]))
    buf = bytes(head[:BINPRM_BUF_SIZE]).ljust(BINPRM_BUF_SIZE, b"\0")  # short files are NUL padded
    buf_end = BINPRM_BUF_SIZE - 1
    # strnchr stops at the first NUL as well as at the character sought.
    nul = buf.find(b"\0")
    newline = buf.find(b"\n", 0, nul if nul >= 0 else BINPRM_BUF_SIZE)
    if newline >= 0:
        i_end = newline
    else:
        first = next((i for i in range(2, buf_end + 1) if not _spacetab(buf[i])), None)
        if first is None:
            return refused  # the whole buffer is spaces/tabs
        if next((i for i in range(first, buf_end + 1) if _spacetab(buf[i]) or buf[i] == 0), None) is None:
            return refused  # no terminator: the interpreter path may be truncated
        i_end = buf_end
    while _spacetab(buf[i_end - 1]):
        i_end -= 1
    i_name = next((i for i in range(2, i_end + 1) if not _spacetab(buf[i])), None)
    if i_name is None or i_name == i_end:
        return refused  # no interpreter name
    i_sep = next((i for i in range(i_name, i_end + 1) if _spacetab(buf[i]) or buf[i] == 0), None)
    argument: bytes | None = None
    if i_sep is not None and buf[i_sep] != 0:
        i_arg = next((i for i in range(i_sep, i_end + 1) if not _spacetab(buf[i])), None)
        if i_arg is not None and i_arg < i_end:
            argument = buf[i_arg:i_end]
    name_end = i_sep if i_sep is not None and i_sep < i_end else i_end
    interpreter = buf[i_name:name_end]
    line_end = newline if newline >= 0 else (nul if nul >= 0 else BINPRM_BUF_SIZE)
    if argument is not None and b"\0" in argument:
        argument = argument[: argument.index(0)]  # the kernel passes it on as a C string
    return ScriptInfo(
        interpreter=interpreter.decode("utf-8", "surrogateescape"),
        argument=argument.decode("utf-8", "surrogateescape") if argument else None,
        line=buf[:line_end].decode("utf-8", "backslashreplace"),
    )
