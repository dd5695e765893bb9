"""The operations canrun needs from a cluster, over one ``ApiTransport``.

Choices worth knowing (also in docs/configuration.md):

* Pull secrets follow the kubelet: a pod's ``imagePullSecrets`` are the ones
  used; the ServiceAccount's are used only when the pod lists none (that is
  exactly when the ServiceAccount admission plugin copies them into the pod).
  Missing or malformed secrets are skipped; their content is never logged.
* Events are ``core/v1`` Events (``kubectl get events`` and ``kubectl describe``
  show them everywhere), aggregated the client-go way: one Event per
  (object, reason, message) whose ``count`` and ``lastTimestamp`` grow.
* The caBundle patch is a JSON patch with a ``test`` of each webhook's name, so
  it never overwrites a webhook list someone reordered since we read it, and it
  needs only the ``patch`` verb.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from kubernetes import client as k8s_client

from canrun.errors import ClusterConflict, ClusterError, UsageError
from canrun.kube.client.transport import KNOWN, ApiTransport, KindNotServed, ResourceInfo, Snapshot, WatchStream
from canrun.kube.client.ttlcache import TTLCache
from canrun.kube.client.watchers import PodWatcher
from canrun.kube.scheduling import NodeInfo, node_info
from canrun.registry.auth import Keychain

log = logging.getLogger("canrun.kube")

#: Seconds for one API request (connect + read); a hung API server must not hang admission.
DEFAULT_TIMEOUT = 10.0
NAMESPACE_TTL = 30.0
KEYCHAIN_TTL = 60.0
EVENT_MESSAGE_MAX = 1024
COMPONENT = "canrun"

_NAMESPACES = KNOWN[("v1", "Namespace")]
_SECRETS = KNOWN[("v1", "Secret")]
_SERVICE_ACCOUNTS = KNOWN[("v1", "ServiceAccount")]
_EVENTS = KNOWN[("v1", "Event")]
_WEBHOOK_CONFIGS = {kind: KNOWN[("admissionregistration.k8s.io/v1", kind)]
                    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")}


def _now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    """canrun's whole use of the Kubernetes API, over one ``ApiClient``."""

    def __init__(self, api_client: k8s_client.ApiClient, *, timeout: float = DEFAULT_TIMEOUT,
                 namespace_ttl: float = NAMESPACE_TTL, keychain_ttl: float = KEYCHAIN_TTL,
                 clock: Callable[[], float] = time.monotonic, instance: str | None = None) -> None:
        self.api_client = api_client
        self.api = ApiTransport(api_client, timeout)
        self.instance = instance or os.environ.get("POD_NAME") or os.uname().nodename
        self._namespaces = TTLCache(namespace_ttl, clock)
        self._keychains = TTLCache(keychain_ttl, clock)
        self._discovered: dict[tuple[str, str], ResourceInfo] = {}
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return self.api.host

    @property
    def timeout(self) -> float:
        return self.api.timeout

    def close(self) -> None:
        self.api_client.close()

    # -- generic objects

    def resource(self, api_version: str, kind: str) -> ResourceInfo:
        """Where ``kind`` lives: a built-in table first, then the API server's discovery documents."""
        known = KNOWN.get((api_version, kind))
        if known is not None:
            return known
        with self._lock:
            if (api_version, kind) in self._discovered:
                return self._discovered[(api_version, kind)]
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        doc = self.api.call("GET", path, what=f"discovering {api_version}", allow_404=True)
        for res in (doc or {}).get("resources") or []:
            if res.get("kind") == kind and "/" not in str(res.get("name")):
                info = ResourceInfo(api_version, kind, str(res["name"]), bool(res.get("namespaced")))
                with self._lock:
                    self._discovered[(api_version, kind)] = info
                return info
        raise KindNotServed(f"the Kubernetes API at {self.host} does not serve {kind} in {api_version} "
                            "(is its CRD installed?)")

    def get_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """One object as the API returns it, or None when it does not exist."""
        res = self.resource(api_version, kind)
        where = f"{namespace}/{name}" if res.namespaced and namespace else name
        return self.api.call("GET", res.path(namespace, name), what=f"reading {kind} {where}", allow_404=True)

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None,
                     label_selector: str | None = None) -> list[dict[str, Any]]:
        """Every object of a kind (in ``namespace``, or all), paged; items carry apiVersion and kind."""
        return self.list_snapshot(api_version, kind, namespace, label_selector).items

    # -- list and watch (what the watchers are built on)

    def list_snapshot(self, api_version: str, kind: str, namespace: str | None = None,
                      label_selector: str | None = None) -> Snapshot:
        """Every object of a kind and the resourceVersion of that snapshot, to ``watch`` from."""
        res = self.resource(api_version, kind)
        query = [("labelSelector", label_selector)] if label_selector else []
        items: list[dict[str, Any]] = []
        rv = ""
        for page in self.api.pages(res.path(namespace), query=query,
                                   what=f"listing {res.plural}" + (f" in {namespace}" if namespace else "")):
            for item in page.get("items") or []:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                items.append(item)
            rv = str((page.get("metadata") or {}).get("resourceVersion") or "")
        return Snapshot(items, rv)

    def watch(self, api_version: str, kind: str, resource_version: str, timeout_seconds: int = 300) -> WatchStream:
        """The changes to every object of a kind after ``resource_version`` (ADDED, MODIFIED, DELETED,
        BOOKMARK and ERROR events, as the API server sends them); the server ends it after
        ``timeout_seconds``."""
        res = self.resource(api_version, kind)
        return self.api.watch(res.path(), what=f"watching {res.plural}", resource_version=resource_version,
                              timeout_seconds=timeout_seconds)

    def apply_object(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj``, or replace the existing one of that name: the same call twice leaves one object."""
        try:
            api_version, kind, name = obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
        except (KeyError, TypeError) as exc:
            raise UsageError("apply_object needs apiVersion, kind and metadata.name") from exc
        res = self.resource(api_version, kind)
        namespace = (obj.get("metadata") or {}).get("namespace")
        if res.namespaced and not namespace:
            raise UsageError(f"{kind} {name} needs metadata.namespace")
        what = f"writing {kind} {namespace + '/' if res.namespaced else ''}{name}"
        body = json.loads(json.dumps(obj))
        body["metadata"].pop("resourceVersion", None)
        for _ in range(5):
            try:
                return self.api.call("POST", res.path(namespace), body=body, what=what)
            except ClusterConflict:
                pass  # exists: replace it below
            current = self.api.call("GET", res.path(namespace, name), what=what, allow_404=True)
            if current is None:
                continue  # deleted between our POST and GET: create again
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                return self.api.call("PUT", res.path(namespace, name), body=body, what=what)
            except ClusterConflict:
                body["metadata"].pop("resourceVersion", None)
                continue  # changed under us: start over
        raise ClusterConflict(f"conflict while {what}: it kept changing under us")

    # -- nodes

    def list_nodes(self) -> list[NodeInfo]:
        """Every node with a known platform, as the scheduling filter sees nodes."""
        return [n for n in (node_info(o) for o in self.list_objects("v1", "Node")) if n is not None]

    def watch_pods(self, on_pods: Callable[[list[dict[str, Any]]], None]) -> PodWatcher:
        """Start a ``PodWatcher`` handing every pod, then each new one, to ``on_pods``; ``stop()`` ends it."""
        return PodWatcher(self, on_pods).start()

    # -- the cluster's own networks (for the webhook's SSRF guard)

    def service_cidrs(self) -> list[str]:
        """The cluster's Service IP ranges, from its ``ServiceCIDR`` objects; [] when the API has none.

        ``networking.k8s.io`` ServiceCIDR is GA in Kubernetes 1.33 (beta from 1.31, off by
        default before); older API servers only know their range as a command-line flag, so
        an empty answer means "not discoverable here" (give ``--blocked-network`` then) and
        is never an error.  A 403 (RBAC without ``servicecidrs: list``) is treated the same,
        logged once by the caller.
        """
        for version in ("networking.k8s.io/v1", "networking.k8s.io/v1beta1"):
            try:
                items = self.list_objects(version, "ServiceCIDR")
            except KindNotServed:
                continue
            cidrs = [str(c) for item in items for c in ((item.get("spec") or {}).get("cidrs") or [])
                     if isinstance(c, str)]
            if cidrs or items:
                return list(dict.fromkeys(cidrs))
        return []

    # -- namespaces

    def namespace_labels(self, name: str) -> dict[str, str]:
        """The labels of a namespace ({} when it does not exist), cached for a short while."""
        hit, labels = self._namespaces.get(name)
        if hit:
            return dict(labels)
        obj = self.api.call("GET", _NAMESPACES.path(None, name), what=f"reading namespace {name}", allow_404=True)
        labels = {str(k): str(v) for k, v in (((obj or {}).get("metadata") or {}).get("labels") or {}).items()}
        self._namespaces.put(name, labels)
        return dict(labels)

    # -- pull credentials

    def pull_keychain(self, namespace: str, secret_names: Sequence[str],
                      service_account: str | None = None) -> Keychain:
        """The registry credentials the kubelet would use for a pod, as a ``Keychain``.

        ``secret_names`` are the pod's ``imagePullSecrets``; when it has none, those of
        its ServiceAccount (``default`` when unnamed) stand in, as the ServiceAccount
        admission plugin would have copied them.  Earlier secrets win for a host.
        """
        sa = service_account or "default"
        key = (namespace, tuple(secret_names), sa)
        hit, chain = self._keychains.get(key)
        if hit:
            return chain
        names = [n for n in secret_names if n]
        if not secret_names:
            account = self.api.call("GET", _SERVICE_ACCOUNTS.path(namespace, sa),
                                 what=f"reading serviceaccount {namespace}/{sa}", allow_404=True)
            names = [str(ref.get("name")) for ref in (account or {}).get("imagePullSecrets") or []
                     if isinstance(ref, Mapping) and ref.get("name")]
        chain = Keychain()
        for name in dict.fromkeys(names):
            secret = self.api.call("GET", _SECRETS.path(namespace, name),
                                what=f"reading pull secret {namespace}/{name}", allow_404=True)
            if secret is None:
                log.info("pull secret %s/%s not found; skipped", namespace, name)
                continue
            data = secret.get("data") or {}
            if secret.get("type") not in ("kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg") or not (
                    ".dockerconfigjson" in data or ".dockercfg" in data):
                log.info("secret %s/%s is not an image pull secret (type %s); skipped",
                         namespace, name, secret.get("type"))
                continue
            try:
                chain = chain.merge(Keychain.from_pull_secret(data))
            except UsageError:
                log.warning("pull secret %s/%s is not a valid docker config; skipped", namespace, name)
        self._keychains.put(key, chain)
        return chain

    # -- events

    def record_event(self, involved: Mapping[str, Any], reason: str, message: str, type: str = "Warning") -> None:
        """Record a core/v1 Event on ``involved`` (apiVersion, kind, namespace, name, uid).

        The same (object, reason, message) again bumps ``count`` and ``lastTimestamp``
        on one Event rather than adding another, as client-go's recorder does.
        Cluster-scoped objects get their Events in ``default``, like kubectl shows them.
        """
        name = str(involved.get("name") or "")
        namespace = str(involved.get("namespace") or "") or "default"
        message = message if len(message) <= EVENT_MESSAGE_MAX else message[:EVENT_MESSAGE_MAX - 1] + "…"
        digest = hashlib.sha256("\0".join(str(involved.get(k) or "") for k in (
            "apiVersion", "kind", "namespace", "name", "uid")).encode() + f"\0{type}\0{reason}\0{message}".encode())
        event_name = f"{name[:200]}.{digest.hexdigest()[:16]}"
        now = _now_rfc3339()
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": event_name, "namespace": namespace},
            "involvedObject": {k: involved[k] for k in ("apiVersion", "kind", "namespace", "name", "uid")
                               if involved.get(k)},
            "reason": reason, "message": message, "type": type,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT, "reportingInstance": self.instance[:128],
            "count": 1, "firstTimestamp": now, "lastTimestamp": now,
        }
        what = f"recording event {reason} on {involved.get('kind')} {name}"
        try:
            self.api.call("POST", _EVENTS.path(namespace), body=event, what=what)
            return
        except ClusterConflict:
            pass
        current = self.api.call("GET", _EVENTS.path(namespace, event_name), what=what, allow_404=True)
        count = int((current or {}).get("count") or 1) + 1
        self.api.call("PATCH", _EVENTS.path(namespace, event_name), what=what,
                   body={"count": count, "lastTimestamp": now}, content_type="application/merge-patch+json",
                   allow_404=True)

    # -- webhook configuration and secrets (certificates)

    def patch_webhook_ca_bundle(self, webhook_config_name: str, ca_pem: bytes, *,
                                kind: str = "ValidatingWebhookConfiguration", missing_ok: bool = False) -> bool:
        """Set every webhook's ``clientConfig.caBundle`` in the named configuration; False if already set.

        ``missing_ok``: a configuration that does not exist is not an error (an optional component's, such
        as pin mode's MutatingWebhookConfiguration) and nothing is patched.
        """
        bundle = base64.b64encode(ca_pem).decode()
        info = _WEBHOOK_CONFIGS[kind]
        what = f"patching the caBundle of {kind} {webhook_config_name}"
        for _ in range(3):
            config = self.api.call("GET", info.path(None, webhook_config_name), what=what, allow_404=True)
            if config is None:
                if missing_ok:
                    return False
                raise ClusterError(f"{kind} {webhook_config_name} not found (apply the manifests first)")
            ops: list[dict[str, Any]] = []
            for i, hook in enumerate(config.get("webhooks") or []):
                if (hook.get("clientConfig") or {}).get("caBundle") != bundle:
                    ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")})
                    ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle})
            if not ops:
                return False
            try:
                self.api.call("PATCH", info.path(None, webhook_config_name), body=ops, what=what,
                           content_type="application/json-patch+json")
                return True
            except ClusterError as exc:
                if exc.status not in (409, 422):
                    raise
        raise ClusterConflict(f"conflict while {what}: the configuration kept changing")

    def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's data, decoded; None when it does not exist."""
        obj = self.get_object("v1", "Secret", name, namespace)
        if obj is None:
            return None
        try:
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        except (ValueError, TypeError) as exc:
            raise ClusterError(f"secret {namespace}/{name} holds data that is not base64") from exc

    def apply_secret(self, namespace: str, name: str, data: Mapping[str, bytes], type: str = "Opaque", *,
                     labels: Mapping[str, str] | None = None, create_only: bool = False,
                     resource_version: str | None = None) -> dict[str, Any]:
        """Write a Secret. Plain call: create or replace. ``create_only``: ClusterConflict if it exists.

        ``resource_version``: replace only that version (ClusterConflict if it changed) —
        how two replicas rotating the same certificate avoid overwriting each other.
        """
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Secret", "type": type,
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        what = f"writing secret {namespace}/{name}"
        if create_only:
            return self.api.call("POST", _SECRETS.path(namespace), body=body, what=what)
        if resource_version is not None:
            body["metadata"]["resourceVersion"] = resource_version
            return self.api.call("PUT", _SECRETS.path(namespace, name), body=body, what=what)
        return self.apply_object(body)
