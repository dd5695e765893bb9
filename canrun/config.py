"""Settings: what every door (check, inspect, serve, audit) runs with, composed once and frozen.

The settings are a few small frozen dataclasses, one per concern (which nodes,
which policy, how to reach registries, where to cache, how the webhook
answers), composed into one ``Settings`` that every door hands down; nothing
changes it afterwards, so what a door was started with is what it runs with.

Each field says, in its ``setting(...)`` declaration, where its value may come
from: a command-line flag (declared from that same declaration by
``add_flags``), an attribute of the loaded config file (``FileConfig``) and an
environment variable.  ``compose`` is the one function that reads them, always
in the order flag > config file > environment > default.  Adding a setting is
adding one field to its group; a new config-file key also needs its line in
``config_file``'s schema, which is the file format's documentation.

Front ends call ``canrun.settings.settings_for`` and ``open_engine``; they never wire a
registry client, a cache and a validator together themselves, so the doors
cannot drift.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from canrun.errors import UsageError
from canrun.exemptions import Exemption
from canrun.findings import Severity
from canrun.image.cache import DEFAULT_MAX_BYTES, Cache, default_root
from canrun.image.layout import OVERLAYFS, SNAPSHOTTERS
from canrun.image.limits import Limits
from canrun.image.store import ImageStore
from canrun.platform import DEFAULT_CONTAINERD_VERSION, DEFAULT_PLATFORMS, Platform, parse_containerd_version, \
    parse_platforms
from canrun.credential_provider import CredentialBackend, load_provider_config
from canrun.hosts_dir import HostsBackend, load_hosts_dir
from canrun.registry.base import Descriptor, RegistryBackend
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.registry.crane import CraneBackend
from canrun.registry.reference import Reference
from canrun.registry.ssrf import parse_networks
from canrun.validator import Validator

#: The doors: every one composes its settings with ``settings_for``.
DOORS = ("check", "inspect", "audit", "serve")
RUNTIMES = ("containerd", "cri-o", "docker")
REGISTRY_BACKENDS = ("native", "crane")
MODES = ("enforce", "warn", "audit", "pin", "off")
#: Names of the checked-in settings file (``canrun.config_file`` reads and validates it).
FILENAMES = (".canrun.yaml", ".canrun.yml")
#: Doors that look for a ``.canrun.yaml`` from the working directory up when ``--config`` is not given;
#: the webhook and the audit run in a cluster, where the working directory means nothing.
DISCOVERING_DOORS = ("check", "inspect")


# -- how a setting is declared -----------------------------------------------------------------------

@dataclass(frozen=True)
class Flag:
    """A setting's command-line spelling: argparse's names and keywords (``add_flags`` adds dest/default)."""

    names: tuple[str, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: The doors that offer the flag.
    doors: tuple[str, ...] = DOORS


@dataclass(frozen=True)
class Source:
    """Where one setting's value may come from, read by ``compose`` in this order."""

    flag: Flag | None = None
    #: Read the flag of another setting too (``"policy.strict"``): one flag, two consumers.
    flag_of: str | None = None
    #: The ``FileConfig`` attribute holding the config file's value.
    file: str | None = None
    #: An environment variable.
    env: str | None = None
    #: Turns the flag's or the variable's raw value into the setting's type (raises UsageError).
    parse: Callable[[Any], Any] | None = None
    #: For tuples: the flag's items, then the file's, instead of the flag replacing the file.
    merge: bool = False
    #: Defaults that differ by door (the webhook's SSRF guard is on).
    door_defaults: Mapping[str, Any] = field(default_factory=dict)


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, flag: Flag | None = None,
            flag_of: str | None = None, file: str | None = None, env: str | None = None,
            parse: Callable[[Any], Any] | None = None, merge: bool = False,
            door_defaults: Mapping[str, Any] | None = None) -> Any:
    """A dataclass field that also says where ``compose`` may read its value."""
    source = Source(flag=flag, flag_of=flag_of, file=file, env=env, parse=parse, merge=merge,
                    door_defaults=door_defaults or {})
    return field(default=default, default_factory=default_factory, metadata={"source": source})


