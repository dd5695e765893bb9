"""The layer indexer end to end: compression, normalisation, whiteouts, limits, real umoci layers."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import random
import tarfile
import threading
import zlib
from pathlib import Path

import pytest
import zstandard

from canrun.errors import ImageCorrupt, LayerError, LimitExceeded
from canrun.image import layer as layer_mod
from canrun.image.binary import parse_exec_header
from canrun.image.layer import clean_path, index_layer, index_stream, make_entry
from canrun.image.limits import Limits
from canrun.image.model import ElfInfo, Entry, EntryType, ScriptInfo

from .conftest import chunked, gz, make_tar, member, sha256

BUSYBOX = Path("/bin/busybox").read_bytes()


def sample_tar() -> bytes:
    return make_tar(
        [
            (member("./", tarfile.DIRTYPE, mode=0o755), None),
            (member("./bin/", tarfile.DIRTYPE, mode=0o755), None),
            (member("./bin/busybox", mode=0o755), BUSYBOX),
            (member("./bin/sh", tarfile.SYMTYPE, link="busybox"), None),
            (member("./bin/ls", tarfile.LNKTYPE, link="./bin/busybox"), None),
            (member("./etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n"),
            (member("./etc/group"), b"root:x:0:\n"),
            (member("./app/run.sh", mode=0o750), b"#!/bin/bash\r\necho\r\n"),
            (member("./app/data.bin"), b"\x7fELF not exec"),
            (member("./app/empty", mode=0o755), b""),
        ]
    )


def index(data: bytes, chunk: int = 65536, **kw) -> list[Entry]:
    return index_stream(chunked(data, chunk), digest="sha256:test", **kw).entries


def by_path(entries: list[Entry]) -> dict[str, Entry]:
    return {e.path: e for e in entries}


# --------------------------------------------------------------------------- content
@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
def test_index_content(compress: str) -> None:
    raw = sample_tar()
    data = {"none": raw, "gzip": gz(raw), "zstd": zstandard.ZstdCompressor().compress(raw)}[compress]
    result = index_stream(chunked(data, 1000), digest="sha256:x", compression=compress)
    entries = by_path(result.entries)
    assert "/" not in entries  # containerd ignores the root member
    assert entries["/bin"].type is EntryType.DIR
    bb = entries["/bin/busybox"]
    assert (bb.type, bb.mode, bb.size) == (EntryType.FILE, 0o755, len(BUSYBOX))
    assert isinstance(bb.exec, ElfInfo) and bb.exec.interpreter is None
    assert (entries["/bin/sh"].type, entries["/bin/sh"].link) == (EntryType.SYMLINK, "busybox")
    assert (entries["/bin/ls"].type, entries["/bin/ls"].link) == (EntryType.HARDLINK, "/bin/busybox")
    assert entries["/app/run.sh"].exec == ScriptInfo("/bin/bash\r", None, "#!/bin/bash\r")
    assert entries["/app/data.bin"].exec is None  # no exec bit: not parsed
    assert entries["/app/empty"].exec == parse_exec_header(b"")
    assert result.files == {"/etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", "/etc/group": b"root:x:0:\n"}


def test_compression_is_sniffed_like_containerd() -> None:
    raw = sample_tar()
    assert index(raw, compression="gzip") == index(gz(raw), compression="none")


def test_path_normalisation() -> None:
    assert clean_path("./usr/bin/") == "/usr/bin"
    assert clean_path("../../etc/passwd") == "/etc/passwd"
    assert clean_path("/abs//x/./y/../z") == "/abs/x/z"
    assert clean_path(".") == "/"
    assert clean_path("..") == "/"
    assert clean_path(".hidden/..x") == "/.hidden/..x"


def test_traversal_and_absolute_names_are_clamped_to_the_root() -> None:
    data = make_tar(
        [
            (member("../../etc/passwd"), b"evil:x:0:0::/:/bin/sh\n"),
            (member("/etc/shadow"), b""),
            (member("a/../../../b", tarfile.LNKTYPE, link="../../etc/shadow"), None),
        ]
    )
    result = index_stream([data], digest="sha256:t")
    assert [(e.path, e.link) for e in result.entries] == [("/etc/passwd", None), ("/etc/shadow", None), ("/b", "/etc/shadow")]
    assert result.files == {"/etc/passwd": b"evil:x:0:0::/:/bin/sh\n"}  # exactly what containerd would write


def test_symlink_loops_are_recorded_as_they_are() -> None:
    data = make_tar([(member("a", tarfile.SYMTYPE, link="b"), None), (member("b", tarfile.SYMTYPE, link="/a"), None)])
    assert [(e.path, e.link) for e in index(data)] == [("/a", "b"), ("/b", "/a")]


def test_whiteouts_and_opaque_directories() -> None:
    data = make_tar(
        [
            (member("usr/bin/.wh.python3"), b""),
            (member("opt/app/.wh..wh..opq"), b""),
            (member(".wh..wh..opq"), b""),
            (member("var/.wh..wh.plnk"), b""),  # aufs metadata: ignored
            (member("etc/.wh.passwd"), b""),
        ]
    )
    assert [(e.path, e.type) for e in index(data)] == [
        ("/usr/bin/python3", EntryType.WHITEOUT),
        ("/opt/app", EntryType.OPAQUE),
        ("/", EntryType.OPAQUE),
        ("/etc/passwd", EntryType.WHITEOUT),
    ]


def test_later_member_replaces_a_kept_file() -> None:
    data = make_tar([(member("etc/passwd"), b"a\n"), (member("etc/passwd", tarfile.SYMTYPE, link="/x"), None)])
    assert index_stream([data], digest="sha256:t").files == {}


def test_kept_file_over_the_limit_is_refused_not_truncated() -> None:
    data = make_tar([(member("etc/passwd"), b"x" * 5000)])
    with pytest.raises(LimitExceeded, match="/etc/passwd is 5000 bytes"):
        index_stream([data], digest="sha256:t", limits=Limits(max_kept_file_size=4096))


def test_make_entry_equals_the_dataclass_constructor() -> None:
    args = ("/p", EntryType.FILE, 0o755, 1, 2, 3, None, ElfInfo(64, True, 62, None, 2))
    made = make_entry(*args)
    assert made == Entry(*args) and hash(made) == hash(Entry(*args))
    with pytest.raises(AttributeError):
        made.path = "/q"  # type: ignore[misc]  # still frozen


# --------------------------------------------------------------------------- compression edge cases
def test_gzip_multi_member_like_estargz() -> None:
    raw = sample_tar()
    cuts = [0, 1536, 4096, len(raw) // 2, len(raw)]
    multi = b"".join(gz(raw[a:b]) for a, b in zip(cuts, cuts[1:]))
    assert index(multi, chunk=333) == index(raw)


def test_gzip_zlib_fallback_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = sample_tar()
    multi = gz(raw[:2048]) + gz(raw[2048:])
    expected = index(multi)
    monkeypatch.setattr(layer_mod, "_igzip", None)
    assert index(multi, chunk=100) == expected


def test_truncated_gzip_names_the_layer_and_offset() -> None:
    data = gz(sample_tar())
    with pytest.raises(LayerError, match=r"layer sha256:test: gzip stream truncated at compressed offset 2000"):
        index(data[:2000], chunk=500)


def test_corrupt_gzip_crc() -> None:
    data = bytearray(gz(sample_tar()))
    data[-8] ^= 0xFF
    with pytest.raises(LayerError, match="bad gzip data"):
        index(bytes(data))


def test_garbage_after_gzip_member() -> None:
    with pytest.raises(LayerError, match="after member 1"):
        index(gz(sample_tar()) + b"not gzip at all")


def test_zstd_multi_frame_in_small_chunks() -> None:
    raw = sample_tar()
    c = zstandard.ZstdCompressor(level=3, write_checksum=True)
    frames = c.compress(raw[:5000]) + c.compress(raw[5000:])
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"
    assert index(skippable + frames, chunk=97) == index(raw)


def test_truncated_zstd() -> None:
    data = zstandard.ZstdCompressor().compress(sample_tar())
    with pytest.raises(LayerError, match="zstd stream truncated|ends inside|truncated tar"):
        index(data[:-10], chunk=1000)
    # cut exactly where the tar would still look complete: only the frame walker can tell
    raw = make_tar([(member("a"), b"x")]).rstrip(b"\0")
    raw += bytes((-len(raw)) % 512)
    c = zstandard.ZstdCompressor(level=1)
    whole = c.compress(raw)
    with pytest.raises(LayerError, match="zstd stream truncated"):
        index(whole[:-3])


def test_bad_zstd() -> None:
    with pytest.raises(LayerError, match="bad zstd data"):
        index(b"\x28\xb5\x2f\xfd" + random.Random(0).randbytes(2000))  # fixed: some random tails are valid zstd


def test_gzip_bomb_hits_the_byte_limit_early() -> None:
    consumed = 0

    def bomb():
        nonlocal consumed
        header = make_tar([(member("zeros"), b"")])[:512]
        info = tarfile.TarInfo("zeros")
        info.size = 10 * 2**30
        header = info.tobuf(tarfile.GNU_FORMAT)
        comp = zlib.compressobj(9, wbits=31)
        yield comp.compress(header)
        zeros = bytes(1 << 20)
        for _ in range(10 * 1024):
            consumed += 1
            yield comp.compress(zeros)
        yield comp.flush()

    with pytest.raises(LimitExceeded, match="more than 67108864 bytes uncompressed"):
        index_stream(bomb(), digest="sha256:bomb", limits=Limits(max_total_bytes=64 << 20))
    assert consumed < 200


def test_ratio_limit() -> None:
    data = zstandard.ZstdCompressor(level=19).compress(make_tar([(member("z"), bytes(40 << 20))]))
    with pytest.raises(LimitExceeded, match="compression ratio"):
        index_stream([data], digest="sha256:r", limits=Limits(max_ratio=100, ratio_floor=1 << 20))


def test_entry_bomb_through_gzip_hits_the_entry_limit() -> None:
    block = make_tar([(member("same"), b"")])[:512]

    def stream():
        comp = zlib.compressobj(1, wbits=31)
        for _ in range(1_000_000 // 1000):
            yield comp.compress(block * 1000)
        yield comp.flush()

    with pytest.raises(LimitExceeded, match="more than 5000 tar members"):
        index_stream(stream(), digest="sha256:e", limits=Limits(max_entries=5000))


# --------------------------------------------------------------------------- async
async def agen(data: bytes, chunk: int = 4096, fail: Exception | None = None, delay: float = 0.0):
    for part in chunked(data, chunk):
        if delay:
            await asyncio.sleep(delay)
        yield part
    if fail is not None:
        raise fail


async def test_index_layer_matches_index_stream() -> None:
    data = gz(sample_tar())
    result = await index_layer(agen(data), digest="sha256:a")
    assert result.entries == index(data)


async def test_two_layers_concurrently() -> None:
    one, two = gz(sample_tar()), zstandard.ZstdCompressor().compress(make_tar([(member("x"), b"y")]))
    a, b = await asyncio.gather(index_layer(agen(one), digest="sha256:1"), index_layer(agen(two), digest="sha256:2"))
    assert (a.digest, len(a.entries), b.digest, [e.path for e in b.entries]) == ("sha256:1", 9, "sha256:2", ["/x"])


async def test_producer_error_wins_and_worker_stops() -> None:
    before = threading.active_count()
    with pytest.raises(ImageCorrupt, match="digest mismatch"):
        await index_layer(agen(gz(sample_tar()), fail=ImageCorrupt("digest mismatch")), digest="sha256:a")
    assert threading.active_count() <= before + 1  # executor threads may idle, none is stuck


async def test_worker_error_stops_the_producer() -> None:
    pulled = 0

    async def endless():
        nonlocal pulled
        while True:
            pulled += 1
            yield b"this is not a tar archive at all" * 64

    with pytest.raises(LayerError, match="checksum"):
        await index_layer(endless(), digest="sha256:junk")
    assert pulled < 100


async def test_stalled_stream_hits_the_time_limit() -> None:
    with pytest.raises(LimitExceeded, match="longer than 0.3 s"):
        await index_layer(agen(gz(sample_tar()), delay=1.0), digest="sha256:s", limits=Limits(max_seconds=0.3))


# --------------------------------------------------------------------------- real layers written by umoci
def test_umoci_layers(umoci_image: dict) -> None:
    (d1, mt1, p1), (d2, mt2, p2) = umoci_image["layers"]
    assert mt1.endswith("tar+gzip")
    blob1, blob2 = p1.read_bytes(), p2.read_bytes()
    assert sha256(blob1) == d1
    first = index_stream(chunked(blob1, 65536), digest=d1)
    entries = by_path(first.entries)
    assert isinstance(entries["/bin/busybox"].exec, ElfInfo)
    assert entries["/bin/busybox"].size == len(BUSYBOX)
    assert (entries["/bin/sh"].type, entries["/bin/sh"].link) == (EntryType.SYMLINK, "busybox")
    # umoci writes the second name of a hard-linked pair as a hardlink to the first, root-relative
    links = {e.path: e.link for e in first.entries if e.type is EntryType.HARDLINK}
    assert links in ({"/bin/ls": "/bin/busybox"}, {"/bin/busybox": "/bin/ls"})
    assert entries["/usr/lib/app/run.sh"].exec == ScriptInfo("/bin/sh\r", None, "#!/bin/sh\r")
    assert first.files["/etc/passwd"].startswith(b"root:x:0:0:")
    # umoci's tar matches tarfile's reading of it
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob1))) as tar:
        assert sorted(clean_path(m.name) for m in tar if clean_path(m.name) != "/") == sorted(entries)

    second = index_stream(chunked(blob2, 4096), digest=d2).entries
    # umoci also records a parent directory whose mtime moved, which depends on whether the repack fell in
    # another second than the edits: only those directories may come and go
    dirs = {e.path for e in second if e.type is EntryType.DIR}
    assert dirs <= {"/opt", "/opt/keep", "/usr/lib/app"}
    assert sorted((e.path, e.type) for e in second if e.type is not EntryType.DIR) == [
        ("/opt/keep/new", EntryType.FILE),
        ("/opt/keep/old", EntryType.WHITEOUT),
        ("/usr/lib/app/gone", EntryType.WHITEOUT),
    ]


def test_declared_compression_names_the_cause_when_a_blob_is_neither_compressed_nor_tar() -> None:
    """containerd sniffs the magic number, so does canrun; the media type only explains a failure."""
    garbage = b"<html>this is an error page, not a layer</html>" + b"\n" * 600
    with pytest.raises(LayerError, match="media type says gzip, but it does not start with the gzip magic"):
        index(garbage, compression="gzip")
    with pytest.raises(LayerError) as plain:
        index(garbage, compression="none")
    assert "media type" not in str(plain.value)
    # a plain tar declared gzip is read as tar, as containerd reads it
    assert index(sample_tar(), compression="gzip") == index(sample_tar())
