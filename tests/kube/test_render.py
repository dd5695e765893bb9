"""Repositories as they are: kustomizations and Helm charts rendered by their tools, other YAML passed over.

The kustomize tests run the real tool (``kustomize build`` or ``kubectl kustomize``,
whichever is on PATH) and are skipped with the reason when neither is.  helm is
not a Debian package: the real-tool test is skipped without it, and the
``# Source:`` mapping is tested on a captured rendering (tests/kube/data/helm).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from canrun.kube import render
from canrun.kube.manifests import load_objects
from canrun.kube.workloads import workloads_from_load

DATA = Path(__file__).parent / "data"
HELM_DATA = DATA / "helm"
REPO = Path(__file__).resolve().parents[2]

needs_kustomize = pytest.mark.skipif(not (shutil.which("kustomize") or shutil.which("kubectl")),
                                     reason="neither kustomize nor kubectl is on PATH")
needs_helm = pytest.mark.skipif(not shutil.which("helm"), reason="helm is not on PATH (not a Debian package)")

BASE_DEPLOY = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
        - name: main
          image: registry.example/web:1
"""
#: line of "- name: main" above, and of the Deployment's document
MAIN_LINE, DEPLOY_LINE = 14, 6

PATCH = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
        - name: sidecar
          image: registry.example/proxy:2
