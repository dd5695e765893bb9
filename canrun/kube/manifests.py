"""Read Kubernetes objects from files, directories and stdin, keeping where each came from.

This module finds and reads the files (recursion, limits on bytes, encodings,
stdin) and keeps the documents that are Kubernetes objects; the YAML itself is
read by ``canrun.kube.yamldoc``, which keeps the line of every key.  Nothing
here raises for bad input: every problem becomes a ``ManifestError`` in
``Loaded.errors`` and the rest of the input is still read.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from canrun.errors import ManifestError
from canrun.kube import render
from canrun.kube.yamldoc import (
    DEFAULT_LIMITS,
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
    #: Files read (stdin counts as one; a rendered kustomization or chart counts as one).
    files: int = 0
    #: Documents found in a directory that are not Kubernetes objects (Helm values, CI configs,
    #: JSON patches, schemas): passed over, listed with -v.
    not_objects: list[ManifestError] = field(default_factory=list)
    #: Directories that need a renderer which is not installed: not checked, always said.
    not_checked: list[ManifestError] = field(default_factory=list)


# --------------------------------------------------------------------------- reading paths


@dataclass(frozen=True)
class _Input:
    """One thing a path expands to: a file to read, or a directory a tool renders."""

    path: str
    #: "file", "kustomize" or "helm"
    how: str = "file"
    #: Named on the command line (its non-objects are errors) rather than found in a directory.
    explicit: bool = False


def load_objects(paths: Sequence[str], *, stdin: TextIO | None = None,
                 limits: ManifestLimits = DEFAULT_LIMITS, exclude: Sequence[str] = ()) -> Loaded:
    """Read every object from ``paths`` (files, directories recursively, ``-`` for stdin).

    In a directory, a kustomization or Helm chart is rendered by its tool
    (``canrun.kube.render``) instead of being read file by file, documents that
    are not Kubernetes objects are passed over, and paths matching an
    ``exclude`` glob are not read.
    """
    loaded = Loaded()
    stdin_read = False
    seen: set[tuple[str, int | None, str]] = set()
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
            _load_bytes(data, STDIN_NAME, loaded, limits, explicit=True)
            continue
        for item in _expand(path, loaded, exclude):
            loaded.files += 1
            if item.how != "file":
                renderer = render.render_kustomization if item.how == "kustomize" else render.render_chart
                try:
                    rendered = renderer(item.path, limits=limits, shown_from=path)
                except render.RendererMissing as exc:
                    loaded.not_checked.append(exc)
                    continue
                except ManifestError as exc:
                    loaded.errors.append(exc)
                    continue
                loaded.errors.extend(rendered.errors)
                for root, file, line in rendered.documents:
                    # a base rendered alone and again through an overlay that leaves it unchanged is one object
                    key = (file, line, json.dumps(root, sort_keys=True, default=str))
                    if key not in seen:
                        seen.add(key)
                        _add_document(root, file, line, loaded, explicit=False)
                continue
            try:
                data = _read_file(item.path, limits)
            except ManifestError as exc:
                loaded.errors.append(exc)
                continue
            _load_bytes(data, item.path, loaded, limits, explicit=item.explicit)
    return loaded


def load_text(text: str | bytes, name: str = STDIN_NAME, *, limits: ManifestLimits = DEFAULT_LIMITS) -> Loaded:
    """Read objects from one in-memory stream (tests, the Python API)."""
    loaded = Loaded(files=1)
    data = text.encode() if isinstance(text, str) else text
    if len(data) > limits.max_file_bytes:
        loaded.errors.append(_too_big(name, limits))
    else:
        _load_bytes(data, name, loaded, limits, explicit=True)
    return loaded


def excluded(relative: str, patterns: Sequence[str]) -> bool:
    """Does a path (relative to the directory being walked, ``/``-separated) match an exclude glob?

    A glob matches the whole relative path (``tests/data``, ``charts/*/ci``, ``*.json``,
    where ``*`` also crosses ``/``) or the entry's own name (``values*.yaml``); a
    trailing ``/`` or ``/**`` means the directory and everything below it.
    """
    name = relative.rsplit("/", 1)[-1]
    for pattern in patterns:
        pattern = pattern.strip()
        if pattern.startswith("./"):
            pattern = pattern[2:]
        pattern = pattern.rstrip("/")
        if pattern.endswith("/**"):
            pattern = pattern[:-3]
        if pattern and (fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(name, pattern)):
            return True
    return False


def _expand(path: str, loaded: Loaded, exclude: Sequence[str] = ()) -> list[_Input]:
    """A file as given, or what a directory holds: recursive, sorted, hidden entries skipped.

    Hidden files are skipped with hidden directories because repositories keep
    CI and tool configs there (``.gitlab-ci.yml``, ``.github/workflows``), never
    Kubernetes objects.  A directory with a kustomization is rendered, and no
    plain file below it is read on its own: they are its resources and patches
    (nested kustomizations are rendered too; a ``kind: Component`` only as part
    of the kustomizations that use it).  A directory with a ``Chart.yaml`` is
    rendered with its subcharts, and nothing below it is walked.  Directory
    symlinks are not followed (no loops); file symlinks are read.
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
        return [_Input(path, explicit=True)]
    found: list[tuple[tuple[str, ...], _Input]] = []
    owned: set[str] = set()  # directories inside a kustomization: their files are not read on their own

    def walk_error(exc: OSError) -> None:
        loaded.errors.append(ManifestError(f"cannot read directory: {exc.strerror or exc}",
                                           source=exc.filename or path))

    def relative(full: str) -> str:
        return Path(os.path.relpath(full, path)).as_posix()

    for root, dirs, files in os.walk(path, onerror=walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (exclude and excluded(relative(os.path.join(root, d)), exclude)))
        sort_key = Path(os.path.relpath(root, path)).parts
        if render.is_chart(root):
            found.append(((*sort_key, render.CHART_FILE), _Input(root, "helm")))
            dirs[:] = []
            continue
        kustomization = render.kustomization_file(root)
        if kustomization is not None or os.path.dirname(root) in owned or root in owned:
            owned.add(root)
            if kustomization is not None and not render.is_component(kustomization):
                found.append(((*sort_key, os.path.basename(kustomization)), _Input(root, "kustomize")))
            continue
        for name in sorted(files):
            full = os.path.join(root, name)
            if name.startswith(".") or not name.lower().endswith(MANIFEST_SUFFIXES) or not _regular(full):
                continue
            if exclude and excluded(relative(full), exclude):
                continue
            found.append(((*sort_key, name), _Input(full)))
    # the order of a depth-first walk with sorted entries (kubectl's): a.yaml, b/deep/c.yaml, b/z.yaml, c.yaml
    found.sort(key=lambda entry: tuple(p for p in entry[0] if p != "."))
    if not found and not any(e.source and e.source.startswith(path) for e in loaded.errors):
        loaded.errors.append(ManifestError("directory holds no .yaml, .yml or .json files", source=path))
    return [item for _, item in found]


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


def _load_bytes(data: bytes, name: str, loaded: Loaded, limits: ManifestLimits, *, explicit: bool) -> None:
    try:
        text = _decode(data, name)
    except ManifestError as exc:
        loaded.errors.append(exc)
        return
    for doc in read_documents(text, name, loaded.errors, limits):
        _add_document(doc.root, name, doc.line, loaded, explicit=explicit)


def _add_document(root: Any, name: str, where: int | None, loaded: Loaded, *, explicit: bool) -> None:
    """Keep a document that is a Kubernetes object; say why another is not one.

    A file named on the command line is meant to hold objects, so anything else
    in it is an error.  A file found in a directory may be anything YAML (Helm
    values, CI configs, JSON patches): a document without a ``kind`` there is
    passed over and counted; one with a ``kind`` but a broken shape is still an
    error.
    """
    if root is None:
        return  # empty document ("---" with nothing, comments only): nothing to judge, nothing wrong
    if not isinstance(root, dict):
        what = "a list" if isinstance(root, list) else f"the scalar {str(root)[:40]!r}"
        error = ManifestError(f"document is {what}, not a Kubernetes object (a mapping with apiVersion and kind)",
                              source=name, line=where)
        (loaded.errors if explicit else loaded.not_objects).append(error)
        return
    problem = object_shape_problem(root)
    if problem:
        skip = not explicit and root.get("kind") in (None, "")
        (loaded.not_objects if skip else loaded.errors).append(ManifestError(problem, source=name, line=where))
        return
    loaded.objects.append(LoadedObject(root, SourceLocation(name, where)))


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
