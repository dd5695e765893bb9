"""The on-disk cache, seen from the CLI: a second check answers from it even when the registry is gone.

Tags are cached for 5 minutes and everything below a tag by digest, so a check
repeated right after a first one must not need the registry at all.  This uses
its own registry, because it stops it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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

    # the proof that the cache answered: without it, the stopped registry is unreachable
    uncached = canrun(*args, "--no-cache", "--timeout", "2", cache_dir=cache, timeout=60)
    assert {f["rule"] for f in uncached.findings} == {"image-unresolvable"}, uncached
