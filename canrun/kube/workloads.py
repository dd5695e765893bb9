"""Kubernetes objects (dicts) to ``canrun.spec`` workloads: the pod spec of every kind that has one.

Three doors feed this module: manifest files (``workloads_from_load``, with
positions), AdmissionReview objects and API objects (``workload_from_object``,
without).  Choices worth knowing:

* Kinds are recognised with their API group, not their version: a
  ``Deployment`` of ``extensions/v1beta1`` or ``apps/v1beta2`` is judged like
  one of ``apps/v1``, because old manifests still describe what people run.
  A kind of a foreign group (a CRD also called ``Deployment``) is skipped and
  counted as ``Deployment.example.com``.
* Annotations: the pod template's, then (CronJob) the job template's, then the
  object's own; the outer object wins a conflict because it is what the author
  of this file set for tools, while template annotations are copied onto every
  pod.  ``canrun.io/skip`` is the exception: an exemption on any level counts,
  so its rule lists are united.
* Namespace: None when ``metadata.namespace`` is absent, because in a file that
  means "the namespace kubectl is pointed at", not ``default``.  A caller who
  knows the namespace the API server will use (the webhook: the request's
  namespace) passes ``namespace=``.
* Strings the API types as strings but YAML typed otherwise (``args: [--port,
  8080]``, ``value: yes``) are turned into text so the command can still be
  judged; structures where a string belongs are errors.
* A shape the API server would reject in a way that leaves nothing to judge
  (containers not a list, a container without image) is a ``ManifestError``
  naming the field and line; the rest of the input is still judged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from canrun.errors import ManifestError
from canrun.kube.manifests import Loaded, line_of, object_shape_problem
from canrun.kube.objects import POD_KINDS, SKIP_ANNOTATION
from canrun.kube.yamldoc import TEMPLATE_MARKER
from canrun.spec import (
    Container,
    ContainerKind,
    EnvVar,
    NodeSelectorRequirement,
    PodSpec,
    Resource,
    SecurityContext,
    SourceLocation,
    Volume,
    VolumeItem,
    VolumeKind,
    VolumeMount,
    Workload,
)

_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})
_MAX_LIST_NESTING = 4


@dataclass
class WorkloadSet:
    """Everything ``canrun check`` judges, what it could not read, and what it passed over by kind."""

    workloads: list[Workload] = field(default_factory=list)
    errors: list[ManifestError] = field(default_factory=list)
    #: Objects without a pod spec (Service, ConfigMap, CRDs …), counted by kind.
    skipped: dict[str, int] = field(default_factory=dict)
    #: The object each workload was read from, by position (what a patch for it is written against).
    objects: list[Mapping[str, Any]] = field(default_factory=list)


def workloads_from_load(loaded: Loaded) -> WorkloadSet:
    """Workloads of every loaded object (``List`` kinds expanded); the loader's errors come first."""
    result = WorkloadSet(errors=list(loaded.errors))
    for item in loaded.objects:
        _collect(item.obj, item.source, result, 0)
    return result


def _collect(obj: Mapping[str, Any], source: SourceLocation, result: WorkloadSet, depth: int) -> None:
    kind = obj.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list):
        if depth >= _MAX_LIST_NESTING:
            result.errors.append(ManifestError("Lists nested too deeply; not read", source=source.file,
                                               line=source.line))
            return
        for index, item in enumerate(_list_items(obj)):
            item_source = SourceLocation(source.file, line_of(item) or source.line)
            if not isinstance(item, Mapping):
                result.errors.append(ManifestError(f"items[{index}] of the {kind} is not an object",
                                                   source=source.file, line=line_of(obj, ["items", index])
                                                   or source.line))
                continue
            problem = object_shape_problem(dict(item))
            if problem:
                result.errors.append(ManifestError(f"items[{index}] of the {kind}: {problem}", source=source.file,
                                                   line=item_source.line))
                continue
            _collect(item, item_source, result, depth + 1)
        return
    try:
        workload = workload_from_object(obj, source)
    except ManifestError as exc:
        result.errors.append(exc)
        return
    if workload is None:
        key = _skip_key(obj)
        result.skipped[key] = result.skipped.get(key, 0) + 1
    else:
        result.workloads.append(workload)
        result.objects.append(obj)


