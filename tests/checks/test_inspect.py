"""``canrun inspect`` against real images in the local registry: traces and verdicts a user reads."""

from __future__ import annotations

import io
import json

import pytest

from canrun.cli import main
from canrun.errors import UsageError
from canrun.inspect import parse_user
from tests.support.images import Catalogue
from tests.support.registry import RunningRegistry


def inspect(registry: RunningRegistry, ref: str, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["inspect", ref, "--insecure-registry", registry.host, "--no-cache", *extra], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_parse_user() -> None:
    assert parse_user(None) == (None, None)
    assert parse_user("1000") == (1000, None)
    assert parse_user("1000:50") == (1000, 50)
    with pytest.raises(UsageError):
        parse_user("app")


@pytest.mark.registry
def test_whiteout_trace_names_the_layer(local_registry: RunningRegistry, catalogue: Catalogue) -> None:
    code, out, err = inspect(local_registry, catalogue.ref("whiteout"))
    assert code == 1, err  # the verdict is "fails": exit 1, as check does for an error finding
    assert "verdict: fails: command-not-found" in out
    assert "deleted by layer 2 of 2" in out


@pytest.mark.registry
def test_path_lookup_through_merged_usr(local_registry: RunningRegistry, catalogue: Catalogue) -> None:
    code, out, err = inspect(local_registry, catalogue.ref("usrmerge"), "--path", "sh", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    (report,) = data["paths"]
    assert report["verdict"] == "runs"
    command = report["steps"][0]
    assert command["candidates"][-1]["result"] == "found"
    assert any(h["target"] == "usr/bin" for h in command["hops"])
    assert command["node"]["exec"]["machine"] == "x86-64"


@pytest.mark.registry
def test_arm64_entry_of_an_index(local_registry: RunningRegistry, catalogue: Catalogue) -> None:
    code, out, err = inspect(local_registry, catalogue.ref("busybox"), "--platform", "linux/arm64")
    assert code == 0, err
    assert "AArch64" in out and "verdict: runs" in out
    code, out, _ = inspect(local_registry, catalogue.ref("mislabeled"), "--platform", "linux/arm64")
    assert "fails: exec-format" in out and "x86-64" in out


@pytest.mark.registry
def test_dac_override_verdict_depends_on_the_runtime(local_registry: RunningRegistry, catalogue: Catalogue) -> None:
    _, out, _ = inspect(local_registry, catalogue.ref("mode700"), "--user", "1000")
    assert "verdict: runs, with warnings" in out and "CAP_DAC_OVERRIDE" in out
    _, out, _ = inspect(local_registry, catalogue.ref("mode700"), "--user", "1000", "--runtime", "docker")
    assert "verdict: fails: command-not-executable" in out


@pytest.mark.registry
def test_scripts_and_loader(local_registry: RunningRegistry, catalogue: Catalogue) -> None:
    _, out, _ = inspect(local_registry, catalogue.ref("scripts"), "--path", "/app/crlf.sh", "--path",
                        "/app/start.sh", "--format", "json")
    crlf, start = json.loads(out)["paths"]
    assert crlf["verdict"] == "fails: interpreter-not-found"
    assert crlf["steps"][1] == {**crlf["steps"][1], "role": "interpreter", "path": "/bin/sh\r", "outcome": "ENOENT"}
    assert start["verdict"] == "runs" and start["steps"][1]["resolved"] == "/bin/busybox"
    _, out, _ = inspect(local_registry, catalogue.ref("dynamic-ls"))
    assert "loader: /lib64/ld-linux-x86-64.so.2" in out and "fails: loader-not-found" in out


@pytest.mark.registry
def test_missing_platform_is_a_note(local_registry: RunningRegistry, catalogue: Catalogue) -> None:
    code, out, _ = inspect(local_registry, catalogue.ref("amd64-only"), "--platform", "linux/arm64")
    assert code == 1 and "no build for linux/arm64" in out and "linux/amd64" in out  # nodes would fail


@pytest.mark.registry
def test_every_platform_given_is_inspected(local_registry: RunningRegistry, catalogue: Catalogue) -> None:
    code, out, err = inspect(local_registry, catalogue.ref("busybox"), "--platform", "linux/amd64,linux/arm64",
                             "--format", "json")
    assert code == 0, err
    docs = json.loads(out)
    assert [d["platform"] for d in docs] == ["linux/amd64", "linux/arm64"]
    assert all(d["digest"] and d["paths"][0]["verdict"] == "runs" for d in docs)
    # one platform that fails makes the whole inspect fail, and the text shows both
    code, out, _ = inspect(local_registry, catalogue.ref("amd64-only"), "--platform", "linux/amd64",
                           "--platform", "linux/arm64")
    assert code == 1
    assert "platform  linux/amd64" in out and "no build for linux/arm64" in out


@pytest.mark.registry
def test_inspect_reads_the_config_file_mirrors(local_registry: RunningRegistry, catalogue: Catalogue,
                                               tmp_path) -> None:
    """An air-gapped laptop: the image names a registry canrun cannot reach; the file's mirror serves it."""
    config = tmp_path / ".canrun.yaml"
    config.write_text(f"registries:\n  mirrors:\n    unreachable.example: {local_registry.host}\n"
                      f"  insecure: [{local_registry.host}]\n")
    image = "unreachable.example/" + catalogue.ref("whiteout").split("/", 1)[1]
    out, err = io.StringIO(), io.StringIO()
    code = main(["inspect", image, "--no-cache", "--config", str(config)], stdout=out, stderr=err)
    assert code == 1, err.getvalue()  # judged through the mirror: its command fails
    assert f"image     {image}" in out.getvalue() and "verdict: fails: command-not-found" in out.getvalue()
    code = main(["inspect", image, "--no-cache", "--timeout", "3"], stdout=io.StringIO(), stderr=(err := io.StringIO()))
    assert code == 2 and "unreachable.example" in err.getvalue()  # without the file: not readable
