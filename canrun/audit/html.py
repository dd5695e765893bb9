"""A self-contained HTML audit report: one file to mail, attach to a ticket or open from a CI artifact.

No external assets (inline CSS and JS, no fonts, no CDN), so it renders on an
air-gapped laptop and leaks nothing when opened.  The page is rendered on the
server side from the same document ``--format json`` prints, so it reads fine
with JavaScript off; the inline script only adds sorting and filtering of the
findings table.  The document is also embedded as JSON for machines, with
``<``, ``>`` and ``&`` escaped so that no string in it (a hostile image name,
say ``</script><script>…``) can end the script element.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from canrun.audit.document import audit_document
from canrun.audit.model import AuditRun

_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}
MAX_OFFENDERS = 25


def embed_json(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: nothing in it can close the element."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _rule_link(rule: str, url: str | None) -> str:
    """The rule id, a link only where a team hosts the docs (``CANRUN_DOCS_URL``)."""
    return f'<a href="{_e(url)}"><code>{_e(rule)}</code></a>' if url else f"<code>{_e(rule)}</code>"


def _card(metric: str, value: int, label: str, tone: str = "") -> str:
    return (f'<div class="card {tone}" data-metric="{metric}"><span class="num">{value}</span>'
            f'<span class="label">{_e(label)}</span></div>')


def _resource_text(res: dict[str, Any] | None) -> str:
    if not res:
        return ""
    ns = f"{res['namespace']}/" if res.get("namespace") else ""
    return f"{res.get('kind', '')} {ns}{res.get('name', '')}"


def _rules_table(rules: list[dict[str, Any]]) -> str:
    if not rules:
        return '<p class="empty">No rule failed.</p>'
    rows = "".join(
        f'<tr data-rule="{_e(r["rule"])}"><td><span class="sev {_e(r["severity"])}">{_e(r["severity"])}</span></td>'
        f'<td>{_rule_link(r["rule"], r.get("docs_url"))}</td><td>{_e(r["title"])}</td>'
        f'<td class="n" data-col="findings">{r["findings"]}</td><td class="n" data-col="workloads">{r["workloads"]}</td></tr>'
        for r in rules)
    return ('<table id="by-rule"><thead><tr><th>severity</th><th>rule</th><th>what fails</th>'
            f'<th class="n">findings</th><th class="n">workloads</th></tr></thead><tbody>{rows}</tbody></table>')


def _namespaces_table(namespaces: list[dict[str, Any]]) -> str:
    if not namespaces:
        return '<p class="empty">No workload found.</p>'
    rows = "".join(
        f'<tr data-namespace="{_e(n["namespace"])}"><td>{_e(n["namespace"] or "(cluster)")}</td>'
        f'<td class="n" data-col="error">{n["error"]}</td><td class="n" data-col="warning">{n["warning"]}</td>'
        f'<td class="n" data-col="info">{n["info"]}</td><td class="n" data-col="failing">{n["failing"]}</td>'
        f'<td class="n" data-col="workloads">{n["workloads"]}</td></tr>'
        for n in namespaces)
    return ('<table id="by-namespace"><thead><tr><th>namespace</th><th class="n">errors</th>'
            '<th class="n">warnings</th><th class="n">notes</th><th class="n">workloads that cannot start</th>'
            f'<th class="n">workloads</th></tr></thead><tbody>{rows}</tbody></table>')


def _offenders_table(offenders: list[dict[str, Any]]) -> str:
    if not offenders:
        return '<p class="empty">Every workload can start.</p>'
    rows = "".join(
        f'<tr><td>{_e(o["label"])}</td><td class="n" data-col="error">{o["error"]}</td>'
        f'<td class="n" data-col="warning">{o["warning"]}</td>'
        f'<td>{" ".join(f"<code>{_e(r)}</code>" for r in o["rules"])}</td></tr>'
        for o in offenders[:MAX_OFFENDERS])
    more = (f'<p class="more">… and {len(offenders) - MAX_OFFENDERS} more in the table below.</p>'
            if len(offenders) > MAX_OFFENDERS else "")
    return ('<table id="offenders"><thead><tr><th>workload</th><th class="n">errors</th>'
            f'<th class="n">warnings</th><th>rules</th></tr></thead><tbody>{rows}</tbody></table>{more}')


def _findings_table(findings: list[dict[str, Any]], suppressed: list[dict[str, Any]]) -> str:
    rows = []
    for f, exempt in [(f, False) for f in findings] + [(f, True) for f in suppressed]:
        res = f.get("resource") or {}
        evidence = f.get("evidence")
        ev_html = (f'<details><summary>evidence</summary><pre>{_e(json.dumps(evidence, indent=2, default=str))}'
                   f'</pre></details>') if evidence else ""
        severity = f["severity"]
        status = "exempt" if exempt else severity
        rows.append(
            f'<tr data-severity="{_e(status)}" data-namespace="{_e(res.get("namespace") or "")}" '
            f'data-rule="{_e(f["rule"])}">'
            f'<td data-sort="{_SEVERITY_RANK.get(severity, 3) + (3 if exempt else 0)}">'
            f'<span class="sev {_e(status)}">{_e(status)}</span></td>'
            f'<td>{_rule_link(f["rule"], f.get("docs_url"))}</td>'
            f'<td>{_e(res.get("namespace") or "")}</td><td>{_e(_resource_text(res))}</td>'
            f'<td>{_e(f.get("container") or "")}</td><td><code>{_e(f.get("image") or "")}</code></td>'
            f'<td>{_e(f.get("platform") or "")}</td>'
            f'<td class="msg">{_e(f["message"])}{ev_html}</td><td class="fix">{_e(f.get("hint") or "")}</td></tr>')
    headers = ["severity", "rule", "namespace", "workload", "container", "image", "platform", "finding", "fix"]
    head = "".join(f'<th data-col="{i}" tabindex="0" role="button" aria-sort="none">{h}</th>'
                   for i, h in enumerate(headers))
    return (f'<table id="findings"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            + ('' if rows else '<p class="empty">No findings.</p>'))


_CSS = """
:root{--err:#b42318;--warn:#b54708;--info:#475467;--ok:#067647;--bg:#fff;--fg:#101828;--mute:#667085;--line:#eaecf0}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:var(--fg);background:var(--bg)}
header{padding:20px 28px;border-bottom:1px solid var(--line)}h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
.meta{color:var(--mute)}main{padding:0 28px 40px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:18px}.card{border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:120px}
.card .num{display:block;font-size:26px;font-weight:650}.card .label{color:var(--mute)}
.card.err .num{color:var(--err)}.card.warn .num{color:var(--warn)}.card.ok .num{color:var(--ok)}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:0 28px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f9fafb;font-weight:600;white-space:nowrap}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
#findings th{cursor:pointer;user-select:none}#findings th[aria-sort=ascending]::after{content:" \\25B2"}#findings th[aria-sort=descending]::after{content:" \\25BC"}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}a code{word-break:normal;white-space:nowrap}
.sev{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff;background:var(--info)}
.sev.error{background:var(--err)}.sev.warning{background:var(--warn)}.sev.exempt{background:#98a2b3}
td.msg{max-width:520px}td.fix{max-width:360px;color:#344054}pre{white-space:pre-wrap;font-size:12px;background:#f9fafb;padding:6px;margin:4px 0}
.controls{display:flex;gap:10px;align-items:center;margin:8px 0 10px}.controls input{padding:5px 8px;width:320px}
.empty{color:var(--ok)}.more{color:var(--mute)}
"""

_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("canrun-data").textContent);
  var table = document.getElementById("findings");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var filter = document.getElementById("filter");
  var severity = document.getElementById("severity-filter");
  var shown = document.getElementById("shown-count");

  function apply() {
    var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var sev = severity.value;
    var count = 0;
    rows.forEach(function (row) {
      var text = row.textContent.toLowerCase();
      var ok = (!sev || row.getAttribute("data-severity") === sev) &&
        words.every(function (w) { return text.indexOf(w) !== -1; });
      row.hidden = !ok;
      if (ok) { count += 1; }
    });
    shown.textContent = String(count);
  }

  function cellKey(row, col) {
    var cell = row.cells[col];
    var key = cell.getAttribute("data-sort");
    return key !== null ? Number(key) : cell.textContent.trim().toLowerCase();
  }

  function sortBy(th) {
    var col = Number(th.getAttribute("data-col"));
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = cellKey(a, col), y = cellKey(b, col);
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { sortBy(th); } });
  });
  filter.addEventListener("input", apply);
  severity.addEventListener("change", apply);
  document.getElementById("total-count").textContent = String(data.findings.length + data.suppressed.length);
  apply();
  window.canrunReport = { data: data, sortBy: function (col) { sortBy(table.tHead.rows[0].cells[col]); }, apply: apply };
})();
"""


def render_document(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    scope = doc["scope"]
    namespaces = scope["namespaces"] if isinstance(scope["namespaces"], str) else ", ".join(scope["namespaces"])
    selector = f' · selector <code>{_e(scope["labelSelector"])}</code>' if scope.get("labelSelector") else ""
    cards = "".join([
        _card("errors", s["errors"], "errors", "err" if s["errors"] else "ok"),
        _card("warnings", s["warnings"], "warnings", "warn" if s["warnings"] else ""),
        _card("infos", s["infos"], "notes"),
        _card("failing_workloads", s["failing_workloads"], "workloads that cannot start", "err" if s["failing_workloads"] else "ok"),
        _card("workloads", s["workloads"], "workloads judged"),
        _card("images", s["images"], "images"),
        _card("namespaces", s["namespaces"], "namespaces"),
        _card("suppressed", s["suppressed"], "exempted"),
    ])
    options = "".join(f'<option value="{v}">{v}</option>' for v in ("error", "warning", "info", "exempt"))
    unreadable = ""
    if doc["unreadable"]:
        items = "".join(f"<li>{_e(u)}</li>" for u in doc["unreadable"])
        unreadable = f'<h2>Objects canrun could not read</h2><ul id="unreadable">{items}</ul>'
    title = "canrun audit"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}: {s['errors']} errors, {s['warnings']} warnings</title><style>{_CSS}</style></head>
<body>
<header><h1>{title}</h1>
<div class="meta">namespaces: {_e(namespaces)}{selector} · platforms: {_e(", ".join(doc["platforms"]))}
({_e(doc["platforms_source"])}) · {_e(doc["finished"])} · {_e(doc["generator"])} ·
{s['listed_objects']} objects listed, {s['folded_objects']} folded into their controllers</div>
<div class="cards" id="summary">{cards}</div></header>
<main>
<div class="grid"><section><h2>By rule</h2>{_rules_table(doc["by_rule"])}</section>
<section><h2>By namespace</h2>{_namespaces_table(doc["by_namespace"])}</section></div>
<h2>Worst offenders</h2>{_offenders_table(doc["offenders"])}
<h2>Findings</h2>
<div class="controls"><input id="filter" type="search" placeholder="filter: namespace, image, rule, text…"
aria-label="filter findings"><select id="severity-filter" aria-label="severity"><option value="">all severities</option>
{options}</select><span class="meta">showing <span id="shown-count">{len(doc["findings"]) + len(doc["suppressed"])}</span>
of <span id="total-count">{len(doc["findings"]) + len(doc["suppressed"])}</span></span></div>
{_findings_table(doc["findings"], doc["suppressed"])}
{unreadable}
</main>
<script type="application/json" id="canrun-data">{embed_json(doc)}</script>
<script>{_JS}</script>
</body></html>
"""


def render(run: AuditRun) -> str:
    return render_document(audit_document(run))