def _group() -> Any:
    return {"group": True}


def _frozen_map(obj: object, *names: str) -> None:
    for name in names:
        object.__setattr__(obj, name, MappingProxyType(dict(getattr(obj, name))))


def _platforms(raw: list[str]) -> tuple[Platform, ...]:
    return tuple(parse_platforms(raw))


_SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}


def parse_size(text: str) -> int:
    """``805306368``, ``768Mi``, ``1.5Gi``, ``500M``: bytes, as Kubernetes writes quantities (``sizeLimit``)."""
    value = str(text).strip()
    number = value.rstrip("KMGkmgi")
    unit = value[len(number):].lower()
    try:
        amount = float(number)
    except ValueError:
        amount = -1.0
    if unit not in _SIZE_UNITS or amount <= 0:
        raise UsageError(f"not a size: {text!r} (bytes, or a number with K, M, G, Ki, Mi or Gi)")
    return int(amount * _SIZE_UNITS[unit])


def _networks(raw: list[str]) -> tuple[str, ...]:
    parse_networks(raw)  # a typo is a usage error at start-up, not at the first admission
    return tuple(raw)


# -- the groups --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeSettings:
    """The nodes workloads are judged for."""

    #: Node platforms when no cluster says which (``check --kubeconfig`` and the webhook's node watch do).
    platforms: tuple[Platform, ...] = setting(
        DEFAULT_PLATFORMS, file="platforms", parse=_platforms,
        flag=Flag(("--platform",), {"action": "append", "metavar": "P[,P...]",
                                    "help": "node platforms (os/arch[/variant], comma-separated or repeated); "
                                            "default linux/amd64"}))
    #: The container runtime whose capability handling is modelled.
    runtime: str = setting(
        "containerd", file="runtime",
        flag=Flag(("--runtime",), {"choices": RUNTIMES,
                                   "help": "container runtime model for capabilities (default: containerd)"}))
    #: Which containerd the nodes run: 2.1+ pulls only the node's exact platform from an index (its transfer
    #: service), 2.0 and earlier (or 2.1+ with ``use_local_image_pull``) fall back to 386 / 32-bit arm.
    containerd_version: str = setting(
        DEFAULT_CONTAINERD_VERSION, file="containerd_version",
        flag=Flag(("--containerd-version",), {
            "metavar": "X.Y",
            "help": "containerd the nodes run: 2.1+ pulls only the node's exact platform from an index, 2.0 and "
                    "earlier (or use_local_image_pull) fall back to 386 / 32-bit arm "
                    f"(default: {DEFAULT_CONTAINERD_VERSION})"}))

    #: How the nodes lay image layers out (containerd's snapshotter): decides how layers merge.
    snapshotter: str = setting(
        OVERLAYFS, file="snapshotter",
        flag=Flag(("--snapshotter",), {
            "choices": SNAPSHOTTERS,
            "help": "containerd snapshotter the nodes use: overlayfs unpacks each layer into its own directory "
                    "(a layer's bin/tool hides a lower /bin symlink; a hard link to a lower layer fails the "
                    "pull), native unpacks into one tree (default: overlayfs)"}))

    def __post_init__(self) -> None:
        parse_containerd_version(self.containerd_version)  # a typo is a usage error at start-up
        if self.snapshotter not in SNAPSHOTTERS:
            raise UsageError(f"unknown snapshotter {self.snapshotter!r}: expected one of {', '.join(SNAPSHOTTERS)}")
        if self.runtime not in RUNTIMES:
            raise UsageError(f"unknown runtime {self.runtime!r}: expected one of {', '.join(RUNTIMES)}")
        if not self.platforms:
            raise UsageError("no platform given: expected os/arch[/variant], e.g. linux/amd64")


