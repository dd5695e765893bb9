"""The native OCI distribution client: one ``httpx.AsyncClient`` per trust mode, state per registry host.

What it does, and why each piece is there:

* **Scheme.** HTTPS everywhere, verified against the system CAs plus
  ``ca_file``.  Loopback hosts (127.0.0.0/8, ::1, localhost) fall back to plain
  HTTP when the port does not speak TLS, as docker does for them; hosts in
  ``insecure_hosts`` try HTTPS without verification, then HTTP.  The choice is
  made once per host by pinging ``/v2/``, which also yields the auth challenge.
* **Auth.** Anonymous, Basic, or the distribution token flow: the realm from
  ``WWW-Authenticate`` is asked for a token for ``repository:<repo>:pull``
  (Basic credentials, or an OAuth2 ``refresh_token`` POST with an identity
  token), ``token`` or ``access_token`` is accepted, and tokens are cached per
  (host, realm, service, scope, credential) until shortly before they expire —
  keyed by credential so one tenant's token never serves another's request.
  Credentials come from the request's keychain (``use_keychain``), then the
  docker config, then none.
* **Redirects** are followed by hand (registries send blobs to object storage):
  ``Authorization`` is dropped as soon as a hop leaves the origin host, the SSRF
  guard (when on) checks every target, and more than ``max_redirects`` hops fail.
* **Retries** with exponential backoff and jitter on 429/500/502/503/504 and on
  connection errors (not on 501/505: "not implemented" does not heal), honouring ``Retry-After`` up to ``max_backoff``; TLS
  errors and timeouts are not retried (they do not heal, and timeouts would
  multiply the wait); a body that has started streaming is never retried.
* **Integrity.** Every manifest, config and layer is verified against the
  digest it was asked for (a tag's manifest against ``Docker-Content-Digest``);
  a layer stream longer than its descriptor is cut off.  Anything else is
  ``ImageCorrupt`` naming the digest.
* **Quiet about secrets.** No credential, token or signed redirect URL goes into
  an exception message, a log line or a repr; log lines carry host and path only.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import ipaddress
import json
import logging
import random
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from canrun.errors import (CanrunError, ImageCorrupt, ImageNotFound, InvalidReference, LimitExceeded, RegistryAuthError,
                           RegistryError, RegistryHTTPError, RegistryRefused, RegistryUnreachable, UnsupportedManifest,
                           UsageError)
from canrun.registry.auth import (Challenge, Credential, Keychain, current_keychain, default_docker_config,
                                  parse_challenges)
from canrun.registry.base import Descriptor
from canrun.registry.mediatypes import ACCEPT, SCHEMA1_TYPES
from canrun.registry.reference import Reference, validate_digest
from canrun.registry.ssrf import SsrfGuard, split_host_port

log = logging.getLogger("canrun.registry")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_MANIFEST_BYTES = 4 << 20  # containerd's limit too
#: Bytes asked of the socket per read.  httpcore reads 64 KiB at a time; a 600 MB image then costs ~10k
#: trips through the event loop, h11 and anyio, over a second of the cold check's loop time, where 256 KiB
#: reads halve it (measured: 643 MB from a loopback registry, 1.35 s -> 0.70 s).  httpcore has no option for
#: it, so its class attribute is raised once, here; if a future httpcore drops it, this does nothing.
SOCKET_READ_BYTES = 256 << 10
if getattr(httpcore.AsyncHTTP11Connection, "READ_NUM_BYTES", SOCKET_READ_BYTES) < SOCKET_READ_BYTES:
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = SOCKET_READ_BYTES  # type: ignore[attr-defined]
#: Bytes a layer stream is handed on in (network reads are up to SOCKET_READ_BYTES; see _verified_chunks).
STREAM_PIECE = 1 << 20
MIN_TOKEN_LIFETIME = 60.0  # the token spec's default when expires_in is absent or smaller
TOKEN_MARGIN = 10.0
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


@dataclass(frozen=True)
class RegistrySettings:
    insecure_hosts: frozenset[str] = frozenset()
    ca_file: str | None = None
    timeout: float = 30.0
    docker_config: str | None = None
    #: Hosts the SSRF guard lets through even if they resolve to refused addresses.
    allow_hosts: frozenset[str] = frozenset()
    ssrf_guard: bool = False
    blocked_networks: tuple[str, ...] = ()
    retries: int = 3
    user_agent: str = "canrun/0.1"
    max_redirects: int = 5
    #: First backoff (seconds); doubles per attempt, with jitter, capped by ``max_backoff``.
    backoff: float = 0.2
    max_backoff: float = 10.0
    #: Credentials to use besides the docker config (consulted after the request's keychain).
    keychain: Keychain | None = None


@dataclass
class RegistryStats:
    """Request counts by (host, outcome): an HTTP status ("200") or an error kind ("timeout", "connect")."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)

    def record(self, host: str, outcome: str | int) -> None:
        self.requests[(host, str(outcome))] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        return dict(self.requests)


