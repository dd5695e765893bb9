"""A pull-request comment (or job summary): a status line, a table of findings, details per finding.

Everything user-controlled (messages, image names, paths) is HTML-escaped and
pipes are entities, so a manifest cannot break the table or inject markup.  The
comment stays under GitHub's 65,536-character limit: past a budget the details
stop with a note that points at the full report.  The first line is an HTML
comment marker a bot can use to find and update its previous comment.
"""

from __future__ import annotations

from html import escape

from canrun.findings import Finding, Severity
from canrun.output import CheckRun, exempted_by_origin, is_stdin

MARKER = "<!-- canrun-check -->"
ICONS = {Severity.ERROR: "❌", Severity.WARNING: "⚠️", Severity.INFO: "ℹ️"}
MAX_CHARS = 60_000
MAX_TABLE_ROWS = 100


def cell(text: object) -> str:
    """Text safe inside a table cell: escaped HTML, pipes as entities, newlines as <br>."""
    return escape(str(text)).replace("|", "&#124;").replace("\r", "").replace("\n", "<br>")


def code(text: object) -> str:
    return f"<code>{cell(text)}</code>"


def _where(f: Finding) -> str:
    if f.source is None or is_stdin(f.source.file):
        return "stdin"
    return code(f"{f.source.file}:{f.source.line}" if f.source.line else f.source.file)


def _row(f: Finding) -> str:
    url = f.docs_url
    rule = f"[{code(f.rule)}]({url})" if url else code(f.rule)
    return (f"| {ICONS[f.severity]} {f.severity.value} | {rule} | "
            f"{cell(f.resource or '')} | {code(f.container) if f.container else ''} | "
            f"{cell((f.platform or '').replace(',', ', '))} | {_where(f)} |")


def _details(f: Finding) -> str:
    subject = cell(f.resource or "input") + (f", container {code(f.container)}" if f.container else "")
    body = [f"<details><summary>{ICONS[f.severity]} {code(f.rule)} — {subject}</summary>", "",
            cell(f.message), "", f"**Fix:** {cell(f.hint)}", ""]
    facts = []
    if f.image:
        facts.append(f"image {code(f.image)}")
    if f.digest:
        facts.append(f"digest {code(f.digest)}")
    if f.platform:
        facts.append(f"platform {cell(f.platform.replace(',', ', '))}")
    facts.append(f"at {_where(f)}")
    url = f.docs_url
    about = f"[About {code(f.rule)}]({url})" if url else f"About this rule: {code(f'canrun explain {f.rule}')}"
    body += [" · ".join(facts), "", about, "", "</details>"]
    return "\n".join(body)


def render(run: CheckRun, *, verbose: bool = False, max_chars: int = MAX_CHARS) -> str:
    findings = [f for f in run.report.findings if verbose or f.severity is not Severity.INFO]
    errors, warnings = len(run.report.errors), len(run.report.warnings)
    status = "❌" if errors or run.input_errors else ("⚠️" if warnings else "✅")
    out = [MARKER, f"### {status} canrun check: {cell(run.counts_line())}", "",
           cell(run.platforms_note()), ""]
    out += ["| Errors | Warnings | Workloads | Containers | Images | Unreadable documents |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {errors} | {warnings} | {run.report.workloads} | {run.report.containers} | "
            f"{len(run.report.images)} | {len(run.input_errors)} |", ""]
    if findings:
        out += ["| Severity | Rule | Resource | Container | Platform | Location |",
                "|---|---|---|---|---|---|"]
        # the table gets at most half the budget; the details share what is left
        budget, shown_rows = max_chars // 2, 0
        for f in findings[:MAX_TABLE_ROWS]:
            row = _row(f)
            budget -= len(row) + 1
            if budget < 0:
                break
            out.append(row)
            shown_rows += 1
        if len(findings) > shown_rows:
            out.append(f"\n_… and {len(findings) - shown_rows} more findings; see the full report._")
        out.append("")
    elif not run.input_errors:
        out += ["No container is predicted to fail.", ""]
    if run.input_errors:
        out += ["**Documents canrun could not read:**", ""]
        out += [f"- {cell(err)}" for err in run.input_errors]
        out.append("")
    if run.not_checked:
        out += ["**Not checked** (their renderer is not installed):", ""]
        out += [f"- {cell(err)}" for err in run.not_checked]
        out.append("")
    if run.report.suppressed:
        for origin, found in exempted_by_origin(run.report.suppressed).items():
            rules = ", ".join(code(r) for r in sorted({f.rule for f in found}))
            out += [f"{len(found)} finding(s) exempted by {code(origin)} ({rules}).", ""]
    hidden = len(run.report.findings) - len(findings)
    if hidden:
        out += [f"{hidden} note(s) about what could not be verified are not shown.", ""]

    text = "\n".join(out)
    details: list[str] = []
    used = len(text)
    for i, f in enumerate(findings):
        block = _details(f)
        if used + len(block) + 200 > max_chars:
            details.append(f"_{len(findings) - i} more finding(s) not detailed here (comment size limit); "
                           "see the full report._")
            break
        details.append(block)
        used += len(block) + 1
    if details:
        text += "\n#### Details\n\n" + "\n\n".join(details) + "\n"
    return text.rstrip("\n") + "\n"
