"""Which node platforms a pod can land on: the scheduler's node filters that depend on labels.

A pod is only judged on the platforms it can actually reach, so that a
``nodeSelector: {kubernetes.io/arch: arm64}`` Deployment is not failed for its
image lacking amd64.  The filters reproduced are the ones of the scheduler's
NodeAffinity plugin (and the kubelet's admission check for ``nodeName`` pods):

* ``nodeSelector``: every label must equal;
* required node affinity: the terms are ORed, the requirements of a term ANDed;
  ``In``/``NotIn``/``Exists``/``DoesNotExist``/``Gt``/``Lt`` on labels, and
  ``matchFields`` on ``metadata.name``; an empty term matches no node;
* ``nodeName``: the scheduler is bypassed, but the kubelet still rejects a pod
  whose selectors its node does not satisfy.

Taints and tolerations are not modelled (the pod spec carries no tolerations
yet), so a pool may include nodes a pod would be kept away from.

Two kinds of pool: ``from_nodes`` (a cluster's real nodes: every label known,
an absent label is absent) and ``from_platforms`` (``--platform`` flags: one
synthetic node per platform that knows only its os/arch labels).  On a
synthetic pool a requirement on any other label cannot be judged; it is
assumed to be met (rather than excluding every node) and the placement's note
says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from canrun.platform import Platform
from canrun.spec import NodeSelectorRequirement, PodSpec

log = logging.getLogger("canrun.kube")

OS_LABELS = ("kubernetes.io/os", "beta.kubernetes.io/os")
ARCH_LABELS = ("kubernetes.io/arch", "beta.kubernetes.io/arch")
HOSTNAME_LABEL = "kubernetes.io/hostname"


@dataclass(frozen=True)
class NodeInfo:
    """A node as scheduling sees it: its name, labels, and the platform it runs images for."""

    name: str
    platform: Platform
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=True)

    @classmethod
    def from_object(cls, node: Mapping[str, Any]) -> NodeInfo:
        """A Node API object (dict): platform from the os/arch labels, else ``status.nodeInfo``."""
        meta = node.get("metadata") if isinstance(node.get("metadata"), Mapping) else {}
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()} if isinstance(meta, Mapping) else {}
        status = node.get("status") if isinstance(node.get("status"), Mapping) else {}
        info = status.get("nodeInfo") if isinstance(status, Mapping) and isinstance(status.get("nodeInfo"),
                                                                                     Mapping) else {}
        os_ = _first(labels, OS_LABELS) or str(info.get("operatingSystem") or "linux")
        arch = _first(labels, ARCH_LABELS) or str(info.get("architecture") or "amd64")
        return cls(name=str(meta.get("name") or ""), platform=Platform(os_, arch), labels=labels)


def node_info(node: Mapping[str, Any]) -> NodeInfo | None:
    """A Node object as the scheduler's view of it, or None when it reports no architecture.

    ``NodeInfo.from_object`` applies the rules (the ``kubernetes.io/os``/``arch`` labels
    that nodeSelectors match win; ``status.nodeInfo``, what the kubelet reports, fills
    in).  Nodes report no CPU variant: ``Platform`` applies containerd's default
    (``arm`` means ``arm/v7``).  A node that reports no architecture at all is left
    out rather than guessed.  (Shared by the cluster client's node list and watch and
    by an offline audit of a ``kubectl get nodes -o yaml`` dump.)
    """
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    info = (node.get("status") or {}).get("nodeInfo") or {}
    if not (any(labels.get(label) for label in ARCH_LABELS) or info.get("architecture")):
        log.warning("node %s reports no architecture; left out of the node pool", meta.get("name"))
        return None
    return NodeInfo.from_object(node)


def _first(labels: Mapping[str, str], keys: Sequence[str]) -> str | None:
    for key in keys:
        if labels.get(key):
            return labels[key]
    return None


def platform_labels(platform: Platform) -> dict[str, str]:
    """The labels a kubelet of this platform puts on its node (current and deprecated beta keys)."""
    return {OS_LABELS[0]: platform.os, OS_LABELS[1]: platform.os,
            ARCH_LABELS[0]: platform.architecture, ARCH_LABELS[1]: platform.architecture}


@dataclass(frozen=True)
class NodePool:
    """The nodes pods may be scheduled on; ``synthetic`` when only their os/arch labels are known."""

    nodes: tuple[NodeInfo, ...]
    synthetic: bool = False

    @classmethod
    def from_platforms(cls, platforms: Iterable[Platform]) -> NodePool:
        """One stand-in node per platform (``--platform``), in the order given; its platform keeps the variant."""
        nodes = tuple(NodeInfo(name=f"<{p}>", platform=p, labels=platform_labels(p))
                      for p in dict.fromkeys(platforms))
        return cls(nodes=nodes, synthetic=True)

    @classmethod
    def from_nodes(cls, nodes: Iterable[NodeInfo | Mapping[str, Any]]) -> NodePool:
        """A cluster's real nodes (NodeInfo or Node API dicts), every label known; sorted by name."""
        infos = [n if isinstance(n, NodeInfo) else NodeInfo.from_object(n) for n in nodes]
        return cls(nodes=tuple(sorted(infos, key=lambda n: n.name)), synthetic=False)

    @property
    def platforms(self) -> list[Platform]:
        """Distinct platforms: in the given order for a synthetic pool, sorted for real nodes."""
        seen = list(dict.fromkeys(n.platform for n in self.nodes))
        return seen if self.synthetic else sorted(seen)

    def node(self, name: str) -> NodeInfo | None:
        for n in self.nodes:
            if n.name == name:
                return n
        return None

    def known(self, node: NodeInfo, key: str) -> bool:
        """Whether a label's absence on this node means anything (always, except on stand-in nodes)."""
        return not self.synthetic or key in node.labels


