"""The webhook end to end: real uvicorn over real TLS, real AdmissionReviews, real images in a real registry.

Images come from the session catalogue (tests/support/images.py): ``busybox-amd64`` runs, ``whiteout``'s
ENTRYPOINT was deleted by a whiteout (command-not-found), ``bash-script`` needs a bash the image lacks.
"""

from __future__ import annotations

import concurrent.futures
import json
from typing import Any

import pytest

from tests.support.bugs import inject_bug
from tests.support.images import Catalogue
from tests.webhook.conftest import (
    SlowProxy,
    StartWebhook,
    Webhook,
    container,
    cronjob,
    deployment,
    pod,
    review,
)
from tests.webhook.tlsutil import issue, served_certificate

pytestmark = pytest.mark.registry


@pytest.fixture
def hook(start_webhook: StartWebhook, catalogue: Catalogue) -> Webhook:
    return start_webhook(registries=(catalogue.host,), mode="enforce")


def _findings(response: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(response.get("auditAnnotations", {}).get("findings", "[]"))


# -- verdicts by kind and mode --------------------------------------------------------------------------

def test_a_pod_that_runs_is_allowed_silently(hook: Webhook, catalogue: Catalogue) -> None:
    answer = hook.review(review(pod([container(catalogue.ref("busybox-amd64"))])))
    assert answer["allowed"] is True
    assert "warnings" not in answer and "status" not in answer


@pytest.mark.parametrize("make", [pod, deployment, cronjob], ids=["Pod", "Deployment", "CronJob"])
def test_enforce_denies_a_missing_command_with_a_terminal_message(hook: Webhook, catalogue: Catalogue,
                                                                  make: Any) -> None:
    answer = hook.review(review(make([container(catalogue.ref("whiteout"), name="server")])))
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    lines = answer["status"]["message"].splitlines()
    assert len(lines) == 2, lines  # a header and one line per finding
    finding = lines[1]
    for part in ('container "server"', "linux/amd64", "command-not-found", "/app/server", "fix:"):
        assert part in finding


def test_warn_mode_allows_with_short_self_contained_warnings(start_webhook: StartWebhook,
                                                              catalogue: Catalogue) -> None:
    hook = start_webhook(registries=(catalogue.host,), mode="warn")
    answer = hook.review(review(deployment([container(catalogue.ref("whiteout"), name="server"),
                                            container(catalogue.ref("bash-script"), name="entry")])))
    assert answer["allowed"] is True
    warnings = answer["warnings"]
    assert any("command-not-found" in w and '"server"' in w for w in warnings)
    assert any("interpreter-not-found" in w and '"entry"' in w for w in warnings)
    assert all(len(w) <= 120 and w.startswith("canrun") for w in warnings)


def test_audit_mode_records_findings_in_audit_annotations_only(start_webhook: StartWebhook,
                                                               catalogue: Catalogue) -> None:
    hook = start_webhook(registries=(catalogue.host,), mode="audit")
    answer = hook.review(review(pod([container(catalogue.ref("whiteout"), name="server")])))
    assert answer["allowed"] is True and "warnings" not in answer
    assert [f["rule"] for f in _findings(answer)] == ["command-not-found"]
    assert all("/" not in key for key in answer["auditAnnotations"])
    metrics = hook.metrics()
    assert 'canrun_admission_findings_total{rule="command-not-found",severity="error"} 1.0' in metrics
    assert 'mode="audit",operation="CREATE",verdict="audited"' in metrics


def test_many_findings_stay_within_the_warning_limits(start_webhook: StartWebhook, catalogue: Catalogue) -> None:
    hook = start_webhook(registries=(catalogue.host,), mode="warn")
    containers = [container(catalogue.ref("whiteout"), name=f"c{i:02d}-{'x' * 40}") for i in range(60)]
    answer = hook.review(review(pod(containers)))
    warnings = answer["warnings"]
    assert all(len(w) <= 120 for w in warnings)
    assert sum(len(w) for w in warnings) <= 4096
    assert "more finding(s)" in warnings[-1]


# -- what is not judged -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [pod, deployment, cronjob], ids=["Pod", "Deployment", "CronJob"])
def test_update_without_a_relevant_change_is_not_judged(hook: Webhook, catalogue: Catalogue,
                                                        slow_proxy: SlowProxy, make: Any) -> None:
    bad = slow_proxy.host + "/" + catalogue.ref("whiteout").split("/", 1)[1]
    old = make([container(bad)])
    edited = make([container(bad)])
    edited["metadata"]["labels"] = {"team": "a"}
    if make is deployment:
        edited["spec"]["replicas"] = 5
        edited["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "now"}
    if make is cronjob:
        edited["spec"]["schedule"] = "*/5 * * * *"
    answer = hook.review(review(edited, operation="UPDATE", old=old))
    assert answer == {"uid": answer["uid"], "allowed": True}
    assert slow_proxy.count() == 0  # not a single registry request


@pytest.mark.parametrize("make", [pod, deployment, cronjob], ids=["Pod", "Deployment", "CronJob"])
def test_update_that_changes_the_image_is_judged(hook: Webhook, catalogue: Catalogue, make: Any) -> None:
    old = make([container(catalogue.ref("busybox-amd64"))])
    new = make([container(catalogue.ref("whiteout"))])
    assert hook.review(review(new, operation="UPDATE", old=old))["allowed"] is False


def test_update_that_changes_the_command_is_judged(hook: Webhook, catalogue: Catalogue) -> None:
    image = catalogue.ref("busybox-amd64")
    old = deployment([container(image)])
    new = deployment([container(image, command=["/bin/does-not-exist"])])
    answer = hook.review(review(new, operation="UPDATE", old=old))
    assert answer["allowed"] is False and "command-not-found" in answer["status"]["message"]


def test_a_variable_the_command_reaches_through_another_is_never_stale(hook: Webhook, catalogue: Catalogue) -> None:
    """``command: ["$(A)/sh"]`` with ``A=$(B)/bin``: changing B changes the program, so neither the UPDATE
    shortcut nor a remembered answer for the same object may stand."""
    image = catalogue.ref("busybox-amd64")

    def with_b(value: str) -> dict[str, Any]:
        env = [{"name": "B", "value": value}, {"name": "A", "value": "$(B)/bin"}]
        return pod([container(image, command=["$(A)/sh", "-c", "true"], env=env)], name="expanded")

    assert hook.review(review(with_b("")))["allowed"] is True
    again = hook.review(review(with_b("/nowhere")))  # the same object name, seen before: not the old answer
    assert again["allowed"] is False and "/nowhere/bin/sh" in again["status"]["message"]
    update = hook.review(review(with_b("/nowhere"), operation="UPDATE", old=with_b("")))
    assert update["allowed"] is False and "/nowhere/bin/sh" in update["status"]["message"]


@pytest.mark.parametrize("operation, sub", [("DELETE", None), ("CONNECT", "exec"), ("UPDATE", "status"),
                                            ("UPDATE", "scale")])
def test_delete_and_status_or_scale_subresources_pass_untouched(hook: Webhook, catalogue: Catalogue,
                                                                operation: str, sub: str | None) -> None:
    bad = pod([container(catalogue.ref("whiteout"))])
    body = review(None if operation == "DELETE" else bad, operation=operation, old=bad, sub=sub, kind="Pod")
    assert hook.review(body) == {"uid": body["request"]["uid"], "allowed": True}


def test_ephemeral_containers_are_judged_alone(hook: Webhook, catalogue: Catalogue) -> None:
    # the pod's own container is broken too, but only the debug container being added is judged
    old = pod([container(catalogue.ref("whiteout"))])
    new = pod([container(catalogue.ref("whiteout"))],
              ephemeralContainers=[{"name": "debugger", "image": catalogue.ref("bash-script")}])
    answer = hook.review(review(new, operation="UPDATE", old=old, sub="ephemeralcontainers"))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert '"debugger"' in message and "interpreter-not-found" in message and '"app"' not in message
    good = pod([container(catalogue.ref("whiteout"))],
               ephemeralContainers=[{"name": "debugger", "image": catalogue.ref("busybox-amd64")}])
    assert hook.review(review(good, operation="UPDATE", old=old, sub="ephemeralcontainers"))["allowed"] is True


def test_dry_run_is_judged_the_same(hook: Webhook, catalogue: Catalogue) -> None:
    body = pod([container(catalogue.ref("whiteout"))])
    assert hook.review(review(body, dry_run=True))["allowed"] is False


def test_exemption_allows_and_says_why(hook: Webhook, catalogue: Catalogue) -> None:
    body = deployment([container(catalogue.ref("whiteout"), name="server")],
                      annotations={"canrun.io/skip": "command-not-found"})
    answer = hook.review(review(body))
    assert answer["allowed"] is True
    assert any("exempted by canrun.io/skip=command-not-found" in w and "server" in w for w in answer["warnings"])
    assert "command-not-found" in answer["auditAnnotations"]["exempted"]


@pytest.mark.parametrize("where", ["workload", "pod template"])
def test_exemption_of_all_rules_and_of_another_rule(hook: Webhook, catalogue: Catalogue, where: str) -> None:
    def annotated(value: str) -> dict[str, Any]:
        body = deployment([container(catalogue.ref("whiteout"), name="server")])
        target = body["metadata"] if where == "workload" else body["spec"]["template"]["metadata"]
        target["annotations"] = {"canrun.io/skip": value}
        return body

    everything = hook.review(review(annotated("all")))
    assert everything["allowed"] is True
    assert any("canrun.io/skip=all" in w and "command-not-found" in w for w in everything["warnings"])
    assert "canrun.io/skip=all" in everything["auditAnnotations"]["exempted"]
    # exempting a rule that does not fire changes nothing
    other = hook.review(review(annotated("platform-missing")))
    assert other["allowed"] is False and "command-not-found" in other["status"]["message"]
    assert "exempted" not in other.get("auditAnnotations", {})


# -- registry trouble --------------------------------------------------------------------------------------

def test_unreachable_registry_warns_unless_strict(start_webhook: StartWebhook, catalogue: Catalogue) -> None:
    ref = catalogue.ref("unreachable")
    host = ref.split("/", 1)[0]
    lenient = start_webhook(registries=(catalogue.host, host), mode="enforce")
    answer = lenient.review(review(pod([container(ref)])))
    assert answer["allowed"] is True
    assert any("image-unresolvable" in w for w in answer["warnings"])
    strict = start_webhook(registries=(catalogue.host, host), mode="enforce", strict=True)
    denied = strict.review(review(pod([container(ref)])))
    assert denied["allowed"] is False and "image-unresolvable" in denied["status"]["message"]


def test_ssrf_guard_refuses_loopback_registries_not_allowed(start_webhook: StartWebhook,
                                                            catalogue: Catalogue) -> None:
    guarded = start_webhook(registries=(), mode="enforce")
    answer = guarded.review(review(pod([container(catalogue.ref("whiteout"))])))
    assert answer["allowed"] is True
    assert any("image-unresolvable" in w for w in answer["warnings"]), answer


def test_ssrf_guard_refuses_the_clusters_service_range(start_webhook: StartWebhook, catalogue: Catalogue,
                                                       slow_proxy: SlowProxy) -> None:
    # an in-cluster address: refused before any connection is tried, with the flag that would allow it
    hook = start_webhook(registries=(catalogue.host,), mode="enforce", blocked_networks=("10.96.0.0/12",))
    answer = hook.review(review(pod([container("10.96.0.10:5000/internal/admin:1")])))
    assert answer["allowed"] is True
    assert any("image-unresolvable" in w for w in answer["warnings"]), answer
    assert any("--allow-registry-host 10.96.0.10:5000" in w for w in answer["warnings"]), answer
    assert 'canrun_registry_errors_total{host="10.96.0.10:5000",status="ssrf"}' in hook.metrics()
    # a registry outside the blocked ranges is read as usual
    assert hook.review(review(pod([container(catalogue.ref("whiteout"))])))["allowed"] is False


def test_deadline_fails_open_then_the_cache_answers(start_webhook: StartWebhook, catalogue: Catalogue,
                                                    slow_proxy: SlowProxy) -> None:
    hook = start_webhook(registries=(slow_proxy.host,), mode="enforce", deadline=0.5)
    slow_proxy.delay = 1.0
    image = slow_proxy.host + "/" + catalogue.ref("whiteout").split("/", 1)[1]
    first = hook.review(review(pod([container(image)], name="first")))
    assert first["allowed"] is True
    assert any("not verified within 0.5s" in w and image in w for w in first["warnings"])
    assert "unverified" in first["auditAnnotations"]
    hook.drain()  # the resolution carried on after the answer
    slow_proxy.reset()
    second = hook.review(review(pod([container(image)], name="second")))
    assert second["allowed"] is False and "command-not-found" in second["status"]["message"]
    assert slow_proxy.count() == 0  # answered from the cache
    assert "canrun_admission_deadline_exceeded_total 1.0" in hook.metrics()


@pytest.mark.parametrize("mode, strict, allowed, warned", [
    ("enforce", True, False, False),  # strict: what canrun could not verify in time is denied
    ("warn", True, True, True),       # strict only changes enforce
    ("audit", False, True, False),    # audit: the audit annotation only
])
def test_deadline_by_mode(start_webhook: StartWebhook, catalogue: Catalogue, slow_proxy: SlowProxy, mode: str,
                          strict: bool, allowed: bool, warned: bool) -> None:
    hook = start_webhook(registries=(slow_proxy.host,), mode=mode, deadline=0.3, strict=strict)
    slow_proxy.delay = 1.0
    image = slow_proxy.host + "/" + catalogue.ref("busybox-amd64").split("/", 1)[1]
    answer = hook.review(review(pod([container(image)])))
    assert answer["allowed"] is allowed
    assert ("warnings" in answer) is warned
    assert "deadline 0.3s" in answer["auditAnnotations"]["unverified"]
    if not allowed:
        assert "not verified within 0.3s" in answer["status"]["message"] and "strict" in answer["status"]["message"]


def test_concurrent_requests_for_one_image_share_one_resolution(start_webhook: StartWebhook,
                                                                catalogue: Catalogue,
                                                                slow_proxy: SlowProxy) -> None:
    hook = start_webhook(registries=(slow_proxy.host,), mode="warn", use_cache=False)
    slow_proxy.delay = 0.3
    image = slow_proxy.host + "/" + catalogue.ref("bash-script").split("/", 1)[1]
    # different container names: different pod specs (no shared verdict), the same image underneath
    bodies = [review(pod([container(image, name=f"c{i}")], name=f"p{i}")) for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(hook.review, bodies))
    assert all(any("interpreter-not-found" in w for w in a["warnings"]) for a in answers)
    # one tag resolution (HEAD) and one manifest read (GET) for eight admissions
    assert (slow_proxy.count("HEAD", "/manifests/"), slow_proxy.count("GET", "/manifests/")) == (1, 1), \
        slow_proxy.requests
    layers = len(catalogue["bash-script"].layers)
    assert slow_proxy.count(contains="/blobs/") == 1 + layers  # the config and each layer once


# -- HTTP surface ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, says", [
    (b"{not json", "not JSON"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                 "request": {"uid": "1"}}).encode(), "admission.k8s.io/v1"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}).encode(),
     "uid is missing"),
])
def test_bad_bodies_get_400_with_a_message(hook: Webhook, body: bytes, says: str) -> None:
    resp = hook.client.post("/validate", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert says in resp.json()["error"]
    assert "Traceback" not in resp.text


def test_health_readiness_and_metrics(hook: Webhook, catalogue: Catalogue) -> None:
    assert hook.client.get("/healthz").status_code == 200
    assert hook.client.get("/readyz").status_code == 200
    hook.review(review(pod([container(catalogue.ref("busybox-amd64"))])))
    hook.review(review(pod([container(catalogue.ref("busybox-amd64"))], name="again")))
    text = hook.metrics()
    assert 'canrun_admission_requests_total{kind="Pod",mode="enforce",operation="CREATE",verdict="allowed"} 2.0' \
        in text
    assert "canrun_admission_duration_seconds_bucket" in text
    assert 'canrun_verdict_cache_total{result="hit"} 1.0' in text
    assert 'canrun_verdict_cache_total{result="miss"} 1.0' in text


def test_not_ready_until_node_platforms_are_known(start_webhook: StartWebhook, catalogue: Catalogue) -> None:
    hook = start_webhook(registries=(catalogue.host,), pool=lambda: None)
    assert hook.client.get("/readyz").status_code == 503
    answer = hook.review(review(pod([container(catalogue.ref("whiteout"))])))
    assert answer["allowed"] is True and "node platforms are not known yet" in answer["warnings"][0]


def test_rotated_certificate_is_served_to_new_connections(hook: Webhook) -> None:
    port = hook.thread.port
    assert served_certificate("127.0.0.1", port, hook.tls.ca_file).subject.rfc4514_string() == \
        "CN=canrun-webhook-1"
    issue(hook.tls.ca, hook.tls.cert, hook.tls.key, common_name="canrun-webhook-2")
    deadline_checks = 50
    while deadline_checks and hook.thread.tls.reloads == 0:
        import time
        time.sleep(0.1)
        deadline_checks -= 1
    assert served_certificate("127.0.0.1", port, hook.tls.ca_file).subject.rfc4514_string() == \
        "CN=canrun-webhook-2"
    assert hook.client.get("/healthz").status_code == 200  # the kept-alive connection still works


# -- a bug of ours ----------------------------------------------------------------------------------------

@pytest.fixture
def buggy_checks(monkeypatch: pytest.MonkeyPatch, catalogue: Catalogue) -> str:
    """The checks raise for the busybox image (which runs): an internal error, not a verdict."""
    broken = catalogue.ref("busybox-amd64")
    inject_bug(monkeypatch, broken)
    return broken


def test_an_internal_error_fails_open_with_a_warning(start_webhook: StartWebhook, buggy_checks: str,
                                                     catalogue: Catalogue) -> None:
    hook = start_webhook(registries=(catalogue.host,), mode="enforce")
    answer = hook.review(review(pod([container(buggy_checks)])))
    assert answer["allowed"] is True
    assert any("internal-error" in w for w in answer["warnings"]), answer
    assert "RuntimeError: injected bug" in answer["auditAnnotations"]["findings"]  # the long form
    # not remembered as a verdict: the next admission judges again
    assert hook.review(review(pod([container(buggy_checks)])))["warnings"]


def test_an_internal_error_denies_in_enforce_mode_under_strict(start_webhook: StartWebhook, buggy_checks: str,
                                                               catalogue: Catalogue) -> None:
    hook = start_webhook(registries=(catalogue.host,), mode="enforce", strict=True)
    answer = hook.review(review(pod([container(buggy_checks)])))
    assert answer["allowed"] is False
    assert "internal-error" in answer["status"]["message"]
