"""manifests/overlays/audit-cronjob: valid objects, least privilege, a restricted pod, and args canrun accepts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from canrun.cli import build_parser

OVERLAY = Path(__file__).resolve().parents[2] / "manifests" / "overlays" / "audit-cronjob"
K8S_VERSION = "1.30.0"


def _objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        out += [d for d in yaml.safe_load_all((OVERLAY / name).read_text()) if d]
    for obj in out:  # what kustomize's `namespace:` does
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            obj["metadata"]["namespace"] = kustomization["namespace"]
    return out


def _kind(kind: str) -> dict[str, Any]:
    return next(o for o in _objects() if o["kind"] == kind)


@pytest.mark.parametrize("obj", _objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_each_object_is_valid_kubernetes(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_rbac_reads_workloads_and_writes_only_policy_reports() -> None:
    rules = _kind("ClusterRole")["rules"]
    writes = {"create", "update", "patch", "delete", "deletecollection", "*"}
    for rule in rules:
        if set(rule["verbs"]) & writes:
            assert rule["apiGroups"] == ["wgpolicyk8s.io"], rule
            assert set(rule["resources"]) == {"policyreports", "clusterpolicyreports"}
    readable = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
                if "list" in rule["verbs"]}
    from canrun.audit.inventory import WORKLOAD_KINDS
    for api_version, kind in WORKLOAD_KINDS:
        group = api_version.rpartition("/")[0]
        assert (group, kind.lower() + "s") in readable, kind
    assert ("", "nodes") in readable
    assert not any("secrets" in rule["resources"] for rule in rules)
    binding = _kind("ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == _kind("ServiceAccount")["metadata"]["name"]


def test_cronjob_pod_is_restricted_and_runs_a_valid_audit_command() -> None:
    pod = _kind("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    # the image's ENTRYPOINT is `canrun serve`: the CronJob must replace it (tests/deploy checks every workload's
    # effective argv against the Dockerfile)
    assert container["command"] == ["/usr/local/bin/canrun"]
    args = build_parser().parse_args(container["command"][1:] + container["args"])
    assert args.command == "audit" and args.apply and args.exit_zero


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_overlay_with_the_base_image_name() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    assert sorted(d["kind"] for d in docs) == ["ClusterRole", "ClusterRoleBinding", "CronJob", "Namespace",
                                               "ServiceAccount"]
    cronjob = next(d for d in docs if d["kind"] == "CronJob")
    assert cronjob["metadata"]["namespace"] == "canrun"
    image = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("ghcr.io/canrun/canrun:")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_pull_secrets_component_is_the_only_way_to_secrets(tmp_path: Path) -> None:
    """components/audit-pull-secrets: get on secrets and serviceaccounts for the audit's account, and the flag."""
    component = OVERLAY.parents[1] / "components" / "audit-pull-secrets"
    wrapper = tmp_path / "overlay"
    wrapper.mkdir()
    (wrapper / "kustomization.yaml").write_text(
        f"resources: [{Path(os.path.relpath(OVERLAY, wrapper)).as_posix()}]\n"
        f"components: [{Path(os.path.relpath(component, wrapper)).as_posix()}]\n")
    built = subprocess.run(["kubectl", "kustomize", str(wrapper)], capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "canrun-audit-pull-secrets")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["get"]}]
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding"
                   and d["metadata"]["name"] == "canrun-audit-pull-secrets")
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    cronjob = next(d for d in docs if d["kind"] == "CronJob")
    args = build_parser().parse_args(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.command == "audit" and args.use_pull_secrets and args.apply
    # and without the component, no Secret is reachable and the flag is off
    plain = _kind("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not build_parser().parse_args(plain).use_pull_secrets
