"""The kubernetes/examples repository through ``canrun check``: manifests written by people, not by us.

None of their registries is reachable from CI, so every image must come back
as ``image-unresolvable`` — quickly (no DNS, no retry storm: the subprocess
timeout is the bound) — the template files that are not YAML must each be
named, and the run must exit 2 because of them and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import ROOT, canrun

CORPUS = ROOT / "tests" / "data" / "realworld" / "kubernetes-examples"

WORKLOAD_KINDS = {"Pod", "Deployment", "ReplicaSet", "ReplicationController", "DaemonSet", "StatefulSet", "Job",
                  "CronJob", "PodTemplate"}


def _documents(path: Path) -> list[Any] | None:
    """The file's documents, or None when it is neither YAML nor (for .json) JSON."""
    text = path.read_text()
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        pass
    if path.suffix == ".json":
        try:
            return [json.loads(text)]
        except ValueError:
            pass
    return None


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    if kind == "PodTemplate":
        return (obj.get("template") or {}).get("spec")
    return (spec.get("template") or {}).get("spec")


def _corpus() -> tuple[list[Path], set[str], dict[str, set[str]]]:
    """The manifest files, the ones that do not parse, and the images of each file that does."""
    files = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    unreadable: set[str] = set()
    by_file: dict[str, set[str]] = {}
    for path in files:
        docs = _documents(path)
        if docs is None:
            unreadable.add(str(path.relative_to(CORPUS)))
            continue
        images = by_file.setdefault(str(path.relative_to(CORPUS)), set())
        stack = [d for d in docs if isinstance(d, dict)]
        while stack:
            obj = stack.pop()
            if obj.get("kind") == "List" or obj.get("kind", "").endswith("List"):
                stack += [i for i in obj.get("items") or [] if isinstance(i, dict)]
                continue
            if obj.get("kind") not in WORKLOAD_KINDS:
                continue
            pod = _pod_spec(obj) or {}
            for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
                if isinstance(c, dict) and isinstance(c.get("image"), str):
                    images.add(c["image"])
    return files, unreadable, by_file


def test_kubernetes_examples_finish_and_say_what_they_could_not_read(tmp_path: Path) -> None:
    files, unreadable, by_file = _corpus()
    assert len(files) > 200 and len(set().union(*by_file.values())) > 40  # the corpus is what we think it is
    run = canrun("check", "-f", str(CORPUS), "--format", "json", "--no-cache", "--timeout", "3",
                 "--platform", "linux/amd64,linux/arm64", cache_dir=tmp_path / "cache", timeout=120)
    assert run.code == 2, run
    assert "Traceback" not in run.stderr
    doc = run.json

    # each unparseable template is named; a parseable file is only refused for a stated reason
    # (an unrendered {{ }} template, YAML that is not a Kubernetes object), as kubectl would
    errors = {str(Path(e["file"]).resolve().relative_to(CORPUS.resolve())): e["message"]
              for e in doc["input_errors"] if e["file"]}
    templates = {u for u in unreadable if "template" in u}
    assert templates and templates <= set(errors), f"not named: {templates - set(errors)}"
    for name, message in errors.items():
        assert name in message and (name in unreadable or "template" in message
                                    or "not a Kubernetes object" in message), (name, message)
    images = set().union(*(imgs for name, imgs in by_file.items() if name not in errors))

    # every image, and nothing else: none of these registries is reachable here
    findings = doc["findings"]
    assert {f["rule"] for f in findings if f["severity"] != "info"} == {"image-unresolvable"}
    reported = {f["image"] for f in findings if f["rule"] == "image-unresolvable"}
    assert images <= reported, f"images not reported: {sorted(images - reported)}"
    assert all(f["severity"] == "warning" for f in findings if f["rule"] == "image-unresolvable")
    summary = doc["summary"]
    assert summary["workloads"] >= 100 and summary["images"] >= len(images) - 5
    assert summary["input_errors"] == len(doc["input_errors"]) >= len(templates)
