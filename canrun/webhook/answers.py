"""What the webhook says: an ``Outcome`` from a ``Report`` and the mode, and every text it writes.

Pure functions of their arguments (no clock, no metrics, no cluster), so each
wording is tested without a server.  Who reads what:

* the person running ``kubectl apply`` reads the deny message and the
  ``Warning:`` lines: one line of at most 120 characters each, spent on what
  they need — the rule, the container, the path and the verdict in a few words
  (``Rule.brief``); the deny message's first line carries the whole verdict the
  same way, the lines after it the full findings;
* the audit log keeps the ``auditAnnotations`` (structured JSON, bounded);
* ``kubectl describe`` shows the Event (the long form, bounded too).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from canrun.findings import RULES, Finding, Severity
from canrun.kube.admission import WARNING_TARGET, Decision, shorten
from canrun.kube.pinning import PinAction, PinPlan
from canrun.spec import Workload
from canrun.validator import SKIP_ANNOTATION, Report

#: Event messages and audit annotation values stay small (the API server stores them in etcd).
EVENT_MESSAGE_LIMIT = 1024
ANNOTATION_VALUE_LIMIT = 4096


@dataclass
class Outcome:
    """A decision plus what the log line and the metrics say about it."""

    decision: Decision
    mode: str = "-"
    #: allowed · denied · warned · audited · skipped · unverified · error
    verdict: str = "allowed"
    rules: list[str] = field(default_factory=list)
    reason: str = ""
    cached: bool | None = None


def skipped(reason: str, mode: str = "-") -> Outcome:
    """Nothing to judge (an operation, subresource, kind or mode canrun leaves alone)."""
    return Outcome(Decision(), mode, "skipped", reason=reason)


def shown(report: Report) -> list[Finding]:
    """The findings an answer reports: errors and warnings (info-level notes stay in ``canrun check``)."""
    return [f for f in report.findings if f.severity is not Severity.INFO]


def shape(report: Report, workload: Workload, mode: str) -> Outcome:
    """The answer for ``report`` in ``mode``: enforce denies errors, warn warns, audit only annotates."""
    visible = shown(report)
    errors = [f for f in visible if f.severity is Severity.ERROR]
    others = [f for f in visible if f.severity is not Severity.ERROR]
    rules = sorted({f.rule for f in visible})
    by_origin: dict[str, set[str]] = {}
    for f in report.suppressed:
        origin = str(f.evidence.get("exempted_by") or SKIP_ANNOTATION)
        by_origin.setdefault(origin, set()).add(f"{f.rule} ({f.container})" if f.container else f.rule)
    exempted = {origin: sorted(items) for origin, items in sorted(by_origin.items())}
    annotations: dict[str, str] = {}
    if visible:
        annotations["findings"] = findings_annotation(visible)
    if exempted:
        annotations["exempted"] = shorten("; ".join(f"{o}: {', '.join(items)}" for o, items in exempted.items()),
                                          ANNOTATION_VALUE_LIMIT)
    exemption_warnings = [shorten(f"canrun: exempted by {o}: {e}") for o, items in exempted.items() for e in items]
    exemption_warnings += ssrf_remedies(visible)
    if mode == "enforce":
        if errors:
            return Outcome(Decision(allowed=False, code=403, message=deny_message(workload, errors),
                                    warnings=[warning_line(f) for f in others] + exemption_warnings,
                                    audit_annotations=annotations), mode, "denied", rules)
        warnings = [warning_line(f) for f in others] + exemption_warnings
        return Outcome(Decision(warnings=warnings, audit_annotations=annotations), mode,
                       "warned" if others else "allowed", rules)
    if mode == "warn":
        warnings = [warning_line(f) for f in errors + others] + exemption_warnings
        return Outcome(Decision(warnings=warnings, audit_annotations=annotations), mode,
                       "warned" if visible else "allowed", rules)
    # audit: nothing the user sees at apply time; the audit log, metrics, the log line and an Event
    return Outcome(Decision(audit_annotations=annotations), mode, "audited" if visible else "allowed", rules)


def pinned(report: Report, workload: Workload, plan: PinPlan, patch: list[dict[str, Any]]) -> Outcome:
    """The mutating answer in pin mode: the patch and a warning that says what was pinned and why.

    Only a pin that leaves a platform is a patch; no platform left (or one no
    node label can express) is the enforce answer, and an image that could not
    be read pins nothing and says so, as every other mode fails open.
    """
    if plan.action is PinAction.PIN and patch:
        # what is found only on the platforms the pin leaves out will not happen: the pin line says it once
        kept = {str(p) for p in plan.runnable}
        remaining = [f for f in report.findings if not f.platform or kept & set(f.platform.split(","))]
        outcome = shape(replace(report, findings=remaining), workload, "warn")
        annotations = dict(outcome.decision.audit_annotations,
                           pinned=shorten(f"{plan.kept}: {plan.reason}", ANNOTATION_VALUE_LIMIT))
        return Outcome(Decision(warnings=[shorten(plan.warning()), *outcome.decision.warnings],
                                audit_annotations=annotations, patch=patch),
                       "pin", "pinned", sorted({f.rule for f in shown(report)}))
    if plan.action is PinAction.DENY:
        outcome = shape(report, workload, "enforce")
        if plan.note and outcome.decision.message:
            outcome.decision.message += f"\ncanrun: nothing to pin: {plan.note}"
    else:
        outcome = shape(report, workload, "warn")
        if plan.action is PinAction.UNKNOWN:
            outcome.decision.warnings.insert(0, shorten(f"canrun: not pinned: {plan.note}"))
    outcome.mode = "pin"
    return outcome


def unverified(workload: Workload, mode: str, *, deadline: float, strict: bool, mutate: bool = False) -> Outcome:
    """The answer when the verdict did not come within ``deadline``: allowed with a warning, unless strict.

    Pin mode's validating answer is enforce's; its mutating answer pins nothing and never denies (the
    validating answer that follows does, when strict).
    """
    images = sorted({c.image for c in workload.pod.containers})
    secs = f"{deadline:g}s"
    text = (f"canrun: {'not pinned, ' if mutate else ''}not verified within {secs}: {', '.join(images)} "
            f"(still checking in the background; a retry gets the verdict)")
    annotations = {"unverified": f"deadline {secs}: {', '.join(images)}"[:ANNOTATION_VALUE_LIMIT]}
    if mode in ("enforce", "pin") and strict and not mutate:
        return Outcome(Decision(allowed=False, code=403, message=text + "; denied because strict is set",
                                audit_annotations=annotations), mode, "denied", reason="deadline")
    warnings = [shorten(text)] if mode in ("enforce", "warn", "pin") else []
    return Outcome(Decision(warnings=warnings, audit_annotations=annotations), mode, "unverified",
                   reason="deadline")


def internal_error(exc: BaseException) -> Outcome:
    """A bug of canrun's: never a 500 on the write path of every workload, allowed with a warning."""
    return Outcome(Decision(warnings=[f"canrun: not verified: internal error ({type(exc).__name__}); allowed"]),
                   verdict="error", reason=type(exc).__name__)


