"""Sending requests to registries: one request and its redirects, retries, and one map from httpx errors to canrun's.

The transport knows URLs, not images or credentials.  What it guarantees to the
layers above:

* **Redirects** are followed by hand (registries send blobs to object storage):
  ``Authorization`` is dropped as soon as a hop leaves the origin, the SSRF
  guard (when on) checks every target, and more than ``max_redirects`` hops fail.
* **Retries** with exponential backoff and jitter on 429/500/502/503/504 and on
  connection errors (not on 501/505: "not implemented" does not heal), honouring
  ``Retry-After`` up to ``max_backoff``.  TLS errors and timeouts are not retried
  (they do not heal, and timeouts would multiply the wait); a body that has
  started streaming is never retried.
* **Errors** from httpx become canrun errors in one place, ``ERROR_MAP``, with
  ``raise … from exc``, whether they happen while sending or while a body is read.
* **Quiet about secrets**: log lines carry host and path only (signed storage
  URLs carry credentials in their query string).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from canrun.errors import (LimitExceeded, RegistryError, RegistryHTTPError, RegistryRefused, RegistryUnreachable,
                           UsageError)
from canrun.registry.settings import RegistrySettings, RegistryStats
from canrun.registry.ssrf import SsrfGuard, is_loopback_host, split_host_port

log = logging.getLogger("canrun.registry")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Bytes asked of the socket per read.  httpcore reads 64 KiB at a time, which costs a large image many
#: trips through the event loop, h11 and anyio; 256 KiB reads halve that loop time.  httpcore has no option
#: for it, so its class attribute is raised once, here; if a future httpcore drops it, this does nothing.
SOCKET_READ_BYTES = 256 << 10
if getattr(httpcore.AsyncHTTP11Connection, "READ_NUM_BYTES", SOCKET_READ_BYTES) < SOCKET_READ_BYTES:
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = SOCKET_READ_BYTES  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Failure:
    """What an httpx error means for canrun: the error raised, the stats outcome, whether a retry may heal it."""

    error: type[RegistryError]
    kind: str
    retry: bool


#: httpx error -> its meaning, most specific first (the first ``isinstance`` match wins).  TLS failures
#: surface as ConnectError and are told apart by the ``ssl`` error in their cause chain (see ``classify``).
ERROR_MAP: tuple[tuple[type[Exception], Failure], ...] = (
    (httpx.TimeoutException, Failure(RegistryUnreachable, "timeout", retry=False)),
    (httpx.ConnectError, Failure(RegistryUnreachable, "connect", retry=True)),
    (httpx.RemoteProtocolError, Failure(RegistryUnreachable, "connect", retry=True)),
    (httpx.ReadError, Failure(RegistryUnreachable, "connect", retry=True)),
    (httpx.WriteError, Failure(RegistryUnreachable, "connect", retry=True)),
    (httpx.HTTPError, Failure(RegistryUnreachable, "error", retry=False)),
)
_TLS = Failure(RegistryUnreachable, "tls", retry=False)


def ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl`` error behind ``exc`` (httpx wraps it in httpcore's and anyio's), if any."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def hostport(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}" if url.port else host


class Transport:
    """Two httpx clients (verifying and not, for insecure hosts), the SSRF guard, retries and the error map."""

    def __init__(self, settings: RegistrySettings, stats: RegistryStats) -> None:
        self.settings = settings
        self.stats = stats
        self.insecure = frozenset(h.lower() for h in settings.insecure_hosts)
        self.guard = (SsrfGuard.build(settings.blocked_networks, settings.allow_hosts, self.insecure)
                      if settings.ssrf_guard else None)
        common: dict[str, Any] = {"timeout": httpx.Timeout(settings.timeout), "follow_redirects": False,
                                  "headers": {"User-Agent": settings.user_agent},
                                  "limits": httpx.Limits(max_connections=64, max_keepalive_connections=16)}
        self._verified = httpx.AsyncClient(verify=self._ssl_context(), **common)
        self._unverified = httpx.AsyncClient(verify=False, **common)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if self.settings.ca_file:
            try:
                ctx.load_verify_locations(cafile=self.settings.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot load CA file {self.settings.ca_file}: {exc}") from exc
        return ctx

    @staticmethod
    def parse_url(text: str) -> tuple[httpx.URL, str, str]:
        """``text`` as a URL with its scheme and ``host[:port]``; ValueError if it is not one."""
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL as exc:
            raise ValueError(str(exc)) from exc
        return url, url.scheme, hostport(url) if url.host else ""

    async def aclose(self) -> None:
        await self._verified.aclose()
        await self._unverified.aclose()

    def is_insecure(self, host: str) -> bool:
        """Whether ``host`` (``name[:port]``) was declared insecure: TLS without verification, or plain HTTP."""
        host = host.lower()
        return host in self.insecure or split_host_port(host)[0] in self.insecure

    async def check(self, host: str) -> None:
        """The SSRF guard's verdict on ``host`` (nothing when the guard is off); refusals are counted."""
        if self.guard is None:
            return
        try:
            await self.guard.check(host)
        except RegistryRefused:
            self.stats.record(host, "ssrf")
            raise

    # -- sending --------------------------------------------------------------------------------

    async def send(self, host: str, method: str, url: httpx.URL, headers: dict[str, str], *, verify: bool,
                   max_redirects: int | None = None, data: dict[str, str] | None = None,
                   params: dict[str, str] | None = None) -> httpx.Response:
        """``follow`` with retries; the response is streamed and the caller closes it."""
        return await self.retrying(host, lambda: self.follow(method, url, headers, verify=verify,
                                                              max_redirects=max_redirects, data=data, params=params))

    async def follow(self, method: str, url: httpx.URL, headers: dict[str, str], *, verify: bool,
                     max_redirects: int | None = None, data: dict[str, str] | None = None,
                     params: dict[str, str] | None = None) -> httpx.Response:
        """One request, redirects followed by hand; httpx errors are left to ``retrying`` to map."""
        start = origin(url)
        headers = dict(headers)
        client = self._verified if verify else self._unverified
        limit = self.settings.max_redirects if max_redirects is None else max_redirects
        name = hostport(url)
        for _hop in range(limit + 1):
            request = client.build_request(method, url, headers=headers, data=data, params=params)
            resp = await client.send(request, stream=True)
            self.stats.record(hostport(url), resp.status_code)
            log.debug("%s %s%s -> %d", method, hostport(url), url.path, resp.status_code)
            location = resp.headers.get("location")
            if resp.status_code not in REDIRECT_STATUSES or not location or limit == 0:
                return resp
            await resp.aclose()
            try:
                target = url.join(location)
            except httpx.InvalidURL as exc:
                raise RegistryHTTPError(f"{name} redirected to an invalid URL", host=name) from exc
            if target.scheme not in ("http", "https"):
                raise RegistryHTTPError(f"{name} redirected to a {target.scheme}: URL", host=name)
            await self.check(hostport(target))
            if origin(target) != start:
                headers.pop("Authorization", None)
                client = self._unverified if self.is_insecure(hostport(target)) else self._verified
            if resp.status_code == 303 and method != "HEAD":
                method, data = "GET", None
            url, params = target, None
        raise RegistryHTTPError(f"{name}: more than {limit} redirects", host=name)

    async def retrying(self, host: str, attempt: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        """Run ``attempt`` again on retryable statuses and errors; map httpx errors through ``ERROR_MAP``."""
        retries = max(0, self.settings.retries)
        for n in range(retries + 1):
            try:
                resp = await attempt()
            except httpx.HTTPError as exc:
                failure, message = self.classify(exc, host)
                self.stats.record(host, failure.kind)
                if failure.retry and n < retries:
                    await asyncio.sleep(self.backoff(n, None))
                    continue
                raise failure.error(message, host=host) from exc
            if resp.status_code in RETRY_STATUSES and n < retries:
                wait = self.backoff(n, resp.headers.get("retry-after"))
                await resp.aclose()
                log.debug("%s answered %d; retrying in %.2fs", host, resp.status_code, wait)
                await asyncio.sleep(wait)
                continue
            return resp
        raise AssertionError("unreachable")

    def classify(self, exc: httpx.HTTPError, host: str, *, reading: str | None = None) -> tuple[Failure, str]:
        """The entry of ``ERROR_MAP`` for ``exc`` and the user message; ``reading`` names a body being read."""
        failure = next(f for kind, f in ERROR_MAP if isinstance(exc, kind))
        timeout = f"{self.settings.timeout:g}s"
        if reading is not None:
            if failure.kind == "timeout":
                return failure, f"{reading}: timed out after {timeout} reading from {host}"
            return failure, f"{reading}: the connection to {host} broke while reading: {type(exc).__name__}"
        if failure.kind == "timeout":
            return failure, f"timed out after {timeout} talking to {host}"
        cause = ssl_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _TLS, (f"the TLS certificate of {host} is not trusted "
                          f"({cause.verify_message or 'verify failed'}); pass its CA with --ca-file, or list the "
                          f"host as an insecure registry")
        tls = cause is not None or "SSL" in str(exc) or "TLS" in str(exc)
        if tls and failure.kind == "connect" and not is_loopback_host(host) and not self.is_insecure(host):
            return _TLS, f"TLS handshake with {host} failed: {exc}"
        if failure.kind == "connect":
            return failure, f"cannot connect to {host}: {exc or type(exc).__name__}"
        return failure, f"request to {host} failed: {type(exc).__name__}"

    def backoff(self, attempt: int, retry_after: str | None) -> float:
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

    # -- bodies ---------------------------------------------------------------------------------

    async def chunks(self, resp: httpx.Response, what: str) -> AsyncIterator[bytes]:
        """The body as the network gives it, read errors mapped through ``ERROR_MAP``."""
        host = hostport(resp.request.url)
        try:
            async for chunk in resp.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            failure, message = self.classify(exc, host, reading=what)
            self.stats.record(host, failure.kind)
            raise failure.error(message, host=host) from exc

    async def read(self, resp: httpx.Response, *, limit: int, what: str) -> bytes:
        """A whole small body: LimitExceeded past ``limit`` bytes (before more is held), and the whole of it
        within one ``timeout`` (a registry dripping a byte a second never trips a per-read timeout)."""
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise LimitExceeded(f"{what} is {declared} bytes, above the limit of {limit}")
        body = bytearray()
        try:
            async with asyncio.timeout(self.settings.timeout):
                async for chunk in self.chunks(resp, what):
                    body += chunk
                    if len(body) > limit:
                        raise LimitExceeded(f"{what} is larger than the limit of {limit} bytes")
        except TimeoutError as exc:
            host = hostport(resp.request.url)
            self.stats.record(host, "timeout")
            raise RegistryUnreachable(f"{what}: {len(body)} bytes arrived in {self.settings.timeout:g}s from {host}, "
                                      f"too slowly for a document of at most {limit} bytes", host=host) from exc
        return bytes(body)

    async def read_prefix(self, resp: httpx.Response, limit: int) -> bytes:
        """At most the first ``limit`` bytes of a body nobody needs whole (an error text); b"" if it breaks."""
        body = bytearray()
        try:
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) >= limit:
                    break
        except httpx.HTTPError:
            pass
        return bytes(body[:limit])
