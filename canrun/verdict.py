"""One verdict for many workloads: what makes two workloads' verdicts equal, and how one is handed on.

A cluster repeats itself (the same pod template under many names) and the webhook
sees the same object re-applied all day.  Both doors judge a pod spec once and
reuse the report; the rule for "same pod spec, same verdict" and the way a report
judged for one workload is made to name another live here, so the webhook and the
audit cannot drift apart.

The name, namespace and kind of a workload only label its findings; what decides
them is the pod spec (its containers, env, volumes, identity, scheduling) and the
exemptions (the ``canrun.io/skip`` annotation, and the config file's list when it
names workloads).  The node pool is not part of this key: each door
adds the pool (and, in the webhook, the namespace whose pull secrets read the
images) as it needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from canrun.exemptions import Exemption, exemption_key
from canrun.findings import Finding
from canrun.spec import Workload
from canrun.validator import Report


def verdict_key(workload: Workload, exemptions: Sequence[Exemption] = ()) -> tuple[Any, ...]:
    """Everything a verdict depends on besides the node pool: the pod spec and the exemptions.

    ``exemptions`` are the validator's listed ones (the config file's): when one
    is scoped to a namespace, kind or name, the workload's identity is part of
    the key too.
    """
    return (repr(workload.pod), *exemption_key(workload, exemptions))


def restamp(report: Report, judged: Workload, member: Workload) -> Report:
    """``report``, judged for ``judged``, naming ``member`` instead (a workload with the same verdict key).

    Findings name the member's resource; those that pointed at the judged workload's
    source (a file and line in ``canrun check``/``audit -f``) point at the member's.
    """
    if member is judged or (member.resource == judged.resource and member.source == judged.source):
        return report

    def one(f: Finding) -> Finding:
        changes: dict[str, Any] = {"resource": member.resource}
        if f.source == judged.source:
            changes["source"] = member.source
        return replace(f, **changes)

    return Report(findings=[one(f) for f in report.findings], suppressed=[one(f) for f in report.suppressed],
                  workloads=report.workloads, containers=report.containers, images=set(report.images))
