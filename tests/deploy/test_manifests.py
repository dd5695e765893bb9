"""The deploy manifests: every file parses, every kustomization points at real files, every object validates
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail), and the settings
that keep a cluster safe (failurePolicy, the namespaceSelector, the restricted securityContext, least-privilege
RBAC) are what the docs promise.

Overlays are rendered with ``kubectl kustomize`` when kubectl is installed (it is in the dev image); without it
those tests skip and the base files are still validated one by one.  Kinds from CRDs (cert-manager's Issuer
and Certificate, wg-policy's PolicyReport) have no schema in kubernetes-validate and are skipped, by group.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import json

import kubernetes_validate
import pytest
import yaml

from canrun.checks.process import effective_process
from canrun.errors import UsageError
from canrun.image.model import ImageConfig
from canrun.kube.workloads import workload_from_object

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
#: The oldest Kubernetes minor canrun supports, and the newest the schemas know.
VERSIONS = ("1.31", kubernetes_validate.utils.latest_version())
#: Groups whose kinds come from CRDs: no upstream schema to validate against.
CRD_GROUPS = ("cert-manager.io", "wgpolicyk8s.io", "kyverno.io", "openreports.io", "monitoring.coreos.com")
KUSTOMIZE_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

ALL_YAML = sorted(p for p in MANIFESTS.rglob("*") if p.suffix in (".yaml", ".yml"))
KUSTOMIZATIONS = sorted(p for p in ALL_YAML if p.name in KUSTOMIZE_FILES)
OVERLAYS = sorted(p.parent for p in KUSTOMIZATIONS if "overlays" in p.parts)


def _kubectl_with_kustomize_v4() -> str | None:
    """kubectl whose built-in kustomize knows components and ``labels`` (kustomize v4+, kubectl 1.21+)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    try:
        out = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"Kustomize Version: v(\d+)", out)
    return kubectl if m and int(m.group(1)) >= 4 else None


KUBECTL = _kubectl_with_kustomize_v4()
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="no kubectl with kustomize v4+: overlays not rendered")


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def is_patch_or_config(path: Path, doc: Any) -> bool:
    """Files that are not whole objects: kustomizations, JSON 6902 patch lists, strategic-merge patches."""
    if path.name in KUSTOMIZE_FILES or isinstance(doc, list):
        return True
    kust = path.parent / "kustomization.yaml"
    if kust.exists():
        k = yaml.safe_load(kust.read_text()) or {}
        patch_paths = {p.get("path") for p in k.get("patches") or [] if isinstance(p, dict)}
        patch_paths |= set(k.get("patchesStrategicMerge") or [])
        return path.name in patch_paths
    return False


def with_kustomization_namespace(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """The namespace references the manifests leave to kustomize (ServiceAccount subjects, a webhook's
    Service), filled from the kustomization's ``namespace:`` as kustomize fills them, so an overlay that
    installs elsewhere moves them along."""
    kust = path.parent / "kustomization.yaml"
    namespace = (yaml.safe_load(kust.read_text()) or {}).get("namespace") if kust.exists() else None
    if not namespace:
        return doc
    doc = json.loads(json.dumps(doc))
    for subject in doc.get("subjects") or []:
        if subject.get("kind") == "ServiceAccount":
            subject.setdefault("namespace", namespace)
    for hook in doc.get("webhooks") or []:
        service = (hook.get("clientConfig") or {}).get("service")
        if service is not None:
            service.setdefault("namespace", namespace)
    return doc


def validate(obj: dict[str, Any], where: str) -> None:
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    if group in CRD_GROUPS:
        return  # CRD kind: no schema upstream (noted in the module docstring)
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {obj['kind']} {obj['metadata'].get('name')} invalid for Kubernetes {version}: "
                        f"{exc.message} at {'/'.join(str(p) for p in exc.path)}")


@functools.lru_cache(maxsize=None)
def _kustomize(overlay: Path) -> str:
    assert KUBECTL is not None
    out = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {overlay} failed:\n{out.stderr[-2000:]}"
    return out.stdout