def _list_items(obj: Mapping[str, Any]) -> list[Any]:
    """Items of a List; typed lists (``PodList`` from the API) give their items kind and apiVersion."""
    kind = str(obj.get("kind"))
    items = list(obj["items"])
    if kind == "List":
        return items
    item_kind, api_version = kind[: -len("List")], obj.get("apiVersion")  # PodList -> Pod
    for item in items:
        if isinstance(item, dict):
            if not item.get("kind"):
                item["kind"] = item_kind
            if not item.get("apiVersion"):
                item["apiVersion"] = api_version
    return items


def _group(api_version: Any) -> str:
    text = str(api_version or "")
    return text.rsplit("/", 1)[0] if "/" in text else ""


def _skip_key(obj: Mapping[str, Any]) -> str:
    kind = str(obj.get("kind") or "(no kind)")
    known = POD_KINDS.get(kind)
    group = _group(obj.get("apiVersion"))
    return f"{kind}.{group}" if known is not None and group not in known[0] else kind


# --------------------------------------------------------------------------- one object


def workload_from_object(obj: Mapping[str, Any], source: SourceLocation | None = None, *,
                         namespace: str | None = None) -> Workload | None:
    """The workload of one object, None for kinds without a pod spec; ManifestError for a broken one.

    ``namespace`` fills in an absent ``metadata.namespace`` (the webhook passes
    the request's namespace); it does not override one that is set.
    """
    reader = _Reader(obj, source)
    if not isinstance(obj, Mapping):
        raise reader.error("", "not an object (a mapping with apiVersion and kind)")
    kind = obj.get("kind")
    known = POD_KINDS.get(kind) if isinstance(kind, str) else None
    if known is None or _group(obj.get("apiVersion")) not in known[0]:
        return None
    path = known[1]
    meta = reader.mapping(obj.get("metadata"), "metadata", obj, ["metadata"])
    name = reader.text(meta.get("name"), "metadata.name", meta, ["name"]) or \
        reader.text(meta.get("generateName"), "metadata.generateName", meta, ["generateName"])
    ns = reader.text(meta.get("namespace"), "metadata.namespace", meta, ["namespace"]) or namespace
    reader.no_template(name, "metadata.name", meta, ["name"])
    reader.no_template(ns, "metadata.namespace", meta, ["namespace"])

    # walk to the pod spec, collecting the annotations of every template on the way (outermost first)
    annotation_levels = [reader.annotations(meta, "metadata")]
    node: Mapping[str, Any] = obj
    where = ""
    for step in path:
        parent, where = node, f"{where}.{step}" if where else step
        node = reader.mapping(node.get(step), where, parent, [step])
        if not node:
            raise reader.error(where, "is missing: there is no pod spec to judge", parent, [step])
        if step in ("jobTemplate", "template"):
            annotation_levels.append(reader.annotations(
                reader.mapping(node.get("metadata"), f"{where}.metadata", node, ["metadata"]), f"{where}.metadata"))
    spec, spec_where = node, where
    if path[-1] == "template":
        spec_where = f"{where}.spec"
        spec = reader.mapping(node.get("spec"), spec_where, node, ["spec"])
        if not spec:
            raise reader.error(spec_where, "is missing: there is no pod spec to judge", node, ["spec"])

    pod = reader.pod_spec(spec, spec_where)
    annotations = _merge_annotations(annotation_levels)
    resource = Resource(kind=kind, name=name or "(unnamed)", namespace=ns,
                        api_version=str(obj.get("apiVersion")))
    return Workload(resource=resource, pod=pod, annotations=annotations,
                    source=source or SourceLocation(None, None))


def _merge_annotations(levels: list[dict[str, str]]) -> dict[str, str]:
    """Outer levels (the object) win over inner ones (templates), except that exemptions add up."""
    merged: dict[str, str] = {}
    for level in reversed(levels):  # innermost first, so outer levels overwrite
        merged.update(level)
    skips = [level[SKIP_ANNOTATION] for level in levels if SKIP_ANNOTATION in level]
    if len(skips) > 1:
        rules = [r.strip() for s in skips for r in s.split(",") if r.strip()]
        merged[SKIP_ANNOTATION] = ",".join(dict.fromkeys(rules))
    return merged


