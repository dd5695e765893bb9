"""Everything canrun asks of the Kubernetes API, through the official ``kubernetes`` client.

This is the only module that imports ``kubernetes``; the webhook, ``check
--kubeconfig`` and the audit get a ``Cluster`` handed to them and see plain
dicts and canrun's own types (``NodeInfo``, ``Keychain``).  Why one module:
the client's errors, timeouts and threading rules are handled once, here, and
every failure leaves as a ``ClusterError`` with a one-line message.

Objects are read and written as raw JSON (camelCase dicts, exactly as the API
server sends them) via ``ApiClient.param_serialize``/``call_api``, rather than
through the generated model classes: the callers want dicts, and this keeps
custom resources (PolicyReport) on the same path as built-in ones.  The client
is synchronous; async callers use ``asyncio.to_thread``.  The urllib3 pool
behind one ``ApiClient`` is thread-safe, and so are the caches here.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from canrun import __version__
from canrun.errors import ClusterConflict, ClusterError, UsageError
from canrun.kube.scheduling import NodeInfo, NodePool
from canrun.registry.auth import Keychain

log = logging.getLogger("canrun.kube")

#: Seconds for one API request (connect + read); a hung API server must not hang admission.
DEFAULT_TIMEOUT = 10.0
NAMESPACE_TTL = 30.0
KEYCHAIN_TTL = 60.0
EVENT_MESSAGE_MAX = 1024
COMPONENT = "canrun"

_SA_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s_client.ApiClient:
    """An ``ApiClient`` for the cluster canrun runs in, or the one a kubeconfig names.

    In a pod (``KUBERNETES_SERVICE_HOST`` set, ServiceAccount token mounted) and with
    neither argument given, the in-cluster config is used (its token is re-read as
    the kubelet rotates it).  Otherwise ``kubeconfig``, else ``$KUBECONFIG`` (a
    ``:``-separated list is merged as kubectl does), else ``~/.kube/config``.
    """
    configuration = k8s_client.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST") and _SA_TOKEN.exists():
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ClusterError(f"cannot use the in-cluster Kubernetes config: {exc}") from exc
    else:
        path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        files = [p for p in path.split(os.pathsep) if p]
        if not any(Path(os.path.expanduser(p)).is_file() for p in files):
            raise ClusterError(f"no kubeconfig at {path}: pass --kubeconfig or set KUBECONFIG")
        try:
            k8s_config.load_kube_config(config_file=path, context=context, client_configuration=configuration,
                                        persist_config=False)
        except (ConfigException, OSError, ValueError, TypeError) as exc:
            raise ClusterError(f"cannot load kubeconfig {path}: {exc}") from exc
    api_client = k8s_client.ApiClient(configuration)
    api_client.user_agent = f"canrun/{__version__}"
    return api_client


class KindNotServed(ClusterError):
    """The API server's discovery does not list the kind (an older cluster, or a CRD not installed)."""


