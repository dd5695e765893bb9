"""containerd's registry host configuration (``/etc/containerd/certs.d``), read as the nodes read it.

A cluster already describes its mirrors for containerd: one directory per
registry host holding a ``hosts.toml``.  ``--hosts-dir DIR`` reads the same
files, so a node's directory (mounted from a ConfigMap) is reused as it is and
canrun reads images from where the nodes pull them.  The semantics follow
containerd's ``remotes/docker/config/hosts.go``:

* the directory of ``host:port`` is ``host_port_`` (or ``host:port``), and
  ``_default`` applies to every registry without one of its own;
* the ``[host."…"]`` tables are tried in the order the file lists them, then
  ``server`` (or, without it, the registry itself; ``docker.io`` is
  ``registry-1.docker.io``); a host that fails hands over to the next;
* ``capabilities`` (default ``["pull", "resolve", "push"]``): only ``resolve``
  hosts turn a tag into a digest, only ``pull`` hosts serve content by digest;
* a URL without a scheme is ``https://``; the API root is the URL's path with
  ``/v2`` appended unless it already ends in ``/v2`` or ``override_path = true``
  says the path is the API root as written;
* ``skip_verify`` and ``ca`` (one file or a list, relative to the host's
  directory) set the host's TLS verification.

What canrun cannot do like containerd is said at start-up rather than ignored:
an API root other than ``/v2`` or ``/v2/<prefix>`` (a prefix is read as a
repository prefix, which is what Harbor-style proxy projects serve), client
certificates (``client``) and extra headers (``header``).  canrun keeps one
trust store, so a host's ``ca`` is trusted for every registry, and
``skip_verify`` (like an ``http://`` URL) makes the host one of the insecure
registries (``--insecure-registry``: HTTPS without verification, then HTTP).
"""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from canrun.errors import RegistryError, UsageError
from canrun.registry.base import Descriptor, RegistryBackend
from canrun.registry.reference import DOCKER_HUB, DOCKER_HUB_API, Reference

DEFAULT_DIR = "_default"
CAPABILITIES = frozenset({"pull", "resolve", "push"})


@dataclass(frozen=True)
class Endpoint:
    """One place a registry's images may be read from, in the order they are tried."""

    #: ``host[:port]`` as the registry client addresses it.
    host: str
    scheme: str
    #: Repository prefix under ``/v2`` ("" for the standard API root).
    prefix: str
    capabilities: frozenset[str]
    skip_verify: bool = False
    ca_files: tuple[Path, ...] = ()

    @property
    def insecure(self) -> bool:
        return self.scheme == "http" or self.skip_verify


def _host_of_directory(name: str) -> str:
    """``registry.example_5000_`` -> ``registry.example:5000`` (containerd's spelling of a port)."""
    if name.endswith("_") and "_" in name[:-1]:
        base, _, port = name[:-1].rpartition("_")
        if port.isdigit():
            return f"{base}:{port}"
    return name


def _endpoint(where: str, url: str, table: Mapping[str, object], base: Path, problems: list[str]) -> Endpoint | None:
    unsupported = [k for k in ("client", "header") if k in table]
    if unsupported:
        problems.append(f"{where}: {', '.join(unsupported)} is not supported by canrun")
    text = url if url.startswith("http") else f"https://{url}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(f"{where}: {url!r} is not a registry URL")
        return None
    path = parts.path.rstrip("/")
    if path and not path.endswith("/v2") and not table.get("override_path"):
        path += "/v2"
    path = path or "/v2"
    bad_root = path != "/v2" and not path.startswith("/v2/")
    if bad_root:
        problems.append(f"{where}: API root {path!r}: canrun reads /v2 or /v2/<prefix> only")
    raw_caps = table.get("capabilities", sorted(CAPABILITIES))
    if not isinstance(raw_caps, list) or not all(isinstance(c, str) for c in raw_caps):
        problems.append(f"{where}: capabilities must be a list of pull, resolve, push")
        return None
    caps = frozenset(c.lower() for c in raw_caps) or CAPABILITIES
    if caps - CAPABILITIES:
        problems.append(f"{where}: unknown capability {', '.join(sorted(caps - CAPABILITIES))}")
    ca = table.get("ca", [])
    ca_list = [ca] if isinstance(ca, str) else ca
    if not isinstance(ca_list, list) or not all(isinstance(c, str) for c in ca_list):
        problems.append(f"{where}: ca must be a file or a list of files")
        ca_list = []
    ca_files = tuple(Path(c) if Path(c).is_absolute() else base / c for c in ca_list)
    for file in ca_files:
        if not file.is_file():
            problems.append(f"{where}: ca file {file} does not exist")
    skip = table.get("skip_verify", False)
    if not isinstance(skip, bool):
        problems.append(f"{where}: skip_verify must be true or false")
        skip = False
    if bad_root:
        return None
    return Endpoint(host=parts.netloc, scheme=parts.scheme, prefix=path[len("/v2/"):] if path != "/v2" else "",
                    capabilities=caps, skip_verify=skip, ca_files=ca_files)


