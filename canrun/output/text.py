"""The human report: grouped by file and resource, one line per finding plus its fix.

Colour only when writing to a terminal (and never with ``NO_COLOR``), so logs
and pipes get plain text.
"""

from __future__ import annotations

from itertools import groupby

from canrun.findings import Finding, Severity
from canrun.output import CheckRun

_COLOURS = {Severity.ERROR: "\033[31m", Severity.WARNING: "\033[33m", Severity.INFO: "\033[36m"}
_RESET = "\033[0m"
_BOLD = "\033[1m"


def _header(f: Finding) -> str:
    where = str(f.source) if f.source else "<input>"
    what = str(f.resource) if f.resource else "?"
    parts = [f"{where}: {what}"]
    if f.container:
        parts.append(f'container "{f.container}"')
    if f.image:
        parts.append(f"image {f.image}")
    return ", ".join(parts)


def render(run: CheckRun, *, colour: bool = False, verbose: bool = False) -> str:
    lines: list[str] = []
    shown = [f for f in run.report.findings if verbose or f.severity is not Severity.INFO]

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if colour else text

    for header, group in groupby(shown, key=_header):
        lines.append(paint(header, _BOLD))
        for f in group:
            label = paint(f"{f.severity.value.upper():<7}", _COLOURS[f.severity])
            lines.append(f"  {label} {f.rule:<22} {f.platform or '-':<12} {f.message}")
            lines.append(f"          fix: {f.hint}")
    hidden = len(run.report.findings) - len(shown)
    if run.report.suppressed:
        rules = sorted({f.rule for f in run.report.suppressed})
        lines.append(f"{len(run.report.suppressed)} finding(s) exempted by canrun.io/skip ({', '.join(rules)})")
    if hidden:
        lines.append(f"{hidden} note(s) about what could not be verified (shown with --verbose)")
    for err in run.input_errors:
        lines.append(paint(f"cannot read {err}", _COLOURS[Severity.WARNING]))
    lines.append(run.summary_line())
    return "\n".join(lines) + "\n"
