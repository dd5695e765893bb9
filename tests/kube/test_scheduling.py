"""Which platforms a pod can land on: nodeSelector, required node affinity, nodeName, on both kinds of pool."""

from __future__ import annotations

import pytest

from canrun.kube.scheduling import NodeInfo, NodePool, platforms_for
from canrun.platform import Platform
from canrun.spec import Container, NodeSelectorRequirement as Req, PodSpec

AMD64, ARM64, ARMV7 = Platform("linux", "amd64"), Platform("linux", "arm64"), Platform("linux", "arm", "v7")
FLAGS = NodePool.from_platforms([AMD64, ARM64, ARMV7])
ARCH = "kubernetes.io/arch"


def pod(selector: dict[str, str] | None = None, terms: tuple[tuple[Req, ...], ...] = (),
        node_name: str | None = None) -> PodSpec:
    return PodSpec(containers=(Container("c", "img"),), node_selector=selector or {},
                   required_node_terms=terms, node_name=node_name)


@pytest.mark.parametrize(("spec", "expected"), [
    (pod(), [AMD64, ARM64, ARMV7]),
    (pod({ARCH: "arm64"}), [ARM64]),
    (pod({"beta.kubernetes.io/arch": "amd64"}), [AMD64]),
    (pod({ARCH: "arm"}), [ARMV7]),
    (pod({"kubernetes.io/os": "linux", ARCH: "amd64"}), [AMD64]),
    (pod(terms=((Req(ARCH, "In", ("amd64", "arm64")),),)), [AMD64, ARM64]),
    (pod(terms=((Req(ARCH, "NotIn", ("amd64",)),),)), [ARM64, ARMV7]),
    (pod(terms=((Req(ARCH, "Exists"),),)), [AMD64, ARM64, ARMV7]),
    (pod(terms=((Req(ARCH, "In", ("arm64",)),), (Req(ARCH, "In", ("amd64",)),))), [AMD64, ARM64]),
    (pod(terms=((Req("kubernetes.io/os", "In", ("linux",)), Req(ARCH, "In", ("arm64",))),)), [ARM64]),
    (pod({ARCH: "arm64"}, terms=((Req(ARCH, "In", ("amd64", "arm64")),),)), [ARM64]),
])
def test_flag_pool_filters_on_os_and_arch(spec: PodSpec, expected: list[Platform]) -> None:
    placement = platforms_for(spec, FLAGS)
    assert placement.platforms == expected
    assert placement.note is None


@pytest.mark.parametrize(("spec", "note"), [
    (pod({ARCH: "s390x"}),
     "no node of platform linux/amd64, linux/arm64, linux/arm/v7 satisfies nodeSelector kubernetes.io/arch=s390x: "
     "the pod cannot be scheduled"),
    (pod(terms=((Req(ARCH, "DoesNotExist"),),)),
     "no node of platform linux/amd64, linux/arm64, linux/arm/v7 satisfies required node affinity "
     "[kubernetes.io/arch DoesNotExist]: the pod cannot be scheduled"),
    (pod(terms=((),)),
     "no node of platform linux/amd64, linux/arm64, linux/arm/v7 satisfies required node affinity "
     "[(empty term)]: the pod cannot be scheduled"),
])
def test_no_platform_fits_says_why(spec: PodSpec, note: str) -> None:
    placement = platforms_for(spec, FLAGS)
    assert placement.platforms == []
    assert placement.note == note


def test_flag_pool_assumes_unknown_labels_match_and_says_so() -> None:
    placement = platforms_for(pod({"disktype": "ssd", ARCH: "arm64"}), FLAGS)
    assert placement.platforms == [ARM64]
    assert placement.note == ("cannot tell which platforms match nodeSelector disktype=ssd without the cluster's "
                              "nodes; assumed to match")
    placement = platforms_for(pod(terms=((Req("cores", "Gt", ("8",)), Req(ARCH, "In", ("amd64",))),
                                         (Req("zone", "NotIn", ("a",)),))), FLAGS)
    assert placement.platforms == [AMD64, ARM64, ARMV7]
    assert placement.note is not None and "node affinity cores Gt (8)" in placement.note \
        and "node affinity zone NotIn (a)" in placement.note
    placement = platforms_for(pod(node_name="worker-7"), FLAGS)
    assert placement.platforms == [AMD64, ARM64, ARMV7]
    assert placement.note == "nodeName worker-7: its platform is not known; judged on every platform"
    placement = platforms_for(pod(terms=((Req("metadata.name", "In", ("n1",), match_field=True),),)), FLAGS)
    assert placement.platforms == [AMD64, ARM64, ARMV7]
    assert "matchFields metadata.name In n1" in (placement.note or "")


