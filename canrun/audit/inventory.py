"""Which objects of a cluster an audit judges: every workload, each controller exactly once.

A Deployment with three replicas is, in the API, one Deployment, a ReplicaSet per
revision and three Pods.  Judging all of them would report the same broken
command five times and make the numbers meaningless, so owned objects are folded
into the topmost listed object that controls them (following ``ownerReferences``
with ``controller: true``):

* Pods → ReplicaSet → Deployment: judged once, as the Deployment (old,
  scaled-down ReplicaSets of the Deployment are folded too);
* Pods → Job → CronJob: judged once, as the CronJob;
* Pods of a DaemonSet, StatefulSet, Job or ReplicationController: judged as it;
* a bare Pod, or a Pod whose controller is not a workload kind (a static pod's
  Node, an operator's custom resource): judged alone.

When an owner of a workload kind is *not* in the listing — a label selector that
matches the Pods but not their Deployment, or an object created between two
list calls — the siblings that share it are judged once, as the first of them,
so the count of findings does not scale with the replica count either way.

The Kubernetes API is reached only through ``Cluster.list_objects`` (the
``canrun.kube.client`` package owns the ``kubernetes`` package); its calls are
synchronous, so they run in threads, all kinds and namespaces at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from canrun.audit.model import Inventory, InventoryItem, ObjectRef
from canrun.errors import ClusterError, ManifestError
from canrun.kube.workloads import workload_from_object
from canrun.spec import SourceLocation

#: (apiVersion, kind) of every object that carries a pod spec, listed by an audit.
WORKLOAD_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "ReplicaSet"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "CronJob"),
    ("batch/v1", "Job"),
    ("v1", "ReplicationController"),
    ("v1", "Pod"),
)
_LISTED_KINDS = frozenset(kind for _, kind in WORKLOAD_KINDS)
#: Guards against a (malformed) ownership cycle.
_MAX_OWNER_DEPTH = 16


class ObjectLister(Protocol):
    """The part of ``canrun.kube.client.Cluster`` the inventory needs."""

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None,
                     label_selector: str | None = None) -> list[dict[str, Any]]: ...


async def list_workload_objects(cluster: ObjectLister, *, namespaces: Sequence[str] | None = None,
                                label_selector: str | None = None,
                                unserved: list[str] | None = None) -> list[dict[str, Any]]:
    """Every object of a workload kind in the namespaces (all when None), listed concurrently.

    A kind the server does not serve (404: batch/v1 CronJob before Kubernetes 1.21) holds no objects
    there: it is passed over and named in ``unserved``, rather than failing the whole audit.
    """
    scopes: Sequence[str | None] = list(dict.fromkeys(namespaces)) if namespaces else [None]

    def listing(api_version: str, kind: str, ns: str | None) -> list[dict[str, Any]] | None:
        try:
            return cluster.list_objects(api_version, kind, ns, label_selector)
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    calls = [asyncio.to_thread(listing, api_version, kind, ns) for api_version, kind in WORKLOAD_KINDS
             for ns in scopes]
    objects: list[dict[str, Any]] = []
    for (api_version, kind), listed in zip(((a, k) for a, k in WORKLOAD_KINDS for _ in scopes),
                                           await asyncio.gather(*calls)):
        if listed is None:
            if unserved is not None and f"{api_version} {kind}" not in unserved:
                unserved.append(f"{api_version} {kind}")
            continue
        for obj in listed:
            # list items come without apiVersion/kind; workload_from_object needs them
            objects.append({**obj, "apiVersion": obj.get("apiVersion") or api_version,
                            "kind": obj.get("kind") or kind})
    return objects


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _controller(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = _meta(obj).get("ownerReferences")
    if not isinstance(refs, list):
        return None
    for ref in refs:
        if isinstance(ref, Mapping) and ref.get("controller") is True and ref.get("uid"):
            return ref
    return None


def _ref(obj: Mapping[str, Any]) -> ObjectRef:
    meta = _meta(obj)
    return ObjectRef(api_version=str(obj.get("apiVersion", "")), kind=str(obj.get("kind", "")),
                     name=str(meta.get("name", "")), namespace=meta.get("namespace") or None,
                     uid=meta.get("uid") or None)


def build_inventory(objects: Sequence[Mapping[str, Any]]) -> Inventory:
    """Fold owned objects into their controllers and turn what remains into workloads."""
    inventory = Inventory()
    by_uid: dict[str, Mapping[str, Any]] = {}
    for obj in objects:
        kind = str(obj.get("kind", ""))
        inventory.listed[kind] = inventory.listed.get(kind, 0) + 1
        uid = _meta(obj).get("uid")
        if uid:
            by_uid[str(uid)] = obj

    # judged object (by uid or id) -> folded counts; `anchor` maps a missing owner to its stand-in
    judged: dict[int, tuple[Mapping[str, Any], dict[str, int]]] = {}
    anchor: dict[str, int] = {}
    pending: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []  # (object, its top)

    for obj in sorted(objects, key=lambda o: (str(_meta(o).get("namespace", "")), str(_meta(o).get("name", "")))):
        top, missing_owner = _top(obj, by_uid)
        if top is obj and missing_owner is None:
            judged.setdefault(id(obj), (obj, {}))
        elif missing_owner is not None and top is obj:
            first = anchor.setdefault(missing_owner, id(obj))
            if first == id(obj):
                judged.setdefault(id(obj), (obj, {}))
            else:
                counts = judged[first][1]
                counts[str(obj.get("kind"))] = counts.get(str(obj.get("kind")), 0) + 1
        else:
            pending.append((obj, top))
    for obj, top in pending:
        key = id(top)
        if key not in judged:
            # the top is itself a sibling of a missing owner: fold into that group's stand-in
            _, missing = _top(top, by_uid)
            key = anchor.get(missing or "", key)
            judged.setdefault(key, (top, {}))
        counts = judged[key][1]
        counts[str(obj.get("kind"))] = counts.get(str(obj.get("kind")), 0) + 1

    for obj, folded in judged.values():
        try:
            workload = workload_from_object(obj, SourceLocation())
        except ManifestError as exc:
            inventory.errors.append(exc)
            continue
        if workload is None:
            continue
        inventory.items.append(InventoryItem(workload=workload, ref=_ref(obj), folded=folded))
    inventory.items.sort(key=lambda i: (i.ref.namespace or "", i.ref.kind, i.ref.name))
    return inventory


def _top(obj: Mapping[str, Any], by_uid: Mapping[str, Mapping[str, Any]]
         ) -> tuple[Mapping[str, Any], str | None]:
    """The topmost listed controller of ``obj`` and, if its chain stops at an unlisted owner of a workload
    kind, that owner's uid (siblings sharing it are judged once)."""
    current = obj
    seen: set[str] = set()
    for _ in range(_MAX_OWNER_DEPTH):
        ref = _controller(current)
        if ref is None:
            return current, None
        uid = str(ref["uid"])
        if uid in seen:
            return current, None
        seen.add(uid)
        owner = by_uid.get(uid)
        if owner is None:
            return current, (uid if ref.get("kind") in _LISTED_KINDS else None)
        current = owner
    return current, None


async def collect(cluster: ObjectLister, *, namespaces: Sequence[str] | None = None,
                  label_selector: str | None = None) -> Inventory:
    """List the cluster's workloads and fold them: the inventory an audit judges."""
    unserved: list[str] = []
    objects = await list_workload_objects(cluster, namespaces=namespaces, label_selector=label_selector,
                                          unserved=unserved)
    inventory = build_inventory(objects)
    inventory.unserved = unserved
    return inventory
