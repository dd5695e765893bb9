"""All of kubernetes/examples (tests/data/realworld): manifests written by people, not by us.

The loader must finish, name every file it cannot read, and turn every object
with a pod spec into a workload.  The workload count is checked against an
independent, naive scan with ``yaml.safe_load_all``; the exact numbers are
pinned too, after checking a few files by hand, so a regression that loses
the same objects in both counts is still caught.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from canrun.kube.manifests import Loaded, load_objects
from canrun.kube.workloads import POD_KINDS, WorkloadSet, workloads_from_load

REALWORLD = Path(__file__).resolve().parents[1] / "data" / "realworld" / "kubernetes-examples"

TEMPLATES = {
    "_archived/newrelic/newrelic-config-template.yaml": 7,
    "_archived/newrelic-infrastructure/newrelic-config-template.yaml": 7,
    "_archived/storage/vitess/etcd-controller-template.yaml": 6,
    "_archived/storage/vitess/etcd-service-template.yaml": 7,
    "_archived/storage/vitess/vtgate-controller-template.yaml": 6,
    "_archived/storage/vitess/vttablet-pod-template.yaml": 4,  # valid YAML, but named "vttablet-{{uid}}"
}
#: Application configs that live beside the manifests (Cassandra's own cassandra.yaml): passed over, counted.
NOT_OBJECTS = {
    "databases/cassandra/image/files/cassandra.yaml": 10,
    "databases/cassandra/java/src/test/resources/cassandra.yaml": 18,
}


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    return load_objects([str(REALWORLD)])


@pytest.fixture(scope="module")
def result(loaded: Loaded) -> tuple[int, WorkloadSet]:
    return loaded.files, workloads_from_load(loaded)


def naive_count() -> Counter[str]:
    """Workload objects as plain PyYAML sees them, minus the unrendered templates."""
    counts: Counter[str] = Counter()
    for path in REALWORLD.rglob("*"):
        if not path.is_file():
            continue
        try:
            docs = list(yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        except yaml.YAMLError:
            continue
        stack = [d for d in docs if isinstance(d, dict)]
        while stack:
            doc = stack.pop()
            if doc.get("kind") == "List":
                stack += [i for i in doc.get("items") or [] if isinstance(i, dict)]
            elif doc.get("kind") in POD_KINDS and "{{" not in str((doc.get("metadata") or {}).get("name")):
                counts[doc["kind"]] += 1
    return counts


def test_every_file_is_read(result: tuple[int, WorkloadSet]) -> None:
    files, _ = result
    assert files == 262


def test_unreadable_files_are_named_with_clear_messages(loaded: Loaded, result: tuple[int, WorkloadSet]) -> None:
    _, workloads = result
    where = {(str(Path(e.source or "").relative_to(REALWORLD)), e.line): str(e) for e in workloads.errors}
    assert set(where) == set(TEMPLATES.items())
    for key in TEMPLATES.items():
        assert "unrendered template" in where[key] and "render it first" in where[key]
    passed_over = {(str(Path(e.source or "").relative_to(REALWORLD)), e.line): str(e) for e in loaded.not_objects}
    assert set(passed_over) == set(NOT_OBJECTS.items())
    for key in NOT_OBJECTS.items():
        assert passed_over[key].endswith("not a Kubernetes object: no apiVersion and no kind")


def test_every_workload_present_is_judged(result: tuple[int, WorkloadSet]) -> None:
    _, workloads = result
    found = Counter(w.resource.kind for w in workloads.workloads)
    assert found == naive_count()
    assert found == {"Pod": 58, "ReplicationController": 36, "Deployment": 25, "StatefulSet": 4, "DaemonSet": 4}
    assert sum(len(w.pod.containers) for w in workloads.workloads) == 132
    for w in workloads.workloads:
        assert w.source.file and w.source.line
        for c in w.pod.containers:
            assert c.image and c.source.line and c.source.line >= w.source.line
    images = {c.image for w in workloads.workloads for c in w.pod.containers}
    assert len(images) == 63  # 64 in the README: vitess/etcd is only in an unreadable template
    assert {"<YOUR-CONTAINER>", "<image_url>"} <= images  # placeholders are the validator's to report
    assert workloads.skipped["Service"] == 60 and sum(workloads.skipped.values()) == 155


def test_a_few_by_hand(result: tuple[int, WorkloadSet]) -> None:
    _, workloads = result
    by_file = {}
    for w in workloads.workloads:
        by_file.setdefault(str(Path(w.source.file or "").relative_to(REALWORLD)), []).append(w)
    (sts,) = by_file["_archived/cockroachdb/cockroachdb-statefulset.yaml"]
    assert str(sts.resource) == "StatefulSet cockroachdb"
    assert sts.source.line == 69  # the third document; "---" is line 68
    assert [c.source.line for c in sts.pod.containers] == [100, 127]
    assert [c.kind.value for c in sts.pod.containers] == ["initContainer", "container"]
    (guestbook,) = by_file["_archived/storage/vitess/guestbook-controller.yaml"]
    assert guestbook.resource.kind == "ReplicationController"
    assert guestbook.pod.containers[0].image == "vitess/guestbook:v2.0.0-alpha5"
