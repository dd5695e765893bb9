"""How the registry client behaves (one frozen record built from the user's settings) and what it counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from canrun import __version__

if TYPE_CHECKING:
    from canrun.registry.auth import Keychain

#: What canrun says it is to registries (their access logs are how operators find a misbehaving client).
USER_AGENT = f"canrun/{__version__}"


@dataclass(frozen=True)
class RegistrySettings:
    insecure_hosts: frozenset[str] = frozenset()
    ca_file: str | None = None
    #: Seconds for each network step (connect, one read, one write); see ``transport`` for whole bodies.
    timeout: float = 30.0
    docker_config: str | None = None
    #: Hosts the SSRF guard lets through even if they resolve to refused addresses.
    allow_hosts: frozenset[str] = frozenset()
    ssrf_guard: bool = False
    blocked_networks: tuple[str, ...] = ()
    retries: int = 3
    user_agent: str = USER_AGENT
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
