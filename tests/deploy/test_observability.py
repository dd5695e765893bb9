"""The monitoring pieces (metrics Service, ServiceMonitor, PrometheusRule, Grafana dashboard) against the metrics
the code really exports: every series a query names must be in the webhook's own /metrics exposition, with the
labels the query uses; the alert rules must pass ``promtool`` and fire on series shaped like canrun's.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from canrun.webhook import service as webhook_service
from canrun.webhook.metrics import Metrics
from tests.support import tools

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ROOT / "manifests" / "components"
RULE_FILE = COMPONENTS / "prometheusrule" / "prometheusrule.yaml"
DASHBOARD = COMPONENTS / "grafana-dashboard" / "canrun-dashboard.json"

#: PromQL words that are not series names.
_SERIES = re.compile(r"\b(canrun_[a-z0-9_]+)\b")
_MATCHERS = re.compile(r"\b(canrun_[a-z0-9_]+)\{([^}]*)\}")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def exported() -> dict[str, set[str]]:
    """Every sample name in a webhook's exposition, with its label names; each metric given one sample."""
    m = Metrics()
    m.requests.labels("Pod", "CREATE", "warn", "warned").inc()
    m.findings.labels("command-not-found", "error").inc()
    m.latency.labels("warn").observe(0.01)
    m.cache.labels("hit").inc()
    m.deadline.inc()
    m.bad_requests.inc()
    m.events.labels("recorded").inc()
    m.warmed.labels("indexed").inc()
    m.watch_engine(lambda: {("registry.example", "200"): 3, ("registry.example", "503"): 1},
                   lambda: {"layers_fetched": 1})
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def rule_expressions() -> list[str]:
    rule = yaml.safe_load(RULE_FILE.read_text())
    return [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]


def dashboard_expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return exprs


def check_expression(expr: str, names: dict[str, set[str]]) -> None:
    series = set(_SERIES.findall(expr))
    assert series, f"no canrun series in {expr!r}"
    for s in series:
        assert s in names, f"{s} (in {expr!r}) is not exported; exported: {sorted(names)}"
    labels = set().union(*(names[s] for s in series)) | {"job", "instance", "le", "namespace", "pod"}
    for s, body in _MATCHERS.findall(expr):
        for label in re.findall(r"([a-zA-Z_]+)\s*(?:=~|!~|!=|=)", body):
            assert label in names[s] | {"job", "instance", "namespace", "pod"}, f"{s} has no label {label!r}"
    for group in _GROUPING.findall(expr):
        for label in (g.strip() for g in group.split(",") if g.strip()):
            assert label in labels, f"grouping by {label!r} in {expr!r}: no such label"


def test_the_exposition_names_what_the_rules_and_dashboard_need() -> None:
    names = exported()
    assert {"canrun_admission_requests_total", "canrun_admission_deadline_exceeded_total",
            "canrun_registry_errors_total", "canrun_admission_duration_seconds_bucket"} <= set(names)


@pytest.mark.parametrize("expr", rule_expressions(), ids=lambda e: _SERIES.findall(e)[0])
def test_alert_expressions_name_exported_series(expr: str) -> None:
    check_expression(expr, exported())


@pytest.mark.parametrize("expr", dashboard_expressions(), ids=lambda e: " ".join(_SERIES.findall(e)))
def test_dashboard_queries_name_exported_series(expr: str) -> None:
    check_expression(expr, exported())


def test_a_query_naming_a_series_canrun_lacks_is_caught() -> None:
    with pytest.raises(AssertionError, match="not exported"):
        check_expression("sum(rate(canrun_admission_failures_total[5m]))", exported())
    with pytest.raises(AssertionError, match="no label"):
        check_expression('sum(rate(canrun_admission_requests_total{outcome="x"}[5m]))', exported())


def test_fail_open_verdicts_are_the_ones_the_webhook_gives() -> None:
    """The alert's verdict values are verdicts AdmissionService really answers with (and allows)."""
    source = "\n".join(p.read_text() for p in Path(webhook_service.__file__).parent.glob("*.py"))
    [values] = re.findall(r'verdict=~"([^"]+)"', " ".join(rule_expressions()))
    for verdict in values.split("|"):
        assert re.search(rf'(verdict=)?"{verdict}"', source), f"the webhook never answers verdict {verdict!r}"


def test_every_panel_has_a_query_and_a_unique_id() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and all(p.get("targets") for p in dash["panels"])
    assert {p["title"] for p in dash["panels"]} >= {"Admissions by verdict", "Fail-open answers", "Registry errors"}


def _promtool_rules(tmp_path: Path, *, annotations: bool = True) -> Path:
    spec = yaml.safe_load(RULE_FILE.read_text())["spec"]
    if not annotations:  # promtool compares them word for word; their text is not what a firing test checks
        for group in spec["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    [promtool] = tools.require("promtool")
    out = subprocess.run([str(promtool), "check", "rules", str(_promtool_rules(tmp_path))], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_alerts_fire_on_canrun_shaped_series(tmp_path: Path) -> None:
    """Series named and labelled as canrun exports them (checked above): each alert fires when it should and
    stays quiet on a healthy webhook."""
    [promtool] = tools.require("promtool")
    rules = _promtool_rules(tmp_path, annotations=False)
    job = 'job="canrun-metrics"'
    tests: dict[str, Any] = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m",
         "input_series": [
             # fail-open: 30 of 100 answers per minute unverified
             {"series": f'canrun_admission_requests_total{{{job},verdict="unverified"}}', "values": "0+30x40"},
             {"series": f'canrun_admission_requests_total{{{job},verdict="allowed"}}', "values": "0+70x40"},
             {"series": f'canrun_admission_deadline_exceeded_total{{{job}}}', "values": "0+2x40"},
             {"series": f'canrun_registry_requests_total{{{job},host="r.example",status="200"}}', "values": "0+5x40"},
             {"series": f'canrun_registry_requests_total{{{job},host="r.example",status="503"}}', "values": "0+5x40"},
             {"series": f'canrun_registry_errors_total{{{job},host="r.example",status="503"}}', "values": "0+5x40"},
         ],
         "alert_rule_test": [
             {"eval_time": "35m", "alertname": "CanrunFailingOpen", "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
             {"eval_time": "35m", "alertname": "CanrunAdmissionDeadlineExceeded", "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
             {"eval_time": "35m", "alertname": "CanrunRegistryErrors", "exp_alerts": [{"exp_labels": {"severity": "warning", "host": "r.example"}}]},
         ]},
        {"interval": "1m",
         "input_series": [
             {"series": f'canrun_admission_requests_total{{{job},verdict="allowed"}}', "values": "0+100x40"},
             {"series": f'canrun_admission_deadline_exceeded_total{{{job}}}', "values": "0x40"},
             {"series": f'canrun_registry_requests_total{{{job},host="r.example",status="200"}}', "values": "0+5x40"},
         ],
         "alert_rule_test": [{"eval_time": "35m", "alertname": a, "exp_alerts": []} for a in
                             ("CanrunFailingOpen", "CanrunAdmissionDeadlineExceeded", "CanrunRegistryErrors")]},
    ]}
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump(tests))
    out = subprocess.run([str(promtool), "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
