"""Hostile layers, configs and manifests, written byte by byte, and a pusher for a real registry.

``tarfile`` refuses to write most of what an attacker would send (a GNU long
name announcing 100 MB and then ending, a PAX record claiming a gigabyte, a
member whose name climbs out of the root), so the tar blocks are built here by
hand: a ustar header is 512 bytes with an octal checksum, nothing more.

The pusher speaks the distribution API with plain httpx PUTs (monolithic blob
uploads, manifest PUTs), because docker-registry stores whatever layer blob it
is given as long as the digest matches, which is exactly what an attacker who
controls a repository can do.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import zstandard

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

BLOCK = 512
END = bytes(2 * BLOCK)


# --------------------------------------------------------------------------- tar by hand

def header(name: str | bytes, *, type: bytes = b"0", size: int = 0, mode: int = 0o755, link: str = "",
           uid: int = 0, gid: int = 0) -> bytes:
    """One ustar header block; ``size`` is written as stated (it need not match any data)."""
    raw_name = name.encode() if isinstance(name, str) else name
    assert len(raw_name) <= 100, "use a GNU/PAX record for longer names"
    size_field = (b"%011o\0" % size) if size < 8**11 else (b"\x80" + size.to_bytes(11, "big"))
    block = bytearray(BLOCK)
    block[0:len(raw_name)] = raw_name
    block[100:108] = b"%07o\0" % mode
    block[108:116] = b"%07o\0" % uid
    block[116:124] = b"%07o\0" % gid
    block[124:136] = size_field
    block[136:148] = b"%011o\0" % 0
    block[148:156] = b" " * 8
    block[156:157] = type
    block[157:157 + len(link)] = link.encode()
    block[257:265] = b"ustar\x0000"
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def member(name: str, data: bytes = b"", *, mode: int = 0o755, type: bytes = b"0", link: str = "") -> bytes:
    """A complete member: header plus data padded to a block."""
    pad = (-len(data)) % BLOCK
    return header(name, type=type, size=len(data), mode=mode, link=link) + data + bytes(pad)


def symlink(name: str, target: str) -> bytes:
    return header(name, type=b"2", link=target, mode=0o777)


def hardlink(name: str, target: str) -> bytes:
    return header(name, type=b"1", link=target, mode=0o755)


def directory(name: str) -> bytes:
    return header(name.rstrip("/") + "/", type=b"5", mode=0o755)


def tar(*members: bytes, end: bool = True) -> bytes:
    return b"".join(members) + (END if end else b"")


SCRIPT = b"#!/bin/sh\necho hello\n"


def pax_record(key: str, value: bytes) -> bytes:
    body = f" {key}=".encode() + value + b"\n"
    length = len(body)
    while len(str(length + len(str(length)))) != len(str(length)):
        length += 1
    length += len(str(length))
    return str(length).encode() + body


# --------------------------------------------------------------------------- compression

def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def gzip_bomb(file_bytes: int, *, name: str = "app") -> bytes:
    """A gzip layer with one executable ``name`` of ``file_bytes`` zero bytes: ~1/1000 of that compressed.

    Built as repeated gzip members (multi-member gzip is a valid layer, as eStargz writes it), so making a
    multi-gigabyte bomb costs compressing 16 MiB once.
    """
    piece = 16 << 20
    assert file_bytes % piece == 0
    zeros_member = gzip.compress(bytes(piece), compresslevel=9, mtime=0)
    return (gz(header(name, size=file_bytes)) + zeros_member * (file_bytes // piece) + gz(END))


def zstd_bomb(total_bytes: int) -> bytes:
    """A zstd layer that expands to ``total_bytes`` of zeros (a few hundred KB compressed per GiB)."""
    piece = 64 << 20
    frame = zstandard.ZstdCompressor(level=19).compress(bytes(piece))
    return zst(header("app", size=total_bytes)) + frame * (total_bytes // piece)


def many_entries(count: int) -> bytes:
    """A gzip layer of ``count`` empty regular files (the same header over and over), then the end."""
    block = header("f", size=0, mode=0o644)
    per = 8192
    chunk = gzip.compress(block * per, compresslevel=6, mtime=0)
    full, rest = divmod(count, per)
    return chunk * full + gz(block * rest + END)


# --------------------------------------------------------------------------- configs and manifests

def config(entrypoint: list[str] | None = None, cmd: list[str] | None = None, **extra: Any) -> bytes:
    cfg: dict[str, Any] = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    if entrypoint is not None:
        cfg["Entrypoint"] = entrypoint
    if cmd is not None:
        cfg["Cmd"] = cmd
    doc = {"architecture": "amd64", "os": "linux", "config": cfg,
           "rootfs": {"type": "layers", "diff_ids": []}, **extra}
    return json.dumps(doc).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def manifest(config_desc: dict[str, Any], layers: Iterable[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc,
                       "layers": list(layers)}).encode()


def index(entries: Iterable[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)}).encode()


AMD64 = {"os": "linux", "architecture": "amd64"}


# --------------------------------------------------------------------------- pushing

@dataclass
class Pusher:
    """Uploads blobs and manifests to a docker-registry over plain HTTP."""

    host: str
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=120))

    def blob(self, repo: str, data: bytes | Iterator[bytes], digest: str | None = None) -> str:
        if digest is None:
            assert isinstance(data, bytes)
            digest = digest_of(data)
        if self.client.head(f"http://{self.host}/v2/{repo}/blobs/{digest}").status_code == 200:
            return digest
        start = self.client.post(f"http://{self.host}/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202, start.text
        location = httpx.URL(f"http://{self.host}").join(start.headers["location"])
        location = location.copy_merge_params({"digest": digest})
        done = self.client.put(location, content=data,
                               headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, f"{repo} {digest}: {done.status_code} {done.text[:300]}"
        return digest

    def manifest(self, repo: str, tag: str, body: bytes, media_type: str = OCI_MANIFEST) -> str:
        resp = self.client.put(f"http://{self.host}/v2/{repo}/manifests/{tag}", content=body,
                               headers={"Content-Type": media_type})
        assert resp.status_code == 201, f"{repo}:{tag}: {resp.status_code} {resp.text[:300]}"
        return digest_of(body)

    def image(self, repo: str, tag: str, layers: list[tuple[str, bytes]], cfg: bytes | None = None,
              *, config_media_type: str = OCI_CONFIG, config_desc: dict[str, Any] | None = None,
              layer_descs: list[dict[str, Any]] | None = None) -> str:
        """Push layer blobs, a config and an OCI manifest; returns ``host/repo:tag``."""
        cfg = config(["/app"]) if cfg is None else cfg
        self.blob(repo, cfg)
        descs = []
        for media_type, data in layers:
            self.blob(repo, data)
            descs.append(descriptor(media_type, data))
        body = manifest(config_desc or descriptor(config_media_type, cfg), layer_descs or descs)
        self.manifest(repo, tag, body)
        return f"{self.host}/{repo}:{tag}"

    def close(self) -> None:
        self.client.close()
