"""YAML documents read with the line of every mapping, key and list item, safely and with recovery.

A finding is only useful if it says ``deploy.yaml:17``, so every mapping built
here remembers its 1-based line (``PosDict.line``) and the line of each of its
keys (``PosDict.key_lines``); a container's own line is the line of its
``- name:`` item.  ``line_of(obj, path)`` reads them back.

Why events and not ``yaml.safe_load_all``:

* positions: the constructed Python objects of PyYAML forget their marks;
* safety: libyaml's C composer recurses per nesting level and crashes the
  interpreter on deeply nested input, and alias expansion ("billion laughs")
  is only harmful once somebody walks the shared structure.  Building objects
  from the (non-recursive) libyaml event stream lets us stop at a depth limit,
  charge every alias its expanded size against a budget, and give up on a
  document early, before libyaml's quadratic behaviour on pathological nesting
  shows;
* recovery: one broken document must not hide the others.  If the stream
  fails, it is split on ``---`` lines (a document marker at column 0 can never
  be part of a scalar) and every piece is read on its own, line numbers
  shifted back to the file's.

YAML 1.1 scalar resolution is PyYAML's (so ``0755`` is octal, ``yes`` is true);
mapping keys are always kept as their text, timestamps and custom tags as the
string written, and a duplicated key keeps its last value, as the API server's
JSON decoder does.  Nothing here knows files or Kubernetes: a broken document
becomes a ``ManifestError`` in the caller's list and the rest is still read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml import events as ev
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode

from canrun.errors import ManifestError

try:  # libyaml when available: the pure-Python parser is ~10x slower on big helm outputs
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


@dataclass(frozen=True)
class ManifestLimits:
    """Bounds that keep hostile or accidental input from hanging canrun or eating memory."""

    #: Bytes read from one file (or stdin); more is refused, not truncated.
    max_file_bytes: int = 100 * 1024 * 1024
    #: Documents in one file; the rest of the file is refused.
    max_documents: int = 10_000
    #: Nodes (scalars and collections, aliases counted expanded) in one document.
    max_nodes: int = 2_000_000
    #: Nodes reached through aliases in one document: legit anchors reuse a few hundred.
    max_alias_nodes: int = 100_000
    #: Nesting depth of one document; Kubernetes objects rarely pass 30.
    max_depth: int = 200


DEFAULT_LIMITS = ManifestLimits()


class PosDict(dict):  # type: ignore[type-arg]
    """A mapping read from a manifest: a plain dict that also knows its lines (1-based)."""

    __slots__ = ("line", "key_lines")

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}


class PosList(list):  # type: ignore[type-arg]
    """A sequence read from a manifest, with the line it starts on."""

    __slots__ = ("line",)

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line


def line_of(obj: Any, path: Sequence[str | int] = ()) -> int | None:
    """The 1-based line of ``obj[path[0]][path[1]]…``; the nearest known line when the end has none.

    Works on objects that did not come from a file (webhook, API) too: it then
    returns None.
    """
    best = getattr(obj, "line", None)
    current = obj
    for step in path:
        key_line = None
        if isinstance(current, dict):
            key_line = getattr(current, "key_lines", {}).get(step) if isinstance(step, str) else None
            if step not in current:
                return key_line or best
            current = current[step]
        elif isinstance(current, list) and isinstance(step, int) and -len(current) <= step < len(current):
            current = current[step]
        else:
            return best
        # a value reached by key is where its key is written; a list item where its "-" is
        best = key_line or getattr(current, "line", None) or best
    return best


# --------------------------------------------------------------------------- streams and documents


_DOC_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)
#: Where a text is a Go or Jinja template rather than YAML (helm charts, cookiecutters).
TEMPLATE_MARKER = re.compile(r"\{\{|\{%")


class _DocumentError(Exception):
    """A document this module refuses (not libyaml): a message and a 0-based line in the file."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class Document:
    """One YAML document's root (PosDict, PosList, a scalar or None) and its line."""

    root: Any
    line: int  # 1-based, of the document's start (its root node)


def read_documents(text: str, name: str, errors: list[ManifestError],
                   limits: ManifestLimits = DEFAULT_LIMITS) -> list[Document]:
    """Every document of ``text``; broken ones become errors and the others are still returned."""
    try:
        docs = list(_parse(text, 0, limits))
    except yaml.YAMLError:
        # strict JSON that libyaml refuses (it is not quite a YAML subset) still reads, without lines
        docs = _read_json(text) if text.lstrip().startswith(("{", "[")) else None
        if docs is None:
            docs = _read_pieces(text, name, errors, limits)
    except _DocumentError:
        docs = _read_pieces(text, name, errors, limits)
    if len(docs) > limits.max_documents:
        errors.append(ManifestError(f"more than {limits.max_documents} documents in one file; "
                                    "the rest is not read", source=name, line=docs[limits.max_documents].line))
        del docs[limits.max_documents:]
    return docs


