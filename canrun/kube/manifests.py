"""Read Kubernetes objects from files, directories and stdin, keeping where each came from.

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
JSON decoder does.  Nothing here raises for bad input: every problem becomes a
``ManifestError`` in ``Loaded.errors`` and the rest of the input is still read.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from yaml import events as ev
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode

from canrun.errors import ManifestError
from canrun.spec import SourceLocation

try:  # libyaml when available: the pure-Python parser is ~10x slower on big helm outputs
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

STDIN_NAME = "<stdin>"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


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


@dataclass(frozen=True)
class LoadedObject:
    """One top-level Kubernetes object (a ``List`` is not expanded here) and where it starts."""

    obj: dict[str, Any]
    source: SourceLocation


@dataclass
class Loaded:
    """What a set of paths held: the objects read, and every file or document that could not be read."""

    objects: list[LoadedObject] = field(default_factory=list)
    errors: list[ManifestError] = field(default_factory=list)
    #: Files read (stdin counts as one).
    files: int = 0


# --------------------------------------------------------------------------- reading paths


def load_objects(paths: Sequence[str], *, stdin: TextIO | None = None,
                 limits: ManifestLimits = DEFAULT_LIMITS) -> Loaded:
    """Read every object from ``paths`` (files, directories recursively, ``-`` for stdin)."""
    loaded = Loaded()
    stdin_read = False
    for path in paths:
        if path == "-":
            if stdin_read:
                continue  # stdin can only be read once; "-f - -f -" means the same stream
            stdin_read = True
            loaded.files += 1
            try:
                data = _read_stdin(stdin, limits)
            except ManifestError as exc:
                loaded.errors.append(exc)
                continue
            _load_bytes(data, STDIN_NAME, loaded, limits)
            continue
        for name in _expand(path, loaded):
            loaded.files += 1
            try:
                data = _read_file(name, limits)
            except ManifestError as exc:
                loaded.errors.append(exc)
                continue
            _load_bytes(data, name, loaded, limits)
    return loaded


def load_text(text: str | bytes, name: str = STDIN_NAME, *, limits: ManifestLimits = DEFAULT_LIMITS) -> Loaded:
    """Read objects from one in-memory stream (tests, the Python API)."""
    loaded = Loaded(files=1)
    data = text.encode() if isinstance(text, str) else text
    if len(data) > limits.max_file_bytes:
        loaded.errors.append(_too_big(name, limits))
    else:
        _load_bytes(data, name, loaded, limits)
    return loaded


def _expand(path: str, loaded: Loaded) -> list[str]:
    """A file as given, or a directory's manifest files: recursive, sorted, hidden entries skipped.

    Hidden files are skipped with hidden directories because repositories keep
    CI and tool configs there (``.gitlab-ci.yml``), never Kubernetes objects.
    Directory symlinks are not followed (no loops); file symlinks are read.
    """
    try:
        is_dir = os.path.isdir(path)
        exists = is_dir or os.path.lexists(path)
    except (OSError, ValueError) as exc:
        loaded.errors.append(ManifestError(f"cannot read: {exc}", source=path))
        return []
    if not exists:
        loaded.errors.append(ManifestError("no such file or directory", source=path))
        return []
    if not is_dir:
        return [path]
    found: list[str] = []

    def walk_error(exc: OSError) -> None:
        loaded.errors.append(ManifestError(f"cannot read directory: {exc.strerror or exc}",
                                           source=exc.filename or path))

    for root, dirs, files in os.walk(path, onerror=walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            full = os.path.join(root, name)
            if not name.startswith(".") and name.lower().endswith(MANIFEST_SUFFIXES) and _regular(full):
                found.append(full)
    # the order of a depth-first walk with sorted entries (kubectl's): a.yaml, b/deep/c.yaml, b/z.yaml, c.yaml
    found.sort(key=lambda name: Path(os.path.relpath(name, path)).parts)
    if not found and not any(e.source and e.source.startswith(path) for e in loaded.errors):
        loaded.errors.append(ManifestError("directory holds no .yaml, .yml or .json files", source=path))
    return found


def _regular(name: str) -> bool:
    """Only regular files are read from a directory: a FIFO there would block the walk forever.

    (A pipe named explicitly, as ``-f <(helm template …)`` does, is read.)
    """
    try:
        return stat.S_ISREG(os.stat(name).st_mode)
    except OSError:
        return True  # let the read report why it cannot be opened


def _too_big(name: str, limits: ManifestLimits) -> ManifestError:
    return ManifestError(f"larger than {limits.max_file_bytes} bytes; refused (raise the limit to read it)",
                         source=name)


def _read_file(name: str, limits: ManifestLimits) -> bytes:
    try:
        with open(name, "rb") as fh:
            data = fh.read(limits.max_file_bytes + 1)
    except IsADirectoryError as exc:
        raise ManifestError("is a directory", source=name) from exc
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror or exc}", source=name) from exc
    if len(data) > limits.max_file_bytes:
        raise _too_big(name, limits)
    return data


def _read_stdin(stdin: TextIO | None, limits: ManifestLimits) -> bytes:
    if stdin is None:
        raise ManifestError("'-' given but no standard input is available", source=STDIN_NAME)
    try:
        buffer = getattr(stdin, "buffer", None)
        if buffer is not None:
            data = buffer.read(limits.max_file_bytes + 1)
        else:
            text = stdin.read(limits.max_file_bytes + 1)
            data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read standard input: {exc}", source=STDIN_NAME) from exc
    if len(data) > limits.max_file_bytes:
        raise _too_big(STDIN_NAME, limits)
    return data


def _decode(data: bytes, name: str) -> str:
    """Text of a manifest file; binary and non-UTF files are named, not parsed into noise."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ManifestError("not valid UTF-16 text despite its byte-order mark", source=name) from exc
    if b"\x00" in data[:8192]:
        raise ManifestError("is a binary file (NUL bytes), not a YAML or JSON manifest", source=name)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ManifestError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                            "binary file or another encoding", source=name, line=line) from exc