def test_flag_pool_keeps_variant_and_order() -> None:
    pool = NodePool.from_platforms([ARMV7, AMD64, ARMV7])
    assert pool.platforms == [ARMV7, AMD64]
    assert pool.nodes[0].labels == {"kubernetes.io/os": "linux", "beta.kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "arm", "beta.kubernetes.io/arch": "arm"}
    assert platforms_for(pod(), pool).platforms == [ARMV7, AMD64]


CLUSTER = NodePool.from_nodes([
    NodeInfo("n3", AMD64, {ARCH: "amd64", "gpu": "true", "cores": "16", "kubernetes.io/hostname": "n3"}),
    NodeInfo("n2", ARM64, {ARCH: "arm64", "disk": "hdd", "cores": "64", "kubernetes.io/hostname": "n2"}),
    NodeInfo("n1", AMD64, {ARCH: "amd64", "disk": "ssd", "cores": "8", "kubernetes.io/hostname": "n1"}),
])


@pytest.mark.parametrize(("spec", "nodes"), [
    (pod(), ("n1", "n2", "n3")),
    (pod({"disk": "ssd"}), ("n1",)),
    (pod(terms=((Req("disk", "NotIn", ("ssd",)),),)), ("n2", "n3")),  # absent label: NotIn holds
    (pod(terms=((Req("disk", "In", ("ssd", "hdd")),),)), ("n1", "n2")),
    (pod(terms=((Req("gpu", "DoesNotExist"),),)), ("n1", "n2")),
    (pod(terms=((Req("gpu", "Exists"),),)), ("n3",)),
    (pod(terms=((Req("cores", "Gt", ("10",)),),)), ("n2", "n3")),
    (pod(terms=((Req("cores", "Lt", ("10",)),),)), ("n1",)),
    (pod(terms=((Req("disk", "Gt", ("1",)),),)), ()),  # not an integer: no match
    (pod(terms=((Req("metadata.name", "In", ("n3",), match_field=True),),)), ("n3",)),  # DaemonSet pods
    (pod(terms=((Req("gpu", "Exists"),), (Req("disk", "In", ("hdd",)),))), ("n2", "n3")),
    (pod({"kubernetes.io/hostname": "n2"}), ("n2",)),
    (pod(node_name="n2"), ("n2",)),
])
def test_real_nodes_every_label_known(spec: PodSpec, nodes: tuple[str, ...]) -> None:
    placement = platforms_for(spec, CLUSTER)
    assert placement.nodes == nodes
    by_name = {n.name: n.platform for n in CLUSTER.nodes}
    assert placement.platforms == sorted({by_name[n] for n in nodes})
    assert (placement.note is None) == bool(nodes)


def test_real_nodes_node_name_cases() -> None:
    placement = platforms_for(pod({"disk": "ssd"}, node_name="n2"), CLUSTER)
    assert placement.platforms == []
    assert placement.note == "node n2 does not satisfy nodeSelector disk=ssd: the kubelet rejects the pod"
    placement = platforms_for(pod(node_name="gone"), CLUSTER)
    assert placement.platforms == [AMD64, ARM64]
    assert placement.note == "nodeName gone: no such node is known; judged on every platform"


def test_from_node_objects_and_empty_pool() -> None:
    pool = NodePool.from_nodes([
        {"metadata": {"name": "pi", "labels": {"kubernetes.io/arch": "arm", "kubernetes.io/os": "linux"}}},
        {"metadata": {"name": "old", "labels": {"beta.kubernetes.io/arch": "arm64"}}},
        {"metadata": {"name": "bare"}, "status": {"nodeInfo": {"operatingSystem": "linux", "architecture": "amd64"}}},
    ])
    assert [(n.name, str(n.platform)) for n in pool.nodes] == [
        ("bare", "linux/amd64"), ("old", "linux/arm64"), ("pi", "linux/arm/v7")]
    assert pool.platforms == [AMD64, ARMV7, ARM64]
    assert platforms_for(pod({"kubernetes.io/arch": "arm64"}), pool).platforms == []  # "old" has the beta label only
    assert platforms_for(pod({"beta.kubernetes.io/arch": "arm64"}), pool).platforms == [ARM64]
    empty = platforms_for(pod(), NodePool.from_nodes([]))
    assert empty.platforms == [] and empty.note == "no nodes are known to schedule the pod on"