def _read_json(text: str) -> list[Document] | None:
    """The single document of a JSON text, or None if it is not JSON either."""
    try:
        return [Document(json.loads(text), 1)]
    except (ValueError, RecursionError):
        return None


def _read_pieces(text: str, name: str, errors: list[ManifestError], limits: ManifestLimits) -> list[Document]:
    """Read each "---"-separated piece on its own, so one bad document costs only itself."""
    docs: list[Document] = []
    starts = [0] + [m.start() for m in _DOC_START.finditer(text) if m.start() > 0]
    ends = starts[1:] + [len(text)]
    line = 0
    for start, end in zip(starts, ends):
        chunk = text[start:end]
        offset = line
        line += chunk.count("\n")
        try:
            for doc in _parse(chunk, offset, limits):
                docs.append(doc)
                if len(docs) > limits.max_documents:
                    return docs
        except _DocumentError as exc:
            errors.append(ManifestError(_with_template_hint(exc.message, chunk, offset, exc.line + 1),
                                        source=name, line=exc.line + 1))
        except yaml.YAMLError as exc:
            errors.append(_yaml_error(exc, chunk, name, offset))
    return docs


def _yaml_error(exc: yaml.YAMLError, chunk: str, name: str, offset: int) -> ManifestError:
    """libyaml's complaint as ``file:line: problem``, with a hint when the text is a template."""
    line: int | None = None
    if isinstance(exc, yaml.MarkedYAMLError):
        message = exc.problem or str(exc)
        if exc.context and exc.context != exc.problem:
            message = f"{message} ({exc.context})"
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            line = offset + mark.line + 1
    elif isinstance(exc, yaml.reader.ReaderError):
        message = f"unacceptable character #x{exc.character:04x}: control characters are not allowed in YAML" \
            if isinstance(exc.character, int) else str(exc)
        line = offset + chunk[: exc.position].count("\n") + 1
    else:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    message = f"not valid YAML: {message}"
    return ManifestError(_with_template_hint(message, chunk, offset, line), source=name, line=line)


def _with_template_hint(message: str, chunk: str, offset: int, line: int | None = None) -> str:
    """Say so when a document fails because it is a template (the marker on the failing line if any)."""
    markers = [offset + chunk[: m.start()].count("\n") + 1 for m in TEMPLATE_MARKER.finditer(chunk)]
    if not markers:
        return message
    tline = line if line in markers else markers[0]
    return (f"{message}; this looks like an unrendered template ({{{{ … }}}} on line {tline}): "
            f"render it first, e.g. `helm template … | canrun check -f -`")


# --------------------------------------------------------------------------- events -> objects


_MERGE = object()  # the "<<" merge key
_NO_KEY = object()
_TAG = "tag:yaml.org,2002:"
_constructor = SafeConstructor()
#: Implicit tag by (text, implicit flags): manifests repeat the same plain values (true, 80, TCP …) a lot.
_resolved: dict[tuple[str, tuple[bool, bool]], str] = {}


class _Frame:
    __slots__ = ("value", "is_map", "key", "key_line", "anchor", "size", "merges")

    def __init__(self, value: PosDict | PosList, is_map: bool, anchor: str | None) -> None:
        self.value = value
        self.is_map = is_map
        self.key: Any = _NO_KEY
        self.key_line = 0
        self.anchor = anchor
        self.size = 1
        self.merges: list[Any] = []


def _parse(text: str, offset: int, limits: ManifestLimits) -> Iterator[Document]:
    """Documents of one stream; raises yaml.YAMLError or _DocumentError (file line) at the first problem."""
    loader = _Loader(text)
    try:
        loader.get_event()  # StreamStart
        while not loader.check_event(ev.StreamEndEvent):
            loader.get_event()  # DocumentStart
            try:
                doc = _build(loader, offset, limits)
            except _DocumentError as exc:
                exc.line += offset
                raise
            loader.get_event()  # DocumentEnd
            yield doc
    finally:
        loader.dispose()