#: Seconds a failed ping of a host is remembered (see _Host.failure).
FAILURE_TTL = 5.0


@dataclass
class _Host:
    """What the client learnt about one registry host."""

    name: str
    scheme: str | None = None
    verify: bool = True
    challenge: Challenge | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Set once a ping succeeded: only then are scheme/verify/challenge safe for other tasks to use
    #: (the ping tries schemes one by one on this same record).
    ready: bool = False
    #: The last ping failure and when it happened: callers within FAILURE_TTL get it again instead of
    #: each waiting out its own connect timeout against a host that is down (64 images on one dead host).
    failure: BaseException | None = None
    failed_at: float = 0.0

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.name}{path}"


def is_loopback_host(host: str) -> bool:
    name, _ = split_host_port(host.lower())
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _digest_of(data: bytes, algorithm: str) -> str:
    return f"{algorithm}:{_HASHES[algorithm](data).hexdigest()}"


def _hasher(digest: str) -> Any:
    algo = digest.split(":", 1)[0]
    factory = _HASHES.get(algo)
    if factory is None:
        raise UnsupportedManifest(f"digest algorithm {algo!r} is not supported (sha256, sha512)")
    return factory()


def _cert_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _tls_error(exc: BaseException) -> bool:
    cur: BaseException | None = exc
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return True
        cur = cur.__cause__ or cur.__context__
    return "SSL" in str(exc) or "TLS" in str(exc)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _hostport(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}" if url.port else host


