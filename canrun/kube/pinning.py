"""Pin instead of deny: the node affinity that keeps a pod on the platforms where every container can exec.

Tools that pin from an index's platform list alone cannot see that the arm64
entry holds an amd64 binary or lacks its loader; canrun's findings are per
platform, so the pin is computed from them: a reachable platform is excluded
when any container has an error-severity finding on it.

The plan composes with what the user wrote rather than replacing it:

* the reachable platforms are the scheduler's (``scheduling.platforms_for``:
  ``nodeSelector``, required node affinity, ``nodeName``), so a pod that
  already avoids the bad platforms needs no patch, and a pinned pod, admitted
  again, plans nothing (idempotent);
* the added requirement is ANDed into every existing ``nodeSelectorTerm``
  (the terms are ORed, so adding it to one term only would leave the others
  open); with no terms, the requirement becomes the only term;
* node labels carry os and architecture only (no variant), so two reachable
  platforms that differ only by variant cannot be told apart: such a plan
  cannot pin and the verdict stays the enforce one.

Everything here is a pure function of plain data, so the webhook's ``/mutate``,
``canrun check --format patch`` and the audit produce the same change.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from canrun.findings import Finding, Severity
from canrun.kube.scheduling import ARCH_LABELS, OS_LABELS, NodePool, platforms_for
from canrun.platform import Platform
from canrun.spec import Workload

#: Set by canrun on what it pinned: the platforms kept (comma-separated), and why the others were left out.
PINNED_ANNOTATION = "canrun.io/pinned"
PINNED_REASON_ANNOTATION = "canrun.io/pinned-reason"

ARCH_LABEL = ARCH_LABELS[0]
OS_LABEL = OS_LABELS[0]
_AFFINITY_PATH = ("affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                  "nodeSelectorTerms")
#: Rules whose presence means the image was not judged: pin nothing on a guess.
_UNJUDGED = frozenset({"image-unresolvable"})


class PinAction(str, Enum):
    #: Every reachable platform runs (or nothing is reachable): no patch.
    NONE = "none"
    #: Some platforms run: restrict the pod to them.
    PIN = "pin"
    #: No reachable platform runs, or the bad ones cannot be told apart by node labels: deny as enforce does.
    DENY = "deny"
    #: An image could not be read: pin nothing, the fail-open rule applies.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PinPlan:
    """What pinning would do to one workload, and why."""

    action: PinAction
    reachable: tuple[Platform, ...] = ()
    runnable: tuple[Platform, ...] = ()
    #: Each excluded platform with the rule ids (and containers) that exclude it, for the warning.
    excluded: tuple[tuple[Platform, tuple[str, ...]], ...] = ()
    #: Requirement sets to AND into every nodeSelectorTerm (one set per resulting term), as API dicts.
    requirements: tuple[tuple[dict[str, Any], ...], ...] = ()
    note: str | None = None

    @property
    def kept(self) -> str:
        return ",".join(str(p) for p in self.runnable)

    @property
    def reason(self) -> str:
        """One line: which platform fails and for what (the annotation's value and the warning's tail)."""
        parts = [f"{p}: {', '.join(why)}" for p, why in self.excluded]
        return "; ".join(parts) or (self.note or "")

    def warning(self) -> str:
        """The ``Warning:`` line of a pin, short enough for kubectl."""
        return f"canrun pinned to {self.kept}: cannot exec on {self.reason}"


@dataclass
class _Exclusions:
    by_platform: dict[Platform, list[str]] = field(default_factory=dict)

    def add(self, platform: Platform, why: str) -> None:
        whys = self.by_platform.setdefault(platform, [])
        if why not in whys:
            whys.append(why)


def plan_pin(workload: Workload, findings: Sequence[Finding], pool: NodePool) -> PinPlan:
    """Decide the pin for ``workload`` from its (non-exempted) findings over ``pool``."""
    placement = platforms_for(workload.pod, pool)
    reachable = tuple(placement.platforms)
    if not reachable:
        return PinPlan(PinAction.NONE, note=placement.note)
    if any(f.rule in _UNJUDGED for f in findings):
        return PinPlan(PinAction.UNKNOWN, reachable,
                       note="an image could not be read: nothing pinned")
    by_text = {str(p): p for p in reachable}
    exclusions = _Exclusions()
    for f in findings:
        if f.severity is not Severity.ERROR:
            continue
        why = f"{f.rule} ({f.container})" if f.container else f.rule
        # a finding without a platform fails everywhere; one on an unreachable platform nowhere it matters
        named = [by_text[t] for t in f.platform.split(",") if t in by_text] if f.platform else reachable
        for p in named:
            exclusions.add(p, why)
    excluded = tuple((p, tuple(exclusions.by_platform[p])) for p in reachable if p in exclusions.by_platform)
    runnable = tuple(p for p in reachable if p not in exclusions.by_platform)
    if not excluded:
        return PinPlan(PinAction.NONE, reachable, runnable)
    if not runnable:
        return PinPlan(PinAction.DENY, reachable, runnable, excluded, note="no reachable platform can exec it")
    requirements = _requirements(reachable, runnable)
    if requirements is None:
        return PinPlan(PinAction.DENY, reachable, runnable, excluded,
                       note="the failing platforms differ from the others only by variant, which no node "
                            "label tells apart")
    return PinPlan(PinAction.PIN, reachable, runnable, excluded, requirements)


def _requirements(reachable: Sequence[Platform], runnable: Sequence[Platform],
                  ) -> tuple[tuple[dict[str, Any], ...], ...] | None:
    """Requirement sets selecting exactly the runnable platforms' labels among the reachable ones.

    One set (``arch In …`` and, when the OS matters, ``os In …``) when the
    runnable platforms are a cross product of their oses and architectures;
    else one set per (os, arch) pair.  None when a runnable and an excluded
    platform share both labels.
    """
    def labels(p: Platform) -> tuple[str, str]:
        return (p.os, p.architecture)

    good = {labels(p) for p in runnable}
    bad = {labels(p) for p in reachable if p not in runnable}
    if good & bad:
        return None
    oses = sorted({os_ for os_, _ in good})
    archs = sorted({arch for _, arch in good})
    need_os = len({os_ for os_, _ in good | bad}) > 1
    selected = {(o, a) for o, a in good | bad if a in archs and (not need_os or o in oses)}
    if selected == good:
        reqs = [_requirement(ARCH_LABEL, archs)]
        if need_os:
            reqs.insert(0, _requirement(OS_LABEL, oses))
        return (tuple(reqs),)
    return tuple((_requirement(OS_LABEL, [o]), _requirement(ARCH_LABEL, [a])) for o, a in sorted(good))


def _requirement(key: str, values: Sequence[str]) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": list(values)}


# -- the change, as the API writes it ------------------------------------------------------------

def template_of(obj: Mapping[str, Any], template_path: Sequence[str]) -> Mapping[str, Any] | None:
    """The PodTemplateSpec-shaped dict (``metadata`` + ``spec``) at ``template_path`` (the object for a Pod)."""
    node: Any = obj
    for key in template_path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node if isinstance(node, Mapping) else None


def pinned_terms(spec: Mapping[str, Any], plan: PinPlan) -> list[dict[str, Any]]:
    """The nodeSelectorTerms after the pin: every existing term ANDed with each requirement set."""
    existing = _get(spec, _AFFINITY_PATH)
    terms = [t for t in existing if isinstance(t, Mapping)] if isinstance(existing, list) and existing else [{}]
    out: list[dict[str, Any]] = []
    for term in terms:
        for reqs in plan.requirements:
            new = copy.deepcopy(dict(term))
            new["matchExpressions"] = list(new.get("matchExpressions") or []) + [copy.deepcopy(r) for r in reqs]
            out.append(new)
    return out


def pin_annotations(plan: PinPlan) -> dict[str, str]:
    return {PINNED_ANNOTATION: plan.kept, PINNED_REASON_ANNOTATION: plan.reason}


def json_patch(obj: Mapping[str, Any], template_path: Sequence[str], plan: PinPlan) -> list[dict[str, Any]]:
    """RFC 6902 operations that apply the pin to ``obj`` (empty unless the plan pins).

    Each missing level of ``affinity`` is added whole (a JSON Patch ``add``
    cannot create intermediate objects), the terms are replaced as one list,
    and the marker annotations go on the pod template (so pods inherit them)
    and, for a workload, on the object too.
    """
    template = template_of(obj, template_path)
    if plan.action is not PinAction.PIN or template is None or not isinstance(template.get("spec"), Mapping):
        return []
    spec = template["spec"]
    base = _pointer(*template_path, "spec")
    ops: list[dict[str, Any]] = []
    terms = pinned_terms(spec, plan)
    node: Any = spec
    path = base
    for depth, key in enumerate(_AFFINITY_PATH):
        path = f"{path}/{_escape(key)}"
        child = node.get(key) if isinstance(node, Mapping) else None
        if key == _AFFINITY_PATH[-1] or not isinstance(child, Mapping):
            value: Any = terms
            for inner in reversed(_AFFINITY_PATH[depth + 1:]):
                value = {inner: value}
            ops.append({"op": "replace" if key in node else "add", "path": path, "value": value})
            break
        node = child
    annotations = pin_annotations(plan)
    targets = [tuple(template_path)] + ([()] if template_path else [])
    for target in targets:
        ops += _annotation_ops(obj, target, annotations)
    return ops


def strategic_patch(obj: Mapping[str, Any], template_path: Sequence[str], plan: PinPlan) -> dict[str, Any]:
    """The same change as a strategic-merge patch (kustomize ``patches:``), {} unless the plan pins.

    ``nodeSelectorTerms`` has no merge key, so the list in the patch replaces
    the object's list: it carries the user's terms with the requirement added.
    """
    template = template_of(obj, template_path)
    if plan.action is not PinAction.PIN or template is None or not isinstance(template.get("spec"), Mapping):
        return {}
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    patch: dict[str, Any] = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                             "metadata": {k: meta[k] for k in ("name", "namespace") if meta.get(k)}}
    annotations = pin_annotations(plan)
    if template_path:
        patch["metadata"]["annotations"] = dict(annotations)
    inner: dict[str, Any] = {"metadata": {"annotations": dict(annotations)},
                             "spec": _nest(_AFFINITY_PATH, pinned_terms(template["spec"], plan))}
    node = patch
    for key in template_path[:-1]:
        node = node.setdefault(key, {})
    if template_path:
        node[template_path[-1]] = inner
    else:
        patch["metadata"].update(inner["metadata"])
        patch["spec"] = inner["spec"]
    return patch


def owned_and_pinned(obj: Mapping[str, Any]) -> bool:
    """A pod a controller made from a template canrun already pinned: the template carries the pin."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    owners = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    controlled = isinstance(owners, list) and any(isinstance(o, Mapping) and o.get("controller") for o in owners)
    return controlled and isinstance(annotations, Mapping) and PINNED_ANNOTATION in annotations


def _annotation_ops(obj: Mapping[str, Any], target: Sequence[str], annotations: Mapping[str, str],
                    ) -> list[dict[str, Any]]:
    holder = template_of(obj, target) or {}
    meta = holder.get("metadata")
    base = _pointer(*target, "metadata")
    if not isinstance(meta, Mapping):
        return [{"op": "add", "path": base, "value": {"annotations": dict(annotations)}}]
    present = meta.get("annotations")
    if not isinstance(present, Mapping):
        return [{"op": "add", "path": f"{base}/annotations", "value": dict(annotations)}]
    return [{"op": "add", "path": f"{base}/annotations/{_escape(k)}", "value": v} for k, v in annotations.items()]


def _nest(path: Sequence[str], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


def _get(node: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901): ``~`` then ``/`` escaped."""
    return key.replace("~", "~0").replace("/", "~1")


def _pointer(*keys: str) -> str:
    return "".join(f"/{_escape(k)}" for k in keys)
