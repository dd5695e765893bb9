"""containerd's choice among index entries, end to end through the real registry.

Indexes written by hand into OCI layouts (what buildx and crane write, and the
odd entries the OCI spec allows) are pushed with skopeo; canrun's store reads
them and picks the entry a node pulls.  What containerd does, from its source:

* ``core/images/image.go`` ``Manifest`` (and ``LimitManifests``): entries whose
  platform matches or that have none are kept, sorted by preference with the
  platformless ones last, and the first is taken; a platformless entry is then
  matched by the platform of its image config (``ConfigPlatform``).
* ``platforms/database.go``: arm64 variants ``8`` and ``v8.0`` are plain arm64.
* ``core/transfer/image/imagestore.go`` ``ImageFilter``: the transfer service
  (containerd 2.1+'s CRI default, ``internal/cri/server/images/image_pull.go``)
  filters with ``platforms.Ordered(DefaultSpec())``: no fallback to 386 or 32-bit arm.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from canrun.config import CacheSettings, Settings, open_engine
from canrun.platform import Platform
from canrun.registry.reference import Reference
from tests.integration.conftest import canrun
from tests.support import images
from tests.support.registry import RunningRegistry

pytestmark = pytest.mark.registry

AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64")


def _recipes(arm64_busybox: Path) -> list[images.Recipe]:
    bb = images.busybox_root(images.HOST_BUSYBOX)
    run = images.Config(entrypoint=("/bin/busybox",), cmd=("httpd", "-f", "-p", "8080"))
    amd = images.Image("busybox-amd64", (bb,), run)
    arm = images.Image("busybox-arm64", (images.busybox_root(str(arm64_busybox)),),
                       images.Config(entrypoint=run.entrypoint, cmd=run.cmd, architecture="arm64"))
    Ix = images.Index
    return [amd, arm,
            Ix("noplat-amd64", (("busybox-amd64", ""),)),
            Ix("noplat-arm-first", (("busybox-arm64", ""), ("busybox-amd64", ""))),
            Ix("arm64-plat-amd64-noplat", (("busybox-arm64", "linux/arm64"), ("busybox-amd64", ""))),
            Ix("arm64-variant-8", (("busybox-amd64", "linux/amd64"), ("busybox-arm64", "linux/arm64/8"))),
            Ix("arm64-variant-v8.0", (("busybox-arm64", "linux/arm64/v8.0"),)),
            Ix("arm64-variant-v8.2", (("busybox-arm64", "linux/arm64/v8.2"),)),
            Ix("arm-v7-only", (("busybox-arm64", "linux/arm/v7"),)),
            Ix("i386-only", (("busybox-amd64", "linux/386"),))]


@pytest.fixture(scope="module")
def pushed(local_registry: RunningRegistry, arm64_busybox: Path) -> images.Catalogue:
    recipes = _recipes(arm64_busybox)
    names = {r.name: f"conformance/{r.name}:1" for r in recipes if isinstance(r, images.Index)}
    return images.publish(local_registry.host, local_registry.blob_path, recipes=recipes, names=names)


def _select(ref: str, node: Platform, *, exact: bool) -> str | None:
    """The digest of the manifest canrun's store picks for ``node``, or None (platform-missing)."""
    async def go() -> str | None:
        async with open_engine(Settings(cache=CacheSettings(enabled=False))) as engine:
            selection = await engine.store.select(Reference.parse(ref), node, exact=exact)
            return None if selection.descriptor is None else selection.descriptor.digest
    return asyncio.run(go())


def _entry(pushed: images.Catalogue, index: str, position: int) -> str:
    layout = pushed[index].layout
    top = images._top_descriptor(layout)
    doc = json.loads(images._blob_path(layout, str(top["digest"])).read_text())
    return str(doc["manifests"][position]["digest"])


@pytest.mark.parametrize("exact", [False, True], ids=["containerd-2.0", "containerd-2.1"])
def test_entry_without_platform_is_matched_by_its_config(pushed: images.Catalogue, exact: bool) -> None:
    ref = pushed.ref("noplat-amd64")
    assert _select(ref, AMD64, exact=exact) == _entry(pushed, "noplat-amd64", 0)
    assert _select(ref, ARM64, exact=exact) is None


def test_platformed_match_wins_and_platformless_comes_last(pushed: images.Catalogue) -> None:
    ref = pushed.ref("arm64-plat-amd64-noplat")
    assert _select(ref, ARM64, exact=True) == _entry(pushed, "arm64-plat-amd64-noplat", 0)
    assert _select(ref, AMD64, exact=True) == _entry(pushed, "arm64-plat-amd64-noplat", 1)


def test_only_the_first_platformless_entry_is_considered(pushed: images.Catalogue) -> None:
    """Manifest's limit of one: the first platformless entry (arm64 config) is taken on amd64, and fails."""
    ref = pushed.ref("noplat-arm-first")
    assert _select(ref, ARM64, exact=True) == _entry(pushed, "noplat-arm-first", 0)
    assert _select(ref, AMD64, exact=True) is None


@pytest.mark.parametrize("index", ["arm64-variant-8", "arm64-variant-v8.0"])
def test_arm64_variant_8_is_plain_arm64(pushed: images.Catalogue, index: str) -> None:
    position = 1 if index == "arm64-variant-8" else 0
    for exact in (False, True):
        assert _select(pushed.ref(index), ARM64, exact=exact) == _entry(pushed, index, position)


