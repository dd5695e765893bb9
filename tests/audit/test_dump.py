"""``canrun audit -f DUMP``: a ``kubectl get … -A -o yaml`` dump judged offline, as the live audit judges it.

The dump is made from the stand-in's own objects (what the API server returns, with
uids and ownerReferences), in the shape kubectl writes (one ``kind: List``), so the
live audit and the offline one see the same objects and must report the same.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from canrun.cli import main
from tests.audit.test_audit_cluster import cluster_objects, refs  # noqa: F401 - fixtures
from tests.audit.proxy import CountingProxy
from tests.support.kubeapi import KubeAPIStandIn

pytestmark = pytest.mark.registry

KINDS = [("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"), ("apps/v1", "DaemonSet"), ("batch/v1", "CronJob"),
         ("batch/v1", "Job"), ("v1", "Pod"), ("v1", "Node")]


def dump_of(api: KubeAPIStandIn, path: Path, *, nodes: bool = True) -> Path:
    items = [{"apiVersion": v, "kind": k, **obj} for v, k in KINDS if nodes or k != "Node"
             for obj in api.list(k, api_version=v)]
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items,
                                    "metadata": {"resourceVersion": ""}}))
    return path


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("started", "finished")}


def audit_json(*argv: str) -> tuple[int, dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["audit", "--format", "json", "--no-cache", *argv], stdout=out, stderr=err)
    assert "Traceback" not in err.getvalue()
    return code, (json.loads(out.getvalue()) if out.getvalue() else {}), err.getvalue()


def test_a_dump_is_judged_like_the_live_cluster(cluster_objects: KubeAPIStandIn,  # noqa: F811
                                                counting_proxy: CountingProxy, tmp_path: Path) -> None:
    registry = ["--insecure-registry", counting_proxy.host]
    live_code, live, _ = audit_json("--kubeconfig", str(cluster_objects.kubeconfig_path), *registry)
    dump = dump_of(cluster_objects, tmp_path / "dump.yaml")
    cluster_objects.stop()  # offline: nothing may be asked of a cluster
    code, offline, err = audit_json("-f", str(dump), *registry)
    assert (code, err) == (live_code, "")
    assert comparable(offline) == comparable(live)
    assert offline["summary"]["workloads"] == 5 and offline["summary"]["folded_objects"] > 0
    assert offline["platforms_source"] == "nodes"


def test_a_dump_without_nodes_takes_the_platform_flag_and_namespaces(cluster_objects: KubeAPIStandIn,  # noqa: F811
                                                                     counting_proxy: CountingProxy,
                                                                     tmp_path: Path) -> None:
    dump = dump_of(cluster_objects, tmp_path / "dump.yaml", nodes=False)
    code, doc, _ = audit_json("-f", str(dump), "-n", "other", "--platform", "linux/amd64",
                              "--insecure-registry", counting_proxy.host)
    assert code == 1 and doc["summary"]["workloads"] == 1 and doc["platforms_source"] == "flag"
    assert doc["scope"]["namespaces"] == ["other"]


def test_dump_usage_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: List\nitems: []\n")
    code, _, err = audit_json("-f", str(empty))
    assert code == 2 and "no workload objects" in err and "kubectl get" in err
    code, _, err = audit_json("-f", str(empty), "--apply")
    assert code == 2 and "--apply needs a cluster" in err
    code, _, err = audit_json("-f", str(tmp_path / "missing.yaml"))
    assert (code, err) == (2, f"canrun: -f {tmp_path / 'missing.yaml'}: no such file or directory\n")
