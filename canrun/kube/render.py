"""Kustomizations and Helm charts rendered by their own tools, with findings pointed back at the source files.

canrun does not reimplement kustomize or Helm: a directory holding a
``kustomization.yaml`` is built with ``kustomize build`` (or ``kubectl
kustomize``), a directory holding a ``Chart.yaml`` with ``helm template``,
whichever is on PATH.  The rendered stream is one text with no positions in
the user's files, so each renderer's own source record is read back:

* kustomize writes ``config.kubernetes.io/origin`` (``path:`` of the resource
  file) when the kustomization asks for ``buildMetadata: [originAnnotations]``.
  canrun never edits the user's kustomization: it builds a throw-away one in a
  temporary directory whose only resource is the user's directory, with that
  option on.  The original file is read and its lines are grafted onto the
  rendered object key by key (containers matched by name), so a finding
  points at the line the author wrote; what a patch added has no line of its
  own and points at the nearest enclosing one.  The annotation is removed
  again before the object is judged.  A kustomize too old for
  ``buildMetadata`` builds the directory as it is, and findings then point at
  its ``kustomization.yaml``.
* Helm writes a ``# Source: CHART/templates/FILE`` comment before each
  document.  A template is not YAML, so lines come from its text: the line of
  the document's ``kind:`` and of a container's ``- name:`` where the name is
  written literally.

The tools run with a time limit and their output is bounded like a file's.
"""

from __future__ import annotations

import bisect
import os
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canrun.errors import ManifestError
from canrun.kube.yamldoc import DEFAULT_LIMITS, Document, ManifestLimits, PosDict, PosList, read_documents

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
CHART_FILE = "Chart.yaml"
ORIGIN_ANNOTATION = "config.kubernetes.io/origin"
#: Seconds a renderer may take on one directory (charts with many subcharts are slow, hung ones are not).
RENDER_TIMEOUT = 120.0
_STDERR_KEEP = 4096
_SOURCE = re.compile(r"^# Source: (\S.*?)\s*$", re.MULTILINE)


@dataclass
class Rendered:
    """What one directory rendered to: documents with the file and line each is reported at."""

    documents: list[tuple[Any, str, int | None]] = field(default_factory=list)
    errors: list[ManifestError] = field(default_factory=list)


class RendererMissing(ManifestError):
    """The directory needs a tool that is not on PATH; it is reported as not checked, not as broken."""


def kustomization_file(directory: str) -> str | None:
    """The kustomization file of ``directory``, or None."""
    for name in KUSTOMIZATION_FILES:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def is_component(kustomization: str) -> bool:
    """A ``kind: Component`` is only built as part of the kustomizations that list it."""
    try:
        text = Path(kustomization).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"^kind:\s*[\"']?Component\b", text, re.MULTILINE) is not None


def is_chart(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, CHART_FILE))


# --------------------------------------------------------------------------- running a tool


def _which() -> Callable[[str], str | None]:
    import shutil  # here, not at the top: a check without kustomizations or charts never needs it

    return shutil.which


def _run(argv: list[str], *, cwd: str | None, limits: ManifestLimits, what: str, source: str,
         timeout: float = RENDER_TIMEOUT) -> str:
    """The tool's standard output, bounded in bytes and time; ManifestError naming its complaint otherwise.

    Output is read as it comes and the tool is killed the moment it passes the byte limit or the
    time limit, so neither a runaway template nor a hung tool costs more than the bound.
    """
    import subprocess
    import threading

    try:
        # its own process group, so a kill reaches whatever the tool started (helm plugins, say)
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise ManifestError(f"cannot run {argv[0]}: {exc.strerror or exc}", source=source) from exc
    assert proc.stdout is not None and proc.stderr is not None
    timed_out = threading.Event()

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:  # already gone
            pass

    def expire() -> None:
        timed_out.set()
        kill()

    tail = bytearray()

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for chunk in iter(lambda: proc.stderr.read(4096), b""):  # type: ignore[union-attr]
            tail.extend(chunk)
            del tail[:-_STDERR_KEEP]

    timer = threading.Timer(timeout, expire)
    reader = threading.Thread(target=drain_stderr, daemon=True)
    timer.start()
    reader.start()
    out = bytearray()
    too_big = False
    try:
        for chunk in iter(lambda: proc.stdout.read(65536), b""):  # type: ignore[union-attr]
            out.extend(chunk)
            if len(out) > limits.max_file_bytes:
                too_big = True
                kill()
                break
    finally:
        proc.wait()
        timer.cancel()
        reader.join(5)
        proc.stdout.close()
        proc.stderr.close()
    if timed_out.is_set():
        raise ManifestError(f"{what} took longer than {timeout:.0f}s; stopped", source=source)
    if too_big:
        raise ManifestError(f"{what} wrote more than {limits.max_file_bytes} bytes; refused", source=source)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in bytes(tail).decode("utf-8", "replace").splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        raise ManifestError(f"{what} failed: {reason}", source=source)
    return out.decode("utf-8", "replace")