def event_text(report: Report) -> tuple[str, str]:
    """The Event's reason and message: every shown finding in full, within ``EVENT_MESSAGE_LIMIT``."""
    visible = shown(report)
    reason = "ContainerCannotRun" if any(f.severity is Severity.ERROR for f in visible) else "ImageNotVerified"
    parts = [f"{f.rule}: container {f.container}" + (f" ({f.platform})" if f.platform else "") + f": {f.message}"
             for f in visible]
    return reason, shorten(f"canrun: {len(visible)} finding(s): " + "; ".join(parts), EVENT_MESSAGE_LIMIT)


def finding_line(f: Finding) -> str:
    """One terminal line: container, platform, rule, evidence, fix."""
    where = f'container "{f.container}"' if f.container else "pod"
    if f.platform:
        where += f" on {f.platform}"
    # one line whatever the evidence holds (a command may contain a newline): the terminal shows one per finding
    return " ".join(f"- {where}: {f.rule}: {f.message} (fix: {f.hint})".split())


def ssrf_remedies(findings: Sequence[Finding]) -> list[str]:
    """One warning per registry host the SSRF guard refused, saying how to allow it.

    The finding's own warning line is cut at 120 characters, before the remedy;
    the person who sees the warning must still learn the one flag that changes it.
    """
    hosts = dict.fromkeys(str(f.evidence["registry"]) for f in findings
                          if f.evidence.get("refused_by") == "ssrf-guard" and f.evidence.get("registry"))
    return [shorten(f"canrun: --allow-registry-host {h} lets canrun read this registry (its SSRF guard refused it)")
            for h in hosts]