# --------------------------------------------------------------------------- streams and documents


_DOC_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)
_TEMPLATE = re.compile(r"\{\{|\{%")


class _DocumentError(Exception):
    """A document this module refuses (not libyaml): a message and a 0-based line in the file."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class _Document:
    root: Any
    line: int  # 1-based, of the document's start (its root node)


def _load_bytes(data: bytes, name: str, loaded: Loaded, limits: ManifestLimits) -> None:
    try:
        text = _decode(data, name)
    except ManifestError as exc:
        loaded.errors.append(exc)
        return
    for doc in read_documents(text, name, loaded.errors, limits):
        _add_document(doc, name, loaded)


def _add_document(doc: _Document, name: str, loaded: Loaded) -> None:
    root = doc.root
    if root is None:
        return  # empty document ("---" with nothing, comments only): nothing to judge, nothing wrong
    if not isinstance(root, dict):
        what = "a list" if isinstance(root, list) else f"the scalar {str(root)[:40]!r}"
        loaded.errors.append(ManifestError(
            f"document is {what}, not a Kubernetes object (a mapping with apiVersion and kind)",
            source=name, line=doc.line))
        return
    problem = object_shape_problem(root)
    if problem:
        loaded.errors.append(ManifestError(problem, source=name, line=doc.line))
        return
    loaded.objects.append(LoadedObject(root, SourceLocation(name, doc.line)))


def object_shape_problem(obj: dict[str, Any]) -> str | None:
    """Why a mapping is not a Kubernetes object (missing or non-string kind/apiVersion), or None."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    missing = [k for k, v in (("apiVersion", api_version), ("kind", kind)) if v is None or v == ""]
    if missing:
        return f"not a Kubernetes object: no {' and no '.join(missing)}"
    for key, value in (("apiVersion", api_version), ("kind", kind)):
        if not isinstance(value, str):
            return f"not a Kubernetes object: {key} is not a string ({value!r})"
    return None


def read_documents(text: str, name: str, errors: list[ManifestError],
                   limits: ManifestLimits = DEFAULT_LIMITS) -> list[_Document]:
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


def _read_json(text: str) -> list[_Document] | None:
    """The single document of a JSON text, or None if it is not JSON either."""
    try:
        return [_Document(json.loads(text), 1)]
    except (ValueError, RecursionError):
        return None


def _read_pieces(text: str, name: str, errors: list[ManifestError], limits: ManifestLimits) -> list[_Document]:
    """Read each "---"-separated piece on its own, so one bad document costs only itself."""
    docs: list[_Document] = []
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
    markers = [offset + chunk[: m.start()].count("\n") + 1 for m in _TEMPLATE.finditer(chunk)]
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


def _parse(text: str, offset: int, limits: ManifestLimits) -> Iterator[_Document]:
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


def _build(loader: Any, offset: int, limits: ManifestLimits) -> _Document:
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
    return _Document(root, root_line)


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
