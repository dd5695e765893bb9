"""The engine: workloads × the node platforms they can land on → findings.

Every front end (the webhook, ``canrun check``, ``canrun audit``) hands plain
``Workload`` data and a ``NodePool`` to ``Validator.check`` and formats what
comes back; nothing here knows about HTTP, YAML or Kubernetes API objects.

The validator's own job is the part no single check can do: deciding which
image manifest each node platform would pull, turning "could not read the
image" into findings (``image-unresolvable``/``image-corrupt``/
``platform-missing``) plus what the pod spec alone decides (the image-independent
checks), stamping every finding with where it came from, folding
the same finding seen on several platforms into one, and honouring
``canrun.io/skip`` exemptions.

Judging (the merge of an image's layers, ``check_container``'s path walks) is
CPU work in plain Python and runs in the validator's own worker threads, never
on the event loop: a webhook must answer its liveness probe and fire its
deadline however long one image takes to judge.  The threads still share the
GIL with the loop, which the interpreter hands over every few milliseconds, so
the loop stays responsive; a separate pool (rather than asyncio's default
executor) keeps slow judgements from starving the webhook's other thread work
(namespace labels, pull secrets), and bounds how many run at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any
from dataclasses import dataclass, field, replace

from canrun.checks import check_container, check_without_image
from canrun.checks.context import ExecContext
from canrun.errors import INTERNAL_LOG, CanrunError, InvalidReference, RegistryError, RegistryRefused
from canrun.exemptions import SKIP_ANNOTATION, Exemption, exempted_by, exemption_key, skipped_rules
from canrun.findings import Finding, Severity, finding, sort_key
from canrun.image.store import ImageStore, ImageView, Selection
from canrun.kube.scheduling import NodePool, platforms_for
from canrun.platform import DEFAULT_CONTAINERD_VERSION, Platform, exact_pull_match
from canrun.registry.reference import Reference
from canrun.spec import Container, Workload

__all__ = ["SKIP_ANNOTATION", "Report", "Validator", "fold_platforms", "skipped_rules"]

Progress = Callable[[int, int], None]


def judge_workers() -> int:
    """How many judgements run at once: a few (the GIL makes more pointless), at least two so one slow
    image does not hold up every other."""
    return max(2, min(4, os.cpu_count() or 1))


@dataclass
class Report:
    """What one validation run found, plus the counts the summaries print."""

    findings: list[Finding] = field(default_factory=list)
    #: Findings removed by a ``canrun.io/skip`` annotation (kept so exemptions stay visible).
    suppressed: list[Finding] = field(default_factory=list)
    workloads: int = 0
    containers: int = 0
    images: set[str] = field(default_factory=set)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    def extend(self, other: Report) -> None:
        self.findings += other.findings
        self.suppressed += other.suppressed
        self.workloads += other.workloads
        self.containers += other.containers
        self.images |= other.images


class Validator:
    """Judge workloads against their images; one instance serves many requests."""

    def __init__(self, store: ImageStore, *, runtime: str = "containerd", strict: bool = False,
                 containerd_version: str = DEFAULT_CONTAINERD_VERSION,
                 rules: Mapping[str, Severity | None] | None = None, exemptions: Sequence[Exemption] = ()) -> None:
        self.store = store
        self.runtime = runtime
        self.strict = strict
        #: rule id -> severity, or None to drop the rule (the config file's ``rules``), applied last.
        self.rules: Mapping[str, Severity | None] = dict(rules or {})
        #: The config file's ``exceptions``, matched after the workload's own annotation.
        self.exemptions = tuple(exemptions)
        #: containerd 2.1+ pulls the node's own platform only (see canrun.platform.exact_pull_match).
        self.exact_pull = exact_pull_match(runtime, containerd_version)
        self._judges: ThreadPoolExecutor | None = None

    async def _off_loop(self, fn: Callable[[], list[Finding]]) -> list[Finding]:
        """Run ``fn`` in a judging thread (in the caller's context) and wait for it without blocking the loop."""
        if self._judges is None:
            self._judges = ThreadPoolExecutor(judge_workers(), thread_name_prefix="canrun-judge")
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._judges, context.run, fn)

    def exemption_key(self, workload: Workload) -> tuple[Any, ...]:
        """What this validator's exemptions of ``workload`` depend on (part of every shared verdict's key)."""
        return exemption_key(workload, self.exemptions)

    async def check(self, workloads: Sequence[Workload], pool: NodePool, *,
                    progress: Progress | None = None) -> Report:
        """Judge every workload; images shared between workloads are read once."""
        report = Report()
        done = 0

        async def one(workload: Workload) -> Report:
            nonlocal done
            result = await self.check_workload(workload, pool)
            done += 1
            if progress is not None:
                progress(done, len(workloads))
            return result

        for result in await asyncio.gather(*(one(w) for w in workloads)):
            report.extend(result)
        report.findings.sort(key=sort_key)
        return report

    async def check_workload(self, workload: Workload, pool: NodePool) -> Report:
        report = Report(workloads=1, containers=len(workload.pod.containers))
        placement = platforms_for(workload.pod, pool)
        context = {"resource": workload.resource, "source": workload.source}
        found: list[Finding] = []
        if not placement.platforms:
            found.append(finding("not-verified",
                                 placement.note or "no node of the given platforms can take this pod",
                                 **context))
        else:
            per_container = await asyncio.gather(
                *(self._check_container(workload, c, placement.platforms) for c in workload.pod.containers))
            for container, results in zip(workload.pod.containers, per_container):
                report.images.add(container.image)
                found += results
        today = date.today()
        for f in found:
            exemption = exempted_by(workload, f, self.exemptions, today)
            if exemption is None:
                report.findings.append(f)
            else:
                report.suppressed.append(replace(f, evidence={**f.evidence, "exempted_by": exemption.label}))
        report.findings = override_rules(report.findings, self.rules)
        report.suppressed = override_rules(report.suppressed, self.rules)
        return report

    async def _check_container(self, workload: Workload, container: Container,
                               platforms: Sequence[Platform]) -> list[Finding]:
        context = {"resource": workload.resource, "container": container.name, "image": container.image,
                   "source": container.source if container.source.file else workload.source}
        try:
            ref = Reference.parse(container.image)
        except InvalidReference as exc:
            return [self._unreadable(exc, **context)]
        results = await asyncio.gather(*(self._check_on(workload, container, ref, p, context) for p in platforms),
                                       return_exceptions=True)
        found: list[Finding] = []
        for platform, result in zip(platforms, results):
            if isinstance(result, CanrunError):
                # one per platform here; fold_platforms makes the same failure one finding naming them all
                found.append(self._unreadable(result, platform=str(platform), **context))
                found += self._without_image(workload, container, platform, context)
            elif isinstance(result, Exception):
                found.append(self._internal_error(result, platform=str(platform), **context))
            elif isinstance(result, BaseException):
                raise result  # cancellation, KeyboardInterrupt: not ours to turn into a verdict
            else:
                found += result
        return fold_platforms(found)

    async def _check_on(self, workload: Workload, container: Container, ref: Reference, node: Platform,
                        context: dict[str, object]) -> list[Finding]:
        selection = await self.store.select(ref, node, exact=self.exact_pull)
        if selection.descriptor is None:
            platforms = [str(p) for p in selection.resolved.platforms]
            if selection.config_platform is not None:
                platforms.append(f"{selection.config_platform or 'unknown'} (from the config of an entry without a "
                                 f"platform)")
            available = ", ".join(platforms) or "none"
            return [finding(
                "platform-missing",
                f"the image has no build for {node} (it has: {available}); nodes of that platform fail to pull "
                f"it (no match for platform in manifest)",
                platform=str(node), digest=selection.resolved.descriptor.digest,
                evidence={"available": platforms}, **context)]
        view = await self.store.view(selection)

        def judge() -> list[Finding]:
            # view.fs merges the layers on first use (when no cached view holds the merge): here, off the loop
            ctx = ExecContext(container=container, pod=workload.pod, config=view.config, fs=view.fs,
                              node=node, image_platform=view.platform or node, runtime=self.runtime)
            return check_container(ctx)

        results = await self._off_loop(judge)
        results = self._single_platform_verdict(selection, view, node, results)
        return [replace(f, platform=str(node), digest=view.digest, **_missing(f, context)) for f in results]

    def _without_image(self, workload: Workload, container: Container, node: Platform,
                       context: dict[str, object]) -> list[Finding]:
        """The verdicts that stand whatever the image holds, for an image that could not be read."""
        results = check_without_image(container, workload.pod, node, runtime=self.runtime)
        return [replace(f, platform=str(node), **_missing(f, context)) for f in results]

    def _single_platform_verdict(self, selection: Selection, view: ImageView, node: Platform,
                                 results: list[Finding]) -> list[Finding]:
        """A single-manifest image is pulled whatever its platform; judge it by its config and code.

        containerd does not platform-check an image without an index, so a
        mislabeled config alone never fails; what fails is the code.  If the
        exec checks already proved a format problem, that is the finding; if
        the config names a platform this node cannot run and the checks found
        nothing to contradict it, report the platform mismatch.
        """
        image_platform = view.platform
        if not selection.single_platform or image_platform is None or node.match_rank(image_platform) is not None:
            return results
        if any(f.rule == "exec-format" for f in results):
            return results
        if any(f.evidence.get("elf_runs_on_node") for f in results):
            return results
        return results + [finding(
            "platform-missing",
            f"the image is built for {image_platform} only (no index); nodes of platform {node} fail with "
            f"exec format error",
            evidence={"image_platform": str(image_platform)})]

    def _unreadable(self, exc: CanrunError, **context: object) -> Finding:
        rule = exc.rule
        severity = Severity.ERROR if (self.strict or rule == "image-corrupt") else None
        evidence: dict[str, object] = {}
        if isinstance(exc, RegistryError) and exc.host:
            evidence["registry"] = exc.host
            if exc.status is not None:
                evidence["status"] = exc.status
        if isinstance(exc, RegistryRefused):
            evidence["refused_by"] = "ssrf-guard"
        return finding(rule, str(exc), severity=severity, evidence=evidence, **context)  # type: ignore[arg-type]


    def _internal_error(self, exc: Exception, **context: object) -> Finding:
        """A bug of ours while judging one container: reported, never a traceback, never a silent pass.

        Like an unreadable image it warns by default (the webhook fails open) and
        is an error under ``strict`` (the webhook denies in enforce mode); the CLI
        exits 2 whenever one is reported.  The traceback goes to ``INTERNAL_LOG`` at
        debug level only.
        """
        _internal.debug("internal error judging container %s (%s) on %s", context.get("container"),
                        context.get("image"), context.get("platform"), exc_info=exc)
        severity = Severity.ERROR if self.strict else None
        return finding("internal-error", f"internal error: {type(exc).__name__}: {exc} (a bug in canrun)",
                       severity=severity, evidence={"exception": type(exc).__name__}, **context)  # type: ignore[arg-type]