@dataclass(frozen=True)
class PolicySettings:
    """What counts as an error."""

    #: Images that cannot be read are errors (the webhook denies them in enforce mode).
    strict: bool = setting(
        False, file="strict",
        flag=Flag(("--strict",), {"action": argparse.BooleanOptionalAction,
                                  "help": "images that cannot be read (or, for serve, not within the deadline) "
                                          "are errors; serve denies them in enforce mode (default: warnings, "
                                          "or the config file's)"}))
    #: rule id -> severity, or None to drop the rule's findings (the file's ``rules``; ``validator.override_rules``).
    rules: Mapping[str, Severity | None] = setting(default_factory=dict, file="rules")
    #: The file's ``exceptions``: findings workloads are exempt from, beside the ``canrun.io/skip`` annotation.
    exceptions: tuple[Exemption, ...] = setting((), file="exceptions")

    def __post_init__(self) -> None:
        _frozen_map(self, "rules")


@dataclass(frozen=True)
class RegistryAccess:
    """How registries are reached."""

    #: Hosts talked to over plain HTTP.
    insecure: tuple[str, ...] = setting(
        (), file="insecure_registries", parse=tuple, merge=True,
        flag=Flag(("--insecure-registry",), {"action": "append", "metavar": "HOST",
                                              "help": "talk plain HTTP to this registry host[:port] (repeatable)"}))
    #: Extra CA bundle for registry TLS.
    ca_file: Path | None = setting(
        None, file="ca_file", flag=Flag(("--ca-file",), {"type": Path, "metavar": "FILE",
                                                         "help": "extra CA bundle for registry TLS"}))
    #: docker ``config.json`` with registry credentials (default: ``$DOCKER_CONFIG`` or ``~/.docker``).
    docker_config: Path | None = setting(
        None, file="docker_config",
        flag=Flag(("--docker-config",), {"type": Path, "metavar": "FILE",
                                         "help": "docker config.json with registry credentials"}))
    #: Seconds for one registry request.
    timeout: float = setting(
        30.0, file="timeout", flag=Flag(("--timeout",), {"type": float, "metavar": "S",
                                                         "help": "registry timeout in seconds (default 30)"}))
    #: registry host -> mirror ``host[:port][/path-prefix]`` that is read instead.
    mirrors: Mapping[str, str] = setting(default_factory=dict, file="mirrors")
    #: containerd's registry host directory (``/etc/containerd/certs.d``: ``<host>/hosts.toml``), see hosts_dir.
    hosts_dir: Path | None = setting(
        None, file="hosts_dir",
        flag=Flag(("--hosts-dir",), {"type": Path, "metavar": "DIR",
                                     "help": "read registry mirrors and TLS settings from containerd's hosts "
                                             "directory (DIR/<host>/hosts.toml, as /etc/containerd/certs.d)"}))
    #: The kubelet's ``CredentialProviderConfig``: exec plugins giving registry credentials (credential_provider).
    credential_provider_config: Path | None = setting(
        None, file="credential_provider_config",
        flag=Flag(("--image-credential-provider-config",), {
            "type": Path, "metavar": "FILE",
            "help": "the kubelet's CredentialProviderConfig: run its exec plugins for registry credentials"}))
    #: Where the plugins of ``credential_provider_config`` are (the kubelet's flag of the same name).
    credential_provider_bin_dir: Path | None = setting(
        None, file="credential_provider_bin_dir",
        flag=Flag(("--image-credential-provider-bin-dir",), {
            "type": Path, "metavar": "DIR", "help": "directory of the credential provider plugins"}))
    #: How registries are read: canrun's own client, or go-containerregistry's ``crane`` CLI.
    backend: str = setting(
        "native", file="registry_backend",
        flag=Flag(("--registry-backend",), {"choices": REGISTRY_BACKENDS, "metavar": "NAME",
                                             "help": "read registries with canrun's client (native, the default) "
                                                     "or through the crane CLI (crane)"}))
    #: Refuse registry hosts resolving to loopback/link-local/metadata or ``blocked_networks``: a pod spec
    #: names the image, so the webhook must not be a way into the cluster's network.
    ssrf_guard: bool = setting(False, door_defaults={"serve": True})
    #: Registry hosts exempt from the SSRF guard.
    allow_hosts: tuple[str, ...] = setting(
        (), parse=tuple,
        flag=Flag(("--allow-registry-host",), {"action": "append", "metavar": "HOST",
                                                "help": "registry host exempt from the SSRF guard (repeatable)"},
                  doors=("serve",)))
    #: Extra CIDRs the SSRF guard refuses; empty = the guard's defaults (the cluster's ranges are added at run
    #: time by the webhook, see ``webhook.main.guarded_networks``).
    blocked_networks: tuple[str, ...] = setting(
        (), parse=_networks,
        flag=Flag(("--blocked-network",), {"action": "append", "metavar": "CIDR",
                                            "help": "refuse registry hosts resolving into CIDR, like the "
                                                    "cluster's Service range (repeatable; the ranges of the "
                                                    "cluster's ServiceCIDR objects are added when the API "
                                                    "serves them)"},
                  doors=("serve",)))

    def __post_init__(self) -> None:
        _frozen_map(self, "mirrors")
        if self.backend not in REGISTRY_BACKENDS:
            raise UsageError(f"unknown registry backend {self.backend!r}: expected one of "
                             f"{', '.join(REGISTRY_BACKENDS)}")

    def client_settings(self, *, extra_blocked: tuple[str, ...] = ()) -> RegistrySettings:
        """The registry client's settings; ``extra_blocked`` are ranges found at run time (the cluster's)."""
        blocked = tuple(dict.fromkeys((*self.blocked_networks, *extra_blocked)))
        return RegistrySettings(
            insecure_hosts=frozenset(self.insecure),
            ca_file=str(self.ca_file) if self.ca_file else None,
            timeout=self.timeout,
            docker_config=str(self.docker_config) if self.docker_config else None,
            allow_hosts=frozenset(self.allow_hosts),
            ssrf_guard=self.ssrf_guard,
            blocked_networks=blocked,
        )