def render(overlay: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_kustomize(overlay)) if d]


def find(objs: list[dict[str, Any]], kind: str, name: str = "canrun") -> dict[str, Any]:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def base_objects() -> list[dict[str, Any]]:
    return render(MANIFESTS / "base")


# --- files ---------------------------------------------------------------------------------------

def test_there_are_manifests() -> None:
    assert (MANIFESTS / "base" / "kustomization.yaml").is_file()
    assert {p.name for p in OVERLAYS} >= {"cert-manager", "enforce-by-default"}


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_yaml_file_parses_and_objects_validate(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        if is_patch_or_config(path, doc):
            continue
        assert isinstance(doc, dict) and {"apiVersion", "kind", "metadata"} <= set(doc), f"{path}: not an object"
        validate(with_kustomization_namespace(path, doc), str(path.relative_to(ROOT)))


@pytest.mark.parametrize("kust", KUSTOMIZATIONS, ids=lambda p: str(p.parent.relative_to(MANIFESTS)))
def test_kustomizations_reference_existing_files(kust: Path) -> None:
    k = yaml.safe_load(kust.read_text())
    refs = list(k.get("resources") or []) + list(k.get("components") or [])
    refs += [p["path"] for p in k.get("patches") or [] if isinstance(p, dict) and "path" in p]
    refs += list(k.get("patchesStrategicMerge") or [])
    for ref in refs:
        target = (kust.parent / ref).resolve()
        assert target.exists(), f"{kust.relative_to(ROOT)} references missing {ref}"
        if target.is_dir():
            assert any((target / n).exists() for n in KUSTOMIZE_FILES), f"{ref} has no kustomization"


# --- rendered overlays ------------------------------------------------------------------------------

@needs_kubectl
@pytest.mark.parametrize("overlay", [MANIFESTS, MANIFESTS / "base", *OVERLAYS], ids=lambda p: p.name)
def test_rendered_objects_validate(overlay: Path) -> None:
    objs = render(overlay)
    assert objs
    for obj in objs:
        validate(obj, f"kubectl kustomize {overlay.relative_to(ROOT)}")


@needs_kubectl
def test_webhook_cannot_lock_out_its_own_recovery() -> None:
    objs = base_objects()
    namespace = find(objs, "Namespace")["metadata"]["name"]
    [hook] = find(objs, "ValidatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["timeoutSeconds"] == 10 and hook["matchPolicy"] == "Equivalent"
    assert hook["admissionReviewVersions"] == ["v1"]
    excluded = next(e for e in hook["namespaceSelector"]["matchExpressions"]
                    if e["key"] == "kubernetes.io/metadata.name")
    assert excluded["operator"] == "NotIn"
    assert set(excluded["values"]) == {"kube-system", "kube-public", "kube-node-lease"}
    assert own_namespace_is_excluded(objs, hook)
    assert hook["clientConfig"]["service"] == {"name": "canrun", "namespace": namespace, "path": "/validate",
                                               "port": 443}
    covered = {(g, r) for rule in hook["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               if set(rule["operations"]) >= {"CREATE", "UPDATE"}}
    assert covered >= {("", "pods"), ("", "pods/ephemeralcontainers"), ("", "replicationcontrollers"),
                       ("", "podtemplates"), ("apps", "deployments"), ("apps", "replicasets"),
                       ("apps", "statefulsets"), ("apps", "daemonsets"), ("batch", "jobs"), ("batch", "cronjobs")}


def own_namespace_is_excluded(objs: list[dict[str, Any]], hook: dict[str, Any]) -> bool:
    """The namespaceSelector leaves out the Namespace the manifests install into, by that Namespace's labels."""
    ns = find_kind(objs, "Namespace")
    labels = {**ns["metadata"].get("labels", {}), "kubernetes.io/metadata.name": ns["metadata"]["name"]}
    return not selector_matches(hook["namespaceSelector"], labels)


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector against labels, with the API server's semantics for the operators it allows."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], set(e.get("values") or ())
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def find_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [obj] = [o for o in objs if o["kind"] == kind]
    return obj


@needs_kubectl
def test_an_overlay_installing_elsewhere_still_excludes_itself(tmp_path: Path) -> None:
    """No namespace name is written in the selector, the webhook's Service or the RBAC subjects: an overlay
    with its own ``namespace:`` moves all of them, and the webhook still never judges its own namespace."""
    overlay = tmp_path / "elsewhere"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "namespace": "platform-tools", "resources": [os.path.relpath(MANIFESTS / "base", overlay)]}))
    objs = render(overlay)
    [hook] = find(objs, "ValidatingWebhookConfiguration")["webhooks"]
    assert find_kind(objs, "Namespace")["metadata"]["name"] == "platform-tools"
    assert own_namespace_is_excluded(objs, hook)
    assert selector_matches(hook["namespaceSelector"], {"kubernetes.io/metadata.name": "canrun"}), \
        "the name canrun is not special once installed elsewhere"
    assert not selector_matches(hook["namespaceSelector"], {"kubernetes.io/metadata.name": "kube-system"})
    assert selector_matches(hook["namespaceSelector"], {"kubernetes.io/metadata.name": "team-a"})
    assert hook["clientConfig"]["service"]["namespace"] == "platform-tools"
    for binding in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert {s["namespace"] for s in binding["subjects"]} == {"platform-tools"}, binding["metadata"]["name"]


@needs_kubectl
def test_deployment_is_restricted_and_highly_available() -> None:
    objs = base_objects()
    deploy = find(objs, "Deployment")
    spec = deploy["spec"]["template"]["spec"]
    [c] = spec["containers"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 65532 and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert deploy["spec"]["replicas"] == 2
    assert spec["affinity"]["podAntiAffinity"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}
    assert {"name": "https", "containerPort": 8443, "protocol": "TCP"} in c["ports"]
    assert "--self-managed-certs" in c["args"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/tmp", "/var/cache/canrun"} <= mounts
    assert all("emptyDir" in v for v in spec["volumes"] if v["name"] != "config")
    pdb = find(objs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    svc = find(objs, "Service")
    assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]


@needs_kubectl
def test_rbac_is_least_privilege() -> None:
    objs = base_objects()
    rules = find(objs, "ClusterRole")["rules"]
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    grants = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    # exactly the verbs the webhook's code uses (tests/apiserver runs it with only these rights)
    assert grants == {
        ("", "nodes", "list"), ("", "nodes", "watch"),          # the node watch
        ("", "namespaces", "get"),                              # the canrun.io/mode label
        ("", "namespaces", "list"),                             # the start-up probe (webhook/main.py)
        ("", "pods", "list"), ("", "pods", "watch"),            # warm-up
        ("networking.k8s.io", "servicecidrs", "list"),          # the SSRF guard's Service ranges
        ("", "secrets", "get"), ("", "serviceaccounts", "get"),  # pull secrets, by name
        ("", "events", "create"), ("", "events", "get"), ("", "events", "patch"),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "get"),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch"),
    }
    [vwc_rule] = [r for r in rules if "validatingwebhookconfigurations" in r["resources"]]
    assert vwc_rule["resourceNames"] == ["canrun"] and set(vwc_rule["verbs"]) == {"get", "patch"}
    role = find(objs, "Role", "canrun-tls")
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named and all(r["resourceNames"] == ["canrun-tls"] for r in named)
    binding = find(objs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "canrun", "namespace": "canrun"}]
    assert not [o for o in objs if o["kind"] == "ClusterRole" and any(
        "policyreports" in r["resources"] for r in o["rules"])], "PolicyReports are the audit's, not the webhook's"


@needs_kubectl
def test_cert_manager_overlay_serves_the_mounted_certificate() -> None:
    objs = render(MANIFESTS / "overlays" / "cert-manager")
    vwc = find(objs, "ValidatingWebhookConfiguration")
    cert = find(objs, "Certificate", "canrun-serving")
    assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "canrun/canrun-serving"
    [c] = find(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--self-managed-certs" not in c["args"]
    assert "--tls-cert=/etc/canrun/tls/tls.crt" in c["args"]
    volumes = find(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": cert["spec"]["secretName"], "defaultMode": 0o440}} in volumes
    assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding") and o["metadata"]["name"] == "canrun-tls"]
    assert set(cert["spec"]["dnsNames"]) >= {"canrun.canrun.svc"}


@needs_kubectl
def test_enforce_overlay_sets_the_default_mode() -> None:
    [c] = find(render(MANIFESTS / "overlays" / "enforce-by-default"), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--mode=enforce" in c["args"] and "--self-managed-certs" in c["args"]


# --- what the shipped workloads run -------------------------------------------------------------------------

#: The image the manifests run: its ENTRYPOINT/CMD come from the Dockerfile, as the built image's config will.
CANRUN_IMAGE = "ghcr.io/canrun/canrun"
#: What each shipped workload is meant to run.
EXPECTED_COMMAND = {("Deployment", "canrun"): "serve", ("CronJob", "canrun-audit"): "audit"}


def image_config() -> ImageConfig:
    dockerfile = (ROOT / "Dockerfile").read_text()
    entry = re.findall(r"^ENTRYPOINT\s+(.+)$", dockerfile, re.MULTILINE)
    cmd = re.findall(r"^CMD\s+(.+)$", dockerfile, re.MULTILINE)
    return ImageConfig(entrypoint=tuple(json.loads(entry[-1])) if entry else None,
                       cmd=tuple(json.loads(cmd[-1])) if cmd else None)


def effective_argv(obj: dict[str, Any], config: ImageConfig) -> list[tuple[str, tuple[str, ...]]]:
    """(container, argv) for every canrun container of ``obj``, combined as the runtime combines them."""
    workload = workload_from_object(obj)
    if workload is None:
        return []
    out = []
    for c in workload.pod.containers:
        if c.image.split(":")[0].split("@")[0] != CANRUN_IMAGE:
            continue
        process, findings = effective_process(c, config)
        assert process is not None, findings
        out.append((c.name, process.argv))
    return out


def parse_canrun(argv: tuple[str, ...]) -> str:
    """The subcommand ``argv`` runs, or AssertionError with argparse's complaint."""
    import contextlib
    import io

    from canrun.cli import build_parser

    assert argv[0] == json.loads(re.findall(r"^ENTRYPOINT\s+(.+)$", (ROOT / "Dockerfile").read_text(),
                                            re.MULTILINE)[-1])[0], f"{argv[0]} is not canrun"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return str(build_parser().parse_args(list(argv[1:])).command)
    except (SystemExit, UsageError) as exc:
        raise AssertionError(f"canrun refuses {' '.join(argv)}: {err.getvalue().strip() or exc}") from exc


@needs_kubectl
@pytest.mark.parametrize("overlay", [MANIFESTS / "base", *OVERLAYS], ids=lambda p: p.name)
def test_every_shipped_workload_runs_the_command_it_means(overlay: Path) -> None:
    """The image's ENTRYPOINT/CMD with each manifest's command/args, combined as the runtime does, is a
    command line canrun accepts, for the subcommand the workload is for."""
    config = image_config()
    seen = 0
    for obj in render(overlay):
        key = (obj["kind"], obj["metadata"]["name"])
        for container, argv in effective_argv(obj, config):
            seen += 1
            assert key in EXPECTED_COMMAND, f"{key}: a canrun workload this test does not know"
            assert parse_canrun(argv) == EXPECTED_COMMAND[key], f"{key} container {container} runs {argv}"
    assert seen, f"no canrun workload in {overlay}"


#: The disk cache is pruned at most every PRUNE_INTERVAL: between prunes it may grow past its bound, so the
#: bound leaves a quarter of the volume free; and it should use at least half of the volume it is given.
CACHE_SHARE = (0.5, 0.75)


@needs_kubectl
@pytest.mark.parametrize("overlay", [MANIFESTS / "base", *OVERLAYS], ids=lambda p: p.name)
def test_the_cache_bound_fits_its_volume(overlay: Path) -> None:
    """--cache-max-bytes, as the canrun in the pod will read it, against the sizeLimit of the volume mounted at
    its --cache-dir: over the sizeLimit the kubelet evicts the pod."""
    from canrun.cli import build_parser
    from canrun.config import parse_size
    from canrun.settings import settings_for

    config = image_config()
    seen = 0
    for obj in render(overlay):
        workload = workload_from_object(obj)
        for container, argv in effective_argv(obj, config):
            args = build_parser().parse_args(list(argv[1:]))
            cache_dir = getattr(args, "cache.dir")
            assert cache_dir is not None, f"{obj['metadata']['name']}: no --cache-dir"
            pod = obj["spec"]["template"]["spec"] if obj["kind"] != "CronJob" else \
                obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            [c] = [c for c in pod["containers"] if c["name"] == container]
            [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == str(cache_dir)]
            [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            limit = parse_size(volume["emptyDir"]["sizeLimit"])
            door = str(args.command)
            # the mounted ConfigMap's file is not on this machine; test_the_webhook_reads_its_settings_from_a_
            # configmap_it_can_follow checks it, and the bound is a flag, which wins over the file anyway
            args.config_file = None
            bound = settings_for(door, args).cache.max_bytes  # what the cache in the pod holds itself to
            low, high = CACHE_SHARE
            assert low * limit <= bound <= high * limit, \
                f"{obj['metadata']['name']}: cache bound {bound} for a {limit}-byte volume"
            seen += 1
        del workload
    assert seen


def test_args_alone_under_the_serve_entrypoint_would_run_serve() -> None:
    """The failure the audit CronJob had: args [audit, ...] under ENTRYPOINT [canrun, serve]."""
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "canrun-audit"},
               "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                   "restartPolicy": "Never",
                   "containers": [{"name": "audit", "image": f"{CANRUN_IMAGE}:x", "args": ["audit", "--apply"]}]}}}}}}
    [(_, argv)] = effective_argv(cronjob, image_config())
    assert argv[:3] == ("/usr/local/bin/canrun", "serve", "audit")
    with pytest.raises(AssertionError, match="canrun refuses"):
        parse_canrun(argv)


