"""Audit results as ``wgpolicyk8s.io/v1alpha2`` PolicyReports, the format policy dashboards read.

One ``PolicyReport`` per namespace named ``canrun-<namespace>`` (stable, so a
scheduled audit updates the same object instead of piling up new ones) and one
``ClusterPolicyReport`` named ``canrun-cluster`` for results about objects
without a namespace.  Policy Reporter, Kyverno's UI and ``kubectl get polr``
show them without knowing anything about canrun.

Mapping (chosen so the reports validate against every published v1alpha2
CRD — the oldest allows only high/medium/low severities):

=================  ==========  =========
canrun             result      severity
=================  ==========  =========
error finding      fail        high
warning finding    warn        medium
info finding       skip        low       (``not-verified``: canrun could not judge)
canrun.io/skip     skip        the finding's, message says it was exempted
no error/warning   pass        —         (rule ``all``: every rule passed)
=================  ==========  =========

Each result names its object (apiVersion, kind, namespace, name, uid) and
carries the container, image, digest, platform, fix hint, docs link and evidence
as ``properties`` (a string map in the CRD, so evidence is JSON text).

A namespace that the audit looked at but that has no workloads any more still
gets its report, emptied, so a fixed problem disappears from dashboards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from canrun.audit.model import AuditRun, ObjectRef
from canrun.findings import RULES, Finding, Severity

API_VERSION = "wgpolicyk8s.io/v1alpha2"
POLICY = "canrun"
SOURCE = "canrun"
CATEGORY = "ContainerCannotRun"
PASS_RULE = "all"
CLUSTER_REPORT_NAME = "canrun-cluster"
MANAGED_BY = {"app.kubernetes.io/managed-by": "canrun", "app.kubernetes.io/name": "canrun"}
#: The API server refuses objects over ~1.5 MiB (etcd); a report this long is cut (worst first kept).
MAX_RESULTS = 2000
TRUNCATED_ANNOTATION = "canrun.io/truncated-results"

_RESULT = {Severity.ERROR: "fail", Severity.WARNING: "warn", Severity.INFO: "skip"}
_SEVERITY = {Severity.ERROR: "high", Severity.WARNING: "medium", Severity.INFO: "low"}
_ORDER = {"fail": 0, "warn": 1, "error": 2, "skip": 3, "pass": 4}


class ObjectApplier(Protocol):
    def apply_object(self, obj: dict[str, Any]) -> Any: ...


def report_name(namespace: str | None) -> str:
    return f"canrun-{namespace}" if namespace else CLUSTER_REPORT_NAME


def _timestamp(when: datetime) -> dict[str, int]:
    seconds = int(when.timestamp())
    return {"seconds": seconds, "nanos": when.microsecond * 1000}


def _properties(f: Finding) -> dict[str, str]:
    props = {
        "container": f.container,
        "image": f.image,
        "digest": f.digest,
        "platform": f.platform,
        "fix": f.hint,
        "docs": f.docs_url,
        "title": RULES[f.rule].title if f.rule in RULES else None,
    }
    out = {k: str(v) for k, v in props.items() if v}
    if f.evidence:
        out["evidence"] = json.dumps(f.evidence, sort_keys=True, default=str)
    return out


def _result(f: Finding, ref: ObjectRef | None, stamp: dict[str, int], *, suppressed: bool = False
            ) -> dict[str, Any]:
    message = f.message
    if suppressed:
        message = f"exempted by {f.evidence.get('exempted_by') or 'the canrun.io/skip annotation'}: {message}"
    result: dict[str, Any] = {
        "policy": POLICY,
        "rule": f.rule,
        "category": CATEGORY,
        "result": "skip" if suppressed else _RESULT[f.severity],
        "severity": _SEVERITY[f.severity],
        "scored": True,
        "source": SOURCE,
        "message": message,
        "timestamp": stamp,
        "properties": _properties(f),
    }
    if ref is not None:
        result["resources"] = [ref.to_dict()]
    return result


def _pass(ref: ObjectRef, containers: int, stamp: dict[str, int]) -> dict[str, Any]:
    return {
        "policy": POLICY,
        "rule": PASS_RULE,
        "category": CATEGORY,
        "result": "pass",
        "scored": True,
        "source": SOURCE,
        "message": f"every container ({containers}) can start: no canrun rule failed",
        "timestamp": stamp,
        "resources": [ref.to_dict()],
    }


def _sort_key(result: dict[str, Any]) -> tuple[Any, ...]:
    res = (result.get("resources") or [{}])[0]
    return (_ORDER[result["result"]], res.get("kind", ""), res.get("name", ""),
            result.get("properties", {}).get("container", ""), result.get("rule", ""))


def _summary(results: Iterable[dict[str, Any]]) -> dict[str, int]:
    summary = {"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    for r in results:
        summary[r["result"]] += 1
    return summary


def _envelope(namespace: str | None, results: list[dict[str, Any]], *, max_results: int) -> dict[str, Any]:
    results = sorted(results, key=_sort_key)
    summary = _summary(results)  # counts every result, also those cut below
    metadata: dict[str, Any] = {"name": report_name(namespace), "labels": dict(MANAGED_BY)}
    if len(results) > max_results:
        metadata["annotations"] = {TRUNCATED_ANNOTATION: str(len(results) - max_results)}
        results = results[:max_results]
    if namespace:
        metadata["namespace"] = namespace
        doc: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "PolicyReport", "metadata": metadata,
                               "scope": {"apiVersion": "v1", "kind": "Namespace", "name": namespace}}
    else:
        doc = {"apiVersion": API_VERSION, "kind": "ClusterPolicyReport", "metadata": metadata}
    doc["summary"] = summary
    doc["results"] = results
    return doc


def build_reports(run: AuditRun, *, namespaces: Sequence[str] = (), max_results: int = MAX_RESULTS
                  ) -> list[dict[str, Any]]:
    """The reports for one audit: every namespace with workloads (plus ``namespaces``, emptied) and,
    when there are results for cluster-scoped objects, the ClusterPolicyReport."""
    stamp = _timestamp(run.finished)
    buckets: dict[str, list[dict[str, Any]]] = {ns: [] for ns in namespaces}
    failing: set[tuple[str, str, str]] = set()

    def bucket(namespace: str | None) -> list[dict[str, Any]]:
        return buckets.setdefault(namespace or "", [])

    for f in run.report.findings:
        ref = run.inventory.ref_for(f.resource)
        ns = f.resource.namespace if f.resource else None
        bucket(ns).append(_result(f, ref, stamp))
        if f.severity is not Severity.INFO and f.resource is not None:
            failing.add((f.resource.kind, f.resource.namespace or "", f.resource.name))
    for f in run.report.suppressed:
        ns = f.resource.namespace if f.resource else None
        bucket(ns).append(_result(f, run.inventory.ref_for(f.resource), stamp, suppressed=True))
    for item in run.inventory.items:
        key = (item.ref.kind, item.ref.namespace or "", item.ref.name)
        if key not in failing:
            bucket(item.ref.namespace).append(_pass(item.ref, len(item.workload.pod.containers), stamp))
    reports = [_envelope(ns or None, results, max_results=max_results)
               for ns, results in sorted(buckets.items()) if ns or results]
    return reports


def apply_reports(cluster: ObjectApplier, reports: Sequence[dict[str, Any]]) -> int:
    """Create or update each report (by its stable name); returns how many were written."""
    for report in reports:
        cluster.apply_object(report)
    return len(reports)


def render_yaml(reports: Sequence[dict[str, Any]]) -> str:
    """The reports as a multi-document YAML stream, ready for ``kubectl apply -f -``."""
    import yaml

    return yaml.safe_dump_all(list(reports), sort_keys=False, default_flow_style=False, width=120)
