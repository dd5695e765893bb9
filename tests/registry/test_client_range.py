"""Ranged blob reads (the seam lazy layer formats use) against a real docker-registry."""

from __future__ import annotations

import pytest
import pytest_asyncio

from canrun.errors import ImageCorrupt
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.registry.reference import Reference
from tests.registry.conftest import Content

pytestmark = pytest.mark.registry


@pytest_asyncio.fixture(loop_scope="function")
async def client() -> RegistryClient:
    c = RegistryClient(RegistrySettings(timeout=10))
    yield c  # type: ignore[misc]
    await c.aclose()


async def test_a_range_is_exactly_those_bytes_of_the_blob(client: RegistryClient, content: Content) -> None:
    ref = Reference.parse(f"{content.registry.host}/multi:v1")
    data = content.amd64["layer_bytes"]
    digest = content.amd64["layer"]["digest"]
    assert await client.read_range(ref, digest, 0, 10, size=len(data)) == data[:10]
    assert await client.read_range(ref, digest, len(data) - 7, 7, size=len(data)) == data[-7:]
    assert await client.read_range(ref, digest, 3, 1) == data[3:4]


async def test_a_size_the_registry_contradicts_is_corrupt(client: RegistryClient, content: Content) -> None:
    ref = Reference.parse(f"{content.registry.host}/multi:v1")
    data = content.amd64["layer_bytes"]
    with pytest.raises(ImageCorrupt, match="descriptor gives its size"):
        await client.read_range(ref, content.amd64["layer"]["digest"], 0, 4, size=len(data) + 1)
    with pytest.raises(ImageCorrupt):
        await client.read_range(ref, content.amd64["layer"]["digest"], len(data) + 10, 4)
