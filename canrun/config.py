"""Settings in one place, and the one function that turns them into a working engine.

Front ends build a ``Settings`` from flags (and, later, a config file and the
environment) and call ``open_engine``; they never wire a registry client, a
cache and a validator together themselves, so the three doors cannot drift.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from canrun.errors import UsageError
from canrun.image.cache import Cache
from canrun.image.limits import Limits
from canrun.image.store import ImageStore
from canrun.platform import Platform
from canrun.registry.client import RegistryClient, RegistrySettings
from canrun.validator import Validator

RUNTIMES = ("containerd", "cri-o", "docker")
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

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise UsageError(f"unknown runtime {self.runtime!r}: expected one of {', '.join(RUNTIMES)}")

    def registry_settings(self) -> RegistrySettings:
        return RegistrySettings(
            insecure_hosts=frozenset(self.insecure_registries),
            ca_file=str(self.ca_file) if self.ca_file else None,
            timeout=self.timeout,
            docker_config=str(self.docker_config) if self.docker_config else None,
        )

    def cache(self) -> Cache | None:
        if not self.use_cache:
            return None
        root = self.cache_dir or (Path(os.environ["CANRUN_CACHE_DIR"]) if os.environ.get("CANRUN_CACHE_DIR")
                                  else None)
        return Cache(root)


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
        store = ImageStore(client, cache=settings.cache(), limits=settings.limits)
        yield Engine(settings, client, store, Validator(store, runtime=settings.runtime, strict=settings.strict))
    finally:
        await client.aclose()
