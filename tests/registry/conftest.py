"""Registries and images for the registry tests: a real docker-registry, filled through its own API.

Content is pushed the way every client pushes (POST an upload, PUT the blob
with its digest, PUT the manifest), plus one image built by ``umoci`` and
copied with ``skopeo``, so the registry computes and serves everything itself.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import ssl
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.registry import RunningRegistry, start_registry

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def _verify(verify: bool | str) -> bool | ssl.SSLContext:
    return ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify


def push_blob(base_url: str, repo: str, data: bytes, *, verify: bool | str = True,
              auth: tuple[str, str] | None = None) -> dict[str, object]:
    digest = sha256(data)
    with httpx.Client(verify=_verify(verify), auth=auth) as c:
        start = c.post(f"{base_url}/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202, start.text
        location = httpx.URL(base_url).join(start.headers["location"])
        done = c.put(location.copy_merge_params({"digest": digest}), content=data,
                     headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
    return {"digest": digest, "size": len(data)}


def push_manifest(base_url: str, repo: str, reference: str, doc: dict[str, object], *,
                  verify: bool | str = True, auth: tuple[str, str] | None = None) -> dict[str, object]:
    body = json.dumps(doc).encode()
    media_type = str(doc["mediaType"])
    with httpx.Client(verify=_verify(verify), auth=auth) as c:
        r = c.put(f"{base_url}/v2/{repo}/manifests/{reference}", content=body, headers={"Content-Type": media_type})
        assert r.status_code == 201, r.text
    return {"mediaType": media_type, "digest": sha256(body), "size": len(body)}


def push_image(base_url: str, repo: str, tag: str | None, arch: str, files: dict[str, bytes], **kw: object
               ) -> dict[str, object]:
    """A one-layer OCI image for linux/``arch``; returns its manifest descriptor (with the layer's)."""
    layer = tar_gz(files)
    diff_id = sha256(gzip.decompress(layer))
    config = json.dumps({"architecture": arch, "os": "linux", "config": {"Entrypoint": ["/bin/app"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    cfg = push_blob(base_url, repo, config, **kw)  # type: ignore[arg-type]
    lay = push_blob(base_url, repo, layer, **kw)  # type: ignore[arg-type]
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, **cfg},
           "layers": [{"mediaType": OCI_LAYER_GZIP, **lay}]}
    desc = push_manifest(base_url, repo, tag or sha256(json.dumps(doc).encode()), doc, **kw)  # type: ignore[arg-type]
    return {**desc, "config": cfg, "layer": lay, "layer_bytes": layer, "config_bytes": config}


@dataclass
class Content:
    registry: RunningRegistry
    #: "multi:v1": index of amd64 + arm64 + an attestation manifest
    index_digest: str = ""
    amd64: dict[str, object] = field(default_factory=dict)
    arm64: dict[str, object] = field(default_factory=dict)
    attestation_digest: str = ""
    #: "single:v1": one manifest, built by umoci and copied by skopeo
    single_digest: str = ""
    single_layers: list[str] = field(default_factory=list)
    #: "corrupt:v1": a one-layer image whose layer blob is overwritten on disk
    corrupt: dict[str, object] = field(default_factory=dict)


def build_index(base_url: str, repo: str, tag: str, content: Content) -> None:
    content.amd64 = push_image(base_url, repo, None, "amd64", {"bin/app": b"\x7fELF amd64 stand-in"})
    content.arm64 = push_image(base_url, repo, None, "arm64", {"bin/app": b"\x7fELF arm64 stand-in"})
    statement = push_blob(base_url, repo, b'{"_type": "https://in-toto.io/Statement/v0.1"}')
    empty_cfg = push_blob(base_url, repo, b"{}")
    att_doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": OCI_CONFIG, **empty_cfg},
               "layers": [{"mediaType": "application/vnd.in-toto+json", **statement}]}
    att_digest = sha256(json.dumps(att_doc).encode())
    attestation = push_manifest(base_url, repo, att_digest, att_doc)
    content.attestation_digest = str(attestation["digest"])

    def entry(desc: dict[str, object], arch: str) -> dict[str, object]:
        return {"mediaType": OCI_MANIFEST, "digest": desc["digest"], "size": desc["size"],
                "platform": {"os": "linux", "architecture": arch}}

    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        entry(content.amd64, "amd64"), entry(content.arm64, "arm64"),
        {**{k: attestation[k] for k in ("mediaType", "digest", "size")},
         "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                         "vnd.docker.reference.digest": content.amd64["digest"]}},
    ]}
    content.index_digest = str(push_manifest(base_url, repo, tag, index)["digest"])


def build_umoci_image(work: Path) -> Path:
    """An OCI layout holding one image (tag "t") made by umoci from a real busybox."""
    layout, bundle = work / "oci", work / "bundle"

    def umoci(*args: str) -> None:
        subprocess.run(["umoci", *args], check=True, capture_output=True)

    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:t")
    umoci("unpack", "--rootless", "--image", f"{layout}:t", str(bundle))
    (bundle / "rootfs" / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", bundle / "rootfs" / "bin" / "busybox")
    umoci("repack", "--image", f"{layout}:t", str(bundle))
    return layout


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def content(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> Content:
    c = Content(registry)
    build_index(registry.url, "multi", "v1", c)
    c.corrupt = push_image(registry.url, "corrupt", "v1", "amd64", {"bin/app": b"to be damaged"})
    layer_path = registry.blob_path(str(c.corrupt["layer"]["digest"]))  # type: ignore[index]
    data = bytearray(layer_path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes: only the digest can tell
    layer_path.write_bytes(bytes(data))

    layout = build_umoci_image(tmp_path_factory.mktemp("umoci"))
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:t",
                    f"docker://{registry.host}/single:v1"], check=True, capture_output=True)
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text())
    c.single_digest = manifest_digest
    c.single_layers = [layer["digest"] for layer in manifest["layers"]]
    return c


@pytest.fixture(autouse=True)
def _no_user_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own ~/.docker/config.json must not leak credentials into the tests."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
