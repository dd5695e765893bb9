"""One exception tree for everything canrun can refuse or fail at.

Library errors (httpx, yaml, zlib, json, OSError …) are mapped into this tree
where they happen, with ``raise … from exc``, so that every edge — the CLI, the
webhook, the audit run — turns any failure into one clear user message with
``str(exc)`` and never shows a traceback::

    CanrunError
    ├── UsageError               bad flags, settings or config file (CLI exit 2)
    ├── ManifestError            a Kubernetes manifest canrun cannot read
    ├── InvalidReference         an image reference that does not parse
    ├── RegistryError            anything between canrun and a registry
    │   ├── RegistryUnreachable  DNS, connect, TLS, timeout
    │   │   └── RegistryRefused  a host the SSRF guard will not contact (loopback, metadata, cluster ranges)
    │   ├── RegistryAuthError    401/403 after trying the credentials we have
    │   ├── ImageNotFound        404 on the manifest (tag or digest unknown)
    │   ├── RegistryHTTPError    any other unexpected status, after retries
    │   └── UnsupportedManifest  schema 1, unknown media types, artifacts
    ├── ClusterError             the Kubernetes API is unreachable, refuses us, or has no such config
    │   └── ClusterConflict      a write lost a race (409): re-read and decide again
    ├── ImageCorrupt             content does not match its digest, broken JSON
    └── LayerError               a layer that cannot be read safely
        └── LimitExceeded        a configured limit (entries, bytes, header size, time) was hit

``ImageCorrupt`` and the registry errors carry the rule id they map to
(``image-corrupt``, ``image-unresolvable``), so the validator can turn them into
findings without a table of its own.
"""

from __future__ import annotations

from canrun.redact import redact

#: The logger that carries the traceback of an internal error (a bug of ours) that an edge survived: shown by
#: the CLI with ``-v`` and by the webhook at ``--log-level debug``, never otherwise.
INTERNAL_LOG = "canrun.internal"


class CanrunError(Exception):
    """Base of every error canrun raises on purpose; ``str()`` is the user message, with every secret
    canrun holds taken out (``canrun.redact``: registries echo what they were sent)."""

    #: The rule a failure to read an image under this error is reported as.
    rule: str = "image-unresolvable"

    def __str__(self) -> str:
        return redact(super().__str__())


class UsageError(CanrunError):
    """The command line, settings or config file are wrong: nothing was checked."""


class ManifestError(CanrunError):
    """A manifest file or document that cannot be read as Kubernetes objects."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        self.source = source
        self.line = line
        where = source or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


class InvalidReference(CanrunError):
    """An image reference that does not follow the distribution reference grammar."""


class RegistryError(CanrunError):
    """Talking to a registry failed; the image could not be read."""

    def __init__(self, message: str, *, host: str | None = None, status: int | None = None) -> None:
        self.host = host
        self.status = status
        super().__init__(message)


class RegistryUnreachable(RegistryError):
    """No usable answer: DNS, connect, TLS, timeout, or a host the SSRF guard refuses."""


class RegistryRefused(RegistryUnreachable):
    """The SSRF guard refused the host: allowing it (``--allow-registry-host``) is the remedy, not a retry."""


class RegistryAuthError(RegistryError):
    """The registry refused us (401/403) with the credentials available."""


class ImageNotFound(RegistryError):
    """The registry answered 404 for the manifest: the tag or digest does not exist."""


class RegistryHTTPError(RegistryError):
    """An unexpected HTTP status that retries did not cure."""


class RangeUnsupported(RegistryError):
    """The registry answered a ``Range`` request with something other than that range (a whole body, a bad
    ``Content-Range``): the caller reads the blob whole instead."""


class UnsupportedManifest(RegistryError):
    """A manifest canrun cannot judge: schema 1, unknown media type, an artifact."""


class ClusterError(CanrunError):
    """The Kubernetes API could not be used: no config, unreachable, forbidden, or an unexpected answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ClusterConflict(ClusterError):
    """A create or update lost a race with another writer (HTTP 409); the caller re-reads."""


class ImageCorrupt(CanrunError):
    """A manifest, config or layer does not match its digest, or is not what it claims."""

    rule = "image-corrupt"


class LayerError(CanrunError):
    """A layer stream that cannot be indexed safely (bad compression, bad tar, hostile entries)."""

    rule = "image-corrupt"


class LimitExceeded(LayerError):
    """A configured safety limit was reached; the image is not judged rather than trusted."""

    rule = "image-unresolvable"
