"""``--format patch`` and ``--format jsonpatch``: the pin mode's change, for a team to commit.

The webhook's pin mode (docs/pin.md) adds the node affinity at admission; a
team that would rather keep its manifests true commits the same change.  Each
workload that pin mode would change gets one document:

* ``patch``: a strategic-merge patch (apiVersion, kind, name, namespace and the
  changed fields), usable as it is in a kustomization's ``patches:`` or with
  ``kubectl patch --type strategic``;
* ``jsonpatch``: the RFC 6902 operations the webhook would answer with, for
  ``kubectl patch --type json``.

A comment before each says where the object is and why it is pinned; workloads
that no platform runs are listed as comments (pinning cannot help them).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from canrun.kube.pinning import PinAction, json_patch, strategic_patch
from canrun.kube.objects import pod_template_path
from canrun.output import CheckRun, Pin


def _plain(data: Any) -> Any:
    """The loader's position-keeping containers as plain dicts and lists (what yaml.safe_dump writes)."""
    return json.loads(json.dumps(data))


def _header(pin: Pin) -> str:
    where = f"{pin.workload.source}: " if pin.workload.source.file else ""
    return f"# {where}{pin.workload.resource}"


def render(run: CheckRun, *, json_ops: bool = False) -> str:
    """One YAML document per workload pin mode would change (an empty stream when none would change)."""
    docs: list[str] = []
    for pin in run.pins:
        plan = pin.plan
        if plan.action is PinAction.DENY:
            docs.append(f"{_header(pin)}: not pinned, no platform runs it ({plan.reason})\n")
            continue
        if plan.action is not PinAction.PIN:
            continue
        path = pod_template_path(pin.workload.resource.kind)
        body = json_patch(pin.obj, path, plan) if json_ops else strategic_patch(pin.obj, path, plan)
        comment = f"{_header(pin)}: pinned to {plan.kept} (cannot exec on {plan.reason})\n"
        docs.append(comment + yaml.safe_dump(_plain(body), sort_keys=False, width=1000))
    return "---\n".join(docs)
