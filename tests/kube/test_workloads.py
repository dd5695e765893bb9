"""Objects to workloads: every kind with a pod spec, every field the checks read, and broken shapes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canrun.errors import ManifestError
from canrun.kube.manifests import load_text
from canrun.kube.workloads import WorkloadSet, workload_from_object, workloads_from_load
from canrun.spec import (
    ContainerKind,
    EnvVar,
    NodeSelectorRequirement,
    SecurityContext,
    SourceLocation,
    VolumeItem,
    VolumeKind,
    VolumeMount,
)

def from_text(text: str, name: str = "w.yaml") -> WorkloadSet:
    return workloads_from_load(load_text(text, name))


def wrap(kind: str, api_version: str, spec_path: str) -> str:
    """An object of ``kind`` whose pod spec sits at ``spec_path`` (a template path gets its own ``spec:``)."""
    steps = spec_path.split(".") + (["spec"] if spec_path.endswith("template") else [])
    lines = [f"apiVersion: {api_version}", f"kind: {kind}", "metadata:", f"  name: {kind.lower()}"]
    lines += [f"{'  ' * depth}{step}:" for depth, step in enumerate(steps)]
    indent = "  " * len(steps)
    lines += [f"{indent}containers:", f"{indent}  - name: app", f"{indent}    image: registry.example/app:1"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("kind", "api_version", "path"), [
    ("Pod", "v1", "spec"),
    ("PodTemplate", "v1", "template"),
    ("ReplicationController", "v1", "spec.template"),
    ("Deployment", "apps/v1", "spec.template"),
    ("Deployment", "extensions/v1beta1", "spec.template"),
    ("Deployment", "apps/v1beta2", "spec.template"),
    ("ReplicaSet", "apps/v1", "spec.template"),
    ("DaemonSet", "extensions/v1beta1", "spec.template"),
    ("StatefulSet", "apps/v1beta1", "spec.template"),
    ("Job", "batch/v1", "spec.template"),
    ("CronJob", "batch/v1", "spec.jobTemplate.spec.template"),
    ("CronJob", "batch/v1beta1", "spec.jobTemplate.spec.template"),
])
def test_every_kind_with_a_pod_spec(kind: str, api_version: str, path: str) -> None:
    text = wrap(kind, api_version, path)
    result = from_text(text)
    assert result.errors == [], text
    (workload,) = result.workloads
    assert workload.resource.kind == kind and workload.resource.api_version == api_version
    assert workload.resource.name == kind.lower()
    assert workload.resource.namespace is None
    (container,) = workload.pod.containers
    assert container.image == "registry.example/app:1"
    assert container.source.file == "w.yaml"
    assert container.source.line == text.splitlines().index(next(
        line for line in text.splitlines() if line.strip() == "- name: app")) + 1


def test_foreign_groups_and_kinds_without_pod_specs_are_counted() -> None:
    text = """\
apiVersion: v1
kind: Service
metadata: {name: a}
---
apiVersion: v1
kind: Service
metadata: {name: b}
---
apiVersion: example.com/v1
kind: Deployment
metadata: {name: not-apps}
spec: {template: {spec: {containers: [{name: a, image: b}]}}}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: r}
"""
    result = from_text(text)
    assert result.workloads == [] and result.errors == []
    assert result.skipped == {"Service": 2, "Deployment.example.com": 1, "Rollout": 1}


def test_cronjob_nesting_annotations_and_lines() -> None:
    text = """\
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
  namespace: jobs
  annotations:
    canrun.io/skip: no-command
    team: outer
spec:
  schedule: "0 0 * * *"
  jobTemplate:
    metadata:
      annotations: {team: job, level: job}
    spec:
      template:
        metadata:
          annotations:
            canrun.io/skip: "user-not-found, no-command"
            team: pod
            only-pod: "yes"
        spec:
          restartPolicy: Never
          containers:
          - name: run
            image: busybox
            args: [--port, 8080, --verbose, true]