def _scalar(loader: Any, event: ev.ScalarEvent) -> Any:
    value = event.value
    tag = event.tag
    if tag is None or tag == "!":
        if event.style:  # quoted, literal or folded: always a string
            return value
        key = (value, event.implicit)
        tag = _resolved.get(key)
        if tag is None:
            tag = loader.resolve(ScalarNode, value, event.implicit)
            if len(_resolved) > 50_000:
                _resolved.clear()
            _resolved[key] = tag
    if not tag.startswith(_TAG):
        return value  # custom tags (!Ref …): keep what was written
    kind = tag[len(_TAG):]
    if kind == "str":
        return value
    if kind == "null":
        return None
    try:
        if kind == "bool":
            return _constructor.construct_yaml_bool(ScalarNode(tag, value))
        if kind == "int":
            return _constructor.construct_yaml_int(ScalarNode(tag, value))
        if kind == "float":
            return _constructor.construct_yaml_float(ScalarNode(tag, value))
    except (ValueError, KeyError, yaml.YAMLError) as exc:
        raise _DocumentError(f"{value!r} is not a valid {kind}", event.start_mark.line) from exc
    return value  # timestamps, binary …: the text, as the API server's decoder sees it for strings


def _build(loader: Any, offset: int, limits: ManifestLimits) -> Document:
    """Build one document's root from events, without recursion, charging aliases their size."""
    anchors: dict[str, tuple[Any, int]] = {}
    stack: list[_Frame] = []
    nodes = 0
    alias_nodes = 0
    root: Any = None
    root_line = 0
    done = False
    while not done:
        event = loader.get_event()
        cls = type(event)
        line = event.start_mark.line
        value: Any
        size = 1
        if cls is ev.ScalarEvent:
            if stack and stack[-1].is_map and stack[-1].key is _NO_KEY:  # a key: always its text
                plain_merge = event.value == "<<" and not event.style and event.tag is None
                value = _MERGE if plain_merge else event.value
            else:
                value = _scalar(loader, event)
            nodes += 1
            if event.anchor:
                anchors[event.anchor] = (value, 1)
        elif cls is ev.MappingStartEvent or cls is ev.SequenceStartEvent:
            if len(stack) >= limits.max_depth:
                raise _DocumentError(f"nested more than {limits.max_depth} levels deep; refused", line)
            is_map = cls is ev.MappingStartEvent
            container: PosDict | PosList = PosDict(line + offset + 1) if is_map else PosList(line + offset + 1)
            stack.append(_Frame(container, is_map, event.anchor))
            nodes += 1
            continue
        elif cls is ev.MappingEndEvent or cls is ev.SequenceEndEvent:
            frame = stack.pop()
            value = frame.value
            size = frame.size
            if frame.merges:
                _apply_merges(frame, line)
            if frame.anchor:
                anchors[frame.anchor] = (value, size)
            line = value.line - offset - 1
        elif cls is ev.AliasEvent:
            if event.anchor not in anchors:
                raise _DocumentError(f"alias *{event.anchor} refers to no anchor before it "
                                     "(undefined or recursive)", line)
            value, size = anchors[event.anchor]
            alias_nodes += size
            nodes += size
            if alias_nodes > limits.max_alias_nodes:
                raise _DocumentError(
                    f"aliases expand to more than {limits.max_alias_nodes} nodes (a 'billion laughs' "
                    "document?); refused", line)
        else:  # pragma: no cover - libyaml emits nothing else inside a document
            raise _DocumentError(f"unexpected YAML event {type(event).__name__}", line)
        if nodes > limits.max_nodes:
            raise _DocumentError(f"more than {limits.max_nodes} values in one document; refused", line)
        if not stack:
            root, root_line = value, line + offset + 1
            done = True
            continue
        parent = stack[-1]
        parent.size += size
        if parent.is_map:
            if parent.key is _NO_KEY:
                if type(value) is PosDict or type(value) is PosList:
                    raise _DocumentError("a mapping key is itself a mapping or list "
                                         "(unquoted '{' or '[' where a key was expected)", line)
                parent.key = value if type(value) is str or value is _MERGE else _key_text(value)
                parent.key_line = line + offset + 1
            else:
                key = parent.key
                if key is _MERGE:
                    parent.merges.append(value)
                else:
                    parent.value[key] = value
                    parent.value.key_lines[key] = parent.key_line  # type: ignore[union-attr]
                parent.key = _NO_KEY
        else:
            parent.value.append(value)
    return Document(root, root_line)


def _key_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _apply_merges(frame: _Frame, line: int) -> None:
    """YAML merge keys: explicit keys win, earlier merged mappings win over later ones."""
    target = frame.value
    assert isinstance(target, PosDict)
    sources: list[Any] = []
    for merged in frame.merges:
        sources.extend(merged if isinstance(merged, list) else [merged])
    for source in sources:
        if not isinstance(source, dict):
            raise _DocumentError("a '<<' merge key needs a mapping or a list of mappings", line)
    for source in sources:
        for key, value in source.items():
            if key not in target:
                target[key] = value
                key_lines = getattr(source, "key_lines", {})
                if key in key_lines:
                    target.key_lines[key] = key_lines[key]
