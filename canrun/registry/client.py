"""The native OCI distribution client: the distribution API over the transport, with token auth beside it.

The pieces, each in its own module: ``transport`` sends (redirects, the SSRF
guard, retries, the one map from httpx errors to canrun errors), ``hosts``
learns once per host which scheme it speaks and which auth it asks for,
``auth`` holds credentials and turns a challenge into an ``Authorization``
header.  This module only speaks the API: ``/v2/<repo>/manifests/<ref>`` and
``/v2/<repo>/blobs/<digest>``.

* **Integrity.** Every manifest, config and layer is verified against the
  digest it was asked for (a tag's manifest against ``Docker-Content-Digest``);
  a layer stream longer than its descriptor is cut off.  Anything else is
  ``ImageCorrupt`` naming the digest.
* **A 401** is answered once: with the challenge it carries (a token for the
  scope it names), then the registry's refusal stands.  The challenge is a
  local of that request; it is remembered for the host only after it worked.
* **Quiet about secrets.** No credential, token or signed redirect URL goes into
  an exception message, a log line or a repr; log lines carry host and path only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from canrun import untrusted_json
from canrun.errors import (ImageCorrupt, ImageNotFound, InvalidReference, RangeUnsupported, RegistryAuthError,
                           RegistryError, RegistryHTTPError, RegistryUnreachable, UnsupportedManifest, UsageError)
from canrun.redact import redact
from canrun.registry.auth import Keychain, RegistryAuth, default_docker_config, pick_challenge
from canrun.registry.base import Descriptor
from canrun.registry.hosts import HostTable
from canrun.registry.mediatypes import ACCEPT, SCHEMA1_TYPES
from canrun.registry.reference import HASHES, Reference, validate_digest
from canrun.registry.settings import RegistrySettings, RegistryStats
from canrun.registry.ssrf import is_loopback_host
from canrun.registry.transport import Transport, hostport, origin

log = logging.getLogger("canrun.registry")

MAX_MANIFEST_BYTES = 4 << 20  # containerd's limit too
#: Bytes of an error body read for its distribution error code (the rest is never needed).
MAX_ERROR_BODY = 16 << 10
#: Bytes a layer stream is handed on in (network reads are up to SOCKET_READ_BYTES; see _verified_chunks).
STREAM_PIECE = 1 << 20
#: Slowest layer transfer canrun waits for (bytes/s, on average from the start, after one ``timeout``).
MIN_TRANSFER_RATE = 256 << 10


def _digest_of(data: bytes, algorithm: str) -> str:
    return f"{algorithm}:{HASHES[algorithm](data).hexdigest()}"


def _hasher(digest: str) -> Any:
    algo = digest.split(":", 1)[0]
    factory = HASHES.get(algo)
    if factory is None:
        raise UnsupportedManifest(f"digest algorithm {algo!r} is not supported (sha256, sha512)")
    return factory()


class RegistryClient:
    """``RegistryBackend`` over HTTP(S); see the module docstring for the behaviour."""

    def __init__(self, settings: RegistrySettings | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self.stats = RegistryStats()
        self.transport = Transport(self.settings, self.stats)
        self.hosts = HostTable(self.transport)
        self.auth = RegistryAuth(self.transport, self._load_keychain())
        self._recent: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def __repr__(self) -> str:
        return f"RegistryClient({self.hosts!r}, ssrf_guard={self.settings.ssrf_guard})"

    def _load_keychain(self) -> Keychain:
        chain = self.settings.keychain or Keychain()
        if self.settings.docker_config:
            return chain.merge(Keychain.from_docker_config(self.settings.docker_config))
        path = default_docker_config()
        if path is not None:
            try:
                return chain.merge(Keychain.from_docker_config(path))
            except UsageError as exc:
                log.warning("ignoring the default docker config: %s", exc)
        return chain

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- RegistryBackend ----------------------------------------------------------------------

    async def resolve(self, ref: Reference) -> Descriptor:
        """Tag -> digest with a HEAD (GET if the HEAD names no digest); a digest reference costs nothing."""
        if ref.digest is not None:
            return Descriptor(media_type="", digest=ref.digest, size=-1)
        path = f"/v2/{ref.repository}/manifests/{ref.identifier}"
        resp = await self._request(ref, "HEAD", path, headers={"Accept": ", ".join(ACCEPT)})
        try:
            if resp.status_code == 200:
                media_type = resp.headers.get("content-type", "").split(";")[0].strip()
                self._refuse_schema1(ref, media_type)
                digest = resp.headers.get("docker-content-digest", "")
                try:
                    validate_digest(digest)
                except InvalidReference:
                    digest = ""
                if digest:
                    size = int(resp.headers.get("content-length") or -1)
                    return Descriptor(media_type=media_type, digest=digest, size=size)
            elif resp.status_code != 405 and resp.status_code >= 300:
                # 405: a registry without HEAD support; anything else is the answer a GET would get too
                await self._raise_for_status(resp, ref, f"tag {ref.identifier}")
        finally:
            await resp.aclose()
        descriptor, body = await self._get_manifest(ref, ref.identifier, expected=None)
        self._remember(descriptor, body)
        return descriptor

    async def manifest(self, ref: Reference, digest: str | None = None) -> tuple[Descriptor, bytes]:
        """The manifest at ``digest`` (or the reference's own digest or tag), verified."""
        if digest is not None:
            validate_digest(digest)
            hit = self._recent.pop(digest, None)
            if hit is not None:
                return Descriptor(media_type=hit[0], digest=digest, size=len(hit[1])), hit[1]
            return await self._get_manifest(ref, digest, expected=digest)
        return await self._get_manifest(ref, ref.identifier, expected=ref.digest)

    async def blob(self, ref: Reference, digest: str, *, max_size: int) -> bytes:
        """A small blob read whole: refused past ``max_size`` bytes, verified against ``digest``."""
        validate_digest(digest)
        resp = await self._request(ref, "GET", f"/v2/{ref.repository}/blobs/{digest}")
        try:
            await self._raise_for_status(resp, ref, f"blob {digest}")
            data = await self.transport.read(resp, limit=max_size, what=f"{ref}: blob {digest}")
        finally:
            await resp.aclose()
        actual = _digest_of(data, digest.split(":", 1)[0])
        if actual != digest:
            raise ImageCorrupt(f"{ref}: blob {digest} does not match its digest (the registry sent {actual})")
        return data

    @asynccontextmanager
    async def stream_blob(self, ref: Reference, digest: str,
                          size: int | None = None) -> AsyncIterator[AsyncIterator[bytes]]:
        """A layer as chunks; the iterator raises ImageCorrupt on a digest mismatch or a body over ``size``."""
        validate_digest(digest)
        resp = await self._request(ref, "GET", f"/v2/{ref.repository}/blobs/{digest}")
        try:
            await self._raise_for_status(resp, ref, f"blob {digest}")
            declared = resp.headers.get("content-length")
            if size is not None and size >= 0 and declared and declared.isdigit() and int(declared) > size:
                raise ImageCorrupt(f"{ref}: blob {digest} is {declared} bytes but its descriptor says {size}")
            chunks = self._verified_chunks(resp, ref, digest, size)
            try:
                yield chunks
            finally:
                await chunks.aclose()  # a consumer that stopped early leaves no generator behind
        finally:
            await resp.aclose()

    async def read_range(self, ref: Reference, digest: str, start: int, length: int, *,
                         size: int | None = None) -> bytes:
        """Bytes ``start .. start+length-1`` of a blob with one ``Range`` request; NOT verified (see base.py).

        Only a 206 whose ``Content-Range`` names exactly that range is accepted: a
        registry (or a proxy in front of it) that answers 200 with the whole blob
        is told apart at once, and the body is not read.
        """
        validate_digest(digest)
        if start < 0 or length <= 0:
            raise ValueError(f"bad range {start}+{length}")
        end = start + length - 1
        resp = await self._request(ref, "GET", f"/v2/{ref.repository}/blobs/{digest}",
                                   headers={"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"})
        try:
            if resp.status_code == 200:
                raise RangeUnsupported(f"{ref}: {ref.api_host} ignored a Range request for blob {digest}",
                                       host=ref.api_host, status=200)
            if resp.status_code == 416:
                raise ImageCorrupt(f"{ref}: blob {digest} has no bytes {start}-{end} (416 from {ref.api_host})")
            await self._raise_for_status(resp, ref, f"blob {digest}")
            if resp.status_code != 206:
                raise RangeUnsupported(f"{ref}: {ref.api_host} answered {resp.status_code} to a Range request",
                                       host=ref.api_host, status=resp.status_code)
            stated = resp.headers.get("content-range", "")
            unit, _, spec = stated.partition(" ")
            span, _, total = spec.partition("/")
            if unit.strip().lower() != "bytes" or span != f"{start}-{end}":
                raise RangeUnsupported(f"{ref}: {ref.api_host} answered bytes {span or '?'} of blob {digest} "
                                       f"for {start}-{end}", host=ref.api_host, status=206)
            if size is not None and size >= 0 and total != "*" and total != str(size):
                raise ImageCorrupt(f"{ref}: blob {digest} is {total} bytes on {ref.api_host} but its descriptor "
                                   f"gives its size as {size}")
            body = bytearray()
            async for chunk in self.transport.chunks(resp, f"{ref}: blob {digest}"):
                body += chunk
                if len(body) > length:
                    break
        finally:
            await resp.aclose()
        if len(body) != length:
            raise RangeUnsupported(f"{ref}: {ref.api_host} sent {len(body)} bytes for a {length}-byte range of "
                                   f"blob {digest}", host=ref.api_host, status=206)
        return bytes(body)

    # -- manifests ------------------------------------------------------------------------------

    async def _get_manifest(self, ref: Reference, identifier: str, *, expected: str | None) -> tuple[Descriptor, bytes]:
        resp = await self._request(ref, "GET", f"/v2/{ref.repository}/manifests/{identifier}",
                                   headers={"Accept": ", ".join(ACCEPT)})
        try:
            await self._raise_for_status(resp, ref, f"manifest {identifier}" if ":" in identifier
                                         else f"tag {identifier}")
            media_type = resp.headers.get("content-type", "").split(";")[0].strip()
            self._refuse_schema1(ref, media_type)
            data = await self.transport.read(resp, limit=MAX_MANIFEST_BYTES, what=f"{ref}: manifest {identifier}")
            header_digest = resp.headers.get("docker-content-digest", "")
        finally:
            await resp.aclose()
        if expected is None and header_digest:
            try:
                expected = validate_digest(header_digest)
            except InvalidReference:
                expected = None
        if expected is not None:
            actual = _digest_of(data, expected.split(":", 1)[0])
            if actual != expected:
                raise ImageCorrupt(f"{ref}: manifest {expected} does not match its digest (the registry sent {actual})")
            digest = expected
        else:
            digest = _digest_of(data, "sha256")
        return Descriptor(media_type=media_type, digest=digest, size=len(data)), data

    def _remember(self, descriptor: Descriptor, body: bytes) -> None:
        """Keep a manifest fetched by resolve() so the manifest() call that follows costs nothing."""
        self._recent[descriptor.digest] = (descriptor.media_type, body)
        while len(self._recent) > 32:
            self._recent.popitem(last=False)

    @staticmethod
    def _refuse_schema1(ref: Reference, media_type: str) -> None:
        if media_type in SCHEMA1_TYPES:
            raise UnsupportedManifest(
                f"{ref} is a Docker schema 1 manifest, which current runtimes no longer pull; re-push it with a "
                f"current tool")

    # -- bodies ---------------------------------------------------------------------------------

    async def _verified_chunks(self, resp: httpx.Response, ref: Reference, digest: str,
                               size: int | None) -> AsyncGenerator[bytes, None]:
        """The body in pieces of about ``STREAM_PIECE`` bytes, hashed off the event loop as they pass.

        The network gives reads of up to ``SOCKET_READ_BYTES``; handing each one to a
        layer worker and hashing it on the loop costs event-loop time in proportion
        to the number of reads.  Pieces of 1 MiB cut the hand-offs, and each piece
        is hashed in a thread (hashlib releases the GIL) while the next one is read:
        in order, one at a time.
        """
        hasher = _hasher(digest)
        total = 0
        # a transfer slower than MIN_TRANSFER_RATE (after one timeout of grace) cannot finish in any useful
        # time: it is cut off instead of holding a layer slot for as long as a drip takes
        budget = self.settings.timeout + size / MIN_TRANSFER_RATE if size is not None and size >= 0 else None
        started = time.monotonic()
        hashing: asyncio.Future[None] | None = None
        parts: list[bytes] = []
        buffered = 0

        async def hand_over() -> bytes:
            nonlocal hashing, buffered
            piece = parts[0] if len(parts) == 1 else b"".join(parts)
            parts.clear()
            buffered = 0
            if hashing is not None:
                await hashing
            hashing = asyncio.ensure_future(asyncio.to_thread(hasher.update, piece))
            return piece

        async for chunk in self.transport.chunks(resp, str(ref)):
            total += len(chunk)
            if budget is not None and time.monotonic() - started > budget:
                host = ref.api_host
                self.stats.record(host, "slow")
                raise RegistryUnreachable(
                    f"{ref}: blob {digest} arrives too slowly ({total} of {size} bytes in "
                    f"{time.monotonic() - started:.0f}s; canrun needs {MIN_TRANSFER_RATE >> 10} KiB/s after the first "
                    f"{self.settings.timeout:g}s)", host=host)
            if size is not None and size >= 0 and total > size:
                raise ImageCorrupt(f"{ref}: blob {digest} is longer than the {size} bytes its descriptor says")
            parts.append(chunk)
            buffered += len(chunk)
            if buffered >= STREAM_PIECE:
                yield await hand_over()
        if parts:
            yield await hand_over()
        if hashing is not None:
            await hashing
        if size is not None and size >= 0 and total != size:
            raise ImageCorrupt(f"{ref}: blob {digest} is {total} bytes but its descriptor gives its size as {size}")
        actual = f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"
        if actual != digest:
            raise ImageCorrupt(f"{ref}: blob {digest} does not match its digest (the registry sent {actual}, "
                               f"{total} bytes)")

    # -- requests -------------------------------------------------------------------------------

    async def _request(self, ref: Reference, method: str, path: str,
                       headers: dict[str, str] | None = None) -> httpx.Response:
        """Send with auth, retries and redirects; the response is streamed and must be closed by the caller."""
        host = await self.hosts.get(ref.api_host)
        scope = f"repository:{ref.repository}:pull"
        challenge = self.auth.challenge(host.name, host.challenge)
        auth = await self.auth.authorization(host.name, host.scheme, ref.registry, ref.repository, challenge,
                                             scope, force=False)
        learnt = None
        for attempt in range(2):
            send_headers = dict(headers or {})
            if auth:
                send_headers["Authorization"] = auth
            resp = await self.transport.send(host.name, method, host.url(path), send_headers, verify=host.verify)
            if resp.status_code != 401 or attempt == 1:
                if learnt is not None and resp.status_code != 401:
                    self.auth.learn(host.name, learnt)
                return resp
            if origin(resp.request.url) != origin(host.url(path)):
                # a host we were redirected to wants credentials: ours belong to the registry, not to it,
                # and neither does the realm it names
                return resp
            learnt = pick_challenge(resp.headers.get("www-authenticate", ""))
            if learnt is None:
                return resp
            try:
                new_auth = await self.auth.authorization(host.name, host.scheme, ref.registry, ref.repository,
                                                         learnt, learnt.params.get("scope") or scope, force=True)
            except BaseException:
                await resp.aclose()
                raise
            if new_auth is None or new_auth == auth:
                return resp  # nothing new to offer: the registry's refusal stands
            await resp.aclose()
            auth = new_auth
        raise AssertionError("unreachable")

    # -- errors ---------------------------------------------------------------------------------

    async def _raise_for_status(self, resp: httpx.Response, ref: Reference, what: str) -> None:
        status = resp.status_code
        if status < 300:
            return
        host = ref.api_host
        code = ""
        if resp.request.method != "HEAD":
            try:
                errors = untrusted_json.loads(await self.transport.read_prefix(resp, MAX_ERROR_BODY)).get("errors") or []
                code = redact(str(errors[0].get("code") or ""))[:60] if errors else ""  # cut after redacting
            except (ValueError, AttributeError, TypeError, IndexError):
                code = ""
        detail = f" {code}" if code else ""
        answered = hostport(resp.request.url)
        if status in (401, 403) and answered.lower() != host.lower():
            raise RegistryAuthError(f"{answered}, where {host} redirected the request for {what}, refused it "
                                    f"({status}); canrun sends {host}'s credentials only to {host}", host=host,
                                    status=status)
        if status in (401, 403):
            cred = await self.auth.credential(ref.registry)
            who = "with the configured credentials" if cred else "anonymously (no credentials found)"
            raise RegistryAuthError(f"{host} refused access to {ref.repository} {who}: {status}{detail}",
                                    host=host, status=status)
        if status == 404:
            raise ImageNotFound(f"{ref}: {what} not found on {host} (404{detail})", host=host, status=status)
        raise RegistryHTTPError(f"{ref}: {host} answered {status}{detail} for {what}", host=host, status=status)


__all__ = ["RegistryClient", "RegistrySettings", "RegistryStats", "RegistryError", "is_loopback_host"]
