"""Pure tests of the AdmissionReview wire format and the UPDATE comparison (no server, no engine)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from canrun.kube.admission import (
    WARNING_EACH_LIMIT,
    WARNING_TOTAL_LIMIT,
    BadAdmissionReview,
    Decision,
    build_response,
    new_ephemeral_containers,
    parse_review,
    relevant_change,
)


def review(obj: dict[str, Any] | None = None, *, operation: str = "CREATE", old: dict[str, Any] | None = None,
           kind: str = "Pod", sub: str | None = None, **extra: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": kind},
                           "resource": {"group": "", "version": "v1", "resource": "pods"},
                           "namespace": "default", "operation": operation, "object": obj, "oldObject": old,
                           **extra}
    if sub:
        req["subResource"] = sub
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "app", "image": "r/app:1", "command": ["/app"],
                                                   "env": [{"name": "PATH", "value": "/bin"},
                                                           {"name": "LOG", "value": "debug"}],
                                                   "resources": {"limits": {"cpu": "1"}}}]}}},
}


# -- parse_review ----------------------------------------------------------------------------------------

def test_parse_reads_the_request_fields() -> None:
    req = parse_review(json.dumps(review({"metadata": {"generateName": "web-"}}, dryRun=True)).encode())
    assert (req.uid, req.kind, req.operation, req.namespace, req.dry_run) == ("u-1", "Pod", "CREATE", "default", True)
    assert req.display_name == "default/web-*"


@pytest.mark.parametrize("body, says", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                 "request": {"uid": "x"}}).encode(), "unsupported apiVersion 'admission.k8s.io/v1beta1'"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}).encode(), "expected kind AdmissionReview"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "no request"),
    (json.dumps({**review({}), "request": {**review({})["request"], "uid": ""}}).encode(), "uid is missing"),
    (json.dumps({**review({}), "request": {**review({})["request"], "operation": "PATCH"}}).encode(),
     "operation 'PATCH'"),
    (json.dumps(review([1])).encode(), "request.object is not a JSON object"),  # type: ignore[arg-type]
])
def test_bad_bodies_are_refused_with_a_reason(body: bytes, says: str) -> None:
    with pytest.raises(BadAdmissionReview, match=None) as info:
        parse_review(body)
    assert says in str(info.value)
    assert "\n" not in str(info.value)


# -- build_response ---------------------------------------------------------------------------------------

def test_allowed_response_echoes_the_uid_and_nothing_else() -> None:
    assert build_response("abc", Decision()) == {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": "abc", "allowed": True}}


def test_denial_carries_a_403_status_and_the_message() -> None:
    out = build_response("abc", Decision(allowed=False, code=403, message="line 1\nline 2"))["response"]
    assert out["allowed"] is False
    assert out["status"] == {"code": 403, "reason": "Forbidden", "message": "line 1\nline 2"}


def test_audit_annotation_keys_carry_no_slash() -> None:
    out = build_response("abc", Decision(audit_annotations={"findings": "[]", "canrun.io/skip": "all"}))
    assert out["response"]["auditAnnotations"] == {"findings": "[]", "canrun.io-skip": "all"}


def test_warnings_stay_within_the_api_servers_limits() -> None:
    many = [f"canrun command-not-found: container \"c{i}\": " + "x" * 400 for i in range(40)]
    warnings = build_response("abc", Decision(warnings=many))["response"]["warnings"]
    assert all(len(w) <= WARNING_EACH_LIMIT and "\n" not in w for w in warnings)
    assert sum(len(w) for w in warnings) <= WARNING_TOTAL_LIMIT
    assert warnings[-1].startswith("canrun: … and ") and "more finding(s)" in warnings[-1]
    assert len(warnings) < 40


def test_short_warnings_pass_untouched() -> None:
    few = ["canrun a", "canrun b"]
    assert build_response("abc", Decision(warnings=few))["response"]["warnings"] == few


# -- relevant_change -----------------------------------------------------------------------------------

def edited(change: Any) -> dict[str, Any]:
    new = copy.deepcopy(DEPLOYMENT)
    change(new)
    return new


def _container(d: dict[str, Any]) -> dict[str, Any]:
    return d["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("change", [
    lambda d: d["spec"].update(replicas=10),
    lambda d: d["metadata"]["labels"].update(team="a"),
    lambda d: d["spec"]["template"]["metadata"]["labels"].update(rollout="2"),
    lambda d: d["spec"]["template"]["metadata"].update(annotations={"kubectl.kubernetes.io/restartedAt": "now"}),
    lambda d: _container(d)["env"][1].update(value="info"),
    lambda d: _container(d).update(resources={"limits": {"cpu": "2"}}),
    lambda d: _container(d).update(readinessProbe={"httpGet": {"port": 80}}),
], ids=["scale", "label", "template-label", "restart", "other-env", "resources", "probe"])
def test_unrelated_updates_are_not_relevant(change: Any) -> None:
    assert not relevant_change("Deployment", DEPLOYMENT, edited(change))


@pytest.mark.parametrize("change", [
    lambda d: _container(d).update(image="r/app:2"),
    lambda d: _container(d).update(command=["/app2"]),
    lambda d: _container(d).update(args=["--x"]),
    lambda d: _container(d)["env"][0].update(value="/usr/bin"),
    lambda d: _container(d).update(securityContext={"runAsUser": 1000}),
    lambda d: d["spec"]["template"]["spec"].update(securityContext={"runAsNonRoot": True}),
    lambda d: d["spec"]["template"]["spec"].update(volumes=[{"name": "v", "emptyDir": {}}]),
    lambda d: _container(d).update(volumeMounts=[{"name": "v", "mountPath": "/app"}]),
    lambda d: d["spec"]["template"]["spec"].update(nodeSelector={"kubernetes.io/arch": "arm64"}),
    lambda d: d["spec"]["template"]["spec"].update(affinity={"nodeAffinity": {}}),
    lambda d: d["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "r/side:1"}),
    lambda d: d["spec"]["template"]["spec"].update(initContainers=[{"name": "init", "image": "r/init:1"}]),
    lambda d: d["spec"]["template"]["spec"].update(imagePullSecrets=[{"name": "regcred"}]),
], ids=["image", "command", "args", "PATH", "container-sc", "pod-sc", "volumes", "mounts", "nodeSelector",
        "affinity", "new-container", "init-container", "pull-secret"])
def test_changes_a_verdict_depends_on_are_relevant(change: Any) -> None:
    assert relevant_change("Deployment", DEPLOYMENT, edited(change))


def test_env_used_in_the_command_is_relevant() -> None:
    old = edited(lambda d: _container(d).update(command=["/bin/$(LOG)"]))
    new = copy.deepcopy(old)
    _container(new)["env"][1]["value"] = "other"
    assert relevant_change("Deployment", old, new)


@pytest.mark.parametrize("env, command, change", [
    ([{"name": "B", "value": ""}, {"name": "A", "value": "$(B)/bin"}], ["$(A)/server"], ("B", "/opt")),
    ([{"name": "P", "value": "/usr/bin"}, {"name": "PATH", "value": "$(P):/bin"}], ["server"], ("P", "/opt")),
    ([{"name": "C", "value": "x"}, {"name": "B", "value": "$(C)"}, {"name": "A", "value": "/$(B)"}],
     ["$(A)"], ("C", "y")),
], ids=["command-through-A-to-B", "PATH-through-P", "two-hops"])
def test_variables_the_expanded_process_reaches_are_relevant(env: list[dict[str, str]], command: list[str],
                                                             change: tuple[str, str]) -> None:
    old = edited(lambda d: _container(d).update(env=env, command=command))
    new = copy.deepcopy(old)
    name, value = change
    next(e for e in _container(new)["env"] if e["name"] == name)["value"] = value
    assert relevant_change("Deployment", old, new)
    unrelated = copy.deepcopy(old)
    _container(unrelated)["env"].append({"name": "LOG_LEVEL", "value": "debug"})
    assert not relevant_change("Deployment", old, unrelated)


def test_cronjob_template_path() -> None:
    def cron(image: str, schedule: str) -> dict[str, Any]:
        return {"kind": "CronJob", "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {
            "spec": {"containers": [{"name": "c", "image": image}]}}}}}}
    assert not relevant_change("CronJob", cron("a", "* * * * *"), cron("a", "0 * * * *"))
    assert relevant_change("CronJob", cron("a", "* * * * *"), cron("b", "* * * * *"))


def test_pod_spec_changes_on_a_pod() -> None:
    pod = {"kind": "Pod", "metadata": {"labels": {}}, "spec": {"containers": [{"name": "c", "image": "a"}]}}
    relabeled = {**pod, "metadata": {"labels": {"x": "y"}}}
    assert not relevant_change("Pod", pod, relabeled)
    assert relevant_change("Pod", pod, {**pod, "spec": {"containers": [{"name": "c", "image": "b"}]}})


def test_new_ephemeral_containers_are_the_added_ones() -> None:
    old = {"spec": {"containers": [{"name": "c", "image": "a"}],
                    "ephemeralContainers": [{"name": "debug1", "image": "busybox"}]}}
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"].append({"name": "debug2", "image": "busybox", "command": ["sh"]})
    assert new_ephemeral_containers(old, new) == {"debug2"}
    assert new_ephemeral_containers(old, old) == set()


# -- the shape of what people read ----------------------------------------------------------------------

def _finding(message: str, hint: str = "use a command that exists in the image") -> Any:
    from canrun.findings import Finding, Severity

    return Finding("command-not-found", Severity.ERROR, message, hint, container="app", platform="linux/arm64")


def test_deny_message_is_one_line_per_finding_even_with_newlines_in_the_evidence() -> None:
    from canrun.spec import Resource
    from canrun.webhook.answers import deny_message, finding_line

    line = finding_line(_finding('"/app\nrun" not found in the image'))
    assert "\n" not in line
    assert line == ('- container "app" on linux/arm64: command-not-found: "/app run" not found in the image '
                    '(fix: use a command that exists in the image)')

    class _W:
        resource = Resource("Pod", "web", "default", "v1")

    message = deny_message(_W(), [_finding("a\nb"), _finding("c\r\nd")])  # type: ignore[arg-type]
    assert len(message.splitlines()) == 3  # a header, then one line per finding


def test_warning_lines_are_short_and_name_rule_container_and_platform() -> None:
    from canrun.webhook.answers import warning_line

    short = warning_line(_finding("/app not found"))
    assert short == 'canrun command-not-found: container "app": not found (exit 127) [linux/arm64]'
    long = warning_line(_finding("x" * 500))
    assert len(long) <= 120 and "\n" not in long and long.endswith("not found (exit 127) [linux/arm64]")


def _found(path: str, *, container: str = "main", platform: str = "linux/amd64,linux/arm64") -> Any:
    from canrun.findings import finding

    return finding("command-not-found", f"command {path!r} (the container's command): {path} does not exist in "
                   f"the image (no layer adds it; the nearest existing parent is /)", container=container,
                   platform=platform, evidence={"path": path})


def test_a_warning_spends_its_120_characters_on_rule_container_path_and_verdict() -> None:
    """The line that used to read ``…command '/app/run' (the container's command): /ap…``."""
    from canrun.webhook.answers import warning_line

    line = warning_line(_found("/app/run"))
    assert line == ('canrun command-not-found: container "main": /app/run: not found (exit 127) '
                    '[linux/amd64,linux/arm64]')
    deep = warning_line(_found("/opt/vendor/product/releases/2026-11/platform/runtime/bin/the-server-binary"))
    assert len(deep) <= 120 and deep.endswith("/the-server-binary: not found (exit 127)")  # platforms gave way
    assert '"main"' in deep and "…" in deep
    crowded = warning_line(_found("/app/run", container="c01-" + "x" * 120))
    assert len(crowded) <= 120 and crowded.endswith("/app/run: not found (exit 127)")


def test_a_deny_message_says_the_whole_verdict_on_its_first_line() -> None:
    from canrun.spec import Resource
    from canrun.webhook.answers import deny_message

    class _W:
        resource = Resource("Deployment", "web", "shop", "apps/v1")

    errors = [_found("/app/run"), _found("/bin/helper", container="side")]
    first, *rest = deny_message(_W(), errors).splitlines()  # type: ignore[arg-type]
    assert first.startswith("canrun: Deployment shop/web would fail to start: command-not-found: "
                            'container "main": /app/run: not found (exit 127)')
    assert first.endswith("(and 1 more)")
    assert len(rest) == 2 and "no layer adds it" in rest[0] and "fix:" in rest[0]  # the long form follows


@pytest.mark.parametrize("where", ["object", "template"])
def test_adding_or_removing_an_exemption_is_relevant(where: str) -> None:
    """Removing canrun.io/skip must bring the findings back on the next apply, not be skipped as 'unchanged'."""
    def exempt(d: dict[str, Any]) -> None:
        meta = d if where == "object" else d["spec"]["template"]
        meta.setdefault("metadata", {}).setdefault("annotations", {})["canrun.io/skip"] = "command-not-found"
    exempted = edited(exempt)
    assert relevant_change("Deployment", exempted, DEPLOYMENT)
    assert relevant_change("Deployment", DEPLOYMENT, exempted)
    assert not relevant_change("Deployment", exempted, copy.deepcopy(exempted))
    relabeled = copy.deepcopy(exempted)
    relabeled.setdefault("metadata", {}).setdefault("labels", {})["team"] = "b"
    assert not relevant_change("Deployment", exempted, relabeled)


def test_ssrf_remedy_comes_from_the_refusal_not_from_the_wording() -> None:
    from canrun.findings import finding
    from canrun.webhook.answers import ssrf_remedies

    refused = finding("image-unresolvable", "refusing to contact 10.0.0.5:5000: …",
                      evidence={"registry": "10.0.0.5:5000", "refused_by": "ssrf-guard"})
    down = finding("image-unresolvable", "cannot connect to 10.0.0.6:5000 (SSRF guard mentioned in passing)",
                   evidence={"registry": "10.0.0.6:5000"})
    assert ssrf_remedies([refused, refused, down]) == [
        "canrun: --allow-registry-host 10.0.0.5:5000 lets canrun read this registry (its SSRF guard refused it)"]
