"""``canrun serve`` registered with a real API server (by URL, on loopback, over TLS with a real caBundle) and
reached by it: what ``kubectl`` users see -- a denial, ``Warning:`` lines, dry runs, the excluded namespaces --
and what happens when canrun is down. canrun runs with exactly the shipped ClusterRole's rights and learns the
node platforms from a real watch on Node objects.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.apiserver.serve import Served, serving_cert, start_serve, webhook_configuration
from tests.apiserver.test_manifests import MANIFESTS, install
from tests.support import tools
from tests.support.apiserver import ControlPlane
from tests.support.images import Catalogue

pytestmark = pytest.mark.registry
SHIPPED = yaml.safe_load((MANIFESTS / "base" / "validatingwebhookconfiguration.yaml").read_text())


def node(name: str, arch: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
                                                  "kubernetes.io/hostname": name}}}


def deployment(name: str, image: str, namespace: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": image}]}}}}


def label_namespace(plane: ControlPlane, name: str, **labels: str) -> None:
    plane.kubectl_ok("label", "namespace", name, "--overwrite", *(f"{k}={v}" for k, v in labels.items()))


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning:") and "canrun" in line]


@pytest.fixture(scope="module")
def hook(control_plane: ControlPlane, catalogue: Catalogue, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Served]:
    """The shipped RBAC installed, one amd64 node, canrun serve running as its ServiceAccount and registered
    with the shipped webhook settings (namespaceSelector, rules, failurePolicy, sideEffects)."""
    tools.require("kubectl-kustomize")
    plane = control_plane
    install(plane, MANIFESTS / "base")
    # what a 1.21+ server labels by itself
    for ns in ("kube-system", "kube-public", "kube-node-lease", "canrun", "default"):
        plane.kubectl_run("create", "namespace", ns)  # the server makes the kube-* ones itself; make sure
        label_namespace(plane, ns, **{"kubernetes.io/metadata.name": ns})
    plane.kubectl_ok("apply", "-f", "-", stdin=json.dumps(node("amd64-node", "amd64")))
    work = tmp_path_factory.mktemp("webhook")
    cert, key = serving_cert(plane, work / "tls")
    host = catalogue.ref("busybox-amd64").split("/")[0]
    served = start_serve(work, plane.service_account("canrun", "canrun"), "--tls-cert", str(cert),
                         "--tls-key", str(key), "--insecure-registry", host, "--allow-registry-host", host,
                         "--no-discover-service-ranges", ca=plane.ca_cert)
    name = f"canrun-test-{uuid.uuid4().hex[:6]}"
    vwc = webhook_configuration(plane, name, served.url,
                                namespace_selector=SHIPPED["webhooks"][0]["namespaceSelector"])
    plane.kubectl_ok("apply", "-f", "-", stdin=json.dumps(vwc))
    time.sleep(1.5)  # the API server's webhook informer picks the configuration up
    try:
        yield served
    finally:
        plane.kubectl_run("delete", "validatingwebhookconfiguration", name)
        served.stop()


def test_warn_mode_prints_warning_lines_and_admits(kubectl: ControlPlane, hook: Served, namespace: str,
                                                   catalogue: Catalogue) -> None:
    out = kubectl.kubectl_run("apply", "-f", "-", stdin=json.dumps(deployment("web", catalogue.ref("whiteout"),
                                                                               namespace)))
    assert out.returncode == 0, out.stderr
    [line] = warnings(out.stderr)
    assert "command-not-found" in line and '"main"' in line
    kubectl.kubectl_ok("get", "deployment", "web", "-n", namespace)


def test_a_good_image_gets_no_warning(kubectl: ControlPlane, hook: Served, namespace: str,
                                      catalogue: Catalogue) -> None:
    out = kubectl.kubectl_run("apply", "-f", "-", stdin=json.dumps(deployment("ok", catalogue.ref("busybox-amd64"),
                                                                               namespace)))
    assert out.returncode == 0 and not warnings(out.stderr), out.stderr


def test_enforce_mode_denies_with_the_verdict(kubectl: ControlPlane, hook: Served, namespace: str,
                                              catalogue: Catalogue) -> None:
    label_namespace(kubectl, namespace, **{"canrun.io/mode": "enforce"})
    out = kubectl.kubectl_run("apply", "-f", "-", stdin=json.dumps(deployment("web", catalogue.ref("whiteout"),
                                                                               namespace)))
    assert out.returncode != 0
    assert 'admission webhook "validate.canrun.io" denied the request' in out.stderr
    assert "command-not-found" in out.stderr
    assert kubectl.kubectl_run("get", "deployment", "web", "-n", namespace).returncode != 0


def test_a_server_dry_run_is_judged_and_leaves_nothing_behind(kubectl: ControlPlane, hook: Served,
                                                              namespace: str, catalogue: Catalogue) -> None:
    # warn (the namespace has no label): the warnings, nothing stored
    bad = json.dumps(deployment("web", catalogue.ref("whiteout"), namespace))
    out = kubectl.kubectl_run("apply", "--dry-run=server", "-f", "-", stdin=bad)
    assert out.returncode == 0 and warnings(out.stderr), out.stderr
    # enforce, in a namespace labelled so from the start (canrun caches a namespace's labels briefly)
    enforced = f"{namespace}-e"
    kubectl.kubectl_ok("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": enforced, "labels": {"kubernetes.io/metadata.name": enforced, "canrun.io/mode": "enforce"}}}))
    out = kubectl.kubectl_run("apply", "--dry-run=server", "-f", "-",
                              stdin=json.dumps(deployment("web", catalogue.ref("whiteout"), enforced)))
    assert out.returncode != 0 and "command-not-found" in out.stderr
    assert kubectl.kubectl_run("get", "deployment", "web", "-n", namespace).returncode != 0
    # sideEffects NoneOnDryRun is a promise: no Event was written for either dry run
    events = json.loads(kubectl.kubectl_ok("get", "events", "-n", namespace, "-o", "json"))["items"]
    assert not [e for e in events if e.get("source", {}).get("component") == "canrun"
                or "canrun" in (e.get("reportingComponent") or "")], events


def test_warn_mode_records_an_event_on_the_object(kubectl: ControlPlane, hook: Served, namespace: str,
                                                  catalogue: Catalogue) -> None:
    out = kubectl.kubectl_run("apply", "-f", "-", stdin=json.dumps(deployment("evented", catalogue.ref("whiteout"),
                                                                               namespace)))
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        events = json.loads(kubectl.kubectl_ok("get", "events", "-n", namespace, "-o", "json"))["items"]
        mine = [e for e in events if e["involvedObject"].get("name") == "evented"]
        if mine:
            assert "command-not-found" in mine[0]["message"] + mine[0]["reason"], mine[0]
            return
        time.sleep(0.3)
    pytest.fail(f"no Event recorded (canrun's log:\n{hook.log_text()[-2000:]})")


@pytest.mark.parametrize("excluded", ["kube-system", "canrun", "off-by-label"])
def test_excluded_namespaces_are_never_sent(kubectl: ControlPlane, hook: Served, catalogue: Catalogue,
                                            namespace: str, excluded: str) -> None:
    """The shipped namespaceSelector, as the real server evaluates it: the system namespaces by name, canrun's
    own namespace (by the label the manifest gives it) and any namespace labelled canrun.io/mode=off."""
    target = namespace if excluded == "off-by-label" else excluded
    if excluded == "off-by-label":
        label_namespace(kubectl, namespace, **{"canrun.io/mode": "off"})
    name = f"x-{uuid.uuid4().hex[:6]}"
    out = kubectl.kubectl_run("apply", "-f", "-", stdin=json.dumps(deployment(name, catalogue.ref("whiteout"),
                                                                               target)))
    assert out.returncode == 0 and not warnings(out.stderr), out.stderr
    assert name not in hook.log_text()
    kubectl.kubectl_ok("delete", "deployment", name, "-n", target)


def test_down_webhook_fails_open(kubectl: ControlPlane, namespace: str, catalogue: Catalogue,
                                 dead_port: int) -> None:
    """failurePolicy Ignore, as shipped: with nothing listening the server admits at once."""
    name = f"canrun-down-{uuid.uuid4().hex[:6]}"
    vwc = webhook_configuration(kubectl, name, f"https://127.0.0.1:{dead_port}",
                                namespace_selector={"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                                failure_policy=SHIPPED["webhooks"][0]["failurePolicy"])
    kubectl.kubectl_ok("apply", "-f", "-", stdin=json.dumps(vwc))
    try:
        # off: the canrun that other tests here register (if it is still up) leaves this namespace alone
        label_namespace(kubectl, namespace, **{"canrun.io/mode": "off"})
        time.sleep(1.5)
        started = time.monotonic()
        out = kubectl.kubectl_run("apply", "-f", "-", stdin=json.dumps(deployment("web", catalogue.ref("whiteout"),
                                                                                   namespace)))
        assert out.returncode == 0, out.stderr
        assert time.monotonic() - started < SHIPPED["webhooks"][0]["timeoutSeconds"]
        assert "failed calling webhook" in kubectl.log_tail("kube-apiserver", 200_000)
    finally:
        kubectl.kubectl_run("delete", "validatingwebhookconfiguration", name)


def test_node_platforms_follow_a_real_watch(kubectl: ControlPlane, hook: Served, namespace: str,
                                            catalogue: Catalogue) -> None:
    """An amd64-only image is fine while every node is amd64; an arm64 node joining makes it a finding, and
    its leaving takes the finding away, through the watch the webhook keeps on Node objects."""
    image = catalogue.ref("amd64-only")

    def apply_and_warnings() -> list[str]:
        out = kubectl.kubectl_run("apply", "-f", "-", stdin=json.dumps(deployment(f"p-{uuid.uuid4().hex[:6]}",
                                                                                   image, namespace)))
        assert out.returncode == 0, out.stderr
        return warnings(out.stderr)

    def eventually(predicate: Any, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.5)
        return False

    assert apply_and_warnings() == []
    kubectl.kubectl_ok("apply", "-f", "-", stdin=json.dumps(node("arm64-node", "arm64")))
    try:
        assert eventually(lambda: any("platform-missing" in w for w in apply_and_warnings())), hook.log_text()[-2000:]
    finally:
        kubectl.kubectl_ok("delete", "node", "arm64-node")
    assert eventually(lambda: apply_and_warnings() == []), hook.log_text()[-2000:]


def test_the_service_referenced_webhook_is_never_dialed(kubectl: ControlPlane, namespace: str,
                                                       catalogue: Catalogue) -> None:
    """Safety of this test setup: the shipped configuration (a Service reference) registered as it is makes
    the server look up the Service's endpoints -- there are none -- and fail open, without dialing a cluster
    IP (which would leave loopback)."""
    vwc = json.loads(json.dumps(SHIPPED))
    vwc["metadata"]["name"] = name = f"canrun-svc-{uuid.uuid4().hex[:6]}"
    vwc["webhooks"][0]["clientConfig"]["service"]["namespace"] = "canrun"
    vwc["webhooks"][0]["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    kubectl.kubectl_ok("apply", "-f", "-", stdin=json.dumps(vwc))
    try:
        label_namespace(kubectl, namespace, **{"canrun.io/mode": "off"})  # not the live canrun's business
        time.sleep(1.5)
        started = time.monotonic()
        out = kubectl.kubectl_run("apply", "-f", "-", stdin=json.dumps(deployment("svc", catalogue.ref("whiteout"),
                                                                                   namespace)))
        assert out.returncode == 0 and time.monotonic() - started < 5, out.stderr
        log = kubectl.log_tail("kube-apiserver", 400_000)
        assert any(m in log for m in ('endpoints "canrun" not found', "no endpoints available")), log[-2000:]
    finally:
        kubectl.kubectl_run("delete", "validatingwebhookconfiguration", name)