@dataclass(frozen=True)
class CacheSettings:
    """The on-disk cache of layer indexes and merged views."""

    #: Cache root; the default (``$CANRUN_CACHE_DIR``, else the XDG cache) is resolved by the image cache.
    dir: Path = setting(
        default_factory=default_root,
        flag=Flag(("--cache-dir",), {"type": Path, "metavar": "DIR",
                                     "help": "cache directory (default $CANRUN_CACHE_DIR or ~/.cache/canrun)"}))
    #: Read and write the cache at all.
    enabled: bool = setting(
        True, flag=Flag(("--no-cache",), {"action": "store_const", "const": False,
                                          "help": "do not read or write the on-disk cache"}))
    #: Bound of the directory: pruned (least recently used first) to 80% of it when over. In a pod, size it from
    #: the cache volume -- the manifests give it 3/4 of the emptyDir's sizeLimit -- or the kubelet evicts the pod.
    max_bytes: int = setting(
        DEFAULT_MAX_BYTES, parse=parse_size,
        flag=Flag(("--cache-max-bytes",), {"metavar": "SIZE",
                                           "help": "bound of the on-disk cache, e.g. 768Mi (default 2Gi); pruned "
                                                   "to 80%% when over. In a pod, keep it below the cache "
                                                   "volume's sizeLimit"}))
    #: A Redis every replica (and CI runs, and the audit) shares beside the local directory: records are written
    #: to both, read from the directory first, then Redis (``image/redis_store.py``).  None: local only.
    url: str | None = setting(
        None, file="cache_url", env="CANRUN_CACHE_URL",
        flag=Flag(("--cache-url",), {"metavar": "URL",
                                     "help": "share the cache through Redis: redis://HOST[:PORT][/DB] or "
                                             "rediss:// (TLS); the password from the URL, "
                                             "--cache-password-file or $CANRUN_CACHE_PASSWORD"}))
    #: A file holding the Redis password (a mounted Secret); else ``$CANRUN_CACHE_PASSWORD``, else the URL's.
    password_file: Path | None = setting(
        None, flag=Flag(("--cache-password-file",), {"type": Path, "metavar": "FILE",
                                                     "help": "file holding the --cache-url password "
                                                             "(e.g. a mounted Secret)"}))

    #: CA bundle that verifies a ``rediss://`` server (default: the system's trust store).
    ca_file: Path | None = setting(
        None, flag=Flag(("--cache-ca-file",), {"type": Path, "metavar": "FILE",
                                               "help": "CA bundle for a rediss:// --cache-url (default: the "
                                                       "system's)"}))
    #: The Redis password from the environment (``$CANRUN_CACHE_PASSWORD``, e.g. a Secret's ``secretKeyRef``).
    password: str | None = setting(None, env="CANRUN_CACHE_PASSWORD")

    def __post_init__(self) -> None:
        if self.url is not None:
            from canrun.image.redis_store import parse_url

            # a typo is a usage error at start-up; the passwords are remembered for redaction
            parse_url(self.url, password=self.password)

    def __repr__(self) -> str:
        return (f"CacheSettings(dir={str(self.dir)!r}, enabled={self.enabled}, max_bytes={self.max_bytes}, "
                f"url={self.shown_url!r}, password_file={self.password_file!r}, ca_file={self.ca_file!r})")

    @property
    def shown_url(self) -> str | None:
        """``url`` as it may be logged: without its password."""
        if self.url is None:
            return None
        from canrun.image.redis_store import parse_url, safe_url

        return safe_url(parse_url(self.url))

    def shared_store(self) -> Any:
        """The ``RedisStore`` of ``url`` (None without one); imports the client only when there is a URL."""
        if self.url is None or not self.enabled:
            return None
        from canrun.image.redis_store import RedisStore, parse_url, read_password

        password = read_password(self.password_file) or self.password
        return RedisStore(parse_url(self.url, password=password), ca_file=self.ca_file)


