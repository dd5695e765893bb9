"""The hostile image catalogue: what each image is, and what canrun must say about it.

Every case names the findings a user must see (rule and a message fragment)
and whether the run then fails (an ``error`` finding: exit status 1) or passes
with a warning.  Sizes are chosen so the whole catalogue pushes in a few
seconds: bombs are a few MB compressed, the million-entry layer repeats one
compressed member.

A true self-referencing index cannot exist (a manifest would have to contain
its own sha256); the closest a registry can hold — an index nested in an
index, an index entry that claims to be an image but is an index — are here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.robustness.hostile import (AMD64, LAYER_GZIP, LAYER_TAR, LAYER_ZSTD, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
                                      SCRIPT, Pusher, config, descriptor, digest_of, gz, gzip_bomb, hardlink, header,
                                      index, manifest, many_entries, member, pax_record, symlink, tar, zst, zstd_bomb)

GZIP_BOMB_BYTES = 2 << 30  # 2 GiB of zeros as one executable: ~2 MB of gzip
ZSTD_BOMB_BYTES = 4 << 30  # 4 GiB of zeros: ~70 KB of zstd; the ratio guard trips after 1 GiB
MANY_ENTRIES = 1_000_001  # one more than Limits.max_entries


@dataclass(frozen=True)
class Expect:
    rule: str
    message: str  # a fragment of the finding's message (case-insensitive)
    severity: str = "error"


@dataclass
class Pushed:
    name: str
    ref: str
    expect: Expect
    heavy: bool = False  # costs seconds of CPU: not repeated in per-case runs
    notes: dict[str, str] = field(default_factory=dict)


UNRESOLVABLE = "warning"  # image-unresolvable is a warning unless --strict

NAMES = ["traversal", "absolute", "gnu-longname-100mb", "pax-1gb", "gzip-bomb", "zstd-bomb", "million-entries",
         "symlink-loop", "symlink-chain-41", "symlink-chain-40", "hardlink-missing", "hardlink-cycle",
         "gzip-type-plain-tar", "gzip-type-zstd", "gzip-type-garbage", "tar-type-gzip", "truncated",
         "digest-mismatch", "config-not-json", "config-array", "config-50mb", "many-layers", "huge-config-size",
         "short-layer-size", "nested-index", "entry-is-index", "pax-uid-65-bits", "sparse-realsize-65-bits",
         "base256-size-65-bits"]


def push_all(p: Pusher, blob_path: Callable[[str], Path]) -> dict[str, Pushed]:
    out: dict[str, Pushed] = {}

    def add(name: str, ref: str, expect: Expect, heavy: bool = False) -> None:
        out[name] = Pushed(name, ref, expect, heavy)

    def simple(name: str, layers: list[tuple[str, bytes]], expect: Expect, *, cfg: bytes | None = None,
               heavy: bool = False) -> str:
        ref = p.image(f"hostile/{name}", "1", layers, cfg)
        add(name, ref, expect, heavy)
        return ref

    no_sh = Expect("interpreter-not-found", "/bin/sh")

    # -- names that climb out of the root: containerd clamps them to the root, so does canrun
    simple("traversal", [(LAYER_GZIP, gz(tar(member("../../app", SCRIPT),
                                              member("../../../etc/passwd", b"root:x:0:0::/:/bin/sh\n", mode=0o644))))],
           no_sh)
    simple("absolute", [(LAYER_GZIP, gz(tar(member("/usr/../../app", SCRIPT))))], no_sh)

    # -- metadata records announcing absurd sizes (the stream then just ends)
    simple("gnu-longname-100mb", [(LAYER_GZIP, gz(header("././@LongLink", type=b"L", size=100 << 20)
                                                   + b"a" * 4096))],
           Expect("image-unresolvable", "GNU long name of 104857600 bytes", UNRESOLVABLE))
    simple("pax-1gb", [(LAYER_GZIP, gz(header("PaxHeaders/app", type=b"x", size=1 << 30)
                                        + pax_record("path", b"app") + bytes(4096)))],
           Expect("image-unresolvable", "PAX header of 1073741824 bytes", UNRESOLVABLE))

    # -- decompression bombs
    simple("gzip-bomb", [(LAYER_GZIP, gzip_bomb(GZIP_BOMB_BYTES))],
           Expect("exec-format", "/app"), heavy=True)
    simple("zstd-bomb", [(LAYER_ZSTD, zstd_bomb(ZSTD_BOMB_BYTES))],
           Expect("image-unresolvable", "decompression bomb", UNRESOLVABLE), heavy=True)
    simple("million-entries", [(LAYER_GZIP, many_entries(MANY_ENTRIES))],
           Expect("image-unresolvable", "more than 1000000 tar members", UNRESOLVABLE), heavy=True)

    # -- links
    simple("symlink-loop", [(LAYER_GZIP, gz(tar(symlink("app", "/app"))))],
           Expect("command-not-found", "symbolic links"))
    chain = [symlink("app", "/l1")] + [symlink(f"l{i}", f"/l{i + 1}") for i in range(1, 41)]
    simple("symlink-chain-41", [(LAYER_GZIP, gz(tar(*chain, member("l41", SCRIPT))))],
           Expect("command-not-found", "symbolic links"))
    chain40 = [symlink("app", "/l1")] + [symlink(f"l{i}", f"/l{i + 1}") for i in range(1, 40)]
    simple("symlink-chain-40", [(LAYER_GZIP, gz(tar(*chain40, member("l40", SCRIPT))))], no_sh)
    simple("hardlink-missing", [(LAYER_GZIP, gz(tar(hardlink("app", "nonexistent"))))],
           Expect("command-not-found", "/app"))
    simple("hardlink-cycle", [(LAYER_GZIP, gz(tar(hardlink("app", "b"), hardlink("b", "app"))))],
           Expect("command-not-found", "/app"))

    # -- numbers beyond 64 bits: Go's archive/tar refuses the header (and the cache's records could not hold them)
    def pax_app(*records: bytes) -> bytes:
        body = b"".join(records)
        return header("PaxHeaders/app", type=b"x", size=len(body)) + body + bytes(-len(body) % 512)

    beyond = Expect("image-corrupt", "does not fit in 64 bits")
    simple("pax-uid-65-bits", [(LAYER_GZIP, gz(tar(pax_app(pax_record("uid", str(1 << 64).encode())),
                                                   member("app", SCRIPT))))], beyond)
    simple("sparse-realsize-65-bits", [(LAYER_GZIP, gz(tar(pax_app(pax_record("GNU.sparse.name", b"app"),
                                                                   pax_record("GNU.sparse.realsize",
                                                                              str(1 << 64).encode())),
                                                           member("app", SCRIPT))))], beyond)
    simple("base256-size-65-bits", [(LAYER_GZIP, gz(tar(header("app", size=1 << 70))))], beyond)

    # -- the media type lies about the compression: containerd sniffs the bytes, so does canrun
    plain = tar(member("app", SCRIPT))
    simple("gzip-type-plain-tar", [(LAYER_GZIP, plain)], no_sh)
    simple("gzip-type-zstd", [(LAYER_GZIP, zst(plain))], no_sh)
    simple("gzip-type-garbage", [(LAYER_GZIP, os.urandom(5000))], Expect("image-corrupt", "tar"))
    simple("tar-type-gzip", [(LAYER_TAR, gz(plain))], no_sh)

    # -- broken blobs
    big = gz(tar(member("app", os.urandom(200_000))))
    simple("truncated", [(LAYER_GZIP, big[: len(big) // 2])], Expect("image-corrupt", "truncated"))
    ref = simple("digest-mismatch", [(LAYER_GZIP, big)], Expect("image-corrupt", "does not match its digest"))
    damage(blob_path(digest_of(big)))
    del ref

    # -- configs
    simple("config-not-json", [(LAYER_GZIP, gz(plain))], Expect("image-corrupt", "not valid JSON"), cfg=b"{not json")
    simple("config-array", [(LAYER_GZIP, gz(plain))], Expect("image-corrupt", "not a JSON object"), cfg=b"[1, 2]")
    simple("config-50mb", [(LAYER_GZIP, gz(plain))], Expect("image-unresolvable", "limit", UNRESOLVABLE),
           cfg=config(["/app"], padding="x" * (50 << 20)))

    # -- manifests
    layer = gz(plain)
    cfg = config(["/app"])
    p.blob("hostile/many-layers", layer)
    p.blob("hostile/many-layers", cfg)
    body = manifest(descriptor(OCI_CONFIG, cfg), [descriptor(LAYER_GZIP, layer)] * 10_000)
    p.manifest("hostile/many-layers", "1", body)
    add("many-layers", f"{p.host}/hostile/many-layers:1", Expect("image-unresolvable", "10000 layers", UNRESOLVABLE))

    p.blob("hostile/huge-config-size", layer)
    p.blob("hostile/huge-config-size", cfg)
    body = manifest({**descriptor(OCI_CONFIG, cfg), "size": 10**15}, [descriptor(LAYER_GZIP, layer)])
    p.manifest("hostile/huge-config-size", "1", body)
    add("huge-config-size", f"{p.host}/hostile/huge-config-size:1", Expect("image-corrupt", "size"))

    p.blob("hostile/short-layer-size", layer)
    p.blob("hostile/short-layer-size", cfg)
    body = manifest(descriptor(OCI_CONFIG, cfg), [{**descriptor(LAYER_GZIP, layer), "size": len(layer) + 100}])
    p.manifest("hostile/short-layer-size", "1", body)
    add("short-layer-size", f"{p.host}/hostile/short-layer-size:1", Expect("image-corrupt", "size"))

    # an index whose amd64 entry is itself an index (containerd walks nested indexes)
    repo = "hostile/nested-index"
    p.blob(repo, layer)
    p.blob(repo, cfg)
    inner_manifest = manifest(descriptor(OCI_CONFIG, cfg), [descriptor(LAYER_GZIP, layer)])
    p.manifest(repo, "inner-manifest", inner_manifest)
    inner = index([descriptor(OCI_MANIFEST, inner_manifest, platform=AMD64)])
    p.manifest(repo, "inner", inner, OCI_INDEX)
    outer = index([descriptor(OCI_INDEX, inner, platform=AMD64)])
    p.manifest(repo, "1", outer, OCI_INDEX)
    add("nested-index", f"{p.host}/{repo}:1", no_sh)

    # an index entry that says "image manifest" but names an index
    repo = "hostile/entry-is-index"
    p.blob(repo, layer)
    p.blob(repo, cfg)
    p.manifest(repo, "inner-manifest", inner_manifest)
    p.manifest(repo, "inner", inner, OCI_INDEX)
    liar = index([descriptor(OCI_MANIFEST, inner, platform=AMD64)])
    p.manifest(repo, "1", liar, OCI_INDEX)
    add("entry-is-index", f"{p.host}/{repo}:1", Expect("image-unresolvable", "not an image manifest", UNRESOLVABLE))
    assert sorted(out) == sorted(NAMES)
    return out


def damage(blob: Path) -> None:
    """Flip bytes in the middle of a stored blob, keeping its size: only a digest check can notice."""
    data = bytearray(blob.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + 64):
        data[i] ^= 0xFF
    blob.write_bytes(bytes(data))
