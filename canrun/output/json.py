"""The JSON report: the stable machine contract of ``canrun check --format json``."""

from __future__ import annotations

import json

from canrun.output import CheckRun


def render(run: CheckRun) -> str:
    doc = {
        "findings": [f.to_dict() for f in run.report.findings],
        "suppressed": [f.to_dict() for f in run.report.suppressed],
        "input_errors": [{"file": e.source, "line": e.line, "message": str(e)} for e in run.input_errors],
        "not_checked": [{"file": e.source, "message": str(e)} for e in run.not_checked],
        "not_objects": [{"file": e.source, "line": e.line, "message": str(e)} for e in run.not_objects],
        "summary": run.summary(),
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"
