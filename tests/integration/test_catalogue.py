"""The test images are what the other tests say they are: checked from the registry with plain HTTP.

Every verdict test leans on these facts (a whiteout really is in layer 2, the
arm64 entry really carries x86-64 code, the corrupted blob really mismatches),
so they are checked here without canrun's code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import httpx
import pytest

from tests.support.images import Catalogue
from tests.support.registry import RunningRegistry

pytestmark = pytest.mark.registry

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])


def _get(registry: RunningRegistry, ref: str, what: str) -> httpx.Response:
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    resp = httpx.get(f"{registry.url}/v2/{repo}/{what}", headers={"Accept": ACCEPT}, timeout=10)
    resp.raise_for_status()
    return resp


def _manifest(registry: RunningRegistry, ref: str, reference: str | None = None) -> dict:
    return _get(registry, ref, f"manifests/{reference or ref.rsplit(':', 1)[1]}").json()


def _layer_names(registry: RunningRegistry, ref: str, digest: str) -> list[str]:
    data = _get(registry, ref, f"blobs/{digest}").content
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        return tar.getnames()


def _entry(index: dict, arch: str) -> dict:
    return next(m for m in index["manifests"] if m["platform"]["architecture"] == arch)


def test_multiarch_index_carries_real_code_for_each_cpu(local_registry: RunningRegistry,
                                                         catalogue: Catalogue) -> None:
    ref = catalogue.ref("busybox")
    index = _manifest(local_registry, ref)
    assert {m["platform"]["architecture"] for m in index["manifests"]} == {"amd64", "arm64"}
    for arch, machine in (("amd64", 62), ("arm64", 183)):
        manifest = _manifest(local_registry, ref, _entry(index, arch)["digest"])
        data = gzip.decompress(_get(local_registry, ref, f"blobs/{manifest['layers'][0]['digest']}").content)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            elf = tar.extractfile("bin/busybox").read(20)  # type: ignore[union-attr]
        assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == machine


def test_mislabeled_arm64_entry_is_x86_64(local_registry: RunningRegistry, catalogue: Catalogue) -> None:
    ref = catalogue.ref("mislabeled")
    manifest = _manifest(local_registry, ref, _entry(_manifest(local_registry, ref), "arm64")["digest"])
    config = _get(local_registry, ref, f"blobs/{manifest['config']['digest']}").json()
    assert config["architecture"] == "arm64"
    data = gzip.decompress(_get(local_registry, ref, f"blobs/{manifest['layers'][0]['digest']}").content)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        elf = tar.extractfile("bin/busybox").read(20)  # type: ignore[union-attr]
    assert int.from_bytes(elf[18:20], "little") == 62  # EM_X86_64


def test_layer_tricks_are_in_the_layers(local_registry: RunningRegistry, catalogue: Catalogue) -> None:
    whiteout = _manifest(local_registry, catalogue.ref("whiteout"))
    assert "app/.wh.server" in _layer_names(local_registry, catalogue.ref("whiteout"), whiteout["layers"][1]["digest"])
    opaque = _manifest(local_registry, catalogue.ref("opaque"))
    assert "opt/tool/.wh..wh..opq" in _layer_names(local_registry, catalogue.ref("opaque"),
                                                   opaque["layers"][1]["digest"])
    hard = _manifest(local_registry, catalogue.ref("hardlink"))
    data = gzip.decompress(_get(local_registry, catalogue.ref("hardlink"), f"blobs/{hard['layers'][1]['digest']}").content)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        link = tar.getmember("usr/local/bin/app")
    assert link.islnk() and link.linkname == "bin/busybox"


def test_zstd_attestation_and_corruption(local_registry: RunningRegistry, catalogue: Catalogue) -> None:
    zstd = _manifest(local_registry, catalogue.ref("zstd"))
    assert {layer["mediaType"] for layer in zstd["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    attested = _manifest(local_registry, catalogue.ref("attested"))
    assert {"unknown"} == {m["platform"]["os"] for m in attested["manifests"]
                           if m.get("annotations", {}).get("vnd.docker.reference.type") == "attestation-manifest"}
    digest = catalogue["corrupt"].layers[-1]
    body = _get(local_registry, catalogue.ref("corrupt"), f"blobs/{digest}").content
    assert "sha256:" + hashlib.sha256(body).hexdigest() != digest


def test_users_and_configs(local_registry: RunningRegistry, catalogue: Catalogue) -> None:
    def config(name: str) -> dict:
        m = _manifest(local_registry, catalogue.ref(name))
        return json.loads(_get(local_registry, catalogue.ref(name), f"blobs/{m['config']['digest']}").content)

    assert config("named-user")["config"]["User"] == "app"
    assert config("missing-user")["config"]["User"] == "svc"
    nocmd = config("no-command")["config"]
    assert not nocmd.get("Entrypoint") and not nocmd.get("Cmd")
    assert config("usrmerge")["config"]["Env"] == ["PATH=/usr/local/bin:/bin"]
