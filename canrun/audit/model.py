"""The plain records of an audit: what was listed, what was judged, what was found.

Kept apart from the code that lists the cluster and runs the engine so that the
report formats (JSON, HTML, Markdown, PolicyReport) depend on data only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from canrun.errors import ManifestError
from canrun.kube.pinning import PinPlan
from canrun.platform import Platform
from canrun.spec import Resource, Workload

if TYPE_CHECKING:
    from canrun.validator import Report


@dataclass(frozen=True)
class ObjectRef:
    """An API object as a PolicyReport ``resources`` entry names it."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None

    def to_dict(self) -> dict[str, str]:
        data = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            data["namespace"] = self.namespace
        if self.uid:
            data["uid"] = self.uid
        return data


def resource_key(kind: str, namespace: str | None, name: str) -> tuple[str, str, str]:
    return (kind, namespace or "", name)


@dataclass
class InventoryItem:
    """One judged object: its workload, its API identity and what was folded into it."""

    workload: Workload
    ref: ObjectRef
    #: Owned objects judged as this one, e.g. {"ReplicaSet": 2, "Pod": 3}.
    folded: dict[str, int] = field(default_factory=dict)


@dataclass
class Inventory:
    items: list[InventoryItem] = field(default_factory=list)
    #: Objects listed in total, by kind (before folding).
    listed: dict[str, int] = field(default_factory=dict)
    #: Objects whose pod spec could not be read; reported, never fatal for the audit.
    errors: list[ManifestError] = field(default_factory=list)
    #: Workload kinds the API server does not serve ("batch/v1 CronJob" before 1.21): none of them to judge.
    unserved: list[str] = field(default_factory=list)
    _index: dict[tuple[str, str, str], ObjectRef] = field(default_factory=dict, repr=False, compare=False)

    @property
    def workloads(self) -> list[Workload]:
        return [item.workload for item in self.items]

    @property
    def folded_total(self) -> int:
        return sum(sum(item.folded.values()) for item in self.items)

    def ref_for(self, resource: Resource | None) -> ObjectRef | None:
        """The API identity (with uid) of the object a finding names."""
        if resource is None:
            return None
        return self._by_key().get(resource_key(resource.kind, resource.namespace, resource.name))

    def _by_key(self) -> dict[tuple[str, str, str], ObjectRef]:
        if len(self._index) != len(self.items):
            self._index = {resource_key(i.ref.kind, i.ref.namespace, i.ref.name): i.ref for i in self.items}
        return self._index


@dataclass(frozen=True)
class WouldPin:
    """A workload pin mode would change: restricted to ``plan.runnable``, for the reasons in the plan."""

    workload: Workload
    plan: PinPlan


@dataclass
class AuditRun:
    """What one audit saw and found; every report format is rendered from this."""

    report: Report
    inventory: Inventory
    platforms: list[Platform]
    #: "nodes" (read from the cluster), "flag" (--platform) or "default" (no nodes visible).
    platforms_source: str
    namespaces: list[str] | None = None
    label_selector: str | None = None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    #: The workloads pin mode would restrict to the platforms where they run (docs/pin.md).
    pins: list[WouldPin] = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return bool(self.report.errors)
