"""Manifest parsing and the index entry a node pulls (containerd's preference; attestations skipped)."""

from __future__ import annotations

import json

import pytest

from canrun.errors import ImageCorrupt, UnsupportedManifest
from canrun.image.manifest import (DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, ImageIndex, ImageManifest,
                                   flatten, layer_compression, parse_manifest, select_manifest)
from canrun.platform import Platform
from canrun.registry.base import Descriptor


def dg(n: int) -> str:
    return f"sha256:{n:064x}"


TOP = Descriptor(media_type="", digest=dg(999), size=-1)


def entry(n: int, arch: str, os_: str = "linux", variant: str = "", media_type: str = OCI_MANIFEST,
          **extra: object) -> dict[str, object]:
    platform = {"os": os_, "architecture": arch}
    if variant:
        platform["variant"] = variant
    return {"mediaType": media_type, "digest": dg(n), "size": 500, "platform": platform, **extra}


def index_body(*entries: dict[str, object], media_type: str | None = OCI_INDEX) -> bytes:
    doc: dict[str, object] = {"schemaVersion": 2, "manifests": list(entries)}
    if media_type:
        doc["mediaType"] = media_type
    return json.dumps(doc).encode()


def manifest_body(layer_types: list[str], *, config_type: str = "application/vnd.oci.image.config.v1+json",
                  media_type: str | None = OCI_MANIFEST, **extra: object) -> bytes:
    doc: dict[str, object] = {"schemaVersion": 2,
                              "config": {"mediaType": config_type, "digest": dg(1), "size": 10},
                              "layers": [{"mediaType": t, "digest": dg(10 + i), "size": 100}
                                         for i, t in enumerate(layer_types)], **extra}
    if media_type:
        doc["mediaType"] = media_type
    return json.dumps(doc).encode()


def test_index_images_skip_attestations_and_artifacts() -> None:
    body = index_body(
        entry(1, "amd64"),
        entry(2, "arm64"),
        entry(3, "unknown", "unknown"),
        entry(4, "amd64", annotations={"vnd.docker.reference.type": "attestation-manifest"}),
        entry(5, "amd64", artifactType="application/vnd.dev.sigstore.bundle+json"),
        entry(6, "amd64", media_type="application/vnd.oci.image.index.v1+json"),
    )
    parsed = parse_manifest(TOP, body)
    assert isinstance(parsed, ImageIndex)
    assert len(parsed.manifests) == 6
    assert [d.digest for d in parsed.images()] == [dg(1), dg(2)]


def test_docker_manifest_list_without_media_type_in_descriptor() -> None:
    body = index_body(entry(1, "amd64", media_type=DOCKER_MANIFEST), media_type=DOCKER_LIST)
    parsed = parse_manifest(TOP, body)
    assert isinstance(parsed, ImageIndex) and parsed.descriptor.media_type == DOCKER_LIST
    assert parsed.images()[0].platform == Platform("linux", "amd64")


def test_media_type_from_descriptor_or_shape_when_the_body_has_none() -> None:
    assert isinstance(parse_manifest(TOP, index_body(entry(1, "amd64"), media_type=None)), ImageIndex)
    parsed = parse_manifest(Descriptor(OCI_MANIFEST, dg(7), 1), manifest_body(["application/vnd.oci.image.layer.v1.tar"],
                                                                             media_type=None))
    assert isinstance(parsed, ImageManifest)
    assert parse_manifest(TOP, manifest_body([], media_type=None)).descriptor.media_type == OCI_MANIFEST


@pytest.mark.parametrize("node, expected", [
    (Platform("linux", "amd64"), dg(1)),
    (Platform("linux", "arm64"), dg(2)),
    (Platform("linux", "arm", "v7"), dg(3)),
    (Platform("linux", "arm", "v6"), None),  # v7 code does not run on v6
    (Platform("linux", "s390x"), None),
])
def test_select_manifest_prefers_like_containerd(node: Platform, expected: str | None) -> None:
    idx = parse_manifest(TOP, index_body(entry(3, "arm", variant="v7"), entry(1, "amd64"), entry(2, "arm64"),
                                         entry(9, "unknown", "unknown")))
    assert isinstance(idx, ImageIndex)
    chosen = select_manifest(idx, node)
    assert (chosen.digest if chosen else None) == expected


