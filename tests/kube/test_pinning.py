"""The pin plan and its patch: every composition rule, the patch applied and validated against the schema."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from canrun.findings import Finding, Severity, finding
from canrun.kube.pinning import (
    PINNED_ANNOTATION,
    PINNED_REASON_ANNOTATION,
    PinAction,
    json_patch,
    owned_and_pinned,
    plan_pin,
    strategic_patch,
)
from canrun.kube.objects import pod_template_path as template_path_for
from canrun.kube.scheduling import NodeInfo, NodePool, platform_labels
from canrun.kube.workloads import workload_from_object
from canrun.platform import Platform

AMD64, ARM64 = Platform.parse("linux/amd64"), Platform.parse("linux/arm64")
SYNTHETIC = NodePool.from_platforms([AMD64, ARM64])
SCHEMA_VERSION = kubernetes_validate.utils.latest_version()


def deployment(**pod: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "app", "image": "registry.example/app:1"}], **pod}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "app", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                     "template": {"metadata": {"labels": {"app": "a"}}, "spec": spec}}}


def pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}], **spec}}


def fails_on(*platforms: str, rule: str = "command-not-found", container: str = "app") -> list[Finding]:
    return [finding(rule, "…", container=container, platform=",".join(platforms))]


def plan_for(obj: dict[str, Any], findings: list[Finding], pool: NodePool = SYNTHETIC):
    workload = workload_from_object(obj)
    assert workload is not None
    return plan_pin(workload, findings, pool)


def apply(obj: dict[str, Any], findings: list[Finding], pool: NodePool = SYNTHETIC) -> dict[str, Any]:
    """Plan, patch, check the result against the Kubernetes schema, and return it."""
    plan = plan_for(obj, findings, pool)
    ops = json_patch(obj, template_path_for(obj["kind"]), plan)
    patched = jsonpatch.apply_patch(obj, ops)
    kubernetes_validate.validate(patched, SCHEMA_VERSION, strict=True)
    return patched


def terms(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
    return spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]


def test_pins_to_the_platforms_where_every_container_runs() -> None:
    obj = deployment()
    plan = plan_for(obj, fails_on("linux/arm64"))
    assert plan.action is PinAction.PIN and plan.kept == "linux/amd64"
    assert "linux/arm64: command-not-found (app)" in plan.warning()
    patched = apply(obj, fails_on("linux/arm64"))
    assert terms(patched) == [{"matchExpressions": [
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]
    for meta in (patched["metadata"], patched["spec"]["template"]["metadata"]):
        assert meta["annotations"][PINNED_ANNOTATION] == "linux/amd64"
        assert "command-not-found" in meta["annotations"][PINNED_REASON_ANNOTATION]
    # the pinned object, judged again with the same findings, reaches only amd64: nothing left to pin
    again = plan_for(patched, fails_on("linux/arm64"))
    assert again.action is PinAction.NONE and again.reachable == (AMD64,)


def test_second_admission_of_the_pinned_object_yields_the_same_object() -> None:
    once = apply(deployment(), fails_on("linux/arm64"))
    twice = apply(once, fails_on("linux/arm64"))
    assert twice == once


def test_init_and_sidecar_failures_count_like_regular_containers() -> None:
    obj = deployment(initContainers=[{"name": "init", "image": "registry.example/init:1"}])
    plan = plan_for(obj, fails_on("linux/amd64", container="init"))
    assert plan.action is PinAction.PIN and plan.kept == "linux/arm64"


def test_existing_required_affinity_is_intersected_in_every_term() -> None:
    user_terms = [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]},
                  {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]
    obj = deployment(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": copy.deepcopy(user_terms)}},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}})
    patched = apply(obj, fails_on("linux/arm64"))
    got = terms(patched)
    assert len(got) == 2
    arch = {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
    assert got[0]["matchExpressions"] == user_terms[0]["matchExpressions"] + [arch]
    assert got[1]["matchFields"] == user_terms[1]["matchFields"] and got[1]["matchExpressions"] == [arch]
    assert "podAntiAffinity" in patched["spec"]["template"]["spec"]["affinity"]  # nothing else replaced


def test_affinity_without_node_affinity_keeps_its_other_parts() -> None:
    obj = pod(affinity={"podAffinity": {}})
    patched = apply(obj, fails_on("linux/arm64"))
    assert patched["spec"]["affinity"]["podAffinity"] == {}
    assert terms(patched)[0]["matchExpressions"][0]["values"] == ["amd64"]
    assert patched["metadata"]["annotations"][PINNED_ANNOTATION] == "linux/amd64"


def test_a_pod_that_already_excludes_the_bad_platform_gets_no_patch() -> None:
    obj = deployment(nodeSelector={"kubernetes.io/arch": "amd64"})
    plan = plan_for(obj, fails_on("linux/arm64"))
    assert plan.action is PinAction.NONE
    assert json_patch(obj, template_path_for("Deployment"), plan) == []


def test_node_selector_on_the_only_bad_platform_is_denied_not_rewritten() -> None:
    plan = plan_for(deployment(nodeSelector={"kubernetes.io/arch": "arm64"}), fails_on("linux/arm64"))
    assert plan.action is PinAction.DENY


def test_node_name_is_respected() -> None:
    nodes = NodePool.from_nodes([NodeInfo("a1", AMD64, platform_labels(AMD64)),
                                 NodeInfo("r1", ARM64, platform_labels(ARM64))])
    plan = plan_for(pod(nodeName="r1"), fails_on("linux/arm64"), nodes)
    assert plan.action is PinAction.DENY  # the kubelet of r1 runs it; no affinity can move it
    assert plan_for(pod(nodeName="a1"), fails_on("linux/arm64"), nodes).action is PinAction.NONE


def test_all_platforms_fine_means_no_patch_and_none_fine_means_deny() -> None:
    assert plan_for(deployment(), []).action is PinAction.NONE
    warning_only = [finding("image-corrupt", "…", severity=Severity.WARNING, platform="linux/arm64")]
    assert plan_for(deployment(), warning_only).action is PinAction.NONE
    assert plan_for(deployment(), fails_on("linux/amd64", "linux/arm64")).action is PinAction.DENY
    # a finding that names no platform fails on every platform
    assert plan_for(deployment(), [finding("nonroot-conflict", "…", container="app")]).action is PinAction.DENY


def test_an_unreadable_image_pins_nothing() -> None:
    found = fails_on("linux/arm64") + [finding("image-unresolvable", "timeout", platform="linux/amd64")]
    plan = plan_for(deployment(), found)
    assert plan.action is PinAction.UNKNOWN
    assert json_patch(deployment(), template_path_for("Deployment"), plan) == []


def test_platforms_that_differ_only_by_variant_cannot_be_pinned() -> None:
    v6, v7 = Platform.parse("linux/arm/v6"), Platform.parse("linux/arm/v7")
    plan = plan_for(deployment(), fails_on("linux/arm/v6"), NodePool.from_platforms([v6, v7]))
    assert plan.action is PinAction.DENY and "variant" in (plan.note or "")


def test_os_is_pinned_only_when_it_tells_platforms_apart() -> None:
    win = Platform.parse("windows/amd64")
    pool = NodePool.from_platforms([AMD64, ARM64, win])
    plan = plan_for(deployment(), fails_on("linux/arm64"), pool)
    assert plan.requirements == (({"key": "kubernetes.io/os", "operator": "In", "values": ["linux", "windows"]},
                                  {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}),)
    # not a cross product: linux/amd64 and windows/arm64 kept, linux/arm64 and windows/amd64 out
    win_arm = Platform.parse("windows/arm64")
    pool = NodePool.from_platforms([AMD64, ARM64, win, win_arm])
    obj = deployment(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "Exists"}]}]}}})
    patched = apply(obj, fails_on("linux/arm64", "windows/amd64"), pool)
    pairs = [tuple(r["values"][0] for r in t["matchExpressions"][1:]) for t in terms(patched)]
    assert pairs == [("linux", "amd64"), ("windows", "arm64")]
    assert all(t["matchExpressions"][0]["key"] == "pool" for t in terms(patched))
    assert plan_for(patched, fails_on("linux/arm64", "windows/amd64"), pool).action is PinAction.NONE


def test_cronjob_and_pod_paths() -> None:
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "shop"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "app", "image": "registry.example/app:1"}]}}}}}}
    plan = plan_for(cron, fails_on("linux/arm64"))
    patched = jsonpatch.apply_patch(cron, json_patch(cron, template_path_for("CronJob"), plan))
    kubernetes_validate.validate(patched, SCHEMA_VERSION, strict=True)
    template = patched["spec"]["jobTemplate"]["spec"]["template"]
    assert template["metadata"]["annotations"][PINNED_ANNOTATION] == "linux/amd64"
    assert template["spec"]["affinity"]["nodeAffinity"]
    assert plan_for(patched, fails_on("linux/arm64")).action is PinAction.NONE


def test_annotation_keys_are_escaped_as_json_pointers() -> None:
    obj = pod()
    obj["metadata"]["annotations"] = {"team": "shop"}
    ops = json_patch(obj, template_path_for("Pod"), plan_for(obj, fails_on("linux/arm64")))
    assert {"op": "add", "path": "/metadata/annotations/canrun.io~1pinned", "value": "linux/amd64"} in ops
    assert jsonpatch.apply_patch(obj, ops)["metadata"]["annotations"]["team"] == "shop"


def test_strategic_merge_patch_is_the_same_change() -> None:
    obj = deployment(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}]}}})
    plan = plan_for(obj, fails_on("linux/arm64"))
    smp = strategic_patch(obj, template_path_for("Deployment"), plan)
    via_json = jsonpatch.apply_patch(obj, json_patch(obj, template_path_for("Deployment"), plan))
    assert smp["metadata"] == {"name": "app", "namespace": "shop",
                               "annotations": via_json["metadata"]["annotations"]}
    assert smp["spec"]["template"]["spec"]["affinity"] == via_json["spec"]["template"]["spec"]["affinity"]
    assert smp["spec"]["template"]["metadata"]["annotations"][PINNED_ANNOTATION] == "linux/amd64"
    assert strategic_patch(obj, template_path_for("Deployment"), plan_for(obj, [])) == {}


@pytest.mark.parametrize("meta, expected", [
    ({"annotations": {PINNED_ANNOTATION: "linux/amd64"},
      "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}]}, True),
    ({"annotations": {PINNED_ANNOTATION: "linux/amd64"}}, False),
    ({"ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}]}, False),
])
def test_pods_of_a_pinned_template_are_left_alone(meta: dict[str, Any], expected: bool) -> None:
    assert owned_and_pinned({"kind": "Pod", "metadata": meta}) is expected
