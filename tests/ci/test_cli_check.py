"""``canrun check`` on real files, end to end through the CLI, every format read back by its consumer.

Images live on a loopback port that refuses connections (``dead_port``), which gives deterministic
``image-unresolvable`` findings at real file/line locations without a registry; the tests that need a real
registry (mirrors) are marked ``registry``.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from canrun import cli
from tests.ci.cli_support import APP_LINE, JOB_LINE, SIDECAR_LINE, check

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())

def _by_container(findings: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {f["container"]: f for f in findings}


# -- formats ------------------------------------------------------------------------------------------------


def test_text_on_a_directory(repo: Path) -> None:
    r = check("-f", "k8s")
    assert r.code == 0
    lines = r.out.splitlines()
    assert "k8s/deploy.yaml" in lines and "  Deployment shop/web" in lines and "  CronJob shop/nightly" in lines
    assert any(line.startswith(f'    k8s/deploy.yaml:{APP_LINE} container "app"') for line in lines)
    assert any(line.startswith(f'    k8s/deploy.yaml:{JOB_LINE} container "job"') for line in lines)
    assert "\033[" not in r.out  # not a terminal
    assert r.summary == ("0 errors, 4 warnings in 3 workloads, 4 images checked "
                         "(platforms: linux/amd64 — the default; pass --platform or --kubeconfig)")


def test_sarif_to_a_file_with_the_text_report_on_the_terminal(repo: Path) -> None:
    (repo / "k8s" / "sub").mkdir()
    r = check("-f", "k8s", "--format", "sarif", "--output", "out.sarif", "--platform", "linux/amd64,linux/arm64")
    assert r.code == 0
    assert r.summary.startswith("0 errors, 4 warnings in 3 workloads")
    assert "wrote the sarif report to out.sarif" in r.err
    doc = json.loads((repo / "out.sarif").read_text())
    assert not list(jsonschema.Draft4Validator(SCHEMA).iter_errors(doc))
    results = doc["runs"][0]["results"]
    where = {(res["properties"]["container"]): res["locations"][0]["physicalLocation"] for res in results}
    assert where["app"] == {"artifactLocation": {"uri": "k8s/deploy.yaml", "uriBaseId": "%SRCROOT%"},
                            "region": {"startLine": APP_LINE}}
    assert where["sidecar"]["region"]["startLine"] == SIDECAR_LINE
    assert where["job"]["region"]["startLine"] == JOB_LINE
    assert where["shell"]["artifactLocation"]["uri"] == "k8s/pod.json"
    assert {res["ruleId"] for res in results} == {"image-unresolvable"}
    assert doc["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"] == repo.as_uri() + "/"


def test_sarif_paths_are_relative_to_the_repository_root_from_a_subdirectory(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo / "k8s")
    r = check("-f", "deploy.yaml", "--format", "sarif")
    uris = {res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for res in json.loads(r.out)["runs"][0]["results"]}
    assert uris == {"k8s/deploy.yaml"}


def test_github_annotations(repo: Path) -> None:
    r = check("-f", "k8s/deploy.yaml", "--format", "github")
    assert r.code == 0
    commands = [line for line in r.out.splitlines() if line.startswith("::")]
    assert len(commands) == 3
    assert commands[0].startswith(f"::warning file=k8s/deploy.yaml,line={APP_LINE},"
                                  "title=canrun image-unresolvable::Deployment shop/web, container \"app\"")
    assert r.summary.startswith("0 errors, 3 warnings")


def test_junit_counts_containers_times_platforms(repo: Path, tmp_path: Path) -> None:
    r = check("-f", "k8s", "--format", "junit", "--strict", "--platform", "linux/amd64,linux/arm64")
    assert r.code == 1
    root = ET.fromstring(r.out)
    cases = root.findall(".//testcase")
    assert len(cases) == 8  # 4 containers x 2 platforms
    assert root.get("tests") == "8"
    names = {c.get("name") for c in cases}
    assert "Deployment/shop/web/app@linux/arm64" in names and "Pod/shop/debug/shell@linux/amd64" in names
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"k8s/deploy.yaml", "k8s/pod.json"}
    failure = suites["k8s/deploy.yaml"].find("testcase/failure")
    assert failure is not None and failure.get("type") == "image-unresolvable"


def test_junit_an_unreadable_image_fails_on_every_platform(repo: Path) -> None:
    r = check("-f", "k8s/pod.json", "--format", "junit", "--strict", "--platform", "linux/amd64,linux/arm64")
    root = ET.fromstring(r.out)
    assert (root.get("tests"), root.get("failures")) == ("2", "2")


def test_junit_without_strict_skips_unreadable_images(repo: Path) -> None:
    r = check("-f", "k8s/pod.json", "--format", "junit")
    root = ET.fromstring(r.out)
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("1", "0", "1")


def test_markdown_comment(repo: Path) -> None:
    r = check("-f", "k8s", "--format", "markdown", "--strict")
    assert r.code == 1
    assert r.out.startswith("<!-- canrun-check -->\n### ❌ canrun check: 4 errors, 0 warnings in 3 workloads")
    assert f"<code>k8s/deploy.yaml:{APP_LINE}</code>" in r.out
    assert r.out.count("<details>") == 4


def test_json_locations(repo: Path) -> None:
    r = check("-f", "k8s", "--format", "json")
    doc = json.loads(r.out)
    loc = _by_container(doc["findings"])
    assert loc["sidecar"]["location"] == {"file": "k8s/deploy.yaml", "line": SIDECAR_LINE}
    assert doc["summary"]["platforms_defaulted"] is True


def test_stdin(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = (repo / "k8s" / "deploy.yaml").read_text()
    r = check("-f", "-", stdin=manifest, monkeypatch=monkeypatch)
    assert f'<stdin>:{APP_LINE} container "app"' in r.out
    r = check("-f", "-", "--format", "sarif", stdin=manifest, monkeypatch=monkeypatch)
    results = json.loads(r.out)["runs"][0]["results"]
    assert len(results) == 3
    assert all("physicalLocation" not in res["locations"][0] for res in results)
    assert results[0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "Deployment/shop/web/app"


def test_positional_paths_like_pre_commit_passes_them(repo: Path) -> None:
    r = check("k8s/deploy.yaml", "k8s/pod.json")
    assert r.code == 0 and "3 workloads" in r.summary


def test_no_paths_at_all_is_a_usage_error(repo: Path) -> None:
    r = check()
    assert r.code == 2 and "-f/--filename" in r.err


def test_unreadable_documents_exit_2_and_are_reported(repo: Path) -> None:
    (repo / "k8s" / "broken.yaml").write_text("kind: Pod\nmetadata: {name: x\n")
    r = check("-f", "k8s", "--format", "junit")
    assert r.code == 2
    root = ET.fromstring(r.out)
    assert root.get("errors") == "1"
    error = root.find(".//testsuite[@name='k8s/broken.yaml']/testcase/error")
    assert error is not None
    assert "could not be read" in r.err


def test_output_to_an_unwritable_place_is_one_line(repo: Path) -> None:
    r = check("-f", "k8s/pod.json", "--format", "sarif", "--output", "no/such/dir/out.sarif")
    assert r.code == 2
    assert r.err.strip().startswith("canrun: no/such/dir/out.sarif: cannot write the report")
    assert len(r.err.strip().splitlines()) == 1
    assert not (repo / "no").exists()


def test_output_dash_means_stdout(repo: Path) -> None:
    r = check("-f", "k8s/pod.json", "--format", "junit", "--output", "-")
    assert ET.fromstring(r.out).tag == "testsuites"


# -- .canrun.yaml -------------------------------------------------------------------------------------------


def test_config_is_found_upward(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / ".canrun.yaml").write_text("platforms: [linux/arm64]\n")
    deep = repo / "k8s" / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    r = check("-f", "../../pod.json")
    assert r.summary.endswith("(platforms: linux/arm64)")


def test_config_flag_names_another_file(repo: Path) -> None:
    (repo / ".canrun.yaml").write_text("platforms: [linux/arm64]\n")
    (repo / "ci.yaml").write_text("platforms: [linux/amd64, linux/arm/v7]\n")
    r = check("-f", "k8s/pod.json", "--config", "ci.yaml")
    assert r.summary.endswith("(platforms: linux/amd64, linux/arm/v7)")


def test_missing_config_file_is_a_usage_error(repo: Path) -> None:
    r = check("-f", "k8s/pod.json", "--config", "nope.yaml")
    assert r.code == 2 and "nope.yaml: config file not found" in r.err


@pytest.mark.parametrize("content, message", [
    ("platform: [linux/arm64]\n", "/.canrun.yaml: platform: unknown key (did you mean platforms?)"),
    ("rules:\n  command-nt-found: error\n",
     "/.canrun.yaml: rules.command-nt-found: unknown rule id (did you mean command-not-found?)"),
    ("rules:\n  exec-format: fatal\n", "rules.exec-format: expected one of error, warning, info, off, got 'fatal'"),
    ("registries:\n  insecure: localhost:5000\n", "registries.insecure: expected a valid list"),
    ("runtime: podman\n", "runtime: expected 'containerd', 'cri-o' or 'docker'"),
    ("platforms: [linux/arm/v7/x]\n", "platforms[0]: invalid platform 'linux/arm/v7/x'"),
    ("rules: [\n", "/.canrun.yaml:2: not valid YAML"),
])
def test_invalid_config_is_one_line_naming_file_and_key(repo: Path, content: str, message: str) -> None:
    (repo / ".canrun.yaml").write_text(content)
    r = check("-f", "k8s/pod.json")
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 1
    assert str(repo) in r.err and message in r.err, r.err


def test_rule_severity_override_is_visible_and_decides_the_exit_status(repo: Path) -> None:
    (repo / ".canrun.yaml").write_text("rules:\n  image-unresolvable: error\n")
    r = check("-f", "k8s/pod.json")
    assert r.code == 1
    assert "ERROR   image-unresolvable" in r.out and r.summary.startswith("1 error, 0 warnings")
    (repo / ".canrun.yaml").write_text("rules:\n  image-unresolvable: off\n")
    r = check("-f", "k8s/pod.json", "--format", "json")
    assert r.code == 0 and json.loads(r.out)["findings"] == []


def test_flags_win_over_the_file(repo: Path) -> None:
    (repo / ".canrun.yaml").write_text("platforms: [linux/arm64]\nstrict: true\nruntime: docker\n"
                                       "rules:\n  image-unresolvable: error\n")
    r = check("-f", "k8s/pod.json")
    assert r.code == 1 and r.summary.endswith("(platforms: linux/arm64)")
    r = check("-f", "k8s/pod.json", "--platform", "linux/amd64", "--no-strict")
    assert r.code == 0
    assert r.summary == "0 errors, 1 warning in 1 workload, 1 image checked (platforms: linux/amd64)"


def test_strict_from_the_file(repo: Path) -> None:
    (repo / ".canrun.yaml").write_text("strict: true\n")
    assert check("-f", "k8s/pod.json").code == 1
    assert check("-f", "k8s/pod.json", "--no-strict").code == 0


def test_mirror_is_contacted_instead_of_the_named_registry(repo: Path, dead_port: int) -> None:
    """No network: the named registry cannot resolve, so naming the mirror's port proves the rewrite."""
    (repo / "m.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: m}\nspec:\n  containers:\n"
                                 "    - name: c\n      image: registry.invalid/team/app:1\n")
    (repo / ".canrun.yaml").write_text(f"registries:\n  mirrors:\n    registry.invalid: 127.0.0.1:{dead_port}/cache\n")
    doc = json.loads(check("-f", "m.yaml", "--format", "json").out)
    (f,) = doc["findings"]
    assert f["rule"] == "image-unresolvable" and f"127.0.0.1:{dead_port}" in f["message"]
    assert f["image"] == "registry.invalid/team/app:1"  # findings keep the name the manifest states