def deny_message(workload: Workload, errors: Sequence[Finding]) -> str:
    """The first line is the whole verdict (kubectl prints it after its own long prefix); one full line per
    finding follows."""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    head = f"canrun: {workload.resource} would fail to start: {verdict_line(errors[0])}{more}"
    return "\n".join([head] + [finding_line(f) for f in errors])


def warning_line(f: Finding) -> str:
    """A self-contained kubectl warning of at most 120 characters: rule, container, path, the verdict."""
    return "canrun " + verdict_line(f, WARNING_TARGET - len("canrun "))


#: A path cut to make room keeps at least this many characters (its end: the file's name).
_MIN_SUBJECT = 16


def verdict_line(f: Finding, budget: int = WARNING_TARGET) -> str:
    """``rule: container "c": /path: verdict in a few words [platforms]`` in at most ``budget`` characters.

    The verdict words come last and are never cut: the path gives up its beginning
    (``…/bin/server``), then the container name its end; the platforms are named
    only when there is room (the Event and the audit annotation carry them).
    """
    rule = RULES.get(f.rule)
    verdict = rule.brief if rule is not None and rule.brief else f.rule
    subject = _subject(f)
    ev = f.evidence
    if f.rule == "interpreter-not-found" and ev.get("interpreter"):
        verdict = f"#! {_one_line(ev['interpreter'])} missing" + (" (CRLF line endings)" if ev.get("crlf") else "")
    elif f.rule in ("image-unresolvable", "image-corrupt", "internal-error"):
        verdict = f"{verdict}: {_one_line(f.message)}"  # the reason varies: what room is left is the reason's
    head = f"{f.rule}: "
    where = f'container "{_one_line(f.container)}"' if f.container else "pod"
    line = _compose(head, where, subject, verdict)
    if len(line) > budget and subject:
        room = max(_MIN_SUBJECT, len(subject) - (len(line) - budget))
        subject = subject if len(subject) <= room else "…" + subject[-(room - 1):]
        line = _compose(head, where, subject, verdict)
    if len(line) > budget and f.container:
        room = max(12, len(f.container) - (len(line) - budget))
        name = _one_line(f.container)
        where = f'container "{name if len(name) <= room else name[:room - 1] + "…"}"'
        line = _compose(head, where, subject, verdict)
    platforms = f" [{f.platform}]" if f.platform else ""
    if platforms and len(line) + len(platforms) <= budget:
        line += platforms
    return shorten(line, budget)


def _compose(head: str, where: str, subject: str, verdict: str) -> str:
    return f"{head}{where}: {subject}: {verdict}" if subject else f"{head}{where}: {verdict}"


def _subject(f: Finding) -> str:
    """What the verdict is about: the path that fails, else the image for image-level rules."""
    if f.rule in ("image-unresolvable", "image-corrupt", "platform-missing"):
        return _one_line(f.image or "")
    path = f.evidence.get("path")
    return _one_line(path) if isinstance(path, str) else ""


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def findings_annotation(findings: Sequence[Finding]) -> str:
    """The findings as compact JSON for the audit log, cut (with a ``more`` count) to fit one annotation."""
    items: list[dict[str, Any]] = []
    for f in findings:
        item = {"rule": f.rule, "severity": f.severity.value, "container": f.container, "platform": f.platform,
                "message": f.message}
        candidate = json.dumps(items + [item], separators=(",", ":"))
        if len(candidate) > ANNOTATION_VALUE_LIMIT - 40:
            items.append({"more": len(findings) - len(items)})
            break
        items.append(item)
    return json.dumps(items, separators=(",", ":"))
