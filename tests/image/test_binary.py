"""ELF and #! parsing on real binaries, with the kernel itself as the oracle for #! lines."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canrun.image.binary import INTERP_BEYOND_HEAD, parse_exec_header
from canrun.image.model import ElfInfo, ScriptInfo, UnknownFormat

HEAD = 64 * 1024


def head_of(path: Path | str) -> tuple[bytes, bool]:
    data = Path(path).read_bytes()
    return data[:HEAD], len(data) <= HEAD


# --------------------------------------------------------------------------- real ELF binaries
def test_host_ls_is_dynamic_x86_64_with_its_loader() -> None:
    ls = os.path.realpath(shutil.which("ls") or "/bin/ls")
    info = parse_exec_header(*head_of(ls)[:1])
    assert isinstance(info, ElfInfo)
    assert (info.elf_class, info.little_endian, info.machine) == (64, True, 62)
    # The loader really is the one the kernel will ask for: compare with readelf's reading.
    out = subprocess.run(["readelf", "-l", ls], capture_output=True, text=True, check=True).stdout
    assert f"[Requesting program interpreter: {info.interpreter}]" in out
    assert Path(info.interpreter).exists()


def test_host_busybox_is_static() -> None:
    info = parse_exec_header(head_of("/bin/busybox")[0])
    assert isinstance(info, ElfInfo)
    assert (info.elf_class, info.machine, info.interpreter) == (64, 62, None)


def test_arm64_busybox_from_debian(arm64_busybox: Path) -> None:
    info = parse_exec_header(head_of(arm64_busybox)[0])
    assert isinstance(info, ElfInfo)
    assert (info.elf_class, info.little_endian, info.machine, info.interpreter) == (64, True, 183, None)


def test_interp_beyond_the_kept_head_is_reported_not_guessed() -> None:
    ls = Path(os.path.realpath(shutil.which("ls") or "/bin/ls")).read_bytes()
    cut = ls[:100]  # ELF header and part of the program headers
    assert parse_exec_header(cut) == ElfInfo(64, True, 62, INTERP_BEYOND_HEAD, 3)
    # ...but if those 100 bytes are the whole file, the kernel cannot read the headers: ENOEXEC.
    assert isinstance(parse_exec_header(cut, complete=True), UnknownFormat)


# --------------------------------------------------------------------------- synthetic ELF
def elf(cls: int, little: bool, *, machine: int = 40, interp: bytes | None = b"/lib/ld.so\0", e_type: int = 2,
        phentsize: int | None = None) -> bytes:
    order = "<" if little else ">"
    word = "I" if cls == 32 else "Q"
    ehdr = struct.Struct(f"{order}16sHHI{word}{word}{word}IHHHHHH")
    phdr = struct.Struct(f"{order}IIIIIIII" if cls == 32 else f"{order}IIQQQQQQ")
    ident = b"\x7fELF" + bytes([1 if cls == 32 else 2, 1 if little else 2, 1]) + bytes(9)
    phoff = ehdr.size
    interp_off = phoff + 2 * phdr.size
    if cls == 32:
        load = phdr.pack(1, 0, 0, 0, 0, 0, 5, 0x1000)
        pint = phdr.pack(3, interp_off, 0, 0, len(interp or b""), 0, 4, 1)
    else:
        load = phdr.pack(1, 5, 0, 0, 0, 0, 0, 0x1000)
        pint = phdr.pack(3, 4, interp_off, 0, 0, len(interp or b""), 0, 1)
    phs = load + (pint if interp is not None else phdr.pack(*([6] + [0] * 7)))
    header = ehdr.pack(ident, e_type, machine, 1, 0, phoff, 0, 0, ehdr.size, phentsize or phdr.size, 2, 0, 0, 0)
    return header + phs + (interp or b"")


@pytest.mark.parametrize("cls", [32, 64])
@pytest.mark.parametrize("little", [True, False])
def test_both_classes_and_byte_orders(cls: int, little: bool) -> None:
    info = parse_exec_header(elf(cls, little, machine=21), complete=True)
    assert info == ElfInfo(cls, little, 21, "/lib/ld.so", 2)
    assert parse_exec_header(elf(cls, little, interp=None), complete=True) == ElfInfo(cls, little, 40, None, 2)


def test_what_binfmt_elf_refuses_is_enoexec() -> None:
    assert isinstance(parse_exec_header(elf(64, True, e_type=1), complete=True), UnknownFormat)  # ET_REL
    assert isinstance(parse_exec_header(elf(64, True, phentsize=40), complete=True), UnknownFormat)
    assert isinstance(parse_exec_header(elf(64, True, interp=b"/lib/ld.so"), complete=True), UnknownFormat)  # no NUL
    assert isinstance(parse_exec_header(elf(64, True, interp=b"\0"), complete=True), UnknownFormat)  # too short
    assert parse_exec_header(elf(64, True, e_type=3), complete=True).elf_type == 3  # PIE is fine


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([b"\x7fELF\x01\x01", b"\x7fELF\x02\x02", b"\x7fELF\x02\x01", b"#!"]))
def test_garbage_never_raises(tail: bytes, prefix: bytes) -> None:
    for complete in (True, False):
        assert isinstance(parse_exec_header(prefix + tail, complete=complete), (ElfInfo, ScriptInfo, UnknownFormat))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2000))
def test_every_truncation_of_a_real_binary_is_well_defined(cut: int) -> None:
    data = Path("/bin/busybox").read_bytes()[:cut]
    info = parse_exec_header(data, complete=True)
    assert isinstance(info, (ElfInfo, UnknownFormat))
    if isinstance(info, ElfInfo):
        assert info.interpreter is None


def test_unknown_magic() -> None:
    assert parse_exec_header(b"MZ\x90\x00rest") == UnknownFormat(b"MZ\x90\x00")
    assert parse_exec_header(b"") == UnknownFormat(b"")


# --------------------------------------------------------------------------- #! lines
def test_shebang_basic_forms() -> None:
    assert parse_exec_header(b"#!/bin/sh\r\necho\r\n") == ScriptInfo("/bin/sh\r", None, "#!/bin/sh\r")
    assert parse_exec_header(b"#! \t/usr/bin/env python3 -u  \nx") == ScriptInfo(
        "/usr/bin/env", "python3 -u", "#! \t/usr/bin/env python3 -u  "
    )
    assert parse_exec_header(b"#!/bin/sh") == ScriptInfo("/bin/sh", None, "#!/bin/sh")
    assert parse_exec_header(b"#!/bin/sh\0 -x\n") == ScriptInfo("/bin/sh", None, "#!/bin/sh")
    assert parse_exec_header(b"#!\n") == UnknownFormat(b"#!\n")
    assert parse_exec_header(b"#!   \n") == UnknownFormat(b"#!  ")
    assert parse_exec_header(b"#!/" + b"x" * 300) == UnknownFormat(b"#!/x")  # interpreter may be truncated
    long_arg = parse_exec_header(b"#!/bin/sh " + b"a" * 300)
    assert isinstance(long_arg, ScriptInfo) and long_arg.interpreter == "/bin/sh"  # arguments may be cut


# The kernel as oracle: run each script with a copy of /bin/echo as its interpreter and compare
# what execve did (ENOENT/ENOEXEC, or the argv echo received) with the parser's verdict.
KERNEL_CASES = [
    b"#!{echo}\n",
    b"#!{echo} one\n",
    b"#!{echo} one two  \n",
    b"#! \t{echo}\targ\n",
    b"#!{echo}\r\n",
    b"#!{echo} arg\r\n",
    b"#!{echo}\0 hidden\n",
    b"#!{echo}",
    b"#!\n",
    b"#!  \t \n",
    b"#!{echo} " + b"y" * 300,
    b"#!" + b" " * 240 + b"{echo}\n",
]


@pytest.mark.parametrize("template", KERNEL_CASES, ids=range(len(KERNEL_CASES)))
def test_shebang_matches_the_kernel(tmp_path: Path, template: bytes) -> None:
    echo = tmp_path / "e"
    shutil.copy("/bin/echo", echo)
    crecho = tmp_path / "e\r"  # what a CRLF script asks for; present so the exec succeeds
    shutil.copy("/bin/echo", crecho)
    script = tmp_path / "script"
    content = template.replace(b"{echo}", str(echo).encode())
    script.write_bytes(content)
    script.chmod(0o755)
    verdict = parse_exec_header(content[:HEAD])
    try:
        proc = subprocess.run([str(script)], capture_output=True, check=True)
    except OSError as exc:
        assert exc.errno == errno.ENOEXEC
        assert isinstance(verdict, UnknownFormat)
        return
    assert isinstance(verdict, ScriptInfo)
    argv = proc.stdout.rstrip(b"\n").decode()
    expected = " ".join(filter(None, [verdict.argument, str(script)]))
    assert argv == expected
    assert verdict.interpreter in (str(echo), str(crecho))
