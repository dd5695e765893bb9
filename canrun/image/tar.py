"""A push-fed tar header reader that never looks at file data it does not need.

Why not ``tarfile``: in stream mode it builds a ``TarInfo`` through several
layers of Python per member and copies every byte of file data
through ``read``.  Indexing a layer only needs the headers, so this reader
parses each 512-byte header with one ``struct`` call, checks its checksum with
one ``zlib.adler32`` call (see ``TarReader._block``), and skips file data by
arithmetic on the chunk it was given: nothing is copied except the few bytes a
caller asks to capture (the head of executables, ``/etc/passwd``).

It is push-fed (``feed(chunk)``) rather than pulling from a file object so the
decompressor decides the chunk size and no layer is ever held in memory.

Semantics follow Go's ``archive/tar`` — the reader containerd applies layers
with — where it and Python's ``tarfile`` differ:

* a GNU long name (``L``) wins over a PAX ``path``;
* PAX global headers (``g``) are parsed and bounded but not applied: Go returns
  them to the caller and containerd ignores them;
* a PAX record with an empty value keeps the header's own value;
* one zero block followed by end of input ends the archive; a zero block
  followed by anything but a second zero block is an error; whatever follows
  two zero blocks is ignored;
* member types containerd cannot apply (volume labels, multi-volume pieces,
  vendor extensions) are an error rather than silently read as files.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from zlib import adler32

from canrun.errors import LayerError, LimitExceeded
from canrun.image.limits import DEFAULT_LIMITS, Limits

BLOCK = 512

# Normalised type flags (the POSIX/GNU byte values of the member types we keep).
REGULAR = ord("0")
HARDLINK = ord("1")
SYMLINK = ord("2")
CHAR = ord("3")
BLOCKDEV = ord("4")
DIRECTORY = ord("5")
FIFO = ord("6")

_CONTIGUOUS = ord("7")
_AREG = 0  # old V7 regular file ('\0')
_GNU_LONGNAME = ord("L")
_GNU_LONGLINK = ord("K")
_GNU_SPARSE = ord("S")
_PAX_LOCAL = ord("x")
_PAX_GLOBAL = ord("g")
_KEPT_TYPES = frozenset({REGULAR, HARDLINK, SYMLINK, CHAR, BLOCKDEV, DIRECTORY, FIFO})
_META_TYPES = frozenset({_GNU_LONGNAME, _GNU_LONGLINK, _PAX_LOCAL, _PAX_GLOBAL})

# One struct call per header: name, mode, uid, gid, size, (mtime), chksum, typeflag,
# linkname, magic+version, (uname, gname, devmajor, devminor), prefix, (pad).
_HEADER = struct.Struct("100s8s8s8s12s12x8sB100s8s32x32x8x8x155s12x")
assert _HEADER.size == BLOCK

_USTAR_MAGIC = b"ustar\x0000"  # POSIX ustar and pax: the prefix field extends the name
_ZERO_BLOCK = bytes(BLOCK)
_NUL8 = bytes(8)

# Reader states.
_HEADER_STATE, _SKIP, _CAPTURE, _ZERO, _SPARSE_EXT, _END = range(6)


@dataclass(slots=True)
class TarMember:
    """One member as the archive states it (names not yet normalised).

    ``type`` is one of the module's normalised flags (``REGULAR`` … ``FIFO``):
    contiguous, V7 and sparse files read as ``REGULAR``, a V7 file whose name
    ends in ``/`` as ``DIRECTORY``.  ``size`` is the file's real size (for a
    sparse file, not what the archive stores).  ``data`` holds the first bytes of
    the file's data when the caller's ``want`` asked for them.
    """

    name: str
    type: int
    mode: int
    uid: int
    gid: int
    size: int
    linkname: str
    offset: int
    data: bytes | None = None
    sparse: bool = False
    sparse_size_known: bool = False
    #: Free slot for the consumer (the indexer stores the normalised path here).
    path: str = ""


Want = Callable[[TarMember], int]


def _no_capture(member: TarMember) -> int:
    return 0


def _padded(size: int) -> int:
    return (size + 511) & ~511


def _decode(raw: bytes) -> str:
    # surrogateescape keeps non-UTF-8 names byte-exact (the kernel does not care about encodings).
    return raw.decode("utf-8", "surrogateescape")


def _signed_checksum(block: bytes) -> int:
    """Historic tars summed signed chars; Go and tarfile accept either sum."""
    raw = block[:148] + b" " * 8 + block[156:]
    return sum(b - 256 if b >= 128 else b for b in raw)


#: Go's archive/tar parses every number as an int64 (strconv.ParseInt(…, 64), base-256 with an overflow
#: check) and refuses the header otherwise, so containerd cannot unpack such a layer.
INT64_MAX = (1 << 63) - 1


def _beyond_64_bits(what: str, value: object) -> str:
    shown = str(value)
    shown = shown if len(shown) <= 40 else shown[:40] + "…"
    return (f"the {what} {shown} does not fit in 64 bits: Go's archive/tar (containerd's unpacker) refuses the "
            f"header, so the layer cannot be unpacked")


def parse_number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU/star base-256 when the top bit is set."""
    if field and field[0] & 0x80:
        value = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
        if field[0] & 0x40:  # two's complement negative (0xff prefix)
            value -= 1 << (8 * len(field) - 1)
        return value
    text = field.partition(b"\0")[0].strip()
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"not an octal number: {field!r}")
    return int(text, 8)


