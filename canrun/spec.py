"""Plain data for what the engine judges: workloads, their pod specs and containers.

``kube/`` turns Kubernetes objects (from YAML files, AdmissionReviews or the API)
into these dataclasses, so that ``checks/`` and ``validator`` never see a dict
shaped like the Kubernetes API, a YAML node or a client model.  Fields keep the
Kubernetes meaning: ``None`` is "not set" (and therefore defaulted by the image
or the runtime), which is different from an empty list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class SourceLocation:
    """Where an object came from, so a finding can name ``file:line``."""

    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.file is None:
            return "<input>"
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Resource:
    """The Kubernetes object a finding is about."""

    kind: str
    name: str
    namespace: str | None = None
    api_version: str | None = None

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {ns}{self.name}"


@dataclass(frozen=True)
class EnvVar:
    """A container env entry; ``value`` is None when it comes from ``valueFrom`` (unknowable here)."""

    name: str
    value: str | None


@dataclass(frozen=True)
class SecurityContext:
    """The fields of a pod or container securityContext that decide who execs what."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    capabilities_add: tuple[str, ...] = ()
    capabilities_drop: tuple[str, ...] = ()
    #: Container level only: every capability, whatever ``capabilities`` says.
    privileged: bool | None = None
    #: Pod level only.
    supplemental_groups: tuple[int, ...] = ()
    fs_group: int | None = None


class VolumeKind(str, Enum):
    CONFIG_MAP = "configMap"
    SECRET = "secret"
    PROJECTED = "projected"
    DOWNWARD_API = "downwardAPI"
    EMPTY_DIR = "emptyDir"
    HOST_PATH = "hostPath"
    PVC = "persistentVolumeClaim"
    IMAGE = "image"
    OTHER = "other"


@dataclass(frozen=True)
class VolumeItem:
    """One projected file: its path inside the volume and its mode (None: the volume's default)."""

    path: str
    mode: int | None = None


@dataclass(frozen=True)
class Volume:
    """A pod volume; for configMap/secret/projected/downwardAPI the file modes are known."""

    name: str
    kind: VolumeKind
    #: ``defaultMode`` (Kubernetes default 0644 when unset).
    default_mode: int | None = None
    #: ``items`` (or every projected source's items); empty = every key, unknown names.
    items: tuple[VolumeItem, ...] = ()
    #: A projected source without ``items`` adds every key of its object beside the listed items: a name
    #: that is not listed may still exist (judged by ``default_mode``, "if the key exists").
    unlisted_keys: bool = False
    #: The source object (configMap/secret name) for messages.
    source: str | None = None


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    sub_path: str | None = None
    read_only: bool = False


class ContainerKind(str, Enum):
    INIT = "initContainer"
    REGULAR = "container"
    EPHEMERAL = "ephemeralContainer"


@dataclass(frozen=True)
class Container:
    """One container as the manifest states it (not yet merged with its image)."""

    name: str
    image: str
    kind: ContainerKind = ContainerKind.REGULAR
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    env: tuple[EnvVar, ...] = ()
    working_dir: str | None = None
    security_context: SecurityContext | None = None
    volume_mounts: tuple[VolumeMount, ...] = ()
    source: SourceLocation = field(default_factory=SourceLocation)


@dataclass(frozen=True)
class NodeSelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()
    #: A ``matchFields`` requirement: ``key`` names a node field (``metadata.name``), not a label.
    match_field: bool = False


@dataclass(frozen=True)
class PodSpec:
    containers: tuple[Container, ...]
    volumes: tuple[Volume, ...] = ()
    security_context: SecurityContext | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    #: requiredDuringSchedulingIgnoredDuringExecution: OR of terms, each an AND of requirements.
    required_node_terms: tuple[tuple[NodeSelectorRequirement, ...], ...] = ()
    node_name: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str | None = None


@dataclass(frozen=True)
class Workload:
    """A Kubernetes object that carries a pod spec (Pod, Deployment, CronJob …)."""

    resource: Resource
    pod: PodSpec
    annotations: dict[str, str] = field(default_factory=dict)
    source: SourceLocation = field(default_factory=SourceLocation)
