"""canrun's cluster access, through the official kubernetes client, against a real HTTP API stand-in."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from canrun.errors import ClusterConflict, ClusterError
from canrun.kube.client import Cluster, load_api_client
from canrun.platform import Platform
from tests.support.kubeapi import KubeAPIStandIn, Resource


def node(name: str, arch: str | None = "amd64", os_: str = "linux", *, info_arch: str | None = None,
         labels: dict[str, str] | None = None) -> dict:
    lab = dict(labels or {})
    if arch:
        lab.update({"kubernetes.io/arch": arch, "kubernetes.io/os": os_})
    obj: dict = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": lab}}
    if info_arch:
        obj["status"] = {"nodeInfo": {"architecture": info_arch, "operatingSystem": os_}}
    return obj


# --- config -------------------------------------------------------------------------------

def test_missing_kubeconfig_says_which_setting_named_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ClusterError, match=r"^--kubeconfig .*nope: the file does not exist$"):
        load_api_client(str(tmp_path / "nope"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "env-nope"))
    with pytest.raises(ClusterError, match=r"^KUBECONFIG=.*env-nope: the file does not exist$"):
        load_api_client()
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ClusterError, match=r"no kubeconfig at .*\.kube/config and not running in a pod: pass "
                                           r"--kubeconfig"):
        load_api_client()


def test_broken_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "config"
    bad.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    with pytest.raises(ClusterError, match="cannot load kubeconfig"):
        load_api_client(str(bad))


def test_kubeconfig_from_environment(kubeapi: KubeAPIStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeapi.kubeconfig_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeapi.add(node("n1"))
    cluster = Cluster(load_api_client())
    assert [n.name for n in cluster.list_nodes()] == ["n1"]
    # the kubeconfig's bearer token went with the request
    assert kubeapi.request_log[-1].headers.get("authorization") == f"Bearer {kubeapi.token}"


# --- nodes ----------------------------------------------------------------------------------

def test_list_nodes_reads_labels_then_node_info(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    kubeapi.add(node("amd", "amd64", labels={"pool": "general"}))
    kubeapi.add(node("graviton", "arm64"))
    kubeapi.add(node("pi", None, info_arch="arm"))          # no labels: the kubelet's nodeInfo decides
    kubeapi.add(node("mystery", None))                       # reports nothing: left out, not guessed
    nodes = {n.name: n for n in cluster.list_nodes()}
    assert set(nodes) == {"amd", "graviton", "pi"}
    assert nodes["amd"].platform == Platform("linux", "amd64")
    assert nodes["amd"].labels["pool"] == "general"
    assert nodes["graviton"].platform == Platform("linux", "arm64")
    assert nodes["pi"].platform == Platform("linux", "arm", "v7")  # containerd's default variant for arm


def test_forbidden_names_the_rbac_problem(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    kubeapi.fail("GET", r"^/api/v1/nodes$", 403)
    with pytest.raises(ClusterError, match="forbidden while listing nodes.*RBAC") as info:
        cluster.list_nodes()
    assert info.value.status == 403


def test_unreachable_api_is_a_clear_error(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    kubeapi.stop()
    cluster.api_client.configuration.retries = 0
    with pytest.raises(ClusterError) as info:
        cluster.list_nodes()
    # one line in the operating system's words, not urllib3's MaxRetryError sentence
    assert str(info.value) == f"cannot reach the Kubernetes API at {kubeapi.url} while listing nodes: connection refused"


def test_a_host_that_does_not_resolve_is_said_so(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                      "clusters: [{name: c, cluster: {server: 'https://no-such-host.invalid:6443'}}]\n"
                      "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n")
    api_client = load_api_client(str(config))
    api_client.configuration.retries = 0
    with pytest.raises(ClusterError, match=r"^cannot reach the Kubernetes API at https://no-such-host.invalid:6443 "
                                           r"while listing nodes: the host name does not resolve$"):
        Cluster(api_client).list_nodes()


# --- namespaces -------------------------------------------------------------------------------

def test_namespace_labels_are_cached_briefly(kubeapi: KubeAPIStandIn) -> None:
    now = [1000.0]
    cluster = Cluster(load_api_client(str(kubeapi.kubeconfig_path)), clock=lambda: now[0])
    kubeapi.add({"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": "team", "labels": {"canrun.io/mode": "enforce"}}})
    assert cluster.namespace_labels("team")["canrun.io/mode"] == "enforce"
    kubeapi.add({"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": "team", "labels": {"canrun.io/mode": "warn"}}})
    assert cluster.namespace_labels("team")["canrun.io/mode"] == "enforce"  # within the TTL
    assert kubeapi.requests.count(("GET", "/api/v1/namespaces/team")) == 1
    now[0] += 31
    assert cluster.namespace_labels("team")["canrun.io/mode"] == "warn"
    assert cluster.namespace_labels("gone") == {}


# --- pull secrets -----------------------------------------------------------------------------

def dockerconfigjson(host: str, user: str, password: str) -> dict:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    cfg = json.dumps({"auths": {host: {"auth": auth}}}).encode()
    return {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": base64.b64encode(cfg).decode()}}


def dockercfg(host: str, user: str, password: str) -> dict:
    cfg = json.dumps({f"https://{host}": {"username": user, "password": password}}).encode()
    return {"type": "kubernetes.io/dockercfg", "data": {".dockercfg": base64.b64encode(cfg).decode()}}


def secret(ns: str, name: str, body: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, **body}


@pytest.fixture
def pull_secrets(kubeapi: KubeAPIStandIn) -> KubeAPIStandIn:
    kubeapi.add(secret("app", "json", dockerconfigjson("reg-a.example:5000", "alice", "pw-a-SECRET")))
    kubeapi.add(secret("app", "legacy", dockercfg("reg-b.example", "bob", "pw-b-SECRET")))
    kubeapi.add(secret("app", "sa-secret", dockerconfigjson("reg-c.example", "carol", "pw-c-SECRET")))
    kubeapi.add(secret("app", "not-a-pull-secret", {"type": "Opaque", "data": {"x": "eA=="}}))
    kubeapi.add(secret("app", "garbage", {"type": "kubernetes.io/dockerconfigjson",
                                          "data": {".dockerconfigjson": base64.b64encode(b"{nope").decode()}}))
    kubeapi.add({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder", "namespace": "app"},
                 "imagePullSecrets": [{"name": "sa-secret"}]})
    kubeapi.add(secret("other", "json", dockerconfigjson("reg-z.example", "zed", "pw-z-SECRET")))
    return kubeapi


def test_pod_pull_secrets_both_formats(pull_secrets: KubeAPIStandIn, cluster: Cluster,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    chain = cluster.pull_keychain("app", ["json", "legacy", "missing", "not-a-pull-secret", "garbage"], "builder")
    a = chain.lookup("reg-a.example:5000")
    b = chain.lookup("reg-b.example")
    assert a is not None and (a.username, a.password) == ("alice", "pw-a-SECRET")
    assert b is not None and (b.username, b.password) == ("bob", "pw-b-SECRET")
    # only for the registry it names; the ServiceAccount's is not added when the pod lists its own
    assert chain.lookup("reg-c.example") is None
    assert chain.lookup("docker.io") is None
    text = caplog.text + repr(chain)
    assert "SECRET" not in text and "cHctY" not in text


def test_service_account_secrets_when_pod_has_none(pull_secrets: KubeAPIStandIn, cluster: Cluster) -> None:
    chain = cluster.pull_keychain("app", [], "builder")
    c = chain.lookup("reg-c.example")
    assert c is not None and c.username == "carol"
    assert chain.lookup("reg-a.example:5000") is None
    # a missing ServiceAccount (or one without secrets) means anonymous pulls
    assert cluster.pull_keychain("app", [], None).lookup("reg-c.example") is None


def test_pull_secrets_come_from_the_pods_namespace_and_are_cached(pull_secrets: KubeAPIStandIn,
                                                                  cluster: Cluster) -> None:
    other = cluster.pull_keychain("other", ["json"], None)
    assert other.lookup("reg-z.example") is not None and other.lookup("reg-a.example:5000") is None
    before = len(pull_secrets.requests)
    again = cluster.pull_keychain("other", ["json"], None)
    assert len(pull_secrets.requests) == before
    assert again.lookup("reg-z.example") is not None


# --- events -----------------------------------------------------------------------------------

def test_record_event_creates_then_counts(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    involved = {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "app", "name": "web", "uid": "u-1"}
    cluster.record_event(involved, "CommandNotFound", "container app: /bin/bash not found")
    cluster.record_event(involved, "CommandNotFound", "container app: /bin/bash not found")
    cluster.record_event(involved, "ExecFormat", "x86-64 binary on arm64")
    events = kubeapi.list("Event", "app", api_version="v1")
    assert len(events) == 2
    counted = next(e for e in events if e["reason"] == "CommandNotFound")
    assert counted["count"] == 2
    assert counted["type"] == "Warning"
    assert counted["source"]["component"] == "canrun"
    assert counted["involvedObject"] == involved
    assert counted["firstTimestamp"] and counted["lastTimestamp"]


def test_event_on_cluster_scoped_object_goes_to_default(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    cluster.record_event({"apiVersion": "v1", "kind": "Node", "name": "n1"}, "Scanned", "ok", type="Normal")
    [event] = kubeapi.list("Event", "default", api_version="v1")
    assert event["type"] == "Normal" and "namespace" not in event["involvedObject"]


# --- webhook configuration, secrets, generic objects ------------------------------------------

def vwc(*names: str) -> dict:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "canrun"},
            "webhooks": [{"name": n, "clientConfig": {"service": {"name": "canrun", "namespace": "canrun"}},
                          "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                     "resources": ["pods"]}],
                          "sideEffects": "NoneOnDryRun", "admissionReviewVersions": ["v1"]} for n in names]}


def test_patch_ca_bundle_sets_every_webhook_once(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    kubeapi.add(vwc("pods.canrun.io", "workloads.canrun.io"))
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert cluster.patch_webhook_ca_bundle("canrun", pem) is True
    stored = kubeapi.get("ValidatingWebhookConfiguration", "canrun")
    assert stored is not None
    for hook in stored["webhooks"]:
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == pem
        assert hook["rules"]  # the rest of the webhook is untouched
    patches = kubeapi.requests.count(("PATCH", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/canrun"))
    assert cluster.patch_webhook_ca_bundle("canrun", pem) is False
    assert kubeapi.requests.count(("PATCH", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/canrun")) == patches


def test_patch_ca_bundle_without_configuration(cluster: Cluster) -> None:
    with pytest.raises(ClusterError, match="ValidatingWebhookConfiguration canrun not found"):
        cluster.patch_webhook_ca_bundle("canrun", b"pem")


def test_secret_round_trip_and_create_race(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    assert cluster.read_secret("canrun", "tls") is None
    cluster.apply_secret("canrun", "tls", {"tls.crt": b"one"}, "kubernetes.io/tls", create_only=True)
    assert cluster.read_secret("canrun", "tls") == {"tls.crt": b"one"}
    with pytest.raises(ClusterConflict):
        cluster.apply_secret("canrun", "tls", {"tls.crt": b"two"}, create_only=True)
    stale = kubeapi.get("Secret", "tls", "canrun")["metadata"]["resourceVersion"]
    cluster.apply_secret("canrun", "tls", {"tls.crt": b"three"}, resource_version=stale)
    with pytest.raises(ClusterConflict):
        cluster.apply_secret("canrun", "tls", {"tls.crt": b"four"}, resource_version=stale)
    cluster.apply_secret("canrun", "tls", {"tls.crt": b"five"})
    assert cluster.read_secret("canrun", "tls") == {"tls.crt": b"five"}


def policy_report(results: int) -> dict:
    return {"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
            "metadata": {"name": "canrun-app", "namespace": "app", "labels": {"app.kubernetes.io/managed-by": "canrun"}},
            "summary": {"fail": results}, "results": []}


def test_apply_object_is_idempotent(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    first = cluster.apply_object(policy_report(1))
    again = cluster.apply_object(policy_report(1))
    changed = cluster.apply_object(policy_report(3))
    assert first["metadata"]["uid"] == again["metadata"]["uid"] == changed["metadata"]["uid"]
    [stored] = kubeapi.list("PolicyReport", "app")
    assert stored["summary"] == {"fail": 3}
    listed = cluster.list_objects("wgpolicyk8s.io/v1alpha2", "PolicyReport", "app",
                                  label_selector="app.kubernetes.io/managed-by=canrun")
    assert [o["metadata"]["name"] for o in listed] == ["canrun-app"]
    assert listed[0]["kind"] == "PolicyReport"
    assert cluster.list_objects("wgpolicyk8s.io/v1alpha2", "PolicyReport", "app", label_selector="x=y") == []


def test_custom_kinds_are_found_by_discovery(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    kubeapi.register(Resource("example.com", "v1", "widgets", "Widget", True))
    cluster.apply_object({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "x"}})
    assert ("GET", "/apis/example.com/v1") in kubeapi.requests
    assert kubeapi.get("Widget", "w", "x") is not None
    with pytest.raises(ClusterError, match="does not serve Gadget in example.com/v1"):
        cluster.list_objects("example.com/v1", "Gadget")


def test_list_objects_across_namespaces(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    for ns in ("a", "b"):
        kubeapi.add({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
                     "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    all_ns = cluster.list_objects("apps/v1", "Deployment")
    assert sorted(o["metadata"]["namespace"] for o in all_ns) == ["a", "b"]
    assert [o["metadata"]["namespace"] for o in cluster.list_objects("apps/v1", "Deployment", "b")] == ["b"]


# --- the cluster's Service ranges (SSRF guard) ------------------------------------------------

def _service_cidr(name: str, *cidrs: str, version: str = "v1") -> dict:
    return {"apiVersion": f"networking.k8s.io/{version}", "kind": "ServiceCIDR", "metadata": {"name": name},
            "spec": {"cidrs": list(cidrs)}}


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_service_ranges_come_from_servicecidr_objects(kubeapi: KubeAPIStandIn, cluster: Cluster,
                                                      version: str) -> None:
    kubeapi.register(Resource("networking.k8s.io", version, "servicecidrs", "ServiceCIDR", False))
    kubeapi.add(_service_cidr("kubernetes", "10.96.0.0/12", "fd00:10:96::/112", version=version))
    kubeapi.add(_service_cidr("extra", "10.200.0.0/16", version=version))
    assert sorted(cluster.service_cidrs()) == ["10.200.0.0/16", "10.96.0.0/12", "fd00:10:96::/112"]


def test_no_servicecidr_api_means_no_ranges_not_an_error(cluster: Cluster) -> None:
    assert cluster.service_cidrs() == []


def test_servicecidr_forbidden_is_a_cluster_error(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    kubeapi.register(Resource("networking.k8s.io", "v1", "servicecidrs", "ServiceCIDR", False))
    kubeapi.fail("GET", r"/servicecidrs", 403)
    with pytest.raises(ClusterError, match="RBAC"):
        cluster.service_cidrs()


def test_serve_adds_the_service_ranges_to_the_flags(kubeapi: KubeAPIStandIn, cluster: Cluster,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from canrun.webhook.main import guarded_networks

    given = ("192.168.50.0/24",)
    assert guarded_networks(cluster, given) == given  # nothing to discover: the flags alone
    kubeapi.register(Resource("networking.k8s.io", "v1", "servicecidrs", "ServiceCIDR", False))
    kubeapi.add(_service_cidr("kubernetes", "10.96.0.0/12"))
    assert guarded_networks(cluster, given) == ("192.168.50.0/24", "10.96.0.0/12")
    kubeapi.fail("GET", r"/servicecidrs", 403)
    with caplog.at_level(logging.WARNING, logger="canrun.webhook"):
        assert guarded_networks(cluster, given) == given  # forbidden: logged, the webhook still starts
    assert "--blocked-network" in caplog.text
