"""The audit as Markdown: for a ticket, a wiki page or a scheduled job's summary.

Rendered from the same document as the JSON and HTML reports.  Table cells
escape ``|`` and newlines so an odd message cannot break the table.
"""

from __future__ import annotations

from typing import Any

from canrun.audit.document import audit_document
from canrun.audit.model import AuditRun

MAX_FINDINGS = 200


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _resource(res: dict[str, Any] | None) -> str:
    if not res:
        return ""
    ns = f"{res['namespace']}/" if res.get("namespace") else ""
    return f"{res.get('kind', '')} {ns}{res.get('name', '')}"


def render_document(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    scope = doc["scope"]
    ns = scope["namespaces"] if isinstance(scope["namespaces"], str) else ", ".join(scope["namespaces"])
    out = [
        "# canrun audit",
        "",
        f"**{_count(s['errors'], 'error')}, {_count(s['warnings'], 'warning')}**: "
        f"{s['failing_workloads']} of {_count(s['workloads'], 'workload')} cannot start"
        + (f", {s['warned_workloads']} more with warnings only" if s.get("warned_workloads") else "")
        + f" ({_count(s['images'], 'image')}, {_count(s['namespaces'], 'namespace')}; "
        f"{_count(s['infos'], 'note')}, {s['suppressed']} exempted).",
        "",
        f"Namespaces: {_cell(ns)}" + (f" · selector `{_cell(scope['labelSelector'])}`" if scope.get("labelSelector")
                                       else "")
        + f" · platforms: {', '.join(doc['platforms'])} ({doc['platforms_source']}) · {doc['finished']}",
        "",
    ]
    if doc["by_rule"]:
        out += ["## By rule", "", "| severity | rule | what fails | findings | workloads |", "|---|---|---|--:|--:|"]
        out += [f"| {r['severity']} | {_rule_cell(r)} | {_cell(r['title'])} | {r['findings']} | "
                f"{r['workloads']} |" for r in doc["by_rule"]]
        out.append("")
    if doc["by_namespace"]:
        out += ["## By namespace", "", "| namespace | errors | warnings | notes | cannot start | workloads |",
                "|---|--:|--:|--:|--:|--:|"]
        out += [f"| {_cell(n['namespace'] or '(cluster)')} | {n['error']} | {n['warning']} | {n['info']} | "
                f"{n['failing']} | {n['workloads']} |" for n in doc["by_namespace"]]
        out.append("")
    if doc["offenders"]:
        out += ["## Worst offenders", "", "| workload | errors | warnings | rules |", "|---|--:|--:|---|"]
        out += [f"| {_cell(o['label'])} | {o['error']} | {o['warning']} | {', '.join(o['rules'])} |"
                for o in doc["offenders"][:25]]
        out.append("")
    if doc.get("pins"):
        out += ["## Pin mode would pin", "",
                "Kept on the platforms where every container can exec (`canrun.io/mode=pin`, docs/pin.md):", "",
                "| workload | kept | cannot exec on |", "|---|---|---|"]
        out += [f"| {_cell(p['label'])} | {', '.join(p['kept'])} | "
                + _cell("; ".join(f"{e['platform']}: {', '.join(e['because'])}" for e in p["excluded"])) + " |"
                for p in doc["pins"]]
        out.append("")
    findings = [f for f in doc["findings"] if f["severity"] != "info"]
    if findings:
        out += ["## Findings", "", "| severity | rule | workload | container | platform | finding | fix |",
                "|---|---|---|---|---|---|---|"]
        for f in findings[:MAX_FINDINGS]:
            out.append(f"| {f['severity']} | `{f['rule']}` | {_cell(_resource(f.get('resource')))} | "
                       f"{_cell(f.get('container'))} | {_cell(f.get('platform'))} | {_cell(f['message'])} | "
                       f"{_cell(f.get('hint'))} |")
        if len(findings) > MAX_FINDINGS:
            out.append(f"\n… and {len(findings) - MAX_FINDINGS} more (use `--format json` or `--format html`).")
        out.append("")
    else:
        out += ["Every workload can start: no error or warning.", ""]
    if doc["unreadable"]:
        out += ["## Objects canrun could not read", ""] + [f"- {_cell(u)}" for u in doc["unreadable"]] + [""]
    return "\n".join(out)


def render(run: AuditRun) -> str:
    return render_document(audit_document(run))


def _rule_cell(entry: dict[str, Any]) -> str:
    """The rule id, linked only where a team hosts the docs (``CANRUN_DOCS_URL``)."""
    return f"[`{entry['rule']}`]({entry['docs_url']})" if entry.get("docs_url") else f"`{entry['rule']}`"
