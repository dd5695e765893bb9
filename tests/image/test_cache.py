"""The on-disk cache: exact round trips, corruption is a miss, concurrent writers never tear a read."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from canrun.image import codec as cache_mod
from canrun.image.cache import Cache, decode_index, encode_index
from canrun.image.model import ElfInfo, Entry, EntryType, LayerIndex, ScriptInfo, UnknownFormat

DIGEST = "sha256:" + "ab" * 32


def sample(digest: str = DIGEST, n: int = 50, tag: str = "") -> LayerIndex:
    entries = [
        Entry("/bin/busybox", EntryType.FILE, 0o755, 0, 0, 1_000_000, None, ElfInfo(64, True, 62, None, 2)),
        Entry("/bin/bash", EntryType.FILE, 0o755, 0, 0, 9, None, ElfInfo(32, False, 8, "/lib/ld.so.1", 3)),
        Entry("/app/run.sh", EntryType.FILE, 0o4750, 2**40, 7, 20, None, ScriptInfo("/bin/sh\r", "-e x", "#!/bin/sh\r -e x")),
        Entry("/app/blob", EntryType.FILE, 0o700, 0, 0, 3, None, UnknownFormat(b"MZ\x90\x00")),
        Entry("/bin/sh", EntryType.SYMLINK, 0o777, 0, 0, 0, "busybox"),
        Entry("/bin/ls", EntryType.HARDLINK, 0o755, 0, 0, 0, "/bin/busybox"),
        Entry("/empty-link", EntryType.SYMLINK, 0o777, 0, 0, 0, ""),
        Entry("/caf\udce9", EntryType.DIR, 0o755),  # a Latin-1 name read with surrogateescape
        Entry("/usr/bin/python3", EntryType.WHITEOUT, 0o644),
        Entry("/opt", EntryType.OPAQUE, 0o755),
        Entry("/dev/null", EntryType.CHAR, 0o666),
        Entry("/dev/sda", EntryType.BLOCK, 0o660),
        Entry("/run/fifo", EntryType.FIFO, 0o600),
    ] + [Entry(f"/usr/share/doc/{tag}{i}", EntryType.FILE, 0o644, 0, 0, i) for i in range(n)]
    return LayerIndex(digest, entries, {"/etc/passwd": b"root:x:0:0::/root:/bin/sh\n" + tag.encode(), "/etc/group": b""})


def test_round_trip_is_exact(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    index = sample()
    assert cache.get_layer(DIGEST) is None
    cache.put_layer(index)
    assert cache.get_layer(DIGEST) == index
    assert Cache(tmp_path).get_layer(DIGEST) == index  # another instance (process) sees it


def test_env_var_and_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CANRUN_CACHE_DIR", str(tmp_path / "c"))
    assert Cache().root == tmp_path / "c"
    monkeypatch.delenv("CANRUN_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert Cache().root == tmp_path / ".cache" / "canrun"


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-20],  # truncated
        lambda b: b[:6] + bytes(len(b) - 6),  # zeroed payload
        lambda b: b"CRLI\x00\x00" + b[6:],  # an older format version
        lambda b: b"",
        lambda b: b"\x80\x04pickle?" + b,
        lambda b: b[:6] + __import__("zstandard").ZstdCompressor().compress(b"\x00" * 40),
    ],
)
def test_corrupt_or_old_files_are_a_miss_and_removed(tmp_path: Path, damage) -> None:
    cache = Cache(tmp_path)
    cache.put_layer(sample())
    (path,) = (tmp_path / "layers" / "sha256").iterdir()
    path.write_bytes(damage(path.read_bytes()))
    assert cache.get_layer(DIGEST) is None
    assert not path.exists()


def test_index_stored_under_another_digest_is_a_miss(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    other = "sha256:" + "cd" * 32
    cache.put_layer(sample())
    src = tmp_path / "layers" / "sha256" / (DIGEST[7:] + ".idx")
    src.rename(tmp_path / "layers" / "sha256" / (other[7:] + ".idx"))
    assert cache.get_layer(other) is None


def test_hostile_digests_are_never_used_as_paths(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    for digest in ("sha256:../../etc/passwd", "md5:abc", "sha256:" + "A" * 64, "../x"):
        cache.put_layer(sample(digest))
        assert cache.get_layer(digest) is None
    assert not (tmp_path / "etc").exists()
    assert not any(p.is_file() for p in (tmp_path / "c").rglob("*"))


def test_blobs_are_verified_on_read(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    data = b'{"schemaVersion":2}'
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with pytest.raises(ValueError):
        cache.put_blob(digest, data + b" ")
    cache.put_blob(digest, data)
    assert cache.get_blob(digest) == data
    (path,) = (tmp_path / "blobs" / "sha256").iterdir()
    path.write_bytes(b'{"schemaVersion":3}')
    assert cache.get_blob(digest) is None
    assert not path.exists()


def test_tags_expire(tmp_path: Path) -> None:
    cache = Cache(tmp_path, tag_ttl=300)
    cache.put_tag("docker.io/library/alpine:3", DIGEST, "application/vnd.oci.image.index.v1+json")
    assert cache.get_tag("docker.io/library/alpine:3") == (DIGEST, "application/vnd.oci.image.index.v1+json")
    assert cache.get_tag("docker.io/library/alpine:3", ttl=0) is None
    assert cache.get_tag("docker.io/library/alpine:4") is None
    (path,) = (tmp_path / "tags").iterdir()
    record = json.loads(path.read_text())
    record["stored"] -= 301
    path.write_text(json.dumps(record))
    assert cache.get_tag("docker.io/library/alpine:3") is None
    path.write_text("{broken")
    assert cache.get_tag("docker.io/library/alpine:3") is None


def test_unwritable_cache_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = Cache(blocker / "sub")
    cache.put_layer(sample())
    assert cache.get_layer(DIGEST) is None


def test_prune_drops_least_recently_used(tmp_path: Path) -> None:
    cache = Cache(tmp_path, max_bytes=10 << 30)
    digests = ["sha256:" + f"{i:02x}" * 32 for i in range(6)]
    for i, d in enumerate(digests):
        cache.put_layer(sample(d, n=2000))
        os.utime(cache.store.path(f"layers/sha256/{d[7:]}.idx"), (1000 + i, 1000 + i))
    cache.get_layer(digests[0])  # a read makes it recent
    size = sum(p.stat().st_size for p in (tmp_path / "layers").rglob("*.idx"))
    assert cache.prune(size // 2) > 0
    left = {d for d in digests if cache.store.path(f"layers/sha256/{d[7:]}.idx").exists()}
    assert digests[0] in left and digests[1] not in left
    assert sum(p.stat().st_size for p in (tmp_path / "layers").rglob("*.idx")) <= size // 2


def test_sixty_thousand_entries_round_trip() -> None:
    index = sample(n=60_000)
    assert decode_index(encode_index(index)) == index


# --------------------------------------------------------------------------- concurrency
def _writer(root: str, tag: str, rounds: int) -> None:
    cache = Cache(root)
    index = sample(n=3000, tag=tag)
    for _ in range(rounds):
        cache.put_layer(index)
        cache.put_blob("sha256:" + hashlib.sha256(tag.encode() * 1000).hexdigest(), tag.encode() * 1000)


def _reader(root: str, rounds: int, out: "multiprocessing.Queue[str]") -> None:
    cache = Cache(root)
    valid = {sample(n=3000, tag=t).files["/etc/passwd"]: sample(n=3000, tag=t) for t in ("a", "b", "c")}
    seen = 0
    # Read until enough complete indexes were seen (not a fixed count of tries): under load the
    # spawned writers may start after the readers, and a reader that gives up early proves nothing.
    deadline = time.monotonic() + 60
    while seen < rounds and time.monotonic() < deadline:
        got = cache.get_layer(DIGEST)
        if got is None:
            time.sleep(0.001)
            continue
        if valid.get(got.files.get("/etc/passwd", b"")) != got:
            out.put("torn")
            return
        seen += 1
    out.put(f"ok {seen}")


def test_concurrent_writers_never_produce_a_torn_read(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), t, 40)) for t in ("a", "b", "c")]
    readers = [ctx.Process(target=_reader, args=(str(tmp_path), 150, out)) for _ in range(2)]
    for p in writers + readers:
        p.start()
    for p in writers + readers:
        p.join(120)
        assert p.exitcode == 0
    results = [out.get(timeout=5) for _ in readers]
    assert all(r.startswith("ok") for r in results), results
    assert sum(int(r.split()[1]) for r in results) > 0  # the readers did see complete indexes
    assert not [p for p in (tmp_path / "layers" / "sha256").iterdir() if p.name.startswith(".tmp-")]


def test_cache_format_rejects_unknown_exec_kind(tmp_path: Path) -> None:
    with pytest.raises(cache_mod.CorruptRecord):
        cache_mod._exec_from_json([0, "macho"])


def test_int64_numbers_round_trip_and_a_record_the_format_cannot_hold_is_not_cached(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    big = LayerIndex(DIGEST, [Entry("/app", EntryType.FILE, 0o755, (1 << 63) - 1, (1 << 63) - 1, (1 << 63) - 1)], {})
    cache.put_layer(big)
    assert cache.get_layer(DIGEST) == big
    other = "sha256:" + "e" * 64
    cache.put_layer(LayerIndex(other, [Entry("/app", EntryType.FILE, 0o755, 1 << 64, 0, 0)], {}))  # no struct.error
    assert cache.get_layer(other) is None
