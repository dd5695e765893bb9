"""Realistic workloads over the image catalogue: one that breaks each way, and a clean counterpart for each.

Manifests are written the way people write them (Deployments, CronJobs,
StatefulSets, nodeSelectors for single-arch images); ``<<name>>`` stands for
the catalogue image's reference in the session registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.support.images import Catalogue


@dataclass(frozen=True)
class Expect:
    rule: str
    severity: str
    platforms: tuple[str, ...]  # every platform the finding must name
    container: str


@dataclass(frozen=True)
class Case:
    name: str  # metadata.name of the workload
    kind: str
    namespace: str
    yaml: str
    expect: tuple[Expect, ...] = ()  # empty: clean (no error or warning)


AMD = ("linux/amd64",)
ARM = ("linux/arm64",)
BOTH = ("linux/amd64", "linux/arm64")


def deployment(name: str, ns: str, containers: str, *, pod: str = "", template_meta: str = "") -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {name}}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}{template_meta}
    spec:{pod}
      containers:
{containers}"""


ON_AMD64 = """
      nodeSelector:
        kubernetes.io/arch: amd64"""


BAD: list[Case] = [
    Case("checkout", "Deployment", "shop", deployment("checkout", "shop", """\
      - name: api
        image: <<amd64-only>>
        ports: [{containerPort: 8080}]
"""), (Expect("platform-missing", "error", ARM, "api"),)),
    Case("edge-proxy", "DaemonSet", "kube-system", """apiVersion: apps/v1
kind: DaemonSet
metadata: {name: edge-proxy, namespace: kube-system}
spec:
  selector: {matchLabels: {app: edge-proxy}}
  template:
    metadata: {labels: {app: edge-proxy}}
    spec:
      containers:
      - name: proxy
        image: <<mislabeled>>
        resources: {limits: {memory: 64Mi}}
""", (Expect("exec-format", "error", ARM, "proxy"),)),
    Case("notes", "Pod", "default", """apiVersion: v1
kind: Pod
metadata: {name: notes, namespace: default}
spec:
  nodeSelector: {kubernetes.io/arch: amd64}
  containers:
  - name: notes
    image: <<scripts>>
    command: ["/app/notes.txt"]
""", (Expect("exec-format", "error", AMD, "notes"),)),
    Case("server", "Deployment", "shop", deployment("server", "shop", """\
      - name: server
        image: <<whiteout>>
        args: ["--port", "8080"]
""", pod=ON_AMD64), (Expect("command-not-found", "error", AMD, "server"),)),
    Case("tool-migrate", "Job", "shop", """apiVersion: batch/v1
kind: Job
metadata: {name: tool-migrate, namespace: shop}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {kubernetes.io/arch: amd64}
      containers:
      - name: migrate
        image: <<opaque>>
""", (Expect("command-not-found", "error", AMD, "migrate"),)),
    Case("web", "Deployment", "shop", deployment("web", "shop", """\
      - name: nginx
        image: <<usrmerge>>
        command: ["nginx", "-g", "daemon off;"]
""", pod=ON_AMD64), (Expect("command-not-found", "error", AMD, "nginx"),)),
    Case("reports", "Deployment", "shop", deployment("reports", "shop", """\
      - name: reports
        image: <<mode644>>
""", pod=ON_AMD64), (Expect("command-not-executable", "error", AMD, "reports"),)),
    Case("billing", "Deployment", "shop", deployment("billing", "shop", """\
      - name: billing
        image: <<mode700>>
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: ["ALL"]}
""", pod=ON_AMD64 + """
      securityContext:
        runAsNonRoot: true
        runAsUser: 1000
        seccompProfile: {type: RuntimeDefault}"""), (Expect("command-not-executable", "error", AMD, "billing"),)),
    Case("nightly-export", "CronJob", "shop", """apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly-export, namespace: shop}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          nodeSelector: {kubernetes.io/arch: amd64}
          containers:
          - name: export
            image: <<crlf>>
            args: ["sleep", "5"]
""", (Expect("interpreter-not-found", "error", AMD, "export"),)),
    Case("db", "StatefulSet", "shop", """apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      nodeSelector: {kubernetes.io/arch: amd64}
      containers:
      - name: db
        image: <<bash-script>>
""", (Expect("interpreter-not-found", "error", AMD, "db"),)),
    Case("lister", "Pod", "default", """apiVersion: v1
kind: Pod
metadata: {name: lister, namespace: default}
spec:
  nodeSelector: {kubernetes.io/arch: amd64}
  containers:
  - name: ls
    image: <<dynamic-ls>>
    args: ["-la", "/"]
""", (Expect("loader-not-found", "error", AMD, "ls"),)),
    Case("idle", "Pod", "default", """apiVersion: v1
kind: Pod
metadata: {name: idle, namespace: default}
spec:
  nodeSelector: {kubernetes.io/arch: amd64}
  containers:
  - name: idle
    image: <<no-command>>
""", (Expect("no-command", "error", AMD, "idle"),)),
    Case("worker", "Deployment", "shop", deployment("worker", "shop", """\
      - name: worker
        image: <<missing-user>>
""", pod=ON_AMD64), (Expect("user-not-found", "error", AMD, "worker"),)),
    Case("cart", "Deployment", "shop", deployment("cart", "shop", """\
      - name: cart
        image: <<busybox>>
        securityContext: {runAsNonRoot: true}
"""), (Expect("nonroot-conflict", "error", BOTH, "cart"),)),
    Case("profile", "Deployment", "shop", deployment("profile", "shop", """\
      - name: profile
        image: <<named-user>>
""", pod=ON_AMD64 + """
      securityContext: {runAsNonRoot: true}"""), (Expect("nonroot-conflict", "error", AMD, "profile"),)),
    Case("legacy", "Deployment", "shop", deployment("legacy", "shop", """\
      - name: legacy
        image: <<unreachable>>
"""), (Expect("image-unresolvable", "warning", (), "legacy"),)),
    Case("typo", "Pod", "default", """apiVersion: v1
kind: Pod
metadata: {name: typo, namespace: default}
spec:
  containers:
  - name: typo
    image: <<busybox-repo>>:1.63
""", (Expect("image-unresolvable", "warning", (), "typo"),)),
    Case("damaged", "Deployment", "shop", deployment("damaged", "shop", """\
      - name: damaged
        image: <<corrupt>>
""", pod=ON_AMD64), (Expect("image-corrupt", "error", (), "damaged"),)),
    # a hard link to a lower layer's file: containerd's default (overlayfs) snapshotter cannot unpack the layer
    Case("linked", "Deployment", "shop", deployment("linked", "shop", """\
      - name: linked
        image: <<hardlink>>
""", pod=ON_AMD64), (Expect("image-corrupt", "error", (), "linked"),)),
    Case("hooks", "Deployment", "shop", deployment("hooks", "shop", """\
      - name: hooks
        image: <<busybox>>
        command: ["/scripts/run.sh"]
        volumeMounts:
        - {name: scripts, mountPath: /scripts}
""", pod="""
      volumes:
      - name: scripts
        configMap:
          name: hook-scripts"""), (Expect("command-not-executable", "error", BOTH, "hooks"),)),
]

