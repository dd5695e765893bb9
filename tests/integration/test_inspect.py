"""``canrun inspect``: the runbook without docker, through the real CLI against the real registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import canrun
from tests.support.images import Catalogue

pytestmark = pytest.mark.registry


def test_json_follows_the_symlink_to_arm64_code(catalogue: Catalogue, tmp_path: Path) -> None:
    run = canrun("inspect", catalogue.ref("busybox"), "--platform", "linux/arm64", "--path", "/bin/sh",
                 "--path", "sleep", "--user", "1000:1000", "--format", "json", cache_dir=tmp_path / "cache")
    assert run.code == 0, run
    doc = run.json
    assert doc["platform"] == "linux/arm64" and doc["image_platform"] == "linux/arm64"
    assert set(doc["available"]) == {"linux/amd64", "linux/arm64"}
    assert doc["index_digest"] == catalogue["busybox"].digest and doc["digest"] != doc["index_digest"]
    assert doc["config"]["entrypoint"] == ["/bin/busybox"]
    assert doc["user"]["uid"] == 1000 and doc["user"]["gid"] == 1000
    sh, sleep = doc["paths"]
    assert sh["path"] == "/bin/sh" and sh["verdict"] == "runs"
    [step] = sh["steps"]
    assert step["hops"] == [{"link": "/bin/sh", "target": "busybox"}] and step["resolved"] == "/bin/busybox"
    assert step["node"]["mode"] == "0755" and step["node"]["exec"]["machine"] == "AArch64"
    assert (step["node"]["type"], step["node"]["uid"], step["node"]["gid"]) == ("file", 0, 0)
    # a bare name walks PATH: the candidates before /bin are reported as tried
    assert sleep["verdict"] == "runs"
    assert sleep["steps"][0]["candidates"][-1] == {"path": "/bin/sleep", "result": "found"}


def test_json_on_amd64_names_x86_64(catalogue: Catalogue, tmp_path: Path) -> None:
    run = canrun("inspect", catalogue.ref("busybox"), "--platform", "linux/amd64", "--path", "/bin/sh",
                 "--format", "json", cache_dir=tmp_path / "cache")
    assert run.code == 0, run
    assert run.json["paths"][0]["steps"][0]["node"]["exec"]["machine"] == "x86-64"


def test_text_shows_the_trace_and_the_verdict(catalogue: Catalogue, tmp_path: Path) -> None:
    run = canrun("inspect", catalogue.ref("busybox"), "--platform", "linux/arm64", "--path", "/bin/sh",
                 "--user", "1000", cache_dir=tmp_path / "cache")
    assert run.code == 0, run
    out = run.stdout
    assert "linux/amd64, linux/arm64" in out
    assert "/bin/sh -> busybox" in out and "AArch64" in out
    assert "file 0755 owner 0:0" in out  # type, mode and owner of what the chain ends at
    assert "verdict: runs" in out
    assert "uid 1000" in out


def test_text_explains_a_failing_default_command(catalogue: Catalogue, tmp_path: Path) -> None:
    run = canrun("inspect", catalogue.ref("crlf"), cache_dir=tmp_path / "cache")
    assert run.code == 1, run  # the verdict is "fails"
    assert "fails: interpreter-not-found" in run.stdout
    assert "CRLF" in run.stdout and "fix:" in run.stdout


def test_user_changes_the_permission_verdict(catalogue: Catalogue, tmp_path: Path) -> None:
    root = canrun("inspect", catalogue.ref("mode700"), "--format", "json", cache_dir=tmp_path / "cache")
    app = canrun("inspect", catalogue.ref("mode700"), "--user", "1000", "--runtime", "docker", "--format", "json",
                 cache_dir=tmp_path / "cache")
    assert root.json["paths"][0]["verdict"] == "runs", root
    assert app.json["paths"][0]["verdict"] == "fails: command-not-executable", app


def test_unreachable_image_is_one_line_and_exit_2(catalogue: Catalogue, tmp_path: Path) -> None:
    run = canrun("inspect", catalogue.ref("unreachable"), "--timeout", "2", cache_dir=tmp_path / "cache")
    assert run.code == 2, run
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run
    assert catalogue.ref("unreachable").split("/")[0] in run.stderr
