"""The human report: grouped by file, then resource, then container; each finding with its fix.

Colour only when writing to a terminal and never with ``NO_COLOR`` set
(https://no-color.org), so CI logs, pipes and files get plain text.  Every
container line starts with ``file:line`` so editors and terminals can jump to it.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping
from typing import TextIO

from canrun.findings import Finding, Severity
from canrun.output import CheckRun, exempted_by_origin, is_stdin

_COLOURS = {Severity.ERROR: "\033[31m", Severity.WARNING: "\033[33m", Severity.INFO: "\033[36m"}
_RESET = "\033[0m"
_BOLD = "\033[1m"
_DIM = "\033[2m"


def wants_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour for a person at a terminal, unless NO_COLOR is set to anything non-empty."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def clean(text: str, indent: str = "") -> str:
    """Text from manifests and registries made safe for a terminal.

    Control characters (an ESC in an image name could repaint the screen) are
    shown escaped; a newline continues on an indented line.
    """
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\n" + indent)
        elif ch != "\t" and unicodedata.category(ch) in ("Cc", "Cf"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _file(f: Finding) -> str:
    file = f.source.file if f.source else None
    return "<stdin>" if is_stdin(file) else str(file)


def _where(f: Finding) -> str:
    line = f.source.line if f.source else None
    return f"{_file(f)}:{line}" if line else _file(f)


def render(run: CheckRun, *, colour: bool = False, verbose: bool = False) -> str:
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if colour else text

    shown = [f for f in run.report.findings if verbose or f.severity is not Severity.INFO]
    # file -> resource -> (container or None) -> findings, in report order (sorted by file and line)
    tree: dict[str, dict[str, dict[str | None, list[Finding]]]] = {}
    for f in shown:
        resource = str(f.resource) if f.resource else "(no resource)"
        tree.setdefault(_file(f), {}).setdefault(resource, {}).setdefault(f.container, []).append(f)

    lines: list[str] = []
    for file, resources in tree.items():
        lines.append(paint(clean(file), _BOLD))
        for resource, containers in resources.items():
            lines.append(f"  {paint(clean(resource), _BOLD)}")
            for container, findings in containers.items():
                first = findings[0]
                if container is not None:
                    image = f" (image {first.image})" if first.image else ""
                    lines.append(clean(f"    {_where(first)} container \"{container}\"{image}"))
                else:
                    lines.append(clean(f"    {_where(first)}"))
                for f in findings:
                    label = paint(f"{f.severity.value.upper():<7}", _COLOURS[f.severity])
                    plat = f" [{f.platform}]" if f.platform else ""
                    lines.append(f"      {label} {f.rule}{plat}: " + clean(f.message, " " * 14))
                    lines.append(paint(clean(f"              fix: {f.hint}", " " * 19), _DIM))
    hidden = len(run.report.findings) - len(shown)
    if run.report.suppressed:
        for origin, found in exempted_by_origin(run.report.suppressed).items():
            rules = sorted({f.rule for f in found})
            lines.append(f"{len(found)} finding(s) exempted by {origin} ({', '.join(rules)})")
    if hidden:
        lines.append(f"{hidden} note(s) about what could not be verified (shown with --verbose)")
    for err in run.input_errors:
        lines.append(paint(clean(f"cannot read {err}", "  "), _COLOURS[Severity.WARNING]))
    for err in run.not_checked:
        lines.append(paint(clean(f"not checked {err}", "  "), _COLOURS[Severity.WARNING]))
    if verbose:
        for err in run.not_objects:
            lines.append(paint(clean(f"skipped {err}", "  "), _DIM))
    counts = run.counts_line()
    code = _COLOURS[Severity.ERROR] if run.report.errors else ""
    lines.append(f"{paint(counts, code) if code else counts} ({run.platforms_note()})")
    return "\n".join(lines) + "\n"