@dataclass(frozen=True)
class WebhookSettings:
    """How ``canrun serve`` answers admissions."""

    #: Mode for namespaces without a ``canrun.io/mode`` label.
    default_mode: str = setting(
        "warn", flag=Flag(("--mode",), {"choices": [m for m in MODES if m != "off"],
                                        "help": "mode for namespaces without the canrun.io/mode label "
                                                "(default warn)"}, doors=("serve",)))
    #: Seconds to answer within (the API server's timeoutSeconds is 10).
    deadline: float = setting(
        5.0, flag=Flag(("--deadline",), {"type": float, "metavar": "S",
                                         "help": "answer within S seconds; unverified images are allowed with a "
                                                 "warning (default 5)"}, doors=("serve",)))
    #: Images that cannot be read (or not in time) deny in enforce mode instead of warning: ``--strict``.
    strict: bool = setting(False, flag_of="policy.strict", file="strict")
    #: How long a verdict for the same pod spec is reused (tags can move: keep it short).
    verdict_ttl: float = setting(
        60.0, flag=Flag(("--verdict-ttl",), {"type": float, "metavar": "S",
                                             "help": "reuse a verdict for the same pod spec for S seconds "
                                                     "(default 60)"}, doors=("serve",)))
    #: Verdicts (and shaped answers) kept.
    verdict_cache_size: int = 4096
    #: Index the images of running pods at start-up and as pods appear (a pod watch); a cluster that cannot
    #: watch is listed every ``warm_interval`` seconds.  0: no warm-up.
    warm_interval: float = 300.0
    warm_concurrency: int = 4
    #: Record Kubernetes Events for findings in warn and audit modes.
    events: bool = setting(
        True, flag=Flag(("--no-events",), {"action": "store_const", "const": False,
                                           "help": "do not record Events in warn and audit modes"},
                        doors=("serve",)))

    def __post_init__(self) -> None:
        if self.default_mode not in MODES:
            raise UsageError(f"unknown mode {self.default_mode!r}: expected one of {', '.join(MODES)}")
        if not 0 < self.deadline <= 30:
            raise UsageError(f"--deadline must be between 0 and 30 seconds, got {self.deadline}")


