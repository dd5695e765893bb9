"""JSON from outside canrun (registries, token servers, images), parsed with the runtime's depth limit.

Python's ``json`` recurses once per nesting level and gives up near the
interpreter's recursion limit (about 1,000 levels) with ``RecursionError``,
which is not a ``ValueError`` and escapes every ``except ValueError`` around a
parse.  Go's ``encoding/json`` (what containerd, runc and the registries use)
keeps an explicit stack and refuses only past ``maxNestingDepth = 10000``
(``src/encoding/json/scanner.go``, ``pushParseState``).  So an image config
with an unknown key nested 1,500 deep is pulled and run by containerd, and
canrun must judge it like any other image, while 100,000 levels are refused
as broken JSON by both.

``loads`` measures the nesting first (strings left out), refuses documents
deeper than ``MAX_DEPTH`` with ``JSONTooDeep`` (a ``ValueError``, so callers'
existing handling of broken JSON applies), hands shallow documents to the C
parser, and parses deep ones with an explicit stack.  Work is linear in the
size of the document, which the callers bound before parsing.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

#: Go's encoding/json maxNestingDepth: depth 10,000 parses, 10,001 does not.
MAX_DEPTH = 10_000
#: Documents with fewer brackets than this go to the C parser unmeasured (depth <= brackets), far below
#: the recursion limit even when the caller is itself deep in the stack.
_SHALLOW = 200

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}


class JSONTooDeep(ValueError):
    """Nested deeper than the runtime accepts."""


def loads(data: bytes | bytearray | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that never raises RecursionError: ValueError for broken or too deeply nested JSON."""
    text = data if isinstance(data, str) else bytes(data).decode(json.detect_encoding(data), "surrogatepass")
    if text.count("[") + text.count("{") < _SHALLOW:
        return json.loads(text)
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JSONTooDeep(f"JSON nested {depth} levels deep, more than the {max_depth} container runtimes accept")
    if depth < _SHALLOW:
        return json.loads(text)
    return _parse_deep(text)


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (an upper bound for text that is not JSON)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def _skip(s: str, i: int) -> int:
    return _WS.match(s, i).end()  # type: ignore[union-attr]  # matches the empty string at worst


def _key(s: str, i: int) -> tuple[str, int]:
    if s[i:i + 1] != '"':
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", s, i)
    key, i = json.decoder.scanstring(s, i + 1)  # type: ignore[attr-defined]
    i = _skip(s, i)
    if s[i:i + 1] != ":":
        raise json.JSONDecodeError("Expecting ':' delimiter", s, i)
    return key, _skip(s, i + 1)


def _parse_deep(s: str) -> Any:
    """The same values ``json.loads`` gives, with an explicit stack of open containers instead of recursion."""
    stack: list[tuple[dict[str, Any] | list[Any], str]] = []
    i = _skip(s, 0)
    while True:
        c = s[i:i + 1]
        value: Any
        if c == "{":
            i = _skip(s, i + 1)
            if s[i:i + 1] != "}":
                key, i = _key(s, i)
                stack.append(({}, key))
                continue
            value, i = {}, i + 1
        elif c == "[":
            i = _skip(s, i + 1)
            if s[i:i + 1] != "]":
                stack.append(([], ""))
                continue
            value, i = [], i + 1
        elif c == '"':
            value, i = json.decoder.scanstring(s, i + 1)  # type: ignore[attr-defined]
        elif (m := _NUMBER.match(s, i)) is not None:
            whole, frac, exp = m.groups()
            value = float(whole + (frac or "") + (exp or "")) if frac or exp else int(whole)
            i = m.end()
        else:
            word = next((w for w in _LITERALS if s.startswith(w, i)), None)
            if word is None:
                raise json.JSONDecodeError("Expecting value", s, i)
            value, i = _LITERALS[word], i + len(word)
        while True:  # hand the finished value to its container; close every container that ends here
            if not stack:
                i = _skip(s, i)
                if i != len(s):
                    raise json.JSONDecodeError("Extra data", s, i)
                return value
            container, key = stack[-1]
            if isinstance(container, dict):
                container[key] = value
            else:
                container.append(value)
            i = _skip(s, i)
            c = s[i:i + 1]
            if c == ",":
                i = _skip(s, i + 1)
                if isinstance(container, dict):
                    key, i = _key(s, i)
                    stack[-1] = (container, key)
                break
            if c != ("}" if isinstance(container, dict) else "]"):
                raise json.JSONDecodeError("Expecting ',' delimiter", s, i)
            stack.pop()
            value, i = container, i + 1
