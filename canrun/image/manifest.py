"""Manifests and indexes (OCI and Docker), and the choice containerd makes among index entries.

Four document types matter: the OCI image index and Docker manifest list
(several platform images), and the OCI image manifest and Docker v2 schema 2
manifest (one image: a config and layers).  Docker schema 1 is refused: no
current runtime pulls it and it has no content-addressed config.

An index also carries entries that are not images a node would ever pull:
BuildKit's attestation manifests (platform ``unknown/unknown``, annotation
``vnd.docker.reference.type: attestation-manifest``) and OCI artifacts
(``artifactType``, or a non-image media type).  ``ImageIndex.images()`` leaves
them out, so they never count as "the image has a build for this platform".

The media type is taken from the body first (``mediaType``), then from the
descriptor the registry gave, then from the document's shape, because OCI
manifests may omit ``mediaType`` and a cached tag lookup may not know it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from canrun import untrusted_json
from canrun.errors import ImageCorrupt, LimitExceeded, UnsupportedManifest
from canrun.platform import Platform
from canrun.registry.base import Descriptor
from canrun.registry.mediatypes import (ACCEPT, CONFIG_TYPES, DOCKER_CONFIG, DOCKER_LIST, DOCKER_MANIFEST,  # noqa: F401
                                        DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, INDEX_TYPES, MANIFEST_TYPES,
                                        OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, SCHEMA1_TYPES)
from canrun.registry.reference import is_digest


_LAYER_COMPRESSION: dict[str, Literal["gzip", "zstd", "none"]] = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}
#: Layers the registry does not hold (Windows base layers, "nondistributable" ones): not fetchable.
FOREIGN_LAYER_TYPES = frozenset({
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
})
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"


@dataclass(frozen=True)
class ImageIndex:
    """An OCI index or Docker manifest list."""

    descriptor: Descriptor
    manifests: list[Descriptor]

    def images(self) -> list[Descriptor]:
        """The entries a node could pull: image manifests (with a platform or none), no attestations or artifacts."""
        return [d for d in self.manifests if is_image_entry(d)]

    def nested(self) -> list[Descriptor]:
        """Entries that are themselves indexes: containerd walks into them as if their entries were here."""
        return [d for d in self.manifests if d.media_type in INDEX_TYPES and not d.artifact_type]


def flatten(outer: ImageIndex, children: dict[str, ImageIndex], *, max_entries: int | None = None) -> ImageIndex:
    """``outer`` with each nested index entry replaced by that index's entries (``children`` by digest).

    containerd's ``images.Manifest`` keeps an index entry whose platform matches
    (or that has none) and recurses into it, so an inner manifest is pulled when
    both its own platform and its parent entry's fit the node.  Flattened, an
    inner entry without a platform takes its parent's; one whose platform
    differs from a platformed parent's is dropped (no node matches both).

    An entry repeated with the same platform (and the same child repeated under
    the same parent platform) is kept once, at its first place: a later copy can
    never be the one chosen, and without this an index of 2,000 entries naming
    one nested index of 2,000 entries flattens into four million.  ``max_entries``
    bounds what is left (LimitExceeded).
    """
    flat: list[Descriptor] = []
    seen: set[tuple[object, ...]] = set()

    def add(d: Descriptor) -> None:
        key = (d.digest, d.media_type, d.platform, d.artifact_type, tuple(sorted(d.annotations.items())))
        if key in seen:
            return
        seen.add(key)
        flat.append(d)
        if max_entries is not None and len(flat) > max_entries:
            raise LimitExceeded(f"index {outer.descriptor.digest or ''} flattens into more than {max_entries} "
                                f"entries")

    expanded: set[tuple[str, Platform | None]] = set()
    for entry in outer.manifests:
        child = children.get(entry.digest) if entry.media_type in INDEX_TYPES else None
        if child is None:
            add(entry)
            continue
        if (entry.digest, entry.platform) in expanded:
            continue
        expanded.add((entry.digest, entry.platform))
        for inner in child.manifests:
            if inner.platform is None:
                inner = replace(inner, platform=entry.platform)
            elif entry.platform is not None and inner.platform != entry.platform:
                continue
            add(inner)
    return ImageIndex(outer.descriptor, flat)


@dataclass(frozen=True)
class ImageManifest:
    """One image: its config blob and its layers, bottom first."""

    descriptor: Descriptor
    config: Descriptor
    layers: list[Descriptor]


def is_image_entry(d: Descriptor) -> bool:
    if d.media_type not in MANIFEST_TYPES or d.artifact_type:
        return False
    if d.annotations.get(ATTESTATION_ANNOTATION) == "attestation-manifest":
        return False
    if d.platform is not None and (d.platform.os, d.platform.architecture) == ("unknown", "unknown"):
        return False
    return True


def select_manifest(index: ImageIndex, node: Platform, *, exact: bool = False) -> Descriptor | None:
    """The entry a node of ``node`` pulls, or None if none fits.

    containerd (``images.Manifest``, ``images.LimitManifests``) keeps the entries
    whose platform matches and those without one, sorts them stably by
    preference with the platformless ones last, and takes the first.  So: the
    best ``match_rank`` with index order breaking ties; failing that, the first
    entry without a platform, which containerd then judges by the platform in
    its image config (``ImageStore.select`` does that: it needs the config).
    ``exact``: containerd 2.1+'s transfer service (the node's own platform only).

    On a Windows node, containerd's ``Default()`` (``windowsMatchComparer``)
    prefers, among matching entries, the greater ``os.version`` (compared as
    strings, as it does); the transfer service's ``Ordered`` comparer keeps
    index order.
    """
    newest_first = node.os == "windows" and not exact
    best: tuple[int, Descriptor] | None = None
    unlabelled: Descriptor | None = None
    for d in index.images():
        if d.platform is None:
            unlabelled = unlabelled or d
            continue
        rank = node.match_rank(d.platform, exact=exact)
        if rank is None:
            continue
        if best is None or rank < best[0] or (
                rank == best[0] and newest_first and d.platform.os_version > (best[1].platform or node).os_version):
            best = (rank, d)
    return best[1] if best else unlabelled


def layer_compression(media_type: str) -> Literal["gzip", "zstd", "none", "auto"]:
    """How a layer is compressed, from its media type; ``auto`` (sniff the bytes) for types we don't know.

    Raises UnsupportedManifest for foreign/nondistributable layers: the registry
    does not hold them, so the image cannot be judged from it.
    """
    if media_type in FOREIGN_LAYER_TYPES:
        raise UnsupportedManifest(
            f"layer media type {media_type} is a foreign (non-distributable) layer that registries do not serve; "
            f"canrun cannot read it")
    return _LAYER_COMPRESSION.get(media_type, "auto")


def parse_manifest(descriptor: Descriptor, body: bytes) -> ImageIndex | ImageManifest:
    """Parse a manifest or index body fetched for ``descriptor`` (already digest-verified)."""
    where = descriptor.digest or "manifest"
    try:
        doc = untrusted_json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageCorrupt(f"manifest {where} is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise ImageCorrupt(f"manifest {where} is not a JSON object")
    media_type = doc.get("mediaType") or descriptor.media_type or ""
    if doc.get("schemaVersion") == 1 or (isinstance(media_type, str) and media_type in SCHEMA1_TYPES):
        raise UnsupportedManifest(
            f"manifest {where} is Docker schema 1, which current runtimes no longer pull; rebuild or re-push the "
            f"image with a current tool")
    if not isinstance(media_type, str):
        raise ImageCorrupt(f"manifest {where}: mediaType is not a string")
    if media_type not in INDEX_TYPES | MANIFEST_TYPES:
        if "manifests" in doc and media_type in ("", "application/json"):
            media_type = OCI_INDEX
        elif "config" in doc and "layers" in doc and media_type in ("", "application/json"):
            media_type = OCI_MANIFEST
        else:
            raise UnsupportedManifest(f"manifest {where} has media type {media_type or '(none)'}, "
                                      f"which is not a container image")
    top = replace(descriptor, media_type=media_type)
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ImageCorrupt(f"index {where} has no manifests list")
        return ImageIndex(top, [_descriptor(e, f"index {where}") for e in entries])
    artifact_type = doc.get("artifactType")
    config = _descriptor(doc.get("config"), f"manifest {where} config")
    if artifact_type or config.media_type not in CONFIG_TYPES:
        kind = artifact_type or config.media_type
        raise UnsupportedManifest(f"manifest {where} is an artifact ({kind}), not a container image")
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise ImageCorrupt(f"manifest {where} has no layers list")
    layers = [_descriptor(e, f"manifest {where} layer") for e in layers_doc]
    for layer in layers:
        layer_compression(layer.media_type)  # refuse foreign layers up front
    return ImageManifest(top, config, layers)


def _descriptor(doc: Any, where: str) -> Descriptor:
    if not isinstance(doc, dict):
        raise ImageCorrupt(f"{where}: descriptor is not an object")
    media_type, digest, size = doc.get("mediaType"), doc.get("digest"), doc.get("size")
    if not is_digest(digest):
        # also what keeps hostile digests ("../..") out of registry URLs
        raise ImageCorrupt(f"{where}: invalid digest {str(digest)[:80]!r}")
    if not isinstance(media_type, str):
        raise ImageCorrupt(f"{where}: descriptor {digest} has no mediaType")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageCorrupt(f"{where}: descriptor {digest} has an invalid size")
    platform = None
    pdoc = doc.get("platform")
    if isinstance(pdoc, dict):
        platform = Platform.from_dict(pdoc)
    annotations = doc.get("annotations")
    annotations = {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {}
    artifact_type = doc.get("artifactType")
    return Descriptor(media_type=media_type, digest=digest, size=size, platform=platform, annotations=annotations,
                      artifact_type=artifact_type if isinstance(artifact_type, str) and artifact_type else None)
