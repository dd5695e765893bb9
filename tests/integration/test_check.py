"""``canrun check`` end to end: real manifests, the real CLI, images in a real registry.

One run over every broken workload and one over their clean counterparts serve
most tests (a CLI run reads the images once); the tests then ask what a user
would: is each breakage reported where it is, with the rule, severity and
platform the runtime would fail with — and is the fixed version silent?
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from canrun.findings import RULES
from tests.integration.conftest import BOTH, Run, canrun, problems
from tests.integration.workloads import BAD, CLEAN, Case, render
from tests.support.images import Catalogue

pytestmark = pytest.mark.registry

FINDING_KEYS = {"rule", "severity", "resource", "container", "image", "digest", "platform", "message", "hint"}


def _check(manifest: Path, *extra: str, cache: Path, fmt: str = "json") -> Run:
    return canrun("check", "-f", str(manifest), "--format", fmt, "--platform", BOTH, *extra, cache_dir=cache)


@pytest.fixture(scope="module")
def bad(catalogue: Catalogue, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    work = tmp_path_factory.mktemp("bad")
    manifest = work / "broken.yaml"
    manifest.write_text(render(BAD, catalogue))
    return manifest, _check(manifest, cache=work / "cache")


@pytest.fixture(scope="module")
def clean(catalogue: Catalogue, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    work = tmp_path_factory.mktemp("clean")
    manifest = work / "fixed.yaml"
    manifest.write_text(render(CLEAN, catalogue))
    return manifest, _check(manifest, cache=work / "cache")


def _platforms(f: dict[str, object]) -> set[str]:
    return set(str(f["platform"] or "").split(","))


@pytest.mark.parametrize("case", BAD, ids=lambda c: f"{c.name}:{c.expect[0].rule}")
def test_each_breakage_is_reported_on_its_workload(bad: tuple[Path, Run], case: Case) -> None:
    _, run = bad
    found = [f for f in problems(run.by_name(case.name)) if f["resource"]["kind"] == case.kind]
    for exp in case.expect:
        hits = [f for f in found if f["rule"] == exp.rule and f["container"] == exp.container]
        assert hits, f"{case.name}: no {exp.rule} for container {exp.container}; got {found}\n{run}"
        hit = hits[0]
        assert hit["severity"] == exp.severity, hit
        assert hit["resource"] == {"kind": case.kind, "namespace": case.namespace, "name": case.name}
        assert set(exp.platforms) <= _platforms(hit), hit
        assert hit["message"] and hit["hint"], hit
    # nothing else is wrong with it: one breakage, one finding (per rule)
    assert {f["rule"] for f in found} == {e.rule for e in case.expect}, found


def test_every_rule_fires_and_the_run_fails(bad: tuple[Path, Run]) -> None:
    _, run = bad
    assert run.code == 1, run
    fired = {f["rule"] for f in run.findings}
    # internal-error needs a bug of canrun's: tests/ci/test_internal_error.py injects one
    expected = {r for r in RULES if r not in ("not-verified", "internal-error")}
    assert expected <= fired, f"rules that never fired: {expected - fired}"


@pytest.mark.parametrize("case", CLEAN, ids=lambda c: c.name)
def test_fixed_workloads_are_silent(clean: tuple[Path, Run], case: Case) -> None:
    _, run = clean
    assert problems(run.by_name(case.name)) == [], run


def test_clean_run_exits_zero_and_counts_everything(clean: tuple[Path, Run]) -> None:
    _, run = clean
    assert run.code == 0, run
    summary = run.json["summary"]
    assert summary["errors"] == 0 and summary["warnings"] == 0
    assert summary["workloads"] == len(CLEAN)
    assert summary["platforms"] == ["linux/amd64", "linux/arm64"]
    assert summary["input_errors"] == 0


def test_json_contract(bad: tuple[Path, Run], catalogue: Catalogue) -> None:
    manifest, run = bad
    doc = run.json
    assert set(doc) >= {"findings", "summary"}
    for f in doc["findings"]:
        assert FINDING_KEYS <= set(f), f
        assert f["severity"] in ("error", "warning", "info")
        assert set(f["resource"]) == {"kind", "namespace", "name"}
        assert f["rule"] in RULES
        if "location" in f:
            assert f["location"]["file"].endswith(manifest.name) and f["location"]["line"] >= 1
    summary = doc["summary"]
    assert summary["errors"] == sum(f["severity"] == "error" for f in doc["findings"])
    assert summary["warnings"] == sum(f["severity"] == "warning" for f in doc["findings"])
    assert summary["workloads"] == len(BAD)
    # the digest is the manifest the node would pull: a single-manifest image's own digest ...
    [mode644] = [f for f in doc["findings"] if f["resource"]["name"] == "reports"]
    assert mode644["digest"] == catalogue["mode644"].digest
    assert mode644["image"] == catalogue.ref("mode644")
    # ... and for an index, the platform's entry, not the index
    [edge] = [f for f in doc["findings"] if f["resource"]["name"] == "edge-proxy"]
    assert edge["digest"] and edge["digest"].startswith("sha256:") and edge["digest"] != catalogue["mislabeled"].digest


def test_findings_point_at_the_line_of_the_workload(bad: tuple[Path, Run]) -> None:
    manifest, run = bad
    lines = manifest.read_text().splitlines()
    located = [f for f in run.findings if "location" in f]
    assert located, "no finding carries a file:line"
    for f in located:
        window = "\n".join(lines[f["location"]["line"] - 1: f["location"]["line"] + 40])
        assert f["resource"]["name"] in window or (f["container"] or "") in window, f


def test_text_report_is_one_line_per_finding_with_its_fix(bad: tuple[Path, Run], tmp_path: Path) -> None:
    manifest, json_run = bad
    run = _check(manifest, cache=tmp_path / "cache", fmt="text")
    assert run.code == 1, run
    lines = run.stdout.rstrip("\n").splitlines()
    finding_lines = [i for i, line in enumerate(lines) if re.match(r"^\s+(ERROR|WARNING)\s", line)]
    assert len(finding_lines) == len(problems(json_run.findings)), run
    for i in finding_lines:
        assert lines[i + 1].strip().startswith("fix: "), lines[i: i + 2]
    assert re.match(r"^\d+ errors?, \d+ warnings? in \d+ workloads?, \d+ images? checked", lines[-1]), lines[-1]
    assert "\033[" not in run.stdout  # not a terminal: no colour
    for rule in ("platform-missing", "loader-not-found", "interpreter-not-found"):
        assert rule in run.stdout


def test_unreadable_images_are_warnings_unless_strict(catalogue: Catalogue, tmp_path: Path) -> None:
    manifest = tmp_path / "gone.yaml"
    manifest.write_text(render([c for c in BAD if c.name in ("legacy", "typo")], catalogue))
    lenient = _check(manifest, cache=tmp_path / "c1")
    assert lenient.code == 0, lenient
    assert {(f["rule"], f["severity"]) for f in lenient.findings} == {("image-unresolvable", "warning")}
    assert {f["resource"]["name"] for f in lenient.findings} == {"legacy", "typo"}
    strict = _check(manifest, "--strict", cache=tmp_path / "c2")
    assert strict.code == 1, strict
    assert {(f["rule"], f["severity"]) for f in strict.findings} == {("image-unresolvable", "error")}


def test_a_corrupted_layer_is_an_error(catalogue: Catalogue, tmp_path: Path) -> None:
    manifest = tmp_path / "damaged.yaml"
    manifest.write_text(render([c for c in BAD if c.name == "damaged"], catalogue))
    run = _check(manifest, cache=tmp_path / "cache")
    assert run.code == 1, run
    [f] = run.findings
    assert f["rule"] == "image-corrupt" and f["severity"] == "error", f
    assert catalogue["corrupt"].layers[-1] in f["message"] or "digest" in f["message"].lower(), f


def test_runtime_decides_a_root_only_binary_for_uid_1000(catalogue: Catalogue, tmp_path: Path) -> None:
    """containerd keeps CAP_DAC_OVERRIDE for uid 1000 (exec works), Docker clears it (exit 126)."""
    manifest = tmp_path / "mode700.yaml"
    manifest.write_text(f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: billing, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: billing}}}}
  template:
    metadata: {{labels: {{app: billing}}}}
    spec:
      nodeSelector: {{kubernetes.io/arch: amd64}}
      securityContext: {{runAsUser: 1000}}
      containers:
      - name: billing
        image: {catalogue.ref("mode700")}
""")
    containerd = _check(manifest, cache=tmp_path / "cache")
    assert containerd.code == 0, containerd
    assert not [f for f in containerd.findings if f["severity"] == "error"], containerd
    docker = _check(manifest, "--runtime", "docker", cache=tmp_path / "cache")
    assert docker.code == 1, docker
    assert [f["rule"] for f in docker.findings if f["severity"] == "error"] == ["command-not-executable"], docker


