"""What canrun reports: severities, the stable rule catalog, and the Finding record.

Rule ids are a public contract (users write them into exemptions, dashboards and
CI configs), so they live in one table here together with the one-line fix hint
and the rule's page.

The pages are ``docs/rules/<rule>.md``, shipped inside the package
(``canrun/rules``): ``rule_page`` reads them (``canrun explain RULE`` prints one,
SARIF carries each as its rule's help).  canrun has no web site of its own, so
outputs link to a page only when ``CANRUN_DOCS_URL`` says where a team hosts the
docs: a base URL (``https://wiki.example.com/canrun/rules`` gives
``…/rules/<rule>.md``) or a template containing ``{rule}``.  Without it there is no
link, never one to a place that does not exist.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from importlib import resources
from typing import Any

from canrun.spec import Resource, SourceLocation
from canrun.terminal import printable

#: Where a team hosts the rule pages (a base URL, or a template with ``{rule}``); unset: no links.
DOCS_URL_ENV = "CANRUN_DOCS_URL"


def docs_url(rule_id: str) -> str | None:
    """The hosted page of ``rule_id`` when ``CANRUN_DOCS_URL`` names where the docs live, else None."""
    base = os.environ.get(DOCS_URL_ENV, "").strip()
    if not base or rule_id not in RULES:  # a rule outside the catalog has no page anywhere
        return None
    if "{rule}" in base:
        return base.replace("{rule}", rule_id)
    return f"{base.rstrip('/')}/{rule_id}.md"


def rule_page(rule_id: str) -> str:
    """The rule's page (Markdown), as shipped in the package."""
    return resources.files("canrun").joinpath("rules", f"{rule_id}.md").read_text(encoding="utf-8")


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: Severity
    #: The runtime failure the rule predicts, as a user would see it.
    predicts: str
    hint: str
    #: The verdict in a few words, for a line with no room for the message (a kubectl warning).
    brief: str = ""

    @property
    def docs_url(self) -> str | None:
        return docs_url(self.id)

    @property
    def page(self) -> str:
        return rule_page(self.id)


_RULES = [
    Rule("platform-missing", "No image for the node's platform", Severity.ERROR,
         "exec format error on nodes of that platform",
         "build and push the image for this platform (docker buildx --platform …), or pin the pod to the "
         "platforms the image has with a nodeSelector on kubernetes.io/arch",
         brief="no image for this platform (exec format error)"),
    Rule("exec-format", "The file cannot be executed on this platform", Severity.ERROR,
         "exec format error (ENOEXEC, runc exit 255)",
         "build the binary for the node's CPU (GOARCH/--platform), or add a #! line to scripts",
         brief="cannot run here (exec format error)"),
    Rule("command-not-found", "The command does not exist in the image", Severity.ERROR,
         "exit 127 / StartError: no such file or directory, executable file not found in $PATH",
         "COPY the binary to that path in the Dockerfile, or point `command` at where it is",
         brief="not found (exit 127)"),
    Rule("command-not-executable", "The command exists but cannot be executed", Severity.ERROR,
         "exit 126 / StartError: permission denied",
         "set the execute bit (chmod +x, COPY --chmod=755, or defaultMode: 0755 for configMap/secret volumes)",
         brief="not executable (exit 126)"),
    Rule("interpreter-not-found", "The script's #! interpreter is missing", Severity.ERROR,
         "exec: no such file or directory (runc exit 255)",
         "install the interpreter in the image, or change the #! line (and strip CRLF line endings)",
         brief="#! interpreter missing"),
    Rule("loader-not-found", "The binary's dynamic loader is missing", Severity.ERROR,
         "exec: no such file or directory (runc exit 255)",
         "build a static binary (CGO_ENABLED=0), or use a base image with the matching libc",
         brief="ELF loader missing"),
    Rule("no-command", "Neither the pod nor the image gives a command", Severity.ERROR,
         "CreateContainerError: no command specified",
         "set `command` in the manifest or ENTRYPOINT/CMD in the Dockerfile",
         brief="no command: set command, or ENTRYPOINT/CMD"),
    Rule("user-not-found", "The image USER names a user absent from the image's passwd", Severity.ERROR,
         "CreateContainerError: no users found (containerd) / unable to find user …: no matching entries in "
         "passwd file",
         "add the user to /etc/passwd in the image, use a numeric USER, or set runAsUser",
         brief="USER not in the image's /etc/passwd"),
    Rule("nonroot-conflict", "runAsNonRoot cannot be satisfied", Severity.ERROR,
         "CreateContainerConfigError: container has runAsNonRoot and image will run as root",
         "set runAsUser to a non-zero uid, or a numeric non-root USER in the image",
         brief="runAsNonRoot cannot be met"),
    Rule("image-unresolvable", "The image could not be read", Severity.WARNING,
         "ErrImagePull / ImagePullBackOff, or a check canrun could not make",
         "check the image name and tag, the registry's reachability and the pull credentials",
         brief="image not readable"),
    Rule("image-corrupt", "Image content does not match its digest", Severity.ERROR,
         "failed to pull and unpack image: digest mismatch",
         "re-push the image; the registry is serving content that does not match its digest",
         brief="content does not match its digest"),
    Rule("internal-error", "canrun failed while judging this container", Severity.WARNING,
         "nothing by itself: canrun hit a bug of its own and could not judge the container",
         "report the message (and the traceback that -v or --log-level debug shows) as a canrun bug; "
         "the container was not judged",
         brief="not judged"),
    Rule("not-verified", "canrun could not judge this", Severity.INFO,
         "nothing by itself: the verdict depends on what canrun cannot see",
         "nothing to fix; the message says what was unknowable (a volume's content, a valueFrom env var, "
         "a pod no node can take)",
         brief="not verified"),
]

