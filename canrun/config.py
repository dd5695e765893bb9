"""Settings in one place, and the one function that turns them into a working engine.

Front ends build a ``Settings`` from flags (and, later, a config file and the
environment) and call ``open_engine``; they never wire a registry client, a
cache and a validator together themselves, so the three doors cannot drift.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from canrun.errors import UsageError
from canrun.findings import Finding, Severity, sort_key
from canrun.image.cache import Cache
from canrun.image.limits import Limits
from canrun.image.store import ImageStore
from canrun.platform import Platform
from canrun.registry.base import Descriptor
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.registry.reference import Reference
from canrun.validator import Report, Validator

RUNTIMES = ("containerd", "cri-o", "docker")
#: Names of the checked-in settings file (``canrun.config_file`` reads and validates it).
FILENAMES = (".canrun.yaml", ".canrun.yml")
DEFAULT_PLATFORMS = (Platform("linux", "amd64"),)


@dataclass
class Settings:
    platforms: tuple[Platform, ...] = DEFAULT_PLATFORMS
    runtime: str = "containerd"
    strict: bool = False
    insecure_registries: tuple[str, ...] = ()
    ca_file: Path | None = None
    docker_config: Path | None = None
    cache_dir: Path | None = None
    use_cache: bool = True
    timeout: float = 30.0
    limits: Limits = field(default_factory=Limits)
    #: registry host -> mirror ``host[:port][/path-prefix]`` that is read instead (``.canrun.yaml`` mirrors).
    registry_mirrors: dict[str, str] = field(default_factory=dict)
    #: rule id -> severity, or None to drop the rule's findings (``.canrun.yaml`` rules); see apply_rule_overrides.
    rule_overrides: dict[str, Severity | None] = field(default_factory=dict)
    #: Refuse registry hosts resolving to loopback/link-local/metadata or ``blocked_networks`` (the webhook).
    ssrf_guard: bool = False
    #: Registry hosts exempt from the SSRF guard (``--allow-registry-host``).
    allow_registry_hosts: tuple[str, ...] = ()
    #: Extra CIDRs the SSRF guard refuses (the cluster's service and pod ranges); empty = the guard's defaults.
    blocked_networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise UsageError(f"unknown runtime {self.runtime!r}: expected one of {', '.join(RUNTIMES)}")

    def registry_settings(self) -> RegistrySettings:
        return RegistrySettings(
            insecure_hosts=frozenset(self.insecure_registries),
            ca_file=str(self.ca_file) if self.ca_file else None,
            timeout=self.timeout,
            docker_config=str(self.docker_config) if self.docker_config else None,
            allow_hosts=frozenset(self.allow_registry_hosts),
            ssrf_guard=self.ssrf_guard,
            **({"blocked_networks": tuple(self.blocked_networks)} if self.blocked_networks else {}),
        )

    def cache(self) -> Cache | None:
        if not self.use_cache:
            return None
        root = self.cache_dir or (Path(os.environ["CANRUN_CACHE_DIR"]) if os.environ.get("CANRUN_CACHE_DIR")
                                  else None)
        return Cache(root)


@dataclass(frozen=True)
class FileConfig:
    """A loaded ``.canrun.yaml`` (all None/empty when there is none): plain data for the CLI to merge."""

    path: Path | None = None
    platforms: tuple[Platform, ...] | None = None
    runtime: str | None = None
    strict: bool | None = None
    timeout: float | None = None
    insecure_registries: tuple[str, ...] = ()
    ca_file: Path | None = None
    docker_config: Path | None = None
    #: registry host -> mirror ``host[:port][/path-prefix]`` read instead.
    mirrors: dict[str, str] = field(default_factory=dict)
    #: rule id -> severity, or None for a rule that is turned off.
    rules: dict[str, Severity | None] = field(default_factory=dict)


def find_config(start: Path) -> Path | None:
    """The nearest ``.canrun.yaml`` (or ``.yml``) in ``start`` or any directory above it."""
    start = start.resolve()
    for directory in (start, *start.parents):
        for name in FILENAMES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def rules_with_flags(rules: dict[str, Severity | None], *, strict_flag: bool | None) -> dict[str, Severity | None]:
    """An explicit ``--strict``/``--no-strict`` decides image-unresolvable's severity over the file's rules."""
    if strict_flag is None:
        return dict(rules)
    return {k: v for k, v in rules.items() if k != "image-unresolvable"}


@dataclass
class Engine:
    settings: Settings
    client: RegistryClient
    store: ImageStore
    validator: Validator


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Engine]:
    """A registry client, cache, image store and validator wired from settings; closed on exit."""
    client = RegistryClient(settings.registry_settings())
    try:
        backend = MirroredBackend(client, settings.registry_mirrors) if settings.registry_mirrors else client
        store = ImageStore(backend, cache=settings.cache(), limits=settings.limits)
        yield Engine(settings, client, store, Validator(store, runtime=settings.runtime, strict=settings.strict))
    finally:
        await client.aclose()


MODES = ("enforce", "warn", "audit", "off")


@dataclass
class WebhookSettings:
    """How ``canrun serve`` answers admissions (the engine's own settings stay in ``Settings``)."""

    #: Mode for namespaces without a ``canrun.io/mode`` label.
    default_mode: str = "warn"
    #: Seconds to answer within (the API server's timeoutSeconds is 10).
    deadline: float = 5.0
    #: Images that cannot be read (or not in time) deny in enforce mode instead of warning.
    strict: bool = False
    #: How long a verdict for the same pod spec is reused (tags can move: keep it short).
    verdict_ttl: float = 60.0
    verdict_cache_size: int = 4096
    #: Index the images of running pods at start-up and as pods appear (a pod watch); a cluster that cannot
    #: watch is listed every ``warm_interval`` seconds.  0: no warm-up.
    warm_interval: float = 300.0
    warm_concurrency: int = 4
    #: Record Kubernetes Events for findings in warn and audit modes.
    events: bool = True

    def __post_init__(self) -> None:
        if self.default_mode not in MODES:
            raise UsageError(f"unknown mode {self.default_mode!r}: expected one of {', '.join(MODES)}")
        if not 0 < self.deadline <= 30:
            raise UsageError(f"--deadline must be between 0 and 30 seconds, got {self.deadline}")


class MirroredBackend:
    """Read images of some registries from mirrors: the reference's registry is rewritten per call.

    Findings keep the image name the manifest states (the store and the caches
    see the original reference); only the backend talks to the mirror, which
    must serve the same repositories (under an optional path prefix) with the
    same digests, as a pull-through cache does.
    """

    def __init__(self, inner: RegistryClient, mirrors: Mapping[str, str]) -> None:
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


def apply_rule_overrides(report: Report, overrides: Mapping[str, Severity | None]) -> Report:
    """The report with ``.canrun.yaml`` rule severities applied: a new severity, or None to drop the rule.

    Applied to the finished report (after exemptions, strict mode and platform
    folding) rather than inside the checks, so every rule, including the
    validator's own (image-unresolvable, platform-missing), is overridden the
    same way and the engine stays unaware of per-repository policy.
    """
    if not overrides:
        return report

    def adjust(findings: list[Finding]) -> list[Finding]:
        out: list[Finding] = []
        for f in findings:
            if f.rule not in overrides:
                out.append(f)
            elif overrides[f.rule] is not None:
                out.append(replace(f, severity=overrides[f.rule]))
        return sorted(out, key=sort_key)

    return replace(report, findings=adjust(report.findings), suppressed=adjust(report.suppressed))