"""
    (workload,) = from_text(text, "cron.yaml").workloads
    assert str(workload.resource) == "CronJob jobs/nightly"
    assert workload.source == SourceLocation("cron.yaml", 1)
    assert workload.pod.containers[0].source == SourceLocation("cron.yaml", 24)
    assert workload.pod.containers[0].args == ("--port", "8080", "--verbose", "true")
    # the object wins over its templates, exemptions from every level add up
    assert workload.annotations == {"canrun.io/skip": "no-command,user-not-found", "team": "outer",
                                    "level": "job", "only-pod": "yes"}


def test_lists_are_expanded_with_positions() -> None:
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: one}
  spec:
    containers:
    - {name: a, image: busybox}
- apiVersion: v1
  kind: Service
  metadata: {name: svc}
- kind: Pod
  metadata: {name: no-api-version}
- apiVersion: v1
  kind: List
  items:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: nested}
    spec:
      template:
        spec:
          containers:
          - {name: b, image: nginx}
"""
    result = from_text(text, "list.yaml")
    assert [(w.resource.name, w.source.line, w.pod.containers[0].source.line) for w in result.workloads] == [
        ("one", 4, 9), ("nested", 18, 25)]
    assert result.skipped == {"Service": 1}
    assert [str(e) for e in result.errors] == ["list.yaml:13: items[2] of the List: not a Kubernetes object: "
                                               "no apiVersion"]


def test_typed_api_lists_give_items_their_kind() -> None:
    pod_list = {"apiVersion": "v1", "kind": "PodList", "items": [
        {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}]}
    loaded = load_text(str(pod_list).replace("'", '"'), "pods.json")
    (workload,) = workloads_from_load(loaded).workloads
    assert str(workload.resource) == "Pod ns/p"


def test_every_field_the_checks_read() -> None:
    text = """\
apiVersion: v1
kind: Pod
metadata: {name: full}
spec:
  nodeName: node-1
  serviceAccountName: robot
  imagePullSecrets: [{name: regcred}, {name: other}]
  nodeSelector: {kubernetes.io/arch: arm64, disk: ssd}
  securityContext:
    runAsUser: 1000
    runAsGroup: "3000"
    runAsNonRoot: true
    supplementalGroups: [4000, 5000]
    fsGroup: 2000
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {key: kubernetes.io/os, operator: In, values: [linux]}
          - {key: gpu, operator: DoesNotExist}
        - matchFields:
          - {key: metadata.name, operator: In, values: [node-2]}
  volumes:
  - name: scripts
    configMap:
      name: scripts-cm
      defaultMode: 0755
      items: [{key: run, path: run.sh, mode: "0700"}, {key: lib, path: lib/x.sh}]
  - name: creds
    secret: {secretName: s, defaultMode: 256}
  - name: all
    projected:
      defaultMode: 0o555
      sources:
      - configMap: {name: a, items: [{key: k, path: a.sh, mode: 493}]}
      - secret: {name: b}
      - serviceAccountToken: {path: token}
  - {name: scratch, emptyDir: {}}
  - {name: host, hostPath: {path: /opt}}
  - {name: data, persistentVolumeClaim: {claimName: pvc}}
  - {name: nfs, nfs: {server: x, path: /}}
  initContainers:
  - name: init
    image: alpine
    command: [sh]
  containers:
  - name: app
    image: app:1
    command: ["/scripts/run.sh"]
    args: []
    workingDir: /work
    env:
    - {name: A, value: plain}
    - {name: B, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: C}
    - {name: D, value: 42}
    securityContext:
      runAsUser: 0
      runAsNonRoot: false
      privileged: true
      capabilities: {add: [NET_ADMIN], drop: [ALL]}
    volumeMounts:
    - {name: scripts, mountPath: /scripts}
    - {name: creds, mountPath: /etc/creds/key, subPath: key, readOnly: true}
  ephemeralContainers:
  - name: debug
    image: busybox
"""
    result = from_text(text)
    assert result.errors == []
    pod = result.workloads[0].pod
    assert [(c.name, c.kind) for c in pod.containers] == [
        ("init", ContainerKind.INIT), ("app", ContainerKind.REGULAR), ("debug", ContainerKind.EPHEMERAL)]
    init, app, debug = pod.containers
    assert init.command == ("sh",) and init.args is None
    assert app.command == ("/scripts/run.sh",) and app.args == ()
    assert app.working_dir == "/work"
    assert app.env == (EnvVar("A", "plain"), EnvVar("B", None), EnvVar("C", ""), EnvVar("D", "42"))
    assert app.security_context == SecurityContext(run_as_user=0, run_as_non_root=False, privileged=True,
                                                   capabilities_add=("NET_ADMIN",), capabilities_drop=("ALL",))
    assert app.volume_mounts == (VolumeMount("scripts", "/scripts"),
                                 VolumeMount("creds", "/etc/creds/key", sub_path="key", read_only=True))
    assert debug.security_context is None and debug.command is None
    assert pod.security_context == SecurityContext(run_as_user=1000, run_as_group=3000, run_as_non_root=True,
                                                   supplemental_groups=(4000, 5000), fs_group=2000)
    assert pod.node_name == "node-1" and pod.service_account == "robot"
    assert pod.image_pull_secrets == ("regcred", "other")
    assert pod.node_selector == {"kubernetes.io/arch": "arm64", "disk": "ssd"}
    assert pod.required_node_terms == (
        (NodeSelectorRequirement("kubernetes.io/os", "In", ("linux",)),
         NodeSelectorRequirement("gpu", "DoesNotExist")),
        (NodeSelectorRequirement("metadata.name", "In", ("node-2",), match_field=True),),
    )
    scripts, creds, projected, scratch, host, data, nfs = pod.volumes
    assert (scripts.kind, scripts.default_mode, scripts.source) == (VolumeKind.CONFIG_MAP, 0o755, "scripts-cm")
    assert scripts.items == (VolumeItem("run.sh", 0o700), VolumeItem("lib/x.sh", None))
    assert (creds.kind, creds.default_mode, creds.source, creds.items) == (VolumeKind.SECRET, 0o400, "s", ())
    assert projected.kind is VolumeKind.PROJECTED and projected.default_mode == 0o555
    assert projected.items == (VolumeItem("a.sh", 0o755), VolumeItem("token"))
    assert [v.kind for v in (scratch, host, data, nfs)] == [VolumeKind.EMPTY_DIR, VolumeKind.HOST_PATH,
                                                            VolumeKind.PVC, VolumeKind.OTHER]
    assert (host.source, data.source) == ("/opt", "pvc")


