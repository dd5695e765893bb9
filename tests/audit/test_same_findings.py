"""The webhook's audit mode and ``canrun audit`` give the same findings for the same object.

Both read the object with ``workload_from_object`` and judge it with
``Validator.check``; this test feeds one Deployment through the webhook's
public path (an AdmissionReview in audit mode, findings read from the
response's auditAnnotations) and through the audit's (listed from the API,
folded, judged), and compares what each reports.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from canrun.audit.scan import audit
from canrun.config import CacheSettings, NodeSettings, RegistryAccess, Settings, WebhookSettings, open_engine
from canrun.findings import Severity
from canrun.kube.client import Cluster, load_api_client
from canrun.kube.scheduling import NodePool
from canrun.platform import Platform
from canrun.webhook.service import AdmissionService, static_pool
from tests.audit.conftest import deployment_chain, node
from tests.support.admission import review
from tests.support.images import Catalogue
from tests.support.kubeapi import KubeAPIStandIn

pytestmark = pytest.mark.registry


def _key(rule: str, severity: str, container: str | None, platform: str | None, message: str) -> tuple:
    return (rule, severity, container, platform, message)


@pytest.mark.parametrize("images", [("mode644", "missing-user"), ("busybox-amd64", "crlf")])
def test_webhook_audit_mode_and_canrun_audit_agree(images: tuple[str, str], catalogue: Catalogue,
                                                   local_registry: Any, kubeapi: KubeAPIStandIn) -> None:
    spec = {"containers": [{"name": "main", "image": catalogue.ref(images[0])},
                           {"name": "side", "image": catalogue.ref(images[1])}],
            "initContainers": [{"name": "init", "image": catalogue.ref("bash-script")}]}
    chain = deployment_chain("web", "shop", spec, replicas=2)
    for obj in chain + [node("n1"), node("n2", "arm64")]:
        kubeapi.add(obj)
    deployment = kubeapi.get("Deployment", "web", "shop")
    platforms = [Platform("linux", "amd64"), Platform("linux", "arm64")]
    settings = Settings(registry=RegistryAccess(insecure=(local_registry.host,)), cache=CacheSettings(enabled=False),
                        nodes=NodeSettings(platforms=tuple(platforms)))

    async def both() -> tuple[list[tuple], list[tuple]]:
        cluster = Cluster(load_api_client(str(kubeapi.kubeconfig_path)))
        async with open_engine(settings) as engine:
            run = await audit(cluster, engine.validator)
        async with open_engine(settings) as engine:  # a fresh engine: nothing shared but the code
            service = AdmissionService(engine.validator, static_pool(NodePool.from_platforms(platforms)),
                                       settings=WebhookSettings(default_mode="audit", deadline=30, events=False,
                                                                warm_interval=0))
            try:
                response = await service.review(review(deployment))
            finally:
                await service.aclose()
        assert run.platforms_source == "nodes" and sorted(map(str, run.platforms)) == ["linux/amd64", "linux/arm64"]
        assert [(i.ref.kind, i.ref.name) for i in run.inventory.items] == [("Deployment", "web")]
        from_audit = sorted(_key(f.rule, f.severity.value, f.container, f.platform, f.message)
                            for f in run.report.findings if f.severity is not Severity.INFO)
        annotations = response["response"].get("auditAnnotations") or {}
        assert response["response"]["allowed"] is True  # audit mode never denies
        from_webhook = sorted(_key(i["rule"], i["severity"], i["container"], i["platform"], i["message"])
                              for i in json.loads(annotations.get("findings", "[]")))
        return from_audit, from_webhook

    from_audit, from_webhook = asyncio.run(both())
    assert from_audit, "the chosen images should produce findings"
    assert from_audit == from_webhook
