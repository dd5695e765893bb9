"""Deeply nested JSON from outside: judged as containerd judges it (Go accepts 10,000 levels), never a traceback.

A config with an unknown key nested 1,500 deep is pulled and run by containerd, so canrun must judge the
image (a broken ENTRYPOINT is still an error); 100,000 levels in a manifest, a config, an error body or a
token answer are broken JSON, reported as such.  The config cases sit in the real registry (it stores
blobs unparsed); the manifest, error body and token answer come from a hostile server on loopback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from canrun.errors import ImageNotFound, RegistryAuthError
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.registry.reference import Reference
from tests.robustness.conftest import deployment, run_cli
from tests.robustness.hostile import LAYER_GZIP, Pusher, gz, member, tar
from tests.support.httpstub import StubRequest, StubResponse, stub_server

pytestmark = pytest.mark.timeout(120)

DEEP = 100_000


def deep_config(levels: int, entrypoint: list[str]) -> bytes:
    head = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": entrypoint},
                       "rootfs": {"type": "layers", "diff_ids": []}})[:-1]
    return (head + ', "x-unknown": ' + '{"k": ' * levels + "1" + "}" * levels + "}").encode()


def check(tmp_path: Path, image: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(deployment("app", image)))
    result = run_cli(["check", "-f", str(path), "--format", "json", "--no-cache", *extra], kill_after=60)
    result.assert_clean()
    assert "RecursionError" not in result.stderr + result.stdout
    return result.code, json.loads(result.stdout), result.stderr


def test_a_config_nested_1500_deep_is_judged_like_any_other(local_registry: Any, tmp_path: Path) -> None:
    pusher = Pusher(local_registry.host)
    layer = gz(tar(member("bin/app", b"#!/bin/missing-interpreter\n")))
    broken = pusher.image("deep-json/broken", "v1", [(LAYER_GZIP, layer)], deep_config(1_500, ["/bin/nope"]))
    code, doc, _ = check(tmp_path, broken, "--insecure-registry", local_registry.host)
    rules = {f["rule"] for f in doc["findings"]}
    assert code == 1 and rules and "image-corrupt" not in rules and "internal-error" not in rules, doc


def test_a_config_nested_100k_deep_is_a_corrupt_image(local_registry: Any, tmp_path: Path) -> None:
    pusher = Pusher(local_registry.host)
    layer = gz(tar(member("bin/app", b"\x7fELF")))
    image = pusher.image("deep-json/config", "v1", [(LAYER_GZIP, layer)], deep_config(DEEP, ["/bin/app"]))
    code, doc, _ = check(tmp_path, image, "--insecure-registry", local_registry.host)
    assert [f["rule"] for f in doc["findings"]] == ["image-corrupt"] and code == 1
    assert "not valid JSON" in doc["findings"][0]["message"]


def test_a_manifest_nested_100k_deep_is_a_corrupt_image(tmp_path: Path) -> None:
    body = b'{"schemaVersion": 2, "x": ' + b"[" * DEEP + b"]" * DEEP + b"}"

    def handle(req: StubRequest) -> StubResponse:
        if req.path.startswith("/v2/app/manifests/"):
            return StubResponse(200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, body)
        return StubResponse(200)

    with stub_server(handle) as srv:
        code, doc, _ = check(tmp_path, f"{srv.host}/app:v1")
    assert [f["rule"] for f in doc["findings"]] == ["image-corrupt"], doc
    assert "not valid JSON" in doc["findings"][0]["message"]


async def test_an_error_body_nested_100k_deep_is_only_a_status() -> None:
    deep_error = b'{"errors": ' + b"[" * DEEP + b"]" * DEEP + b"}"

    def handle(req: StubRequest) -> StubResponse:
        return StubResponse(200) if req.path == "/v2/" else StubResponse(404, {}, deep_error)

    with stub_server(handle) as srv:
        async with RegistryClient(RegistrySettings(retries=0)) as c:
            with pytest.raises(ImageNotFound, match="404"):
                await c.manifest(Reference.parse(f"{srv.host}/app:v1"))


async def test_a_token_answer_nested_100k_deep_is_an_unreadable_answer() -> None:
    levels = 30_000  # deeper than Go accepts, and still within the size a token answer may have
    with stub_server(lambda req: StubResponse(200, {}, b'{"token": ' + b"[" * levels + b"]" * levels + b"}")) as auth:
        def registry(req: StubRequest) -> StubResponse:
            return StubResponse(401, {"WWW-Authenticate": f'Bearer realm="{auth.url}/token",service="s"'})

        with stub_server(registry) as srv:
            async with RegistryClient(RegistrySettings(retries=0)) as c:
                with pytest.raises(RegistryAuthError, match="unreadable answer"):
                    await c.resolve(Reference.parse(f"{srv.host}/app:v1"))