def test_the_webhook_reads_its_settings_from_a_configmap_it_can_follow() -> None:
    """--config names a file of the mounted ConfigMap, mounted as a directory (a subPath mount never updates),
    and the shipped file is one canrun accepts."""
    from canrun.config_file import load_config

    objs = base_objects()
    c = find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    (path,) = [a.split("=", 1)[1] for a in c["args"] if a.startswith("--config=")]
    volumes = {v["name"]: v for v in find(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert "subPath" not in mount and mount.get("readOnly") is True
    config_map = volumes[mount["name"]]["configMap"]["name"]
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == config_map]
    key = path[len(mount["mountPath"]) + 1:]
    assert cm["metadata"]["namespace"] == find(objs, "Deployment")["metadata"]["namespace"]
    import tempfile
    from pathlib import Path as _Path

    with tempfile.TemporaryDirectory() as tmp:
        file = _Path(tmp) / key
        file.write_text(cm["data"][key])
        load_config(file)  # raises UsageError if the shipped settings were not valid


# --- components that no shipped overlay includes ---------------------------------------------------------

def _serve_has(flag: str) -> bool:
    from canrun.cli import build_parser

    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    return any(flag in a.option_strings for a in serve._actions)


def with_components(tmp_path: Path, *components: str) -> list[dict[str, Any]]:
    overlay = tmp_path / "with-components"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(MANIFESTS / "base", overlay)],
        "components": [os.path.relpath(MANIFESTS / "components" / c, overlay) for c in components]}))
    return render(overlay)