BROKEN = [
    ("spec:\n  containers: {name: a, image: b}\n",
     "w.yaml:5: Pod p: spec.containers must be a list, not a mapping"),
    ("spec:\n  containers:\n  - name: a\n    command: [x]\n",
     "w.yaml:6: Pod p: spec.containers[0] (container 'a') has no image"),
    ("spec:\n  containers:\n  - name: a\n    image: b\n    command: sh -c 'run'\n",
     "w.yaml:8: Pod p: spec.containers[0].command must be a list of strings, not a string (\"sh -c 'run'\"); "
     "write command: [\"sh\", \"-c\", \"…\"] or a YAML list"),
    ("spec:\n  containers:\n  - name: a\n    image: b\n    args: [x, {y: z}]\n",
     "w.yaml:8: Pod p: spec.containers[0].args[1] must be a string, not a mapping"),
    ("spec:\n  containers:\n  - just-a-string\n",
     "w.yaml:6: Pod p: spec.containers[0] must be a container (a mapping), not the string 'just-a-string'"),
    ("spec:\n  containers: []\n",
     "w.yaml:5: Pod p: spec.containers missing or empty: a pod needs at least one container"),
    ("spec:\n  volumes: [{name: v, configMap: {name: c, defaultMode: rwx}}]\n"
     "  containers: [{name: a, image: b}]\n",
     "w.yaml:5: Pod p: spec.volumes[0].configMap.defaultMode is not a file mode (0 to 0777, e.g. 0755 or 493): "
     "'rwx'"),
    ("spec:\n  securityContext: {runAsUser: root}\n  containers: [{name: a, image: b}]\n",
     "w.yaml:5: Pod p: spec.securityContext.runAsUser must be an integer, not the string 'root'"),
    ("spec:\n  containers: [{name: a, image: b}]\n  affinity:\n    nodeAffinity:\n"
     "      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n"
     "        - matchExpressions: [{key: a, operator: Equals, values: [b]}]\n",
     "w.yaml:10: Pod p: spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution."
     "nodeSelectorTerms[0].matchExpressions[0].operator 'Equals' is not one of DoesNotExist, Exists, Gt, In, "
     "Lt, NotIn"),
    ("spec:\n  containers:\n  - name: a\n    image: \"{{ .Values.image }}\"\n",
     "w.yaml:7: Pod p: spec.containers[0].image '{{ .Values.image }}' is an unrendered template ({{ … }}); "
     "render it first, e.g. `helm template … | canrun check -f -`"),
    ("spec: 3\n", "w.yaml:4: Pod p: spec must be a mapping, not the number 3"),
]


