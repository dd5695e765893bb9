"""Audit benchmark: a synthetic cluster of 2,000 workloads using 50 distinct images, next to its yardstick.

Target (audit issue): the audit takes ≤ 2 × the time of checking the 50 images alone, both measured in this
run (the machine is noisy), and every manifest and blob is fetched from the registry once.

Setup, all local: the Kubernetes API stand-in (tests/support/kubeapi.py, a real HTTP server driven by the
official client) holds 1,000 Deployments (each with its ReplicaSet and 2 Pods), 400 CronJobs (a Job and a Pod
each), 300 DaemonSets (2 Pods each) and 300 bare Pods; Debian's docker-registry holds 50 small images built
with umoci (a shared busybox base layer and one layer of their own each), behind a counting proxy.

  yardstick:  canrun check -f fifty-pods.yaml                 (each image once)
  measured:   canrun audit --format json                       (2,000 workloads, ~6,400 API objects)

Both start cold, each with an empty cache directory of its own (the CLI's default is to cache; with
``--no-cache`` the image store has no memory of resolved tags once a resolution completes, so a tag can be
resolved again by a later workload — see the audit report).

Run: ``make bench`` (all benchmarks) or ``.venv/bin/python bench/bench_audit.py``.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from canrun.cli import main as canrun  # noqa: E402
from tests.audit.proxy import CountingProxy  # noqa: E402
from tests.support import images  # noqa: E402
from tests.support.kubeapi import KubeAPIStandIn  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

IMAGES = 50
TARGET_RATIO = 2.0


def recipes() -> list[images.Image]:
    base = images.busybox_root(images.HOST_BUSYBOX)
    return [images.Image(f"bench-audit-{i:02d}",
                         (base, (images.Dir("/app"), images.File("/app/id", data=f"image {i}\n".encode(), mode=0o644))),
                         images.Config(entrypoint=("/bin/busybox",), cmd=("sleep", "3600")))
            for i in range(IMAGES)]


def meta(name: str, ns: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "labels": {"app": name}}
    if owner is not None:
        m["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"], "controller": True,
                                 "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]
    return m


def cluster_objects(refs: list[str]) -> tuple[list[dict[str, Any]], int]:
    objects: list[dict[str, Any]] = []
    workloads = 0

    def spec(i: int) -> dict[str, Any]:
        return {"containers": [{"name": "app", "image": refs[i % len(refs)]}]}

    def pod(name: str, ns: str, i: int, owner: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta(name, ns, owner), "spec": spec(i)}

    for i in range(1000):
        ns = f"team-{i % 20}"
        tpl = {"metadata": {"labels": {"app": f"web-{i}"}}, "spec": spec(i)}
        dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(f"web-{i}", ns),
               "spec": {"selector": {"matchLabels": {"app": f"web-{i}"}}, "template": tpl}}
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta(f"web-{i}-5d4f", ns, dep),
              "spec": {"selector": {"matchLabels": {"app": f"web-{i}"}}, "template": tpl}}
        objects += [dep, rs, pod(f"web-{i}-5d4f-a", ns, i, rs), pod(f"web-{i}-5d4f-b", ns, i, rs)]
    for i in range(400):
        ns = f"team-{i % 20}"
        tpl = {"spec": {**spec(i + 7), "restartPolicy": "Never"}}
        cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta(f"job-{i}", ns),
              "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": tpl}}}}
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(f"job-{i}-1", ns, cj),
               "spec": {"template": tpl}}
        objects += [cj, job, pod(f"job-{i}-1-x", ns, i + 7, job)]
    for i in range(300):
        ns = f"team-{i % 20}"
        tpl = {"metadata": {"labels": {"app": f"agent-{i}"}}, "spec": spec(i + 13)}
        ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta(f"agent-{i}", ns),
              "spec": {"selector": {"matchLabels": {"app": f"agent-{i}"}}, "template": tpl}}
        objects += [ds, pod(f"agent-{i}-n1", ns, i + 13, ds), pod(f"agent-{i}-n2", ns, i + 13, ds)]
    for i in range(300):
        objects.append(pod(f"debug-{i}", f"team-{i % 20}", i + 29))
    workloads = 1000 + 400 + 300 + 300
    return objects, workloads


def serve_cluster(workdir: Path, refs: list[str], ready: Any, stop: Any) -> None:
    """The API stand-in in a process of its own, as a real API server is: it must not share our GIL."""
    api = KubeAPIStandIn(workdir).start()
    objects, _ = cluster_objects(refs)
    for obj in objects:
        api.add(obj)
    api.add({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {
        "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux"}},
        "status": {"nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"}}})
    ready.put(str(api.kubeconfig_path))
    stop.wait()
    api.stop()


def timed(argv: list[str]) -> tuple[float, int, str]:
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    code = canrun(argv, stdout=out, stderr=err)
    elapsed = time.perf_counter() - start
    if code not in (0, 1):
        raise RuntimeError(f"canrun {' '.join(argv[:2])} failed ({code}): {err.getvalue()[-1000:]}")
    return elapsed, code, out.getvalue()


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="canrun-bench-audit-"))
    t0 = time.perf_counter()
    layouts, _ = images.build_all(recipes(), workers=2)
    print(f"images: {IMAGES} built/cached with umoci in {time.perf_counter() - t0:.1f} s")
    registry = start_registry(work / "registry")
    proxy = CountingProxy(registry.host)
    stop = multiprocessing.Event()
    server: multiprocessing.Process | None = None
    try:
        t0 = time.perf_counter()
        refs = []
        for i, r in enumerate(recipes()):
            images.push(layouts[r.name], f"{registry.host}/bench/app-{i:02d}:1")
            refs.append(f"{proxy.host}/bench/app-{i:02d}:1")
        print(f"pushed with skopeo in {time.perf_counter() - t0:.1f} s")
        objects, workloads = cluster_objects(refs)
        ready: multiprocessing.Queue[str] = multiprocessing.Queue()
        server = multiprocessing.Process(target=serve_cluster, args=(work / "kubeapi", refs, ready, stop), daemon=True)
        server.start()
        kubeconfig = ready.get(timeout=300)
        print(f"cluster: {workloads} workloads, {len(objects)} API objects")

        pods = work / "fifty-pods.yaml"
        pods.write_text("".join(f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: bench}}\n"
                                f"spec:\n  containers:\n  - name: app\n    image: {ref}\n"
                                for i, ref in enumerate(refs)))
        common = ["--insecure-registry", proxy.host]
        # warm the registry's and the kernel's file caches (and Python's imports)
        timed(["check", "-f", str(pods), "--cache-dir", str(work / "cache-warmup"), *common])
        proxy.reset()
        t_images, _, _ = timed(["check", "-f", str(pods), "--format", "json", "--cache-dir", str(work / "cache-check"),
                                *common])
        check_fetches = proxy.content_fetches()

        proxy.reset()
        t_audit, _, out = timed(["audit", "--kubeconfig", kubeconfig, "--format", "json",
                                 "--cache-dir", str(work / "cache-audit"), *common])
        doc = json.loads(out)
        fetches = proxy.content_fetches()
        heads = proxy.counts("HEAD")
        repeated = {p: n for p, n in list(fetches.items()) + list(heads.items()) if n > 1}
        blobs = [p for p in fetches if "/blobs/" in p]
        distinct_blob_digests = {p.rsplit("/", 1)[1] for p in blobs}

        ratio = t_audit / t_images
        print(f"yardstick  check of the {IMAGES} images alone: {t_images:6.2f} s "
              f"({sum(check_fetches.values())} manifest/blob GETs)")
        print(f"measured   audit of {doc['summary']['workloads']} workloads: {t_audit:6.2f} s "
              f"({sum(fetches.values())} manifest/blob GETs, {sum(heads.values())} HEADs; "
              f"{doc['summary']['listed_objects']} objects listed, {doc['summary']['folded_objects']} folded)")
        print(f"fetched once: {'yes' if not repeated else 'NO: ' + json.dumps(repeated)[:400]} "
              f"({len(distinct_blob_digests)} distinct blobs = {IMAGES} configs + {IMAGES} own layers + 1 shared base)")
        print(f"ratio audit/images = {ratio:.2f} (target ≤ {TARGET_RATIO:.1f}): {'PASS' if ratio <= TARGET_RATIO else 'FAIL'}")
        ok = (ratio <= TARGET_RATIO and not repeated and doc["summary"]["workloads"] == workloads
              and len(distinct_blob_digests) == 2 * IMAGES + 1)
        return 0 if ok else 1
    finally:
        stop.set()
        if server is not None:
            server.join(timeout=10)
        proxy.close()
        registry.stop()


if __name__ == "__main__":
    raise SystemExit(main())
