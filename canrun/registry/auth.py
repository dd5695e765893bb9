"""Registry credentials: where they come from, which host they belong to, and how they are kept quiet.

Sources, in the order the client consults them:

1. the keychain of the current request (``use_keychain``): the webhook sets the
   pod's imagePullSecrets here, so one tenant's secret is only used for the
   admission request that carries it;
2. the operator's docker ``config.json``: ``auths`` entries (``auth`` base64,
   ``username``/``password``, ``identitytoken``), ``credHelpers`` per host and
   the ``credsStore`` default, the latter two through ``docker-credential-<name>
   get`` exactly as docker runs them;
3. anonymous.

``RegistryAuth`` turns the credential for a registry and the challenge that
registry answered with into an ``Authorization`` header: Basic, or the
distribution token flow (the realm is asked for a token for
``repository:<repo>:pull`` with Basic credentials, or an OAuth2
``refresh_token`` POST with an identity token; ``token`` or ``access_token``
is accepted).  Tokens are cached per (host, realm, service, scope, credential)
until shortly before they expire, keyed by credential so one tenant's token
never serves another's request.

Host matching is docker's: a key is reduced to its hostname (scheme and path
dropped), and every Docker Hub spelling (``https://index.docker.io/v1/``,
``index.docker.io``, ``registry-1.docker.io``) means ``docker.io``.  A
credential is only ever returned for the host it was stored under.

Credential helpers are only taken from a config *file* the operator chose,
never from a pull secret: a pod must not be able to make canrun run
``docker-credential-<anything>``.  A helper that is missing, fails, hangs or
prints nonsense gives no credential and a debug log line — never a crash.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import hashlib
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from canrun import redact, untrusted_json
from canrun.errors import LimitExceeded, RegistryAuthError, RegistryHTTPError, UsageError
from canrun.registry.ssrf import is_loopback_host

if TYPE_CHECKING:  # the engine imports this module for use_keychain: it must not pull in httpx
    from canrun.registry.transport import Transport

log = logging.getLogger("canrun.registry")

HELPER_TIMEOUT = 10.0
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HUB_KEYS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
#: The server URL docker hands a credential helper for Docker Hub.
HUB_HELPER_URL = "https://index.docker.io/v1/"
MIN_TOKEN_LIFETIME = 60.0  # the token spec's default when expires_in is absent or smaller
TOKEN_MARGIN = 10.0
#: Largest token answer read: real ones are a JWT or two in a small JSON object (a few KiB).
MAX_TOKEN_ANSWER = 64 << 10


@dataclass(frozen=True, repr=False)
class Credential:
    """A username with a password, or with an identity (refresh) token. Never printed."""

    username: str = ""
    password: str = ""
    identity_token: str | None = None

    def __repr__(self) -> str:
        kind = "identity-token" if self.identity_token else "password"
        return f"Credential(username={self.username!r}, {kind}=<redacted>)"

    __str__ = __repr__

    def __post_init__(self) -> None:
        raw = f"{self.username}:{self.password}".encode()
        redact.remember(self.password, self.identity_token, base64.b64encode(raw).decode() if self.password else None)

    @property
    def fingerprint(self) -> str:
        """A one-way tag for cache keys: tokens obtained with one credential are never reused for another."""
        material = "\0".join((self.username, self.password, self.identity_token or ""))
        return hashlib.sha256(material.encode()).hexdigest()[:16]


def normalize_host(key: str) -> str:
    """Docker's ConvertToHostname, plus the Docker Hub aliases: ``https://index.docker.io/v1/`` -> ``docker.io``."""
    host = key.strip()
    for scheme in ("https://", "http://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme):]
            break
    host = host.split("/", 1)[0].lower()
    return "docker.io" if host in _HUB_KEYS else host


@dataclass
class Keychain:
    """Credentials by registry host (normalised), plus optional credential helpers."""

    entries: dict[str, Credential] = field(default_factory=dict)
    #: host -> helper name (``credHelpers``); only from an operator's config file.
    helpers: dict[str, str] = field(default_factory=dict)
    #: the ``credsStore`` default helper; only from an operator's config file.
    default_helper: str | None = None
    helper_timeout: float = HELPER_TIMEOUT
    _helper_results: dict[str, Credential | None] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __repr__(self) -> str:
        return f"Keychain(hosts={sorted(self.entries)}, helpers={self.helpers}, default_helper={self.default_helper!r})"

    @property
    def needs_subprocess(self) -> bool:
        """Whether a lookup may run a helper (so async callers should use a thread)."""
        return bool(self.helpers or self.default_helper)

    def lookup(self, host: str) -> Credential | None:
        """The credential stored for ``host`` (any docker spelling), or None."""
        key = normalize_host(host)
        cred = self.entries.get(key)
        if cred is not None:
            return cred
        helper = self.helpers.get(key) or self.default_helper
        if helper is None:
            return None
        with self._lock:
            if key not in self._helper_results:
                self._helper_results[key] = run_helper(helper, key, timeout=self.helper_timeout)
            return self._helper_results[key]

    def merge(self, other: Keychain) -> Keychain:
        """A keychain consulting this one first, then ``other`` (entries of ``self`` win per host)."""
        return Keychain(entries={**other.entries, **self.entries}, helpers={**other.helpers, **self.helpers},
                        default_helper=self.default_helper or other.default_helper,
                        helper_timeout=min(self.helper_timeout, other.helper_timeout))

    @classmethod
    def from_docker_config(cls, source: str | os.PathLike[str] | Mapping[str, Any] | bytes,
                           *, helpers: bool | None = None) -> Keychain:
        """Read a docker ``config.json`` (a path, its parsed dict, or its bytes).

        Both shapes are accepted: ``{"auths": {...}}`` and the legacy ``.dockercfg``
        map of host -> entry.  ``helpers`` (default: only for a path) decides whether
        ``credHelpers``/``credsStore`` are honoured.
        """
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read docker config {path}: {exc.strerror or exc}") from exc
            try:
                data = untrusted_json.loads(raw)
            except ValueError as exc:
                raise UsageError(f"docker config {path} is not valid JSON: {exc}") from exc
            allow = True if helpers is None else helpers
        elif isinstance(source, bytes):
            try:
                data = untrusted_json.loads(source)
            except ValueError as exc:
                raise UsageError(f"docker config is not valid JSON: {exc}") from exc
            allow = bool(helpers)
        else:
            data = source
            allow = bool(helpers)
        if not isinstance(data, Mapping):
            raise UsageError("docker config must be a JSON object")
        auths = data.get("auths")
        if isinstance(auths, Mapping):
            entries_src: Mapping[str, Any] = auths
        elif auths is None and not ({"credHelpers", "credsStore"} & set(data)):
            entries_src = data  # legacy .dockercfg: host -> entry at top level
        else:
            entries_src = {}
        chain = cls()
        for key, entry in entries_src.items():
            cred = _credential_from_entry(str(key), entry)
            if cred is not None:
                chain.entries.setdefault(normalize_host(str(key)), cred)
        if allow:
            for key, name in (data.get("credHelpers") or {}).items():
                if isinstance(name, str) and _HELPER_NAME.fullmatch(name):
                    chain.helpers[normalize_host(str(key))] = name
            store = data.get("credsStore")
            if isinstance(store, str) and _HELPER_NAME.fullmatch(store):
                chain.default_helper = store
        return chain

    @classmethod
    def from_pull_secret(cls, data: Mapping[str, str | bytes]) -> Keychain:
        """A Kubernetes image pull secret's ``data`` (base64 values): ``.dockerconfigjson`` or ``.dockercfg``."""
        for key in (".dockerconfigjson", ".dockercfg"):
            value = data.get(key)
            if value is None:
                continue
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise UsageError(f"pull secret {key} is not valid base64") from exc
            return cls.from_docker_config(raw, helpers=False)
        raise UsageError("pull secret has neither .dockerconfigjson nor .dockercfg")


def default_docker_config() -> Path | None:
    """``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json`` if it exists."""
    base = os.environ.get("DOCKER_CONFIG")
    path = Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"
    return path if path.is_file() else None


def _credential_from_entry(key: str, entry: Any) -> Credential | None:
    if not isinstance(entry, Mapping):
        log.debug("docker config entry for %s is not an object; ignored", normalize_host(key))
        return None
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    token = entry.get("identitytoken") or entry.get("identityToken")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            log.debug("docker config entry for %s has an undecodable auth field; ignored", normalize_host(key))
            return None
        user, sep, secret = decoded.partition(":")
        if not sep:
            log.debug("docker config entry for %s: auth is not user:password; ignored", normalize_host(key))
            return None
        username, password = user, secret
    if isinstance(token, str) and token:
        return Credential(username=username, identity_token=token)
    if username or password:
        return Credential(username=username, password=password)
    return None


def run_helper(name: str, host: str, *, timeout: float = HELPER_TIMEOUT) -> Credential | None:
    """``docker-credential-<name> get`` for ``host``; None (and a debug line) on any failure."""
    server = HUB_HELPER_URL if host == "docker.io" else host
    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run([program, "get"], input=server.encode(), capture_output=True, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        log.debug("credential helper %s is not installed; no credentials for %s", program, host)
        return None
    except subprocess.TimeoutExpired:
        log.debug("credential helper %s timed out after %gs for %s", program, timeout, host)
        return None
    except OSError as exc:
        log.debug("credential helper %s could not run for %s: %s", program, host, exc.strerror or exc)
        return None
    if proc.returncode != 0:
        # helpers print "credentials not found in native keychain" here; never their stdin/stdout
        log.debug("credential helper %s found no credentials for %s (exit %d)", program, host, proc.returncode)
        return None
    try:
        answer = untrusted_json.loads(proc.stdout)
        username, secret = str(answer.get("Username") or ""), str(answer.get("Secret") or "")
    except (ValueError, AttributeError):
        log.debug("credential helper %s gave an unreadable answer for %s", program, host)
        return None
    if not secret:
        return None
    if username == "<token>":
        return Credential(identity_token=secret)
    return Credential(username=username, password=secret)


_current: contextvars.ContextVar[Keychain | None] = contextvars.ContextVar("canrun_keychain", default=None)


@contextmanager
def use_keychain(keychain: Keychain | None) -> Iterator[Keychain | None]:
    """Within the block (and tasks started in it), the client consults ``keychain`` before anything else."""
    token = _current.set(keychain)
    try:
        yield keychain
    finally:
        _current.reset(token)


def current_keychain() -> Keychain | None:
    return _current.get()


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: scheme (lowercased) and its parameters (keys lowercased)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value (RFC 7235): several challenges, quoted strings with escapes.

    Tolerant on purpose: registries differ in spacing, quoting and case, and an
    unparseable tail ends the parse instead of raising.
    """
    out: list[Challenge] = []
    i, n = 0, len(header)
    current: Challenge | None = None

    def skip(chars: str) -> None:
        nonlocal i
        while i < n and header[i] in chars:
            i += 1

    while i < n:
        skip(" \t,")
        m = _TOKEN_CHARS.match(header, i)
        if not m:
            break
        word = m.group(0)
        j = m.end()
        k = j
        while k < n and header[k] in " \t":
            k += 1
        if k < n and header[k] == "=" and current is not None and not header.startswith("==", k):
            i = k + 1
            skip(" \t")
            if i < n and header[i] == '"':
                i += 1
                value_chars: list[str] = []
                while i < n and header[i] != '"':
                    if header[i] == "\\" and i + 1 < n:
                        i += 1
                    value_chars.append(header[i])
                    i += 1
                i += 1  # closing quote (or end)
                value = "".join(value_chars)
            else:
                vm = re.compile(r"[^,\s]*").match(header, i)
                value = vm.group(0) if vm else ""
                i = vm.end() if vm else i
            current.params[word.lower()] = value
        else:
            current = Challenge(scheme=word.lower())
            out.append(current)
            i = j
            # a token68 (Basic xyz==) is not a parameter list: skip it
            skip(" \t")
            t = re.compile(r"[A-Za-z0-9._~+/-]+=*(?=\s*(,|$))").match(header, i)
            if t and "=" not in header[i:t.end()].rstrip("="):
                i = t.end()
    return out


async def find_credential(registry: str, operator: Keychain | None) -> Credential | None:
    """The request's keychain first (a pod's pull secrets), then the operator's; None: anonymous."""
    for chain in (current_keychain(), operator):
        if chain is None:
            continue
        cred = await asyncio.to_thread(chain.lookup, registry) if chain.needs_subprocess else chain.lookup(registry)
        if cred is not None:
            return cred
    return None


def pick_challenge(header: str) -> Challenge | None:
    """The challenge canrun answers from a ``WWW-Authenticate`` value: Bearer if offered, else Basic, else None."""
    usable = [c for c in parse_challenges(header) if c.scheme in ("bearer", "basic")]
    return next((c for c in usable if c.scheme == "bearer"), usable[0] if usable else None)


class RegistryAuth:
    """Authorization headers for a registry, from its credential and the challenge it answered with."""

    def __init__(self, transport: Transport, keychain: Keychain) -> None:
        self.transport = transport
        self.keychain = keychain
        #: (host, realm, service, scope, credential fingerprint) -> (token, monotonic expiry)
        self.tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        #: host -> the challenge a 401 taught us, once answering it worked (replaces the ping's)
        self._learned: dict[str, Challenge] = {}

    def __repr__(self) -> str:
        return f"RegistryAuth({self.keychain!r}, tokens={len(self.tokens)})"

    def challenge(self, host: str, pinged: Challenge | None) -> Challenge | None:
        return self._learned.get(host, pinged)

    def learn(self, host: str, challenge: Challenge) -> None:
        """Remember a challenge for the next requests to ``host`` (one dict write, after the request that proved it)."""
        self._learned[host] = Challenge(challenge.scheme, {k: v for k, v in challenge.params.items()
                                                           if k in ("realm", "service")})

    async def credential(self, registry: str) -> Credential | None:
        return await find_credential(registry, self.keychain)

    async def authorization(self, host: str, scheme: str, registry: str, repository: str,
                            challenge: Challenge | None, scope: str, *, force: bool) -> str | None:
        """The header for a request to ``host`` (which speaks ``scheme``) for ``registry``'s ``repository``."""
        if challenge is None:
            return None
        cred = await self.credential(registry)
        if challenge.scheme == "basic":
            if cred is None or cred.identity_token:
                return None
            raw = f"{cred.username}:{cred.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if challenge.scheme == "bearer":
            token = await self._token(host, scheme, repository, challenge, scope, cred, force=force)
            return f"Bearer {token}" if token else None
        return None

    async def _token(self, host: str, scheme: str, repository: str, challenge: Challenge, scope: str,
                     cred: Credential | None, *, force: bool) -> str | None:
        realm = challenge.realm
        if not realm:
            return None
        service = challenge.params.get("service", "")
        key = (host, realm, service, scope, cred.fingerprint if cred else "")
        cached = self.tokens.get(key)
        if cached is not None and not force and cached[1] > time.monotonic():
            return cached[0]
        try:
            url, url_scheme, realm_host = self.transport.parse_url(realm)
        except ValueError as exc:
            raise RegistryAuthError(f"{host} named an invalid token realm", host=host) from exc
        if url_scheme not in ("http", "https") or not realm_host:
            raise RegistryAuthError(f"{host} named a token realm that is not an http(s) URL", host=host)
        if url_scheme == "http" and cred is not None and scheme == "https" \
                and not is_loopback_host(realm_host) and not self.transport.is_insecure(realm_host):
            raise RegistryAuthError(f"{host} asks for credentials over plain HTTP ({realm_host}); refusing to "
                                    f"send them", host=host)
        await self.transport.check(realm_host)
        params: dict[str, str] = {"scope": scope}
        if service:
            params["service"] = service
        verify = url_scheme == "http" or not self.transport.is_insecure(realm_host)
        headers: dict[str, str] = {}
        form: dict[str, str] | None = None
        if cred is not None and cred.identity_token:
            form = {**params, "grant_type": "refresh_token", "refresh_token": cred.identity_token,
                    "client_id": "canrun"}
            method, query = "POST", None
        else:
            if cred is not None:
                raw = f"{cred.username}:{cred.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
                params["account"] = cred.username
            method, query = "GET", params
        # no redirects: a token endpoint that sends us elsewhere is not followed with credentials
        resp = await self.transport.send(realm_host, method, url, headers, verify=verify, max_redirects=0,
                                         data=form, params=query)
        try:
            if resp.status_code in (401, 403):
                who = "with the configured credentials" if cred else "anonymously"
                raise RegistryAuthError(f"the token server of {host} refused access to {repository} {who} "
                                        f"({resp.status_code})", host=host, status=resp.status_code)
            if resp.status_code != 200:
                raise RegistryHTTPError(f"the token server of {host} answered {resp.status_code}",
                                        host=host, status=resp.status_code)
            try:
                raw_answer = await self.transport.read(resp, limit=MAX_TOKEN_ANSWER,
                                                       what=f"the token answer of {host}")
            except LimitExceeded as exc:
                raise RegistryAuthError(f"the token server of {host} gave an answer larger than "
                                        f"{MAX_TOKEN_ANSWER >> 10} KiB; refusing to read it", host=host) from exc
        finally:
            await resp.aclose()
        try:
            answer = untrusted_json.loads(raw_answer)
            token = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in") or MIN_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError, RecursionError) as exc:
            raise RegistryAuthError(f"the token server of {host} gave an unreadable answer", host=host) from exc
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"the token server of {host} gave no token", host=host)
        lifetime = max(lifetime, MIN_TOKEN_LIFETIME)
        redact.remember(token)
        self.tokens[key] = (token, time.monotonic() + lifetime - TOKEN_MARGIN)
        return token
