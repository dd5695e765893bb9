"""Inputs the fuzz suite found that let a non-``CanrunError`` escape, each pinned at the parser it broke.

Every one is a value a registry, a layer or a manifest author controls: a 5000-digit port or PAX number
(``int()`` refuses more than 4300 decimal digits with ``ValueError``), a ``mediaType`` that is a list
(unhashable, so a set lookup raises ``TypeError``), JSON nested deeper than the interpreter's recursion
limit (``RecursionError``, not a ``ValueError``).
"""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from canrun.errors import ImageCorrupt, ImageNotFound, InvalidReference, LayerError, RegistryAuthError
from canrun.image.manifest import OCI_MANIFEST, parse_manifest
from canrun.image.store import _config_doc
from canrun.image.tar import TarReader
from canrun.registry.base import Descriptor
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.registry.reference import Reference
from tests.support.httpstub import StubRequest, StubResponse, stub_server

DIGEST = "sha256:" + "0" * 64
DEEP = b"[" * 100_000


def _pax_tar(records: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("file")
        info.pax_headers = records
        tf.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def _read(data: bytes) -> None:
    reader = TarReader()
    reader.feed(data)
    reader.close()


@pytest.mark.parametrize("digits", ["1" * 5000, "9" * 20, str(1 << 63)], ids=["5000-digits", "20-nines", "2**63"])
def test_a_port_too_long_for_int_is_an_invalid_reference(digits: str) -> None:
    with pytest.raises(InvalidReference, match="between 1 and 65535"):
        Reference.parse(f"localhost:{digits}/app")


def test_a_port_with_leading_zeros_still_parses() -> None:
    assert Reference.parse("localhost:0005000/app").registry == "localhost:0005000"


@pytest.mark.parametrize("key", ["uid", "gid", "size"])
@pytest.mark.parametrize("value", ["1" * 5000, str(1 << 63)], ids=["5000-digits", "2**63"])
def test_pax_numbers_beyond_int64_are_a_layer_error_like_go(key: str, value: str) -> None:
    with pytest.raises(LayerError, match=f"PAX {key} .* does not fit in 64 bits"):
        _read(_pax_tar({key: value}))


def test_pax_numbers_with_leading_zeros_are_read_like_go() -> None:
    members = TarReader().feed(_pax_tar({"uid": "0" * 30 + "1234"}))
    assert members[0].uid == 1234


@pytest.mark.parametrize("media_type", [[1], {"a": 1}])
def test_a_manifest_whose_media_type_is_not_a_string_is_corrupt(media_type: object) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": media_type}).encode()
    with pytest.raises(ImageCorrupt, match="mediaType is not a string"):
        parse_manifest(Descriptor(media_type=OCI_MANIFEST, digest=DIGEST, size=len(body)), body)


def test_a_manifest_nested_too_deep_is_corrupt() -> None:
    with pytest.raises(ImageCorrupt, match="not valid JSON"):
        parse_manifest(Descriptor(media_type=OCI_MANIFEST, digest=DIGEST, size=len(DEEP)), DEEP)


def test_an_image_config_nested_too_deep_is_corrupt() -> None:
    descriptor = Descriptor(media_type="application/vnd.oci.image.config.v1+json", digest=DIGEST, size=len(DEEP))
    with pytest.raises(ImageCorrupt, match="not valid JSON"):
        _config_doc(Reference.parse("example.com/app:v1"), descriptor, DEEP)


async def test_a_registry_error_body_nested_too_deep_still_reports_the_status() -> None:
    deep = b"[" * 10_000  # under MAX_ERROR_BODY, far over the recursion limit

    def handle(req: StubRequest) -> StubResponse:
        if req.path == "/v2/":
            return StubResponse(200)
        return StubResponse(404, {"Content-Type": "application/json"}, deep)

    with stub_server(handle) as srv:
        async with RegistryClient(RegistrySettings(backoff=0.01, timeout=5.0)) as client:
            with pytest.raises(ImageNotFound, match="404"):
                await client.manifest(Reference.parse(f"{srv.host}/app:v1"))


async def test_a_token_answer_nested_too_deep_is_an_auth_error() -> None:
    deep = b"[" * 10_000  # under MAX_TOKEN_ANSWER
    realm: dict[str, str] = {}

    def handle(req: StubRequest) -> StubResponse:
        if req.path.startswith("/token"):
            return StubResponse(200, {"Content-Type": "application/json"}, deep)
        return StubResponse(401, {"WWW-Authenticate": f'Bearer realm="{realm["url"]}",service="stub"'})

    with stub_server(handle) as srv:
        realm["url"] = f"http://{srv.host}/token"
        async with RegistryClient(RegistrySettings(backoff=0.01, timeout=5.0)) as client:
            with pytest.raises(RegistryAuthError, match="unreadable answer"):
                await client.manifest(Reference.parse(f"{srv.host}/app:v1"))
