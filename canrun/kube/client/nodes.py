"""A Node object as the scheduler's view of it (shared by ``Cluster.list_nodes`` and ``NodeWatcher``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from canrun.kube.scheduling import ARCH_LABELS, NodeInfo

log = logging.getLogger("canrun.kube")


def node_info(node: Mapping[str, Any]) -> NodeInfo | None:
    """A Node object as the scheduler's view of it, or None when it reports no architecture.

    ``NodeInfo.from_object`` applies the rules (the ``kubernetes.io/os``/``arch`` labels
    that nodeSelectors match win; ``status.nodeInfo``, what the kubelet reports, fills
    in).  Nodes report no CPU variant: ``Platform`` applies containerd's default
    (``arm`` means ``arm/v7``).  A node that reports no architecture at all is left
    out rather than guessed.
    """
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    info = (node.get("status") or {}).get("nodeInfo") or {}
    if not (any(labels.get(label) for label in ARCH_LABELS) or info.get("architecture")):
        log.warning("node %s reports no architecture; left out of the node pool", meta.get("name"))
        return None
    return NodeInfo.from_object(node)
