"""``canrun audit`` against a real API server, as the audit overlay's ServiceAccount: it lists the real
objects the server stores (with their real uids), and
``--apply`` writes PolicyReports through the CRD components/policyreport-crds ships -- accepted by the
server's structural schema, nothing pruned, updated in place on the next run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver.test_manifests import MANIFESTS, install
from tests.support import tools
from tests.support.apiserver import ControlPlane
from tests.support.images import Catalogue

pytestmark = pytest.mark.registry
ROOT = Path(__file__).resolve().parents[2]


def deployment(name: str, image: str, namespace: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": image}]}}}}


def audit(plane: ControlPlane, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    ident = plane.service_account("canrun", "canrun-audit")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(HOME=str(tmp))
    return subprocess.run([sys.executable, "-m", "canrun", "audit", "--kubeconfig", str(ident.kubeconfig),
                           "--cache-dir", str(tmp / "cache"), *args], capture_output=True, text=True,
                          timeout=240, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def audit_installed(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> ControlPlane:
    tools.require("kubectl-kustomize")
    install(control_plane, MANIFESTS / "overlays" / "audit-cronjob", with_components=("policyreport-crds",),
            tmp=tmp_path_factory.mktemp("audit-overlay"))
    return control_plane


def test_audit_apply_writes_policy_reports_through_the_shipped_crd(audit_installed: ControlPlane,
                                                                    namespace: str, catalogue: Catalogue,
                                                                    tmp_path: Path) -> None:
    plane = audit_installed
    for name, image in (("web", catalogue.ref("whiteout")), ("ok", catalogue.ref("busybox-amd64"))):
        plane.kubectl_ok("apply", "-f", "-", stdin=json.dumps(deployment(name, image, namespace)))
    host = catalogue.ref("busybox-amd64").split("/")[0]
    out = audit(plane, tmp_path, "-n", namespace, "--apply", "--exit-zero", "--insecure-registry", host,
                "--format", "json")
    assert out.returncode == 0, out.stderr[-3000:]

    report = json.loads(plane.kubectl_ok("get", "policyreports.wgpolicyk8s.io", f"canrun-{namespace}",
                                         "-n", namespace, "-o", "json"))
    by_object = {(r["resources"][0]["kind"], r["resources"][0]["name"]): r for r in report["results"]
                 if r["result"] in ("fail", "pass")}
    assert by_object[("Deployment", "web")]["result"] == "fail"
    assert by_object[("Deployment", "web")]["rule"] == "command-not-found"
    assert by_object[("Deployment", "ok")]["result"] == "pass"
    # the uid is the server's: the report points at the real object
    web = json.loads(plane.kubectl_ok("get", "deployment", "web", "-n", namespace, "-o", "json"))
    assert by_object[("Deployment", "web")]["resources"][0]["uid"] == web["metadata"]["uid"]
    assert report["summary"]["fail"] >= 1 and report["summary"]["pass"] >= 1
    # nothing canrun wrote was pruned by the CRD's schema
    assert by_object[("Deployment", "web")]["properties"]["container"] == "main"
    first_uid = report["metadata"]["uid"]

    # fixed, and audited again: the same report object, now passing
    plane.kubectl_ok("apply", "-f", "-", stdin=json.dumps(deployment("web", catalogue.ref("busybox-amd64"),
                                                                      namespace)))
    out = audit(plane, tmp_path, "-n", namespace, "--apply", "--exit-zero", "--insecure-registry", host)
    assert out.returncode == 0, out.stderr[-3000:]
    again = json.loads(plane.kubectl_ok("get", "policyreports.wgpolicyk8s.io", f"canrun-{namespace}",
                                        "-n", namespace, "-o", "json"))
    assert again["metadata"]["uid"] == first_uid
    assert again["summary"]["fail"] == 0
    printed = plane.kubectl_ok("get", "polr", "-n", namespace)
    assert f"canrun-{namespace}" in printed and "PASS" in printed


def test_audit_lists_only_what_its_role_allows(audit_installed: ControlPlane, namespace: str,
                                               tmp_path: Path) -> None:
    """Without --apply nothing is written; and it never needed secrets (its role has none)."""
    out = audit(audit_installed, tmp_path, "-n", namespace, "--format", "json", "--exit-zero")
    assert out.returncode == 0, out.stderr[-3000:]
    # 1.20 serves CronJob only as batch/v1beta1: the kind is passed over and named, not a failed audit
    assert "the API server does not serve batch/v1 CronJob: none audited" in out.stderr
    assert json.loads(out.stdout)["unserved_kinds"] == ["batch/v1 CronJob"]
    assert audit_installed.kubectl_run("get", "policyreports.wgpolicyk8s.io", f"canrun-{namespace}",
                                       "-n", namespace).returncode != 0
