"""Fixtures for the audit tests: the Kubernetes API stand-in, workload object chains, a counting proxy.

Objects are shaped like what the API server returns (uids, ownerReferences with
``controller: true``), so folding is tested the way a real cluster presents it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.audit.proxy import CountingProxy
from tests.support.kubeapi import KubeAPIStandIn


def pod_spec(image: str, *, command: list[str] | None = None, name: str = "app") -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image}
    if command is not None:
        container["command"] = command
    return {"containers": [container]}


def _meta(name: str, namespace: str | None, owner: dict[str, Any] | None = None,
          labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": str(uuid.uuid4())}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                    "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                                    "controller": True, "blockOwnerDeletion": True}]
    return meta


def pod(name: str, namespace: str, spec: dict[str, Any], owner: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(name, namespace, owner, labels), "spec": spec}


def deployment_chain(name: str, namespace: str, spec: dict[str, Any], *, replicas: int = 3,
                     old_revisions: int = 1, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A Deployment, its current ReplicaSet with ``replicas`` Pods, and scaled-down older ReplicaSets."""
    labels = labels or {"app": name}
    template = {"metadata": {"labels": labels}, "spec": spec}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, namespace, labels=labels),
           "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template}}
    out = [dep]
    for rev in range(old_revisions + 1):
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": _meta(f"{name}-{rev:05d}abc", namespace, dep, labels),
              "spec": {"replicas": replicas if rev == old_revisions else 0,
                       "selector": {"matchLabels": labels}, "template": template}}
        out.append(rs)
        if rev == old_revisions:
            out += [pod(f"{rs['metadata']['name']}-{i}", namespace, spec, rs, labels) for i in range(replicas)]
    return out


def cronjob_chain(name: str, namespace: str, spec: dict[str, Any], *, runs: int = 2) -> list[dict[str, Any]]:
    """A CronJob, ``runs`` Jobs it started, one Pod each."""
    pod_template = {"spec": {**spec, "restartPolicy": "Never"}}
    cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta(name, namespace),
          "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": pod_template}}}}
    out = [cj]
    for i in range(runs):
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(f"{name}-2900{i}", namespace, cj),
               "spec": {"template": pod_template}}
        out += [job, pod(f"{name}-2900{i}-x{i}", namespace, pod_template["spec"], job)]
    return out


def daemonset_chain(name: str, namespace: str, spec: dict[str, Any], *, nodes: int = 2) -> list[dict[str, Any]]:
    labels = {"app": name}
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(name, namespace, labels=labels),
          "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": spec}}}
    return [ds] + [pod(f"{name}-n{i}", namespace, spec, ds, labels) for i in range(nodes)]


def statefulset_chain(name: str, namespace: str, spec: dict[str, Any], *, replicas: int = 2) -> list[dict[str, Any]]:
    labels = {"app": name}
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(name, namespace, labels=labels),
           "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": spec}}}
    return [sts] + [pod(f"{name}-{i}", namespace, spec, sts, labels) for i in range(replicas)]


def node(name: str, arch: str = "amd64") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/arch": arch, "kubernetes.io/os": "linux"}},
            "status": {"nodeInfo": {"architecture": arch, "operatingSystem": "linux"}}}


@pytest.fixture
def kubeapi(tmp_path: Path) -> Iterator[KubeAPIStandIn]:
    with KubeAPIStandIn(tmp_path / "kubeapi") as api:
        yield api


@pytest.fixture(scope="session")
def counting_proxy(local_registry: Any) -> Iterator[CountingProxy]:
    proxy = CountingProxy(local_registry.host)
    try:
        yield proxy
    finally:
        proxy.close()
