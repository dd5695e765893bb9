"""Refuse registry hosts that resolve to the webhook's own neighbourhood (server-side request forgery).

The webhook reads whatever image a pod names, so without a guard anyone who
can create a pod can make canrun send requests to ``127.0.0.1``, the cloud
metadata service (``169.254.169.254``, ``fd00:ec2::254``) or any internal
network the operator lists.  The guard resolves the host first and refuses if
*any* address is in a refused range — unless the operator allow-listed the
host (``allow_hosts``) or declared it insecure on purpose (``insecure_hosts``).

It is applied to the registry host, to token realms and to every redirect
target.  Limitation, stated plainly: the HTTP client resolves the name again
when it connects, so a DNS answer that changes between the two lookups
(rebinding) is not caught; the guard stops the ordinary cases, and the network
policy of the webhook's pod should stop the rest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from canrun.errors import RegistryRefused, RegistryUnreachable, UsageError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Always refused when the guard is on (besides loopback, link-local and unspecified addresses).
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
CACHE_SECONDS = 30.0


def split_host_port(host: str) -> tuple[str, int | None]:
    """``example.com:5000`` -> (``example.com``, 5000); ``[::1]:5000`` -> (``::1``, 5000)."""
    if host.startswith("["):
        inner, _, rest = host[1:].partition("]")
        return inner, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name, int(port)
    return host, None


def is_loopback_host(host: str) -> bool:
    """``localhost``, ``*.localhost`` or a loopback address (``host`` may carry a port)."""
    name, _ = split_host_port(host.lower())
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise UsageError(f"invalid blocked network {cidr!r}: expected a CIDR like 10.0.0.0/8") from exc
    return tuple(out)


def refusal_reason(address: IPAddress, blocked: tuple[IPNetwork, ...]) -> str | None:
    """Why ``address`` is refused, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "the unspecified address"
    for net in blocked:
        if address.version == net.version and address in net:
            return f"in the blocked network {net}"
    return None


@dataclass
class SsrfGuard:
    """Resolve-and-check for one client; results cached briefly per host."""

    blocked: tuple[IPNetwork, ...] = ()
    exempt: frozenset[str] = frozenset()
    _cache: dict[str, tuple[float, str | None]] = field(default_factory=dict)

    @classmethod
    def build(cls, blocked_networks: Iterable[str], allow_hosts: Iterable[str],
              insecure_hosts: Iterable[str]) -> SsrfGuard:
        exempt = {h.lower() for h in (*allow_hosts, *insecure_hosts)}
        return cls(blocked=parse_networks(blocked_networks), exempt=frozenset(exempt))

    def is_exempt(self, host: str) -> bool:
        name, _ = split_host_port(host.lower())
        return host.lower() in self.exempt or name in self.exempt

    async def check(self, host: str) -> None:
        """Raise RegistryRefused if ``host`` (``name[:port]``) resolves into a refused range (RegistryUnreachable
        if it does not resolve at all)."""
        if self.is_exempt(host):
            return
        now = time.monotonic()
        hit = self._cache.get(host)
        if hit is not None and hit[0] > now:
            reason = hit[1]
        else:
            reason = await self._reason(host)
            self._cache[host] = (now + CACHE_SECONDS, reason)
        if reason is not None:
            raise RegistryRefused(
                f"refusing to contact {host}: it resolves to {reason} (SSRF guard); if this registry is "
                f"legitimate, add it to the allowed registry hosts (canrun serve --allow-registry-host {host})",
                host=host)

    async def _reason(self, host: str) -> str | None:
        name, port = split_host_port(host)
        try:
            literal = ipaddress.ip_address(name)
        except ValueError:
            literal = None
        if literal is not None:
            reason = refusal_reason(literal, self.blocked)
            return f"{literal}, {reason}" if reason else None
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, port or 443, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise RegistryUnreachable(f"cannot resolve registry host {name}: {exc}", host=host) from exc
        for _family, _type, _proto, _canon, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            reason = refusal_reason(address, self.blocked)
            if reason is not None:
                return f"{address}, {reason}"
        return None
