"""Image references, parsed the way Docker and containerd parse them (distribution/reference).

Kubernetes passes ``image:`` strings to the runtime untouched, and the runtime
normalises them with distribution's grammar; canrun must read the very same
image, so the rules here follow that grammar rather than anything looser:

* the first path component is a registry host only if it contains ``.`` or
  ``:``, is ``localhost``, or has an uppercase letter; otherwise the image is
  on Docker Hub (``docker.io``), and a single-component Hub name gets
  ``library/`` (``nginx`` -> ``docker.io/library/nginx:latest``);
* ``index.docker.io`` is an alias of ``docker.io``;
* the repository path is lowercase, components joined by ``/`` with ``.``,
  ``_``, ``__`` or runs of ``-`` inside them; at most 255 characters with the host;
* a tag is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``; a digest is ``algo:hex``;
  with both (``repo:tag@sha256:…``) the digest is what gets fetched and the tag
  is only kept for display;
* a bare 64-hex string is refused as a name (it is an image id, not a reference).

Error messages name the usual culprits (template placeholders, unexpanded
variables, uppercase letters) because that is what users actually get wrong.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from canrun.errors import InvalidReference

DOCKER_HUB = "docker.io"
#: Where Docker Hub's API really lives; references keep the canonical ``docker.io``.
DOCKER_HUB_API = "registry-1.docker.io"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = re.compile(rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")
_PORT = re.compile(r":([0-9]+)$")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST_GRAMMAR = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
#: Digest algorithms canrun can verify, with their hex length.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
#: The hash behind each digest algorithm canrun verifies (the same two as ``DIGEST``).
HASHES: dict[str, Callable[..., Any]] = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
#: A digest canrun can verify (use with ``fullmatch``): the one digest pattern of the whole package.
DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_ANY_HEX64 = re.compile(r"[a-f0-9]{64}")
NAME_MAX = 255


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is a well-formed sha256/sha512 digest, else raise InvalidReference."""
    algo, sep, hexpart = digest.partition(":")
    if not sep or not _DIGEST_GRAMMAR.fullmatch(digest):
        raise InvalidReference(f"invalid digest {digest!r}: expected algorithm:hex, e.g. sha256:<64 hex digits>")
    length = DIGEST_HEX_LENGTHS.get(algo)
    if length is None:
        raise InvalidReference(f"unsupported digest algorithm {algo!r} in {digest!r}: canrun verifies sha256 and sha512")
    if len(hexpart) != length or not DIGEST.fullmatch(digest):
        raise InvalidReference(f"invalid digest {digest!r}: {algo} needs {length} lowercase hex digits")
    return digest


def is_digest(value: object) -> bool:
    """Whether ``value`` is a digest canrun can verify (a string matching ``DIGEST`` exactly)."""
    return isinstance(value, str) and DIGEST.fullmatch(value) is not None


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: registry host, repository path, tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse an ``image:`` string as containerd would; raise InvalidReference with the reason."""
        if not isinstance(text, str):
            raise InvalidReference(f"invalid image reference {text!r}: not a string")
        _obvious_mistakes(text)
        remainder, digest = text, None
        if "@" in remainder:
            remainder, _, digest = remainder.partition("@")
            if "@" in digest:
                raise InvalidReference(f"invalid image reference {text!r}: more than one '@'")
            try:
                validate_digest(digest)
            except InvalidReference as exc:
                raise InvalidReference(f"invalid image reference {text!r}: {exc}") from None
        name, tag = remainder, None
        colon = remainder.rfind(":")
        if colon > remainder.rfind("/"):  # a ':' after the last '/' starts the tag (else it is a port)
            name, tag = remainder[:colon], remainder[colon + 1:]
            if not _TAG.fullmatch(tag):
                raise InvalidReference(
                    f"invalid image reference {text!r}: invalid tag {tag!r} (letters, digits, '_', '.', '-'; "
                    f"at most 128, not starting with '.' or '-')")
        if not name:
            raise InvalidReference(f"invalid image reference {text!r}: no repository name")
        registry, path = _split_host(name)
        if registry is not None and not _HOST.fullmatch(registry):
            raise InvalidReference(f"invalid image reference {text!r}: invalid registry host {registry!r}")
        port = _PORT.search(registry) if registry is not None else None
        port_digits = port.group(1).lstrip("0") if port is not None else ""
        # (checked by length first: int() refuses strings of more than 4300 digits with a ValueError)
        if port is not None and (len(port_digits) > 5 or not 1 <= int(port_digits or "0") <= 65535):
            # the grammar allows any digits, but a TCP port is 16 bits: 70716 must not wrap to 5180
            raise InvalidReference(f"invalid image reference {text!r}: port {port.group(1)} of {registry!r} is not "
                                   f"between 1 and 65535")
        if registry is None:
            registry = DOCKER_HUB
        if registry.lower() in ("index.docker.io", "docker.io"):
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if path != path.lower() and _PATH.fullmatch(path.lower()):
            raise InvalidReference(f"invalid image reference {text!r}: repository name must be lowercase")
        if not _PATH.fullmatch(path):
            raise InvalidReference(
                f"invalid image reference {text!r}: invalid repository path {path!r} (lowercase letters, digits "
                f"and '.', '_', '-' separators between '/'-separated components)")
        if _ANY_HEX64.fullmatch(remainder):
            raise InvalidReference(
                f"invalid image reference {text!r}: a 64-hex string is an image id, not a repository name")
        if len(registry) + 1 + len(path) > NAME_MAX:
            raise InvalidReference(f"invalid image reference {text[:80]!r}…: the name is longer than {NAME_MAX}")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry=registry, repository=path, tag=tag, digest=digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    @property
    def familiar(self) -> str:
        """The short form users type: ``nginx:latest`` for ``docker.io/library/nginx:latest``."""
        text = str(self)
        if self.registry == DOCKER_HUB:
            text = text[len(DOCKER_HUB) + 1:]
            if text.startswith("library/") and "/" not in self.repository[len("library/"):]:
                text = text[len("library/"):]
        return text

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest when there is one (it wins over the tag)."""
        if self.digest is not None:
            return self.digest
        return self.tag or "latest"

    @property
    def api_host(self) -> str:
        """The host to connect to: Docker Hub's API is not served at ``docker.io``."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def with_digest(self, digest: str) -> Reference:
        """The same reference pinned to ``digest`` (the tag is kept for display)."""
        return replace(self, digest=validate_digest(digest))


def _split_host(name: str) -> tuple[str | None, str]:
    first, sep, rest = name.partition("/")
    if not sep:
        return None, name
    if "." in first or ":" in first or first == "localhost" or first != first.lower():
        return first, rest
    return None, name


def _obvious_mistakes(text: str) -> None:
    """Refuse with a targeted message the mistakes people make before the grammar even applies."""
    if not text.strip():
        raise InvalidReference("empty image reference: the image: field has no value")
    shown = text if len(text) <= 120 else text[:117] + "..."
    if "${" in text or re.search(r"\$[A-Za-z_]", text) or "$(" in text:
        raise InvalidReference(
            f"invalid image reference {shown!r}: it contains an unexpanded variable; substitute it before deploying")
    if "{{" in text or "<" in text or ">" in text:
        raise InvalidReference(
            f"invalid image reference {shown!r}: it looks like a template placeholder that was never filled in")
    if any(ch.isspace() for ch in text):
        raise InvalidReference(f"invalid image reference {shown!r}: it contains whitespace")
    if text.startswith(("http://", "https://")):
        raise InvalidReference(f"invalid image reference {shown!r}: drop the URL scheme (write host/repository:tag)")