RULES: dict[str, Rule] = {r.id: r for r in _RULES}


@dataclass(frozen=True)
class Finding:
    """One predicted failure (or note) for a container on a platform."""

    rule: str
    severity: Severity
    message: str
    hint: str
    resource: Resource | None = None
    container: str | None = None
    image: str | None = None
    digest: str | None = None
    platform: str | None = None
    source: SourceLocation | None = None
    #: Structured evidence for machines (paths, modes, trace); never credentials.
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the message and hint quote the image (paths, #! lines, env values): every format prints them
        for name in ("message", "hint"):
            text = getattr(self, name)
            if not text.isprintable():
                object.__setattr__(self, name, printable(text, keep="\n\r\t"))

    @property
    def docs_url(self) -> str | None:
        return docs_url(self.rule)

    def with_context(self, **changes: Any) -> Finding:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the CLI contract (issue: CLI contract)."""
        data: dict[str, Any] = {
            "rule": self.rule,
            "severity": self.severity.value,
            "resource": (
                {"kind": self.resource.kind, "namespace": self.resource.namespace, "name": self.resource.name}
                if self.resource else None
            ),
            "container": self.container,
            "image": self.image,
            "digest": self.digest,
            "platform": self.platform,
            "message": self.message,
            "hint": self.hint,
        }
        if self.source and self.source.file:
            data["location"] = {"file": self.source.file, "line": self.source.line}
        if self.evidence:
            data["evidence"] = self.evidence
        return data


def finding(rule: str, message: str, *, severity: Severity | None = None, hint: str | None = None,
            **context: Any) -> Finding:
    """Make a Finding from the catalog: the default severity and hint come from the rule."""
    spec = RULES[rule]
    return Finding(rule=rule, severity=severity or spec.severity, message=message,
                   hint=hint if hint is not None else spec.hint, **context)


def sort_key(f: Finding) -> tuple[Any, ...]:
    res = f.resource
    return (
        f.source.file if f.source and f.source.file else "",
        f.source.line or 0 if f.source else 0,
        str(res) if res else "",
        f.container or "",
        f.severity.rank,
        f.platform or "",
        f.rule,
    )


__all__ = ["DOCS_URL_ENV", "Finding", "Rule", "RULES", "Severity", "asdict", "docs_url", "finding", "rule_page",
           "sort_key"]
