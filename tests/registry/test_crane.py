"""The crane backend: the same verified content as the native client, credentials only through a private docker
config that is gone afterwards, and refused where it cannot keep the SSRF guard."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from canrun.errors import ImageCorrupt, ImageNotFound, RegistryAuthError, UsageError
from canrun.registry.auth import Credential, Keychain
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.registry.crane import CraneBackend
from canrun.registry.reference import Reference
from tests.registry.test_client_auth import PASSWORD, basic_registry  # noqa: F401 (a fixture)
from tests.robustness.conftest import deployment, run_cli
from tests.robustness.hostile import LAYER_GZIP, Pusher, gz, member, tar
from tests.support import tools

pytestmark = [pytest.mark.registry, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def crane() -> Path:
    return tools.find("crane").require()


@pytest.fixture(scope="module")
def image(local_registry: Any) -> str:
    pusher = Pusher(local_registry.host)
    layer = gz(tar(member("bin/app", b"#!/bin/missing\n")))
    ref = pusher.image("crane/app", "v1", [(LAYER_GZIP, layer)])
    pusher.close()
    return ref


def private_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("canrun-crane-*")}


async def test_crane_reads_what_the_native_client_reads(crane: Path, image: str) -> None:
    ref = Reference.parse(image)
    before = private_dirs()
    async with RegistryClient(RegistrySettings(docker_config=None)) as native:
        top = await native.resolve(ref)
        _, body = await native.manifest(ref, top.digest)
    backend = CraneBackend(RegistrySettings(), crane=crane)
    assert (await backend.resolve(ref)).digest == top.digest
    desc, crane_body = await backend.manifest(ref, top.digest)
    assert crane_body == body and desc.media_type == "application/vnd.oci.image.manifest.v1+json"
    doc = json.loads(body)
    config = await backend.blob(ref, doc["config"]["digest"], max_size=1 << 20)
    assert len(config) == doc["config"]["size"]
    layer = doc["layers"][0]
    async with backend.stream_blob(ref, layer["digest"], layer["size"]) as chunks:
        data = b"".join([c async for c in chunks])
    assert len(data) == layer["size"]
    with pytest.raises(ImageCorrupt, match="its descriptor says"):
        async with backend.stream_blob(ref, layer["digest"], layer["size"] - 1) as chunks:
            async for _ in chunks:
                pass
    with pytest.raises(ImageNotFound):
        await backend.resolve(Reference.parse(image.replace(":v1", ":nope")))
    assert private_dirs() == before  # every private docker config was removed


async def test_crane_gets_credentials_only_through_its_private_config(crane: Path, basic_registry: Any,  # noqa: F811
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ref = Reference.parse(f"{basic_registry.host}/private/app:v1")
    with pytest.raises(RegistryAuthError):
        await CraneBackend(RegistrySettings(), crane=crane).resolve(ref)
    chain = Keychain({basic_registry.host: Credential("alice", PASSWORD)})
    backend = CraneBackend(RegistrySettings(keychain=chain), crane=crane)
    calls: list[tuple[tuple[str, ...], dict[str, str], str]] = []
    spawn = asyncio.create_subprocess_exec

    async def watching(*args: str, env: dict[str, str], **kw: Any) -> Any:
        config = Path(env["DOCKER_CONFIG"]) / "config.json"
        calls.append((args, env, oct(config.stat().st_mode & 0o777)))
        return await spawn(*args, env=env, **kw)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", watching)
    assert (await backend.resolve(ref)).digest.startswith("sha256:")
    (args, env, mode), = calls
    assert PASSWORD not in " ".join(args) and all(PASSWORD not in v for v in env.values()) and mode == "0o600"
    assert not Path(env["DOCKER_CONFIG"]).exists()  # removed once crane ended


def test_check_with_the_crane_backend_finds_what_native_finds(crane: Path, image: str, local_registry: Any,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(deployment("app", image)))
    outputs = []
    for backend in ("native", "crane"):
        result = run_cli(["check", "-f", str(path), "--no-cache", "--format", "json", "--registry-backend", backend],
                         env={"CANRUN_CRANE": str(crane)}, kill_after=90)
        result.assert_clean()
        outputs.append((result.code, sorted(f["rule"] for f in yaml.safe_load(result.stdout)["findings"])))
    assert outputs[0] == outputs[1] and outputs[0][0] == 1, outputs


def test_serve_refuses_crane_while_the_ssrf_guard_is_on() -> None:
    from dataclasses import replace

    from canrun.config import Settings, open_engine

    settings = Settings()
    settings = replace(settings, registry=replace(settings.registry, backend="crane", ssrf_guard=True))

    async def go() -> None:
        async with open_engine(settings):
            pass

    with pytest.raises(UsageError, match="SSRF guard"):
        asyncio.run(go())