def _globs(raw: list[str]) -> tuple[str, ...]:
    return tuple(raw)


@dataclass(frozen=True)
class InputSettings:
    """What ``check`` reads of the paths it is given."""

    #: Globs of paths not read in the directories walked (``tests/data``, ``charts/*/ci``, ``*.json``); the flag's
    #: globs add to the config file's ``exclude:``.
    exclude: tuple[str, ...] = setting(
        (), file="exclude", parse=_globs, merge=True,
        flag=Flag(("--exclude",), {"action": "append", "metavar": "GLOB",
                                   "help": "do not read paths matching GLOB in the directories given (repeatable; "
                                           "relative paths like tests/data or charts/*/ci, or names like "
                                           "'*.json'); adds to the config file's exclude"},
                  doors=("check",)))


@dataclass(frozen=True)
class Settings:
    """Everything a door runs with; built by ``compose`` (or directly, in tests and embedding code)."""

    nodes: NodeSettings = field(default_factory=NodeSettings, metadata=_group())
    policy: PolicySettings = field(default_factory=PolicySettings, metadata=_group())
    registry: RegistryAccess = field(default_factory=RegistryAccess, metadata=_group())
    cache: CacheSettings = field(default_factory=CacheSettings, metadata=_group())
    webhook: WebhookSettings = field(default_factory=WebhookSettings, metadata=_group())
    inputs: InputSettings = field(default_factory=InputSettings, metadata=_group())
    #: Safety limits for reading layers (not configurable from outside: they bound hostile input).
    limits: Limits = field(default_factory=Limits)
    #: The config file the settings were read from.
    config_file: Path | None = None
    #: Settings given by a flag or the config file rather than defaulted, as ``group.field``.
    given: frozenset[str] = frozenset()

    def was_given(self, path: str) -> bool:
        return path in self.given


# -- composing ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileConfig:
    """A loaded ``.canrun.yaml`` (all None/empty when there is none): plain data for ``compose``."""

    path: Path | None = None
    platforms: tuple[Platform, ...] | None = None
    runtime: str | None = None
    containerd_version: str | None = None
    snapshotter: str | None = None
    strict: bool | None = None
    timeout: float | None = None
    insecure_registries: tuple[str, ...] = ()
    ca_file: Path | None = None
    docker_config: Path | None = None
    hosts_dir: Path | None = None
    credential_provider_config: Path | None = None
    credential_provider_bin_dir: Path | None = None
    #: registry host -> mirror ``host[:port][/path-prefix]`` read instead.
    mirrors: dict[str, str] = field(default_factory=dict)
    #: rule id -> severity, or None for a rule that is turned off.
    rules: dict[str, Severity | None] = field(default_factory=dict)
    #: Globs of paths ``check`` does not read in the directories it walks.
    exclude: tuple[str, ...] = ()
    #: The central exemption list.
    exceptions: tuple[Exemption, ...] = ()
    #: ``registries.backend``: ``native`` or ``crane``.
    registry_backend: str | None = None
    #: ``cache_url``: the Redis every replica shares.
    cache_url: str | None = None


def _groups() -> list[tuple[str, type]]:
    return [(f.name, f.default_factory) for f in fields(Settings) if f.metadata.get("group")]  # type: ignore[misc]


def _sources(group: type) -> list[tuple[str, Source]]:
    return [(f.name, f.metadata["source"]) for f in fields(group) if "source" in f.metadata]


_UNSET: Any = object()


def _empty(value: object) -> bool:
    return value is None or value == () or value == {} or value == []


