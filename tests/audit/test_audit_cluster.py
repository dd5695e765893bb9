"""``canrun audit`` end to end: the API stand-in through the official client, real images in a real registry.

The registry sits behind a counting proxy, so "each image and layer is fetched
once per run" is checked on the wire, not inferred from the code.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from canrun.audit.inventory import collect
from canrun.audit.scan import audit, judge
from canrun.cli import main
from canrun.config import CacheSettings, RegistryAccess, Settings, open_engine
from canrun.kube.client import Cluster, load_api_client
from canrun.kube.scheduling import NodePool
from canrun.platform import Platform
from tests.audit.conftest import cronjob_chain, daemonset_chain, deployment_chain, node, pod, pod_spec
from tests.audit.proxy import CountingProxy
from tests.support.images import Catalogue
from tests.support.kubeapi import KubeAPIStandIn

pytestmark = pytest.mark.registry

class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


SCHEMA = json.loads((Path(__file__).parent / "data" / "policyreport-v1alpha2.schema.json").read_text())


@pytest.fixture(scope="module")
def refs(catalogue: Catalogue, counting_proxy: CountingProxy, local_registry: Any) -> dict[str, str]:
    """Catalogue references rewritten to go through the counting proxy."""
    def via(name: str) -> str:
        return catalogue.ref(name).replace(local_registry.host, counting_proxy.host, 1)
    return {"good": via("busybox-amd64"), "broken": via("mode644"), "nouser": via("missing-user")}


@pytest.fixture
def cluster_objects(kubeapi: KubeAPIStandIn, refs: dict[str, str]) -> KubeAPIStandIn:
    """shop: Deployment(broken)+RS+Pods, CronJob(no user)+Jobs+Pods, a bare Pod, a DaemonSet+Pods; other: a
    Deployment sharing the broken image."""
    objects = (deployment_chain("web", "shop", pod_spec(refs["broken"]), replicas=3, old_revisions=1)
               + cronjob_chain("backup", "shop", pod_spec(refs["nouser"]), runs=2)
               + [pod("debug", "shop", pod_spec(refs["good"]))]
               + daemonset_chain("agent", "shop", pod_spec(refs["good"]), nodes=2)
               + deployment_chain("clone", "other", pod_spec(refs["broken"]), replicas=2, old_revisions=0)
               + [node("n1"), node("n2")])
    for obj in objects:
        kubeapi.add(obj)
    return kubeapi


def _engine_settings(proxy: CountingProxy, cache_dir: Path) -> Settings:
    """A cold engine: an empty cache directory of its own (the CLI's default is to cache)."""
    return Settings(registry=RegistryAccess(insecure=(proxy.host,)), cache=CacheSettings(dir=cache_dir))


async def _audit(api: KubeAPIStandIn, proxy: CountingProxy, cache_dir: Path, **kw: Any):
    cluster = Cluster(load_api_client(str(api.kubeconfig_path)))
    async with open_engine(_engine_settings(proxy, cache_dir)) as engine:
        return await audit(cluster, engine.validator, **kw)


def test_each_controller_judged_once_and_each_blob_fetched_once(cluster_objects: KubeAPIStandIn,
                                                               counting_proxy: CountingProxy,
                                                               tmp_path: Path) -> None:
    counting_proxy.reset()
    run = asyncio.run(_audit(cluster_objects, counting_proxy, tmp_path / "cache"))

    judged = sorted((i.ref.kind, i.ref.namespace, i.ref.name) for i in run.inventory.items)
    assert judged == [("CronJob", "shop", "backup"), ("DaemonSet", "shop", "agent"), ("Deployment", "other", "clone"),
                      ("Deployment", "shop", "web"), ("Pod", "shop", "debug")]
    assert run.report.workloads == 5
    assert run.platforms == [Platform("linux", "amd64")] and run.platforms_source == "nodes"

    errors = sorted((f.rule, f.resource.kind, f.resource.namespace, f.resource.name) for f in run.report.errors)
    assert errors == [("command-not-executable", "Deployment", "other", "clone"),
                      ("command-not-executable", "Deployment", "shop", "web"),
                      ("user-not-found", "CronJob", "shop", "backup")]
    assert not any(f.resource.kind in ("Pod", "ReplicaSet", "Job") for f in run.report.findings
                   if f.resource.name != "debug")

    fetched = counting_proxy.content_fetches()
    assert fetched, "the audit read nothing through the proxy"
    assert {path: n for path, n in fetched.items() if n > 1} == {}
    heads = counting_proxy.counts("HEAD")
    assert {path: n for path, n in heads.items() if n > 1} == {}
    # three distinct references were resolved, no more
    tags = {p for p in list(fetched) + list(heads) if "/manifests/" in p and "sha256:" not in p}
    assert len(tags) == 3


def test_judging_each_distinct_pod_spec_once_equals_judging_every_workload(
        cluster_objects: KubeAPIStandIn, counting_proxy: CountingProxy, tmp_path: Path) -> None:
    async def both() -> tuple[Any, Any]:
        cluster = Cluster(load_api_client(str(cluster_objects.kubeconfig_path)))
        inventory = await collect(cluster)
        pool = NodePool.from_platforms([Platform("linux", "amd64")])
        async with open_engine(_engine_settings(counting_proxy, tmp_path / "cache")) as engine:
            return (await judge(engine.validator, inventory.workloads, pool),
                    await engine.validator.check(inventory.workloads, pool))

    folded, every = asyncio.run(both())
    assert folded.findings == every.findings and folded.suppressed == every.suppressed
    assert (folded.workloads, folded.containers, folded.images) == (every.workloads, every.containers, every.images)
    assert {f.resource.name for f in folded.errors} == {"web", "clone", "backup"}


def test_cli_audit_applies_policy_reports_idempotently(cluster_objects: KubeAPIStandIn,
                                                      counting_proxy: CountingProxy, tmp_path: Path) -> None:
    api = cluster_objects
    argv = ["audit", "--kubeconfig", str(api.kubeconfig_path), "--insecure-registry", counting_proxy.host,
            "--no-cache", "--format", "json", "--apply"]
    out, err = io.StringIO(), _Tty()
    assert main(argv, stdout=out, stderr=err) == 1, err.getvalue()
    doc = json.loads(out.getvalue())
    assert doc["summary"]["errors"] == 3 and doc["summary"]["workloads"] == 5
    assert "applied 2 PolicyReport(s)" in err.getvalue()
    # stderr is a terminal: a progress bar was drawn, and wiped before the next line
    assert re.search(r"\rcanrun: \[#*-+\] [1-4]/5 workloads", err.getvalue())
    assert "\r\033[Kcanrun: applied 2 PolicyReport(s)\n" in err.getvalue()

    reports = {r["metadata"]["name"]: r for r in api.list("PolicyReport", api_version="wgpolicyk8s.io/v1alpha2")}
    assert set(reports) == {"canrun-shop", "canrun-other"}
    for report in reports.values():
        jsonschema.validate({k: v for k, v in report.items() if k != "metadata"} | {"metadata": {
            k: report["metadata"][k] for k in ("name", "namespace", "labels")}}, SCHEMA)
    shop = reports["canrun-shop"]
    assert shop["summary"] == {"pass": 2, "fail": 2, "warn": 0, "error": 0, "skip": 0}
    uid = api.get("Deployment", "web", "shop")["metadata"]["uid"]
    assert any(r["resources"][0].get("uid") == uid and r["result"] == "fail" for r in shop["results"])

    # the same audit again: the same two objects, updated in place
    assert main(argv, stdout=io.StringIO(), stderr=io.StringIO()) == 1
    again = {r["metadata"]["name"]: r for r in api.list("PolicyReport", api_version="wgpolicyk8s.io/v1alpha2")}
    assert set(again) == set(reports)
    assert again["canrun-shop"]["metadata"]["uid"] == shop["metadata"]["uid"]
    assert again["canrun-shop"]["metadata"]["generation"] == 2

    # the failing workload in "other" is deleted: its report is emptied, not left stale
    for obj in api.list("Deployment", "other") + api.list("ReplicaSet", "other") + api.list("Pod", "other"):
        api.remove(obj["kind"], obj["metadata"]["name"], "other")
    html_out = tmp_path / "audit.html"
    code = main(argv[:-3] + ["--format", "html", "--output", str(html_out), "--apply"],
                stdout=io.StringIO(), stderr=io.StringIO())
    assert code == 1 and html_out.read_text().startswith("<!DOCTYPE html>")
    other = api.get("PolicyReport", "canrun-other", "other", api_version="wgpolicyk8s.io/v1alpha2")
    assert other is not None and other["results"] == [] and other["summary"]["fail"] == 0


def test_cli_audit_scoped_by_namespace_and_selector(cluster_objects: KubeAPIStandIn,
                                                    counting_proxy: CountingProxy) -> None:
    out = io.StringIO()
    code = main(["audit", "--kubeconfig", str(cluster_objects.kubeconfig_path), "-n", "shop", "-l", "app=agent",
                 "--insecure-registry", counting_proxy.host, "--no-cache", "--format", "json"],
                stdout=out, stderr=io.StringIO())
    doc = json.loads(out.getvalue())
    assert code == 0 and doc["summary"]["workloads"] == 1 and doc["summary"]["errors"] == 0
    assert doc["scope"] == {"namespaces": ["shop"], "labelSelector": "app=agent"}


def test_cli_audit_prints_policy_reports_as_yaml(cluster_objects: KubeAPIStandIn,
                                                 counting_proxy: CountingProxy) -> None:
    """``--format policyreport`` without ``--apply``: a YAML stream for ``kubectl apply -f -``, nothing written."""
    out, err = io.StringIO(), io.StringIO()
    code = main(["audit", "--kubeconfig", str(cluster_objects.kubeconfig_path), "-n", "shop",
                 "--insecure-registry", counting_proxy.host, "--no-cache", "--format", "policyreport"],
                stdout=out, stderr=err)
    assert code == 1, err.getvalue()
    assert "\r" not in err.getvalue()  # not a terminal: no progress bar
    reports = [d for d in yaml.safe_load_all(out.getvalue()) if d]
    assert [(r["kind"], r["metadata"]["name"], r["metadata"]["namespace"]) for r in reports] == [
        ("PolicyReport", "canrun-shop", "shop")]
    jsonschema.validate(reports[0], SCHEMA)
    assert reports[0]["summary"] == {"pass": 2, "fail": 2, "warn": 0, "error": 0, "skip": 0}
    assert cluster_objects.list("PolicyReport", api_version="wgpolicyk8s.io/v1alpha2") == []


def test_cli_audit_with_platform_flag_ignores_nodes(cluster_objects: KubeAPIStandIn,
                                                    counting_proxy: CountingProxy) -> None:
    out = io.StringIO()
    code = main(["audit", "--kubeconfig", str(cluster_objects.kubeconfig_path), "-n", "shop", "-l", "app=agent",
                 "--platform", "linux/arm64", "--insecure-registry", counting_proxy.host, "--no-cache",
                 "--format", "markdown"], stdout=out, stderr=io.StringIO())
    assert code == 1  # the amd64-only busybox cannot run on arm64 nodes
    assert "linux/arm64 (flag)" in out.getvalue()


@pytest.fixture
def stopped_api(tmp_path: Path) -> Iterator[KubeAPIStandIn]:
    api = KubeAPIStandIn(tmp_path / "gone").start()
    api.stop()
    yield api


def test_unreachable_cluster_is_exit_2_with_one_line(stopped_api: KubeAPIStandIn) -> None:
    err = io.StringIO()
    code = main(["audit", "--kubeconfig", str(stopped_api.kubeconfig_path), "--timeout", "5"],
                stdout=io.StringIO(), stderr=err)
    assert code == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err.getvalue()
    # the operating system's words, not urllib3's "Max retries exceeded … (Caused by NewConnectionError(…))"
    assert re.fullmatch(rf"canrun: cannot reach the Kubernetes API at {re.escape(stopped_api.url)} while "
                        r"(listing|reading) [a-z ]+: connection refused", lines[0]), lines[0]


def test_bad_usage_is_exit_2(tmp_path: Path) -> None:
    err = io.StringIO()
    assert main(["audit", "--format", "pdf"], stdout=io.StringIO(), stderr=err) == 2
    assert "invalid choice" in err.getvalue()
    err = io.StringIO()
    assert main(["audit", "--kubeconfig", str(tmp_path / "missing")], stdout=io.StringIO(), stderr=err) == 2
    assert err.getvalue() == f"canrun: --kubeconfig {tmp_path / 'missing'}: the file does not exist\n"


def test_audit_reports_the_workloads_pin_mode_would_change(kubeapi: KubeAPIStandIn, refs: dict[str, str],
                                                           counting_proxy: CountingProxy, tmp_path: Path) -> None:
    """Mixed nodes: an amd64-only image is pinnable to amd64; one that runs nowhere is not (enforce denies)."""
    for obj in (deployment_chain("api", "shop", pod_spec(refs["good"]), replicas=1, old_revisions=0)
                + deployment_chain("web", "shop", pod_spec(refs["broken"]), replicas=1, old_revisions=0)
                + [node("n1"), node("n2", arch="arm64")]):
        kubeapi.add(obj)
    run = asyncio.run(_audit(kubeapi, counting_proxy, tmp_path / "cache"))
    assert [(p.workload.resource.name, [str(x) for x in p.plan.runnable]) for p in run.pins] == \
        [("api", ["linux/amd64"])]
    out = io.StringIO()
    code = main(["audit", "--kubeconfig", str(kubeapi.kubeconfig_path), "--insecure-registry",
                 counting_proxy.host, "--no-cache", "--format", "json"], stdout=out, stderr=io.StringIO())
    assert code == 1
    doc = json.loads(out.getvalue())
    assert doc["summary"]["pinnable_workloads"] == 1
    [pin] = doc["pins"]
    assert pin["label"] == "Deployment shop/api" and pin["kept"] == ["linux/amd64"]
    assert pin["excluded"][0]["platform"] == "linux/arm64" 
    assert pin["excluded"][0]["because"] == ["exec-format (app)"]  # a single-manifest x86-64 image
    md = io.StringIO()
    main(["audit", "--kubeconfig", str(kubeapi.kubeconfig_path), "--insecure-registry", counting_proxy.host,
          "--no-cache"], stdout=md, stderr=io.StringIO())
    assert "## Pin mode would pin" in md.getvalue() and "| Deployment shop/api | linux/amd64 |" in md.getvalue()
