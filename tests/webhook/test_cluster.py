"""The webhook in a cluster: node watch, namespace modes, Events, pull secrets and warm-up, through the official
client against the API server stand-in (tests/support/kubeapi.py), with real images in a real registry."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canrun.kube.client import Cluster, NodeWatcher, load_api_client
from canrun.webhook.service import watcher_pool
from tests.support.images import Catalogue
from tests.support.kubeapi import KubeAPIStandIn
from tests.webhook.conftest import SlowProxy, StartWebhook, Webhook, container, deployment, pod, review

pytestmark = pytest.mark.registry


def node(name: str, arch: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": arch}},
            "status": {"nodeInfo": {"operatingSystem": "linux", "architecture": arch}}}


def namespace(name: str, mode: str | None = None) -> dict[str, Any]:
    labels = {"canrun.io/mode": mode} if mode else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeAPIStandIn]:
    with KubeAPIStandIn(tmp_path / "kubeapi") as stand_in:
        stand_in.add(node("amd-1", "amd64"))
        for ns, mode in (("shop", "enforce"), ("lab", "audit"), ("dev", None), ("quiet", "off"),
                         ("odd", "block-everything")):
            stand_in.add(namespace(ns, mode))
        yield stand_in


@pytest.fixture
def cluster(api: KubeAPIStandIn) -> Cluster:
    return Cluster(load_api_client(str(api.kubeconfig_path)))


@pytest.fixture
def watcher(cluster: Cluster) -> Iterator[NodeWatcher]:
    w = NodeWatcher(cluster).start()
    assert w.wait_ready(10)
    yield w
    w.stop()


@pytest.fixture
def hook(start_webhook: StartWebhook, catalogue: Catalogue, cluster: Cluster, watcher: NodeWatcher) -> Webhook:
    return start_webhook(registries=(catalogue.host,), mode="warn", cluster=cluster, pool=watcher_pool(watcher))


def events(api: KubeAPIStandIn, ns: str) -> list[dict[str, Any]]:
    return [e for e in api.list("Event", ns, api_version="v1")]


def test_namespace_label_picks_the_mode(hook: Webhook, catalogue: Catalogue) -> None:
    bad = catalogue.ref("whiteout")
    assert hook.review(review(pod([container(bad)], namespace="shop")))["allowed"] is False
    audited = hook.review(review(pod([container(bad)], namespace="lab")))
    assert audited["allowed"] is True and "warnings" not in audited and "findings" in audited["auditAnnotations"]
    warned = hook.review(review(pod([container(bad)], namespace="dev")))  # no label: the default (warn)
    assert warned["allowed"] is True and any("command-not-found" in w for w in warned["warnings"])
    off = hook.review(review(pod([container(bad)], namespace="quiet")))
    assert off["allowed"] is True and set(off) == {"uid", "allowed"}
    odd = hook.review(review(pod([container(bad)], namespace="odd")))  # unknown label value: the default
    assert odd["allowed"] is True and odd["warnings"]


def test_warn_and_audit_record_an_event_but_dry_run_does_not(hook: Webhook, api: KubeAPIStandIn,
                                                             catalogue: Catalogue) -> None:
    bad = deployment([container(catalogue.ref("whiteout"), name="server")], name="web", namespace="dev")
    hook.review(review(bad, dry_run=True))
    hook.drain()
    assert events(api, "dev") == []
    hook.review(review(bad))
    hook.drain()
    recorded = events(api, "dev")
    assert len(recorded) == 1
    event = recorded[0]
    assert event["involvedObject"]["kind"] == "Deployment" and event["involvedObject"]["name"] == "web"
    assert event["reason"] == "ContainerCannotRun" and event["type"] == "Warning"
    assert "command-not-found" in event["message"] and "server" in event["message"]
    # audit mode: nothing shown at apply time, but the Event is there for GitOps tools to see
    audited = deployment([container(catalogue.ref("whiteout"), name="server")], name="web", namespace="lab")
    hook.review(review(audited, dry_run=True))
    hook.drain()
    assert events(api, "lab") == []
    assert "warnings" not in hook.review(review(audited))
    hook.drain()
    [event] = events(api, "lab")
    assert event["involvedObject"]["name"] == "web" and "command-not-found" in event["message"]
    # a clean object gets no Event
    hook.review(review(deployment([container(catalogue.ref("busybox-amd64"))], name="fine", namespace="dev")))
    hook.drain()
    assert len(events(api, "dev")) == 1
    # enforce denies: the object is not created, so there is nothing to hang an Event on
    hook.review(review(deployment([container(catalogue.ref("whiteout"))], namespace="shop")))
    hook.drain()
    assert events(api, "shop") == []


def test_node_platforms_come_from_the_node_watch(hook: Webhook, api: KubeAPIStandIn, watcher: NodeWatcher,
                                                 catalogue: Catalogue) -> None:
    image = catalogue.ref("amd64-only")
    assert hook.review(review(pod([container(image)], namespace="shop")))["allowed"] is True
    generation = watcher.generation
    api.add(node("arm-1", "arm64"))
    deadline = time.monotonic() + 10
    while watcher.generation == generation and time.monotonic() < deadline:
        time.sleep(0.05)
    answer = hook.review(review(pod([container(image)], namespace="shop", name="again")))
    assert answer["allowed"] is False  # a new node platform: the cached verdict no longer applies
    assert "platform-missing" in answer["status"]["message"] and "linux/arm64" in answer["status"]["message"]


def test_pull_secrets_of_the_pod_are_read_for_its_request(hook: Webhook, api: KubeAPIStandIn,
                                                           catalogue: Catalogue) -> None:
    auth = base64.b64encode(b"user:secret-password").decode()
    config = json.dumps({"auths": {catalogue.host: {"auth": auth}}}).encode()
    api.add({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
             "metadata": {"name": "regcred", "namespace": "dev"},
             "data": {".dockerconfigjson": base64.b64encode(config).decode()}})
    body = pod([container(catalogue.ref("busybox-amd64"))], namespace="dev", imagePullSecrets=[{"name": "regcred"}])
    answer = hook.review(review(body))
    assert answer["allowed"] is True
    assert ("GET", "/api/v1/namespaces/dev/secrets/regcred") in api.requests


def test_images_of_running_pods_are_indexed_at_start(start_webhook: StartWebhook, api: KubeAPIStandIn,
                                                     cluster: Cluster, watcher: NodeWatcher, catalogue: Catalogue,
                                                     slow_proxy: SlowProxy) -> None:
    image = slow_proxy.host + "/" + catalogue.ref("bash-script").split("/", 1)[1]
    running = pod([container(image, name="old")], name="running", namespace="dev")
    running["status"] = {"phase": "Running"}
    api.add(running)
    hook = start_webhook(registries=(slow_proxy.host,), mode="warn", cluster=cluster, pool=watcher_pool(watcher),
                         warm_interval=300)
    deadline = time.monotonic() + 20
    while 'canrun_warmup_images_total{outcome="indexed"} 1.0' not in hook.metrics():
        assert time.monotonic() < deadline, "warm-up did not index the running pod's image"
        time.sleep(0.1)
    fetched = slow_proxy.count("GET", "/blobs/")
    assert fetched >= 2
    slow_proxy.reset()
    answer = hook.review(review(pod([container(image, name="new")], name="fresh", namespace="dev")))
    assert any("interpreter-not-found" in w for w in answer["warnings"])
    assert slow_proxy.count() == 0  # answered from the warm cache: not one registry request
    # a pod that appears later (here in a namespace the webhook is never asked about) is indexed as it appears
    later = slow_proxy.host + "/" + catalogue.ref("whiteout").split("/", 1)[1]
    api.add(pod([container(later, name="sys")], name="appeared", namespace="kube-system"))
    while 'canrun_warmup_images_total{outcome="indexed"} 2.0' not in hook.metrics():
        assert time.monotonic() < deadline, "warm-up did not index the new pod's image"
        time.sleep(0.1)
    assert slow_proxy.count("GET", "/blobs/") >= 2
    slow_proxy.reset()
    answer = hook.review(review(pod([container(later, name="new")], name="fresh2", namespace="dev")))
    assert any("command-not-found" in w for w in answer["warnings"])
    assert slow_proxy.count() == 0
    assert ("GET", "/api/v1/pods") in api.requests  # one list, then the watch: no periodic re-listing


def test_a_repeated_admission_is_answered_alike_and_still_leaves_an_event(hook: Webhook, api: KubeAPIStandIn,
                                                                         catalogue: Catalogue) -> None:
    """GitOps re-applies the same object all day: the second answer comes from memory but says the same thing,
    counts its findings again and still records the Event Argo CD users read."""
    bad = deployment([container(catalogue.ref("whiteout"), name="server")], name="web", namespace="dev")
    first = hook.review(review(bad))
    hook.drain()
    second = hook.review(review(bad))
    hook.drain()
    assert first["warnings"] == second["warnings"] and any("command-not-found" in w for w in second["warnings"])
    [event] = events(api, "dev")  # one Event, seen twice (as the kubelet's own events aggregate)
    assert event["count"] == 2
    metrics = hook.client.get("/metrics").text
    assert 'canrun_admission_findings_total{rule="command-not-found",severity="error"} 2.0' in metrics
    # another object with the same pod spec is named in its own answer
    other = deployment([container(catalogue.ref("whiteout"), name="server")], name="api", namespace="dev")
    answer = hook.review(review(other))
    assert answer["warnings"] == first["warnings"]  # warnings name the container, not the object
    hook.drain()
    assert sorted((e["involvedObject"]["name"], e["count"]) for e in events(api, "dev")) == [("api", 1), ("web", 2)]
