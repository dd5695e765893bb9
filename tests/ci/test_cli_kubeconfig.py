"""``canrun check --kubeconfig``: node platforms and labels from a live API (the loopback stand-in)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ci.cli_support import check
from tests.support.kubeapi import KubeAPIStandIn


def node(name: str, arch: str, **labels: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": arch, **labels}},
            "status": {"nodeInfo": {"architecture": arch, "operatingSystem": "linux"}}}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeAPIStandIn]:
    with KubeAPIStandIn(tmp_path / "api") as stand_in:
        stand_in.add(node("amd-1", "amd64"))
        stand_in.add(node("arm-1", "arm64"))
        stand_in.add(node("arm-2", "arm64", pool="gpu"))
        yield stand_in


PINNED = """\
apiVersion: v1
kind: Pod
metadata: {{name: pinned, namespace: shop}}
spec:
  nodeSelector: {{pool: gpu}}
  containers:
    - name: c
      image: 127.0.0.1:{port}/x:1
"""


def test_nodes_give_the_platforms(repo: Path, api: KubeAPIStandIn) -> None:
    r = check("-f", "k8s", "--kubeconfig", str(api.kubeconfig_path))
    assert r.code == 0, r.err
    assert r.summary.endswith(f"(platforms: linux/amd64, linux/arm64 from 3 nodes of the cluster at {api.url})")
    assert ("GET", "/api/v1/nodes") in api.requests


def test_context_is_named_in_the_summary(repo: Path, api: KubeAPIStandIn) -> None:
    r = check("-f", "k8s/pod.json", "--kubeconfig", str(api.kubeconfig_path), "--context", "stand-in")
    assert r.summary.endswith("(platforms: linux/amd64, linux/arm64 from 3 nodes of context stand-in)")


def test_node_labels_decide_where_a_pod_lands(repo: Path, api: KubeAPIStandIn, dead_port: int) -> None:
    (repo / "pinned.yaml").write_text(PINNED.format(port=dead_port))
    r = check("-f", "pinned.yaml", "-f", "k8s/pod.json", "--kubeconfig", str(api.kubeconfig_path),
              "--format", "junit")
    names = sorted(c.get("name") or "" for c in ET.fromstring(r.out).findall(".//testcase"))
    # the pinned pod fits only the gpu pool's arm64 node; the unpinned one any node
    assert names == ["Pod/shop/debug/shell@linux/amd64", "Pod/shop/debug/shell@linux/arm64",
                     "Pod/shop/pinned/c@linux/arm64"]


def test_platform_flag_wins_and_the_cluster_is_not_asked(repo: Path, api: KubeAPIStandIn) -> None:
    r = check("-f", "k8s/pod.json", "--kubeconfig", str(api.kubeconfig_path), "--platform", "linux/s390x")
    assert r.summary.endswith("(platforms: linux/s390x)")
    assert api.requests == []


def test_unreachable_cluster_is_one_line(repo: Path, tmp_path: Path) -> None:
    stand_in = KubeAPIStandIn(tmp_path / "gone").start()
    stand_in.stop()
    r = check("-f", "k8s/pod.json", "--kubeconfig", str(stand_in.kubeconfig_path))
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("canrun: ")


def test_missing_kubeconfig_is_one_line(repo: Path) -> None:
    r = check("-f", "k8s/pod.json", "--kubeconfig", "/nonexistent/kubeconfig")
    assert r.code == 2 and "/nonexistent/kubeconfig" in r.err


def test_a_cluster_without_nodes_asks_for_platforms(repo: Path, tmp_path: Path) -> None:
    with KubeAPIStandIn(tmp_path / "empty") as empty:
        r = check("-f", "k8s/pod.json", "--kubeconfig", str(empty.kubeconfig_path))
    assert r.code == 2 and "lists no nodes" in r.err and "--platform" in r.err
