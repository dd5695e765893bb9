"""JSON documents from a registry or the API server: manifests, indexes, image configs, AdmissionReviews.

Structured strategies build documents that look right (the keys canrun reads, descriptors, platforms) and
then put hostile values in them: wrong types, huge numbers, deep nesting, bad digests.  Assertion: only
``CanrunError`` subclasses escape, in bounded time and memory.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from canrun.image.manifest import parse_manifest
from canrun.image.model import ImageConfig
from canrun.image.store import _config_doc
from canrun.kube.admission import parse_review, relevant_view, verdict_view
from canrun.platform import Platform
from canrun.registry.base import Descriptor
from canrun.registry.mediatypes import (CONFIG_TYPES, DOCKER_SCHEMA1, INDEX_TYPES, MANIFEST_TYPES, OCI_CONFIG,
                                        OCI_MANIFEST)
from canrun.registry.reference import Reference

from .budget import FUZZ, bounded

DIGEST = "sha256:" + "ab" * 32
REF = Reference.parse("example.com/app:v1")

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                    st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=20)
#: A value of the wrong kind, or of the right kind with a hostile value, for any field.
hostile = st.one_of(json_values, st.sampled_from([[], {}, "", -1, 2**64, True, "../../x", "sha256:" + "Z" * 64,
                                                  [[[[[]]]]], "a" * 300]))
media_types = st.sampled_from(sorted(INDEX_TYPES | MANIFEST_TYPES | CONFIG_TYPES)
                              + [DOCKER_SCHEMA1, "application/json", "", "text/plain",
                                 "application/vnd.oci.image.layer.v1.tar+gzip",
                                 "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"])


def maybe_hostile(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(value, value, value, hostile)


platforms = st.fixed_dictionaries({}, optional={
    "os": maybe_hostile(st.sampled_from(["linux", "windows", ""])),
    "architecture": maybe_hostile(st.sampled_from(["amd64", "arm64", "arm", "s390x"])),
    "variant": maybe_hostile(st.sampled_from(["v7", "v8", ""])),
    "os.version": maybe_hostile(st.text(max_size=10)),
    "os.features": maybe_hostile(st.lists(st.text(max_size=5), max_size=2)),
})
descriptors = st.fixed_dictionaries({
    "mediaType": maybe_hostile(media_types),
    "digest": maybe_hostile(st.just(DIGEST)),
    "size": maybe_hostile(st.integers(0, 2**40)),
}, optional={"platform": maybe_hostile(platforms),
             "annotations": maybe_hostile(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
             "artifactType": maybe_hostile(st.text(max_size=10))})
manifests = st.fixed_dictionaries({"schemaVersion": maybe_hostile(st.sampled_from([2, 1]))}, optional={
    "mediaType": maybe_hostile(media_types),
    "config": maybe_hostile(descriptors),
    "layers": maybe_hostile(st.lists(descriptors, max_size=3)),
    "manifests": maybe_hostile(st.lists(descriptors, max_size=3)),
    "artifactType": hostile,
})


def deep(depth: int, opener: str) -> bytes:
    closer = {"[": "]", "{\"a\":": "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


raw_bodies = st.one_of(
    manifests.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=100),
    st.builds(deep, st.integers(500, 200_000), st.sampled_from(["[", "{\"a\":"])),
    st.sampled_from([b"", b"null", b"[]", b'"x"', b"1e999999", b"\xff\xfe{}", b'{"a":1,"a":2}', b"NaN"]),
)


@FUZZ
@given(raw_bodies, st.sampled_from([OCI_MANIFEST, "", sorted(INDEX_TYPES)[0]]))
def test_parse_manifest_raises_only_canrun_errors(body: bytes, outer_type: str) -> None:
    descriptor = Descriptor(media_type=outer_type, digest=DIGEST, size=len(body))
    bounded(lambda: parse_manifest(descriptor, body))


configs = st.fixed_dictionaries({}, optional={
    "architecture": maybe_hostile(st.sampled_from(["amd64", "arm64"])),
    "os": maybe_hostile(st.just("linux")),
    "os.features": hostile,
    "os.version": hostile,
    "variant": hostile,
    "config": maybe_hostile(st.fixed_dictionaries({}, optional={
        "Entrypoint": maybe_hostile(st.lists(st.text(max_size=8), max_size=3)),
        "Cmd": maybe_hostile(st.lists(st.text(max_size=8), max_size=3)),
        "Env": maybe_hostile(st.lists(st.text(max_size=12), max_size=3)),
        "User": maybe_hostile(st.text(max_size=8)),
        "WorkingDir": maybe_hostile(st.text(max_size=8)),
    })),
})


def read_config(body: bytes, size: int) -> tuple[ImageConfig, Platform]:
    doc = _config_doc(REF, Descriptor(media_type=OCI_CONFIG, digest=DIGEST, size=size), body)
    return ImageConfig.from_json(doc), Platform.from_dict(doc)


@FUZZ
@given(st.one_of(configs.map(lambda d: json.dumps(d).encode()), raw_bodies), st.booleans())
def test_image_config_raises_only_canrun_errors(body: bytes, size_known: bool) -> None:
    bounded(lambda: read_config(body, len(body) if size_known else -1))


pod_specs = st.fixed_dictionaries({}, optional={
    "containers": maybe_hostile(st.lists(st.fixed_dictionaries({}, optional={
        "name": maybe_hostile(st.text(max_size=5)), "image": maybe_hostile(st.text(max_size=20)),
        "command": hostile, "args": hostile, "env": hostile, "envFrom": hostile, "workingDir": hostile,
        "securityContext": hostile, "volumeMounts": hostile}), max_size=2)),
    "initContainers": hostile, "ephemeralContainers": hostile, "volumes": hostile, "securityContext": hostile,
})
objects = st.fixed_dictionaries({}, optional={
    "apiVersion": maybe_hostile(st.sampled_from(["v1", "apps/v1", "batch/v1"])),
    "kind": maybe_hostile(st.sampled_from(["Pod", "Deployment", "CronJob"])),
    "metadata": maybe_hostile(st.fixed_dictionaries({}, optional={"name": hostile, "annotations": hostile})),
    "spec": maybe_hostile(st.one_of(pod_specs, st.fixed_dictionaries(
        {"template": maybe_hostile(st.fixed_dictionaries({"spec": maybe_hostile(pod_specs)}))}))),
})
reviews = st.fixed_dictionaries({
    "apiVersion": maybe_hostile(st.just("admission.k8s.io/v1")),
    "kind": maybe_hostile(st.just("AdmissionReview")),
    "request": maybe_hostile(st.fixed_dictionaries({
        "uid": maybe_hostile(st.uuids().map(str)),
        "kind": maybe_hostile(st.fixed_dictionaries({"group": maybe_hostile(st.just("")),
                                                     "version": maybe_hostile(st.just("v1")),
                                                     "kind": maybe_hostile(st.sampled_from(["Pod", "Deployment"]))})),
        "operation": maybe_hostile(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"])),
    }, optional={"resource": hostile, "subResource": hostile, "namespace": hostile, "name": hostile,
                 "object": maybe_hostile(objects), "oldObject": maybe_hostile(objects), "dryRun": hostile,
                 "userInfo": hostile})),
})


def review_and_views(body: bytes) -> None:
    request = parse_review(body)
    for obj in (request.object, request.old_object):
        relevant_view(request.kind, obj)
        verdict_view(request.kind, obj)


@FUZZ
@given(st.one_of(reviews.map(lambda d: json.dumps(d).encode()), raw_bodies))
def test_admission_review_raises_only_canrun_errors(body: bytes) -> None:
    bounded(lambda: review_and_views(body))