@pytest.mark.registry
def test_mirror_serves_the_image(repo: Path, catalogue: object) -> None:
    from canrun.registry.reference import Reference

    ref = Reference.parse(catalogue.ref("whiteout"))  # type: ignore[attr-defined]
    (repo / "m.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: m}\nspec:\n  containers:\n"
        f"    - name: c\n      image: upstream.invalid/{ref.repository}:{ref.tag}\n")
    (repo / ".canrun.yaml").write_text(
        f"registries:\n  insecure: ['{ref.registry}']\n  mirrors:\n    upstream.invalid: {ref.registry}\n")
    r = check("-f", "m.yaml", "--format", "json")
    rules = {f["rule"] for f in json.loads(r.out)["findings"]}
    assert rules == {"command-not-found"}, r.out  # read (through the mirror) and judged
    assert r.code == 1


# -- helm / kustomize ----------------------------------------------------------------------------------------


def test_kustomize_output_through_stdin(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    base = repo / "kustomize"
    base.mkdir()
    (base / "deploy.yaml").write_text((repo / "k8s" / "deploy.yaml").read_text())
    (base / "kustomization.yaml").write_text("resources: [deploy.yaml]\nnamePrefix: prod-\n"
                                             "commonLabels: {env: prod}\n")
    rendered = subprocess.run([kubectl, "kustomize", str(base)], capture_output=True, text=True, timeout=60,
                              check=True).stdout
    r = check("-f", "-", "--format", "json", stdin=rendered, monkeypatch=monkeypatch)
    doc = json.loads(r.out)
    names = {f["resource"]["name"] for f in doc["findings"]}
    assert names == {"prod-web", "prod-nightly"}
    assert doc["summary"]["skipped_objects"] == {"Service": 1}
    for f in doc["findings"]:
        # each line points at the container's own "- name:" item in the rendered stream
        line = rendered.splitlines()[f["location"]["line"] - 1]
        assert line.strip() in (f"- name: {f['container']}", f"- image: {f['image']}"), line


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_on_a_terminal_never_in_the_file_nor_with_NO_COLOR(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _Tty()
    code = cli.main(["check", "--no-cache", "-f", "k8s/pod.json", "--output", "report.txt"], stdout=out,
                    stderr=io.StringIO())
    assert code == 0
    assert "\033[33m" in out.getvalue()
    assert "\033[" not in (repo / "report.txt").read_text()
    monkeypatch.setenv("NO_COLOR", "1")
    out = _Tty()
    cli.main(["check", "--no-cache", "-f", "k8s/pod.json"], stdout=out, stderr=io.StringIO())
    assert "\033[" not in out.getvalue()
