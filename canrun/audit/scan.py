"""One audit run: list the cluster's workloads, judge them with the shared engine, keep what a report needs.

The judging is what the webhook and ``canrun check`` do — ``workload_from_object``
then ``Validator.check`` — so a Deployment audited here gets the findings it
would get at admission (``tests/audit/test_same_findings.py`` sends one object
through both doors and compares).  The webhook cannot import this module (they
are sibling front ends); the shared code is below both.

Two things keep a large cluster cheap:

* each distinct pod spec is judged once and its findings stamped onto every
  workload that has it (``judge``), as the webhook reuses a verdict for an
  identical pod spec;
* images are read once per run whatever the number of workloads using them:
  the distinct specs are judged concurrently and the ``ImageStore`` shares one
  in-flight fetch per reference, manifest and layer and keeps views in memory
  (``bench/bench_audit.py`` counts the registry requests on the wire).

Node platforms come from the cluster's own Nodes unless ``--platform`` names
them, so an arm64 node pool is taken into account without being told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

from canrun.audit.inventory import ObjectLister, collect
from canrun.audit.model import AuditRun, WouldPin
from canrun.errors import CanrunError
from canrun.findings import Finding, sort_key
from canrun.kube.pinning import PinAction, plan_pin
from canrun.kube.scheduling import NodeInfo, NodePool
from canrun.platform import DEFAULT_PLATFORMS, Platform
from canrun.registry.auth import Keychain, use_keychain
from canrun.spec import Resource, Workload
from canrun.validator import Report, Validator
from canrun.verdict import restamp, verdict_key


Progress = Callable[[int, int], None]


class AuditCluster(ObjectLister, Protocol):
    """The part of ``canrun.kube.client.Cluster`` an audit uses (reads only; writes are PolicyReports)."""

    def list_nodes(self) -> list[NodeInfo]: ...


class PullSecretReader(Protocol):
    """What ``--use-pull-secrets`` needs: the kubelet's choice of credentials for a pod (``Cluster`` has it)."""

    def pull_keychain(self, namespace: str, secret_names: Sequence[str],
                      service_account: str | None = None) -> Keychain: ...


KeychainFor = Callable[[Workload], Awaitable[Keychain | None]]


def pull_secrets_of(cluster: PullSecretReader, problems: list[str]) -> KeychainFor:
    """Each workload's pull credentials, read as the kubelet would pick them (opt-in: needs ``get secrets``).

    A namespace whose secrets cannot be read (RBAC without ``get secrets`` there, say) is judged without
    them; the first such problem per namespace is appended to ``problems`` for the command to say once.
    Credentials are never logged or put into a report.
    """
    failed: set[str] = set()

    async def keychain(workload: Workload) -> Keychain | None:
        namespace = workload.resource.namespace
        if not namespace or namespace in failed:
            return None
        try:
            return await asyncio.to_thread(cluster.pull_keychain, namespace, list(workload.pod.image_pull_secrets),
                                           workload.pod.service_account)
        except CanrunError as exc:
            if namespace not in failed:
                failed.add(namespace)
                problems.append(f"pull secrets of namespace {namespace} not used: {exc}")
            return None

    return keychain


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
                progress: Progress | None = None, keychain_for: KeychainFor | None = None) -> AuditRun:
    """List, fold and judge every workload in the cluster (or ``namespaces``) matching ``label_selector``.

    ``keychain_for`` (``pull_secrets_of``) gives each workload its pull credentials; without it the audit
    reads images with the credentials of the one running it, and never touches Secrets.
    """
    started = datetime.now(timezone.utc)
    (pool, seen, source), inventory = await asyncio.gather(
        node_pool(cluster, platforms),
        collect(cluster, namespaces=namespaces, label_selector=label_selector))
    report = await judge(validator, inventory.workloads, pool, progress=progress, keychain_for=keychain_for)
    return AuditRun(report=report, inventory=inventory, platforms=seen, platforms_source=source,
                    namespaces=list(namespaces) if namespaces else None, label_selector=label_selector,
                    started=started, finished=datetime.now(timezone.utc),
                    pins=would_pin(inventory.workloads, report, pool))


def would_pin(workloads: Sequence[Workload], report: Report, pool: NodePool) -> list[WouldPin]:
    """The workloads pin mode would change, planned from the findings the report holds for each."""
    by_resource: dict[Resource | None, list[Finding]] = {}
    for f in report.findings:
        by_resource.setdefault(f.resource, []).append(f)
    plans = ((w, plan_pin(w, by_resource.get(w.resource, []), pool)) for w in workloads)
    return [WouldPin(w, plan) for w, plan in plans if plan.action is PinAction.PIN]


async def judge(validator: Validator, workloads: Sequence[Workload], pool: NodePool, *,
                progress: Progress | None = None, keychain_for: KeychainFor | None = None) -> Report:
    """``Validator.check`` over the workloads, judging each distinct pod spec once.

    A cluster repeats itself: the same pod spec under many names.  Each distinct one is judged by the
    shared validator exactly as the webhook would judge it, and its findings are stamped with every
    workload that has it — the result equals ``validator.check(workloads, pool)``, at the cost of the
    distinct specs only.  With ``keychain_for`` the namespace joins the key: the same pull secret
    names mean other secrets in another namespace.
    """
    groups: dict[tuple[Any, ...], list[Workload]] = {}
    for w in workloads:
        key = verdict_key(w, validator.exemptions)
        if keychain_for is not None:
            key = (*key, w.resource.namespace)
        groups.setdefault(key, []).append(w)
    total = len(workloads)
    done = 0

    async def one(members: list[Workload]) -> Report:
        nonlocal done
        keychain = await keychain_for(members[0]) if keychain_for is not None else None
        with use_keychain(keychain):
            result = await validator.check(members[:1], pool)
        done += len(members)
        if progress is not None:
            progress(done, total)
        return result

    report = Report()
    for members, result in zip(groups.values(), await asyncio.gather(*(one(m) for m in groups.values()))):
        for member in members:
            report.extend(restamp(result, members[0], member))
    report.findings.sort(key=sort_key)
    return report
