"""Report formats for ``canrun check``: each module turns a ``CheckRun`` into text for one reader.

Every format is a pure function ``render(run, …) -> str``; the CLI decides where
the text goes.  The formats and who reads them:

* ``text`` — a person at a terminal (grouped by file and resource, colour on a TTY);
* ``json`` — scripts (the stable machine contract);
* ``sarif`` — GitHub code scanning and other SARIF 2.1.0 viewers;
* ``github`` — GitHub Actions workflow commands (annotations on the PR diff);
* ``junit`` — Jenkins, GitLab and other test-report viewers;
* ``markdown`` — a pull-request comment or a job summary;
* ``patch`` / ``jsonpatch`` — the node affinity pin mode would add, to commit (``output/patch.py``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from canrun.errors import ManifestError
from canrun.exemptions import SKIP_ANNOTATION
from canrun.findings import Finding
from canrun.kube.pinning import PinPlan
from canrun.platform import Platform
from canrun.spec import Resource, SourceLocation, Workload
from canrun.validator import Report

FORMATS = ("text", "json", "sarif", "github", "junit", "markdown", "patch", "jsonpatch")
#: The formats that print pin mode's change rather than the findings.
PATCH_FORMATS = ("patch", "jsonpatch")


@dataclass(frozen=True)
class Target:
    """One container the run judged, with the node platforms its pod can land on.

    The report only holds findings; a JUnit viewer also wants the containers that
    passed, so the CLI records what was checked here.
    """

    resource: Resource
    container: str
    image: str
    source: SourceLocation | None = None
    #: Empty when no node of the given platforms can take the pod.
    platforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pin:
    """What pin mode would do to one workload, with the object a patch is written against."""

    workload: Workload
    obj: Mapping[str, Any]
    plan: PinPlan


@dataclass
class CheckRun:
    """One ``canrun check``: the engine's report plus what the input side has to say."""

    report: Report
    platforms: list[Platform]
    platforms_defaulted: bool = False
    input_errors: list[ManifestError] = field(default_factory=list)
    #: Objects read that carry no pod spec (Services, ConfigMaps, CRDs …), by kind.
    skipped_kinds: dict[str, int] = field(default_factory=dict)
    files: int = 0
    #: Documents found in directories that are not Kubernetes objects (Helm values, CI configs …): passed over.
    not_objects: list[ManifestError] = field(default_factory=list)
    #: Directories not checked because their renderer (kustomize, helm) is not installed.
    not_checked: list[ManifestError] = field(default_factory=list)
    #: Every container judged (for formats that list passes too); may be empty.
    targets: list[Target] = field(default_factory=list)
    #: Where the platforms came from when not the flag or the default, e.g. "3 nodes of context kind".
    platforms_from: str | None = None
    #: Pin mode's plan per workload (only for the patch formats).
    pins: list[Pin] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        r = self.report
        return {
            "errors": len(r.errors),
            "warnings": len(r.warnings),
            "infos": len(r.findings) - len(r.errors) - len(r.warnings),
            "suppressed": len(r.suppressed),
            "workloads": r.workloads,
            "containers": r.containers,
            "images": len(r.images),
            "platforms": [str(p) for p in self.platforms],
            "platforms_defaulted": self.platforms_defaulted,
            "platforms_from": self.platforms_from,
            "input_errors": len(self.input_errors),
            "files": self.files,
            "skipped_objects": dict(sorted(self.skipped_kinds.items())),
            "not_objects": self.not_object_files(),
            "not_checked": len(self.not_checked),
        }

    def not_object_files(self) -> int:
        """Files passed over because nothing in them is a Kubernetes object."""
        return len({e.source for e in self.not_objects})

    def counts_line(self) -> str:
        """``3 errors, 1 warning in 2 workloads, 5 images checked`` — the headline every format shares."""
        s = self.summary()
        parts = [_count(s["errors"], "error"), _count(s["warnings"], "warning")]
        line = (f"{', '.join(parts)} in {_count(s['workloads'], 'workload')}, "
                f"{_count(s['images'], 'image')} checked")
        if s["input_errors"]:
            line += f", {_count(s['input_errors'], 'unreadable document')}"
        if s["not_objects"]:
            line += f", {_count(s['not_objects'], 'file')} without Kubernetes objects skipped"
        if s["not_checked"]:
            n = s["not_checked"]
            line += f", {n} director{'y' if n == 1 else 'ies'} not rendered"
        return line

    def platforms_note(self) -> str:
        plats = ", ".join(str(p) for p in self.platforms) or "none"
        if self.platforms_defaulted:
            return f"platforms: {plats} — the default; pass --platform or --kubeconfig"
        if self.platforms_from:
            return f"platforms: {plats} from {self.platforms_from}"
        return f"platforms: {plats}"

    def summary_line(self) -> str:
        return f"{self.counts_line()} ({self.platforms_note()})"


def targets_for(workloads: Sequence[Workload],
                platforms_of: Callable[[Workload], Sequence[Platform]]) -> list[Target]:
    """The containers of ``workloads`` with the platforms each pod can land on."""
    out: list[Target] = []
    for w in workloads:
        plats = tuple(str(p) for p in platforms_of(w))
        for c in w.pod.containers:
            src = c.source if c.source and c.source.file else w.source
            out.append(Target(w.resource, c.name, c.image, src, plats))
    return out


def finding_platforms(f: Finding) -> list[str]:
    """The platforms a (possibly folded, ``a,b``) finding names; empty when it names none."""
    return [p for p in (f.platform or "").split(",") if p]


def standalone_message(f: Finding) -> str:
    """A finding told in full outside canrun's own report (a PR annotation, a SARIF result): who, where, what, fix."""
    subject = str(f.resource) if f.resource else "input"
    if f.container:
        subject += f', container "{f.container}"'
    if f.image:
        subject += f" (image {f.image})"
    on = f" on {f.platform.replace(',', ', ')}" if f.platform else ""
    return f"{subject}{on}: {f.message}\nFix: {f.hint}"


def exempted_by_origin(suppressed: Sequence[Finding]) -> dict[str, list[Finding]]:
    """Exempted findings by what exempted them: the ``canrun.io/skip`` annotation, or an entry of the list."""
    out: dict[str, list[Finding]] = {}
    for f in suppressed:
        origin = str(f.evidence.get("exempted_by") or SKIP_ANNOTATION)
        out.setdefault(SKIP_ANNOTATION if origin.startswith(SKIP_ANNOTATION) else origin, []).append(f)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != SKIP_ANNOTATION, kv[0])))


def is_stdin(file: str | None) -> bool:
    return file in (None, "", "-", "<stdin>", "<input>")


def repo_path(file: str, *, root: str | PurePath | None = None, cwd: str | PurePath | None = None) -> str | None:
    """``file`` as a POSIX path relative to ``root`` (the repository), or None when it lies outside.

    Manifest paths are as the user typed them, relative to ``cwd``; SARIF and
    GitHub annotations need them relative to the repository root.  Without a
    root, a relative path is taken as already relative to it.
    """
    p = PurePath(file)
    if root is None:
        if p.is_absolute():
            return None
        norm = posixpath.normpath(p.as_posix())
        return None if norm == ".." or norm.startswith("../") else norm
    base = Path(cwd) if cwd is not None else Path(root)
    absolute = p if p.is_absolute() else base / p
    absolute = Path(posixpath.normpath(PurePath(absolute).as_posix()))
    try:
        return absolute.relative_to(Path(root)).as_posix()
    except ValueError:
        return None


def _count(n: object, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
