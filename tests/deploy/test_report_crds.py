"""The PolicyReport / Open Reports CRDs the components ship: structural schemas a 1.16+ API server accepts,
and what `canrun audit --apply` writes validates against them without anything pruned away (the real
API server does the same in tests/apiserver/test_audit.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from canrun.audit import policyreport
from tests.audit.test_reports import sample_run

COMPONENTS = Path(__file__).resolve().parents[2] / "manifests" / "components"


def crds(component: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((COMPONENTS / component / "crds.yaml").read_text()) if d]
    return {d["spec"]["names"]["kind"]: d for d in docs}


def as_json_schema(schema: Any) -> Any:
    """OpenAPI v3 as the API server applies it, minus its x-kubernetes extensions; unknown fields refused
    (the server would prune them: a field canrun writes that the CRD does not know is lost)."""
    if isinstance(schema, list):
        return [as_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: as_json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def schema_of(crd: dict[str, Any], version: str) -> dict[str, Any]:
    [v] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = as_json_schema(v["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def test_the_wg_policy_crds_are_what_canrun_writes_to() -> None:
    found = crds("policyreport-crds")
    assert set(found) == {"PolicyReport", "ClusterPolicyReport"}
    for kind, crd in found.items():
        assert crd["spec"]["group"] == "wgpolicyk8s.io"
        assert crd["spec"]["scope"] == ("Namespaced" if kind == "PolicyReport" else "Cluster")
        [v] = crd["spec"]["versions"]
        assert v["name"] == policyreport.API_VERSION.split("/")[1] and v["served"] and v["storage"]
    assert found["PolicyReport"]["spec"]["names"]["shortNames"] == ["polr"]


def test_canrun_reports_validate_against_the_shipped_crds_with_nothing_pruned() -> None:
    found = crds("policyreport-crds")
    reports = policyreport.build_reports(sample_run(), namespaces=["gone"])
    assert {r["kind"] for r in reports} >= {"PolicyReport"}
    for report in reports:
        jsonschema.validate(report, schema_of(found[report["kind"]], "v1alpha2"),
                            cls=jsonschema.Draft202012Validator)


def test_the_schema_refuses_what_the_server_would() -> None:
    schema = schema_of(crds("policyreport-crds")["PolicyReport"], "v1alpha2")
    report = next(r for r in policyreport.build_reports(sample_run()) if r["kind"] == "PolicyReport")
    for spoil in (lambda r: r["results"][0].update(result="broken"),
                  lambda r: r["results"][0].update(severity="urgent"),
                  lambda r: r["results"][0].pop("policy"),
                  lambda r: r["summary"].update(fail="three")):
        bad = copy.deepcopy(report)
        spoil(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_openreports_crds_take_the_same_results() -> None:
    found = crds("openreports-crds")
    assert set(found) == {"Report", "ClusterReport"}
    report = next(r for r in policyreport.build_reports(sample_run()) if r["kind"] == "PolicyReport")
    moved = {**report, "apiVersion": "openreports.io/v1alpha1", "kind": "Report", "source": "canrun"}
    jsonschema.validate(moved, schema_of(found["Report"], "v1alpha1"), cls=jsonschema.Draft202012Validator)