class RegistryClient:
    """``RegistryBackend`` over HTTP(S) with httpx; see the module docstring for the behaviour."""

    def __init__(self, settings: RegistrySettings | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self.stats = RegistryStats()
        self._insecure = frozenset(h.lower() for h in self.settings.insecure_hosts)
        self._guard = (SsrfGuard.build(self.settings.blocked_networks, self.settings.allow_hosts, self._insecure)
                       if self.settings.ssrf_guard else None)
        self._keychain = self._load_keychain()
        timeout = httpx.Timeout(self.settings.timeout)
        common: dict[str, Any] = {"timeout": timeout, "follow_redirects": False,
                                  "headers": {"User-Agent": self.settings.user_agent},
                                  "limits": httpx.Limits(max_connections=64, max_keepalive_connections=16)}
        self._verified = httpx.AsyncClient(verify=self._ssl_context(), **common)
        self._unverified = httpx.AsyncClient(verify=False, **common)
        self._hosts: dict[str, _Host] = {}
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._recent: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def __repr__(self) -> str:
        return f"RegistryClient(hosts={sorted(self._hosts)}, ssrf_guard={self.settings.ssrf_guard})"

    # -- setup --------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if self.settings.ca_file:
            try:
                ctx.load_verify_locations(cafile=self.settings.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot load CA file {self.settings.ca_file}: {exc}") from exc
        return ctx

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
        await self._verified.aclose()
        await self._unverified.aclose()

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
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_size:
                raise LimitExceeded(f"{ref}: blob {digest} is {declared} bytes, above the limit of {max_size}")
            body = bytearray()
            async for chunk in self._chunks(resp, ref):
                body += chunk
                if len(body) > max_size:
                    raise LimitExceeded(f"{ref}: blob {digest} is larger than the limit of {max_size} bytes")
        finally:
            await resp.aclose()
        data = bytes(body)
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

    # -- manifests ------------------------------------------------------------------------------

    async def _get_manifest(self, ref: Reference, identifier: str, *, expected: str | None) -> tuple[Descriptor, bytes]:
        resp = await self._request(ref, "GET", f"/v2/{ref.repository}/manifests/{identifier}",
                                   headers={"Accept": ", ".join(ACCEPT)})
        try:
            await self._raise_for_status(resp, ref, f"manifest {identifier}" if ":" in identifier
                                         else f"tag {identifier}")
            media_type = resp.headers.get("content-type", "").split(";")[0].strip()
            self._refuse_schema1(ref, media_type)
            body = bytearray()
            async for chunk in self._chunks(resp, ref):
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise LimitExceeded(f"{ref}: manifest {identifier} is larger than {MAX_MANIFEST_BYTES} bytes")
            header_digest = resp.headers.get("docker-content-digest", "")
        finally:
            await resp.aclose()
        data = bytes(body)
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

    async def _chunks(self, resp: httpx.Response, ref: Reference) -> AsyncIterator[bytes]:
        host = resp.request.url.host
        try:
            async for chunk in resp.aiter_bytes():
                yield chunk
        except httpx.TimeoutException as exc:
            self.stats.record(host, "timeout")
            raise RegistryUnreachable(f"{ref}: timed out after {self.settings.timeout:g}s reading from {host}",
                                      host=host) from exc
        except httpx.HTTPError as exc:
            self.stats.record(host, "connect")
            raise RegistryUnreachable(f"{ref}: the connection to {host} broke while reading: "
                                      f"{type(exc).__name__}", host=host) from exc

    async def _verified_chunks(self, resp: httpx.Response, ref: Reference, digest: str,
                               size: int | None) -> AsyncGenerator[bytes, None]:
        """The body in pieces of about ``STREAM_PIECE`` bytes, hashed off the event loop as they pass.

        The network gives reads of up to ``SOCKET_READ_BYTES`` (64 KiB before it was
        raised); handing each one to a layer worker and hashing it on the loop cost a cold check of a 600 MB image over a second
        of event-loop time (measured with py-spy).  Pieces of 1 MiB cut the
        hand-offs sixteenfold, and each piece is hashed in a thread (hashlib
        releases the GIL) while the next one is read: in order, one at a time.
        """
        hasher = _hasher(digest)
        total = 0
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

        async for chunk in self._chunks(resp, ref):
            total += len(chunk)
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
        host = await self._host(ref.api_host)
        scope = f"repository:{ref.repository}:pull"
        base_headers = dict(headers or {})
        auth = await self._authorization(host, ref, scope, force=False)
        for attempt in range(2):
            send_headers = dict(base_headers)
            if auth:
                send_headers["Authorization"] = auth
            resp = await self._with_retries(host.name, lambda h=send_headers: self._send(host, method, path, h))
            if resp.status_code != 401 or attempt == 1:
                return resp
            challenges = parse_challenges(resp.headers.get("www-authenticate", ""))
            usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
            if not usable:
                return resp
            challenge = next((c for c in usable if c.scheme == "bearer"), usable[0])
            host.challenge = Challenge(challenge.scheme, {k: v for k, v in challenge.params.items()
                                                          if k in ("realm", "service")})
            try:
                new_auth = await self._authorization(host, ref, challenge.params.get("scope") or scope, force=True)
            except BaseException:
                await resp.aclose()
                raise
            if new_auth is None or new_auth == auth:
                return resp  # nothing new to offer: the registry's refusal stands
            await resp.aclose()
            auth = new_auth
        raise AssertionError("unreachable")

    async def _host(self, name: str) -> _Host:
        """The host's state; pinged once (scheme and auth challenge) under a per-host lock."""
        if self._guard is not None:
            try:
                await self._guard.check(name)
            except RegistryRefused:
                self.stats.record(name, "ssrf")
                raise
        host = self._hosts.get(name)
        if host is None:
            host = self._hosts.setdefault(name, _Host(name))
        if host.ready:
            return host
        async with host.lock:
            if host.ready:
                return host
            if host.failure is not None and time.monotonic() - host.failed_at < FAILURE_TTL:
                raise host.failure
            try:
                await self._ping(host)
            except CanrunError as exc:
                host.failure, host.failed_at = exc, time.monotonic()
                raise
            host.ready, host.failure = True, None
        return host

    async def _ping(self, host: _Host) -> None:
        insecure = host.name.lower() in self._insecure or split_host_port(host.name.lower())[0] in self._insecure
        if insecure:
            candidates = [("https", False), ("http", False)]
        elif is_loopback_host(host.name):
            candidates = [("https", True), ("http", True)]
        else:
            candidates = [("https", True)]

        async def probe() -> httpx.Response:
            last: Exception | None = None
            for scheme, verify in candidates:
                host.scheme, host.verify = scheme, verify
                try:
                    return await self._send(host, "GET", "/v2/", {})
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    cert = _cert_error(exc)
                    if cert is not None and verify:
                        raise  # a certificate we do not trust: never fall back to plain HTTP
                    last = exc
            assert last is not None
            raise last

        try:
            resp = await self._with_retries(host.name, probe)
        except BaseException:
            host.scheme = None
            raise
        try:
            if resp.status_code == 401:
                challenges = parse_challenges(resp.headers.get("www-authenticate", ""))
                usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
                host.challenge = next((c for c in usable if c.scheme == "bearer"), usable[0] if usable else None)
            elif resp.status_code in RETRY_STATUSES or resp.status_code >= 500:
                # the scheme is known, but the registry is not answering: report it now
                host.scheme = None
                raise RegistryHTTPError(f"{host.name} answered {resp.status_code} to /v2/", host=host.name,
                                        status=resp.status_code)
        finally:
            await resp.aclose()
        log.debug("registry %s: %s, auth %s", host.name, host.scheme,
                  host.challenge.scheme if host.challenge else "none")

    async def _send(self, host: _Host, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
        """One request, redirects followed by hand; Authorization dropped once a hop leaves the origin."""
        url = httpx.URL(host.url(path))
        origin = _origin(url)
        headers = dict(headers)
        client = self._verified if host.verify else self._unverified
        for _hop in range(self.settings.max_redirects + 1):
            request = client.build_request(method, url, headers=headers)
            resp = await client.send(request, stream=True)
            self.stats.record(_hostport(url), resp.status_code)
            log.debug("%s %s%s -> %d", method, _hostport(url), url.path, resp.status_code)
            location = resp.headers.get("location")
            if resp.status_code not in REDIRECT_STATUSES or not location:
                return resp
            await resp.aclose()
            try:
                target = url.join(location)
            except httpx.InvalidURL as exc:
                raise RegistryHTTPError(f"{host.name} redirected to an invalid URL", host=host.name) from exc
            if target.scheme not in ("http", "https"):
                raise RegistryHTTPError(f"{host.name} redirected to a {target.scheme}: URL", host=host.name)
            if self._guard is not None:
                try:
                    await self._guard.check(_hostport(target))
                except RegistryRefused:
                    self.stats.record(_hostport(target), "ssrf")
                    raise
            if _origin(target) != origin:
                headers.pop("Authorization", None)
                target_host = _hostport(target).lower()
                client = self._unverified if (target_host in self._insecure or target.host in self._insecure) \
                    else self._verified
            if resp.status_code == 303 and method != "HEAD":
                method = "GET"
            url = target
        raise RegistryHTTPError(f"{host.name}: more than {self.settings.max_redirects} redirects", host=host.name)

    async def _with_retries(self, host: str, send: Any) -> httpx.Response:
        """Run ``send`` again on retryable statuses and connection errors; map transport errors."""
        retries = max(0, self.settings.retries)
        for attempt in range(retries + 1):
            try:
                resp: httpx.Response = await send()
            except httpx.TimeoutException as exc:
                self.stats.record(host, "timeout")
                raise RegistryUnreachable(
                    f"timed out after {self.settings.timeout:g}s talking to {host}", host=host) from exc
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                cert = _cert_error(exc)
                if cert is not None:
                    self.stats.record(host, "tls")
                    raise RegistryUnreachable(
                        f"the TLS certificate of {host} is not trusted ({cert.verify_message or 'verify failed'}); "
                        f"pass its CA with --ca-file, or list the host as an insecure registry", host=host) from exc
                if _tls_error(exc) and not is_loopback_host(host) and host.lower() not in self._insecure:
                    self.stats.record(host, "tls")
                    raise RegistryUnreachable(f"TLS handshake with {host} failed: {exc}", host=host) from exc
                self.stats.record(host, "connect")
                if attempt == retries:
                    raise RegistryUnreachable(f"cannot connect to {host}: {exc or type(exc).__name__}",
                                              host=host) from exc
                await asyncio.sleep(self._backoff(attempt, None))
                continue
            except httpx.HTTPError as exc:
                self.stats.record(host, "error")
                raise RegistryUnreachable(f"request to {host} failed: {type(exc).__name__}", host=host) from exc
            if resp.status_code in RETRY_STATUSES and attempt < retries:
                wait = self._backoff(attempt, resp.headers.get("retry-after"))
                await resp.aclose()
                log.debug("%s answered %d; retrying in %.2fs", host, resp.status_code, wait)
                await asyncio.sleep(wait)
                continue
            return resp
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        cap = self.settings.max_backoff
        if retry_after:
            seconds: float | None = None
            if retry_after.strip().isdigit():
                seconds = float(retry_after.strip())
            else:
                try:
                    when = email.utils.parsedate_to_datetime(retry_after)
                    seconds = when.timestamp() - time.time()
                except (TypeError, ValueError, IndexError):
                    seconds = None
            if seconds is not None:
                return max(0.0, min(seconds, cap))
        return min(cap, self.settings.backoff * (2 ** attempt)) * random.uniform(0.5, 1.0)

    # -- auth -----------------------------------------------------------------------------------

    async def _credential(self, registry: str) -> Credential | None:
        for chain in (current_keychain(), self._keychain):
            if chain is None:
                continue
            if chain.needs_subprocess:
                cred = await asyncio.to_thread(chain.lookup, registry)
            else:
                cred = chain.lookup(registry)
            if cred is not None:
                return cred
        return None

    async def _authorization(self, host: _Host, ref: Reference, scope: str, *, force: bool) -> str | None:
        challenge = host.challenge
        if challenge is None:
            return None
        cred = await self._credential(ref.registry)
        if challenge.scheme == "basic":
            if cred is None or cred.identity_token:
                return None
            raw = f"{cred.username}:{cred.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if challenge.scheme == "bearer":
            token = await self._token(host, ref, challenge, scope, cred, force=force)
            return f"Bearer {token}" if token else None
        return None

    async def _token(self, host: _Host, ref: Reference, challenge: Challenge, scope: str,
                     cred: Credential | None, *, force: bool) -> str | None:
        realm = challenge.realm
        if not realm:
            return None
        service = challenge.params.get("service", "")
        key = (host.name, realm, service, scope, cred.fingerprint if cred else "")
        cached = self._tokens.get(key)
        if cached is not None and not force and cached[1] > time.monotonic():
            return cached[0]
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL as exc:
            raise RegistryAuthError(f"{host.name} named an invalid token realm", host=host.name) from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise RegistryAuthError(f"{host.name} named a token realm that is not an http(s) URL", host=host.name)
        realm_host = _hostport(url)
        if url.scheme == "http" and cred is not None and host.scheme == "https" \
                and not is_loopback_host(realm_host) and realm_host.lower() not in self._insecure:
            raise RegistryAuthError(f"{host.name} asks for credentials over plain HTTP ({realm_host}); refusing to "
                                    f"send them", host=host.name)
        if self._guard is not None:
            await self._guard.check(realm_host)
        params: dict[str, str] = {"scope": scope}
        if service:
            params["service"] = service
        client = self._verified if (url.scheme == "http" or realm_host.lower() not in self._insecure) \
            else self._unverified

        async def fetch() -> httpx.Response:
            if cred is not None and cred.identity_token:
                form = {**params, "grant_type": "refresh_token", "refresh_token": cred.identity_token,
                        "client_id": "canrun"}
                request = client.build_request("POST", url, data=form)
            else:
                headers = {}
                if cred is not None:
                    raw = f"{cred.username}:{cred.password}".encode()
                    headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
                    params["account"] = cred.username
                request = client.build_request("GET", url, params=params, headers=headers)
            resp = await client.send(request)
            self.stats.record(realm_host, resp.status_code)
            return resp

        resp = await self._with_retries(realm_host, fetch)
        try:
            if resp.status_code in (401, 403):
                who = "with the configured credentials" if cred else "anonymously"
                raise RegistryAuthError(f"the token server of {host.name} refused access to {ref.repository} {who} "
                                        f"({resp.status_code})", host=host.name, status=resp.status_code)
            if resp.status_code != 200:
                raise RegistryHTTPError(f"the token server of {host.name} answered {resp.status_code}",
                                        host=host.name, status=resp.status_code)
            try:
                answer = json.loads(resp.content)
                token = answer.get("token") or answer.get("access_token")
                lifetime = float(answer.get("expires_in") or MIN_TOKEN_LIFETIME)
            except (ValueError, AttributeError, TypeError) as exc:
                raise RegistryAuthError(f"the token server of {host.name} gave an unreadable answer",
                                        host=host.name) from exc
        finally:
            await resp.aclose()
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"the token server of {host.name} gave no token", host=host.name)
        lifetime = max(lifetime, MIN_TOKEN_LIFETIME)
        self._tokens[key] = (token, time.monotonic() + lifetime - TOKEN_MARGIN)
        return token

    # -- errors ---------------------------------------------------------------------------------

    async def _raise_for_status(self, resp: httpx.Response, ref: Reference, what: str) -> None:
        status = resp.status_code
        if status < 300:
            return
        host = ref.api_host
        code = ""
        if resp.request.method != "HEAD":
            try:
                raw = b""
                async for chunk in resp.aiter_bytes():
                    raw += chunk
                    if len(raw) > 16384:
                        break
                errors = json.loads(raw).get("errors") or []
                code = str(errors[0].get("code") or "")[:60] if errors else ""
            except (ValueError, AttributeError, TypeError, IndexError, httpx.HTTPError):
                code = ""
        detail = f" {code}" if code else ""
        if status in (401, 403):
            cred = await self._credential(ref.registry)
            who = "with the configured credentials" if cred else "anonymously (no credentials found)"
            raise RegistryAuthError(f"{host} refused access to {ref.repository} {who}: {status}{detail}",
                                    host=host, status=status)
        if status == 404:
            raise ImageNotFound(f"{ref}: {what} not found on {host} (404{detail})", host=host, status=status)
        raise RegistryHTTPError(f"{ref}: {host} answered {status}{detail} for {what}", host=host, status=status)


__all__ = ["RegistryClient", "RegistrySettings", "RegistryStats", "RegistryError"]
