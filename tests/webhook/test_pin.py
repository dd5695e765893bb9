"""Pin mode through the real server: /mutate patches, the patched object validated and judged again.

The images are real (tests/support/images.py): ``mislabeled`` is an index whose arm64 entry holds an
x86-64 busybox (an index-only pinner would keep arm64), ``amd64-only`` has no arm64 build at all,
``busybox`` runs on both, ``whiteout`` runs nowhere.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from canrun.kube.pinning import PINNED_ANNOTATION, PINNED_REASON_ANNOTATION
from tests.support.images import Catalogue
from tests.webhook.conftest import StartWebhook, Webhook, container, deployment, pod, review

pytestmark = pytest.mark.registry

BOTH = ("linux/amd64", "linux/arm64")


@pytest.fixture
def pinning(start_webhook: StartWebhook, catalogue: Catalogue) -> Webhook:
    if "mislabeled" not in catalogue:
        pytest.skip("the arm64 images need busybox-static:arm64")
    return start_webhook(registries=(catalogue.host,), mode="pin", platforms=BOTH)


def patched(obj: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(answer["patch"]))
    result = jsonpatch.apply_patch(obj, ops)
    kubernetes_validate.validate(result, kubernetes_validate.utils.latest_version(), strict=True)
    return result


def arch_terms(obj: dict[str, Any]) -> list[list[str]]:
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [[v for r in t["matchExpressions"] if r["key"] == "kubernetes.io/arch" for v in r["values"]]
            for t in terms]


@pytest.mark.parametrize("image", ["mislabeled", "amd64-only"])
def test_pins_where_the_process_can_exec_and_validation_then_passes(pinning: Webhook, catalogue: Catalogue,
                                                                   image: str) -> None:
    obj = deployment([container(catalogue.ref(image))])
    answer = pinning.mutate(review(obj))
    assert answer["allowed"] is True
    assert answer["warnings"][0].startswith("canrun pinned to linux/amd64: cannot exec on linux/arm64")
    result = patched(obj, answer)
    assert arch_terms(result) == [["amd64"]]
    meta = result["spec"]["template"]["metadata"]["annotations"]
    assert meta[PINNED_ANNOTATION] == "linux/amd64" and meta[PINNED_REASON_ANNOTATION]
    # the validating webhook runs after mutation and judges the pinned object: nothing left to fail
    validated = pinning.review(review(result))
    assert validated["allowed"] is True and "warnings" not in validated
    # a second admission of the pinned object is the same object: no patch
    again = pinning.mutate(review(result))
    assert again["allowed"] is True and "patch" not in again


def test_the_unpinned_object_is_denied_by_the_validating_answer_of_pin_mode(pinning: Webhook,
                                                                           catalogue: Catalogue) -> None:
    answer = pinning.review(review(deployment([container(catalogue.ref("mislabeled"))])))
    assert answer["allowed"] is False and "linux/arm64" in answer["status"]["message"]


def test_every_container_counts(pinning: Webhook, catalogue: Catalogue) -> None:
    obj = pod([container(catalogue.ref("busybox"))],
              initContainers=[container(catalogue.ref("amd64-only"), name="init")])
    result = patched(obj, pinning.mutate(review(obj)))
    assert arch_terms(result) == [["amd64"]]


def test_runs_everywhere_no_patch_and_runs_nowhere_denied(pinning: Webhook, catalogue: Catalogue) -> None:
    fine = pinning.mutate(review(deployment([container(catalogue.ref("busybox"))])))
    assert fine["allowed"] is True and "patch" not in fine and "warnings" not in fine
    broken = pinning.mutate(review(deployment([container(catalogue.ref("whiteout"), name="server")])))
    assert broken["allowed"] is False and "command-not-found" in broken["status"]["message"]
    assert "patch" not in broken


def test_the_users_affinity_is_intersected_not_replaced(pinning: Webhook, catalogue: Catalogue) -> None:
    user = [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["batch"]}]},
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["spot"]}]}]
    obj = pod([container(catalogue.ref("mislabeled"))],
              affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                  "nodeSelectorTerms": user}}})
    result = patched(obj, pinning.mutate(review(obj)))
    terms = result["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert [t["matchExpressions"][0]["values"] for t in terms] == [["batch"], ["spot"]]
    assert arch_terms(result) == [["amd64"], ["amd64"]]


def test_a_node_selector_that_already_excludes_the_bad_platform_gets_no_patch(pinning: Webhook,
                                                                             catalogue: Catalogue) -> None:
    obj = pod([container(catalogue.ref("mislabeled"))], nodeSelector={"kubernetes.io/arch": "amd64"})
    answer = pinning.mutate(review(obj))
    assert answer["allowed"] is True and "patch" not in answer


def test_update_without_relevant_change_and_pods_of_a_pinned_template(pinning: Webhook,
                                                                     catalogue: Catalogue) -> None:
    obj = deployment([container(catalogue.ref("mislabeled"))])
    relabelled = json.loads(json.dumps(obj))
    relabelled["metadata"]["labels"] = {"team": "shop"}
    answer = pinning.mutate(review(relabelled, operation="UPDATE", old=obj))
    assert "patch" not in answer
    child = pod([container(catalogue.ref("mislabeled"))],
                annotations={PINNED_ANNOTATION: "linux/amd64"})
    child["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                             "uid": "u", "controller": True}]
    assert "patch" not in pinning.mutate(review(child))


def test_other_modes_never_patch(start_webhook: StartWebhook, catalogue: Catalogue) -> None:
    if "mislabeled" not in catalogue:
        pytest.skip("the arm64 images need busybox-static:arm64")
    hook = start_webhook(registries=(catalogue.host,), mode="enforce", platforms=BOTH)
    answer = hook.mutate(review(deployment([container(catalogue.ref("mislabeled"))])))
    assert answer == {"uid": answer["uid"], "allowed": True}


def test_an_image_not_read_in_time_pins_nothing(start_webhook: StartWebhook, catalogue: Catalogue,
                                                slow_proxy: Any) -> None:
    slow_proxy.delay = 3.0
    hook = start_webhook(registries=(slow_proxy.host,), mode="pin", platforms=BOTH, deadline=0.5)
    answer = hook.mutate(review(deployment([container(slow_proxy.host + "/" + catalogue.ref("amd64-only").split("/", 1)[1])])))
    assert answer["allowed"] is True and "patch" not in answer
    assert answer["warnings"][0].startswith("canrun: not pinned, not verified within 0.5s")
