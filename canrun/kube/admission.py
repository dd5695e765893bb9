"""AdmissionReview ``admission.k8s.io/v1``: the request read into plain data, the response built from a decision.

Everything here is pure: no HTTP, no engine.  The webhook service turns a parsed
``Request`` into a ``Decision``; ``build_response`` turns that into the exact
JSON the API server expects, so the wire format is tested without a server.

Two Kubernetes facts shape this module:

* the API server truncates each warning to 256 runes once their total passes
  4096 characters, so warnings are kept short and self-contained here rather
  than trusting the server's cut;
* ``auditAnnotations`` keys may not contain ``/`` — the API server prefixes
  them with the webhook's name itself.

The UPDATE comparison (``relevant_change``) is what keeps a webhook on the
write path of every Deployment cheap: scaling, label edits and rollouts that
touch nothing an exec verdict depends on are allowed without looking at an
image.

Objects are JSON documents, so shapes are checked with ``isinstance(x, dict)``:
the ``Mapping`` ABC check costs ten times more and ran some thirty times per
admission on the webhook's hot path.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

from canrun.errors import CanrunError
from canrun.kube.objects import SKIP_ANNOTATION, pod_spec_path

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"

#: The API server's limits on warnings (k8s.io/apiserver .../admission/plugin/webhook/...):
#: once the total of all warnings passes TOTAL, each is cut to EACH runes.
WARNING_TOTAL_LIMIT = 4096
WARNING_EACH_LIMIT = 256
#: What canrun aims for, so kubectl's "Warning: ..." lines fit a terminal.
WARNING_TARGET = 120


# -- the wire format (only the fields canrun reads or writes) --------------------------------------

class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: NotRequired[str]
    requestKind: NotRequired[GroupVersionKind]
    name: NotRequired[str]
    namespace: NotRequired[str]
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    userInfo: NotRequired[UserInfo]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]
    options: NotRequired[dict[str, Any] | None]


class Status(TypedDict, total=False):
    code: int
    message: str
    reason: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[Status]
    warnings: NotRequired[list[str]]
    auditAnnotations: NotRequired[dict[str, str]]
    patchType: NotRequired[str]
    patch: NotRequired[str]


class AdmissionReviewRequest(TypedDict):
    apiVersion: str
    kind: str
    request: AdmissionRequest


class AdmissionReviewResponse(TypedDict):
    apiVersion: str
    kind: str
    response: AdmissionResponse


# -- plain data ----------------------------------------------------------------------------------

class BadAdmissionReview(CanrunError):
    """The body is not an ``admission.k8s.io/v1`` AdmissionReview canrun can answer (HTTP 400)."""


@dataclass(frozen=True)
class Request:
    """The parts of an AdmissionRequest the webhook decides on."""

    uid: str
    kind: str
    group: str
    version: str
    resource: str
    sub_resource: str
    operation: str
    namespace: str
    name: str
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool
    username: str = ""

    @property
    def display_name(self) -> str:
        """``ns/name`` (or the generateName prefix for objects not yet named)."""
        name = self.name
        if not name and isinstance(self.object, dict):
            meta = self.object.get("metadata") or {}
            name = meta.get("name") or (f"{meta['generateName']}*" if meta.get("generateName") else "")
        return f"{self.namespace}/{name}" if self.namespace else name


@dataclass
class Decision:
    """What the webhook answers, before it is put on the wire."""

    allowed: bool = True
    #: HTTP-like status code for a denial (403); None when allowed.
    code: int | None = None
    message: str | None = None
    warnings: list[str] = field(default_factory=list)
    audit_annotations: dict[str, str] = field(default_factory=dict)
    #: RFC 6902 operations (the mutating endpoint only); None or empty: the object is left as it is.
    patch: list[dict[str, Any]] | None = None


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadAdmissionReview(f"request.{what} must be a string, got {type(value).__name__}")
    return value


def parse_review(body: bytes | str | Mapping[str, Any]) -> Request:
    """Read an AdmissionReview body; anything else raises ``BadAdmissionReview`` with a one-line reason."""
    if isinstance(body, (bytes, str)):
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadAdmissionReview(f"the body is not JSON: {exc}") from exc
        except RecursionError as exc:  # the API server never sends this: Go's decoder stops at 10,000 levels
            raise BadAdmissionReview("the body nests deeper than an AdmissionReview can") from exc
    else:
        doc = body
    if not isinstance(doc, dict):
        raise BadAdmissionReview("the body is not a JSON object (expected an AdmissionReview)")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if kind != KIND:
        raise BadAdmissionReview(f"expected kind {KIND}, got {kind!r}")
    if api_version != API_VERSION:
        raise BadAdmissionReview(
            f"unsupported apiVersion {api_version!r}: canrun answers {API_VERSION} only "
            f"(set admissionReviewVersions: [v1] in the webhook configuration)")
    req = doc.get("request")
    if not isinstance(req, dict):
        raise BadAdmissionReview("the AdmissionReview has no request object")
    uid = req.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadAdmissionReview("request.uid is missing")
    gvk = req.get("kind")
    if not isinstance(gvk, dict) or not isinstance(gvk.get("kind"), str):
        raise BadAdmissionReview("request.kind is missing or not a group/version/kind object")
    gvr = req.get("resource")
    if gvr is not None and not isinstance(gvr, dict):
        raise BadAdmissionReview("request.resource is not a group/version/resource object")
    operation = req.get("operation")
    if operation not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        raise BadAdmissionReview(f"request.operation {operation!r} is not CREATE, UPDATE, DELETE or CONNECT")
    obj, old = req.get("object"), req.get("oldObject")
    for what, value in (("object", obj), ("oldObject", old)):
        if value is not None and not isinstance(value, dict):
            raise BadAdmissionReview(f"request.{what} is not a JSON object")
    dry_run = req.get("dryRun", False)
    if dry_run is None:
        dry_run = False
    if not isinstance(dry_run, bool):
        raise BadAdmissionReview("request.dryRun must be a boolean")
    user = req.get("userInfo")
    username = user.get("username", "") if isinstance(user, dict) else ""
    return Request(
        uid=uid,
        kind=gvk["kind"],
        group=_text(gvk.get("group"), "kind.group"),
        version=_text(gvk.get("version"), "kind.version"),
        resource=_text((gvr or {}).get("resource"), "resource.resource"),
        sub_resource=_text(req.get("subResource"), "subResource"),
        operation=operation,
        namespace=_text(req.get("namespace"), "namespace"),
        name=_text(req.get("name"), "name"),
        object=obj,
        old_object=old,
        dry_run=dry_run,
        username=username if isinstance(username, str) else "",
    )


# -- the response --------------------------------------------------------------------------------

def shorten(text: str, limit: int = WARNING_TARGET) -> str:
    """One line, at most ``limit`` characters (an ellipsis marks the cut)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def fit_warnings(warnings: Sequence[str]) -> list[str]:
    """Keep warnings inside what the API server passes on untouched.

    Each is one line of at most 256 characters (the server's own cut), and if the
    total would pass 4096 the tail is replaced by one "… N more" line, so what
    kubectl prints is whole sentences, never a warning cut mid-word by the server.
    """
    out: list[str] = []
    total = 0
    for i, w in enumerate(warnings):
        line = shorten(w, WARNING_EACH_LIMIT)
        rest = len(warnings) - i - 1
        tail = f"canrun: … and {rest} more finding(s); see the object's events or `canrun check`" if rest else ""
        if total + len(line) + len(tail) > WARNING_TOTAL_LIMIT:
            out.append(f"canrun: … and {len(warnings) - i} more finding(s); see the object's events or "
                       f"`canrun check`")
            break
        out.append(line)
        total += len(line)
    return out