# --- plain helpers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ResourceInfo:
    """Where a kind lives in the REST tree."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        return base


_KNOWN = {(r.api_version, r.kind): r for r in (
    ResourceInfo("v1", "Node", "nodes", False),
    ResourceInfo("v1", "Namespace", "namespaces", False),
    ResourceInfo("v1", "Pod", "pods", True),
    ResourceInfo("v1", "Secret", "secrets", True),
    ResourceInfo("v1", "ServiceAccount", "serviceaccounts", True),
    ResourceInfo("v1", "Event", "events", True),
    ResourceInfo("v1", "ConfigMap", "configmaps", True),
    ResourceInfo("v1", "Service", "services", True),
    ResourceInfo("v1", "ReplicationController", "replicationcontrollers", True),
    ResourceInfo("v1", "PodTemplate", "podtemplates", True),
    ResourceInfo("apps/v1", "Deployment", "deployments", True),
    ResourceInfo("apps/v1", "ReplicaSet", "replicasets", True),
    ResourceInfo("apps/v1", "StatefulSet", "statefulsets", True),
    ResourceInfo("apps/v1", "DaemonSet", "daemonsets", True),
    ResourceInfo("batch/v1", "Job", "jobs", True),
    ResourceInfo("batch/v1", "CronJob", "cronjobs", True),
    ResourceInfo("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration",
                 "validatingwebhookconfigurations", False),
)}

_NODES = _KNOWN[("v1", "Node")]
_NAMESPACES = _KNOWN[("v1", "Namespace")]
_SECRETS = _KNOWN[("v1", "Secret")]
_SERVICE_ACCOUNTS = _KNOWN[("v1", "ServiceAccount")]
_EVENTS = _KNOWN[("v1", "Event")]
_VWC = _KNOWN[("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")]


def node_info(node: Mapping[str, Any]) -> NodeInfo | None:
    """A Node object as the scheduler's view of it, or None when it reports no architecture.

    ``NodeInfo.from_object`` applies the rules (the ``kubernetes.io/os``/``arch`` labels
    that nodeSelectors match win; ``status.nodeInfo``, what the kubelet reports, fills
    in).  Nodes report no CPU variant: ``Platform`` applies containerd's default
    (``arm`` means ``arm/v7``).  A node that reports no architecture at all is left
    out rather than guessed.
    """
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    info = (node.get("status") or {}).get("nodeInfo") or {}
    if not (labels.get("kubernetes.io/arch") or labels.get("beta.kubernetes.io/arch") or info.get("architecture")):
        log.warning("node %s reports no architecture; left out of the node pool", meta.get("name"))
        return None
    return NodeInfo.from_object(node)


def _now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_message(exc: ApiException) -> str:
    """The API server's own ``Status.message`` (it names verb, resource and user), or the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except (ValueError, TypeError):
        pass
    return str(exc.reason or "no reason given")


class _TTLCache:
    """A small thread-safe cache whose entries expire; bounded so a busy webhook cannot grow it forever."""

    def __init__(self, ttl: float, clock: Callable[[], float], max_entries: int = 1024) -> None:
        self.ttl, self.clock, self.max_entries = ttl, clock, max_entries
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> tuple[bool, Any]:
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] <= self.clock():
                self._data.pop(key, None)
                return False, None
            return True, hit[1]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            if len(self._data) >= self.max_entries:
                now = self.clock()
                for k in [k for k, (exp, _) in self._data.items() if exp <= now]:
                    del self._data[k]
                while len(self._data) >= self.max_entries:
                    del self._data[next(iter(self._data))]
            self._data[key] = (self.clock() + self.ttl, value)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


# --- the cluster -----------------------------------------------------------------------------

