"""PolicyReports, the JSON document, Markdown and HTML, rendered from one audit (no cluster, no registry)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest
import yaml

from canrun.audit import document, html, markdown, policyreport
from canrun.audit.model import AuditRun, Inventory, InventoryItem, ObjectRef
from canrun.findings import finding
from canrun.platform import Platform
from canrun.spec import Container, PodSpec, Resource, Workload
from canrun.validator import Report

SCHEMA = json.loads((Path(__file__).parent / "data" / "policyreport-v1alpha2.schema.json").read_text())
HOSTILE = "reg.example/x:1</script><script>alert(1)</script>&amp;"


def _item(kind: str, ns: str | None, name: str, containers: int = 1) -> InventoryItem:
    res = Resource(kind, name, ns, "apps/v1" if kind != "Pod" else "v1")
    pod = PodSpec(containers=tuple(Container(f"c{i}", "reg.example/app:1") for i in range(containers)))
    return InventoryItem(Workload(res, pod), ObjectRef(res.api_version or "", kind, name, ns, f"uid-{name}"))


def sample_run() -> AuditRun:
    items = [_item("Deployment", "shop", "web", 2), _item("Deployment", "shop", "api"),
             _item("CronJob", "ops", "backup"), _item("Pod", "ops", "debug"), _item("DaemonSet", "infra", "agent")]
    web, api, backup, debug, agent = (i.workload.resource for i in items)
    findings = [
        finding("command-not-found", "/app/server does not exist in the image", resource=web, container="c0",
                image="reg.example/app:1", platform="linux/amd64", digest="sha256:" + "a" * 64,
                evidence={"path": "/app/server", "hops": ["/app/server"]}),
        finding("platform-missing", "the image has no build for linux/arm64 | pipes\nand newlines", resource=web,
                container="c1", image=HOSTILE, platform="linux/arm64"),
        finding("image-unresolvable", "manifest unknown", resource=backup, container="c0", image="reg.example/gone:1"),
        finding("not-verified", "the command lives in an emptyDir", resource=debug, container="c0"),
    ]
    suppressed = [finding("user-not-found", "USER svc is not in /etc/passwd", resource=agent, container="c0")]
    report = Report(findings=findings, suppressed=suppressed, workloads=len(items), containers=6,
                    images={"reg.example/app:1", HOSTILE, "reg.example/gone:1"})
    inventory = Inventory(items=items, listed={"Deployment": 2, "ReplicaSet": 3, "Pod": 7, "CronJob": 1,
                                               "Job": 1, "DaemonSet": 1})
    inventory.items[0].folded = {"ReplicaSet": 2, "Pod": 3}
    return AuditRun(report=report, inventory=inventory, platforms=[Platform("linux", "amd64"), Platform("linux", "arm64")],
                    platforms_source="nodes", finished=datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc))


def by_name(reports: list[dict]) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in reports}


def test_policy_reports_validate_against_the_v1alpha2_schema() -> None:
    reports = policyreport.build_reports(sample_run(), namespaces=["gone"])
    for report in reports:
        jsonschema.validate(report, SCHEMA, cls=jsonschema.Draft202012Validator)
    # and what a cluster would get from the YAML stream is the same
    assert list(yaml.safe_load_all(policyreport.render_yaml(reports))) == reports


def test_schema_catches_what_the_api_server_would_reject_or_prune() -> None:
    report = policyreport.build_reports(sample_run())[0]
    bad = json.loads(json.dumps(report))
    bad["results"][0]["severity"] = "error"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)
    bad = json.loads(json.dumps(report))
    bad["results"][0]["properties"]["evidence"] = {"path": "/x"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_one_report_per_namespace_with_stable_names_and_honest_summaries() -> None:
    reports = by_name(policyreport.build_reports(sample_run(), namespaces=["gone"]))
    assert set(reports) == {"canrun-shop", "canrun-ops", "canrun-infra", "canrun-gone"}
    shop = reports["canrun-shop"]
    assert shop["kind"] == "PolicyReport" and shop["metadata"]["namespace"] == "shop"
    assert shop["scope"] == {"apiVersion": "v1", "kind": "Namespace", "name": "shop"}
    # web fails twice (no pass for it), api passes
    assert shop["summary"] == {"pass": 1, "fail": 2, "warn": 0, "error": 0, "skip": 0}
    fail = shop["results"][0]
    assert fail["policy"] == "canrun" and fail["source"] == "canrun" and fail["result"] == "fail"
    assert fail["severity"] == "high" and fail["rule"] in ("command-not-found", "platform-missing")
    assert fail["resources"] == [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "shop",
                                  "uid": "uid-web"}]
    assert fail["timestamp"] == {"seconds": 1735787045, "nanos": 600000000}
    cnf = next(r for r in shop["results"] if r["rule"] == "command-not-found")
    assert cnf["properties"]["container"] == "c0" and cnf["properties"]["platform"] == "linux/amd64"
    assert json.loads(cnf["properties"]["evidence"]) == {"hops": ["/app/server"], "path": "/app/server"}
    assert "fix" in cnf["properties"] and "docs" not in cnf["properties"]  # no link unless CANRUN_DOCS_URL is set
    passed = next(r for r in shop["results"] if r["result"] == "pass")
    assert passed["rule"] == "all" and passed["resources"][0]["name"] == "api"

    ops = reports["canrun-ops"]
    # unreadable image: warn; not-verified note: skip, and both workloads still pass (no error/warning on debug)
    assert ops["summary"] == {"pass": 1, "fail": 0, "warn": 1, "error": 0, "skip": 1}
    infra = reports["canrun-infra"]
    skip = next(r for r in infra["results"] if r["result"] == "skip")
    assert skip["message"].startswith("exempted by the canrun.io/skip annotation")
    assert infra["summary"]["pass"] == 1  # an exempted finding does not make the workload fail
    for report in reports.values():
        assert sum(report["summary"].values()) == len(report["results"])
    assert reports["canrun-gone"]["results"] == [] and reports["canrun-gone"]["summary"]["fail"] == 0


def test_cluster_scoped_results_go_to_the_cluster_policy_report() -> None:
    run = sample_run()
    item = _item("Pod", None, "odd")
    run.inventory.items.append(item)
    run.report.findings.append(finding("no-command", "no command", resource=item.workload.resource, container="c0"))
    reports = by_name(policyreport.build_reports(run))
    cluster = reports["canrun-cluster"]
    assert cluster["kind"] == "ClusterPolicyReport" and "namespace" not in cluster["metadata"]
    assert cluster["summary"]["fail"] == 1
    jsonschema.validate(cluster, SCHEMA)


def test_a_huge_report_is_cut_worst_first_and_says_so() -> None:
    reports = by_name(policyreport.build_reports(sample_run(), max_results=1))
    shop = reports["canrun-shop"]
    assert len(shop["results"]) == 1 and shop["results"][0]["result"] == "fail"
    assert shop["metadata"]["annotations"][policyreport.TRUNCATED_ANNOTATION] == "2"
    assert shop["summary"]["fail"] == 2 and shop["summary"]["pass"] == 1


def test_json_document_numbers_add_up() -> None:
    doc = document.audit_document(sample_run())
    s = doc["summary"]
    assert (s["errors"], s["warnings"], s["infos"], s["suppressed"]) == (2, 1, 1, 1)
    # web has errors; backup only a warning: it starts (or may), so it is not counted as failing
    assert s["workloads"] == 5 and s["failing_workloads"] == 1 and s["warned_workloads"] == 1
    assert s["namespaces"] == 3
    assert {n["namespace"]: n["failing"] for n in doc["by_namespace"]} == {"shop": 1, "ops": 0, "infra": 0}
    assert s["folded_objects"] == 5 and s["listed_objects"] == 15
    assert sum(r["findings"] for r in doc["by_rule"]) == len(doc["findings"])
    assert doc["by_rule"][0]["severity"] == "error"
    assert [n["namespace"] for n in doc["by_namespace"]][0] == "shop"
    assert doc["offenders"][0]["label"] == "Deployment shop/web" and doc["offenders"][0]["error"] == 2
    assert doc["findings"][0]["resource"]["uid"] in ("uid-web", "uid-backup", "uid-debug")
    json.loads(document.render(sample_run()))


def test_markdown_tables_survive_pipes_and_newlines() -> None:
    text = markdown.render(sample_run())
    assert "**2 errors, 1 warning**: 1 of 5 workloads cannot start, 1 more with warnings only" in text
    assert "1 warnings" not in text and "1 notes" not in text
    row = next(line for line in text.splitlines() if "platform-missing" in line and "pipes" in line)
    assert "\\| pipes and newlines" in row
    header = next(line for line in text.splitlines() if line.startswith("| severity | rule | workload"))
    unescaped = re.compile(r"(?<!\\)\|")
    assert len(unescaped.findall(row)) == len(unescaped.findall(header))


def test_html_embeds_the_document_without_letting_it_close_the_script() -> None:
    page = html.render(sample_run())
    assert HOSTILE not in page  # neither raw in the table nor in the embedded JSON
    assert page.count("</script>") == 2  # the two script elements of the page itself
    m = re.search(r'<script type="application/json" id="canrun-data">(.*?)</script>', page, re.S)
    assert m is not None
    assert json.loads(m.group(1)) == document.audit_document(sample_run())
    assert 'src="http' not in page and "<link" not in page  # self-contained


def test_reports_link_rules_only_where_a_team_hosts_the_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CANRUN_DOCS_URL", raising=False)
    for out in (markdown.render(sample_run()), html.render(sample_run()),
                json.dumps(policyreport.build_reports(sample_run()))):
        assert "canrun.io/docs" not in out and not re.findall(r"https?://(?!wgpolicyk8s)", out), out[:300]
    monkeypatch.setenv("CANRUN_DOCS_URL", "https://wiki.example.com/canrun/rules")
    assert "](https://wiki.example.com/canrun/rules/command-not-found.md)" in markdown.render(sample_run())
    assert 'href="https://wiki.example.com/canrun/rules/command-not-found.md"' in html.render(sample_run())