def test_arm64_node_falls_back_to_32_bit_arm_and_amd64_to_386() -> None:
    idx = parse_manifest(TOP, index_body(entry(1, "arm", variant="v6"), entry(2, "arm", variant="v7"),
                                         entry(3, "386")))
    assert isinstance(idx, ImageIndex)
    assert select_manifest(idx, Platform("linux", "arm64")).digest == dg(2)  # type: ignore[union-attr]
    assert select_manifest(idx, Platform("linux", "amd64")).digest == dg(3)  # type: ignore[union-attr]


def test_first_entry_wins_a_tie() -> None:
    idx = parse_manifest(TOP, index_body(entry(1, "amd64"), entry(2, "amd64")))
    assert select_manifest(idx, Platform("linux", "amd64")).digest == dg(1)  # type: ignore[arg-type,union-attr]


def test_image_manifest_layers_and_compression() -> None:
    types = ["application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
             "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip"]
    parsed = parse_manifest(TOP, manifest_body(types))
    assert isinstance(parsed, ImageManifest)
    assert parsed.config.digest == dg(1)
    assert [layer_compression(d.media_type) for d in parsed.layers] == ["none", "gzip", "zstd", "gzip"]
    assert layer_compression("application/octet-stream") == "auto"


@pytest.mark.parametrize("layer_type", ["application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                                        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"])
def test_foreign_layers_are_refused_clearly(layer_type: str) -> None:
    with pytest.raises(UnsupportedManifest, match="foreign"):
        parse_manifest(TOP, manifest_body(["application/vnd.oci.image.layer.v1.tar+gzip", layer_type],
                                          media_type=DOCKER_MANIFEST))


def test_schema1_is_unsupported_with_a_reason() -> None:
    body = json.dumps({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}).encode()
    with pytest.raises(UnsupportedManifest, match="schema 1"):
        parse_manifest(TOP, body)


def test_artifacts_are_not_images() -> None:
    with pytest.raises(UnsupportedManifest, match="artifact"):
        parse_manifest(TOP, manifest_body([], config_type="application/vnd.cncf.helm.config.v1+json"))
    with pytest.raises(UnsupportedManifest, match="artifact"):
        parse_manifest(TOP, manifest_body([], artifactType="application/vnd.example+type"))


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"schemaVersion": 2, "mediaType": "' + OCI_INDEX.encode() + b'"}', "no manifests"),
    (index_body({"mediaType": OCI_MANIFEST, "digest": "sha256:../../etc", "size": 1}), "invalid digest"),
    (index_body({"mediaType": OCI_MANIFEST, "digest": dg(1), "size": -4}), "invalid size"),
    (manifest_body([]).replace(b'"layers": []', b'"layers": 3'), "no layers"),
])
def test_broken_documents_are_image_corrupt(body: bytes, fragment: str) -> None:
    with pytest.raises(ImageCorrupt, match=fragment):
        parse_manifest(TOP, body)


def test_nested_indexes_are_walked_like_containerd() -> None:
    """An index entry that is itself an index contributes its entries; a platformless inner entry takes its parent's."""
    outer = parse_manifest(TOP, index_body(entry(1, "amd64", media_type=OCI_INDEX), entry(2, "arm64")))
    assert isinstance(outer, ImageIndex)
    inner_doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": dg(10), "size": 5},  # no platform: the parent's (amd64)
        entry(11, "arm64"),  # contradicts its amd64 parent: no node matches both
    ]}
    inner = parse_manifest(outer.manifests[0], json.dumps(inner_doc).encode())
    assert isinstance(inner, ImageIndex)
    assert outer.images() and select_manifest(outer, Platform.parse("linux/amd64")) is None
    flat = flatten(outer, {dg(1): inner})
    picked = select_manifest(flat, Platform.parse("linux/amd64"))
    assert picked is not None and picked.digest == dg(10)
    arm = select_manifest(flat, Platform.parse("linux/arm64"))
    assert arm is not None and arm.digest == dg(2)