def parse_pax(data: bytes) -> dict[str, bytes]:
    """PAX records ``"<len> <key>=<value>\\n"``; raises ValueError on a malformed record."""
    records: dict[str, bytes] = {}
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == 0:  # NUL padding after the last record
            if data.count(0, pos) != n - pos:
                raise ValueError("garbage after PAX records")
            break
        space = data.find(b" ", pos, pos + 24)
        if space < 0:
            raise ValueError("PAX record without a length")
        length_text = data[pos:space]
        if not length_text.isdigit():
            raise ValueError(f"bad PAX record length {length_text!r}")
        end = pos + int(length_text)
        if end <= space + 1 or end > n or data[end - 1] != 0x0A:
            raise ValueError("PAX record length does not match its content")
        eq = data.find(b"=", space + 1, end - 1)
        if eq <= space + 1:
            raise ValueError("PAX record without a key")
        records[data[space + 1 : eq].decode("utf-8", "surrogateescape")] = data[eq + 1 : end - 1]
        pos = end
    return records


class TarReader:
    """Feed it uncompressed tar bytes in any chunking; it returns members as they complete.

    ``want(member)`` is called once per file member and returns how many bytes of
    its data to keep in ``member.data`` (0 for none; the data is then skipped
    without copying).  Members are returned from ``feed`` in archive order.
    Call ``close()`` at end of input: it raises ``LayerError`` if the archive was
    cut short.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, want: Want | None = None, *, label: str = "layer") -> None:
        self._limits = limits
        self._want = want or _no_capture
        self._label = label
        self._state = _HEADER_STATE
        self._pos = 0  # stream offset of the next byte fed
        self._partial = b""  # start of a header block split across chunks
        self._skip = 0
        self._cap_need = 0
        self._cap: list[bytes] = []
        self._cap_member: TarMember | None = None  # None while capturing a metadata record
        self._cap_type = 0
        self._cap_skip = 0
        self._cap_offset = 0
        self._long_name: str | None = None
        self._long_link: str | None = None
        self._pax: dict[str, bytes] | None = None
        self._pending_sparse: TarMember | None = None
        self._sparse_data = 0
        self._entries = 0
        self._meta_pending = False
        self._max_entries = limits.max_entries
        self._max_path = limits.max_path_length
        self.ended = False

    # ------------------------------------------------------------------ errors
    def _error(self, message: str, offset: int) -> LayerError:
        return LayerError(f"{self._label}: {message} (tar offset {offset})")

    def _limit(self, message: str, offset: int) -> LimitExceeded:
        return LimitExceeded(f"{self._label}: {message} (tar offset {offset})")

    @property
    def offset(self) -> int:
        """Uncompressed bytes fed so far."""
        return self._pos

    @property
    def entries(self) -> int:
        return self._entries

    # ------------------------------------------------------------------ driving
    def feed(self, data: bytes) -> list[TarMember]:
        out: list[TarMember] = []
        n = len(data)
        base = self._pos
        self._pos = base + n
        pos = 0
        if self._partial:
            need = BLOCK - len(self._partial)
            if n < need:
                self._partial += data
                return out
            block = self._partial + data[:need]
            self._partial = b""
            self._block(block, 0, base - (BLOCK - need), out)
            pos = need
        while pos < n:
            state = self._state
            if state == _SKIP:
                left = n - pos
                if left <= self._skip:
                    self._skip -= left
                    if not self._skip:
                        self._state = _HEADER_STATE
                    break
                pos += self._skip
                self._skip = 0
                self._state = _HEADER_STATE
            elif state == _HEADER_STATE or state == _ZERO or state == _SPARSE_EXT:
                if n - pos < BLOCK:
                    self._partial = data[pos:]
                    break
                self._block(data, pos, base + pos, out)
                pos += BLOCK
            elif state == _CAPTURE:
                take = min(self._cap_need, n - pos)
                self._cap.append(data[pos : pos + take])
                pos += take
                self._cap_need -= take
                if not self._cap_need:
                    self._captured(out)
            else:  # _END: ignore trailing bytes (Go's reader never reads them)
                break
        return out

    def close(self) -> None:
        """End of input: complain if it came in the middle of something."""
        end = self._pos
        if self._state == _END or self._state == _ZERO:
            return  # two zero blocks, or one zero block then EOF: both accepted by Go
        if self._partial:
            raise self._error("truncated tar header", end - len(self._partial))
        if self._state != _HEADER_STATE:
            raise self._error("tar stream ends inside a member's data", end)
        if self._meta_pending:
            raise self._error("tar stream ends after an extended header without its member", end)
        self.ended = True

    # ------------------------------------------------------------------ headers
    def _block(self, buf: bytes, off: int, at: int, out: list[TarMember]) -> None:
        """One 512-byte header block.  Written flat on purpose: it runs once per member."""
        state = self._state
        if state == _SPARSE_EXT:
            self._sparse_extension(buf, off, at, out)
            return
        block = buf[off : off + BLOCK] if off or len(buf) != BLOCK else buf
        name, mode, uid, gid, size, chk, typeflag, link, magic, prefix = _HEADER.unpack_from(block)
        if chk == _NUL8 and block == _ZERO_BLOCK:
            if state == _ZERO:
                self._state = _END
                self.ended = True
            else:
                if self._meta_pending:
                    raise self._error("end of archive right after an extended header", at)
                self._state = _ZERO
            return
        if state == _ZERO:
            raise self._error("a zero block followed by a non-zero block (corrupt archive)", at)

        # The unsigned sum of the header with its chksum field counted as 8 spaces.  zlib.adler32 yields
        # 1 + the byte sum modulo 65521 in C; a block can sum to 130560, but one with more than 256 NUL bytes
        # (every real header: names are short, the tail is padding) sums to at most 255 * 255 < 65521, so the
        # modulus is exact there; other blocks take sum().  The hottest line of the indexer.
        total = ((adler32(block) & 0xFFFF) - 1 if block.count(0) > 256 else sum(block)) + 256 - sum(chk)
        try:
            stored = int(chk.replace(b"\0", b" "), 8)
        except ValueError:
            try:
                stored = parse_number(chk)
            except ValueError:
                raise self._error("unreadable tar header checksum (not a tar stream?)", at) from None
        if stored != total and stored != _signed_checksum(block):
            raise self._error(f"tar header checksum mismatch (stored {stored}, computed {total})", at)

        self._entries += 1
        if self._entries > self._max_entries:
            raise self._limit(f"more than {self._max_entries} tar members", at)

        try:
            # Fast path: canonical "0000644\0" fields; int() itself tolerates spaces.
            mode_v = int(mode.rstrip(b"\0"), 8)
            uid_v = int(uid.rstrip(b"\0"), 8)
            gid_v = int(gid.rstrip(b"\0"), 8)
            size_v = int(size.rstrip(b"\0"), 8)
        except ValueError:
            try:
                mode_v = parse_number(mode)
                uid_v = parse_number(uid)
                gid_v = parse_number(gid)
                size_v = parse_number(size)
            except ValueError as exc:
                raise self._error(f"invalid numeric field in tar header: {exc}", at) from None
        if (mode_v | uid_v | gid_v | size_v) < 0:
            raise self._error("negative number in tar header", at)
        if size_v > INT64_MAX:
            raise self._error(_beyond_64_bits("size", size_v), at)

        if typeflag in _META_TYPES:
            self._start_meta(typeflag, size_v, at)
            return

        name_b = name.partition(b"\0")[0]
        if prefix[0] and magic == _USTAR_MAGIC:
            name_b = prefix.partition(b"\0")[0] + b"/" + name_b
        name_s = name_b.decode("utf-8", "surrogateescape")
        link_s = link.partition(b"\0")[0].decode("utf-8", "surrogateescape") if link[0] else ""

        gnu_sparse = False
        if typeflag == REGULAR or typeflag == _AREG or typeflag == _CONTIGUOUS:
            typeflag = DIRECTORY if (typeflag == _AREG and name_s.endswith("/")) else REGULAR
        elif typeflag == _GNU_SPARSE:
            typeflag = REGULAR
            gnu_sparse = True
        elif typeflag not in _KEPT_TYPES:
            raise self._error(
                f"unsupported tar member type {chr(typeflag)!r} for {name_s!r} (containerd cannot apply it)", at
            )
        if typeflag != REGULAR:
            # Links, directories, devices and fifos carry no data (Go skips none for them):
            # a hostile size on them must not shift the stream.
            size_v = 0
        member = TarMember(name_s, typeflag, mode_v & 0o7777, uid_v, gid_v, size_v, link_s, at, None, gnu_sparse)
        stored_size = size_v  # bytes of data that follow in the archive
        if self._meta_pending:
            stored_size = self._apply_meta(member, at)
        if gnu_sparse:
            if not member.sparse_size_known:
                member.size = self._gnu_realsize(block, at)
            if block[482]:
                # Old GNU sparse: extension blocks with more sparse entries follow the header.
                self._pending_sparse = member
                self._sparse_data = stored_size
                self._state = _SPARSE_EXT
                return
        if len(name_s) > self._max_path:  # long names from PAX/GNU were checked when applied
            raise self._limit(f"member path longer than {self._max_path} characters", at)
        self._data(member, stored_size, out)

    def _apply_meta(self, member: TarMember, at: int) -> int:
        """Apply pending PAX records and GNU long names; return the stored data size."""
        pax = self._pax
        self._pax = None
        stored_size = member.size
        if pax is not None:
            if "size" in pax and member.type == REGULAR:
                stored_size = member.size = self._pax_int(pax, "size", at)
            if "uid" in pax:
                member.uid = self._pax_int(pax, "uid", at)
            if "gid" in pax:
                member.gid = self._pax_int(pax, "gid", at)
            if "path" in pax:
                member.name = self._pax_str(pax, "path", at)
            if "linkpath" in pax:
                member.linkname = self._pax_str(pax, "linkpath", at)
            if "GNU.sparse.name" in pax:
                member.name = self._pax_str(pax, "GNU.sparse.name", at)
                member.sparse = True
            if "GNU.sparse.realsize" in pax or "GNU.sparse.size" in pax:
                key = "GNU.sparse.realsize" if "GNU.sparse.realsize" in pax else "GNU.sparse.size"
                member.size = self._pax_int(pax, key, at)
                member.sparse = True
                member.sparse_size_known = True
        if self._long_name is not None:
            member.name = self._long_name
            self._long_name = None
        if self._long_link is not None:
            member.linkname = self._long_link
            self._long_link = None
        self._meta_pending = False
        if len(member.name) > self._max_path or len(member.linkname) > self._max_path:
            raise self._limit(f"member path longer than {self._max_path} characters", at)
        return stored_size

    def _gnu_realsize(self, block: bytes, at: int) -> int:
        try:
            value = parse_number(block[483:495])
        except ValueError:
            raise self._error("invalid GNU sparse real size", at) from None
        if not 0 <= value <= INT64_MAX:
            raise self._error(_beyond_64_bits("GNU sparse real size", value), at)
        return value

    def _sparse_extension(self, buf: bytes, off: int, at: int, out: list[TarMember]) -> None:
        if not buf[off + 504]:
            member = self._pending_sparse
            assert member is not None
            self._pending_sparse = None
            self._state = _HEADER_STATE
            self._data(member, self._sparse_data, out)

    def _data(self, member: TarMember, stored_size: int, out: list[TarMember]) -> None:
        """Route a member's data: capture the head the caller wants, skip the rest."""
        want = 0
        if member.type == REGULAR and stored_size and not member.sparse:
            want = min(self._want(member), stored_size)
        if want > 0:
            self._cap_member = member
            self._cap_need = want
            self._cap = []
            self._cap_skip = _padded(stored_size) - want
            self._state = _CAPTURE
            return
        out.append(member)
        if stored_size:
            self._skip = _padded(stored_size)
            self._state = _SKIP
        else:
            self._state = _HEADER_STATE

    def _start_meta(self, typeflag: int, size: int, at: int) -> None:
        if size > self._limits.max_header_bytes:
            kind = "PAX header" if typeflag in (_PAX_LOCAL, _PAX_GLOBAL) else "GNU long name"
            raise self._limit(f"{kind} of {size} bytes (limit {self._limits.max_header_bytes})", at)
        self._cap_member = None
        self._cap_type = typeflag
        self._cap_offset = at
        self._cap = []
        self._cap_skip = _padded(size) - size
        if size:
            self._cap_need = size
            self._state = _CAPTURE
        else:
            self._cap_need = 0
            self._captured([])

    def _captured(self, out: list[TarMember]) -> None:
        data = b"".join(self._cap)
        self._cap = []
        member = self._cap_member
        if member is not None:
            member.data = data
            out.append(member)
            self._cap_member = None
        else:
            self._meta(data)
        if self._cap_skip:
            self._skip = self._cap_skip
            self._state = _SKIP
        else:
            self._state = _HEADER_STATE

    def _meta(self, data: bytes) -> None:
        typeflag = self._cap_type
        at = self._cap_offset
        if typeflag == _GNU_LONGNAME or typeflag == _GNU_LONGLINK:
            value = _decode(data.partition(b"\0")[0])
            if len(value) > self._limits.max_path_length:
                raise self._limit(f"GNU long name longer than {self._limits.max_path_length} characters", at)
            self._meta_pending = True
            if typeflag == _GNU_LONGNAME:
                self._long_name = value
            else:
                self._long_link = value
            return
        try:
            records = parse_pax(data)
        except ValueError as exc:
            raise self._error(f"invalid PAX header: {exc}", at) from None
        if typeflag == _PAX_GLOBAL:
            return  # parsed (so malformed ones fail like in Go) but not applied, as containerd does
        # An empty value means "no override" (Go keeps the header's field).
        records = {k: v for k, v in records.items() if v}
        self._meta_pending = True
        if self._pax is None:
            self._pax = records
        else:
            self._pax.update(records)

    def _pax_int(self, pax: dict[str, bytes], key: str, at: int) -> int:
        # Go parses these with strconv.ParseInt(v, 10, 64): more than int64 is a header error there, and
        # int() would raise ValueError on a record of more than 4300 digits.
        raw = pax[key]
        digits = raw.lstrip(b"0")
        if not raw.isdigit():
            raise self._error(f"invalid PAX {key} {raw[:40]!r}", at)
        if len(digits) > 19 or int(digits or b"0") > INT64_MAX:  # 19 digits hold every int64
            raise self._error(_beyond_64_bits(f"PAX {key}", raw[:41].decode()), at)
        return int(digits or b"0")

    def _pax_str(self, pax: dict[str, bytes], key: str, at: int) -> str:
        raw = pax[key]
        if b"\0" in raw:
            raise self._error(f"PAX {key} contains a NUL byte", at)
        return _decode(raw)


def iter_members(chunks: Iterable[bytes], limits: Limits = DEFAULT_LIMITS, want: Want | None = None) -> Iterator[TarMember]:
    """Convenience: members of an uncompressed tar given as chunks."""
    reader = TarReader(limits, want)
    for chunk in chunks:
        yield from reader.feed(chunk)
    reader.close()

