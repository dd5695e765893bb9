"""``canrun check -f .`` on a repository as people keep them: a Helm chart, kustomize patches, CI files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.ci.cli_support import check

HELM_CHART = Path(__file__).resolve().parents[1] / "kube" / "data" / "helm" / "ingress-nginx"


@pytest.fixture
def ordinary(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``repo``'s k8s/ plus a chart, a workflow, a JSON patch and a schema; no helm on PATH."""
    shutil.copytree(HELM_CHART, repo / "charts" / "ingress-nginx")
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yml").write_text("on: push\njobs:\n  test: {runs-on: ubuntu-latest}\n")
    (repo / "action.yml").write_text("name: thing\nruns:\n  using: composite\n  steps: []\n")
    (repo / "k8s" / "replicas.yaml").write_text("- op: replace\n  path: /spec/replicas\n  value: 3\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "schema.json").write_text('{"type": "object"}')
    monkeypatch.setenv("PATH", str(repo / "no-tools"))
    return repo


def test_a_repository_with_a_chart_and_ci_files_is_checked(ordinary: Path) -> None:
    r = check("-f", ".", "--platform", "linux/amd64")
    assert r.code == 0, r.out + r.err
    assert "3 files without Kubernetes objects skipped" in r.summary
    assert "1 directory not rendered" in r.summary
    assert "not checked ./charts/ingress-nginx: a Helm chart, but helm is not on PATH" in r.out
    assert "skipped ./action.yml" not in r.out  # listed only with -v
    verbose = check("-f", ".", "--platform", "linux/amd64", "-v")
    for name in ("./action.yml", "./docs/schema.json", "./k8s/replicas.yaml"):
        assert f"skipped {name}:1: " in verbose.out


def test_exclude_flag_and_config_file(ordinary: Path) -> None:
    r = check("-f", ".", "--platform", "linux/amd64", "--exclude", "docs", "--exclude", "charts/*")
    assert r.code == 0 and "2 files without Kubernetes objects skipped" in r.summary
    assert "not rendered" not in r.summary
    (ordinary / ".canrun.yaml").write_text("exclude:\n  - k8s/replicas.yaml\n  - action.yml\n")
    r = check("-f", ".", "--platform", "linux/amd64", "--exclude", "docs")
    assert r.code == 0 and "skipped" not in r.summary and "1 directory not rendered" in r.summary
    (ordinary / ".canrun.yaml").write_text("exclude: [\"\"]\n")
    r = check("-f", ".", "--platform", "linux/amd64")
    assert r.code == 2 and "exclude[0]" in r.err


def test_a_file_named_explicitly_must_hold_objects(ordinary: Path) -> None:
    r = check("-f", "action.yml", "--platform", "linux/amd64")
    assert r.code == 2 and "not a Kubernetes object" in r.err


def test_the_actions_default_input_on_a_repository_with_a_helm_chart(ordinary: Path, dead_port: int) -> None:
    """action.yml's check step, its default inputs, the real canrun and a helm that prints a captured rendering."""
    import json
    import subprocess
    import sys

    from tests.ci.test_action import ACTION, _step

    tools = ordinary / "tools"
    tools.mkdir()
    captured = HELM_CHART.parent / "ingress-nginx-3.10.1.yaml"
    (tools / "helm").write_text(f"#!/bin/sh\nsed -e 's#k8s.gcr.io#127.0.0.1:{dead_port}#' "
                                f"-e 's#docker.io#127.0.0.1:{dead_port}#' '{captured}'\n")
    (tools / "helm").chmod(0o755)
    (tools / "canrun").write_text(f"#!/bin/sh\nexec '{sys.executable}' -m canrun \"$@\"\n")
    (tools / "canrun").chmod(0o755)
    step = _step("check")
    env = {"PATH": f"{tools}:/usr/bin:/bin", "GITHUB_OUTPUT": str(ordinary / "github_output"),
           "HOME": str(ordinary), "CANRUN_CACHE_DIR": str(ordinary / "cache")}
    defaults = {name: str(spec.get("default", "")) for name, spec in ACTION["inputs"].items()}
    for var, expr in step["env"].items():
        env[var] = defaults[expr.removeprefix("${{ inputs.").removesuffix(" }}")]
    proc = subprocess.run(["bash", "-e", "-c", step["run"]], env=env,
                          cwd=ordinary, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exit-code=0" in (ordinary / "github_output").read_text()
    sarif = json.loads((ordinary / "canrun.sarif").read_text())
    places = {(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
               r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in sarif["runs"][0]["results"]}
    assert ("charts/ingress-nginx/templates/controller-deployment.yaml", 3) in places
    assert ("charts/ingress-nginx/templates/admission-webhooks/job-patch/job-createSecret.yaml", 10) in places
    assert "::warning file=charts/ingress-nginx/templates/controller-deployment.yaml,line=3" in proc.stdout


def test_every_format_says_what_was_not_checked(ordinary: Path) -> None:
    import json

    args = ("-f", ".", "--platform", "linux/amd64")
    doc = json.loads(check(*args, "--format", "json").out)
    assert [e["file"] for e in doc["not_checked"]] == ["./charts/ingress-nginx"]
    assert sorted(e["file"] for e in doc["not_objects"]) == ["./action.yml", "./docs/schema.json",
                                                             "./k8s/replicas.yaml"]
    assert doc["summary"]["not_checked"] == 1 and doc["summary"]["not_objects"] == 3
    sarif = json.loads(check(*args, "--format", "sarif").out)
    notes = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert [(n["level"], "helm is not on PATH" in n["message"]["text"]) for n in notes] == [("warning", True)]
    github = check(*args, "--format", "github").out
    assert "::warning file=charts/ingress-nginx,title=canrun%3A not checked::" in github
    assert "**Not checked**" in check(*args, "--format", "markdown").out