def test_arm64_minor_variants(pushed: images.Catalogue) -> None:
    ref = pushed.ref("arm64-variant-v8.2")
    assert _select(ref, ARM64, exact=False) is None  # a plain (v8.0) node does not take v8.2 code
    for node in ("linux/arm64/v8.2", "linux/arm64/v8.4", "linux/arm64/v9"):
        assert _select(ref, Platform.parse(node), exact=False) == _entry(pushed, "arm64-variant-v8.2", 0), node
    assert _select(ref, Platform.parse("linux/arm64/v9"), exact=True) is None


@pytest.mark.parametrize("index, node", [("arm-v7-only", ARM64), ("i386-only", AMD64)])
def test_fallback_platforms_only_before_containerd_2_1(pushed: images.Catalogue, index: str, node: Platform) -> None:
    assert _select(pushed.ref(index), node, exact=False) == _entry(pushed, index, 0)
    assert _select(pushed.ref(index), node, exact=True) is None


def test_cli_judges_the_platformless_entry(pushed: images.Catalogue, tmp_path: Path) -> None:
    """``canrun check``: an image containerd runs is not platform-missing; on arm64 it is, naming the config's."""
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n"
                        f"  - name: web\n    image: {pushed.ref('noplat-amd64')}\n")
    run = canrun("check", "-f", str(manifest), "--format", "json", "--platform", "linux/amd64,linux/arm64",
                 cache_dir=tmp_path / "cache")
    missing = [f for f in run.findings if f["rule"] == "platform-missing"]
    assert [f["platform"] for f in missing] == ["linux/arm64"], run
    assert "linux/amd64 (from the config of an entry without a platform)" in missing[0]["message"], run
    assert not [f for f in run.findings if f["severity"] == "error" and f["platform"] != "linux/arm64"], run


def _put_manifest(host: str, repo: str, doc: dict[str, object]) -> tuple[str, int]:
    import hashlib

    import httpx
    body = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    r = httpx.put(f"http://{host}/v2/{repo}/manifests/{digest}", content=body,
                  headers={"Content-Type": images.MT_OCI_INDEX}, timeout=30)
    assert r.status_code == 201, r.text
    return digest, len(body)


@pytest.mark.timeout(60)
def test_fan_out_of_repeated_nested_indexes_is_bounded(pushed: images.Catalogue,
                                                       local_registry: RunningRegistry) -> None:
    """2,000 entries naming one nested index of 2,000 entries naming one manifest: three documents, read once.

    Before memoising by digest this fetched the nested index 2,000 times and flattened 4,000,000 entries
    (past 60 s); the timeout here is a hang guard, not a performance target.
    """
    repo = "conformance/noplat-amd64"
    leaf = _entry(pushed, "noplat-amd64", 0)
    leaf_size = images._blob_path(pushed["noplat-amd64"].layout, leaf).stat().st_size
    leaf_desc = {"mediaType": images.MT_OCI_MANIFEST, "digest": leaf, "size": leaf_size,
                 "platform": {"os": "linux", "architecture": "amd64"}}
    inner, inner_size = _put_manifest(local_registry.host, repo, {
        "schemaVersion": 2, "mediaType": images.MT_OCI_INDEX, "manifests": [leaf_desc] * 2000})
    top, _ = _put_manifest(local_registry.host, repo, {
        "schemaVersion": 2, "mediaType": images.MT_OCI_INDEX,
        "manifests": [{"mediaType": images.MT_OCI_INDEX, "digest": inner, "size": inner_size}] * 2000})

    async def go() -> tuple[str | None, int]:
        async with open_engine(Settings(cache=CacheSettings(enabled=False))) as engine:
            selection = await engine.store.select(Reference.parse(f"{local_registry.host}/{repo}@{top}"), AMD64)
            digest = None if selection.descriptor is None else selection.descriptor.digest
            return digest, engine.store.stats["manifests_fetched"]

    digest, fetched = asyncio.run(go())
    assert digest == leaf
    assert fetched <= 3  # the top index (HEAD for the tag aside), the nested index once


@pytest.mark.parametrize("how", ["flag", "config-file"])
def test_containerd_version_setting_chooses_the_matching(pushed: images.Catalogue, tmp_path: Path, how: str) -> None:
    """An arm64 node and an index with only linux/arm/v7: pulled by containerd 2.0, not by 2.1+ (the default)."""
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n"
                        f"  - name: web\n    image: {pushed.ref('arm-v7-only')}\n")
    args = ["check", "-f", str(manifest), "--format", "json", "--platform", "linux/arm64"]

    def missing(*extra: str) -> list[str]:
        run = canrun(*args, *extra, cache_dir=tmp_path / "cache")
        assert run.code in (0, 1), run
        return [f["platform"] for f in run.findings if f["rule"] == "platform-missing"]

    assert missing() == ["linux/arm64"]
    if how == "flag":
        assert missing("--containerd-version", "2.0") == []
        assert missing("--containerd-version", "v2.1.4") == ["linux/arm64"]
    else:
        config = tmp_path / "canrun.yaml"
        config.write_text("containerd_version: 2.0\n")
        assert missing("--config", str(config)) == []
        assert missing("--config", str(config), "--containerd-version", "2.2") == ["linux/arm64"]


def test_bad_containerd_version_is_a_usage_error(tmp_path: Path) -> None:
    run = canrun("check", "-f", str(tmp_path), "--containerd-version", "latest", cache_dir=tmp_path / "cache")
    assert run.code == 2 and "invalid containerd version 'latest'" in run.stderr, run
    config = tmp_path / "canrun.yaml"
    config.write_text("containerd_version: two\n")
    run = canrun("check", "-f", str(tmp_path), "--config", str(config), cache_dir=tmp_path / "cache")
    assert run.code == 2 and "containerd_version" in run.stderr and "invalid containerd version" in run.stderr, run
