"""The on-disk cache, seen from the CLI: a second check answers from it even when the registry is gone.

Tags are cached for 5 minutes and everything below a tag by digest, so a check
repeated right after a first one must not need the registry at all — nor the
layer indexes: the merged view of each platform manifest answers alone.  This uses
its own registry, because it stops it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from canrun.image.cache import decode_view, encode_view
from tests.integration.conftest import BOTH, canrun, problems
from tests.integration.workloads import BAD, CLEAN, render
from tests.support import images
from tests.support.registry import start_registry

pytestmark = pytest.mark.registry

NEEDED = {"busybox-amd64", "busybox-arm64", "busybox", "whiteout"}


def test_second_check_is_served_from_the_cache_with_the_registry_stopped(tmp_path: Path,
                                                                         arm64_busybox: Path) -> None:
    registry = start_registry(tmp_path / "registry")
    try:
        recipes = [r for r in images.catalogue_recipes(str(arm64_busybox)) if r.name in NEEDED]
        catalogue = images.publish(registry.host, registry.blob_path, recipes=recipes)
        manifest = tmp_path / "deploy.yaml"
        manifest.write_text(render([c for c in CLEAN if c.name == "storefront"]
                                   + [c for c in BAD if c.name in ("server", "cart")], catalogue))
        args = ("check", "-f", str(manifest), "--format", "json", "--platform", BOTH)
        cache = tmp_path / "cache"
        first = canrun(*args, cache_dir=cache)
        assert first.code == 1, first
    finally:
        registry.stop()

    expected = sorted((f["resource"]["name"], f["rule"], f["platform"]) for f in problems(first.findings))
    assert ("server", "command-not-found", "linux/amd64") in expected, first
    assert not [f for f in first.findings if f["rule"] == "image-unresolvable"], first

    second = canrun(*args, cache_dir=cache, timeout=60)
    assert second.code == 1, second
    assert sorted((f["resource"]["name"], f["rule"], f["platform"]) for f in problems(second.findings)) == expected
    assert [f["digest"] for f in second.findings] == [f["digest"] for f in first.findings]

    # the merged views alone answer: no layer index is left and the registry is stopped
    views = {"sha256:" + p.name.split(".")[0]: p for p in (cache / "views" / "sha256").glob("*.overlayfs.fsv")}
    judged = {f["digest"] for f in first.findings if f.get("digest")}
    assert judged and judged <= set(views), (views, first.findings)
    shutil.rmtree(cache / "layers")
    third = canrun(*args, cache_dir=cache, timeout=60)
    assert third.code == 1, third
    assert sorted((f["resource"]["name"], f["rule"], f["platform"]) for f in problems(third.findings)) == expected
    assert [f["digest"] for f in third.findings] == [f["digest"] for f in first.findings]
    assert not (cache / "layers").exists()

    # a view that does not list its manifest's layers is not trusted (and with no layers left, nothing answers)
    digest = sorted(judged)[0]
    tampered = views[digest]
    fs = decode_view(tampered.read_bytes(), digest)
    fs.layer_digests = fs.layer_digests + ["sha256:" + "0" * 64]
    tampered.write_bytes(encode_view(fs, digest))
    fourth = canrun(*args, "--timeout", "2", cache_dir=cache, timeout=60)
    assert not tampered.exists(), fourth
    assert [f for f in fourth.findings if f["rule"] == "image-unresolvable"], fourth
    assert digest not in {f.get("digest") for f in fourth.findings}, fourth
