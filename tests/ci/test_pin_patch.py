"""``canrun check --format patch|jsonpatch``: pin mode's change for CI, applied and judged again.

Against the real registry: ``mislabeled`` is an index whose arm64 entry holds x86-64 busybox,
``busybox`` runs on both platforms, ``whiteout`` runs on neither.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from tests.ci.cli_support import check
from tests.support.images import Catalogue

pytestmark = pytest.mark.registry

PLATFORMS = "linux/amd64,linux/arm64"

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: shop
spec:
  selector:
    matchLabels: {{app: api}}
  template:
    metadata:
      labels: {{app: api}}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions:
                  - {{key: pool, operator: In, values: [general]}}
      containers:
        - name: api
          image: {mislabeled}
---
apiVersion: v1
kind: Pod
metadata:
  name: fine
  namespace: shop
spec:
  containers:
    - name: app
      image: {busybox}
---
apiVersion: v1
kind: Pod
metadata:
  name: broken
  namespace: shop
spec:
  containers:
    - name: server
      image: {whiteout}
"""


@pytest.fixture
def manifest(tmp_path: Path, catalogue: Catalogue) -> Path:
    if "mislabeled" not in catalogue:
        pytest.skip("the arm64 images need busybox-static:arm64")
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST.format(mislabeled=catalogue.ref("mislabeled"), busybox=catalogue.ref("busybox"),
                                    whiteout=catalogue.ref("whiteout")))
    return path


def args(catalogue: Catalogue, path: Path, *extra: str) -> list[str]:
    return ["-f", str(path), "--platform", PLATFORMS, "--insecure-registry", catalogue.host, *extra]


def merge(obj: Any, patch: Any) -> Any:
    """A strategic merge for what the patch holds: maps merge, lists without a merge key are replaced."""
    if isinstance(obj, dict) and isinstance(patch, dict):
        out = dict(obj)
        for key, value in patch.items():
            out[key] = merge(obj.get(key), value) if key in obj else value
        return out
    return patch


def test_patch_pins_the_deployment_and_the_result_checks_clean(manifest: Path, catalogue: Catalogue,
                                                               tmp_path: Path) -> None:
    r = check(*args(catalogue, manifest, "--format", "patch"))
    assert r.code == 1  # the findings still stand until the patch is applied
    docs = [d for d in yaml.safe_load_all(r.out) if d]
    assert len(docs) == 1, r.out
    [patch] = docs
    assert patch["kind"] == "Deployment" and patch["metadata"]["name"] == "api"
    assert "pinned to linux/amd64" in r.out and "not pinned, no platform runs it" in r.out  # the broken pod
    objects = list(yaml.safe_load_all(manifest.read_text()))
    objects[0] = merge(objects[0], patch)
    terms = objects[0]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["general"]},
                                           {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]
    kubernetes_validate.validate(objects[0], kubernetes_validate.utils.latest_version(), strict=True)
    patched = tmp_path / "patched.yaml"
    patched.write_text(yaml.safe_dump_all(objects[:2]))
    again = check(*args(catalogue, patched, "--format", "json"))
    assert again.code == 0, again.out


def test_jsonpatch_is_the_webhooks_change(manifest: Path, catalogue: Catalogue) -> None:
    r = check(*args(catalogue, manifest, "--format", "jsonpatch"))
    [ops] = [d for d in yaml.safe_load_all(r.out) if d]
    original = next(yaml.safe_load_all(manifest.read_text()))
    result = jsonpatch.apply_patch(copy.deepcopy(original), ops)
    kubernetes_validate.validate(result, kubernetes_validate.utils.latest_version(), strict=True)
    meta = result["spec"]["template"]["metadata"]["annotations"]
    assert meta["canrun.io/pinned"] == "linux/amd64"


def test_nothing_to_pin_prints_an_empty_stream(tmp_path: Path, catalogue: Catalogue) -> None:
    if "busybox" not in catalogue:
        pytest.skip("the arm64 images need busybox-static:arm64")
    path = tmp_path / "ok.yaml"
    path.write_text(MANIFEST.split("---\n")[1].format(busybox=catalogue.ref("busybox")))
    r = check(*args(catalogue, path, "--format", "patch"))
    assert r.code == 0 and r.out.strip() == ""