def compose(door: str, flags: Mapping[str, Any], file: FileConfig | None = None,
            environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of ``door`` from its parsed flags (``add_flags``'s dests), the config file and the environment.

    Each setting takes the first of: its flag, the file's value, its environment
    variable, the door's default, the field's default; a ``merge`` tuple joins flag
    and file.  An explicit ``--strict``/``--no-strict`` also decides
    image-unresolvable's severity over the file's ``rules``.
    """
    file = file or FileConfig()
    environ = os.environ if environ is None else environ
    given: set[str] = set()
    groups: dict[str, Any] = {}
    for group_name, group in _groups():
        values: dict[str, Any] = {}
        for name, src in _sources(group):
            path = f"{group_name}.{name}"
            dest = src.flag_of or (path if src.flag else None)
            raw = flags.get(dest) if dest else None
            from_flag = _UNSET if raw is None else (src.parse(raw) if src.parse else raw)
            from_file = getattr(file, src.file) if src.file else None
            from_file = _UNSET if _empty(from_file) else from_file
            env_raw = environ.get(src.env) if src.env else None
            from_env = _UNSET if not env_raw else (src.parse(env_raw) if src.parse else env_raw)
            if src.merge and from_flag is not _UNSET and from_file is not _UNSET:
                value = tuple(dict.fromkeys((*from_flag, *from_file)))
            else:
                value = next((v for v in (from_flag, from_file, from_env) if v is not _UNSET), _UNSET)
            if value is not _UNSET:
                if from_flag is not _UNSET or from_file is not _UNSET:
                    given.add(path)
                values[name] = value
            elif door in src.door_defaults:
                values[name] = src.door_defaults[door]
        groups[group_name] = values
    if flags.get("policy.strict") is not None:
        groups["policy"]["rules"] = rules_with_flags(groups["policy"].get("rules", {}), strict_flag=True)
    return Settings(**{name: group(**groups[name]) for name, group in _groups()},
                    config_file=file.path, given=frozenset(given))


def add_flags(parser: argparse.ArgumentParser, door: str) -> None:
    """Declare the flags of every setting ``door`` offers (dest ``group.field``, default None = not given)."""
    for group_name, group in _groups():
        for name, src in _sources(group):
            if src.flag is not None and door in src.flag.doors:
                parser.add_argument(*src.flag.names, dest=f"{group_name}.{name}", default=None, **src.flag.kwargs)
    parser.add_argument("--config", type=Path, metavar="FILE", dest="config_file",
                        help="settings file (.canrun.yaml format)" + (
                            "; default: the nearest .canrun.yaml from the working directory up"
                            if door in DISCOVERING_DOORS else ""))


def find_config(start: Path) -> Path | None:
    """The nearest ``.canrun.yaml`` (or ``.yml``) in ``start`` or any directory above it."""
    start = start.resolve()
    for directory in (start, *start.parents):
        for name in FILENAMES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def rules_with_flags(rules: Mapping[str, Severity | None], *,
                     strict_flag: bool | None) -> dict[str, Severity | None]:
    """An explicit ``--strict``/``--no-strict`` decides image-unresolvable's severity over the file's rules."""
    if strict_flag is None:
        return dict(rules)
    return {k: v for k, v in rules.items() if k != "image-unresolvable"}


# -- the engine --------------------------------------------------------------------------------------

@dataclass
class Engine:
    settings: Settings
    client: RegistryClient
    store: ImageStore
    validator: Validator


@asynccontextmanager
async def open_engine(settings: Settings, *, extra_blocked: tuple[str, ...] = ()) -> AsyncIterator[Engine]:
    """A registry client, cache, image store and validator wired from settings; closed on exit.

    ``extra_blocked``: networks the SSRF guard refuses besides the settings' (found at run time).
    """
    hosts = load_hosts_dir(settings.registry.hosts_dir) if settings.registry.hosts_dir else None
    bundle = _ca_bundle(settings.registry.ca_file, hosts.ca_files) if hosts and hosts.ca_files else None
    access = settings.registry
    if hosts is not None:
        access = replace(access, insecure=tuple(dict.fromkeys((*access.insecure, *hosts.insecure_hosts))),
                         ca_file=bundle or access.ca_file)
    client = RegistryClient(access.client_settings(extra_blocked=extra_blocked))
    store: ImageStore | None = None
    try:
        inner: RegistryBackend = client
        if access.backend == "crane":
            if access.ssrf_guard:
                raise UsageError("--registry-backend crane cannot apply the SSRF guard to the redirects and token "
                                 "realms crane follows itself; the webhook reads registries with the native backend")
            inner = CraneBackend(access.client_settings(extra_blocked=extra_blocked))
        backend: RegistryBackend = HostsBackend(inner, hosts) if hosts is not None else inner
        if access.credential_provider_config is not None:
            providers = load_provider_config(access.credential_provider_config, access.credential_provider_bin_dir)
            backend = CredentialBackend(backend, providers)
        mirrors = settings.registry.mirrors
        backend = MirroredBackend(backend, mirrors) if mirrors else backend
        cache = Cache(settings.cache.dir, max_bytes=settings.cache.max_bytes,
                      shared=settings.cache.shared_store()) if settings.cache.enabled else None
        store = ImageStore(backend, cache=cache, limits=settings.limits, snapshotter=settings.nodes.snapshotter)
        yield Engine(settings, client, store,
                     Validator(store, runtime=settings.nodes.runtime, strict=settings.policy.strict,
                               containerd_version=settings.nodes.containerd_version,
                               rules=settings.policy.rules, exemptions=settings.policy.exceptions))
    finally:
        if store is not None:
            await store.aclose()  # reads still running end before the client they use is closed
            if store.cache is not None:
                await asyncio.to_thread(store.cache.close)  # the shared store's queued writes, within a bound
        await client.aclose()
        if bundle is not None:
            bundle.unlink(missing_ok=True)


def _ca_bundle(ca_file: Path | None, extra: tuple[Path, ...]) -> Path:
    """One CA bundle of ``--ca-file`` and the hosts directory's ``ca`` files (the client keeps one trust store)."""
    import tempfile

    parts = [p.read_bytes() for p in ((ca_file,) if ca_file else ()) + extra]
    with tempfile.NamedTemporaryFile("wb", prefix="canrun-ca-", suffix=".pem", delete=False) as fh:
        fh.write(b"\n".join(parts))
    return Path(fh.name)


class MirroredBackend:
    """Read images of some registries from mirrors: the reference's registry is rewritten per call.

    Findings keep the image name the manifest states (the store and the caches
    see the original reference); only the backend talks to the mirror, which
    must serve the same repositories (under an optional path prefix) with the
    same digests, as a pull-through cache does.
    """

    def __init__(self, inner: RegistryBackend, mirrors: Mapping[str, str]) -> None:
        self.inner = inner
        self.mirrors = dict(mirrors)

    def rewrite(self, ref: Reference) -> Reference:
        target = self.mirrors.get(ref.registry)
        if target is None:
            return ref
        host, _, prefix = target.partition("/")
        return replace(ref, registry=host, repository=f"{prefix}/{ref.repository}" if prefix else ref.repository)

    async def resolve(self, ref: Reference) -> Descriptor:
        return await self.inner.resolve(self.rewrite(ref))

    async def manifest(self, ref: Reference, digest: str | None = None) -> tuple[Descriptor, bytes]:
        return await self.inner.manifest(self.rewrite(ref), digest)

    async def blob(self, ref: Reference, digest: str, *, max_size: int) -> bytes:
        return await self.inner.blob(self.rewrite(ref), digest, max_size=max_size)

    def stream_blob(self, ref: Reference, digest: str,
                    size: int | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.inner.stream_blob(self.rewrite(ref), digest, size)

    async def read_range(self, ref: Reference, digest: str, start: int, length: int, *,
                         size: int | None = None) -> bytes:
        return await self.inner.read_range(self.rewrite(ref), digest, start, length, size=size)

    async def aclose(self) -> None:
        await self.inner.aclose()
