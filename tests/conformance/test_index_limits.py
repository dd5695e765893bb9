"""Flattening nested indexes keeps each repeat once and stays within its entry limit."""

from __future__ import annotations

import pytest

from canrun.errors import LimitExceeded
from canrun.image.manifest import ImageIndex, flatten
from canrun.platform import Platform
from canrun.registry.base import Descriptor
from canrun.registry.mediatypes import OCI_INDEX, OCI_MANIFEST


def _digest(n: int) -> str:
    return f"sha256:{n:064x}"


def _index(n: int, entries: list[Descriptor]) -> ImageIndex:
    return ImageIndex(Descriptor(OCI_INDEX, _digest(n), 1), entries)


def test_repeats_are_kept_once_at_their_first_place() -> None:
    amd = Platform("linux", "amd64")
    leaf = Descriptor(OCI_MANIFEST, _digest(1), 10, platform=amd)
    child = _index(2, [leaf] * 2000)
    outer = _index(3, [Descriptor(OCI_INDEX, _digest(2), 10)] * 2000 + [leaf])
    assert flatten(outer, {child.descriptor.digest: child}).manifests == [leaf]


def test_flattened_entries_are_bounded() -> None:
    child = _index(2, [Descriptor(OCI_MANIFEST, _digest(100 + i), 10, platform=Platform("linux", "amd64"))
                       for i in range(50)])
    kept = _index(4, [Descriptor(OCI_INDEX, _digest(2), 10)] * 3)
    assert len(flatten(kept, {child.descriptor.digest: child}, max_entries=50).manifests) == 50
    wide = _index(5, [Descriptor(OCI_MANIFEST, _digest(1000 + i), 10) for i in range(51)])
    with pytest.raises(LimitExceeded, match="more than 50"):
        flatten(wide, {}, max_entries=50)
