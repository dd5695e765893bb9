"""SARIF 2.1.0 for GitHub code scanning (and any other SARIF viewer).

What GitHub needs to show a useful, stable alert, and so what this emits:

* one ``rules`` entry per rule of the catalog (id, name, descriptions, help,
  ``helpUri`` to the rule's page), referenced from results by ``ruleIndex``;
* results at the file and line of the offending container, with the URI
  relative to ``%SRCROOT%`` (the repository root) so the alert lands on the diff;
* ``partialFingerprints`` built from what identifies the problem (rule, file,
  resource, container, platforms) and not from the line or the image tag, so an
  alert survives lines moving above it and a tag bump that does not fix it.

Input documents canrun could not read become tool execution notifications
rather than results: they are not predictions about a container.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

from canrun import __version__
from canrun.findings import RULES, Finding, Severity
from canrun.output import CheckRun, finding_platforms, is_stdin, repo_path, standalone_message

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
SRCROOT = "%SRCROOT%"
FINGERPRINT_KEY = "canrunFinding/v1"

LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
_RULE_IDS = list(RULES)


def rule_name(rule_id: str) -> str:
    """SARIF's ``name`` is an identifier-like, human-readable name: ``command-not-found`` -> ``CommandNotFound``."""
    return "".join(part.capitalize() for part in rule_id.split("-"))


def _rules() -> list[dict[str, Any]]:
    out = []
    for rule in RULES.values():
        url = rule.docs_url
        entry: dict[str, Any] = {
            "id": rule.id,
            "name": rule_name(rule.id),
            "shortDescription": {"text": rule.title},
            "fullDescription": {"text": f"{rule.title}. At run time: {rule.predicts}."},
            # the rule's whole page travels with the log: code scanning shows it beside each alert
            "help": {
                "text": f"Fix: {rule.hint}\n" + (f"Documentation: {url}" if url else f"canrun explain {rule.id}"),
                "markdown": rule.page,
            },
            "defaultConfiguration": {"level": LEVELS[rule.severity]},
            "properties": {"tags": ["kubernetes", "containers", "reliability"]},
        }
        if url:  # only where a team hosts the docs (CANRUN_DOCS_URL): never a link to nowhere
            entry["helpUri"] = url
        out.append(entry)
    return out


def _artifact(file: str | None, root: str | PurePath | None,
              cwd: str | PurePath | None) -> dict[str, Any] | None:
    if is_stdin(file):
        return None
    assert file is not None
    rel = repo_path(file, root=root, cwd=cwd)
    if rel is not None:
        return {"uri": quote(rel, safe="/"), "uriBaseId": SRCROOT}
    # outside the repository: an absolute file URI is still a valid, openable location
    p = PurePath(file)
    if not p.is_absolute() and cwd is not None:
        p = PurePath(cwd) / p
    if not p.is_absolute():
        return {"uri": quote(PurePath(file).as_posix(), safe="/")}
    return {"uri": "file://" + quote(posixpath.normpath(p.as_posix()), safe="/")}


def fingerprint(f: Finding, uri: str | None) -> str:
    res = f.resource
    parts = [f.rule, uri or "", res.kind if res else "", (res.namespace or "") if res else "",
             res.name if res else "", f.container or "", ",".join(sorted(finding_platforms(f)))]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _result(f: Finding, root: str | PurePath | None, cwd: str | PurePath | None) -> dict[str, Any]:
    artifact = _artifact(f.source.file if f.source else None, root, cwd)
    location: dict[str, Any] = {}
    if artifact is not None:
        physical: dict[str, Any] = {"artifactLocation": artifact}
        if f.source and f.source.line:
            physical["region"] = {"startLine": f.source.line}
        location["physicalLocation"] = physical
    if f.resource:
        name = "/".join(p for p in (f.resource.kind, f.resource.namespace, f.resource.name, f.container) if p)
        location["logicalLocations"] = [{"fullyQualifiedName": name, "kind": "object"}]
    result: dict[str, Any] = {
        "ruleId": f.rule,
        "level": LEVELS[f.severity],
        "message": {"text": standalone_message(f)},
        "partialFingerprints": {FINGERPRINT_KEY: fingerprint(f, artifact["uri"] if artifact else None)},
        "properties": {
            "resource": f.to_dict()["resource"],
            "container": f.container,
            "image": f.image,
            "digest": f.digest,
            "platforms": finding_platforms(f),
            "hint": f.hint,
        },
    }
    if f.rule in RULES:
        result["ruleIndex"] = _RULE_IDS.index(f.rule)
    if location:
        result["locations"] = [location]
    return result


def _notifications(run: CheckRun, root: str | PurePath | None, cwd: str | PurePath | None) -> list[dict[str, Any]]:
    out = []
    for level, err in [*(("error", e) for e in run.input_errors), *(("warning", e) for e in run.not_checked)]:
        note: dict[str, Any] = {"level": level, "message": {"text": str(err)}}
        artifact = _artifact(err.source, root, cwd)
        if artifact is not None:
            physical: dict[str, Any] = {"artifactLocation": artifact}
            if err.line:
                physical["region"] = {"startLine": err.line}
            note["locations"] = [{"physicalLocation": physical}]
        out.append(note)
    return out


def render(run: CheckRun, *, root: str | PurePath | None = None, cwd: str | PurePath | None = None) -> str:
    """The SARIF log for ``run``; file URIs are made relative to ``root`` (paths as given are under ``cwd``)."""
    sarif_run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "canrun",
            "version": __version__,
            "semanticVersion": __version__,
            "rules": _rules(),
        }},
        "results": [_result(f, root, cwd) for f in run.report.findings],
        "invocations": [{
            "executionSuccessful": True,
            "toolExecutionNotifications": _notifications(run, root, cwd),
        }],
        "columnKind": "unicodeCodePoints",
        "properties": {"summary": run.summary()},
    }
    if root is not None:
        base = PurePath(root).as_posix().rstrip("/") + "/"
        sarif_run["originalUriBaseIds"] = {SRCROOT: {"uri": "file://" + quote(base, safe="/")}}
    log = {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [sarif_run]}
    return json.dumps(log, indent=2) + "\n"
