"""``RegistryBackend`` through go-containerregistry's ``crane`` CLI, one subprocess per read.

Why a second backend: crane is the registry client of the Go ecosystem (the
same code ko, kaniko and many CI tools use), so a registry it can read is read
the way those tools read it.  Everything above the seam (cache, single-flight,
deadlines, findings) is unchanged, and canrun still verifies every byte: a
manifest against its digest, a blob against its digest and descriptor size.

* ``resolve`` is ``crane digest``; ``manifest`` is ``crane manifest``; ``blob``
  and ``stream_blob`` are ``crane blob`` (read from its stdout, bounded, and
  killed when the reader stops early).
* **Credentials** reach crane only through a docker config written for that
  call into a private directory (0700, the file 0600), removed when the
  process has ended; ``DOCKER_CONFIG`` always points there, so crane sees the
  credential of the one registry it reads and nothing else.  Never argv, never
  a log line.
* **What crane cannot do**: apply canrun's SSRF guard to the redirects and
  token realms it follows itself.  The guard checks the registry host before
  each call, but that is not enough for a webhook, so ``serve`` refuses this
  backend while the guard is on (``open_engine``).
* Each call is bounded by ``timeout`` per read and by the store's deadlines;
  its stderr is read up to 64 KiB and becomes the error message, query strings
  (signed URLs) cut and every secret redacted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from canrun import untrusted_json
from canrun.errors import (ImageCorrupt, ImageNotFound, InvalidReference, LimitExceeded, RangeUnsupported,
                           RegistryAuthError, RegistryHTTPError, RegistryUnreachable, UsageError)
from canrun.registry.auth import Credential, Keychain, default_docker_config, find_credential
from canrun.registry.base import Descriptor
from canrun.registry.client import MAX_MANIFEST_BYTES
from canrun.registry.mediatypes import OCI_INDEX, OCI_MANIFEST, SCHEMA1_TYPES
from canrun.registry.reference import DOCKER_HUB, Reference, validate_digest
from canrun.registry.settings import RegistrySettings, RegistryStats
from canrun.registry.ssrf import SsrfGuard

PIECE = 1 << 20
MAX_STDERR = 64 << 10
_QUERY = re.compile(r"\?\S*")
_NOT_FOUND = ("MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "NOT_FOUND", " 404")
_REFUSED = ("UNAUTHORIZED", "DENIED", " 401", " 403")


def find_crane() -> Path:
    """``$CANRUN_CRANE``, else ``crane`` on PATH, else the one ``scripts/setup.sh`` builds in the tools cache."""
    named = os.environ.get("CANRUN_CRANE")
    candidates = [Path(named)] if named else []
    on_path = shutil.which("crane")
    if on_path:
        candidates.append(Path(on_path))
    tools = os.environ.get("CANRUN_TOOLS_CACHE") or str(Path.home() / ".cache" / "canrun-tools")
    candidates.append(Path(tools) / "crane")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise UsageError("--registry-backend crane: no crane binary (set CANRUN_CRANE, put crane on PATH, or run "
                     "scripts/setup.sh)")


def _docker_config(registry: str, cred: Credential | None) -> dict[str, object]:
    if cred is None:
        return {"auths": {}}
    key = "https://index.docker.io/v1/" if registry == DOCKER_HUB else registry
    entry: dict[str, str] = {}
    if cred.identity_token:
        entry = {"username": cred.username, "identitytoken": cred.identity_token}
    else:
        entry = {"auth": base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()}
    return {"auths": {key: entry}}


class CraneBackend:
    """The registry read through ``crane`` subprocesses; see the module docstring."""

    def __init__(self, settings: RegistrySettings | None = None, *, crane: Path | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self.stats = RegistryStats()
        self.crane = crane or find_crane()
        self._insecure = frozenset(h.lower() for h in self.settings.insecure_hosts)
        self._guard = (SsrfGuard.build(self.settings.blocked_networks, self.settings.allow_hosts, self._insecure)
                       if self.settings.ssrf_guard else None)
        chain = self.settings.keychain or Keychain()
        config = self.settings.docker_config or default_docker_config()
        if config is not None:
            chain = chain.merge(Keychain.from_docker_config(config))
        self._keychain = chain

    def __repr__(self) -> str:
        return f"CraneBackend({self.crane})"

    async def aclose(self) -> None:
        pass

    # -- RegistryBackend ----------------------------------------------------------------------

    async def resolve(self, ref: Reference) -> Descriptor:
        if ref.digest is not None:
            return Descriptor(media_type="", digest=ref.digest, size=-1)
        out = (await self._run(ref, "digest", str(ref), limit=1024)).decode(errors="replace").strip()
        try:
            digest = validate_digest(out)
        except InvalidReference as exc:
            raise RegistryHTTPError(f"{ref}: crane digest printed no digest", host=ref.registry) from exc
        return Descriptor(media_type="", digest=digest, size=-1)

    async def manifest(self, ref: Reference, digest: str | None = None) -> tuple[Descriptor, bytes]:
        target = digest or ref.digest
        name = f"{ref.registry}/{ref.repository}@{validate_digest(target)}" if target else str(ref)
        body = await self._run(ref, "manifest", name, limit=MAX_MANIFEST_BYTES)
        actual = f"{(target or 'sha256:').split(':', 1)[0]}:" + \
            hashlib.new((target or "sha256:").split(":", 1)[0], body).hexdigest()
        if target is not None and actual != target:
            raise ImageCorrupt(f"{ref}: manifest {target} does not match its digest (crane read {actual})")
        try:
            doc = untrusted_json.loads(body)
        except ValueError as exc:
            raise ImageCorrupt(f"{ref}: manifest {actual} is not valid JSON") from exc
        media_type = doc.get("mediaType") if isinstance(doc, dict) else None
        if not isinstance(media_type, str):
            media_type = OCI_INDEX if isinstance(doc, dict) and "manifests" in doc else OCI_MANIFEST
        if media_type in SCHEMA1_TYPES:
            raise RegistryHTTPError(f"{ref} is a Docker schema 1 manifest, which current runtimes no longer pull",
                                    host=ref.registry)
        return Descriptor(media_type=media_type, digest=actual, size=len(body)), body

    async def blob(self, ref: Reference, digest: str, *, max_size: int) -> bytes:
        validate_digest(digest)
        try:
            data = await self._run(ref, "blob", f"{ref.registry}/{ref.repository}@{digest}", limit=max_size)
        except LimitExceeded as exc:
            raise LimitExceeded(f"{ref}: blob {digest} is larger than the limit of {max_size} bytes") from exc
        algo = digest.split(":", 1)[0]
        actual = f"{algo}:{hashlib.new(algo, data).hexdigest()}"
        if actual != digest:
            raise ImageCorrupt(f"{ref}: blob {digest} does not match its digest (crane read {actual})")
        return data

    @asynccontextmanager
    async def stream_blob(self, ref: Reference, digest: str,
                          size: int | None = None) -> AsyncIterator[AsyncIterator[bytes]]:
        validate_digest(digest)
        async with self._process(ref, "blob", f"{ref.registry}/{ref.repository}@{digest}") as (proc, stderr):
            chunks = self._verified(ref, proc, stderr, digest, size)
            try:
                yield chunks
            finally:
                await chunks.aclose()

    async def read_range(self, ref: Reference, digest: str, start: int, length: int, *,
                         size: int | None = None) -> bytes:
        """crane has no ranged read: lazy layer formats fall back to the whole stream."""
        raise RangeUnsupported(f"{ref}: the crane backend reads blobs whole", host=ref.registry)

    # -- subprocesses ---------------------------------------------------------------------------

    async def _verified(self, ref: Reference, proc: asyncio.subprocess.Process, stderr: asyncio.Task[bytes],
                        digest: str, size: int | None) -> AsyncIterator[bytes]:
        hasher = hashlib.new(digest.split(":", 1)[0])
        total = 0
        assert proc.stdout is not None
        while piece := await self._read(ref, proc.stdout, PIECE):
            total += len(piece)
            if size is not None and size >= 0 and total > size:
                raise ImageCorrupt(f"{ref}: blob {digest} is longer than the {size} bytes its descriptor says")
            hasher.update(piece)
            yield piece
        await self._finished(ref, "blob", proc, stderr)
        if size is not None and size >= 0 and total != size:
            raise ImageCorrupt(f"{ref}: blob {digest} is {total} bytes but its descriptor gives its size as {size}")
        actual = f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"
        if actual != digest:
            raise ImageCorrupt(f"{ref}: blob {digest} does not match its digest (crane read {actual})")

    async def _read(self, ref: Reference, stream: asyncio.StreamReader, n: int) -> bytes:
        try:
            return await asyncio.wait_for(stream.read(n), self.settings.timeout)
        except TimeoutError as exc:
            self.stats.record(ref.registry, "timeout")
            raise RegistryUnreachable(f"{ref}: crane sent nothing for {self.settings.timeout:g}s",
                                      host=ref.registry) from exc

    async def _run(self, ref: Reference, command: str, name: str, *, limit: int) -> bytes:
        async with self._process(ref, command, name) as (proc, stderr):
            assert proc.stdout is not None
            out = bytearray()
            while piece := await self._read(ref, proc.stdout, PIECE):
                out += piece
                if len(out) > limit:
                    raise LimitExceeded(f"{ref}: crane {command} printed more than {limit} bytes")
            await self._finished(ref, command, proc, stderr)
            return bytes(out)

    async def _finished(self, ref: Reference, command: str, proc: asyncio.subprocess.Process,
                        stderr: asyncio.Task[bytes]) -> None:
        code = await asyncio.wait_for(proc.wait(), self.settings.timeout)
        if code == 0:
            self.stats.record(ref.registry, 200)
            return
        text = (await stderr).decode(errors="replace").strip()
        line = _QUERY.sub("?…", (text.splitlines() or [f"exit {code}"])[-1])[:400]
        if any(word in line for word in _NOT_FOUND):
            self.stats.record(ref.registry, 404)
            raise ImageNotFound(f"{ref}: not found (crane {command}: {line})", host=ref.registry, status=404)
        if any(word in line for word in _REFUSED):
            self.stats.record(ref.registry, 401)
            raise RegistryAuthError(f"{ref}: access refused (crane {command}: {line})", host=ref.registry)
        self.stats.record(ref.registry, "error")
        raise RegistryUnreachable(f"{ref}: crane {command} failed: {line}", host=ref.registry)

    @asynccontextmanager
    async def _process(self, ref: Reference, command: str, name: str
                       ) -> AsyncIterator[tuple[asyncio.subprocess.Process, asyncio.Task[bytes]]]:
        if self._guard is not None:
            await self._guard.check(ref.api_host)
        cred = await find_credential(ref.registry, self._keychain)
        private = tempfile.mkdtemp(prefix="canrun-crane-")  # 0700
        try:
            fd = os.open(os.path.join(private, "config.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(_docker_config(ref.registry, cred), handle)
            args = [str(self.crane), command, name]
            host = ref.registry.lower()
            if host in self._insecure or host.split(":", 1)[0] in self._insecure:
                args.insert(1, "--insecure")
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DOCKER_CONFIG": private, "HOME": private}
            try:
                proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                            stdout=asyncio.subprocess.PIPE,
                                                            stderr=asyncio.subprocess.PIPE, env=env)
            except OSError as exc:
                raise UsageError(f"cannot run {self.crane}: {exc.strerror or exc}") from exc
            assert proc.stderr is not None
            stderr = asyncio.ensure_future(proc.stderr.read(MAX_STDERR))
            try:
                yield proc, stderr
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                stderr.cancel()
                await asyncio.gather(stderr, return_exceptions=True)
        finally:
            shutil.rmtree(private, ignore_errors=True)