class _Reader:
    """Typed access to one object's fields, with errors that name the field and its line."""

    def __init__(self, obj: Any, source: SourceLocation | None) -> None:
        self.obj = obj
        self.file = source.file if source else None
        self.line = source.line if source else None
        kind = obj.get("kind") if isinstance(obj, Mapping) else None
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        name = meta.get("name") if isinstance(meta, Mapping) else None
        self.label = f"{kind} {name}" if kind and name else str(kind or "object")

    # errors -----------------------------------------------------------------
    def error(self, where: str, problem: str, node: Any = None, path: Sequence[str | int] = ()) -> ManifestError:
        line = line_of(node, path) if node is not None else None
        what = f"{where} {problem}" if where else problem
        if self.file is None and self.line is None:  # an API object: name it instead of a file
            return ManifestError(what, source=self.label)
        return ManifestError(f"{self.label}: {what}", source=self.file, line=line or self.line)

    def no_template(self, value: str | None, where: str, node: Any = None, path: Sequence[str | int] = ()) -> None:
        if value and TEMPLATE_MARKER.search(value):
            raise self.error(where, f"{value!r} is an unrendered template ({{{{ … }}}}); render it first, "
                             "e.g. `helm template … | canrun check -f -`", node, path)

    # typed fields -----------------------------------------------------------
    def mapping(self, value: Any, where: str, node: Any = None, path: Sequence[str | int] = ()) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(where, f"must be a mapping, not {_what(value)}", node, path)
        return value

    def sequence(self, value: Any, where: str, node: Any = None, path: Sequence[str | int] = ()) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(where, f"must be a list, not {_what(value)}", node, path)
        return value

    def text(self, value: Any, where: str, node: Any = None, path: Sequence[str | int] = ()) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        raise self.error(where, f"must be a string, not {_what(value)}", node, path)

    def integer(self, value: Any, where: str, node: Any = None, path: Sequence[str | int] = ()) -> int | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise self.error(where, f"must be an integer, not {_what(value)}", node, path)

    def boolean(self, value: Any, where: str, node: Any = None, path: Sequence[str | int] = ()) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise self.error(where, f"must be true or false, not {_what(value)}", node, path)

    def mode(self, value: Any, where: str, node: Any = None, path: Sequence[str | int] = ()) -> int | None:
        """A file mode: an int (YAML 1.1 already reads 0755 as octal) or a string like "0755"/"0o755"."""
        if value is None:
            return None
        mode: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            mode = value
        elif isinstance(value, str):
            text = value.strip().lower()
            try:
                if text.startswith("0o"):
                    mode = int(text[2:], 8)
                elif text.startswith("0") and len(text) > 1:
                    mode = int(text[1:], 8)
                else:
                    mode = int(text, 10)
            except ValueError:
                mode = None
        if mode is None or not 0 <= mode <= 0o7777:
            raise self.error(where, f"is not a file mode (0 to 0777, e.g. 0755 or 493): {value!r}", node, path)
        return mode

    def strings(self, value: Any, where: str, node: Any = None, path: Sequence[str | int] = ()) -> tuple[str, ...]:
        """A list of strings; numbers and booleans become their text, anything else is an error."""
        items = self.sequence(value, where, node, path)
        out: list[str] = []
        for index, item in enumerate(items):
            if item is None or isinstance(item, (dict, list)):
                raise self.error(f"{where}[{index}]", f"must be a string, not {_what(item)}", value, [index])
            out.append(self.text(item, f"{where}[{index}]") or "")
        return tuple(out)

    def annotations(self, meta: Mapping[str, Any], where: str) -> dict[str, str]:
        raw = self.mapping(meta.get("annotations"), f"{where}.annotations", meta, ["annotations"])
        return {str(k): self.text(v, f"{where}.annotations.{k}", raw, [k]) or "" for k, v in raw.items()}

    def string_map(self, value: Any, where: str, node: Any, path: Sequence[str | int]) -> dict[str, str]:
        raw = self.mapping(value, where, node, path)
        return {str(k): self.text(v, f"{where}.{k}", raw, [k]) or "" for k, v in raw.items()}

    # the pod spec -----------------------------------------------------------
    def pod_spec(self, spec: Mapping[str, Any], where: str) -> PodSpec:
        containers: list[Container] = []
        for key, kind in (("initContainers", ContainerKind.INIT), ("containers", ContainerKind.REGULAR),
                          ("ephemeralContainers", ContainerKind.EPHEMERAL)):
            items = self.sequence(spec.get(key), f"{where}.{key}", spec, [key])
            for index, item in enumerate(items):
                containers.append(self.container(item, kind, f"{where}.{key}[{index}]", items, index))
        if not any(c.kind is ContainerKind.REGULAR for c in containers):
            raise self.error(f"{where}.containers", "missing or empty: a pod needs at least one container",
                             spec, ["containers"])
        return PodSpec(
            containers=tuple(containers),
            volumes=tuple(self.volume(v, f"{where}.volumes[{i}]", spec.get("volumes"), i)
                          for i, v in enumerate(self.sequence(spec.get("volumes"), f"{where}.volumes", spec,
                                                              ["volumes"]))),
            security_context=self.security_context(spec.get("securityContext"), f"{where}.securityContext",
                                                   spec, pod=True),
            node_selector=self.string_map(spec.get("nodeSelector"), f"{where}.nodeSelector", spec, ["nodeSelector"]),
            required_node_terms=self.node_terms(spec, where),
            node_name=self.text(spec.get("nodeName"), f"{where}.nodeName", spec, ["nodeName"]) or None,
            image_pull_secrets=self.pull_secrets(spec, where),
            service_account=(self.text(spec.get("serviceAccountName"), f"{where}.serviceAccountName", spec,
                                       ["serviceAccountName"])
                             or self.text(spec.get("serviceAccount"), f"{where}.serviceAccount", spec,
                                          ["serviceAccount"]) or None),
        )

    def container(self, item: Any, kind: ContainerKind, where: str, parent: list[Any], index: int) -> Container:
        if not isinstance(item, Mapping):
            raise self.error(where, f"must be a container (a mapping), not {_what(item)}", parent, [index])
        name = self.text(item.get("name"), f"{where}.name", item, ["name"]) or f"(unnamed {kind.value} #{index + 1})"
        image = self.text(item.get("image"), f"{where}.image", item, ["image"])
        if not image or not image.strip():
            raise self.error(where, f"(container {name!r}) has no image", item)
        self.no_template(image, f"{where}.image", item, ["image"])
        command = item.get("command")
        args = item.get("args")
        for field_name, value in (("command", command), ("args", args)):
            if isinstance(value, str):
                raise self.error(f"{where}.{field_name}", f"must be a list of strings, not a string ({value[:40]!r}); "
                                 f"write {field_name}: [\"sh\", \"-c\", \"…\"] or a YAML list", item, [field_name])
        env_items = self.sequence(item.get("env"), f"{where}.env", item, ["env"])
        env: list[EnvVar] = []
        for i, entry in enumerate(env_items):
            ewhere = f"{where}.env[{i}]"
            if not isinstance(entry, Mapping):
                raise self.error(ewhere, f"must be a mapping with name and value, not {_what(entry)}", env_items, [i])
            ename = self.text(entry.get("name"), f"{ewhere}.name", entry, ["name"])
            if not ename:
                raise self.error(ewhere, "has no name", entry)
            if entry.get("valueFrom") is not None:
                env.append(EnvVar(ename, None))
            else:
                env.append(EnvVar(ename, self.text(entry.get("value"), f"{ewhere}.value", entry, ["value"]) or ""))
        mounts: list[VolumeMount] = []
        mount_items = self.sequence(item.get("volumeMounts"), f"{where}.volumeMounts", item, ["volumeMounts"])
        for i, mount in enumerate(mount_items):
            mwhere = f"{where}.volumeMounts[{i}]"
            if not isinstance(mount, Mapping):
                raise self.error(mwhere, f"must be a mapping, not {_what(mount)}", mount_items, [i])
            mname = self.text(mount.get("name"), f"{mwhere}.name", mount, ["name"])
            path = self.text(mount.get("mountPath"), f"{mwhere}.mountPath", mount, ["mountPath"])
            if not mname or not path:
                raise self.error(mwhere, "needs a name and a mountPath", mount)
            mounts.append(VolumeMount(
                name=mname, mount_path=path,
                sub_path=self.text(mount.get("subPath"), f"{mwhere}.subPath", mount, ["subPath"]) or None,
                read_only=bool(self.boolean(mount.get("readOnly"), f"{mwhere}.readOnly", mount, ["readOnly"]))))
        return Container(
            name=name, image=image.strip(), kind=kind,
            command=self.strings(command, f"{where}.command", item, ["command"]) if command is not None else None,
            args=self.strings(args, f"{where}.args", item, ["args"]) if args is not None else None,
            env=tuple(env),
            working_dir=self.text(item.get("workingDir"), f"{where}.workingDir", item, ["workingDir"]) or None,
            security_context=self.security_context(item.get("securityContext"), f"{where}.securityContext", item,
                                                   pod=False),
            volume_mounts=tuple(mounts),
            source=SourceLocation(self.file, line_of(item) or self.line) if self.file or self.line
            else SourceLocation(),
        )

    def security_context(self, value: Any, where: str, node: Any, *, pod: bool) -> SecurityContext | None:
        if value is None:
            return None
        sc = self.mapping(value, where, node, ["securityContext"])
        caps = self.mapping(sc.get("capabilities"), f"{where}.capabilities", sc, ["capabilities"])
        groups = self.sequence(sc.get("supplementalGroups"), f"{where}.supplementalGroups", sc,
                               ["supplementalGroups"]) if pod else []
        return SecurityContext(
            run_as_user=self.integer(sc.get("runAsUser"), f"{where}.runAsUser", sc, ["runAsUser"]),
            run_as_group=self.integer(sc.get("runAsGroup"), f"{where}.runAsGroup", sc, ["runAsGroup"]),
            run_as_non_root=self.boolean(sc.get("runAsNonRoot"), f"{where}.runAsNonRoot", sc, ["runAsNonRoot"]),
            capabilities_add=self.strings(caps.get("add"), f"{where}.capabilities.add", caps, ["add"]),
            capabilities_drop=self.strings(caps.get("drop"), f"{where}.capabilities.drop", caps, ["drop"]),
            privileged=None if pod else self.boolean(sc.get("privileged"), f"{where}.privileged", sc,
                                                     ["privileged"]),
            supplemental_groups=tuple(self.integer(g, f"{where}.supplementalGroups[{i}]", groups, [i]) or 0
                                      for i, g in enumerate(groups)),
            fs_group=self.integer(sc.get("fsGroup"), f"{where}.fsGroup", sc, ["fsGroup"]) if pod else None,
        )

    def volume(self, value: Any, where: str, parent: Any, index: int) -> Volume:
        if not isinstance(value, Mapping):
            raise self.error(where, f"must be a mapping, not {_what(value)}", parent, [index])
        name = self.text(value.get("name"), f"{where}.name", value, ["name"])
        if not name:
            raise self.error(where, "has no name", value)
        for key, kind in (("configMap", VolumeKind.CONFIG_MAP), ("secret", VolumeKind.SECRET),
                          ("projected", VolumeKind.PROJECTED), ("downwardAPI", VolumeKind.DOWNWARD_API)):
            if key in value and value[key] is not None:
                body = self.mapping(value[key], f"{where}.{key}", value, [key])
                default_mode = self.mode(body.get("defaultMode"), f"{where}.{key}.defaultMode", body, ["defaultMode"])
                unlisted = False
                if kind is VolumeKind.PROJECTED:
                    items, source, unlisted = self.projected_items(body, f"{where}.{key}")
                else:
                    items = self.items(body.get("items"), f"{where}.{key}.items", body)
                    source = self.text(body.get("secretName") if kind is VolumeKind.SECRET else body.get("name"),
                                       f"{where}.{key}.name", body) or None
                return Volume(name=name, kind=kind, default_mode=default_mode, items=items, source=source,
                              unlisted_keys=unlisted)
        for key, kind in (("emptyDir", VolumeKind.EMPTY_DIR), ("hostPath", VolumeKind.HOST_PATH),
                          ("persistentVolumeClaim", VolumeKind.PVC), ("image", VolumeKind.IMAGE)):
            if key in value:
                body = value.get(key)
                source = None
                if isinstance(body, Mapping):
                    source = body.get("path") or body.get("claimName") or body.get("reference")
                return Volume(name=name, kind=kind, source=str(source) if source is not None else None)
        return Volume(name=name, kind=VolumeKind.OTHER)

    def items(self, value: Any, where: str, node: Any) -> tuple[VolumeItem, ...]:
        entries = self.sequence(value, where, node, ["items"])
        out: list[VolumeItem] = []
        for i, entry in enumerate(entries):
            iwhere = f"{where}[{i}]"
            if not isinstance(entry, Mapping):
                raise self.error(iwhere, f"must be a mapping with key and path, not {_what(entry)}", entries, [i])
            path = self.text(entry.get("path"), f"{iwhere}.path", entry, ["path"])
            if not path:
                raise self.error(iwhere, "has no path", entry)
            out.append(VolumeItem(path=path, mode=self.mode(entry.get("mode"), f"{iwhere}.mode", entry, ["mode"])))
        return tuple(out)

    def projected_items(self, body: Mapping[str, Any],
                        where: str) -> tuple[tuple[VolumeItem, ...], str | None, bool]:
        """The listed items of every source, the sources' names, and whether a source adds unlisted keys."""
        sources = self.sequence(body.get("sources"), f"{where}.sources", body, ["sources"])
        items: list[VolumeItem] = []
        names: list[str] = []
        unlisted = False
        for i, src in enumerate(sources):
            swhere = f"{where}.sources[{i}]"
            if not isinstance(src, Mapping):
                raise self.error(swhere, f"must be a mapping, not {_what(src)}", sources, [i])
            for key, sub in src.items():
                if not isinstance(sub, Mapping):
                    continue
                if key == "serviceAccountToken":
                    path = self.text(sub.get("path"), f"{swhere}.{key}.path", sub, ["path"])
                    if path:
                        items.append(VolumeItem(path=path))
                    continue
                listed = self.items(sub.get("items"), f"{swhere}.{key}.items", sub)
                items.extend(listed)
                if key in ("configMap", "secret") and not listed:
                    unlisted = True  # every key of the object, names canrun cannot know
                if key in ("configMap", "secret") and sub.get("name"):
                    names.append(f"{key} {sub.get('name')}")
        return tuple(items), (", ".join(names) or None), unlisted

    def node_terms(self, spec: Mapping[str, Any], where: str) -> tuple[tuple[NodeSelectorRequirement, ...], ...]:
        affinity = self.mapping(spec.get("affinity"), f"{where}.affinity", spec, ["affinity"])
        node_affinity = self.mapping(affinity.get("nodeAffinity"), f"{where}.affinity.nodeAffinity", affinity,
                                     ["nodeAffinity"])
        rwhere = f"{where}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        required = self.mapping(node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution"), rwhere,
                                node_affinity, ["requiredDuringSchedulingIgnoredDuringExecution"])
        if not required:
            return ()
        terms = self.sequence(required.get("nodeSelectorTerms"), f"{rwhere}.nodeSelectorTerms", required,
                              ["nodeSelectorTerms"])
        if not terms:
            return ((),)  # no term: no node matches (an empty term matches nothing)
        out: list[tuple[NodeSelectorRequirement, ...]] = []
        for t, term in enumerate(terms):
            twhere = f"{rwhere}.nodeSelectorTerms[{t}]"
            body = self.mapping(term, twhere, terms, [t])
            reqs: list[NodeSelectorRequirement] = []
            for key, is_field in (("matchExpressions", False), ("matchFields", True)):
                exprs = self.sequence(body.get(key), f"{twhere}.{key}", body, [key])
                for e, expr in enumerate(exprs):
                    ewhere = f"{twhere}.{key}[{e}]"
                    expr = self.mapping(expr, ewhere, exprs, [e])
                    label = self.text(expr.get("key"), f"{ewhere}.key", expr, ["key"])
                    operator = self.text(expr.get("operator"), f"{ewhere}.operator", expr, ["operator"])
                    if not label:
                        raise self.error(ewhere, "has no key", expr)
                    if operator not in _OPERATORS:
                        raise self.error(f"{ewhere}.operator", f"{operator!r} is not one of "
                                         f"{', '.join(sorted(_OPERATORS))}", expr, ["operator"])
                    values = self.strings(expr.get("values"), f"{ewhere}.values", expr, ["values"])
                    reqs.append(NodeSelectorRequirement(label, operator, values, match_field=is_field))
            out.append(tuple(reqs))
        return tuple(out)

    def pull_secrets(self, spec: Mapping[str, Any], where: str) -> tuple[str, ...]:
        entries = self.sequence(spec.get("imagePullSecrets"), f"{where}.imagePullSecrets", spec, ["imagePullSecrets"])
        names: list[str] = []
        for i, entry in enumerate(entries):
            if isinstance(entry, Mapping):
                name = self.text(entry.get("name"), f"{where}.imagePullSecrets[{i}].name", entry, ["name"])
            else:  # a bare string is a common mistake the API rejects; the intent is plain
                name = self.text(entry, f"{where}.imagePullSecrets[{i}]", entries, [i])
            if name:
                names.append(name)
        return tuple(names)


def _what(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


__all__ = ["POD_KINDS", "SKIP_ANNOTATION", "WorkloadSet", "workload_from_object",
           "workloads_from_load"]