def parse_hosts_file(path: Path, registry: str, problems: list[str]) -> list[Endpoint]:
    """The endpoints of one ``hosts.toml`` for ``registry``, in the order containerd tries them."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read: {exc}")
        return []
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML: {exc}")
        return []
    out: list[Endpoint] = []
    hosts = doc.get("host", {})
    if not isinstance(hosts, dict):
        problems.append(f"{path}: host must be a table of [host.\"URL\"] tables")
        hosts = {}
    for url, table in hosts.items():  # TOML tables keep the file's order
        if not isinstance(table, dict):
            problems.append(f"{path}: host.{url!r} must be a table")
            continue
        endpoint = _endpoint(f"{path}: host.{url!r}", url, table, path.parent, problems)
        if endpoint is not None:
            out.append(endpoint)
    server = doc.get("server")
    root = {k: v for k, v in doc.items() if k not in ("host", "server")}
    if isinstance(server, str) and server:
        endpoint = _endpoint(f"{path}: server", server, root, path.parent, problems)
    else:
        default = DOCKER_HUB_API if registry == DOCKER_HUB else registry
        endpoint = _endpoint(f"{path}: server", f"https://{default}", {**root, "override_path": False},
                             path.parent, problems)
    if endpoint is not None:
        out.append(endpoint)
    return out


@dataclass(frozen=True)
class HostsTable:
    """Every registry's endpoints from a hosts directory (``_default`` under the key ``"_default"``)."""

    directory: Path
    registries: Mapping[str, tuple[Endpoint, ...]]

    def endpoints(self, registry: str) -> tuple[Endpoint, ...] | None:
        found = self.registries.get(registry)
        if found is None and DEFAULT_DIR in self.registries:
            # _default's hosts.toml without a server falls back to the registry itself, per registry
            found = tuple(replace(e, host=(DOCKER_HUB_API if registry == DOCKER_HUB else registry))
                          if e.host == DEFAULT_DIR else e for e in self.registries[DEFAULT_DIR])
        return found

    @property
    def insecure_hosts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.host for eps in self.registries.values() for e in eps if e.insecure))

    @property
    def ca_files(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(f for eps in self.registries.values() for e in eps for f in e.ca_files))


def load_hosts_dir(directory: Path) -> HostsTable:
    """Read every ``<registry>/hosts.toml`` of ``directory``; all problems are reported at once."""
    if not directory.is_dir():
        raise UsageError(f"--hosts-dir {directory}: not a directory")
    problems: list[str] = []
    registries: dict[str, tuple[Endpoint, ...]] = {}
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        file = sub / "hosts.toml"
        if not file.is_file():
            continue  # containerd then reads docker-style *.crt files; canrun takes --ca-file for those
        registry = _host_of_directory(sub.name)
        registries[registry] = tuple(parse_hosts_file(file, registry, problems))
    if problems:
        head = f"--hosts-dir {directory}: "
        raise UsageError(head + problems[0] if len(problems) == 1 else
                         head + f"{len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))
    return HostsTable(directory, registries)


class HostsBackend:
    """A registry backend that reads each registry from its ``hosts.toml`` endpoints, in order.

    Findings keep the reference as written; each call is tried on the endpoints
    with the capability it needs (resolving a tag: ``resolve``; content by
    digest: ``pull``), and the first answer wins; when every endpoint fails, the
    first failure is raised (it names the host the file lists first).
    """

    def __init__(self, inner: RegistryBackend, table: HostsTable) -> None:
        self.inner = inner
        self.table = table

    def _candidates(self, ref: Reference, capability: str) -> list[Reference]:
        endpoints = self.table.endpoints(ref.registry)
        if endpoints is None:
            return [ref]
        out = [replace(ref, registry=e.host,
                       repository=f"{e.prefix}/{ref.repository}" if e.prefix else ref.repository)
               for e in endpoints if capability in e.capabilities]
        if not out:
            raise UsageError(f"{self.table.directory}: no host of {ref.registry} may {capability} images")
        return out

    async def _first(self, refs: list[Reference], call):  # type: ignore[no-untyped-def]
        first: RegistryError | None = None
        for candidate in refs:
            try:
                return await call(candidate)
            except RegistryError as exc:
                first = first or exc
        assert first is not None
        raise first

    async def resolve(self, ref: Reference) -> Descriptor:
        return await self._first(self._candidates(ref, "resolve"), self.inner.resolve)

    async def manifest(self, ref: Reference, digest: str | None = None) -> tuple[Descriptor, bytes]:
        by_digest = digest is not None or ref.digest is not None
        return await self._first(self._candidates(ref, "pull" if by_digest else "resolve"),
                                 lambda r: self.inner.manifest(r, digest))

    async def blob(self, ref: Reference, digest: str, *, max_size: int) -> bytes:
        return await self._first(self._candidates(ref, "pull"),
                                 lambda r: self.inner.blob(r, digest, max_size=max_size))

    def stream_blob(self, ref: Reference, digest: str,
                    size: int | None = None) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        candidates = self._candidates(ref, "pull")

        @asynccontextmanager
        async def opened() -> AsyncIterator[AsyncIterator[bytes]]:
            first: RegistryError | None = None
            for candidate in candidates:
                context = self.inner.stream_blob(candidate, digest, size)
                try:
                    stream = await context.__aenter__()
                except RegistryError as exc:
                    first = first or exc
                    continue
                try:
                    yield stream
                except BaseException as exc:
                    if not await context.__aexit__(type(exc), exc, exc.__traceback__):
                        raise
                else:
                    await context.__aexit__(None, None, None)
                return
            assert first is not None
            raise first

        return opened()

    async def read_range(self, ref: Reference, digest: str, start: int, length: int, *,
                         size: int | None = None) -> bytes:
        return await self._first(self._candidates(ref, "pull"),
                                 lambda r: self.inner.read_range(r, digest, start, length, size=size))

    async def aclose(self) -> None:
        await self.inner.aclose()
