"""The tar header reader against Python's tarfile (property test) and against hostile archives."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from canrun.errors import LayerError, LimitExceeded
from canrun.image.limits import Limits
from canrun.image.tar import DIRECTORY, HARDLINK, REGULAR, SYMLINK, TarMember, TarReader, parse_number, parse_pax

from .conftest import make_tar, member

TYPES = {
    tarfile.REGTYPE: REGULAR,
    tarfile.DIRTYPE: DIRECTORY,
    tarfile.SYMTYPE: SYMLINK,
    tarfile.LNKTYPE: HARDLINK,
    tarfile.CHRTYPE: ord("3"),
    tarfile.BLKTYPE: ord("4"),
    tarfile.FIFOTYPE: ord("6"),
}


def read_all(data: bytes, chunk: int = 65536, limits: Limits = Limits(), want=None) -> list[TarMember]:
    reader = TarReader(limits, want)
    out: list[TarMember] = []
    for start in range(0, len(data), chunk):
        out += reader.feed(data[start : start + chunk])
    reader.close()
    return out


# --------------------------------------------------------------------------- property test vs tarfile
segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"), min_size=1, max_size=40
).filter(lambda s: s not in (".", ".."))
names = st.lists(segment, min_size=1, max_size=12).map("/".join)


@st.composite
def members(draw: st.DrawFn, fmt: int) -> tuple[tarfile.TarInfo, bytes | None]:
    kind = draw(st.sampled_from(list(TYPES)))
    info = tarfile.TarInfo(draw(names))
    info.type = kind
    info.mode = draw(st.integers(0, 0o7777))
    big = fmt != tarfile.USTAR_FORMAT
    info.uid = draw(st.integers(0, 2**40 if big else 0o7777777))
    info.gid = draw(st.integers(0, 2**40 if big else 0o7777777))
    info.uname = draw(st.sampled_from(["", "root", "ünï"]))
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = draw(names)
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = draw(st.integers(0, 255)), draw(st.integers(0, 255))
    data = draw(st.binary(max_size=1500)) if kind == tarfile.REGTYPE else None
    return info, data


@st.composite
def archives(draw: st.DrawFn) -> tuple[int, list[tuple[tarfile.TarInfo, bytes | None]], int]:
    fmt = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
    items = draw(st.lists(members(fmt), min_size=1, max_size=8))
    chunk = draw(st.sampled_from([1, 7, 511, 512, 513, 4096, 1 << 20]))
    return fmt, items, chunk


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(archives())
def test_reader_agrees_with_tarfile(archive: tuple[int, list[tuple[tarfile.TarInfo, bytes | None]], int]) -> None:
    fmt, items, chunk = archive
    try:
        data = make_tar(items, fmt)
    except ValueError:
        assume(False)  # e.g. a unicode name too long for plain USTAR: tarfile refuses to write it
    ref_tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    expected = ref_tar.getmembers()
    got = read_all(data, chunk, want=lambda m: m.size)
    assert len(got) == len(expected)
    for mine, ref in zip(got, expected):
        name = mine.name.rstrip("/") if mine.type == DIRECTORY else mine.name
        assert (name, mine.type, mine.mode, mine.uid, mine.gid, mine.linkname) == (
            ref.name,
            TYPES[ref.type],
            ref.mode,
            ref.uid,
            ref.gid,
            ref.linkname,
        )
        assert mine.size == (ref.size if ref.isreg() else 0)
        if ref.isreg() and ref.size:
            assert mine.data == ref_tar.extractfile(ref).read()


# --------------------------------------------------------------------------- formats and fields
def test_gnu_long_name_and_link_and_base256_uid() -> None:
    long_name = "d/" * 120 + "file"
    data = make_tar([(member(long_name, tarfile.SYMTYPE, link="t/" * 100 + "x", uid=2**35), None)], tarfile.GNU_FORMAT)
    assert b"././@LongLink" in data
    (m,) = read_all(data)
    assert (m.name, m.linkname, m.uid) == (long_name, "t/" * 100 + "x", 2**35)


def test_base256_size_field_is_read_like_tarfile() -> None:
    """GNU tar writes sizes of 8 GiB and more in base-256; the data that follows must be skipped by that size."""
    data = bytearray(make_tar([(member("big"), b"x" * 700), (member("after"), b"y")], tarfile.GNU_FORMAT))
    data[124:136] = b"\x80" + (700).to_bytes(11, "big")  # the same size, base-256 encoded
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    reference = tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:")
    assert [(m.name, m.size) for m in reference.getmembers()] == [("big", 700), ("after", 1)]
    big, after = read_all(bytes(data), chunk=100)
    assert (big.name, big.size, after.name, after.size) == ("big", 700, "after", 1)


def test_ustar_prefix_is_joined() -> None:
    name = "p" * 120 + "/" + "n" * 90
    data = make_tar([(member(name), b"x")], tarfile.USTAR_FORMAT)
    (m,) = read_all(data)
    assert m.name == name


def test_v7_regular_file_with_trailing_slash_is_a_directory() -> None:
    block = bytearray(make_tar([(member("olddir/"), b"")], tarfile.USTAR_FORMAT)[:512])
    block[156] = 0  # AREGTYPE
    block[257:265] = bytes(8)  # no magic: V7
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    (m,) = read_all(bytes(block) + bytes(1024))
    assert m.type == DIRECTORY


def test_parse_number_forms() -> None:
    assert parse_number(b"0000644\0") == 0o644
    assert parse_number(b"  644 \0") == 0o644
    assert parse_number(b"\0" * 8) == 0
    assert parse_number(b"\x80" + (2**40).to_bytes(11, "big")) == 2**40
    assert parse_number(b"\xff" * 8) == -1
    with pytest.raises(ValueError):
        parse_number(b"0009\0\0\0\0")


def test_pax_records() -> None:
    assert parse_pax(b"16 path=a/b/cde\n12 uid=1000\n") == {"path": b"a/b/cde", "uid": b"1000"}
    assert parse_pax(b"12 uid=1000\n\0\0\0") == {"uid": b"1000"}
    for bad in (b"99 path=x\n", b"x path=y\n", b"9 =abcde\n", b"12 uid=1000\nzz"):
        with pytest.raises(ValueError):
            parse_pax(bad)


def test_pax_global_header_is_not_applied_like_containerd() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"uid": "4242"}) as tar:
        tar.addfile(member("f"), io.BytesIO(b""))
    (m,) = read_all(buf.getvalue())
    assert m.uid == 0  # Go's archive/tar returns 'g' headers to the caller; containerd ignores them


def test_pax_path_with_nul_is_rejected() -> None:
    info = member("f")
    info.pax_headers = {"path": "a\0b"}
    data = make_tar([(info, b"")], tarfile.PAX_FORMAT)
    with pytest.raises(LayerError, match="NUL"):
        read_all(data)


def test_pax_size_overrides_header_size() -> None:
    info = member("big")
    info.pax_headers = {"size": "5"}
    data = make_tar([(info, b"hello"), (member("after"), b"")], tarfile.PAX_FORMAT)
    first, second = read_all(data)
    assert (first.size, second.name) == (5, "after")


# --------------------------------------------------------------------------- end of archive
def test_eof_after_one_zero_block_and_garbage_after_two() -> None:
    body = make_tar([(member("a"), b"x")])
    one = body.rstrip(b"\0")
    one = one + bytes((-len(one)) % 512) + bytes(512)
    assert [m.name for m in read_all(one)] == ["a"]
    assert [m.name for m in read_all(body + b"trailing garbage" * 100)] == ["a"]


def test_zero_block_then_header_is_an_error() -> None:
    a = make_tar([(member("a"), b"")]).rstrip(b"\0")
    a = a + bytes((-len(a)) % 512)
    b = make_tar([(member("b"), b"")])
    with pytest.raises(LayerError, match="zero block followed"):
        read_all(a + bytes(512) + b)


def test_eof_at_member_boundary_is_accepted_but_not_inside() -> None:
    data = make_tar([(member("a"), b"x" * 600), (member("b"), b"")]).rstrip(b"\0")
    cut = data + bytes((-len(data)) % 512)
    assert [m.name for m in read_all(cut)] == ["a", "b"]
    with pytest.raises(LayerError, match="ends inside"):
        read_all(cut[:1000])
    with pytest.raises(LayerError, match="truncated tar header"):
        read_all(cut[:1536 + 100])


def test_empty_stream_is_an_empty_archive() -> None:
    assert read_all(b"") == []


# --------------------------------------------------------------------------- hostile headers
def test_bad_checksum() -> None:
    data = bytearray(make_tar([(member("a"), b"x")]))
    data[0] ^= 0x20
    with pytest.raises(LayerError, match="checksum mismatch .*tar offset 0"):
        read_all(bytes(data))


def test_not_a_tar() -> None:
    with pytest.raises(LayerError, match="checksum"):
        read_all(b"<html>Not Found</html>" * 100)


def test_huge_pax_header_hits_the_limit_before_it_is_read() -> None:
    info = member("f")
    info.pax_headers = {"comment": "x" * 1_000_000}
    data = make_tar([(info, b"")], tarfile.PAX_FORMAT)
    with pytest.raises(LimitExceeded, match="PAX header of 10000.. bytes"):
        read_all(data[:4096], limits=Limits(max_header_bytes=64 * 1024))


def test_gnu_long_name_over_path_limit() -> None:
    data = make_tar([(member("x/" * 3000 + "f"), b"")], tarfile.GNU_FORMAT)
    with pytest.raises(LimitExceeded, match="longer than 4096"):
        read_all(data)


def test_entry_limit_stops_reading_early() -> None:
    block = make_tar([(member("same"), b"")])[:512]
    fed = 0

    def endless():
        nonlocal fed
        for _ in range(1_000_000):
            fed += 1
            yield block * 64

    reader = TarReader(Limits(max_entries=10_000))
    with pytest.raises(LimitExceeded, match="more than 10000 tar members"):
        for chunk in endless():
            reader.feed(chunk)
    assert fed < 200  # stopped at the limit, not after a million chunks


def test_unsupported_member_type() -> None:
    data = bytearray(make_tar([(member("label"), b"")], tarfile.GNU_FORMAT))
    data[156:157] = b"V"
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    with pytest.raises(LayerError, match="unsupported tar member type 'V'"):
        read_all(bytes(data))


def test_negative_size_is_rejected() -> None:
    data = bytearray(make_tar([(member("neg"), b"")], tarfile.GNU_FORMAT))
    data[124:136] = b"\xff" * 12
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    with pytest.raises(LayerError, match="negative"):
        read_all(bytes(data))


def test_size_on_a_directory_does_not_shift_the_stream() -> None:
    data = bytearray(make_tar([(member("d", tarfile.DIRTYPE), None), (member("f"), b"abc")]))
    data[124:136] = b"%011o\0" % 4096  # a directory claiming data; Go skips none
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    d, f = read_all(bytes(data))
    assert (d.type, d.size, f.name, f.size) == (DIRECTORY, 0, "f", 3)


def test_capture_is_bounded_by_want() -> None:
    data = make_tar([(member("f"), b"0123456789" * 1000)])
    (m,) = read_all(data, chunk=300, want=lambda m: 16)
    assert m.data == b"0123456789012345"
    assert m.size == 10000


def test_signed_checksum_is_accepted() -> None:
    data = bytearray(make_tar([(member("é"), b"")], tarfile.GNU_FORMAT))
    signed = sum(b - 256 if b >= 128 else b for b in data[:148]) + 256 + sum(
        b - 256 if b >= 128 else b for b in data[156:512]
    )
    data[148:156] = b"%06o\0 " % signed
    (m,) = read_all(bytes(data))
    assert m.name == "é"


def test_member_offsets() -> None:
    data = make_tar([(member("a"), b"x" * 700), (member("b"), b"")], tarfile.USTAR_FORMAT)
    a, b = read_all(data, chunk=100)
    assert (a.offset, b.offset) == (0, 512 + 1024)


def test_sparse_files_from_gnu_tar(tmp_path) -> None:
    import shutil
    import subprocess

    if shutil.which("tar") is None:
        pytest.fail("GNU tar is needed to write sparse archives")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(5 * 1024 * 1024)
        f.write(b"tail")
    (src / "after").write_text("after")
    for fmt in ("gnu", "posix"):
        out = tmp_path / f"{fmt}.tar"
        subprocess.run(
            ["tar", "--sparse", f"--format={fmt}", "-C", str(src), "-cf", str(out), "sparse", "after"], check=True
        )
        got = {m.name: m for m in read_all(out.read_bytes(), chunk=777)}
        assert got["sparse"].size == 5 * 1024 * 1024 + 4, fmt
        assert got["sparse"].sparse and got["sparse"].type == REGULAR
        assert got["after"].size == 5


def _pax_then_file(*records: tuple[str, bytes]) -> bytes:
    body = b""
    for key, value in records:
        text = f" {key}=".encode() + value + b"\n"
        length = len(text) + len(str(len(text)))
        length = len(text) + len(str(length))
        body += str(length).encode() + text
    ti = tarfile.TarInfo("PaxHeaders/app")
    ti.type, ti.size = tarfile.XHDTYPE, len(body)
    head = ti.tobuf(format=tarfile.USTAR_FORMAT)
    app = tarfile.TarInfo("app")
    return head + body + bytes(-len(body) % 512) + app.tobuf(format=tarfile.USTAR_FORMAT) + bytes(1024)


@pytest.mark.parametrize("data", [
    _pax_then_file(("uid", b"3" * 25)),
    _pax_then_file(("gid", b"9" * 5000)),  # longer than Python's int() takes: still one clear error
    _pax_then_file(("GNU.sparse.name", b"app"), ("GNU.sparse.realsize", str(1 << 64).encode())),
    _pax_then_file(("size", str(1 << 63).encode())),
], ids=["pax-uid", "pax-gid-5000-digits", "sparse-realsize", "pax-size"])
def test_numbers_beyond_64_bits_are_refused_as_go_archive_tar_refuses_them(data: bytes) -> None:
    with pytest.raises(LayerError, match="does not fit in 64 bits: Go's archive/tar"):
        list(TarReader().feed(data))


def test_a_base256_size_beyond_64_bits_is_refused_and_int64_max_is_not() -> None:
    block = bytearray(tarfile.TarInfo("app").tobuf(format=tarfile.GNU_FORMAT)[:512])
    block[124:136] = b"\x80" + (1 << 70).to_bytes(11, "big")
    block[148:156] = b" " * 8
    block[148:155] = b"%06o\0" % sum(block)
    with pytest.raises(LayerError, match="size 1180591620717411303424 does not fit in 64 bits"):
        list(TarReader().feed(bytes(block)))
    ok = _pax_then_file(("uid", str((1 << 63) - 1).encode()))
    (app,) = [m for m in TarReader().feed(ok) if m.name == "app"]
    assert app.uid == (1 << 63) - 1
