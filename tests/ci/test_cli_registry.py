"""``canrun check`` against real images in the local registry: real verdicts at known lines, in every format.

The other CLI tests use a refused port (deterministic ``image-unresolvable``); these read the catalogue's
images (built with umoci, pushed with skopeo into Debian's docker-registry) so errors, passes and
``canrun.io/skip`` exemptions come from the engine's real judgement.  The exemptions are also sent through
the webhook (audit mode) to show both doors exempt exactly the same findings.
"""

from __future__ import annotations

import asyncio
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from canrun.config import CacheSettings, NodeSettings, RegistryAccess, Settings, WebhookSettings, open_engine
from canrun.kube.scheduling import NodePool
from canrun.platform import Platform
from canrun.webhook.service import AdmissionService, static_pool
from tests.ci.cli_support import check
from tests.support.admission import review
from tests.support.images import Catalogue

pytestmark = pytest.mark.registry

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
PLATFORMS = "linux/amd64,linux/arm64"

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  template:
    spec:
      containers:
        - name: app
          image: {mode644}
        - name: proxy
          image: {busybox}
---
apiVersion: v1
kind: Pod
metadata:
  name: tool
  namespace: shop
  annotations:
    canrun.io/skip: command-not-found
spec:
  containers:
    - name: tool
      image: {amd64_only}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: legacy
  namespace: shop
spec:
  template:
    metadata:
      annotations:
        canrun.io/skip: command-not-executable
    spec:
      containers:
        - name: old
          image: {mode644}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
  namespace: shop
spec:
  schedule: "0 1 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: report
              image: {missing_user}