def _annotation_key(key: str) -> str:
    return key.replace("/", "-")


def build_response(uid: str, decision: Decision) -> AdmissionReviewResponse:
    """The AdmissionReview answer for ``uid``: pure, deterministic, within the API server's limits."""
    response: AdmissionResponse = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        status: Status = {"code": decision.code or 403, "reason": "Forbidden"}
        if decision.message:
            status["message"] = decision.message
        response["status"] = status
    if decision.warnings:
        response["warnings"] = fit_warnings(decision.warnings)
    if decision.audit_annotations:
        response["auditAnnotations"] = {_annotation_key(k): v for k, v in decision.audit_annotations.items()}
    if decision.patch and decision.allowed:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(decision.patch, separators=(",", ":")).encode()).decode()
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


# -- UPDATE: did anything an exec verdict depends on change? ----------------------------------------

_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
#: Container fields a verdict depends on (env is reduced to what the expanded process uses, below).
_CONTAINER_FIELDS = ("name", "image", "command", "args", "workingDir", "securityContext", "volumeMounts")
#: Pod fields a verdict depends on: identity, volumes, scheduling, pull credentials.
_POD_FIELDS = ("securityContext", "volumes", "nodeSelector", "affinity", "nodeName", "tolerations",
               "imagePullSecrets", "serviceAccountName", "serviceAccount", "runtimeClassName")


