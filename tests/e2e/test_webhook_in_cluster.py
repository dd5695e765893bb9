"""End to end in a real cluster: install the manifests, then a Deployment that cannot run is denied.

Runs only when KUBECONFIG is set (skipped otherwise) and kubectl is installed; see docs/e2e.md for a kind
cluster.  It installs canrun (namespace ``canrun``) with the enforce component and the image from
``CANRUN_E2E_IMAGE`` (default ``ghcr.io/canrun/canrun:0.1.0``; with kind, build it and ``kind load
docker-image`` it first), checks a Deployment whose command is missing from its image
(``CANRUN_E2E_BAD_IMAGE``, default ``busybox:1.36`` running ``/bin/bash``) is denied and a good one is
admitted, then removes what it created (``CANRUN_E2E_KEEP=1`` keeps canrun installed).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="KUBECONFIG not set: no cluster to test against"),
    pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed"),
]


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    out = subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed:\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    image = os.environ.get("CANRUN_E2E_IMAGE", "ghcr.io/canrun/canrun:0.1.0")
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    overlay = tmp_path_factory.mktemp("overlay")
    (overlay / "kustomization.yaml").write_text(json.dumps({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        # kustomize refuses absolute paths to bases
        "resources": [os.path.relpath(ROOT / "manifests" / "base", overlay)],
        "components": [os.path.relpath(ROOT / "manifests" / "components" / "enforce", overlay)],
        "images": [{"name": "ghcr.io/canrun/canrun", "newName": name, "newTag": tag}],
    }))
    kubectl("apply", "-k", str(overlay))
    try:
        kubectl("-n", "canrun", "rollout", "status", "deployment/canrun", "--timeout=240s")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the pods patch the caBundle once their certificate exists
            vwc = json.loads(kubectl("get", "validatingwebhookconfiguration", "canrun", "-o", "json").stdout)
            if all(h["clientConfig"].get("caBundle") for h in vwc["webhooks"]):
                base64.b64decode(vwc["webhooks"][0]["clientConfig"]["caBundle"])
                break
            time.sleep(2)
        else:
            pytest.fail("the caBundle was never patched: see kubectl -n canrun logs deploy/canrun")
        yield
    finally:
        if not os.environ.get("CANRUN_E2E_KEEP"):
            kubectl("delete", "-k", str(overlay), "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
def namespace(installed: None) -> Iterator[str]:
    ns = f"canrun-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


def deployment(ns: str, name: str, command: list[str]) -> str:
    image = os.environ.get("CANRUN_E2E_BAD_IMAGE", "busybox:1.36")
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "main", "image": image, "command": command}]}}}})


def test_a_deployment_that_cannot_run_is_denied(namespace: str) -> None:
    out = kubectl("apply", "-f", "-", stdin=deployment(namespace, "bad", ["/bin/bash", "-c", "sleep 3600"]),
                  check=False)
    assert out.returncode != 0, "the API server admitted a Deployment whose command does not exist"
    assert "denied the request" in out.stderr and "command-not-found" in out.stderr, out.stderr


def test_a_deployment_that_can_run_is_admitted(namespace: str) -> None:
    kubectl("apply", "-f", "-", stdin=deployment(namespace, "good", ["/bin/sh", "-c", "sleep 3600"]))