@pytest.mark.parametrize(("spec", "message"), BROKEN)
def test_broken_shapes_are_errors_with_lines_and_the_rest_is_judged(spec: str, message: str) -> None:
    text = ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n"
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n" + spec +
            "---\napiVersion: v1\nkind: Pod\nmetadata: {name: fine}\nspec:\n  containers: [{name: a, image: b}]\n")
    # expected lines count from the broken object's "apiVersion" as line 1; the preamble adds 4
    result = from_text(text)
    assert [w.resource.name for w in result.workloads] == ["fine"]
    assert result.skipped == {"Service": 1}
    assert [str(e) for e in result.errors] == [_shift(message, 4)]


def _shift(message: str, by: int) -> str:
    head, _, rest = message.partition(": ")
    file, line = head.split(":")
    return f"{file}:{int(line) + by}: {rest}"


def test_workload_from_object_without_positions() -> None:
    obj = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "annotations": {"canrun.io/skip": "all"}},
           "spec": {"template": {"metadata": {"annotations": {"x": "1"}},
                                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    workload = workload_from_object(obj)
    assert workload is not None
    assert workload.source == SourceLocation() and workload.pod.containers[0].source == SourceLocation()
    assert workload.annotations == {"canrun.io/skip": "all", "x": "1"}
    assert workload.resource.namespace is None
    assert workload_from_object(obj, namespace="prod").resource.namespace == "prod"
    assert workload_from_object({**obj, "metadata": {"name": "web", "namespace": "set"}},
                                namespace="prod").resource.namespace == "set"
    assert workload_from_object({"apiVersion": "v1", "kind": "Service"}) is None
    with pytest.raises(ManifestError) as info:
        workload_from_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                              "spec": {"containers": [{"name": "c"}]}})
    assert str(info.value) == "Pod p: spec.containers[0] (container 'c') has no image"


def test_generate_name_and_unnamed() -> None:
    obj = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "migrate-"},
           "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}
    workload = workload_from_object(obj)
    assert workload is not None
    assert workload.resource.name == "migrate-"
    assert workload.pod.containers[0].name == "(unnamed container #1)"


def test_realworld_style_template_name_is_refused() -> None:
    text = "kind: Pod\napiVersion: v1\nmetadata:\n  name: vttablet-{{uid}}\nspec:\n  containers: [{name: a, image: b}]\n"
    (error,) = from_text(text, "t.yaml").errors
    assert str(error) == ("t.yaml:4: Pod vttablet-{{uid}}: metadata.name 'vttablet-{{uid}}' is an unrendered "
                          "template ({{ … }}); render it first, e.g. `helm template … | canrun check -f -`")


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                           st.sampled_from(["containers", "initContainers", "jobTemplate", "name", "image", "command", "args", "env", "value", "valueFrom",
                                            "securityContext", "runAsUser", "capabilities", "add", "volumes",
                                            "configMap", "items", "mode", "defaultMode", "volumeMounts",
                                            "mountPath", "affinity", "nodeAffinity", "nodeSelector", "key",
                                            "operator", "values", "template", "spec", "metadata",
                                            "annotations"]), inner, max_size=4),
                       max_leaves=25)


@settings(max_examples=150, deadline=None)
@given(spec=JSONISH, kind=st.sampled_from(["Pod", "Deployment", "CronJob", "PodTemplate"]))
def test_api_objects_of_any_shape_give_a_workload_none_or_manifest_error(spec: object, kind: str) -> None:
    api = {"Pod": "v1", "PodTemplate": "v1", "Deployment": "apps/v1", "CronJob": "batch/v1"}[kind]
    obj = {"apiVersion": api, "kind": kind, "metadata": {"name": "x"},
           "spec" if kind != "PodTemplate" else "template": spec}
    try:
        workload_from_object(obj)
    except ManifestError as exc:
        assert str(exc).startswith(f"{kind} x: ")
