"""Exemptions: which findings a workload is exempt from, and why.

One mechanism, two ways in: the ``canrun.io/skip`` annotation a workload
carries, and the central ``exceptions:`` list of the config file (what
Kyverno's PolicyException and Polaris's exemptions give a platform team: no
edit of the workload itself).  Both become ``Exemption`` records matched by the
same function, so every door (check, webhook, audit) exempts the same findings
and names what exempted them (``evidence.exempted_by``).

An exempted finding is kept, as suppressed, so an exemption stays visible; an
entry past its expiry date exempts nothing (and ``canrun check`` says so).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from canrun.findings import Finding
from canrun.spec import Workload

#: The annotation listing the rule ids a workload is exempt from (``all`` for every rule), on the object or
#: on any of its pod templates (they add up).
SKIP_ANNOTATION = "canrun.io/skip"
#: The rule "id" that exempts every rule.
ALL = "all"


def skipped_rules(annotations: Mapping[str, str]) -> frozenset[str]:
    """Rule ids a ``canrun.io/skip`` annotation exempts (``all`` exempts every rule)."""
    raw = annotations.get(SKIP_ANNOTATION, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Exemption:
    """Findings of ``rules`` that a workload is exempt from; unset fields match anything.

    ``namespace``, ``name`` and ``image`` are shell globs (``team-*``,
    ``registry.example/legacy/*``) matched against the workload's namespace and
    name and the finding's image; ``kind`` is matched exactly.
    """

    rules: frozenset[str]
    #: How reports name it: ``canrun.io/skip=…`` or ``exceptions[2] of /repo/.canrun.yaml``.
    origin: str
    namespace: str | None = None
    kind: str | None = None
    name: str | None = None
    image: str | None = None
    #: The last day it applies (inclusive); None: no expiry.
    expires: dt.date | None = None
    #: Why it exists (shown next to the origin).
    reason: str | None = None

    def expired(self, today: dt.date) -> bool:
        return self.expires is not None and today > self.expires

    def scoped(self) -> bool:
        """Whether it depends on which workload it is (not only on the pod spec and its annotations)."""
        return any(v is not None for v in (self.namespace, self.kind, self.name))

    def covers(self, workload: Workload, f: Finding, today: dt.date) -> bool:
        if self.expired(today) or not (ALL in self.rules or f.rule in self.rules):
            return False
        res = workload.resource
        return (_glob(self.namespace, res.namespace or "") and (self.kind is None or self.kind == res.kind)
                and _glob(self.name, res.name) and _glob(self.image, f.image or ""))

    @property
    def label(self) -> str:
        return f"{self.origin} ({self.reason})" if self.reason else self.origin


def _glob(pattern: str | None, value: str) -> bool:
    return pattern is None or fnmatchcase(value, pattern)


def annotation_exemption(annotations: Mapping[str, str]) -> Exemption | None:
    rules = skipped_rules(annotations)
    if not rules:
        return None
    return Exemption(rules=rules, origin=f"{SKIP_ANNOTATION}={annotations.get(SKIP_ANNOTATION, '').strip()}")


def exempted_by(workload: Workload, f: Finding, listed: Sequence[Exemption],
                today: dt.date | None = None) -> Exemption | None:
    """The exemption (the workload's annotation first, then the list in order) covering ``f``, if any."""
    today = today or dt.date.today()
    own = annotation_exemption(workload.annotations)
    for exemption in ([own] if own else []) + list(listed):
        if exemption.covers(workload, f, today):
            return exemption
    return None


def exemption_key(workload: Workload, listed: Sequence[Exemption]) -> tuple[Any, ...]:
    """What a workload's exemptions depend on, for keys of shared verdicts (``canrun.verdict``).

    The annotation always; the workload's identity only when a listed exemption
    is scoped by namespace, kind or name, so workloads sharing a pod spec still
    share a verdict when the list cannot tell them apart.
    """
    key: tuple[Any, ...] = (workload.annotations.get(SKIP_ANNOTATION, ""),)
    if any(e.scoped() for e in listed):
        res = workload.resource
        key += (res.kind, res.namespace, res.name)
    return key


def expired(listed: Sequence[Exemption], today: dt.date | None = None) -> list[Exemption]:
    today = today or dt.date.today()
    return [e for e in listed if e.expired(today)]
