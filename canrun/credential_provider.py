"""Kubelet credential provider plugins: the credentials nodes on ECR, GCR/Artifact Registry and ACR pull with.

Such clusters pull without pull secrets: the kubelet runs an exec plugin named
in its ``CredentialProviderConfig`` (``--image-credential-provider-config``,
plugins in ``--image-credential-provider-bin-dir``).  canrun reads the same file
and runs the same plugins, the same way (``kubelet.config.k8s.io/v1``):

* a provider applies to an image when one of its ``matchImages`` matches it:
  the host's labels are matched one by one with globs (``*.dkr.ecr.*.amazonaws.com``;
  ``*`` never spans a dot), a port must be equal when the pattern has one, and
  the pattern's path must be a prefix of the image's path;
* the plugin is run with ``args`` and ``env`` (added to canrun's environment),
  gets a ``CredentialProviderRequest`` (``{"image": …}``) on stdin and answers a
  ``CredentialProviderResponse`` on stdout: ``auth`` maps image patterns to a
  username and password, ``cacheKeyType`` (``Image``, ``Registry`` or
  ``Global``) and ``cacheDuration`` say for what and how long the answer holds
  (``defaultCacheDuration`` when the response gives none; ``0`` is not cached);
* a plugin that fails, hangs past ``timeout`` or answers nonsense gives no
  credentials (the image then reads as a registry refusal), with a log line
  that names the plugin and never what it printed.

What a plugin returns is a credential: it is kept in memory only, used only
for the registry host of the image it was asked about, and never logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from canrun.errors import UsageError
from canrun.registry.auth import Credential, Keychain, current_keychain, use_keychain
from canrun.registry.base import Descriptor, RegistryBackend
from canrun.registry.reference import Reference

log = logging.getLogger("canrun.registry")

CONFIG_VERSIONS = ("kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1")
PLUGIN_VERSIONS = ("credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v1beta1")
CACHE_KEY_TYPES = ("Image", "Registry", "Global")
#: Seconds a plugin may take (the kubelet gives each exec plugin a minute).
PLUGIN_TIMEOUT = 60.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """A Go duration (``12h``, ``1h30m``, ``90s``, ``0``) in seconds."""
    text = text.strip()
    if text in ("0", ""):
        return 0.0
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 12h, 30m or 90s")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _split(image: str) -> tuple[str, str | None, str]:
    """``host[:port]/path`` of an image or pattern (scheme, tag and digest dropped)."""
    image = image.split("://", 1)[-1]
    host, _, path = image.partition("/")
    path = path.split("@", 1)[0]
    if ":" in path.rsplit("/", 1)[-1]:
        path = path.rsplit(":", 1)[0]
    name, _, port = host.partition(":")
    return name.lower(), port or None, path


def match_image(pattern: str, image: str) -> bool:
    """Whether a ``matchImages`` (or ``auth``) pattern covers ``image``, as the kubelet matches them."""
    p_host, p_port, p_path = _split(pattern)
    i_host, i_port, i_path = _split(image)
    p_labels, i_labels = p_host.split("."), i_host.split(".")
    if len(p_labels) != len(i_labels) or not all(fnmatchcase(i, p) for p, i in zip(p_labels, i_labels)):
        return False
    if p_port is not None and p_port != i_port:
        return False
    return not p_path or i_path == p_path or i_path.startswith(p_path.rstrip("/") + "/")


@dataclass(frozen=True)
class Provider:
    name: str
    match_images: tuple[str, ...]
    default_cache: float
    api_version: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def matches(self, image: str) -> bool:
        return any(match_image(p, image) for p in self.match_images)


def load_provider_config(path: Path, bin_dir: Path | None) -> CredentialProviders:
    """Read a ``CredentialProviderConfig`` (YAML or JSON); every problem is reported at once."""
    import yaml  # the config layer may read YAML; the registry layer below it may not

    where = f"--image-credential-provider-config {path}"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: not valid YAML or JSON") from exc
    if bin_dir is None:
        raise UsageError(f"{where}: give --image-credential-provider-bin-dir, where the plugins are")
    problems: list[str] = []
    if not isinstance(doc, dict) or doc.get("kind") != "CredentialProviderConfig":
        raise UsageError(f"{where}: expected kind CredentialProviderConfig")
    if doc.get("apiVersion") not in CONFIG_VERSIONS:
        problems.append(f"apiVersion: expected one of {', '.join(CONFIG_VERSIONS)}, got {doc.get('apiVersion')!r}")
    providers: list[Provider] = []
    for i, item in enumerate(doc.get("providers") or []):
        key = f"providers[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{key}: expected a mapping")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name or "/" in name:
            problems.append(f"{key}.name: the plugin's file name in the bin dir, got {name!r}")
            continue
        if not (bin_dir / name).is_file():
            problems.append(f"{key}.name: no plugin {bin_dir / name}")
        matches = item.get("matchImages")
        if not isinstance(matches, list) or not matches or not all(isinstance(m, str) for m in matches):
            problems.append(f"{key}.matchImages: give at least one image pattern")
            matches = []
        try:
            cache = parse_duration(str(item.get("defaultCacheDuration", "")))
            if "defaultCacheDuration" not in item:
                problems.append(f"{key}.defaultCacheDuration: required (e.g. 12h)")
        except ValueError as exc:
            problems.append(f"{key}.defaultCacheDuration: {exc}")
            cache = 0.0
        version = item.get("apiVersion")
        if version not in PLUGIN_VERSIONS:
            problems.append(f"{key}.apiVersion: expected one of {', '.join(PLUGIN_VERSIONS)}, got {version!r}")
        env = {}
        for j, var in enumerate(item.get("env") or []):
            if not isinstance(var, dict) or not isinstance(var.get("name"), str):
                problems.append(f"{key}.env[{j}]: expected name and value")
                continue
            env[var["name"]] = str(var.get("value", ""))
        args = item.get("args") or []
        if not isinstance(args, list):
            problems.append(f"{key}.args: expected a list")
            args = []
        providers.append(Provider(name, tuple(matches), cache, str(version), tuple(str(a) for a in args), env))
    if problems:
        raise UsageError(f"{where}: " + (problems[0] if len(problems) == 1 else
                                         f"{len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems)))
    return CredentialProviders(tuple(providers), bin_dir)


class CredentialProviders:
    """Runs the plugins for an image and remembers their answers for as long as they say."""

    def __init__(self, providers: tuple[Provider, ...], bin_dir: Path, *,
                 clock: Callable[[], float] = time.monotonic, timeout: float = PLUGIN_TIMEOUT) -> None:
        self.providers = providers
        self.bin_dir = bin_dir
        self.clock = clock
        self.timeout = timeout
        self._cache: dict[tuple[str, str, str], tuple[float, Credential | None]] = {}
        self._lock = threading.Lock()
        self._plugin_locks: dict[str, threading.Lock] = {}
        #: Plugin runs, by provider name (for tests and metrics; never their output).
        self.runs: dict[str, int] = {}

    def credential(self, ref: Reference) -> Credential | None:
        """The credential the first matching provider gives for ``ref``'s registry, if any (runs plugins)."""
        image = f"{ref.registry}/{ref.repository}"
        for provider in self.providers:
            if not provider.matches(image):
                continue
            with self._runs_of(provider):  # one run at a time per plugin: concurrent reads share its answer
                found = self._cached(provider, ref, image)
                cred = found if found is not _MISS else self._run(provider, ref, image)
            if cred is not None:
                return cred
        return None

    def _runs_of(self, provider: Provider) -> threading.Lock:
        with self._lock:
            return self._plugin_locks.setdefault(provider.name, threading.Lock())

    def _cached(self, provider: Provider, ref: Reference, image: str) -> Any:
        now = self.clock()
        with self._lock:
            for key in ((provider.name, "Image", image), (provider.name, "Registry", ref.registry),
                        (provider.name, "Global", "")):
                hit = self._cache.get(key)
                if hit is not None and hit[0] > now:
                    return hit[1]
        return _MISS

    def _run(self, provider: Provider, ref: Reference, image: str) -> Credential | None:
        request = json.dumps({"apiVersion": provider.api_version, "kind": "CredentialProviderRequest",
                              "image": image})
        self.runs[provider.name] = self.runs.get(provider.name, 0) + 1
        try:
            done = subprocess.run([str(self.bin_dir / provider.name), *provider.args], input=request,
                                  capture_output=True, text=True, timeout=self.timeout,
                                  env={**os.environ, **provider.env}, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("credential provider %s failed to run: %s", provider.name, type(exc).__name__)
            return None
        if done.returncode != 0:
            log.warning("credential provider %s exited %d", provider.name, done.returncode)
            return None
        try:
            response = json.loads(done.stdout)
            auth = response.get("auth") or {}
            key_type = response.get("cacheKeyType")
            if response.get("kind") != "CredentialProviderResponse" or key_type not in CACHE_KEY_TYPES \
                    or not isinstance(auth, dict):
                raise ValueError("not a CredentialProviderResponse")
            duration = (parse_duration(str(response["cacheDuration"])) if response.get("cacheDuration")
                        else provider.default_cache)
        except (ValueError, AttributeError, TypeError):
            log.warning("credential provider %s answered something that is not a CredentialProviderResponse",
                        provider.name)
            return None
        matching = sorted((k for k in auth if isinstance(k, str) and match_image(k, image)), key=len, reverse=True)
        cred = None
        if matching and isinstance(auth[matching[0]], dict):
            entry = auth[matching[0]]
            cred = Credential(username=str(entry.get("username", "")), password=str(entry.get("password", "")))
        if duration > 0:
            scope = {"Image": image, "Registry": ref.registry, "Global": ""}[key_type]
            with self._lock:
                self._cache[(provider.name, key_type, scope)] = (self.clock() + duration, cred)
        return cred


_MISS = object()


class CredentialBackend:
    """A registry backend whose reads carry the credential providers' credentials for the image's registry.

    The request's own keychain (the webhook's pod pull secrets) is consulted
    first, the providers' credential after it, as the kubelet tries both.
    """

    def __init__(self, inner: RegistryBackend, providers: CredentialProviders) -> None:
        self.inner = inner
        self.providers = providers

    async def _keychain(self, ref: Reference) -> Keychain | None:
        import asyncio

        cred = await asyncio.to_thread(self.providers.credential, ref)
        current = current_keychain()
        if cred is None:
            return current
        found = Keychain(entries={ref.registry: cred})
        return current.merge(found) if current is not None else found

    async def resolve(self, ref: Reference) -> Descriptor:
        with use_keychain(await self._keychain(ref)):
            return await self.inner.resolve(ref)

    async def manifest(self, ref: Reference, digest: str | None = None) -> tuple[Descriptor, bytes]:
        with use_keychain(await self._keychain(ref)):
            return await self.inner.manifest(ref, digest)

    async def blob(self, ref: Reference, digest: str, *, max_size: int) -> bytes:
        with use_keychain(await self._keychain(ref)):
            return await self.inner.blob(ref, digest, max_size=max_size)

    def stream_blob(self, ref: Reference, digest: str,
                    size: int | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        @asynccontextmanager
        async def opened() -> AsyncIterator[AsyncIterator[bytes]]:
            with use_keychain(await self._keychain(ref)):
                async with self.inner.stream_blob(ref, digest, size) as stream:
                    yield stream

        return opened()

    async def read_range(self, ref: Reference, digest: str, start: int, length: int, *,
                         size: int | None = None) -> bytes:
        with use_keychain(await self._keychain(ref)):
            return await self.inner.read_range(ref, digest, start, length, size=size)

    async def aclose(self) -> None:
        await self.inner.aclose()
