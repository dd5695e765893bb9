"""A constructed CheckRun with findings at known files and lines, shared by the format tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canrun.errors import ManifestError
from canrun.findings import finding
from canrun.output import CheckRun, Target
from canrun.platform import Platform
from canrun.spec import Resource, SourceLocation
from canrun.config_file import find_config
from canrun.validator import Report
from tests.ci.cli_support import DEPLOY, POD

WEB = Resource("Deployment", "web", "default", "apps/v1")
CRON = Resource("CronJob", "nightly", "batch", "batch/v1")
ODD = Resource("Pod", "odd", "default", "v1")
OK = Resource("Deployment", "ok", "default", "apps/v1")
PLATS = ("linux/amd64", "linux/arm64")
NASTY = "50% done, a: b\r\nsecond line | <b>bold</b> `tick`"


def sample_run() -> CheckRun:
    findings = [
        finding("command-not-found", 'the command "/app/server" does not exist in the image', resource=WEB,
                container="app", image="registry.example/web:1", platform="linux/amd64,linux/arm64",
                source=SourceLocation("deploy/web.yaml", 21), digest="sha256:" + "a" * 64),
        finding("image-unresolvable", "127.0.0.1:9: connection refused", resource=WEB, container="sidecar",
                image="127.0.0.1:9/side:1", platform="linux/amd64", source=SourceLocation("deploy/web.yaml", 30)),
        finding("not-verified", "the command lives in an emptyDir volume", resource=CRON, container="job",
                image="busybox:1.36", source=SourceLocation("deploy/cron.yaml", 12)),
        finding("exec-format", NASTY, resource=ODD, container="x", image="odd:1", platform="linux/amd64",
                source=SourceLocation(None, None)),
    ]
    report = Report(findings=findings, workloads=4, containers=5,
                    images={"registry.example/web:1", "127.0.0.1:9/side:1", "busybox:1.36", "odd:1", "ok:1"})
    targets = [
        Target(WEB, "app", "registry.example/web:1", SourceLocation("deploy/web.yaml", 21), PLATS),
        Target(WEB, "sidecar", "127.0.0.1:9/side:1", SourceLocation("deploy/web.yaml", 30), PLATS),
        Target(CRON, "job", "busybox:1.36", SourceLocation("deploy/cron.yaml", 12), PLATS),
        Target(ODD, "x", "odd:1", SourceLocation(None, None), PLATS),
        Target(OK, "main", "ok:1", SourceLocation("deploy/ok.yaml", 9), PLATS),
    ]
    return CheckRun(report=report, platforms=[Platform.parse(p) for p in PLATS],
                    input_errors=[ManifestError("mapping values are not allowed here", source="deploy/bad.yaml",
                                                line=4)],
                    files=4, targets=targets)


@pytest.fixture
def run() -> CheckRun:
    return sample_run()


@pytest.fixture
def repo(tmp_path: Path, dead_port: int, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git-like repository with manifests in k8s/, the working directory at its root."""
    assert find_config(tmp_path) is None, "a stray .canrun.yaml above the test directory would leak in"
    host = f"127.0.0.1:{dead_port}"
    (tmp_path / ".git").mkdir()
    k8s = tmp_path / "k8s"
    k8s.mkdir()
    (k8s / "deploy.yaml").write_text(DEPLOY.format(host=host))
    (k8s / "pod.json").write_text(json.dumps(POD, indent=2).replace("{host}", host))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return tmp_path
