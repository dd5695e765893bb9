"""AdmissionReview bodies as the API server sends them, for every test that drives the webhook's service."""

from __future__ import annotations

import uuid
from typing import Any

#: kind -> (group, version, resource) for objects given without an apiVersion to read it from.
_GVR = {"Pod": ("", "v1", "pods"), "Deployment": ("apps", "v1", "deployments"),
        "CronJob": ("batch", "v1", "cronjobs")}


def _gvr(kind: str, obj: dict[str, Any]) -> tuple[str, str, str]:
    api_version = obj.get("apiVersion")
    if kind not in _GVR and isinstance(api_version, str):
        group, _, version = api_version.rpartition("/")
        return group, version, kind.lower() + "s"
    return _GVR[kind]


def review(obj: dict[str, Any] | None, *, operation: str = "CREATE", old: dict[str, Any] | None = None,
           sub: str | None = None, dry_run: bool = False, kind: str | None = None,
           namespace: str | None = None) -> dict[str, Any]:
    """A ``admission.k8s.io/v1`` review of ``obj`` (and ``old`` for UPDATE), with a fresh uid."""
    source = obj or old or {}
    kind = kind or source.get("kind", "Pod")
    group, version, resource = _gvr(kind, source)
    meta = source.get("metadata", {})
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()), "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "name": meta.get("name", ""), "namespace": namespace or meta.get("namespace", "default"),
        "operation": operation, "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
        "object": obj, "oldObject": old, "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    if sub:
        request["subResource"] = sub
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
