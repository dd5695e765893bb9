"""What the client learns about each registry host once: the scheme it speaks and the auth it asks for.

HTTPS everywhere, verified against the system CAs plus ``ca_file``.  Loopback
hosts (127.0.0.0/8, ::1, localhost) fall back to plain HTTP when the port does
not speak TLS, as docker does for them; hosts in ``insecure_hosts`` try HTTPS
without verification, then HTTP.  The choice is made once per host by pinging
``/v2/``, which also yields the auth challenge.  A failed ping is remembered
for ``FAILURE_TTL`` seconds, so 64 images on one dead host do not each wait out
their own connect timeout.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, field

import httpx

from canrun.errors import CanrunError, RegistryHTTPError
from canrun.registry.auth import Challenge, pick_challenge
from canrun.registry.ssrf import is_loopback_host
from canrun.registry.transport import RETRY_STATUSES, Transport, ssl_cause

log = logging.getLogger("canrun.registry")

#: Seconds a failed ping of a host is remembered.
FAILURE_TTL = 5.0


@dataclass(frozen=True)
class Host:
    """A registry host as pinged: immutable, so tasks sharing it never see it half-learnt."""

    name: str
    scheme: str
    verify: bool
    #: The challenge ``/v2/`` answered with (None: anonymous access, or an auth scheme canrun cannot use).
    challenge: Challenge | None

    def url(self, path: str) -> httpx.URL:
        return httpx.URL(f"{self.scheme}://{self.name}{path}")


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    host: Host | None = None
    failure: BaseException | None = None
    failed_at: float = 0.0


class HostTable:
    """Ping each host once (under a per-host lock) and hand out the frozen result."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._slots: dict[str, _Slot] = {}

    def __repr__(self) -> str:
        return f"HostTable({sorted(self._slots)})"

    async def get(self, name: str) -> Host:
        await self.transport.check(name)
        slot = self._slots.setdefault(name, _Slot())
        if slot.host is not None:
            return slot.host
        async with slot.lock:
            if slot.host is not None:
                return slot.host
            if slot.failure is not None and time.monotonic() - slot.failed_at < FAILURE_TTL:
                raise slot.failure
            try:
                slot.host = await self._ping(name)
            except CanrunError as exc:
                slot.failure, slot.failed_at = exc, time.monotonic()
                raise
            slot.failure = None
        return slot.host

    async def _ping(self, name: str) -> Host:
        if self.transport.is_insecure(name):
            candidates = [("https", False), ("http", False)]
        elif is_loopback_host(name):
            candidates = [("https", True), ("http", True)]
        else:
            candidates = [("https", True)]
        chosen: list[tuple[str, bool]] = []

        async def probe() -> httpx.Response:
            last: Exception | None = None
            for scheme, verify in candidates:
                try:
                    resp = await self.transport.follow("GET", httpx.URL(f"{scheme}://{name}/v2/"), {}, verify=verify)
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    if verify and isinstance(ssl_cause(exc), ssl.SSLCertVerificationError):
                        raise  # a certificate we do not trust: never fall back to plain HTTP
                    last = exc
                    continue
                chosen[:] = [(scheme, verify)]
                return resp
            assert last is not None
            raise last

        resp = await self.transport.retrying(name, probe)
        scheme, verify = chosen[0]
        challenge = None
        try:
            if resp.status_code == 401:
                challenge = pick_challenge(resp.headers.get("www-authenticate", ""))
            elif resp.status_code in RETRY_STATUSES or resp.status_code >= 500:
                # the scheme is known, but the registry is not answering: report it now
                raise RegistryHTTPError(f"{name} answered {resp.status_code} to /v2/", host=name,
                                        status=resp.status_code)
        finally:
            await resp.aclose()
        log.debug("registry %s: %s, auth %s", name, scheme, challenge.scheme if challenge else "none")
        return Host(name, scheme, verify, challenge)
