"""Folding owned objects into their controllers: each controller judged once, whatever its replica count."""

from __future__ import annotations

import asyncio

from canrun.audit.inventory import build_inventory, collect
from canrun.kube.client import Cluster, load_api_client
from tests.audit.conftest import (
    cronjob_chain,
    daemonset_chain,
    deployment_chain,
    node,
    pod,
    pod_spec,
    statefulset_chain,
)
from tests.support.kubeapi import KubeAPIStandIn

IMG = "registry.example/app:1"


def judged(inventory) -> list[tuple[str, str | None, str]]:
    return [(i.ref.kind, i.ref.namespace, i.ref.name) for i in inventory.items]


def test_every_controller_is_judged_once_as_its_topmost_owner() -> None:
    objects = (deployment_chain("web", "shop", pod_spec(IMG), replicas=3, old_revisions=2)
               + cronjob_chain("backup", "shop", pod_spec(IMG), runs=3)
               + daemonset_chain("agent", "infra", pod_spec(IMG), nodes=4)
               + statefulset_chain("db", "shop", pod_spec(IMG), replicas=2)
               + [pod("debug", "shop", pod_spec(IMG))])
    inv = build_inventory(objects)
    assert sorted(judged(inv)) == sorted([
        ("Deployment", "shop", "web"), ("CronJob", "shop", "backup"), ("DaemonSet", "infra", "agent"),
        ("StatefulSet", "shop", "db"), ("Pod", "shop", "debug")])
    folded = {i.ref.name: i.folded for i in inv.items}
    assert folded["web"] == {"ReplicaSet": 3, "Pod": 3}
    assert folded["backup"] == {"Job": 3, "Pod": 3}
    assert folded["agent"] == {"Pod": 4}
    assert folded["db"] == {"Pod": 2}
    assert folded["debug"] == {}
    assert inv.listed["Pod"] == 3 + 3 + 4 + 2 + 1
    # the uid a PolicyReport names is the controller's own
    dep = next(o for o in objects if o["kind"] == "Deployment")
    assert next(i for i in inv.items if i.ref.name == "web").ref.uid == dep["metadata"]["uid"]


def test_pods_whose_owner_is_not_listed_are_judged_once_per_owner() -> None:
    # a selector matched the Pods and ReplicaSets but not their Deployment (its labels differ)
    chain = deployment_chain("api", "shop", pod_spec(IMG), replicas=4, old_revisions=1)
    visible = [o for o in chain if o["kind"] != "Deployment"]
    inv = build_inventory(visible)
    assert [(k, n) for k, _, n in judged(inv)] == [("ReplicaSet", "api-00000abc")]
    assert inv.items[0].folded == {"ReplicaSet": 1, "Pod": 4}
    # only the pods are visible: judged once, as the first of them
    pods = [o for o in chain if o["kind"] == "Pod"]
    inv = build_inventory(pods)
    assert len(inv.items) == 1 and inv.items[0].ref.kind == "Pod"
    assert inv.items[0].folded == {"Pod": 3}


def test_pods_owned_by_something_that_is_not_a_workload_are_judged_alone() -> None:
    mirror = pod("kube-apiserver-n1", "kube-system", pod_spec(IMG))
    mirror["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "node-uid",
                                              "controller": True}]
    custom = [pod(f"run-{i}", "ci", pod_spec(IMG)) for i in range(2)]
    for p in custom:
        p["metadata"]["ownerReferences"] = [{"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": p["metadata"]["name"],
                                             "uid": f"tr-{p['metadata']['name']}", "controller": True}]
    inv = build_inventory([mirror, *custom])
    assert sorted(n for _, _, n in judged(inv)) == ["kube-apiserver-n1", "run-0", "run-1"]


def test_a_broken_object_is_reported_and_the_others_still_judged() -> None:
    bad = pod("broken", "shop", {"containers": "not-a-list"})
    good = pod("fine", "shop", pod_spec(IMG))
    inv = build_inventory([bad, good])
    assert judged(inv) == [("Pod", "shop", "fine")]
    assert len(inv.errors) == 1


def test_collect_lists_through_the_api_with_namespaces_and_selector(kubeapi: KubeAPIStandIn) -> None:
    for obj in (deployment_chain("web", "shop", pod_spec(IMG), labels={"app": "web", "tier": "front"})
                + deployment_chain("api", "shop", pod_spec(IMG), labels={"app": "api", "tier": "back"})
                + cronjob_chain("backup", "ops", pod_spec(IMG))
                + [pod("stray", "other", pod_spec(IMG)), node("n1")]):
        kubeapi.add(obj)
    cluster = Cluster(load_api_client(str(kubeapi.kubeconfig_path)))

    everything = asyncio.run(collect(cluster))
    assert sorted(judged(everything)) == [("CronJob", "ops", "backup"), ("Deployment", "shop", "api"),
                                         ("Deployment", "shop", "web"), ("Pod", "other", "stray")]

    kubeapi.requests.clear()
    scoped = asyncio.run(collect(cluster, namespaces=["shop", "ops"], label_selector=None))
    assert sorted(n for _, _, n in judged(scoped)) == ["api", "backup", "web"]
    paths = {p for _, p in kubeapi.requests}
    assert any("/namespaces/shop/" in p for p in paths) and any("/namespaces/ops/" in p for p in paths)
    assert not any("/namespaces/other/" in p for p in paths)

    selected = asyncio.run(collect(cluster, label_selector="tier=front"))
    assert judged(selected) == [("Deployment", "shop", "web")]
    assert selected.items[0].folded == {"ReplicaSet": 2, "Pod": 3}


def test_a_kind_the_server_does_not_serve_is_passed_over_and_named() -> None:
    """Kubernetes 1.20 answers 404 for batch/v1 CronJob; any other error still fails the audit."""
    from canrun.errors import ClusterError

    class Lister:
        def __init__(self, status: int) -> None:
            self.status = status

        def list_objects(self, api_version: str, kind: str, namespace: str | None = None,
                         label_selector: str | None = None) -> list[dict[str, object]]:
            if kind == "CronJob":
                raise ClusterError("listing cronjobs: 404", status=self.status)
            return [pod("debug", "shop", pod_spec("r/app:1"))] if kind == "Pod" else []

    inventory = asyncio.run(collect(Lister(404)))
    assert inventory.unserved == ["batch/v1 CronJob"]
    assert [i.ref.name for i in inventory.items] == ["debug"]
    try:
        asyncio.run(collect(Lister(403)))
    except ClusterError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("a forbidden list must fail the audit")