"""
# the "- name:" lines of the containers above
LINES = {"app": 10, "proxy": 12, "tool": 24, "old": 39, "report": 55}


@pytest.fixture
def manifest(repo: Path, catalogue: Catalogue) -> Path:
    path = repo / "k8s" / "all.yaml"
    path.write_text(MANIFEST.format(mode644=catalogue.ref("mode644"), busybox=catalogue.ref("busybox"),
                                    amd64_only=catalogue.ref("amd64-only"),
                                    missing_user=catalogue.ref("missing-user")))
    lines = path.read_text().splitlines()
    for container, line in LINES.items():
        assert lines[line - 1].strip() == f"- name: {container}"
    return path


def _args(catalogue: Catalogue, *more: str) -> list[str]:
    host = catalogue.ref("busybox").split("/", 1)[0]
    return ["-f", "k8s/all.yaml", "--platform", PLATFORMS, "--insecure-registry", host, *more]


def test_sarif_from_real_verdicts_validates_and_points_at_each_container(manifest: Path,
                                                                         catalogue: Catalogue) -> None:
    r = check(*_args(catalogue, "--format", "sarif", "--output", "canrun.sarif"))
    assert r.code == 1, r.err
    assert r.summary.endswith(f"(platforms: {PLATFORMS.replace(',', ', ')})")
    doc = json.loads((manifest.parent.parent / "canrun.sarif").read_text())
    assert not list(jsonschema.Draft4Validator(SCHEMA).iter_errors(doc))
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    by_container: dict[str, set[str]] = {}
    for res in run["results"]:
        rule = rules[res["ruleIndex"]]
        assert rule["id"] == res["ruleId"] and rule["help"]["markdown"].startswith(f"# `{res['ruleId']}`")
        assert "helpUri" not in rule  # no link unless CANRUN_DOCS_URL names where the docs are hosted
        loc = res["locations"][0]["physicalLocation"]
        container = res["properties"]["container"]
        assert loc["artifactLocation"] == {"uri": "k8s/all.yaml", "uriBaseId": "%SRCROOT%"}
        assert loc["region"]["startLine"] == LINES[container], res
        by_container.setdefault(container, set()).add(res["ruleId"])
    assert "command-not-executable" in by_container["app"]
    assert by_container["tool"] == {"platform-missing"}  # its skip names another rule: not exempted
    assert "user-not-found" in by_container["report"]
    assert "proxy" not in by_container  # multi-arch busybox runs on both platforms
    assert "old" not in by_container or "command-not-executable" not in by_container["old"]  # exempted


def test_junit_and_github_from_real_verdicts(manifest: Path, catalogue: Catalogue) -> None:
    r = check(*_args(catalogue, "--format", "junit"))
    cases = {c.get("name"): c for c in ET.fromstring(r.out).findall(".//testcase")}
    assert len(cases) == 10  # 5 containers x 2 platforms
    assert all(cases[f"Deployment/shop/web/proxy@{p}"].find("failure") is None for p in PLATFORMS.split(","))
    assert cases["Pod/shop/tool/tool@linux/amd64"].find("failure") is None
    failure = cases["Pod/shop/tool/tool@linux/arm64"].find("failure")
    assert failure is not None and failure.get("type") == "platform-missing"
    failure = cases["Deployment/shop/web/app@linux/amd64"].find("failure")
    assert failure is not None and failure.get("type") == "command-not-executable"
    assert f"k8s/all.yaml:{LINES['app']}" in (failure.text or "")

    r = check(*_args(catalogue, "--format", "github"))
    assert r.code == 1
    assert any(line.startswith(f"::error file=k8s/all.yaml,line={LINES['app']},"
                               "title=canrun command-not-executable::Deployment shop/web, container \"app\"")
               for line in r.out.splitlines()), r.out
    assert not re.search(rf"line={LINES['proxy']},", r.out)


def test_exemptions_are_those_the_webhook_makes(manifest: Path, catalogue: Catalogue,
                                                local_registry: Any) -> None:
    r = check(*_args(catalogue, "--format", "json"))
    doc = json.loads(r.out)
    shown = {(f["resource"]["name"], f["container"], f["rule"]) for f in doc["findings"]
             if f["severity"] != "info"}
    exempted = {(f["resource"]["name"], f["container"], f["rule"]) for f in doc["suppressed"]}
    assert ("legacy", "old", "command-not-executable") in exempted
    assert ("web", "app", "command-not-executable") in shown  # the same image, not exempted there
    assert not any(name == "legacy" and rule == "command-not-executable" for name, _, rule in shown)
    r = check(*_args(catalogue))
    assert "exempted by canrun.io/skip (command-not-executable" in r.out

    platforms = [Platform.parse(p) for p in PLATFORMS.split(",")]
    settings = Settings(registry=RegistryAccess(insecure=(local_registry.host,)), cache=CacheSettings(enabled=False),
                        nodes=NodeSettings(platforms=tuple(platforms)))
    objects = [o for o in yaml.safe_load_all(manifest.read_text()) if o]

    async def webhook() -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
        hook_shown: set[tuple[str, str, str]] = set()
        hook_exempted: set[tuple[str, str, str]] = set()
        async with open_engine(settings) as engine:
            service = AdmissionService(engine.validator, static_pool(NodePool.from_platforms(platforms)),
                                       settings=WebhookSettings(default_mode="audit", deadline=30, events=False,
                                                                warm_interval=0))
            try:
                for obj in objects:
                    answer = (await service.review(review(obj)))["response"]
                    notes = answer.get("auditAnnotations") or {}
                    name = obj["metadata"]["name"]
                    hook_shown |= {(name, i["container"], i["rule"]) for i in json.loads(notes.get("findings", "[]"))}
                    if "exempted" in notes:
                        listed = notes["exempted"].split(": ", 1)[1]
                        for entry in listed.split(", "):
                            rule, _, container = entry.partition(" (")
                            hook_exempted.add((name, container.rstrip(")"), rule))
            finally:
                await service.aclose()
        return hook_shown, hook_exempted

    hook_shown, hook_exempted = asyncio.run(webhook())
    assert hook_shown == shown
    assert hook_exempted == exempted
