"""The audit as one JSON document: ``--format json`` prints it, the HTML report embeds and renders it.

Every number a reader sees (totals, per rule, per namespace, worst offenders) is
computed here once, so the JSON and the HTML page cannot disagree.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from canrun import __version__
from canrun.audit.model import AuditRun
from canrun.findings import RULES, Finding, Severity
from canrun.spec import Resource

SCHEMA_VERSION = 1
_SEVERITIES = ("error", "warning", "info")


def _finding(run: AuditRun, f: Finding) -> dict[str, Any]:
    data = f.to_dict()
    ref = run.inventory.ref_for(f.resource)
    if data.get("resource") is not None and ref is not None:
        data["resource"] = {**data["resource"], "apiVersion": ref.api_version, "uid": ref.uid}
    data["title"] = RULES[f.rule].title if f.rule in RULES else f.rule
    data["docs_url"] = f.docs_url
    return data


def _resource_label(f: Finding) -> str:
    return str(f.resource) if f.resource else "(no resource)"


def audit_document(run: AuditRun) -> dict[str, Any]:
    report = run.report
    findings = report.findings
    counts = Counter(f.severity.value for f in findings)

    by_rule: dict[str, dict[str, Any]] = {}
    for f in findings:
        entry = by_rule.setdefault(f.rule, {
            "rule": f.rule, "title": RULES[f.rule].title if f.rule in RULES else f.rule,
            "severity": f.severity.value, "findings": 0, "workloads": set(), "docs_url": f.docs_url})
        entry["findings"] += 1
        entry["workloads"].add(_resource_label(f))
        if f.severity.rank < Severity(entry["severity"]).rank:
            entry["severity"] = f.severity.value
    rules = sorted(by_rule.values(), key=lambda e: (Severity(e["severity"]).rank, -e["findings"], e["rule"]))
    for entry in rules:
        entry["workloads"] = len(entry["workloads"])

    namespaces: dict[str, dict[str, Any]] = {}

    def ns_entry(ns: str | None) -> dict[str, Any]:
        key = ns or ""
        return namespaces.setdefault(key, {"namespace": key, "workloads": 0, "failing": set(),
                                           "error": 0, "warning": 0, "info": 0})

    for item in run.inventory.items:
        ns_entry(item.ref.namespace)["workloads"] += 1
    offenders: dict[str, dict[str, Any]] = {}
    for f in findings:
        ns = f.resource.namespace if f.resource else None
        entry = ns_entry(ns)
        entry[f.severity.value] += 1
        if f.severity is not Severity.INFO:
            entry["failing"].add(_resource_label(f))
            label = _resource_label(f)
            off = offenders.setdefault(label, {
                "resource": _finding(run, f)["resource"], "label": label, "error": 0, "warning": 0,
                "rules": set()})
            off[f.severity.value] += 1
            off["rules"].add(f.rule)
    # a workload fails when it has an error finding; one with warnings only starts, or may
    failing = {label for label, off in offenders.items() if off["error"]}
    by_namespace = sorted(namespaces.values(), key=lambda e: (-e["error"], -e["warning"], e["namespace"]))
    for entry in by_namespace:
        entry["failing"] = len(entry["failing"] & failing)
    worst = sorted(offenders.values(), key=lambda e: (-e["error"], -e["warning"], e["label"]))
    for entry in worst:
        entry["rules"] = sorted(entry["rules"])

    return {
        "kind": "CanrunAudit",
        "schemaVersion": SCHEMA_VERSION,
        "generator": f"canrun {__version__}",
        "started": run.started.isoformat(timespec="seconds"),
        "finished": run.finished.isoformat(timespec="seconds"),
        "scope": {"namespaces": run.namespaces or "all", "labelSelector": run.label_selector},
        "platforms": [str(p) for p in run.platforms],
        "platforms_source": run.platforms_source,
        "summary": {
            "errors": counts["error"],
            "warnings": counts["warning"],
            "infos": counts["info"],
            "suppressed": len(report.suppressed),
            "workloads": report.workloads,
            "failing_workloads": len(failing),
            "warned_workloads": len(offenders) - len(failing),
            "containers": report.containers,
            "images": len(report.images),
            "namespaces": len(namespaces),
            "listed_objects": sum(run.inventory.listed.values()),
            "folded_objects": run.inventory.folded_total,
            "unreadable_objects": len(run.inventory.errors),
            "pinnable_workloads": len(run.pins),
        },
        "by_rule": rules,
        "by_namespace": by_namespace,
        "offenders": worst,
        "findings": [_finding(run, f) for f in findings],
        "suppressed": [_finding(run, f) for f in report.suppressed],
        "unreadable": [str(e) for e in run.inventory.errors],
        "unserved_kinds": list(run.inventory.unserved),
        "pins": [{"resource": _resource_dict(p.workload.resource), "label": str(p.workload.resource),
                  "kept": [str(x) for x in p.plan.runnable],
                  "excluded": [{"platform": str(x), "because": list(why)} for x, why in p.plan.excluded]}
                 for p in run.pins],
    }


def _resource_dict(res: Resource) -> dict[str, Any]:
    return {"kind": res.kind, "namespace": res.namespace, "name": res.name}


def render(run: AuditRun) -> str:
    return json.dumps(audit_document(run), indent=2) + "\n"