@dataclass(frozen=True)
class Placement:
    """The platforms a pod can run on (ordered as the pool's), and why when that needs saying."""

    platforms: list[Platform]
    note: str | None = None
    #: Names of the nodes that fit (stand-in names ``<linux/amd64>`` on a synthetic pool).
    nodes: tuple[str, ...] = ()


class _Unknown:
    """Collects the requirements a synthetic pool could not judge, for the note."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)


def platforms_for(pod: PodSpec, pool: NodePool) -> Placement:
    """Where the scheduler (or, with ``nodeName``, the kubelet) would let this pod run."""
    if not pool.nodes:
        return Placement([], "no nodes are known to schedule the pod on")
    unknown = _Unknown()
    notes: list[str] = []
    candidates: Sequence[NodeInfo] = pool.nodes
    if pod.node_name:
        named = pool.node(pod.node_name)
        if named is not None:
            candidates = [named]
        else:
            what = "its platform is not known" if pool.synthetic else "no such node is known"
            notes.append(f"nodeName {pod.node_name}: {what}; judged on every platform")
    fitting = [n for n in candidates if _fits(pod, n, pool, unknown)]
    if unknown.items:
        notes.append(f"cannot tell which platforms match {', '.join(unknown.items)} without the cluster's "
                     "nodes; assumed to match")
    if not fitting:
        constraints = _describe(pod)
        where = f"node {pod.node_name}" if pod.node_name and len(candidates) == 1 else \
            "no node of platform " + ", ".join(str(p) for p in pool.platforms)
        if pod.node_name and len(candidates) == 1:
            reason = f"{where} does not satisfy {constraints}: the kubelet rejects the pod"
        else:
            reason = f"{where} satisfies {constraints}: the pod cannot be scheduled"
        return Placement([], "; ".join([reason, *notes]))
    order = {p: i for i, p in enumerate(pool.platforms)}
    platforms = sorted(dict.fromkeys(n.platform for n in fitting), key=order.__getitem__)
    return Placement(platforms, "; ".join(notes) or None, tuple(n.name for n in fitting))


def _fits(pod: PodSpec, node: NodeInfo, pool: NodePool, unknown: _Unknown) -> bool:
    for key, value in pod.node_selector.items():
        if not pool.known(node, key):
            unknown.add(f"nodeSelector {key}={value}")
            continue
        if node.labels.get(key) != value:
            return False
    if not pod.required_node_terms:
        return True
    return any(_term_fits(term, node, pool, unknown) for term in pod.required_node_terms)


def _term_fits(term: Sequence[NodeSelectorRequirement], node: NodeInfo, pool: NodePool, unknown: _Unknown) -> bool:
    if not term:
        return False  # an empty term matches no node
    for req in term:
        if req.match_field:
            if req.key != "metadata.name":
                return False  # the only field the API accepts; anything else selects nothing
            if pool.synthetic:
                unknown.add(f"matchFields metadata.name {req.operator} {','.join(req.values)}")
                continue
            present, value = True, node.name
        else:
            if not pool.known(node, req.key):
                unknown.add(f"node affinity {_requirement_text(req)}")
                continue
            present, value = req.key in node.labels, node.labels.get(req.key, "")
        if not _requirement_holds(req, present, value):
            return False
    return True


def _requirement_holds(req: NodeSelectorRequirement, present: bool, value: str) -> bool:
    op = req.operator
    if op == "In":
        return present and value in req.values
    if op == "NotIn":
        return not present or value not in req.values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(req.values) != 1:
            return False
        try:
            have, want = int(value), int(req.values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _requirement_text(req: NodeSelectorRequirement) -> str:
    if req.operator in ("Exists", "DoesNotExist"):
        return f"{req.key} {req.operator}"
    return f"{req.key} {req.operator} ({','.join(req.values)})"


def _describe(pod: PodSpec) -> str:
    parts: list[str] = []
    if pod.node_selector:
        parts.append("nodeSelector " + ", ".join(f"{k}={v}" for k, v in pod.node_selector.items()))
    if pod.required_node_terms:
        terms = [" and ".join(_requirement_text(r) for r in term) or "(empty term)"
                 for term in pod.required_node_terms]
        parts.append("required node affinity " + " or ".join(f"[{t}]" for t in terms))
    return " and ".join(parts) or "the pod's constraints"