def _kustomize_argv(which: Callable[[str], str | None]) -> list[str] | None:
    if which("kustomize"):
        return ["kustomize", "build"]
    if which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


# --------------------------------------------------------------------------- kustomize


def render_kustomization(directory: str, *, limits: ManifestLimits = DEFAULT_LIMITS,
                         which: Callable[[str], str | None] | None = None, shown_from: str | None = None) -> Rendered:
    """Build ``directory`` with kustomize; each object reported at its resource file and line.

    File names are shown under ``shown_from`` (the directory the user named) when they lie in it.
    """
    argv = _kustomize_argv(which or _which())
    if argv is None:
        raise RendererMissing("a kustomization, but neither kustomize nor kubectl is on PATH: install one, "
                              f"or render it yourself (kubectl kustomize {directory} | canrun check -f -)",
                              source=directory)
    import tempfile

    what = " ".join(argv)
    target = os.path.abspath(directory)
    with tempfile.TemporaryDirectory(prefix="canrun-kustomize-") as wrapper:
        rel = os.path.relpath(target, wrapper)
        Path(wrapper, "kustomization.yaml").write_text(
            f"resources:\n  - {rel}\nbuildMetadata: [originAnnotations]\n", encoding="utf-8")
        try:
            text = _run([*argv, wrapper], cwd=None, limits=limits, what=what, source=directory)
            return kustomize_output(text, wrapper, directory, limits=limits, shown_from=shown_from)
        except ManifestError:
            pass  # too old for buildMetadata, or the directory itself is broken: build it as it is to find out
    text = _run([*argv, target], cwd=None, limits=limits, what=what, source=directory)
    return kustomize_output(text, None, directory, limits=limits, shown_from=shown_from)


def kustomize_output(text: str, wrapper: str | None, directory: str, *,
                     limits: ManifestLimits = DEFAULT_LIMITS, shown_from: str | None = None) -> Rendered:
    """Documents of a kustomize build, placed by their origin annotations (paths relative to ``wrapper``)."""
    rendered = Rendered()
    kustomization = kustomization_file(directory) or os.path.join(directory, KUSTOMIZATION_FILES[0])
    sources: dict[str, list[Document]] = {}
    for doc in read_documents(text, kustomization, rendered.errors, limits):
        root = doc.root
        origin = _pop_origin(root)
        path = _origin_path(origin, wrapper, shown_from or directory)
        if path is None:
            _forget_lines(root)
            rendered.documents.append((root, kustomization, None))
            continue
        if path not in sources:
            sources[path] = _read_source(path, limits)
        original = _matching_document(root, sources[path])
        if original is None:
            _forget_lines(root)
            rendered.documents.append((root, path, None))
            continue
        _graft(root, original.root)
        rendered.documents.append((root, path, original.line))
    return rendered


def _pop_origin(root: Any) -> str | None:
    """Take kustomize's origin annotation off the object (canrun put it there), leaving the rest as written."""
    meta = root.get("metadata") if isinstance(root, dict) else None
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(annotations, dict) or ORIGIN_ANNOTATION not in annotations:
        return None
    origin = annotations.pop(ORIGIN_ANNOTATION)
    if not annotations:
        del meta["annotations"]
    return origin if isinstance(origin, str) else None


def _origin_path(origin: str | None, wrapper: str | None, shown_from: str) -> str | None:
    """The local file an origin annotation names (None for a remote or generated resource)."""
    if not origin or wrapper is None:
        return None
    fields: dict[str, str] = {}
    for line in origin.splitlines():
        key, _, value = line.partition(":")
        if value and not line.startswith(" "):
            fields[key.strip()] = value.strip().strip("'\"")
    path = fields.get("path")
    if not path or "repo" in fields:
        return None
    full = os.path.normpath(os.path.join(wrapper, path))
    return _display(full, shown_from) if os.path.isfile(full) else None


def _display(full: str, directory: str) -> str:
    """A path as the user would write it: under the directory they named, else relative to here if inside."""
    base = os.path.abspath(directory)
    if full == base or full.startswith(base + os.sep):
        return os.path.join(directory, os.path.relpath(full, base))
    try:
        rel = os.path.relpath(full)
    except ValueError:  # another drive (Windows)
        return full
    return full if rel.startswith("..") else rel


def _read_source(path: str, limits: ManifestLimits) -> list[Document]:
    try:
        data = Path(path).read_bytes()[: limits.max_file_bytes]
    except OSError:
        return []
    return read_documents(data.decode("utf-8-sig", "replace"), path, [], limits)


