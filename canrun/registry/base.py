"""The seam between the engine and any way of reading a registry.

The engine only needs five things from a registry — resolve a reference to a
digest, read a manifest, read a small blob, stream a large one, and (later,
for lazy layer formats) read a byte range — so that is the whole interface.
The native ``httpx`` client implements it today; a ``crane`` subprocess
backend or a test double can implement it without the engine noticing.
Every method returns content already verified against its digest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from canrun.platform import Platform


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (the subset canrun uses)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None


class RegistryBackend(Protocol):
    async def resolve(self, ref: "Reference") -> Descriptor:  # noqa: F821 - see reference.py
        """Tag or digest -> the descriptor of the top manifest (index or image manifest)."""

    async def manifest(self, ref: "Reference", digest: str | None = None) -> tuple[Descriptor, bytes]:  # noqa: F821
        """The manifest body for ``digest`` (or the reference's own tag/digest), verified."""

    async def blob(self, ref: "Reference", digest: str, *, max_size: int) -> bytes:  # noqa: F821
        """A small blob (image config) read whole and verified; refuses more than ``max_size`` bytes."""

    def stream_blob(self, ref: "Reference", digest: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:  # noqa: F821
        """A large blob (layer) as chunks; the iterator raises ImageCorrupt at its end on a digest mismatch."""

    async def aclose(self) -> None:
        ...
