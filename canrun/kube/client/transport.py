"""One request to the Kubernetes API, the one pager, and a watch stream — nothing about what is asked.

Every exception the ``kubernetes`` client or urllib3 can raise is turned into a
``ClusterError`` here (``_api_error`` for answers, one clause for the network), so
the operations above never see a library exception.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from canrun.errors import ClusterConflict, ClusterError

#: Objects per page of a list: big clusters are read in bounded pieces.
PAGE_LIMIT = 500


class KindNotServed(ClusterError):
    """The API server's discovery does not list the kind (an older cluster, or a CRD not installed)."""


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


#: The kinds canrun reads or writes, so that they need no discovery round trip.
KNOWN: dict[tuple[str, str], ResourceInfo] = {(r.api_version, r.kind): r for r in (
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
    ResourceInfo("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration",
                 "mutatingwebhookconfigurations", False),
)}


@dataclass(frozen=True)
class Snapshot:
    """A whole list and the resourceVersion of its snapshot: where a watch starts so no change is missed."""

    items: list[dict[str, Any]]
    resource_version: str


def _status_message(exc: ApiException) -> str:
    """The API server's own ``Status.message`` (it names verb, resource and user), or the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except (ValueError, TypeError):
        pass
    return str(exc.reason or "no reason given")


def network_reason(exc: BaseException) -> str:
    """What went wrong on the wire, in a few words: urllib3 wraps the cause in a sentence about retries.

    ``MaxRetryError`` carries the last attempt's error in ``reason``; that one (or the
    exception itself) is named by its kind, with the operating system's words for it.
    """
    cause: BaseException = exc
    if isinstance(cause, urllib3.exceptions.MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    if isinstance(cause, urllib3.exceptions.SSLError):
        inner = cause.args[0] if cause.args else cause
        detail = getattr(inner, "reason", None) or getattr(inner, "verify_message", None) or str(inner)
        return f"TLS handshake failed ({detail})"
    if isinstance(cause, urllib3.exceptions.NameResolutionError):
        return "the host name does not resolve"
    text = str(cause)
    # NewConnectionError subclasses ConnectTimeoutError (urllib3 keeps that for compatibility): words first
    errno_text = re.search(r"\[Errno -?\d+\] ([^\"')]+)", text)
    if errno_text:
        words = errno_text.group(1).strip().rstrip(".")
        return words[:1].lower() + words[1:]
    if isinstance(cause, (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError,
                          TimeoutError)):
        return "timed out"
    if isinstance(cause, urllib3.exceptions.ProtocolError):
        return "the connection broke (not an HTTPS API server on that port?)"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror[:1].lower() + cause.strerror[1:]
    return text.splitlines()[0][:200] if text else type(cause).__name__


def _api_error(exc: ApiException, what: str) -> ClusterError:
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


class ApiTransport:
    """Sends requests through one ``ApiClient``; knows paths and JSON, not kinds or verbs' meaning."""

    def __init__(self, api_client: k8s_client.ApiClient, timeout: float) -> None:
        self.api_client = api_client
        self.timeout = timeout

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def call(self, method: str, path: str, *, what: str, query: Sequence[tuple[str, Any]] = (),
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
            raise _api_error(exc, what) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterError(f"cannot reach the Kubernetes API at {self.host} while {what}: "
                               f"{network_reason(exc)}") from exc
        try:
            return json.loads(data) if data else {}
        except ValueError as exc:
            raise ClusterError(f"Kubernetes API at {self.host} sent a body that is not JSON while {what}") from exc

    def pages(self, path: str, *, what: str, query: Sequence[tuple[str, Any]] = ()) -> Iterator[dict[str, Any]]:
        """Each page of a list, ``PAGE_LIMIT`` objects at a time, following ``metadata.continue``.

        Every page of one list carries the same snapshot's resourceVersion, so the
        last page's is the one to watch from.
        """
        token: str | None = None
        while True:
            page_query = [("limit", PAGE_LIMIT), *query]
            if token:
                page_query.append(("continue", token))
            page = self.call("GET", path, query=page_query, what=what)
            yield page
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def watch(self, path: str, *, what: str, resource_version: str, timeout_seconds: int) -> WatchStream:
        """A watch from ``resource_version``; the server ends it after ``timeout_seconds``."""
        query = [("watch", "true"), ("resourceVersion", resource_version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", timeout_seconds)]
        resp = self.call("GET", path, query=query, what=what, stream=True,
                         timeout=(self.timeout, timeout_seconds + 30))
        return WatchStream(resp, what)


@dataclass
class WatchStream:
    """The events of one watch request, decoded; ``close()`` from any thread cuts it at once.

    Use it as a context manager: leaving gives the connection back to the pool.
    """

    _resp: Any
    what: str
    _closed: threading.Event = field(default_factory=threading.Event)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in _lines(self._resp):
            if self._closed.is_set():
                return
            try:
                event = json.loads(line)
            except ValueError as exc:
                raise ClusterError(f"{self.what}: the watch sent a line that is not JSON") from exc
            if not isinstance(event, dict):
                raise ClusterError(f"{self.what}: the watch sent an event that is not an object")
            yield event

    def close(self) -> None:
        """Shut the socket down: a thread blocked reading the stream returns at once."""
        self._closed.set()
        try:
            self._resp.shutdown()
        except Exception:  # noqa: BLE001 - best effort on a socket we are abandoning
            pass

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._resp.release_conn()
        except Exception:  # noqa: BLE001 - a cut connection may refuse to go back to the pool
            pass


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