@needs_kubectl
def test_redis_cache_component_is_valid_and_reachable_only_by_canrun(tmp_path: Path) -> None:
    objs = with_components(tmp_path, "redis-cache")
    for obj in objs:
        validate(obj, "base + components/redis-cache")
    redis = find(objs, "Deployment", "canrun-redis")
    svc = find(objs, "Service", "canrun-redis")
    pod = redis["spec"]["template"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [c] = pod["spec"]["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and pod["spec"]["securityContext"]["runAsNonRoot"]
    assert "--save" in c["args"] and "allkeys-lru" in c["args"], "a cache: no persistence, LRU under a bound"
    policy = find(objs, "NetworkPolicy", "canrun-redis")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [rule] = policy["spec"]["ingress"]
    webhook_labels = find(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= webhook_labels.items()
    [webhook] = find(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    port = svc["spec"]["ports"][0]["port"]
    assert f"--cache-url=redis://{svc['metadata']['name']}:{port}/0" in webhook["args"]


@needs_kubectl
def test_redis_cache_component_flags_are_accepted_by_serve(tmp_path: Path) -> None:
    objs = with_components(tmp_path, "redis-cache")
    [(_, argv)] = effective_argv(find(objs, "Deployment"), image_config())
    assert parse_canrun(argv) == "serve"


def test_pin_component_mutates_what_the_validating_webhook_judges() -> None:
    """The pin component's MutatingWebhookConfiguration matches the validating one where it must.

    Same namespaces (so the webhook never mutates what it would not judge, and never its own namespace),
    the same kinds less the ephemeralcontainers subresource (nothing to pin there), /mutate, reinvoked
    when a later mutating webhook adds containers, and failing open.
    """
    component = MANIFESTS / "components" / "pin"
    [mwc] = [d for d in load_all(component / "mutatingwebhookconfiguration.yaml") if d]
    [vwc] = [d for d in load_all(MANIFESTS / "base" / "validatingwebhookconfiguration.yaml") if d]
    [pin], [check] = mwc["webhooks"], vwc["webhooks"]
    assert pin["namespaceSelector"] == check["namespaceSelector"]
    assert {k: v for k, v in pin["clientConfig"]["service"].items() if k != "namespace"} == \
        {**check["clientConfig"]["service"], "path": "/mutate"}
    assert (pin["failurePolicy"], pin["reinvocationPolicy"], pin["sideEffects"]) == ("Ignore", "IfNeeded",
                                                                                    "NoneOnDryRun")
    validated = {(g, r) for rule in check["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    mutated = {(g, r) for rule in pin["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert mutated == validated - {("", "pods/ephemeralcontainers")}
    rbac = [d for d in load_all(component / "rbac.yaml") if d]
    [role] = [d for d in rbac if d["kind"] == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": ["admissionregistration.k8s.io"],
                              "resources": ["mutatingwebhookconfigurations"], "resourceNames": ["canrun"],
                              "verbs": ["get", "patch"]}]


@needs_kubectl
def test_pin_component_follows_an_overlays_excluded_namespaces(tmp_path: Path) -> None:
    """Excluded namespaces stay in one place with the pin component installed.

    Edits to the base's list reach the mutating webhook through the component's replacement; an overlay's
    patch, applied after components, names both configurations with one regex target (docs/pin.md).
    """
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS / "base", overlay)],
        "components": [os.path.relpath(MANIFESTS / "components" / "pin", overlay)],
        "patches": [{"target": {"kind": "(Validating|Mutating)WebhookConfiguration", "name": "canrun"},
                     "patch": yaml.safe_dump([{"op": "add", "path": "/webhooks/0/namespaceSelector/matchExpressions/"
                                               "0/values/-", "value": "gitops-system"}])}]}))
    objs = render(overlay)
    mwc, vwc = find(objs, "MutatingWebhookConfiguration"), find(objs, "ValidatingWebhookConfiguration")
    assert "gitops-system" in mwc["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert mwc["webhooks"][0]["namespaceSelector"] == vwc["webhooks"][0]["namespaceSelector"]
    assert mwc["webhooks"][0]["clientConfig"]["service"]["namespace"] == "canrun"