class Cluster:
    """canrun's whole use of the Kubernetes API, over one ``ApiClient``."""

    def __init__(self, api_client: k8s_client.ApiClient, *, timeout: float = DEFAULT_TIMEOUT,
                 namespace_ttl: float = NAMESPACE_TTL, keychain_ttl: float = KEYCHAIN_TTL,
                 clock: Callable[[], float] = time.monotonic, instance: str | None = None) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.instance = instance or os.environ.get("POD_NAME") or os.uname().nodename
        self._namespaces = _TTLCache(namespace_ttl, clock)
        self._keychains = _TTLCache(keychain_ttl, clock)
        self._discovered: dict[tuple[str, str], ResourceInfo] = {}
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def close(self) -> None:
        self.api_client.close()

    # -- transport

    def _call(self, method: str, path: str, *, what: str, query: Sequence[tuple[str, Any]] = (),
              body: Any = None, content_type: str | None = None, allow_404: bool = False,
              timeout: float | tuple[float, float] | None = None, stream: bool = False) -> Any:
        """One request; JSON body back (None for an allowed 404), or the raw urllib3 response if ``stream``."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        try:
            params = self.api_client.param_serialize(method, path, query_params=list(query),
                                                     header_params=headers, body=body,
                                                     auth_settings=["BearerToken"])
            resp = self.api_client.call_api(*params, _request_timeout=timeout or self.timeout)
            if stream and 200 <= resp.status <= 299:
                return resp.response
            data = resp.read()
            if not 200 <= resp.status <= 299:
                if resp.status == 404 and allow_404:
                    return None
                raise ApiException(http_resp=resp)
        except ApiException as exc:
            raise self._api_error(exc, what) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterError(f"Kubernetes API at {self.host} unreachable while {what}: "
                               f"{type(exc).__name__}: {exc}") from exc
        try:
            return json.loads(data) if data else {}
        except ValueError as exc:
            raise ClusterError(f"Kubernetes API at {self.host} sent a body that is not JSON while {what}") from exc

    def _api_error(self, exc: ApiException, what: str) -> ClusterError:
        status = int(exc.status or 0)
        message = _status_message(exc)
        if status == 401:
            return ClusterError(f"Kubernetes API refused canrun's credentials while {what} (401 Unauthorized)",
                                status=status)
        if status == 403:
            return ClusterError(f"forbidden while {what}: {message} (check canrun's RBAC)", status=status)
        if status == 409:
            return ClusterConflict(f"conflict while {what}: {message}", status=status)
        return ClusterError(f"Kubernetes API answered {status} while {what}: {message}", status=status)

    # -- generic objects

    def resource(self, api_version: str, kind: str) -> ResourceInfo:
        """Where ``kind`` lives: a built-in table first, then the API server's discovery documents."""
        known = _KNOWN.get((api_version, kind))
        if known is not None:
            return known
        with self._lock:
            if (api_version, kind) in self._discovered:
                return self._discovered[(api_version, kind)]
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        doc = self._call("GET", path, what=f"discovering {api_version}", allow_404=True)
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
        return self._call("GET", res.path(namespace, name), what=f"reading {kind} {where}", allow_404=True)

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None,
                     label_selector: str | None = None) -> list[dict[str, Any]]:
        """Every object of a kind (in ``namespace``, or all), paged; items carry apiVersion and kind."""
        res = self.resource(api_version, kind)
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [("limit", 500)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = self._call("GET", res.path(namespace), query=query,
                              what=f"listing {res.plural}" + (f" in {namespace}" if namespace else ""))
            for item in page.get("items") or []:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                items.append(item)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

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
                return self._call("POST", res.path(namespace), body=body, what=what)
            except ClusterConflict:
                pass  # exists: replace it below
            current = self._call("GET", res.path(namespace, name), what=what, allow_404=True)
            if current is None:
                continue  # deleted between our POST and GET: create again
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                return self._call("PUT", res.path(namespace, name), body=body, what=what)
            except ClusterConflict:
                body["metadata"].pop("resourceVersion", None)
                continue  # changed under us: start over
        raise ClusterConflict(f"conflict while {what}: it kept changing under us")

    # -- nodes

    def list_nodes(self) -> list[NodeInfo]:
        """Every node with a known platform, as the scheduling filter sees nodes."""
        return [n for n in (node_info(o) for o in self.list_objects("v1", "Node")) if n is not None]

    def _list_raw(self, res: ResourceInfo, *, paged: bool = False) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``res`` (all namespaces) and the list's resourceVersion, to watch from.

        ``paged`` reads 500 at a time (pods in a big cluster); every page of one list
        carries the same snapshot's resourceVersion.
        """
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [("limit", 500)] if paged else []
            if token:
                query.append(("continue", token))
            page = self._call("GET", res.path(), query=query, what=f"listing {res.plural}")
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue") if paged else None
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def _watch(self, res: ResourceInfo, resource_version: str, timeout_seconds: int) -> Any:
        query = [("watch", "true"), ("resourceVersion", resource_version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", timeout_seconds)]
        return self._call("GET", res.path(), query=query, what=f"watching {res.plural}", stream=True,
                          timeout=(self.timeout, timeout_seconds + 30))

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
        obj = self._call("GET", _NAMESPACES.path(None, name), what=f"reading namespace {name}", allow_404=True)
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
            account = self._call("GET", _SERVICE_ACCOUNTS.path(namespace, sa),
                                 what=f"reading serviceaccount {namespace}/{sa}", allow_404=True)
            names = [str(ref.get("name")) for ref in (account or {}).get("imagePullSecrets") or []
                     if isinstance(ref, Mapping) and ref.get("name")]
        chain = Keychain()
        for name in dict.fromkeys(names):
            secret = self._call("GET", _SECRETS.path(namespace, name),
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
            self._call("POST", _EVENTS.path(namespace), body=event, what=what)
            return
        except ClusterConflict:
            pass
        current = self._call("GET", _EVENTS.path(namespace, event_name), what=what, allow_404=True)
        count = int((current or {}).get("count") or 1) + 1
        self._call("PATCH", _EVENTS.path(namespace, event_name), what=what,
                   body={"count": count, "lastTimestamp": now}, content_type="application/merge-patch+json",
                   allow_404=True)

    # -- webhook configuration and secrets (certificates)

    def patch_webhook_ca_bundle(self, webhook_config_name: str, ca_pem: bytes) -> bool:
        """Set every webhook's ``clientConfig.caBundle`` in the named configuration; False if already set."""
        bundle = base64.b64encode(ca_pem).decode()
        what = f"patching the caBundle of ValidatingWebhookConfiguration {webhook_config_name}"
        for _ in range(3):
            config = self._call("GET", _VWC.path(None, webhook_config_name), what=what, allow_404=True)
            if config is None:
                raise ClusterError(f"ValidatingWebhookConfiguration {webhook_config_name} not found "
                                   "(apply the manifests first)")
            ops: list[dict[str, Any]] = []
            for i, hook in enumerate(config.get("webhooks") or []):
                if (hook.get("clientConfig") or {}).get("caBundle") != bundle:
                    ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")})
                    ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle})
            if not ops:
                return False
            try:
                self._call("PATCH", _VWC.path(None, webhook_config_name), body=ops, what=what,
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
            return self._call("POST", _SECRETS.path(namespace), body=body, what=what)
        if resource_version is not None:
            body["metadata"]["resourceVersion"] = resource_version
            return self._call("PUT", _SECRETS.path(namespace, name), body=body, what=what)
        return self.apply_object(body)


# --- the node watch ----------------------------------------------------------------------------

def _lines(resp: Any) -> Iterator[bytes]:
    """Newline-delimited watch events from a streaming urllib3 response."""
    buf = b""
    for chunk in resp.stream(65536, decode_content=True):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield line
    if buf.strip():
        yield buf


class _Expired(Exception):
    """The watch's resourceVersion is gone (410): list again."""


class _ListWatch:
    """List, then watch from the list's resourceVersion; on any error back off and list again.

    Runs in a daemon thread (the client is synchronous).  Subclasses say what a list
    and an event mean (``_list``, ``_apply``).  Errors back off exponentially up to
    ``backoff_max`` seconds; each recovery is a fresh list, so no change is missed.
    """

    resource: ResourceInfo
    thread_name = "canrun-watch"

    def __init__(self, cluster: Cluster, *, watch_timeout: int = 300, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0) -> None:
        self.cluster = cluster
        self.watch_timeout = watch_timeout
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resp: Any = None
        self._resp_lock = threading.Lock()
        #: How many times the watch was re-established with a fresh list after an error or 410.
        self.resyncs = 0
        self.last_error: str | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def start(self) -> Self:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._resp_lock:
            resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()  # unblocks the reading thread at once
            except Exception:  # noqa: BLE001 - best effort on a socket we are abandoning
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- what subclasses define

    def _list(self) -> str:
        """Read the whole state; returns the resourceVersion to watch from."""
        raise NotImplementedError

    def _event(self, kind: str, obj: Mapping[str, Any]) -> None:
        """Apply one ADDED/MODIFIED/DELETED event."""
        raise NotImplementedError

    # -- internals

    def _apply(self, event: Mapping[str, Any]) -> str | None:
        """Apply one watch event; returns the resourceVersion to resume from."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired(str(obj.get("message") or "resource version expired"))
            raise ClusterError(f"{self.resource.plural} watch error: {obj.get('message') or obj}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind != "BOOKMARK":
            self._event(str(kind), obj)
        return rv

    def _run(self) -> None:
        backoff = self.backoff_initial
        first = True
        while not self._stop.is_set():
            try:
                if not first:
                    self.resyncs += 1
                first = False
                rv = self._list()
                self._ready.set()
                backoff = self.backoff_initial
                while not self._stop.is_set():
                    rv = self._watch_once(rv) or rv
            except _Expired as exc:
                self.last_error = f"watch expired: {exc}"
                log.info("%s watch expired; listing again", self.resource.plural)
            except Exception as exc:  # noqa: BLE001 - any failure means: back off, list again
                if self._stop.is_set():
                    return
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s watch failed (%s); retrying in %.1fs", self.resource.plural, self.last_error,
                            backoff)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.backoff_max)

    def _watch_once(self, rv: str) -> str:
        resp = self.cluster._watch(self.resource, rv, self.watch_timeout)
        with self._resp_lock:
            self._resp = resp
            if self._stop.is_set():  # stop() ran before the stream existed: nothing else will cut it
                resp.shutdown()
        try:
            for line in _lines(resp):
                if self._stop.is_set():
                    break
                try:
                    event = json.loads(line)
                except ValueError as exc:
                    raise ClusterError(f"{self.resource.plural} watch sent a line that is not JSON") from exc
                rv = self._apply(event) or rv
        finally:
            with self._resp_lock:
                self._resp = None
            try:
                resp.release_conn()
            except Exception:  # noqa: BLE001 - a cut connection may refuse to go back to the pool
                pass
        return rv


class NodeWatcher(_ListWatch):
    """Keeps ``pool`` equal to the cluster's nodes: list, then watch; on any error list again.

    ``pool`` is swapped whole, so readers on other threads or the event loop never see
    a half-built one.  Until the first list succeeds ``ready`` is False and ``pool`` is
    empty; the webhook decides what that means (it fails open).
    """

    resource = _NODES
    thread_name = "canrun-node-watch"

    def __init__(self, cluster: Cluster, *, on_change: Callable[[NodePool], None] | None = None,
                 watch_timeout: int = 300, backoff_initial: float = 0.5, backoff_max: float = 30.0) -> None:
        super().__init__(cluster, watch_timeout=watch_timeout, backoff_initial=backoff_initial,
                         backoff_max=backoff_max)
        self.on_change = on_change
        self._nodes: dict[str, NodeInfo] = {}
        self._pool = NodePool.from_nodes([])
        #: Bumped on every change of the pool (tests and metrics watch it).
        self.generation = 0

    @property
    def pool(self) -> NodePool:
        return self._pool

    @property
    def nodes(self) -> list[NodeInfo]:
        return sorted(self._nodes.values(), key=lambda n: n.name)

    def _publish(self) -> None:
        self._pool = NodePool.from_nodes(self.nodes)
        self.generation += 1
        if self.on_change is not None:
            try:
                self.on_change(self._pool)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the watch
                log.exception("node pool listener failed")

    def _event(self, kind: str, obj: Mapping[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if kind == "DELETED":
            changed = self._nodes.pop(name, None) is not None
        else:
            info = node_info(obj)
            old = self._nodes.get(name)
            if info is None:
                changed = self._nodes.pop(name, None) is not None
            else:
                self._nodes[name] = info
                changed = old != info
        if changed:
            self._publish()

    def _list(self) -> str:
        items, rv = self.cluster._list_raw(_NODES)
        self._nodes = {n.name: n for n in (node_info(o) for o in items) if n is not None}
        self._publish()
        return rv


class PodWatcher(_ListWatch):
    """Hands every pod in the cluster to ``on_pods``: all of them at each (re)list, then each one added.

    The webhook's warm-up uses it to index the images of running pods at start-up and
    as pods appear (including pods in namespaces the webhook never sees, like
    kube-system).  Only additions matter: a deleted pod's images stay cached, and
    a pod's images cannot change after creation except through
    ``ephemeralcontainers``, which are rare and judged at admission anyway.
    The callback runs on the watch thread and must not block.
    """

    resource = _KNOWN[("v1", "Pod")]
    thread_name = "canrun-pod-watch"

    def __init__(self, cluster: Cluster, on_pods: Callable[[list[dict[str, Any]]], None], *,
                 watch_timeout: int = 300, backoff_initial: float = 0.5, backoff_max: float = 30.0) -> None:
        super().__init__(cluster, watch_timeout=watch_timeout, backoff_initial=backoff_initial,
                         backoff_max=backoff_max)
        self.on_pods = on_pods

    def _hand_over(self, pods: list[dict[str, Any]]) -> None:
        try:
            self.on_pods(pods)
        except Exception:  # noqa: BLE001 - a listener's bug must not stop the watch
            log.exception("pod listener failed")

    def _list(self) -> str:
        items, rv = self.cluster._list_raw(self.resource, paged=True)
        for item in items:
            item.setdefault("apiVersion", "v1")
            item.setdefault("kind", "Pod")
        self._hand_over(items)
        return rv

    def _event(self, kind: str, obj: Mapping[str, Any]) -> None:
        if kind == "ADDED":
            self._hand_over([{"apiVersion": "v1", "kind": "Pod", **obj}])