def _matching_document(root: Any, candidates: list[Document]) -> Document | None:
    """The document of the resource file this object was built from (kind, then name through prefixes)."""
    if not isinstance(root, dict):
        return None
    kind = root.get("kind")
    name = str((root.get("metadata") or {}).get("name") or "")
    same_kind = [d for d in candidates if isinstance(d.root, dict) and d.root.get("kind") == kind]
    named = [d for d in same_kind if str((d.root.get("metadata") or {}).get("name") or "") == name]
    if not named:
        named = [d for d in same_kind if (n := str((d.root.get("metadata") or {}).get("name") or "")) and n in name]
    if named:
        return max(named, key=lambda d: len(str((d.root.get("metadata") or {}).get("name") or "")))
    return same_kind[0] if len(same_kind) == 1 else None


def _forget_lines(node: Any) -> None:
    """Drop positions that belong to the renderer's output text, not to any file the user has."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, PosDict):
            current.line = None
            current.key_lines = {}
            stack.extend(current.values())
        elif isinstance(current, PosList):
            current.line = None
            stack.extend(current)


def _graft(target: Any, source: Any) -> None:
    """Give ``target`` (rendered) the lines of ``source`` (as written) wherever the two have the same shape."""
    stack = [(target, source)]
    while stack:
        tgt, src = stack.pop()
        if isinstance(tgt, PosDict):
            if not isinstance(src, Mapping):
                _forget_lines(tgt)
                continue
            tgt.line = getattr(src, "line", None)
            src_lines = getattr(src, "key_lines", {})
            tgt.key_lines = {k: src_lines[k] for k in tgt if k in src_lines}
            for key, value in tgt.items():
                if key in src:
                    stack.append((value, src[key]))
                else:
                    _forget_lines(value)
        elif isinstance(tgt, PosList):
            if not isinstance(src, list):
                _forget_lines(tgt)
                continue
            tgt.line = getattr(src, "line", None)
            by_name = {item.get("name"): item for item in src if isinstance(item, Mapping) and item.get("name")}
            for index, item in enumerate(tgt):
                if isinstance(item, Mapping) and item.get("name") in by_name:
                    stack.append((item, by_name[item.get("name")]))
                elif not by_name and index < len(src):
                    stack.append((item, src[index]))
                else:
                    _forget_lines(item)


# --------------------------------------------------------------------------- helm


def render_chart(directory: str, *, limits: ManifestLimits = DEFAULT_LIMITS,
                 which: Callable[[str], str | None] | None = None, shown_from: str | None = None) -> Rendered:
    """``helm template`` of the chart in ``directory`` with its default values."""
    if not (which or _which())("helm"):
        raise RendererMissing("a Helm chart, but helm is not on PATH: install helm, or render it yourself "
                              f"(helm template {directory} | canrun check -f -)", source=directory)
    text = _run(["helm", "template", os.path.abspath(directory)], cwd=None, limits=limits, what="helm template",
                source=directory)
    return helm_output(text, directory, limits=limits)


def helm_output(text: str, chart_dir: str, *, limits: ManifestLimits = DEFAULT_LIMITS) -> Rendered:
    """Documents of ``helm template`` output, each placed at its template file via ``# Source:``."""
    rendered = Rendered()
    marks = [(text[: m.start()].count("\n") + 1, m.group(1)) for m in _SOURCE.finditer(text)]
    mark_lines = [line for line, _ in marks]
    templates: dict[str, list[str] | None] = {}
    for doc in read_documents(text, chart_dir, rendered.errors, limits):
        root = doc.root
        _forget_lines(root)
        index = bisect.bisect_right(mark_lines, doc.line) - 1
        if index < 0:
            rendered.documents.append((root, chart_dir, None))
            continue
        parts = Path(marks[index][1]).parts
        path = os.path.join(chart_dir, *parts[1:]) if len(parts) > 1 else chart_dir
        if path not in templates:
            try:
                templates[path] = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                templates[path] = None
        lines = templates[path]
        rendered.documents.append((root, path, _place_in_template(root, lines) if lines is not None else None))
    return rendered


def _place_in_template(root: Any, lines: list[str]) -> int | None:
    """The line of the object's ``kind:`` in its template; containers get the line of a literal ``name:``."""
    if not isinstance(root, PosDict):
        return None
    kind = root.get("kind")
    line = next((i + 1 for i, text in enumerate(lines)
                 if re.match(rf"\s*kind:\s*[\"']?{re.escape(str(kind))}[\"']?\s*(#.*)?$", text)), None)
    root.line = line
    for container in _containers(root):
        name = container.get("name")
        if isinstance(name, str) and name:
            pattern = re.compile(rf"^\s*(-\s+)?name:\s*[\"']?{re.escape(name)}[\"']?\s*(#.*)?$")
            container.line = next((i + 1 for i, text in enumerate(lines) if pattern.match(text)), None)
    return line


def _containers(root: PosDict) -> list[PosDict]:
    """Every container mapping under the object (any depth): cheap, and kind-agnostic."""
    found: list[PosDict] = []
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers", "ephemeralContainers") and isinstance(value, list):
                    found.extend(c for c in value if isinstance(c, PosDict))
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return found
