"""Per-request pull secrets, end to end: the webhook reads imagePullSecrets from the API stand-in and reads
private images from real registries that require them (htpasswd Basic, and the real token flow); then
everything observable is searched for the password, the base64 ``auth`` string and bearer tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canrun.kube.client import Cluster, load_api_client
from tests.security.conftest import AuthRegistries, Hook, assert_no_secrets, captured_logs, pod, review
from tests.support.kubeapi import KubeAPIStandIn

pytestmark = pytest.mark.registry


@pytest.fixture
def api(tmp_path: Path, auth_registries: AuthRegistries) -> Iterator[KubeAPIStandIn]:
    with KubeAPIStandIn(tmp_path / "kubeapi") as stand_in:
        for ns in ("tenant", "other"):
            stand_in.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {}}})
        stand_in.add(auth_registries.pull_secret("regcred", "tenant"))
        # the "other" tenant has a secret of the same name that holds wrong credentials
        other = auth_registries.pull_secret("regcred", "other")
        wrong = AuthRegistries(auth_registries.basic, auth_registries.token, auth_registries.tokens, "not-the-pw")
        other["data"] = wrong.pull_secret("regcred", "other")["data"]
        stand_in.add(other)
        yield stand_in


@pytest.fixture
def cluster(api: KubeAPIStandIn) -> Cluster:
    return Cluster(load_api_client(str(api.kubeconfig_path)))


def _warnings(answer: dict[str, Any]) -> str:
    return "\n".join(answer.get("warnings") or [])


@pytest.mark.parametrize("which", ["basic", "token"])
def test_pull_secrets_are_used_per_pod_and_never_shown(which: str, auth_registries: AuthRegistries,
                                                       start_hook: Any, cluster: Cluster,
                                                       api: KubeAPIStandIn) -> None:
    bad = auth_registries.ref(which, "whiteout")
    good = auth_registries.ref(which, "busybox-amd64")
    with captured_logs() as logs:
        # the token server is on loopback too: the SSRF guard refuses realms there unless allowed
        hook: Hook = start_hook(insecure=(auth_registries.basic.host, auth_registries.token.host),
                                allow=(auth_registries.tokens.stub.host,), cluster=cluster)
        # with the secret: judged for real (the whiteout image's entrypoint was deleted in its top layer)
        judged = hook.review(review(pod([bad], pull_secrets=("regcred",))))
        assert judged["allowed"] is True
        assert "command-not-found" in _warnings(judged), judged
        clean = hook.review(review(pod([good], pull_secrets=("regcred",), name="clean")))
        assert clean["allowed"] is True and not clean.get("warnings"), clean

        # without it: the registry refuses, and the pod is allowed with an image-unresolvable warning
        anonymous = hook.review(review(pod([bad], name="anon")))
        assert anonymous["allowed"] is True
        assert "image-unresolvable" in _warnings(anonymous), anonymous
        assert "command-not-found" not in _warnings(anonymous)

        # another namespace's secret of the same name, with the wrong password: refused too
        other = hook.review(review(pod([bad], namespace="other", pull_secrets=("regcred",), name="other")))
        assert "image-unresolvable" in _warnings(other), other
        assert "command-not-found" not in _warnings(other)
        hook.drain()
        metrics = hook.metrics()

    events = api.list("Event", None, api_version="v1")
    assert events, "warn mode records Events for findings"
    secrets_ = auth_registries.secrets()
    assert_no_secrets("\n".join(hook.answers), secrets_, "AdmissionReview responses")
    assert_no_secrets(logs.getvalue(), secrets_, "the JSON log lines")
    assert_no_secrets(metrics, secrets_, "/metrics")
    assert_no_secrets(repr(events), secrets_, "Events")
    assert logs.getvalue(), "the log capture saw the decisions"
