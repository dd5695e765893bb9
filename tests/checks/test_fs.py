"""The merged view and the path walk: every layer-application (per snapshotter) and lookup rule the runtimes follow."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canrun.errors import ImageCorrupt
from canrun.image.fs import (
    EACCES, ELOOP, ENOENT, ENOTDIR, MAX_SYMLINKS, OK, Credentials, MergedFS, permission,
)
from canrun.image.model import EntryType

from .build import DYN_AMD64, NATIVE, base_layer, d, f, hard, layer, merged, opq, sym, wh


# --------------------------------------------------------------------------- merging
def test_whiteout_deletes_lower_layer_only() -> None:
    fs = merged(
        layer(d("/app"), f("/app/a"), f("/app/b")),
        # this layer deletes a lower /app/a and adds its own /app/c, and its own whiteout of c is ignored
        layer(wh("/app/a"), f("/app/c"), wh("/app/c")),
    )
    assert fs.lookup("/app/a") is None
    assert fs.lookup("/app/b") is not None
    assert fs.lookup("/app/c") is not None
    assert fs.removed_by("/app/a") == 1
    assert fs.removed_by("/app/b") is None


def test_whiteout_of_directory_removes_subtree_and_remembers_layer() -> None:
    fs = merged(layer(d("/opt"), d("/opt/tool"), f("/opt/tool/bin", 0o755)), layer(), layer(wh("/opt/tool")))
    assert fs.lookup("/opt/tool/bin") is None and fs.lookup("/opt/tool") is None
    assert fs.removed_by("/opt/tool/bin") == 2
    assert fs.children("/opt") == []


def test_re_added_path_is_no_longer_removed() -> None:
    fs = merged(layer(f("/x")), layer(wh("/x")), layer(f("/x", 0o755)))
    assert fs.lookup("/x").mode == 0o755 and fs.removed_by("/x") is None


def test_opaque_hides_lower_children_wherever_it_sits() -> None:
    for position in ("first", "last"):
        new = [f("/etc/app/new.conf")]
        entries = [opq("/etc/app"), *new] if position == "first" else [*new, opq("/etc/app")]
        fs = merged(layer(d("/etc"), d("/etc/app"), f("/etc/app/old.conf"), d("/etc/app/sub"), f("/etc/app/sub/x")),
                    layer(*entries))
        assert fs.children("/etc/app") == ["new.conf"], position
        assert fs.lookup("/etc/app/sub/x") is None
        assert fs.removed_by("/etc/app/old.conf") == 1


def test_file_over_directory_replaces_subtree() -> None:
    fs = merged(layer(d("/srv"), d("/srv/data"), f("/srv/data/x")), layer(f("/srv/data", 0o644)))
    node = fs.lookup("/srv/data")
    assert node.type is EntryType.FILE
    assert fs.lookup("/srv/data/x") is None
    assert "/srv/data/x" not in list(fs.paths())


def test_directory_over_file_replaces_it() -> None:
    fs = merged(layer(f("/srv")), layer(d("/srv", 0o700), f("/srv/y")))
    assert fs.lookup("/srv").type is EntryType.DIR and fs.lookup("/srv").mode == 0o700
    assert fs.children("/srv") == ["y"]


def test_directory_over_directory_merges_and_takes_metadata() -> None:
    fs = merged(layer(d("/srv", 0o755), f("/srv/keep")), layer(d("/srv", 0o700, uid=5)))
    node = fs.lookup("/srv")
    assert (node.mode, node.uid, node.layer) == (0o700, 5, 1)
    assert fs.children("/srv") == ["keep"]


def test_symlink_replaced_by_file_is_not_followed() -> None:
    fs = merged(layer(d("/bin"), f("/bin/busybox", 0o755), sym("/bin/sh", "busybox")), layer(f("/bin/sh", 0o700)))
    assert fs.lookup("/bin/sh").type is EntryType.FILE
    assert fs.lookup("/bin/busybox").mode == 0o755


def test_native_snapshotter_resolves_parents_through_lower_symlinks() -> None:
    # Debian's merged /usr: /bin -> usr/bin; a later layer writes /bin/tool, which lands in /usr/bin (one tree)
    fs = merged(layer(d("/usr"), d("/usr/bin"), sym("/bin", "usr/bin"), f("/usr/bin/sh", 0o755)),
                layer(f("/bin/tool", 0o755)), snapshotter=NATIVE)
    assert fs.lookup("/usr/bin/tool") is not None
    assert fs.lookup("/bin").type is EntryType.SYMLINK
    assert fs.resolve("/bin/tool").real == "/usr/bin/tool"
    # absolute symlink targets are relative to the image root, not the host
    fs2 = merged(layer(d("/opt"), sym("/app", "/opt/app-1.0"), d("/opt/app-1.0")), layer(f("/app/run", 0o755)),
                 snapshotter=NATIVE)
    assert fs2.lookup("/opt/app-1.0/run") is not None


def test_overlayfs_resolves_parents_inside_the_layer_so_a_real_dir_hides_the_lower_symlink() -> None:
    lower = layer(d("/usr", 0o755), d("/usr/bin", 0o711, gid=5), sym("/bin", "usr/bin"), f("/usr/bin/sh", 0o755))
    fs = merged(lower, layer(f("/bin/tool", 0o755)))
    assert fs.lookup("/usr/bin/tool") is None and fs.resolve("/bin/tool").real == "/bin/tool"
    made = fs.lookup("/bin")
    assert made.type is EntryType.DIR and (made.mode, made.gid) == (0o711, 5)  # mkparent copies the lower dir's info
    assert fs.resolve("/bin/sh").outcome == "ENOENT" and fs.resolve("/usr/bin/sh").ok
    assert fs.children("/bin") == ["tool"]
    # the layer's own symlinks are followed: /app -> /opt/app-1.0 written in the same layer
    fs2 = merged(layer(d("/opt")), layer(sym("/app", "/opt/app-1.0"), d("/opt/app-1.0"), f("/app/run", 0o755)))
    assert fs2.lookup("/opt/app-1.0/run") is not None and fs2.lookup("/app").type is EntryType.SYMLINK
    # a lower symlink to a lower file: the new real directory hides it as well
    fs3 = merged(layer(d("/opt"), d("/opt/app-1.0"), sym("/app", "/opt/app-1.0")), layer(f("/app/run", 0o755)))
    assert fs3.lookup("/opt/app-1.0/run") is None and fs3.lookup("/app").type is EntryType.DIR


def test_whiteout_parent_resolution_depends_on_the_snapshotter() -> None:
    lower = layer(d("/usr"), d("/usr/bin"), sym("/bin", "usr/bin"), f("/usr/bin/python3", 0o755))
    native = merged(lower, layer(wh("/bin/python3")), snapshotter=NATIVE)
    assert native.lookup("/usr/bin/python3") is None
    # overlayfs: the whiteout lands in the layer's own bin/, which hides the symlink, not /usr/bin/python3
    overlay = merged(lower, layer(wh("/bin/python3")))
    assert overlay.lookup("/usr/bin/python3") is not None and overlay.lookup("/bin").type is EntryType.DIR
    # written through the real path, both delete it
    assert merged(lower, layer(wh("/usr/bin/python3"))).lookup("/usr/bin/python3") is None


def test_overlay_opaque_dir_hides_only_lower_children() -> None:
    fs = merged(layer(d("/etc"), d("/etc/app"), f("/etc/app/old.conf")),
                layer(d("/etc/app"), f("/etc/app/new.conf"), opq("/etc/app"), f("/etc/app/late.conf")))
    assert fs.children("/etc/app") == ["late.conf", "new.conf"] and fs.removed_by("/etc/app/old.conf") == 1


def test_implied_parents_are_created() -> None:
    fs = merged(layer(f("/a/b/c/tool", 0o755)))
    for p in ("/a", "/a/b", "/a/b/c"):
        node = fs.lookup(p)
        assert node.type is EntryType.DIR and node.mode == 0o755 and node.layer == -1
    assert fs.resolve("/a/b/c/tool").ok


def test_native_hardlink_into_lower_layer_takes_the_target_inode() -> None:
    fs = merged(layer(d("/bin"), f("/bin/busybox", 0o4755, uid=0, exec=DYN_AMD64)),
                layer(d("/usr"), d("/usr/bin"), hard("/usr/bin/env", "/bin/busybox")), snapshotter=NATIVE)
    node = fs.lookup("/usr/bin/env")
    assert (node.type, node.mode, node.exec, node.hardlink, node.layer) == (
        EntryType.FILE, 0o4755, DYN_AMD64, "/bin/busybox", 1)


def test_overlayfs_cannot_unpack_a_hardlink_to_a_lower_layer() -> None:
    layers = (layer(d("/bin"), f("/bin/busybox", 0o755, exec=DYN_AMD64)),
              layer(d("/usr"), d("/usr/bin"), hard("/usr/bin/env", "/bin/busybox")))
    with pytest.raises(ImageCorrupt, match=r"layer 2 .* cannot be unpacked by containerd's overlayfs snapshotter: "
                                           r"the hard link /usr/bin/env names /bin/busybox, a file of a lower layer"):
        merged(*layers)
    # a hard link to a file of the same layer is made
    fs = merged(layer(d("/bin")), layer(d("/usr"), f("/usr/busybox", 0o755), hard("/bin/busybox", "/usr/busybox")))
    assert fs.lookup("/bin/busybox").hardlink == "/usr/busybox"


def test_native_hardlink_target_parent_resolves_through_symlinks_and_keeps_kept_file() -> None:
    fs = merged(layer(d("/usr"), d("/usr/etc"), sym("/etc", "usr/etc"), f("/usr/etc/passwd"),
                      files={"/usr/etc/passwd": b"root:x:0:0::/:/bin/sh\n"}),
                layer(hard("/passwd.bak", "/etc/passwd")), snapshotter=NATIVE)
    assert fs.lookup("/passwd.bak").type is EntryType.FILE
    assert fs.file("/passwd.bak") == b"root:x:0:0::/:/bin/sh\n"
    assert fs.file("/etc/passwd") == b"root:x:0:0::/:/bin/sh\n"  # through the /etc symlink


def test_kept_file_follows_the_top_layer() -> None:
    fs = merged(base_layer(), layer(f("/etc/passwd"), files={"/etc/passwd": b"new:x:7:7::/:/bin/sh\n"}))
    assert fs.file("/etc/passwd") == b"new:x:7:7::/:/bin/sh\n"
    fs2 = merged(base_layer(), layer(wh("/etc/passwd")))
    assert fs2.file("/etc/passwd") is None


def test_layer_numbers_are_recorded() -> None:
    fs = merged(layer(d("/bin")), layer(f("/bin/a", 0o755)), layer(f("/bin/b", 0o755)))
    assert fs.lookup("/bin/a").layer == 1 and fs.lookup("/bin/b").layer == 2
    assert len(fs.layer_digests) == 3


# --------------------------------------------------------------------------- resolution
def test_resolve_trace_and_relative_links() -> None:
    fs = merged(base_layer(sym("/usr/bin/sh", "../../bin/sh")))
    res = fs.resolve("/usr/bin/sh")
    assert res.ok and res.real == "/bin/busybox"
    assert [(h.link, h.target) for h in res.hops] == [("/usr/bin/sh", "../../bin/sh"), ("/bin/sh", "busybox")]


def test_dotdot_stops_at_root() -> None:
    fs = merged(base_layer(sym("/escape", "../../../../bin/busybox")))
    assert fs.resolve("/escape").real == "/bin/busybox"
    assert fs.resolve("/../../bin/../bin/busybox").real == "/bin/busybox"


def test_relative_path_against_cwd() -> None:
    fs = merged(base_layer(d("/app"), f("/app/run", 0o755)))
    assert fs.resolve("run", "/app").real == "/app/run"
    assert fs.resolve("./run", "/app").ok
    assert fs.resolve("../bin/busybox", "/app").ok
    assert fs.resolve("run", "/").outcome == ENOENT


def test_forty_symlinks_resolve_forty_one_loop() -> None:
    def chain(n: int) -> MergedFS:
        entries = [d("/l"), f("/l/target", 0o755)]
        for i in range(n):
            nxt = f"/l/s{i + 1}" if i < n - 1 else "/l/target"
            entries.append(sym(f"/l/s{i}", nxt))
        return merged(layer(*entries))

    assert chain(MAX_SYMLINKS).resolve("/l/s0").ok
    res = chain(MAX_SYMLINKS + 1).resolve("/l/s0")
    assert res.outcome == ELOOP


def test_symlink_loop_is_eloop() -> None:
    fs = merged(layer(sym("/a", "b"), sym("/b", "a")))
    assert fs.resolve("/a").outcome == ELOOP


def test_dangling_symlink_and_enotdir() -> None:
    fs = merged(base_layer(sym("/bin/python", "python3.11")))
    res = fs.resolve("/bin/python")
    assert (res.outcome, res.real) == (ENOENT, "/bin/python3.11")
    res = fs.resolve("/bin/busybox/sh")
    assert res.outcome == ENOTDIR and res.blocker.path == "/bin/busybox"
    assert fs.resolve("/bin/busybox/").outcome == ENOTDIR
    assert fs.resolve("").outcome == ENOENT


def test_follow_false_stops_at_link() -> None:
    fs = merged(base_layer())
    res = fs.resolve("/bin/sh", follow=False)
    assert res.ok and res.node.type is EntryType.SYMLINK


def test_search_permission_on_every_directory() -> None:
    fs = merged(layer(d("/root", 0o700), d("/root/bin", 0o755), f("/root/bin/tool", 0o755)))
    user = Credentials(uid=1000, gid=1000, caps=frozenset())
    res = fs.resolve("/root/bin/tool", creds=user)
    assert res.outcome == EACCES and res.blocker.path == "/root"
    with_cap = Credentials(uid=1000, gid=1000)
    res = fs.resolve("/root/bin/tool", creds=with_cap)
    assert res.ok and res.used_capability
    # group class: 0750 root:50 is searchable by a member of 50
    fs2 = merged(layer(d("/g", 0o750, gid=50), f("/g/x", 0o755)))
    assert fs2.resolve("/g/x", creds=Credentials(1000, 1000, frozenset({50}), frozenset())).ok
    assert fs2.resolve("/g/x", creds=Credentials(1000, 1000, frozenset(), frozenset())).outcome == EACCES


def test_permission_exactly_one_class_applies() -> None:
    fs = merged(layer(f("/owner-denied", 0o075, uid=1000), f("/group-denied", 0o705, gid=50),
                      f("/none", 0o644), f("/any-x", 0o100)))
    plain = Credentials(1000, 1000, frozenset({50}), frozenset())
    assert permission(fs.lookup("/owner-denied"), plain) == (False, False)  # owner class, no x, though group/other have it
    assert permission(fs.lookup("/group-denied"), plain) == (False, False)  # group class matched, no x there
    capped = plain.with_caps("DAC_OVERRIDE")
    assert permission(fs.lookup("/owner-denied"), capped) == (True, True)
    assert permission(fs.lookup("/any-x"), capped) == (True, True)
    assert permission(fs.lookup("/none"), capped) == (False, False)  # no x bit anywhere: even root cannot exec


# --------------------------------------------------------------------------- properties
_names = st.sampled_from(["a", "b", "c", "..", "."])
_targets = st.lists(_names, min_size=0, max_size=4).map(lambda p: "/".join(p)) | \
    st.lists(_names, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p))


@st.composite
def _trees(draw: st.DrawFn) -> MergedFS:
    entries = []
    for name in draw(st.lists(st.sampled_from(["/a", "/b", "/a/b", "/a/c", "/b/a", "/c", "/a/b/c"]), max_size=7,
                              unique=True)):
        kind = draw(st.sampled_from(["dir", "file", "link"]))
        if kind == "dir":
            entries.append(d(name))
        elif kind == "file":
            entries.append(f(name, 0o755))
        else:
            entries.append(sym(name, draw(_targets)))
    return merged(layer(*entries))


@settings(max_examples=300, deadline=None)
@given(_trees(), st.lists(_names, min_size=1, max_size=6).map("/".join), st.booleans())
def test_resolve_never_escapes_root_and_always_ends(fs: MergedFS, path: str, absolute: bool) -> None:
    res = fs.resolve(("/" if absolute else "") + path, "/a")
    assert res.outcome in (OK, ENOENT, ENOTDIR, ELOOP)
    assert res.real.startswith("/") and ".." not in res.real.split("/")
    assert len(res.hops) <= MAX_SYMLINKS + 1
    if res.ok:
        assert res.node is not None
        # the node reached is the one stored at the real path (or the missing cwd runc would create)
        assert fs.lookup(res.real) is res.node or res.real == "/a"


@settings(max_examples=100, deadline=None)
@given(_trees())
def test_every_stored_path_is_real(fs: MergedFS) -> None:
    for path in fs.paths():
        if path == "/":
            continue
        parent = path.rsplit("/", 1)[0] or "/"
        assert fs.lookup(parent).type is EntryType.DIR


def test_large_image_merge_is_quick_enough_to_measure() -> None:
    """Not a timing assertion: prints the merge time of a synthetic 60k-entry image for the curious (-s)."""
    entries = [d("/usr"), d("/usr/lib"), sym("/lib", "usr/lib")]
    for i in range(300):
        entries.append(d(f"/usr/lib/pkg{i}"))
        entries += [f(f"/lib/pkg{i}/file{j}", 0o644) for j in range(100)]
    upper = [wh(f"/usr/lib/pkg{i}") for i in range(0, 300, 3)] + [f(f"/usr/lib/pkg1/new{j}") for j in range(30000)]
    layers = [layer(*entries), layer(*upper)]
    start = time.perf_counter()
    fs = MergedFS.from_layers(layers)
    elapsed = time.perf_counter() - start
    print(f"merged {len(entries) + len(upper)} entries into {len(fs)} nodes in {elapsed:.3f}s")
    assert fs.lookup("/usr/lib/pkg1/file5") is not None and fs.lookup("/usr/lib/pkg0/file5") is None