def test_stdin_manifest(catalogue: Catalogue, tmp_path: Path) -> None:
    """``helm template … | canrun check -f -``"""
    text = render([c for c in BAD if c.name in ("lister", "idle")], catalogue)
    run = canrun("check", "-f", "-", "--format", "json", "--platform", "linux/amd64", stdin=text,
                 cache_dir=tmp_path / "cache")
    assert run.code == 1, run
    assert {(f["resource"]["name"], f["rule"]) for f in problems(run.findings)} == {
        ("lister", "loader-not-found"), ("idle", "no-command")}


def test_directory_of_manifests_with_a_broken_file_exits_2(catalogue: Catalogue, tmp_path: Path) -> None:
    tree = tmp_path / "deploy"
    (tree / "apps").mkdir(parents=True)
    (tree / "apps" / "web.yaml").write_text(render([c for c in CLEAN if c.name == "storefront"], catalogue))
    (tree / "apps" / "broken.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x\n  spec: [\n")
    (tree / "README.md").write_text("not a manifest\n")
    run = canrun("check", "-f", str(tree), "--format", "json", "--platform", BOTH, cache_dir=tmp_path / "cache")
    assert run.code == 2, run
    assert "broken.yaml" in run.stderr, run
    assert [e["file"] for e in run.json["input_errors"] if e["file"]] and all(
        "broken.yaml" in e["file"] for e in run.json["input_errors"]), run.json["input_errors"]
    # what could be read was still judged
    assert run.json["summary"]["workloads"] == 1
    assert problems(run.findings) == []


def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    missing = canrun("check", "-f", str(tmp_path / "nope.yaml"))
    assert missing.code == 2 and "nope.yaml" in missing.stderr and "Traceback" not in missing.stderr, missing
    assert len(missing.stderr.strip().splitlines()) == 1
    bad_platform = canrun("check", "-f", str(tmp_path), "--platform", "linux")
    assert bad_platform.code == 2 and "Traceback" not in bad_platform.stderr, bad_platform
