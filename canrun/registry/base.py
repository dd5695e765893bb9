"""The seam between the engine and any way of reading a registry.

The engine only needs five things from a registry — resolve a reference to a
digest, read a manifest, read a small blob, stream a large one, and (later,
for lazy layer formats) read a byte range — so that is the whole interface.
The native ``httpx`` client implements it today; a ``crane`` subprocess
backend or a test double can implement it without the engine noticing.
Every method returns content already verified against its digest, except
``read_range``: a piece of a blob cannot be checked against the blob's digest,
so its caller verifies it against digests it trusts (a table of contents whose
digest the manifest names).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from canrun.platform import Platform

if TYPE_CHECKING:
    from canrun.registry.reference import Reference


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
    async def resolve(self, ref: Reference) -> Descriptor:
        """Tag or digest -> the descriptor of the top manifest (index or image manifest).

        For a digest reference this may cost no request at all: the descriptor
        then has ``media_type == ""`` and ``size == -1`` (the manifest body says the rest).
        """

    async def manifest(self, ref: Reference, digest: str | None = None) -> tuple[Descriptor, bytes]:
        """The manifest body for ``digest`` (or the reference's own tag/digest), verified."""

    async def blob(self, ref: Reference, digest: str, *, max_size: int) -> bytes:
        """A small blob (image config) read whole and verified; refuses more than ``max_size`` bytes."""

    def stream_blob(self, ref: Reference, digest: str,
                    size: int | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """A large blob (layer) as chunks, verified at its end (ImageCorrupt on a digest mismatch).

        ``size`` is the descriptor's size: a body longer than that is cut off as
        ImageCorrupt rather than read to the end (a registry cannot make us read
        more than the manifest promised).
        """

    async def read_range(self, ref: Reference, digest: str, start: int, length: int, *,
                         size: int | None = None) -> bytes:
        """Bytes ``start .. start+length-1`` of a blob, exactly ``length`` of them, NOT verified.

        Raises ``RangeUnsupported`` when the registry does not answer with that
        range (HTTP 200 with the whole blob, a different ``Content-Range``), and
        ImageCorrupt when ``size`` (the descriptor's) differs from the total the
        registry states.  Backends that cannot read ranges raise ``RangeUnsupported``.
        """

    async def aclose(self) -> None:
        ...
