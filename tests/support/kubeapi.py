"""A small, real Kubernetes API server on loopback, for driving the official client in tests.

It is an HTTP server (``ThreadingHTTPServer``) that keeps objects in memory and
answers the REST shapes the ``kubernetes`` Python client sends: discovery,
GET/LIST (label and field selectors), POST, PUT (with resourceVersion
preconditions), PATCH (JSON patch, merge patch; strategic merge is treated as a
merge patch), DELETE, and ``?watch=true`` streams in chunked transfer encoding
with resourceVersion bookmarks and ``410 Gone`` once history is compacted.

What it is for: tests of canrun's cluster code go through the same client,
urllib3 pool, kubeconfig loading and JSON wire format as production, so a wrong
path, a wrong content type or a mishandled stream fails here rather than in a
cluster.  What it is not: admission, validation, defaulting, RBAC (use
``fail()`` to inject 403s), garbage collection.

Usage::

    with KubeAPIStandIn(tmp_path) as api:
        api.add({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
        client = load_api_client(str(api.kubeconfig_path))
        ...
        assert ("GET", "/api/v1/nodes") in api.requests
        api.drop_watches()   # cut every open watch stream mid-flight
        api.compact()        # forget history: old resourceVersions now get 410
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = ("create", "delete", "get", "list", "patch", "update", "watch")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


DEFAULT_RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "nodes", "Node", False),
    Resource("", "v1", "namespaces", "Namespace", False),
    Resource("", "v1", "pods", "Pod", True),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True),
    Resource("", "v1", "events", "Event", True),
    Resource("", "v1", "configmaps", "ConfigMap", True),
    Resource("", "v1", "services", "Service", True),
    Resource("", "v1", "replicationcontrollers", "ReplicationController", True),
    Resource("", "v1", "podtemplates", "PodTemplate", True),
    Resource("apps", "v1", "deployments", "Deployment", True),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True),
    Resource("apps", "v1", "statefulsets", "StatefulSet", True),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True),
    Resource("batch", "v1", "jobs", "Job", True),
    Resource("batch", "v1", "cronjobs", "CronJob", True),
    Resource("events.k8s.io", "v1", "events", "Event", True),
    Resource("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
             "ValidatingWebhookConfiguration", False),
    Resource("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
             "MutatingWebhookConfiguration", False),
    Resource("wgpolicyk8s.io", "v1alpha2", "policyreports", "PolicyReport", True),
    Resource("wgpolicyk8s.io", "v1alpha2", "clusterpolicyreports", "ClusterPolicyReport", False),
)


class _HTTPError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A ``metav1.Status`` failure, the body the real API server sends with every error."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


# --- selectors ---------------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur)
    return [t.strip() for t in terms if t.strip()]


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics: =, ==, !=, in, notin, exists, !exists."""
    for term in _split_selector(selector):
        m = _SET_TERM.match(term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
        elif "!=" in term:
            key, value = (p.strip() for p in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (p.strip() for p in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field_selector_matches(selector: str, obj: dict[str, Any]) -> bool:
    for term in _split_selector(selector):
        negate = "!=" in term
        key, value = (p.strip() for p in term.replace("!=", "=").replace("==", "=").split("=", 1))
        cur: Any = obj
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        actual = "" if cur is None else str(cur)
        if (actual == value) == negate:
            return False
    return True


# --- patches -----------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _HTTPError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test): enough for what clients send."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(op.get("path", ""))
        if not parts:
            raise _HTTPError(422, "Invalid", "patching the whole document is not supported")
        parent: Any = doc
        for part in parts[:-1]:
            try:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            except (KeyError, IndexError, ValueError) as exc:
                raise _HTTPError(422, "Invalid", f"path {op.get('path')} does not exist") from exc
        last = parts[-1]
        kind = op.get("op")
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, op["value"])
            elif kind == "replace":
                parent[index] = op["value"]
            elif kind == "remove":
                del parent[index]
            elif kind == "test":
                if index >= len(parent) or parent[index] != op["value"]:
                    raise _HTTPError(422, "Invalid", f"test operation failed at {op.get('path')}")
            else:
                raise _HTTPError(422, "Invalid", f"unsupported op {kind!r}")
        elif isinstance(parent, dict):
            if kind == "add":
                parent[last] = op["value"]
            elif kind == "replace":
                if last not in parent:
                    raise _HTTPError(422, "Invalid", f"replace of missing path {op.get('path')}")
                parent[last] = op["value"]
            elif kind == "remove":
                if last not in parent:
                    raise _HTTPError(422, "Invalid", f"remove of missing path {op.get('path')}")
                del parent[last]
            elif kind == "test":
                if parent.get(last) != op["value"]:
                    raise _HTTPError(422, "Invalid", f"test operation failed at {op.get('path')}")
            else:
                raise _HTTPError(422, "Invalid", f"unsupported op {kind!r}")
        else:
            raise _HTTPError(422, "Invalid", f"path {op.get('path')} does not exist")
    return doc


# --- the store ---------------------------------------------------------------------------

Key = tuple[str, str, str, str]  # group, plural, namespace ("" if cluster-scoped), name


@dataclass
class _Event:
    rv: int
    type: str
    resource: Resource
    namespace: str
    obj: dict[str, Any]


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    code: int
    times: int | None  # None: forever


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeAPIStandIn:
    """The in-memory API server; start it with ``start()`` or as a context manager."""

    def __init__(self, workdir: Path, resources: tuple[Resource, ...] = DEFAULT_RESOURCES,
                 *, token: str = "stand-in-token") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.resources: list[Resource] = list(resources)
        self._objects: dict[Key, dict[str, Any]] = {}
        self._events: list[_Event] = []
        self._rv = 100
        self._oldest_rv = 100  # watches from below this get 410 Gone
        self._cond = threading.Condition()
        self._watch_epoch = 0
        self._open_watches = 0
        self._faults: list[_Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.request_log: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.kubeconfig_path = self.workdir / "kubeconfig"

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> KubeAPIStandIn:
        """Listen on loopback (the same port again after a ``stop()``) and write the kubeconfig."""
        handler = type("_BoundHandler", (_Handler,), {"api": self})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="kubeapi-stand-in",
                                        daemon=True)
        self._thread.start()
        self._write_kubeconfig()
        return self

    def stop(self) -> None:
        """Stop listening and cut open watches: the client sees the API server go away."""
        self.drop_watches()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KubeAPIStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "stand-in", "preferences": {},
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "stand-in", "user": {"token": self.token}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in",
                                                          "namespace": "default"}}],
        }
        self.kubeconfig_path.write_text(yaml.safe_dump(config))

    # --- test controls -------------------------------------------------------------------

    def register(self, resource: Resource) -> None:
        """Serve another resource (a CRD, say)."""
        self.resources.append(resource)

    def fail(self, method: str, path_regex: str, code: int, times: int | None = 1) -> None:
        """Answer the next ``times`` matching requests (None: all) with a Status error ``code``."""
        with self._cond:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), code, times))

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def drop_watches(self) -> None:
        """Cut every open watch stream without the closing chunk, as a crashing API server would."""
        with self._cond:
            self._watch_epoch += 1
            self._cond.notify_all()

    def compact(self) -> None:
        """Forget the event history: a watch from an older resourceVersion gets 410 Gone."""
        with self._cond:
            self._events.clear()
            self._oldest_rv = self._rv

    @property
    def open_watches(self) -> int:
        with self._cond:
            return self._open_watches

    def wait_for_watches(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` watch streams are open (so a test can change things under them)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._open_watches < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # --- object access (server side, bypassing HTTP) -------------------------------------

    def resource_for(self, api_version: str, kind: str) -> Resource:
        for res in self.resources:
            if res.api_version == api_version and res.kind == kind:
                return res
        raise KeyError(f"stand-in does not serve {api_version} {kind}")

    def _resource_by_kind(self, kind: str, api_version: str | None) -> Resource:
        matches = [r for r in self.resources if r.kind == kind and (api_version is None or r.api_version == api_version)]
        if not matches:
            raise KeyError(f"stand-in does not serve kind {kind}")
        return matches[0]

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object directly (emits a watch event); returns the stored copy."""
        res = self.resource_for(obj["apiVersion"], obj["kind"])
        ns = obj.get("metadata", {}).get("namespace", "") if res.namespaced else ""
        if res.namespaced and not ns:
            ns = "default"
        with self._cond:
            key = (res.group, res.plural, ns, obj["metadata"]["name"])
            existing = self._objects.get(key)
            return self._store(res, ns, copy.deepcopy(obj), existing)

    def get(self, kind: str, name: str, namespace: str | None = None, *,
            api_version: str | None = None) -> dict[str, Any] | None:
        res = self._resource_by_kind(kind, api_version)
        with self._cond:
            obj = self._objects.get((res.group, res.plural, (namespace or "default") if res.namespaced else "", name))
            return copy.deepcopy(obj) if obj else None

    def list(self, kind: str, namespace: str | None = None, *, api_version: str | None = None) -> list[dict[str, Any]]:
        res = self._resource_by_kind(kind, api_version)
        with self._cond:
            return [copy.deepcopy(o) for (g, p, ns, _), o in sorted(self._objects.items())
                    if g == res.group and p == res.plural and (namespace is None or ns == namespace)]

    def remove(self, kind: str, name: str, namespace: str | None = None, *, api_version: str | None = None) -> None:
        res = self._resource_by_kind(kind, api_version)
        ns = (namespace or "default") if res.namespaced else ""
        with self._cond:
            obj = self._objects.pop((res.group, res.plural, ns, name), None)
            if obj is not None:
                self._emit("DELETED", res, ns, obj)

    # --- internals (hold self._cond) -----------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, type_: str, res: Resource, ns: str, obj: dict[str, Any]) -> None:
        rv = self._rv if type_ != "DELETED" else self._next_rv()
        if type_ == "DELETED":
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(rv)
        self._events.append(_Event(rv, type_, res, ns, copy.deepcopy(obj)))
        self._cond.notify_all()

    def _store(self, res: Resource, ns: str, obj: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        if res.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if existing is None:
            meta["uid"] = meta.get("uid") or str(uuid.uuid4())
            meta["creationTimestamp"] = meta.get("creationTimestamp") or _now()
            meta["generation"] = 1
        else:
            for k in ("uid", "creationTimestamp"):
                meta[k] = existing["metadata"][k]
            meta["generation"] = existing["metadata"].get("generation", 1) + 1
        meta["resourceVersion"] = str(self._next_rv())
        self._objects[(res.group, res.plural, ns, meta["name"])] = obj
        self._emit("ADDED" if existing is None else "MODIFIED", res, ns, obj)
        return copy.deepcopy(obj)

    def _check_fault(self, method: str, path: str) -> _Fault | None:
        with self._cond:
            for fault in self._faults:
                if fault.method in (method, "*") and fault.path.search(path):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None


# --- HTTP ----------------------------------------------------------------------------------

@dataclass
class _Target:
    resource: Resource
    namespace: str  # "" for cluster-scoped or all namespaces
    name: str | None
    subresource: str | None


class _Handler(BaseHTTPRequestHandler):
    api: KubeAPIStandIn
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes; no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
        return

    # -- plumbing

    def _send_json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: _HTTPError) -> None:
        self._send_json(err.code, status_body(err.code, err.reason, err.message))

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _HTTPError(400, "BadRequest", f"request body is not JSON: {exc}") from exc

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        api = self.api
        with api._cond:
            api.requests.append((method, parts.path))
            api.request_log.append(RecordedRequest(method, parts.path, query, self.headers.get("Content-Type"),
                                                   {k.lower(): v for k, v in self.headers.items()}))
        try:
            fault = api._check_fault(method, parts.path)
            if fault is not None:
                if method in ("POST", "PUT", "PATCH"):
                    self._read_body()
                reasons = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
                           410: "Expired", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
                raise _HTTPError(fault.code, reasons.get(fault.code, "Unknown"), f"injected failure {fault.code}")
            if method == "GET" and self._discovery(parts.path):
                return
            target = self._route(parts.path)
            handler = getattr(self, f"_do_{method.lower()}")
            handler(target, query)
        except _HTTPError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # -- discovery

    def _discovery(self, path: str) -> bool:
        res = self.api.resources
        path = path.rstrip("/")
        if path == "/version":
            self._send_json(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-standin",
                                  "platform": "linux/amd64"})
        elif path == "/api":
            self._send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        elif path == "/apis":
            groups: dict[str, list[str]] = {}
            for r in res:
                if r.group:
                    groups.setdefault(r.group, [])
                    if r.version not in groups[r.group]:
                        groups[r.group].append(r.version)
            self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
                for g, vs in groups.items()]})
        else:
            m = re.fullmatch(r"/api/(v1)|/apis/([^/]+)/([^/]+)", path)
            if not m:
                return False
            group, version = ("", "v1") if m.group(1) else (m.group(2), m.group(3))
            items = [r for r in res if r.group == group and r.version == version]
            if not items:
                raise _HTTPError(404, "NotFound", "the server could not find the requested resource")
            self._send_json(200, {"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": items[0].api_version, "resources": [
                                      {"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                                       "kind": r.kind, "verbs": list(r.verbs)} for r in items]})
        return True

    def _route(self, path: str) -> _Target:
        m = re.fullmatch(r"/api/v1/(.+)|/apis/([^/]+)/([^/]+)/(.+)", path.rstrip("/"))
        if not m:
            raise _HTTPError(404, "NotFound", "the server could not find the requested resource")
        group, version, rest = ("", "v1", m.group(1)) if m.group(1) else (m.group(2), m.group(3), m.group(4))
        segs = rest.split("/")
        namespace = ""
        if segs[0] == "namespaces" and len(segs) >= 3:
            namespace, segs = segs[1], segs[2:]
        plural, name, sub = segs[0], (segs[1] if len(segs) > 1 else None), (segs[2] if len(segs) > 2 else None)
        if len(segs) > 3:
            raise _HTTPError(404, "NotFound", "the server could not find the requested resource")
        for r in self.api.resources:
            if r.group == group and r.version == version and r.plural == plural:
                if namespace and not r.namespaced:
                    break
                if r.namespaced and name is not None and not namespace:
                    break
                return _Target(r, namespace, name, sub)
        raise _HTTPError(404, "NotFound", "the server could not find the requested resource")

    def _key(self, t: _Target, name: str) -> Key:
        return (t.resource.group, t.resource.plural, t.namespace, name)

    def _existing(self, t: _Target) -> dict[str, Any]:
        assert t.name is not None
        obj = self.api._objects.get(self._key(t, t.name))
        if obj is None:
            kind = t.resource.plural if not t.resource.group else f"{t.resource.plural}.{t.resource.group}"
            raise _HTTPError(404, "NotFound", f'{kind} "{t.name}" not found')
        return obj

    # -- verbs

    def _do_get(self, t: _Target, query: dict[str, list[str]]) -> None:
        if t.subresource not in (None, "status"):
            raise _HTTPError(404, "NotFound", "the server could not find the requested resource")
        if t.name is not None:
            with self.api._cond:
                obj = copy.deepcopy(self._existing(t))
            self._send_json(200, obj)
            return
        if query.get("watch", [""])[0] in ("true", "1"):
            self._watch(t, query)
            return
        labels = query.get("labelSelector", [""])[0]
        fields = query.get("fieldSelector", [""])[0]
        with self.api._cond:
            items = [copy.deepcopy(o) for (g, p, ns, _), o in sorted(self.api._objects.items())
                     if g == t.resource.group and p == t.resource.plural
                     and (not t.namespace or ns == t.namespace)
                     and label_selector_matches(labels, o["metadata"].get("labels") or {})
                     and _field_selector_matches(fields, o)]
            rv = str(self.api._rv)
        self._send_json(200, {"kind": f"{t.resource.kind}List", "apiVersion": t.resource.api_version,
                              "metadata": {"resourceVersion": rv}, "items": items})

    def _do_post(self, t: _Target, query: dict[str, list[str]]) -> None:
        body = self._read_body()
        if t.name is not None or not isinstance(body, dict):
            raise _HTTPError(405 if t.name else 400, "BadRequest", "POST needs a collection path and an object")
        if t.resource.namespaced and not t.namespace:
            raise _HTTPError(404, "NotFound", "the server could not find the requested resource")
        meta = body.setdefault("metadata", {})
        if meta.get("namespace") not in (None, "", t.namespace) and t.resource.namespaced:
            raise _HTTPError(400, "BadRequest", "the namespace of the provided object does not match the "
                                                "namespace sent on the request")
        with self.api._cond:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if not meta.get("name"):
                raise _HTTPError(422, "Invalid", "metadata.name: Required value: name or generateName is required")
            if self._key(t, meta["name"]) in self.api._objects:
                raise _HTTPError(409, "AlreadyExists", f'{t.resource.plural} "{meta["name"]}" already exists')
            meta.pop("resourceVersion", None)
            if query.get("dryRun"):
                self._send_json(201, body)
                return
            stored = self.api._store(t.resource, t.namespace, body, None)
        self._send_json(201, stored)

    def _do_put(self, t: _Target, query: dict[str, list[str]]) -> None:
        body = self._read_body()
        if t.name is None or not isinstance(body, dict):
            raise _HTTPError(405, "MethodNotAllowed", "PUT needs an object path and an object")
        meta = body.setdefault("metadata", {})
        if meta.get("name", t.name) != t.name:
            raise _HTTPError(400, "BadRequest", "the name of the object does not match the name on the URL")
        meta["name"] = t.name
        with self.api._cond:
            existing = self._existing(t)
            want = meta.get("resourceVersion")
            if want and want != existing["metadata"]["resourceVersion"]:
                raise _HTTPError(409, "Conflict", f'Operation cannot be fulfilled on {t.resource.plural} "{t.name}": '
                                                  "the object has been modified; please apply your changes to the "
                                                  "latest version and try again")
            stored = self.api._store(t.resource, t.namespace, body, existing)
        self._send_json(200, stored)

    def _do_patch(self, t: _Target, query: dict[str, list[str]]) -> None:
        body = self._read_body()
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if t.name is None:
            raise _HTTPError(405, "MethodNotAllowed", "PATCH needs an object path")
        with self.api._cond:
            existing = self._existing(t)
            if ctype == "application/json-patch+json":
                if not isinstance(body, list):
                    raise _HTTPError(400, "BadRequest", "a JSON patch is a list of operations")
                patched = json_patch(existing, body)
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(body, dict):
                    raise _HTTPError(400, "BadRequest", "a merge patch is an object")
                patched = merge_patch(existing, body)
            else:
                raise _HTTPError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}")
            want = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            if want and want != existing["metadata"]["resourceVersion"]:
                raise _HTTPError(409, "Conflict", f'Operation cannot be fulfilled on {t.resource.plural} "{t.name}": '
                                                  "the object has been modified")
            patched.setdefault("metadata", {})["name"] = t.name
            stored = self.api._store(t.resource, t.namespace, patched, existing)
        self._send_json(200, stored)

    def _do_delete(self, t: _Target, query: dict[str, list[str]]) -> None:
        self._read_body()
        if t.name is None:
            raise _HTTPError(405, "MethodNotAllowed", "collection delete is not supported by the stand-in")
        with self.api._cond:
            existing = self._existing(t)
            del self.api._objects[self._key(t, t.name)]
            self.api._emit("DELETED", t.resource, t.namespace, existing)
        self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "details": {"name": t.name, "kind": t.resource.plural}})

    # -- watch

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch_events(self, t: _Target, query: dict[str, list[str]]) -> Iterator[dict[str, Any] | None]:
        """Yield watch events, None on a graceful end; return without None to cut the stream."""
        api = self.api
        labels = query.get("labelSelector", [""])[0]
        fields = query.get("fieldSelector", [""])[0]
        timeout = float(query.get("timeoutSeconds", ["1800"])[0])
        deadline = time.monotonic() + timeout
        rv_text = query.get("resourceVersion", [""])[0]

        def matches(res: Resource, ns: str, obj: dict[str, Any]) -> bool:
            return (res.group == t.resource.group and res.plural == t.resource.plural
                    and (not t.namespace or ns == t.namespace)
                    and label_selector_matches(labels, obj["metadata"].get("labels") or {})
                    and _field_selector_matches(fields, obj))

        with api._cond:
            epoch = api._watch_epoch
            initial: list[dict[str, Any]] = []
            if rv_text in ("", "0"):
                cursor = api._rv
                initial = [{"type": "ADDED", "object": copy.deepcopy(o)}
                           for (g, p, ns, _), o in sorted(api._objects.items())
                           if matches(t.resource, ns, o) and g == t.resource.group]
            else:
                try:
                    cursor = int(rv_text)
                except ValueError:
                    cursor = -1
                if cursor < api._oldest_rv:
                    initial = [{"type": "ERROR", "object": status_body(
                        410, "Expired", f"too old resource version: {rv_text} ({api._oldest_rv})")}]
                    yield from initial
                    yield None
                    return
        yield from initial
        while True:
            with api._cond:
                while True:
                    if api._watch_epoch != epoch:
                        return  # cut without the closing chunk
                    pending = [e for e in api._events if e.rv > cursor]
                    if pending:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    api._cond.wait(min(left, 1.0))
                if not pending and deadline - time.monotonic() <= 0:
                    yield None
                    return
                cursor = pending[-1].rv
                out = [{"type": e.type, "object": copy.deepcopy(e.obj)} for e in pending
                       if matches(e.resource, e.namespace, e.obj)]
            yield from out

    def _watch(self, t: _Target, query: dict[str, list[str]]) -> None:
        api = self.api
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        with api._cond:
            api._open_watches += 1
            api._cond.notify_all()
        graceful = False
        try:
            for event in self._watch_events(t, query):
                if event is None:
                    graceful = True
                    break
                self._chunk(event)
            if graceful:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            else:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            with api._cond:
                api._open_watches -= 1
                api._cond.notify_all()