_internal = logging.getLogger(INTERNAL_LOG)


def override_rules(findings: list[Finding], rules: Mapping[str, Severity | None]) -> list[Finding]:
    """``findings`` with the config file's rule severities: a new severity, or None to drop the rule.

    Applied to each workload's finished findings (after exemptions, strict mode
    and platform folding), so every rule, the validator's own included, is
    overridden the same way in every door.
    """
    if not rules:
        return findings
    out: list[Finding] = []
    for f in findings:
        if f.rule not in rules:
            out.append(f)
        elif rules[f.rule] is not None:
            out.append(replace(f, severity=rules[f.rule]))  # type: ignore[arg-type]
    return sorted(out, key=sort_key)


def _missing(f: Finding, context: dict[str, object]) -> dict[str, object]:
    """Context fields a check left empty."""
    return {k: v for k, v in context.items() if getattr(f, k) in (None, {})}


def fold_platforms(findings: list[Finding]) -> list[Finding]:
    """Merge findings that differ only by platform into one naming every platform."""
    merged: dict[tuple[object, ...], Finding] = {}
    for f in findings:
        key = (f.rule, f.severity, f.message, f.container, f.image)
        prior = merged.get(key)
        if prior is None:
            merged[key] = f
        elif f.platform and prior.platform and f.platform not in prior.platform.split(","):
            merged[key] = replace(prior, platform=f"{prior.platform},{f.platform}")
    return list(merged.values())
