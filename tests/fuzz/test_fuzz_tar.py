"""Layer tar streams from a stranger: headers with mutated fields, PAX records, GNU long names, any chunking.

Assertion (see ``budget.bounded``): ``TarReader`` ends in members or a ``LayerError`` (``LimitExceeded``
included), never another exception, in bounded time and memory; the two number parsers it builds on
raise only ``ValueError`` (which the reader maps).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from canrun.errors import LayerError
from canrun.image.limits import Limits
from canrun.image.tar import BLOCK, TarMember, TarReader, parse_number, parse_pax

from .budget import FUZZ, bounded

#: Tight limits so that the limit paths are reached by small examples too.
LIMITS = Limits(max_entries=64, max_header_bytes=4096, max_path_length=300, exec_head_size=256)

# (offset, length) of the ustar header fields.
FIELDS = {"name": (0, 100), "mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
          "mtime": (136, 12), "chksum": (148, 8), "typeflag": (156, 1), "linkname": (157, 100),
          "magic": (257, 8), "prefix": (345, 155), "sparse": (386, 96), "isextended": (482, 1),
          "realsize": (483, 12)}

octal = st.integers(0, 8**7).map(lambda n: b"%07o\0" % n)
numbers = st.one_of(
    octal,
    st.integers(0, 8**11 - 1).map(lambda n: b"%011o\0" % n),
    st.binary(max_size=12),  # garbage
    st.integers(-(2**80), 2**80).map(lambda n: bytes([0x80 | 0x40 * (n < 0)]) + (n % 2**88).to_bytes(11, "big")),
    st.sampled_from([b"", b"   ", b"9999999", b"+7", b"-1", b"0_7", b"\x80" + b"\xff" * 11, b"\xff" * 12]),
)
typeflags = st.sampled_from(b"0123456712LKSxgVMDN\0A")
names = st.one_of(st.binary(max_size=100), st.text(max_size=40).map(lambda s: s.encode("utf-8", "replace")[:100]),
                  st.sampled_from([b"./", b"../../etc/passwd", b"a/" * 50, b"/", b"\0", b"bin/sh\0x"]))


def checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)


@st.composite
def header(draw: st.DrawFn, *, size: int | None = None, typeflag: int | None = None) -> bytes:
    block = bytearray(BLOCK)
    block[0:100] = draw(names).ljust(100, b"\0")[:100]
    block[100:108] = draw(octal)
    block[108:116] = draw(octal)
    block[116:124] = draw(octal)
    block[124:136] = b"%011o\0" % (size if size is not None else draw(st.integers(0, 2048)))
    block[156] = typeflag if typeflag is not None else draw(typeflags)
    block[257:265] = draw(st.sampled_from([b"ustar\x0000", b"ustar  \0", bytes(8)]))
    if draw(st.booleans()):
        block[345:345 + 20] = draw(st.binary(min_size=20, max_size=20))
    # mutate a few fields with hostile values
    for field in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3)):
        start, length = FIELDS[field]
        value = draw(numbers if length in (8, 12) else st.binary(min_size=length, max_size=length))
        block[start:start + length] = value.ljust(length, b"\0")[:length]
    mode = draw(st.sampled_from(["fix", "fix", "fix", "keep", "signed-off"]))
    if mode == "fix":
        checksum(block)
    elif mode == "signed-off":
        checksum(block)
        block[148:156] = b"%06o\0 " % (int(block[148:154], 8) + 1)
    return bytes(block)


pax_values = st.one_of(st.binary(max_size=64), st.sampled_from([b"1" * 5000, b"18446744073709551616", b"-1", b"0" * 40 + b"7",
                                                                 b"a\0b", b"", b"\xff\xfe"]))
pax_keys = st.one_of(st.sampled_from(["path", "linkpath", "size", "uid", "gid", "GNU.sparse.name", "GNU.sparse.realsize",
                                      "GNU.sparse.size", "mtime", "SCHILY.xattr.user.x", ""]), st.text(max_size=10))


@st.composite
def pax_body(draw: st.DrawFn) -> bytes:
    out = b""
    for key, value in draw(st.lists(st.tuples(pax_keys, pax_values), max_size=4)):
        record = b" " + key.encode("utf-8", "surrogateescape") + b"=" + value + b"\n"
        length = len(record)
        length += len(str(length + len(str(length))))
        if draw(st.integers(0, 9)) == 0:
            length += draw(st.integers(-3, 3))  # a lying record length
        out += str(length).encode() + record
    if draw(st.booleans()):
        out += draw(st.binary(max_size=8))
    return out


@st.composite
def member(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["plain", "plain", "pax", "long"]))
    data = draw(st.binary(max_size=700))
    prefix = b""
    if kind == "pax":
        body = draw(pax_body())
        prefix = draw(header(size=len(body), typeflag=draw(st.sampled_from(b"xg")))) + body.ljust(-(-len(body) // BLOCK) * BLOCK, b"\0")
    elif kind == "long":
        body = draw(names) + b"\0"
        prefix = draw(header(size=len(body), typeflag=draw(st.sampled_from(b"LK")))) + body.ljust(-(-len(body) // BLOCK) * BLOCK, b"\0")
    head = draw(header(size=len(data)))
    return prefix + head + data.ljust(-(-len(data) // BLOCK) * BLOCK, b"\0")


@st.composite
def archive(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    stream = b"".join(draw(st.lists(member(), max_size=5)))
    stream += draw(st.sampled_from([b"", bytes(BLOCK), bytes(2 * BLOCK), bytes(BLOCK) + b"x" * BLOCK]))
    if draw(st.booleans()):  # cut it anywhere
        stream = stream[: draw(st.integers(0, len(stream)))]
    if draw(st.integers(0, 4)) == 0 and stream:  # flip a byte anywhere
        at = draw(st.integers(0, len(stream) - 1))
        stream = stream[:at] + bytes([stream[at] ^ draw(st.integers(1, 255))]) + stream[at + 1:]
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    return stream, cuts


def read(stream: bytes, cuts: list[int]) -> list[TarMember]:
    reader = TarReader(LIMITS, lambda m: 300, label="fuzz")
    members: list[TarMember] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        members += reader.feed(stream[last:cut])
        last = cut
    reader.close()
    return members


@FUZZ
@given(archive())
def test_tar_reader_raises_only_layer_errors(case: tuple[bytes, list[int]]) -> None:
    stream, cuts = case
    outcome = bounded(lambda: read(stream, cuts), allowed=(LayerError,))
    if not isinstance(outcome, BaseException):
        for m in outcome:
            assert len(m.name) <= LIMITS.max_path_length and len(m.linkname) <= LIMITS.max_path_length
            assert m.data is None or len(m.data) <= 300


@FUZZ
@given(st.binary(max_size=4 * BLOCK), st.lists(st.integers(0, 4 * BLOCK), max_size=4))
def test_tar_reader_on_raw_bytes(stream: bytes, cuts: list[int]) -> None:
    bounded(lambda: read(stream, sorted(c for c in cuts if c <= len(stream))), allowed=(LayerError,))


@FUZZ
@given(st.one_of(pax_body(), st.binary(max_size=200)))
def test_parse_pax_raises_only_value_error(body: bytes) -> None:
    bounded(lambda: parse_pax(body), allowed=(ValueError,))


@FUZZ
@given(numbers)
def test_parse_number_raises_only_value_error(field: bytes) -> None:
    bounded(lambda: parse_number(field), allowed=(ValueError,))
