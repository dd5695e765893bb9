"""Every secret canrun has loaded, and the one function that takes them out of any text it prints or returns.

Registries echo what they were sent (a password in an error code, a token in a
message), and canrun repeats what registries say; so instead of trusting every
source, each secret is remembered when it is loaded (docker config and pull
secret passwords, identity tokens, the Basic header they make, bearer tokens
obtained) and removed from every ``CanrunError`` message (``errors.py``),
whatever put it there.  Secrets shorter than ``MIN_LENGTH`` are not
remembered: redacting "ab" from every message would garble them all, and such
a password protects nothing.  The set is bounded (oldest forgotten first).
"""

from __future__ import annotations

import re
import threading

MIN_LENGTH = 4
MAX_SECRETS = 10_000
MASK = "<redacted>"

_lock = threading.Lock()
_secrets: dict[str, None] = {}
_pattern: re.Pattern[str] | None = None


def remember(*secrets: str | None) -> None:
    """Take these out of every message from now on."""
    global _pattern
    fresh = [s for s in secrets if s and len(s) >= MIN_LENGTH and s not in _secrets]
    if not fresh:
        return
    with _lock:
        for secret in fresh:
            _secrets[secret] = None
        while len(_secrets) > MAX_SECRETS:
            del _secrets[next(iter(_secrets))]
        _pattern = None


def redact(text: str) -> str:
    """``text`` with every remembered secret replaced by ``<redacted>`` (longest first, so none is left half)."""
    global _pattern
    if not _secrets:
        return text
    pattern = _pattern
    if pattern is None:
        with _lock:
            ordered = sorted(_secrets, key=len, reverse=True)
            pattern = _pattern = re.compile("|".join(map(re.escape, ordered)))
    return pattern.sub(MASK, text)
