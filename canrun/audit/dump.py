"""An audit of a saved ``kubectl get … -A -o yaml`` dump: the same folding and reports, no cluster.

A dump is what ``kubectl get deploy,rs,sts,ds,cronjob,job,rc,pods,nodes -A -o yaml``
prints: a ``kind: List`` whose items carry their apiVersion, kind, uids and
ownerReferences, exactly as the API server sent them.  So the inventory folds
them as it folds a live listing (``build_inventory``), and the judging and every
report format are the live audit's.  Nodes in the dump give the platforms, as a
live audit reads them from the cluster; without any, ``--platform`` or the
default applies.  Nothing here talks to a cluster, so a dump taken where canrun
may not run (an air-gapped cluster, a customer's) can be judged elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from canrun.audit.inventory import WORKLOAD_KINDS, build_inventory
from canrun.audit.model import AuditRun
from canrun.audit.scan import judge, node_pool, would_pin
from canrun.errors import ManifestError, UsageError
from canrun.kube.manifests import load_objects
from canrun.kube.scheduling import NodeInfo, node_info
from canrun.platform import Platform
from canrun.validator import Validator

Progress = Callable[[int, int], None]
_WORKLOAD_KINDS = frozenset(kind for _, kind in WORKLOAD_KINDS)
_MAX_LIST_NESTING = 4


class _DumpNodes:
    """The nodes of a dump, where ``node_pool`` expects a cluster."""

    def __init__(self, nodes: list[NodeInfo]) -> None:
        self.nodes = nodes

    def list_nodes(self) -> list[NodeInfo]:
        return self.nodes


def read_dump(paths: Sequence[str], *, stdin: TextIO | None = None
              ) -> tuple[list[dict[str, Any]], list[NodeInfo], list[ManifestError]]:
    """The workload objects and the nodes of dump files (Lists expanded), and what could not be read."""
    loaded = load_objects(paths, stdin=stdin)
    errors = list(loaded.errors)
    objects: list[dict[str, Any]] = []
    nodes: list[NodeInfo] = []
    stack: list[tuple[Mapping[str, Any], int]] = [(o.obj, 0) for o in reversed(loaded.objects)]
    while stack:
        obj, depth = stack.pop()
        kind = obj.get("kind")
        items = obj.get("items")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
            if depth >= _MAX_LIST_NESTING:
                errors.append(ManifestError("Lists nested too deeply; not read"))
                continue
            stack.extend((item, depth + 1) for item in reversed(items) if isinstance(item, Mapping))
        elif kind == "Node":
            info = node_info(obj)
            if info is not None:
                nodes.append(info)
        elif kind in _WORKLOAD_KINDS:
            objects.append(dict(obj))
    return objects, nodes, errors


async def audit_dump(paths: Sequence[str], validator: Validator, *, stdin: TextIO | None = None,
                     namespaces: Sequence[str] | None = None, platforms: Sequence[Platform] | None = None,
                     progress: Progress | None = None) -> AuditRun:
    """Fold and judge the workloads of a dump (only ``namespaces`` when given) as a live audit would."""
    started = datetime.now(timezone.utc)
    objects, nodes, errors = await asyncio.to_thread(read_dump, paths, stdin=stdin)
    if not objects and not errors:
        raise UsageError(f"{', '.join(paths)}: no workload objects (Deployment, Pod, CronJob …) in the dump; "
                         "save one with kubectl get deploy,rs,sts,ds,cronjob,job,rc,pods,nodes -A -o yaml")
    if namespaces:
        wanted = set(namespaces)
        objects = [o for o in objects if (o.get("metadata") or {}).get("namespace") in wanted]
    inventory = build_inventory(objects)
    inventory.errors[:0] = errors
    pool, seen, source = await node_pool(_DumpNodes(nodes), platforms)
    report = await judge(validator, inventory.workloads, pool, progress=progress)
    return AuditRun(report=report, inventory=inventory, platforms=seen, platforms_source=source,
                    namespaces=list(namespaces) if namespaces else None, label_selector=None,
                    started=started, finished=datetime.now(timezone.utc),
                    pins=would_pin(inventory.workloads, report, pool))
