"""One audit run: list the cluster's workloads, judge them with the shared engine, keep what a report needs.

The judging is exactly what the webhook and ``canrun check`` do —
``workload_from_object`` then ``Validator.check`` — so a Deployment audited
here gets the same findings it would get at admission.  ``judge_objects`` is
that shared path for raw API objects; the webhook's audit mode and this module
both go through it, and a test holds them to it.

Images are read once per run whatever the number of workloads using them: the
validator checks all workloads concurrently and the ``ImageStore`` shares one
in-flight fetch per reference, manifest and layer digest and keeps the views in
memory (``bench/bench_audit.py`` counts the registry requests to prove it).

Node platforms come from the cluster's own Nodes unless ``--platform`` names
them, so an arm64 node pool is taken into account without being told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

from canrun.audit.inventory import ObjectLister, collect
from canrun.audit.model import AuditRun
from canrun.kube.scheduling import NodeInfo, NodePool
from canrun.kube.workloads import workload_from_object
from canrun.platform import Platform
from canrun.spec import SourceLocation, Workload
from canrun.validator import Report, Validator

DEFAULT_PLATFORMS = (Platform("linux", "amd64"),)

Progress = Callable[[int, int], None]


class AuditCluster(ObjectLister, Protocol):
    """The part of ``canrun.kube.client.Cluster`` an audit uses (reads only; writes are PolicyReports)."""

    def list_nodes(self) -> list[NodeInfo]: ...


async def node_pool(cluster: AuditCluster, platforms: Sequence[Platform] | None) -> tuple[NodePool, list[Platform], str]:
    """The pool pods are judged against: the flag's platforms, else the cluster's nodes, else the default."""
    if platforms:
        return NodePool.from_platforms(list(platforms)), list(platforms), "flag"
    nodes = await asyncio.to_thread(cluster.list_nodes)
    if not nodes:
        return NodePool.from_platforms(list(DEFAULT_PLATFORMS)), list(DEFAULT_PLATFORMS), "default"
    seen = list(dict.fromkeys(n.platform for n in nodes))
    return NodePool.from_nodes(nodes), seen, "nodes"


async def audit(cluster: AuditCluster, validator: Validator, *, namespaces: Sequence[str] | None = None,
                label_selector: str | None = None, platforms: Sequence[Platform] | None = None,
                progress: Progress | None = None) -> AuditRun:
    """List, fold and judge every workload in the cluster (or ``namespaces``) matching ``label_selector``."""
    started = datetime.now(timezone.utc)
    (pool, seen, source), inventory = await asyncio.gather(
        node_pool(cluster, platforms),
        collect(cluster, namespaces=namespaces, label_selector=label_selector))
    report = await validator.check(inventory.workloads, pool, progress=progress)
    return AuditRun(report=report, inventory=inventory, platforms=seen, platforms_source=source,
                    namespaces=list(namespaces) if namespaces else None, label_selector=label_selector,
                    started=started, finished=datetime.now(timezone.utc))


def workloads_of(objects: Sequence[Mapping[str, Any]]) -> list[Workload]:
    """Raw API objects to workloads, the way every door reads them (kinds without a pod spec dropped)."""
    found = (workload_from_object(obj, SourceLocation()) for obj in objects)
    return [w for w in found if w is not None]


async def judge_objects(objects: Sequence[Mapping[str, Any]], validator: Validator, pool: NodePool, *,
                        progress: Progress | None = None) -> Report:
    """The one path from API objects to findings that the webhook's audit mode and ``canrun audit`` share."""
    return await validator.check(workloads_of(objects), pool, progress=progress)