"""


def kustomize_tree(root: Path) -> Path:
    """base/ with a Deployment, overlay/ that renames it and patches in a sidecar, a Component beside them."""
    (root / "base").mkdir(parents=True)
    (root / "base" / "kustomization.yaml").write_text("resources: [deploy.yaml]\n")
    (root / "base" / "deploy.yaml").write_text(BASE_DEPLOY)
    (root / "overlay").mkdir()
    (root / "overlay" / "kustomization.yaml").write_text(
        "resources: [../base]\nnamePrefix: prod-\npatches:\n  - path: patches/sidecar.yaml\n")
    (root / "overlay" / "patches").mkdir()
    (root / "overlay" / "patches" / "sidecar.yaml").write_text(PATCH)
    (root / "overlay" / "patches" / "ops.yaml").write_text("- op: add\n  path: /spec/replicas\n  value: 2\n")
    (root / "component").mkdir()
    (root / "component" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\npatches:\n  - path: p.yaml\n")
    (root / "component" / "p.yaml").write_text("- op: add\n  path: /spec/paused\n  value: true\n")
    return root


def containers_by_name(workloads: list) -> dict[tuple[str, str], object]:  # type: ignore[type-arg]
    return {(w.resource.name, c.name): c for w in workloads for c in w.pod.containers}


@needs_kustomize
def test_kustomizations_are_rendered_and_findings_point_at_the_resource_file(tmp_path: Path) -> None:
    root = kustomize_tree(tmp_path / "repo")
    loaded = load_objects([str(root)])
    assert loaded.errors == [] and loaded.not_objects == [] and loaded.not_checked == []
    result = workloads_from_load(loaded)
    by_name = containers_by_name(result.workloads)
    base_file = str(root / "base" / "deploy.yaml")
    # the base on its own, and through the overlay (renamed, with the patch's sidecar)
    assert set(by_name) == {("web", "main"), ("prod-web", "main"), ("prod-web", "sidecar")}
    for name in ("web", "prod-web"):
        main = by_name[(name, "main")]
        assert (main.source.file, main.source.line) == (base_file, MAIN_LINE)  # type: ignore[attr-defined]
    # what the patch added has no line of its own in the base: it points into the containers list
    sidecar = by_name[("prod-web", "sidecar")]
    assert sidecar.source.file == base_file and 0 < sidecar.source.line <= MAIN_LINE  # type: ignore[attr-defined]
    for w in result.workloads:
        assert (w.source.file, w.source.line) == (base_file, DEPLOY_LINE)
        assert render.ORIGIN_ANNOTATION not in w.annotations  # canrun's own request, not the author's
    assert result.skipped == {"ConfigMap": 2}  # settings and prod-settings; the Component alone renders nothing


@needs_kustomize
def test_identical_renderings_of_one_base_are_judged_once(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "base").mkdir(parents=True)
    (root / "base" / "kustomization.yaml").write_text("resources: [deploy.yaml]\n")
    (root / "base" / "deploy.yaml").write_text(BASE_DEPLOY)
    (root / "overlay").mkdir()
    (root / "overlay" / "kustomization.yaml").write_text("resources: [../base]\n")
    loaded = load_objects([str(root)])
    assert [o.obj["kind"] for o in loaded.objects] == ["ConfigMap", "Deployment"]


@needs_kustomize
def test_canruns_own_manifests_are_read_without_errors() -> None:
    loaded = load_objects([str(REPO / "manifests")])
    assert loaded.errors == [] and loaded.not_objects == []
    result = workloads_from_load(loaded)
    files = {Path(w.source.file or "").relative_to(REPO).as_posix() for w in result.workloads}
    assert files == {"manifests/base/deployment.yaml", "manifests/overlays/audit-cronjob/cronjob.yaml"}
    cronjob = next(w for w in result.workloads if w.resource.kind == "CronJob")
    text = (REPO / "manifests/overlays/audit-cronjob/cronjob.yaml").read_text().splitlines()
    (container,) = cronjob.pod.containers
    assert text[container.source.line - 1].strip() == f"- name: {container.name}"


def test_without_kustomize_or_kubectl_the_directory_is_named_as_not_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = kustomize_tree(tmp_path / "repo")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    loaded = load_objects([str(root)])
    assert loaded.errors == [] and loaded.objects == []
    messages = sorted(str(e) for e in loaded.not_checked)
    assert len(messages) == 2  # base and overlay; the Component is only built through what uses it
    assert all("neither kustomize nor kubectl is on PATH" in m for m in messages)
    assert messages[0].startswith(str(root / "base"))


@needs_kustomize
def test_a_broken_kustomization_is_an_error_with_the_tools_reason(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    loaded = load_objects([str(root)])
    (error,) = loaded.errors
    assert str(error).startswith(f"{root}: ") and "failed" in str(error) and "missing.yaml" in str(error)


def test_helm_source_comments_place_objects_in_their_templates() -> None:
    chart = str(HELM_DATA / "ingress-nginx")
    rendered = render.helm_output((HELM_DATA / "ingress-nginx-3.10.1.yaml").read_text(), chart)
    assert rendered.errors == []
    placed = [(root["kind"], Path(file).relative_to(chart).as_posix(), line) for root, file, line in rendered.documents]
    assert placed == [
        ("ServiceAccount", "templates/admission-webhooks/job-patch/serviceaccount.yaml", 2),
        ("Deployment", "templates/controller-deployment.yaml", 3),
        ("Job", "templates/admission-webhooks/job-patch/job-createSecret.yaml", 3),
    ]


def test_helm_containers_point_at_a_literal_name_else_at_the_object(tmp_path: Path) -> None:
    chart = str(HELM_DATA / "ingress-nginx")
    rendered = render.helm_output((HELM_DATA / "ingress-nginx-3.10.1.yaml").read_text(), chart)
    objects = tmp_path / "objects"
    from canrun.kube.manifests import Loaded, LoadedObject
    from canrun.spec import SourceLocation
    loaded = Loaded(objects=[LoadedObject(root, SourceLocation(file, line)) for root, file, line in rendered.documents])
    result = workloads_from_load(loaded)
    by_name = containers_by_name(result.workloads)
    controller = by_name[("ingress-nginx-controller", "controller")]
    create = by_name[("ingress-nginx-admission-create", "create")]
    # "- name: {{ .Values.controller.containerName }}" is no literal: the Deployment's own line
    assert controller.source.line == 3  # type: ignore[attr-defined]
    assert create.source.line == 10  # type: ignore[attr-defined]
    assert not objects.exists()


@needs_helm
def test_a_chart_is_rendered_with_helm(tmp_path: Path) -> None:
    chart = tmp_path / "ingress-nginx"
    shutil.copytree(HELM_DATA / "ingress-nginx", chart)
    loaded = load_objects([str(tmp_path)])
    assert loaded.errors == [] and loaded.not_checked == []
    result = workloads_from_load(loaded)
    where = {(w.resource.kind, Path(w.source.file or "").relative_to(chart).as_posix(), w.source.line)
             for w in result.workloads}
    assert where == {("Deployment", "templates/controller-deployment.yaml", 3),
                     ("Job", "templates/admission-webhooks/job-patch/job-createSecret.yaml", 3)}


def test_without_helm_a_chart_is_named_as_not_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(HELM_DATA / "ingress-nginx", tmp_path / "chart")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    loaded = load_objects([str(tmp_path)])
    # Chart.yaml, values.yaml and the templates are the chart's: none of them is read as a manifest
    assert loaded.errors == [] and loaded.objects == [] and loaded.not_objects == []
    (note,) = loaded.not_checked
    assert str(note).startswith(f"{tmp_path / 'chart'}: ") and "helm is not on PATH" in str(note)
    assert "helm template" in str(note)


def test_yaml_that_is_no_kubernetes_object_is_passed_over_in_a_directory(tmp_path: Path) -> None:
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "ci.yaml").write_text("on: push\njobs: {}\n")
    (tmp_path / "action.yml").write_text("name: x\nruns:\n  using: composite\n")
    (tmp_path / "ops.yaml").write_text("- op: replace\n  path: /spec/replicas\n  value: 3\n")
    (tmp_path / "schema.json").write_text('{"$schema": "http://json-schema.org/draft-07/schema#"}')
    (tmp_path / "list.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {name: p}\n"
        "    spec:\n      containers:\n        - name: c\n          image: registry.example/c:1\n")
    (tmp_path / "broken.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec:\n  containers: 3\n")
    loaded = load_objects([str(tmp_path)])
    skipped = sorted((Path(e.source or "").name, e.line) for e in loaded.not_objects)
    assert skipped == [("action.yml", 1), ("ops.yaml", 1), ("schema.json", 1)]  # .github is hidden: not read
    result = workloads_from_load(loaded)
    assert [w.resource.name for w in result.workloads] == ["p"]  # a List is read as its items
    # an object with a kind but a broken shape is still an error
    assert [Path(e.source or "").name for e in result.errors] == ["broken.yaml"]


def test_a_file_named_on_the_command_line_must_hold_objects(tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text("replicas: 3\n")
    loaded = load_objects([str(tmp_path / "values.yaml")])
    assert loaded.not_objects == []
    (error,) = loaded.errors
    assert "not a Kubernetes object" in str(error)


def test_exclude_globs_match_relative_paths_and_names(tmp_path: Path) -> None:
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}}}\nspec:\n  containers:\n    - {{name: c, image: i}}\n"
    for rel in ("k8s/app.yaml", "k8s/gen.json", "tests/data/fixture.yaml", "charts/x/ci/test.yaml", "top.yaml"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pod.format(path.stem.replace(".", "-")))

    def names(*exclude: str) -> list[str]:
        return sorted(o.obj["metadata"]["name"] for o in load_objects([str(tmp_path)], exclude=exclude).objects)

    assert names() == ["app", "fixture", "gen", "test", "top"]
    assert names("tests/data") == ["app", "gen", "test", "top"]
    assert names("tests/**", "*.json") == ["app", "test", "top"]
    assert names("./charts/*/ci/", "top.yaml") == ["app", "fixture", "gen"]
    assert render.kustomization_file(str(tmp_path)) is None


def test_the_renderer_has_a_time_and_size_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool that never stops writing is cut at the byte limit; one that hangs at the time limit."""
    import time

    from canrun.errors import ManifestError
    from canrun.kube.yamldoc import ManifestLimits

    tool = tmp_path / "bin" / "helm"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\nexec yes aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n")
    tool.chmod(0o755)
    shutil.copytree(HELM_DATA / "ingress-nginx", tmp_path / "chart")
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}/usr/bin:/bin")
    started = time.monotonic()
    with pytest.raises(ManifestError, match="wrote more than 1048576 bytes; refused"):
        render.render_chart(str(tmp_path / "chart"), limits=ManifestLimits(max_file_bytes=1 << 20))
    assert time.monotonic() - started < 10
    hung = tmp_path / "hung"
    hung.write_text("#!/bin/sh\nsleep 60 &\nsleep 60\n")
    hung.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(ManifestError, match="took longer than 1s; stopped"):
        render._run([str(hung)], cwd=None, limits=ManifestLimits(), what="hung", source="x", timeout=1)
    assert time.monotonic() - started < 10


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not on PATH")
def test_a_kustomize_without_build_metadata_still_builds_and_names_the_kustomization(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old kustomize refuses buildMetadata (it came in v4.5): the directory is built as it is."""
    tool = tmp_path / "bin" / "kustomize"
    tool.parent.mkdir()
    tool.write_text('#!/bin/sh\n[ "$1" = build ] || exit 2\nif grep -qs buildMetadata "$2/kustomization.yaml"; then\n'
                    '  echo "Error: json: unknown field \\"buildMetadata\\"" >&2; exit 1\nfi\n'
                    f'exec {shutil.which("kubectl")} kustomize "$2"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}/usr/bin:/bin")
    root = kustomize_tree(tmp_path / "repo")
    loaded = load_objects([str(root / "base")])
    assert loaded.errors == []
    places = {(o.obj["kind"], o.source.file, o.source.line) for o in loaded.objects}
    assert places == {("ConfigMap", str(root / "base" / "kustomization.yaml"), None),
                      ("Deployment", str(root / "base" / "kustomization.yaml"), None)}
