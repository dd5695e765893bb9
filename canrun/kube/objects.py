"""What canrun knows of the shape of Kubernetes objects, written once for every door.

Where each workload kind keeps its pod spec (the manifest reader, the audit and
the webhook's UPDATE comparison all walk the same path), and the annotation
that exempts a workload from rules.
"""

from __future__ import annotations

from canrun.exemptions import SKIP_ANNOTATION  # noqa: F401 - re-exported: the annotation exempting a workload

#: kind -> (API groups it belongs to, path from the object to its pod template or pod spec).
#: A path ending in "template" leads to a PodTemplateSpec (metadata + spec); Pod's leads to the spec.
POD_KINDS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "Pod": (frozenset({""}), ("spec",)),
    "PodTemplate": (frozenset({""}), ("template",)),
    "ReplicationController": (frozenset({""}), ("spec", "template")),
    "Deployment": (frozenset({"apps", "extensions"}), ("spec", "template")),
    "ReplicaSet": (frozenset({"apps", "extensions"}), ("spec", "template")),
    "DaemonSet": (frozenset({"apps", "extensions"}), ("spec", "template")),
    "StatefulSet": (frozenset({"apps"}), ("spec", "template")),
    "Job": (frozenset({"batch"}), ("spec", "template")),
    "CronJob": (frozenset({"batch"}), ("spec", "jobTemplate", "spec", "template")),
}

#: Where a kind not in the table most likely keeps it (what every built-in controller uses).
_DEFAULT_TEMPLATE_PATH = ("spec", "template")


def pod_spec_path(kind: str) -> tuple[str, ...]:
    """The keys from an object of ``kind`` down to its pod spec (through its pod template, if any)."""
    path = POD_KINDS[kind][1] if kind in POD_KINDS else _DEFAULT_TEMPLATE_PATH
    return path + ("spec",) if path[-1] == "template" else path


def pod_template_path(kind: str) -> tuple[str, ...]:
    """The keys from an object of ``kind`` to what holds its pod's ``metadata`` and ``spec``: () for a Pod."""
    path = POD_KINDS[kind][1] if kind in POD_KINDS else _DEFAULT_TEMPLATE_PATH
    return path if path[-1] == "template" else ()