def pod_spec_of(kind: str, obj: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The pod spec inside an object of ``kind`` (None if the object has none)."""
    node: Any = obj
    for key in pod_spec_path(kind):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, dict) else None


def _container_view(c: Any) -> Any:
    if not isinstance(c, dict):
        return c
    view = {k: c.get(k) for k in _CONTAINER_FIELDS if c.get(k) not in (None, [], {})}
    env = c.get("env")
    if isinstance(env, list) and env:
        used = _process_env(c, env)
        if used:
            view["env.process"] = used
    return view


#: A ``$(NAME)`` reference as the kubelet's expansion reads it (``$$(NAME)`` escapes are over-counted: harmless).
_REFERENCE = re.compile(r"\$\(([^)]*)\)")


def _process_env(container: Mapping[str, Any], env: list[Any]) -> list[Any]:
    """The env entries the expanded process depends on, in their order.

    The kubelet expands ``$(NAME)`` in command/args from the container env, and each
    env value from the entries before it, so ``command: ["$(A)/server"]`` with
    ``A=$(B)/bin`` runs a different program when ``B`` changes, and ``PATH=$(P):/bin``
    searches elsewhere when ``P`` does.  This is PATH (where a bare command is looked
    up) and every variable command, args or PATH reach through references, with the
    entries as written (their order decides the expansion); the rest of the env does
    not change which program starts.
    """
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for e in env:
        if isinstance(e, dict) and isinstance(e.get("name"), str):
            by_name.setdefault(e["name"], []).append(e)
    pending = ["PATH"]
    for key in ("command", "args"):
        items = container.get(key)
        if isinstance(items, list):
            pending += (name for item in items if isinstance(item, str) and "$(" in item
                        for name in _REFERENCE.findall(item))
    names: set[str] = set()
    while pending:
        name = pending.pop()
        if name in names:
            continue
        names.add(name)
        for entry in by_name.get(name, ()):
            value = entry.get("value")
            if isinstance(value, str) and "$(" in value:
                pending += _REFERENCE.findall(value)
    return [e for e in env if isinstance(e, dict) and e.get("name") in names]


def relevant_view(kind: str, obj: Mapping[str, Any] | None) -> Any:
    """The projection of an object's pod spec that an exec verdict depends on (JSON-comparable)."""
    spec = pod_spec_of(kind, obj)
    if spec is None:
        return None
    view: dict[str, Any] = {k: spec.get(k) for k in _POD_FIELDS if spec.get(k) not in (None, [], {})}
    for key in _CONTAINER_LISTS:
        items = spec.get(key)
        if isinstance(items, list) and items:
            view[key] = [_container_view(c) for c in items]
    return view


def exemptions_of(kind: str, obj: Mapping[str, Any] | None) -> tuple[str | None, ...]:
    """The ``canrun.io/skip`` annotation on the object and on every template down to its pod spec."""
    found: list[str | None] = []
    node: Any = obj
    for key in (None, *pod_spec_path(kind)):
        if key is not None:
            node = node.get(key) if isinstance(node, dict) else None
        meta = node.get("metadata") if isinstance(node, dict) else None
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        if isinstance(annotations, dict) and SKIP_ANNOTATION in annotations:
            found.append(str(annotations[SKIP_ANNOTATION]))
        elif meta is not None:
            found.append(None)
    return tuple(found)


def verdict_view(kind: str, obj: Mapping[str, Any] | None) -> Any:
    """All of an object a verdict depends on: the relevant pod spec and the exemptions at every level."""
    return relevant_view(kind, obj), exemptions_of(kind, obj)


def relevant_change(kind: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """True when an UPDATE changes anything canrun judges; False for scaling, labels, unrelated fields.

    Exemptions count: removing a ``canrun.io/skip`` must bring the findings back.
    """
    if old is None or new is None:
        return True
    return verdict_view(kind, old) != verdict_view(kind, new)


def new_ephemeral_containers(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> set[str]:
    """Names of ephemeral containers added or changed by a ``pods/ephemeralcontainers`` update."""
    def by_name(obj: Mapping[str, Any] | None) -> dict[str, Any]:
        spec = pod_spec_of("Pod", obj) or {}
        items = spec.get("ephemeralContainers") or []
        return {c.get("name"): _container_view(c) for c in items if isinstance(c, dict)}

    before, after = by_name(old), by_name(new)
    return {name for name, view in after.items() if isinstance(name, str) and before.get(name) != view}
