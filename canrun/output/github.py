"""GitHub Actions workflow commands: each finding becomes an annotation on the manifest's line.

``::error file=deploy.yaml,line=21,title=command-not-found::message`` — GitHub
parses these from a step's log.  Its parser splits properties on ``,`` and the
property from the message on ``::``, so values are escaped the way the Actions
toolkit escapes them: ``%``→``%25``, CR→``%0D``, LF→``%0A`` everywhere, and in
properties also ``:``→``%3A`` and ``,``→``%2C``.  Paths are made relative to the
repository root, since that is what GitHub matches against the diff.
"""

from __future__ import annotations

from pathlib import PurePath

from canrun.findings import Finding, Severity
from canrun.output import CheckRun, is_stdin, repo_path, standalone_message

COMMANDS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **props: object) -> str:
    """One workflow command line; properties with None values are left out."""
    given = [f"{k}={escape_property(str(v))}" for k, v in props.items() if v is not None and v != ""]
    head = f"::{name} {','.join(given)}" if given else f"::{name}"
    return f"{head}::{escape_data(message)}"


def _file(file: str | None, root: str | PurePath | None, cwd: str | PurePath | None) -> str | None:
    if is_stdin(file):
        return None
    assert file is not None
    return repo_path(file, root=root, cwd=cwd) or file


def _annotation(f: Finding, root: str | PurePath | None, cwd: str | PurePath | None) -> str:
    url = f.docs_url
    message = f"{standalone_message(f)}\n" + (f"Docs: {url}" if url else f"Details: canrun explain {f.rule}")
    return command(COMMANDS[f.severity], message,
                   file=_file(f.source.file if f.source else None, root, cwd),
                   line=f.source.line if f.source else None,
                   title=f"canrun {f.rule}")


def render(run: CheckRun, *, root: str | PurePath | None = None, cwd: str | PurePath | None = None,
           verbose: bool = False) -> str:
    """Annotations for every error and warning (and notes with ``verbose``), then the summary line."""
    lines = [_annotation(f, root, cwd) for f in run.report.findings
             if verbose or f.severity is not Severity.INFO]
    for err in run.input_errors:
        lines.append(command("error", str(err), file=_file(err.source, root, cwd), line=err.line,
                             title="canrun: unreadable manifest"))
    for err in run.not_checked:
        lines.append(command("warning", str(err), file=_file(err.source, root, cwd), line=err.line,
                             title="canrun: not checked"))
    lines.append(run.summary_line())
    return "\n".join(lines) + "\n"
