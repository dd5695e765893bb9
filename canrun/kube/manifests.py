"""Read Kubernetes objects from files, directories and stdin, keeping where each came from.

This module finds and reads the files (recursion, limits on bytes, encodings,
stdin) and keeps the documents that are Kubernetes objects; the YAML itself is
read by ``canrun.kube.yamldoc``, which keeps the line of every key.  Nothing
here raises for bad input: every problem becomes a ``ManifestError`` in
``Loaded.errors`` and the rest of the input is still read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from canrun.errors import ManifestError
from canrun.kube.yamldoc import (
    DEFAULT_LIMITS,
    Document,
    ManifestLimits,
    PosDict,
    PosList,
    line_of,
    read_documents,
)
from canrun.spec import SourceLocation

__all__ = [
    "DEFAULT_LIMITS", "MANIFEST_SUFFIXES", "STDIN_NAME", "Loaded", "LoadedObject", "ManifestLimits", "PosDict",
    "PosList", "line_of", "load_objects", "load_text", "object_shape_problem",
]

STDIN_NAME = "<stdin>"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


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


def _load_bytes(data: bytes, name: str, loaded: Loaded, limits: ManifestLimits) -> None:
    try:
        text = _decode(data, name)
    except ManifestError as exc:
        loaded.errors.append(exc)
        return
    for doc in read_documents(text, name, loaded.errors, limits):
        _add_document(doc, name, loaded)


def _add_document(doc: Document, name: str, loaded: Loaded) -> None:
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
