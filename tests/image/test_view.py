"""The view cache: a merged view saved by manifest digest answers exactly like the one merged from layers.

The frozen view (``FrozenMergedFS``) is compared with a freshly merged
``MergedFS`` on every path of real images built by umoci (whiteouts, opaque
directories, hardlinks into lower layers, merged /usr, symlink loops), and on
random small layer stacks; a damaged view file is a miss and is removed.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from canrun.errors import ImageCorrupt
from canrun.image import codec as cache_mod
from canrun.image.cache import Cache, decode_view, encode_view
from canrun.image.fs import NATIVE, OVERLAYFS, ROOT, Credentials, FrozenMergedFS, FrozenNodes, MergedFS, Node
from canrun.image.frozen import NODE_HAS_LINK, NODE_RECORD
from canrun.image.layer import index_stream
from canrun.image.model import EntryType, LayerIndex
from tests.checks.build import DYN_AMD64, d, f, hard, layer, opq, script, sym, wh
from tests.support import images
from tests.support.images import Config, Dir, File, Image, RawLayer, Remove, Symlink, TarEntry

DIGEST = "sha256:" + "5e" * 32
OTHER = "sha256:" + "0f" * 32

CREDS = (
    ROOT,
    Credentials(1000, 1000, frozenset(), frozenset()),
    Credentials(1000, 1000, frozenset({0, 50}), frozenset({"DAC_READ_SEARCH"})),
)


def frozen_copy(fs: MergedFS, digest: str = DIGEST) -> FrozenMergedFS:
    return decode_view(encode_view(fs, digest), digest)


def _probes(fs: MergedFS) -> list[str]:
    """Every stored path, plus what a check may ask about them: trailing slashes, missing children, ``..``."""
    paths = set(fs.paths())
    extra = {"", "/", "/nope", "relative/x", "bin/sh", "./usr/../bin", "/etc/passwd", "/etc/group"}
    for p in paths:
        extra |= {p + "/", p + "/missing", p + "/..", p.lstrip("/")}
    return sorted(paths | extra | set(fs.removals()))


def assert_same(fresh: MergedFS, frozen: MergedFS) -> None:
    assert len(frozen) == len(fresh)
    assert list(frozen.paths()) == list(fresh.paths())
    assert frozen.layer_digests == fresh.layer_digests
    for p in _probes(fresh):
        assert (p in frozen) == (p in fresh), p
        assert frozen.lookup(p) == fresh.lookup(p), p
        assert frozen.real_path(p) == fresh.real_path(p), p
        assert frozen.removed_by(p) == fresh.removed_by(p), p
        assert frozen.file(p) == fresh.file(p), p
        assert frozen.children(p) == fresh.children(p), p
        for creds in CREDS:
            for follow in (True, False):
                for cwd in ("/", "/usr"):
                    assert frozen.resolve(p, cwd, creds=creds, follow=follow) == \
                        fresh.resolve(p, cwd, creds=creds, follow=follow), (p, creds, follow, cwd)


# --------------------------------------------------------------------------- real images
EDGE_CASES = Image(
    "view-edge-cases",
    (
        images.busybox_root(images.HOST_BUSYBOX, merged_usr=True) + (
            Dir("/loop"), Symlink("/loop/a", "b"), Symlink("/loop/b", "a"), Symlink("/loop/self", "self"),
            Symlink("/loop/up", "../../../etc"), Symlink("/dangling", "/nowhere/at/all"),
            Dir("/opt/tool/bin"), File("/opt/tool/bin/run", source=images.HOST_BUSYBOX),
            Dir("/srv/data"), File("/srv/data/x", data=b"x", mode=0o644),
            Dir("/private", 0o700), File("/private/tool", source=images.HOST_BUSYBOX, mode=0o750, uid=1000),
            File("/app/run.sh", data=b"#!/bin/sh\r\nexec true\r\n"), File("/app/blob", data=b"MZ\x90\x00xxxx"),
        ),
        RawLayer((
            TarEntry("opt/tool/", tarfile.DIRTYPE, mode=0o755),
            TarEntry("opt/tool/.wh..wh..opq"),
            TarEntry("opt/tool/README", data=b"moved\n"),
            TarEntry("srv/.wh.data"),
            TarEntry("usr/local/bin/", tarfile.DIRTYPE, mode=0o755),
            TarEntry("usr/local/bin/app", tarfile.LNKTYPE, mode=0o755, link="bin/busybox"),  # via /bin -> usr/bin
            TarEntry("bin/extra", data=b"#!/bin/bash\n", mode=0o755),  # lands in /usr/bin
            TarEntry("cfg", tarfile.SYMTYPE, link="etc"),
        )),
        (Remove("/usr/bin/cat"), Remove("/app/blob"), File("/srv/late", data=b"late", mode=0o600)),
    ),
    Config(entrypoint=("/bin/sh",)),
)

REAL = ("whiteout", "opaque", "hardlink", "usrmerge", "dynamic-ls-loader")


def _layer_indexes(layout: Path) -> list[LayerIndex]:
    out = []
    for digest in images._manifest_layers(layout):
        blob = images._blob_path(layout, digest).read_bytes()
        out.append(index_stream([blob[i:i + 65536] for i in range(0, len(blob), 65536)], digest=digest))
    return out


@pytest.fixture(scope="module")
def real_images() -> dict[str, list[LayerIndex]]:
    recipes = [r for r in images.catalogue_recipes(None) if r.name in REAL] + [EDGE_CASES]
    layouts, _ = images.build_all(recipes)
    return {name: _layer_indexes(layouts[name]) for name in (*REAL, EDGE_CASES.name)}


#: Images with a hard link to a lower layer's file: containerd's overlayfs snapshotter cannot unpack them.
CROSS_LAYER_LINKS = {"hardlink", EDGE_CASES.name}


@pytest.mark.parametrize("snapshotter", [OVERLAYFS, NATIVE])
@pytest.mark.parametrize("name", [*REAL, EDGE_CASES.name])
def test_frozen_view_of_a_real_image_answers_like_the_merged_one(real_images: dict[str, list[LayerIndex]],
                                                                  name: str, snapshotter: str) -> None:
    if snapshotter == OVERLAYFS and name in CROSS_LAYER_LINKS:
        with pytest.raises(ImageCorrupt, match="overlayfs snapshotter: the hard link"):
            MergedFS.from_layers(real_images[name], snapshotter)
        return
    fresh = MergedFS.from_layers(real_images[name], snapshotter)
    assert_same(fresh, frozen_copy(fresh))


def test_edge_case_image_has_the_cases_it_claims(real_images: dict[str, list[LayerIndex]]) -> None:
    """Guards the comparison above: the image really has loops, whiteouts, an opaque dir and hardlinks."""
    fs = frozen_copy(MergedFS.from_layers(real_images[EDGE_CASES.name], NATIVE))
    assert fs.resolve("/loop/a").outcome == "ELOOP" and fs.resolve("/loop/self").outcome == "ELOOP"
    assert fs.removed_by("/srv/data/x") == 1 and fs.lookup("/srv/data") is None
    assert fs.children("/opt/tool") == ["README"] and fs.removed_by("/opt/tool/bin") == 1
    app = fs.lookup("/usr/local/bin/app")
    assert app is not None and app.hardlink == "/usr/bin/busybox" and app.layer == 1 and app.exec is not None
    assert fs.lookup("/usr/bin/extra") is not None and fs.resolve("/bin/extra").ok
    assert fs.removed_by("/usr/bin/cat") == 2 and fs.resolve("/bin/cat").outcome == "ENOENT"
    assert fs.file("/cfg/passwd") == images.PASSWD  # a kept file, reached through a symlink
    assert fs.resolve("/private/tool", creds=CREDS[1]).outcome == "EACCES"
    assert fs.lookup("/app/run.sh").exec.interpreter == "/bin/sh\r"


def test_frozen_view_builds_only_the_nodes_it_is_asked_for(real_images: dict[str, list[LayerIndex]]) -> None:
    fresh = MergedFS.from_layers(real_images["dynamic-ls-loader"])
    frozen = frozen_copy(fresh)
    nodes = frozen._nodes
    assert isinstance(nodes, FrozenNodes) and not nodes._memo
    res = frozen.resolve("/usr/local/bin/ls")
    assert res.ok and res.node.exec is not None
    assert frozen.lookup("/usr/local/bin/ls") is res.node  # memoised: one Node per path
    walked = {"/", "/usr", "/usr/local", "/usr/local/bin", "/usr/local/bin/ls"}
    assert set(nodes._memo) == walked and len(fresh) > 3 * len(walked)
    assert len(frozen) == len(fresh) and "/lib/x86_64-linux-gnu" in frozen  # no node built for these
    assert set(nodes._memo) == walked


# --------------------------------------------------------------------------- random layer stacks
_PATHS = ["/a", "/b", "/c", "/a/b", "/a/c", "/b/a", "/a/b/c", "/etc", "/etc/passwd"]
_names = st.sampled_from(["a", "b", "c", "..", ".", "etc"])
_targets = st.lists(_names, min_size=0, max_size=4).map("/".join) | \
    st.lists(_names, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p))


@st.composite
def _entry(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    path = draw(st.sampled_from(_PATHS))
    kind = draw(st.sampled_from(["dir", "file", "exe", "script", "link", "hard", "wh", "opq"]))
    mode = draw(st.sampled_from([0o755, 0o700, 0o644, 0o4711, 0o000]))
    uid = draw(st.sampled_from([0, 1000, 2**40]))
    if kind == "dir":
        return d(path, mode, uid, draw(st.sampled_from([0, 50])))
    if kind == "file":
        return f(path, mode & 0o666, uid)
    if kind == "exe":
        return f(path, mode | 0o100, uid, exec=DYN_AMD64)
    if kind == "script":
        return script(path, "#!/bin/sh -e")
    if kind == "link":
        return sym(path, draw(_targets))
    if kind == "hard":
        return hard(path, draw(st.sampled_from(_PATHS)))
    return wh(path) if kind == "wh" else opq(path)


@st.composite
def _stacks(draw: st.DrawFn) -> list[LayerIndex]:
    layers = []
    for i in range(draw(st.integers(1, 4))):
        entries = draw(st.lists(_entry(), max_size=8))
        files = {"/etc/passwd": f"root:x:0:0::/:/bin/sh\n#{i}\n".encode()} if draw(st.booleans()) else {}
        layers.append(layer(*entries, files=files, digest=f"sha256:{i:064x}"))
    return layers


@settings(max_examples=150, deadline=None)
@given(_stacks(), st.sampled_from([OVERLAYFS, NATIVE]))
def test_frozen_view_of_random_layer_stacks_answers_like_the_merged_one(stack: list[LayerIndex],
                                                                       snapshotter: str) -> None:
    try:
        fresh = MergedFS.from_layers(stack, snapshotter)
    except ImageCorrupt:
        assume(False)  # a hard link overlayfs cannot make: no view to compare
        raise
    assert_same(fresh, frozen_copy(fresh))


# --------------------------------------------------------------------------- the cache directory
def _sample() -> MergedFS:
    return MergedFS.from_layers([
        layer(d("/bin"), f("/bin/busybox", 0o755), sym("/bin/sh", "busybox"), hard("/bin/ls", "/bin/busybox"),
              d("/etc"), f("/etc/passwd"), d("/caf\udce9"), script("/run.sh", "#!/bin/sh\r"),
              files={"/etc/passwd": b"root:x:0:0::/root:/bin/sh\n"}, digest="sha256:" + "01" * 32),
        layer(wh("/bin/ls"), opq("/etc"), digest="sha256:" + "02" * 32),
    ])


def test_view_round_trips_through_the_cache(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    fresh = _sample()
    assert cache.get_view(DIGEST) is None
    cache.put_view(DIGEST, fresh)
    assert (tmp_path / "views" / "sha256" / (DIGEST[7:] + ".overlayfs.fsv")).is_file()
    got = Cache(tmp_path).get_view(DIGEST)
    assert isinstance(got, FrozenMergedFS)
    assert_same(fresh, got)
    assert_same(fresh, decode_view(encode_view(got, DIGEST), DIGEST))  # a frozen view re-encodes identically


def _repack(blob: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    """Decompress a view file, let ``edit`` change its payload, recompress it with a valid checksum."""
    payload = bytearray(zstandard.ZstdDecompressor().decompress(blob[6:]))
    edit(payload)
    return blob[:6] + zstandard.ZstdCompressor(write_checksum=True).compress(bytes(payload))


def _first_record_offset(payload: bytearray) -> int:
    (meta_len,) = cache_mod._SECTION.unpack_from(payload, 0)
    return 4 + meta_len + 4


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-20],  # truncated
        lambda b: b[: len(b) // 2],
        lambda b: b[:6] + bytes(len(b) - 6),  # zeroed payload
        lambda b: b[:4] + b"\x00\x00" + b[6:],  # an older format version
        lambda b: b"CRLI" + b[4:],  # a layer index file, not a view
        lambda b: b"",
        lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0x40]) + b[len(b) // 2 + 1 :],  # one bit: checksum
        lambda b: b[:6] + zstandard.ZstdCompressor().compress(b"\x00" * 40),
        # valid checksum, but a node type code no EntryType has
        lambda b: _repack(b, lambda p: p.__setitem__(_first_record_offset(p), 200)),
        # valid checksum, but the record table is one byte short
        lambda b: _repack(b, lambda p: p.__delitem__(_first_record_offset(p))),
    ],
)
def test_damaged_or_old_view_is_a_miss_and_removed(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    cache = Cache(tmp_path)
    cache.put_view(DIGEST, _sample())
    (path,) = (tmp_path / "views" / "sha256").iterdir()
    path.write_bytes(damage(path.read_bytes()))
    assert cache.get_view(DIGEST) is None
    assert not path.exists()


def test_undamaged_view_is_not_removed(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.put_view(DIGEST, _sample())
    (path,) = (tmp_path / "views" / "sha256").iterdir()
    path.write_bytes(_repack(path.read_bytes(), lambda p: None))  # recompressed, same content
    assert cache.get_view(DIGEST) is not None and path.exists()


def test_view_stored_under_another_digest_is_a_miss(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.put_view(DIGEST, _sample())
    base = tmp_path / "views" / "sha256"
    (base / (DIGEST[7:] + ".overlayfs.fsv")).rename(base / (OTHER[7:] + ".overlayfs.fsv"))
    assert cache.get_view(OTHER) is None
    assert not any(base.iterdir())


def test_hostile_manifest_digests_are_never_used_as_paths(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    for digest in ("sha256:../../etc/passwd", "md5:abc", "sha256:" + "A" * 64, "../x"):
        cache.put_view(digest, _sample())
        assert cache.get_view(digest) is None
    assert not any(p.is_file() for p in (tmp_path / "c").rglob("*"))


def test_prune_counts_and_drops_views(tmp_path: Path) -> None:
    cache = Cache(tmp_path, max_bytes=10 << 30)
    digests = ["sha256:" + f"{i:02x}" * 32 for i in range(4)]
    for i, digest in enumerate(digests):
        cache.put_view(digest, _sample())
        path = cache.store.path(f"views/sha256/{digest[7:]}.overlayfs.fsv")
        assert path is not None
        os.utime(path, (1000 + i, 1000 + i))
    assert cache.prune(1) > 0
    assert not list((tmp_path / "views").rglob("*.fsv"))


def test_unwritable_cache_is_not_an_error_for_views(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = Cache(blocker / "sub")
    cache.put_view(DIGEST, _sample())
    assert cache.get_view(DIGEST) is None


def test_frozen_view_refuses_apply() -> None:
    frozen = frozen_copy(_sample())
    assert not hasattr(frozen, "apply")  # a frozen view has no way to take a layer
    assert "/x" not in frozen
    MergedFS().apply(layer(f("/x")))  # a normal merged view still applies layers


def test_forged_record_is_an_image_error_not_a_traceback() -> None:
    """A record whose link index points nowhere (a file forged past the checksum) fails with ImageCorrupt."""
    records = NODE_RECORD.pack(1, 0, 0o755, 0, 0, 0, -1, 0, 0) + \
        NODE_RECORD.pack(2, NODE_HAS_LINK, 0o777, 0, 0, 0, 0, 7, 0)
    fs = FrozenMergedFS(FrozenNodes(["/", "/x"], records, [], [], dict), {}, {}, [])
    assert fs.lookup("/") == Node("/", EntryType.DIR, 0o755)
    with pytest.raises(ImageCorrupt, match="/x"):
        fs.lookup("/x")


def test_exec_headers_are_decoded_only_when_a_node_needs_one() -> None:
    calls: list[int] = []
    fresh = _sample()
    frozen = frozen_copy(fresh)
    nodes = frozen._nodes
    assert isinstance(nodes, FrozenNodes)
    load = nodes._load_execs
    nodes._load_execs = lambda: calls.append(1) or load()  # type: ignore[assignment]
    assert frozen.resolve("/etc").ok and frozen.lookup("/bin/sh") is not None
    assert calls == []
    assert frozen.lookup("/bin/busybox") == fresh.lookup("/bin/busybox")
    assert frozen.lookup("/run.sh") == fresh.lookup("/run.sh")
    assert calls == [1]


def _meta(blob: bytes) -> dict[str, object]:
    payload = zstandard.ZstdDecompressor().decompress(blob[6:])
    (n,) = cache_mod._SECTION.unpack_from(payload, 0)
    return json.loads(payload[4 : 4 + n])


def test_view_file_names_its_manifest_and_layers(tmp_path: Path) -> None:
    meta = _meta(encode_view(_sample(), DIGEST))
    assert meta["digest"] == DIGEST
    assert meta["layers"] == ["sha256:" + "01" * 32, "sha256:" + "02" * 32]


@settings(max_examples=150, deadline=None)
@given(_stacks(), st.sampled_from([OVERLAYFS, NATIVE]))
def test_memoised_parent_resolution_merges_as_the_plain_walk_does(stack: list[LayerIndex], snapshotter: str) -> None:
    """The merge resolves each parent prefix once (a layer of padded symlinks with thousands of members under
    them is linear, not quadratic); the result is the merge that resolves every parent from scratch."""
    import canrun.image.fs as fs_module
    from canrun.image.walk import root_path

    def merge() -> list[tuple[object, ...]] | str:
        try:
            fs = MergedFS.from_layers(stack, snapshotter)
        except ImageCorrupt as exc:
            return str(exc)
        return sorted((n.path, n.type, n.mode, n.link, n.hardlink, n.layer) for n in fs.nodes())

    memoised = merge()
    original = fs_module.root_path_memo
    fs_module.root_path_memo = lambda lookup, memo, path: root_path(lookup, path)  # type: ignore[assignment]
    try:
        plain = merge()
    finally:
        fs_module.root_path_memo = original
    assert memoised == plain


def test_padded_symlinks_with_many_members_under_them_merge_in_linear_work() -> None:
    """40 symlinks chaining into each other through runs of ./, 10,000 members under the first."""
    pad = "./" * 2000
    links = [sym(f"/s{i}", pad + (f"s{i + 1}" if i < 39 else "d")) for i in range(40)]
    members = [f(f"/s0/f{i}", 0o755) for i in range(10_000)]
    for snapshotter in (OVERLAYFS, NATIVE):
        fs = MergedFS.from_layers([layer(d("/x")), layer(d("/d"), *links, *members, digest="sha256:" + "1" * 64)],
                                  snapshotter)
        assert fs.lookup("/d/f9999") is not None and fs.lookup("/s0").type is EntryType.SYMLINK