CLEAN: list[Case] = [
    Case("storefront", "Deployment", "shop", deployment("storefront", "shop", """\
      - name: web
        image: <<busybox>>
        args: ["httpd", "-f", "-p", "8080"]
        ports: [{containerPort: 8080}]
      - name: sidecar
        image: <<busybox>>
        command: ["sh", "-c", "while true; do sleep 30; done"]
""", pod="""
      initContainers:
      - name: init
        image: <<busybox>>
        command: ["/bin/sh", "-c", "echo ready"]""")),
    Case("checkout", "Deployment", "shop", deployment("checkout", "shop", """\
      - name: api
        image: <<amd64-only>>
""", pod=ON_AMD64)),
    Case("signed", "Deployment", "shop", deployment("signed", "shop", """\
      - name: signed
        image: <<attested>>
""")),
    Case("edge-proxy", "DaemonSet", "kube-system", """apiVersion: apps/v1
kind: DaemonSet
metadata: {name: edge-proxy, namespace: kube-system}
spec:
  selector: {matchLabels: {app: edge-proxy}}
  template:
    metadata: {labels: {app: edge-proxy}}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {key: kubernetes.io/arch, operator: In, values: [amd64]}
      containers:
      - name: proxy
        image: <<mislabeled>>
"""),
    Case("server", "Deployment", "shop", deployment("server", "shop", """\
      - name: server
        image: <<whiteout>>
        command: ["/app/helper"]
""", pod=ON_AMD64)),
    Case("web", "Deployment", "shop", deployment("web", "shop", """\
      - name: web
        image: <<usrmerge>>
""", pod=ON_AMD64)),
    Case("scripted", "Pod", "default", """apiVersion: v1
kind: Pod
metadata: {name: scripted, namespace: default}
spec:
  nodeSelector: {kubernetes.io/arch: amd64}
  containers:
  - name: scripted
    image: <<scripts>>
"""),
    Case("billing", "Deployment", "shop", deployment("billing", "shop", """\
      - name: billing
        image: <<mode700>>
""", pod=ON_AMD64)),
    Case("lister", "Pod", "default", """apiVersion: v1
kind: Pod
metadata: {name: lister, namespace: default}
spec:
  nodeSelector: {kubernetes.io/arch: amd64}
  containers:
  - name: ls
    image: <<dynamic-ls-loader>>
    args: ["-la", "/"]
"""),
    Case("idle", "Pod", "default", """apiVersion: v1
kind: Pod
metadata: {name: idle, namespace: default}
spec:
  nodeSelector: {kubernetes.io/arch: amd64}
  containers:
  - name: idle
    image: <<no-command>>
    command: ["/bin/sh", "-c", "sleep 3600"]
"""),
    Case("profile", "Deployment", "shop", deployment("profile", "shop", """\
      - name: profile
        image: <<named-user>>
""", pod=ON_AMD64 + """
      securityContext: {runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000}""")),
    Case("compact", "Deployment", "shop", deployment("compact", "shop", """\
      - name: compact
        image: <<zstd>>
""", pod=ON_AMD64)),
    Case("hooks", "Deployment", "shop", deployment("hooks", "shop", """\
      - name: hooks
        image: <<busybox>>
        command: ["/bin/sh", "/scripts/run.sh"]
        volumeMounts:
        - {name: scripts, mountPath: /scripts}
""", pod="""
      volumes:
      - name: scripts
        configMap:
          name: hook-scripts""")),
]


def render(cases: list[Case], catalogue: Catalogue) -> str:
    """The cases as one multi-document YAML stream, catalogue references filled in."""

    def ref(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.endswith("-repo"):
            return catalogue.ref(name[: -len("-repo")]).rsplit(":", 1)[0]
        return catalogue.ref(name)

    return "---\n".join(re.sub(r"<<([a-z0-9-]+)>>", ref, c.yaml) for c in cases)
