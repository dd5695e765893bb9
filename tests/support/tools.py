"""Where the machine's tools are, or why a test that needs one must skip.

``scripts/build-tools.sh`` (run by ``scripts/setup.sh``) builds or installs them once per machine into
``$CANRUN_TOOLS_CACHE`` (default ``~/.cache/canrun-tools``) and, for a tool it could not get, writes the
reason to ``status/<tool>.skip``. This module is the one place the tests look: ``find(name)`` gives a
``Tool`` whose ``path`` is set or whose ``reason`` says why not, and ``require(name)`` skips the calling
test with that reason.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

APISERVER_VERSION = "v1.20.2"
#: kubectl renders kustomize components from 1.21 on (its built-in kustomize v4).
KUBECTL_MIN_MINOR_FOR_COMPONENTS = 21


def cache_dir() -> Path:
    return Path(os.environ.get("CANRUN_TOOLS_CACHE") or Path.home() / ".cache" / "canrun-tools")


@dataclass(frozen=True)
class Tool:
    name: str
    path: Path | None
    reason: str = ""

    def require(self) -> Path:
        if self.path is None:
            pytest.skip(f"{self.name}: {self.reason}")
        return self.path


def _recorded_reason(name: str) -> str:
    skip = cache_dir() / "status" / f"{name}.skip"
    try:
        return skip.read_text().strip()
    except OSError:
        return "not built yet: run scripts/setup.sh (scripts/build-tools.sh)"


def _version_line(path: Path, *args: str) -> str:
    try:
        out = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run: {exc}"
    return (out.stdout or out.stderr).strip()


def _cached_binary(name: str) -> Tool:
    path = cache_dir() / "bin" / name
    if path.is_file() and os.access(path, os.X_OK):
        return Tool(name, path)
    return Tool(name, None, _recorded_reason(name))


def _on_path(name: str, debian_package: str) -> Tool:
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if found:
        return Tool(name, Path(found))
    return Tool(name, None, f"not installed (Debian package {debian_package}; scripts/setup.sh installs it)")


def _kube_apiserver() -> Tool:
    tool = _cached_binary("kube-apiserver")
    if tool.path is None:
        return tool
    version = _version_line(tool.path, "--version")
    if version != f"Kubernetes {APISERVER_VERSION}":
        return Tool(tool.name, None, f"{tool.path} is {version!r}, expected Kubernetes {APISERVER_VERSION}")
    return tool


def kubectl_minor(path: Path) -> int | None:
    try:
        out = subprocess.run([str(path), "version", "--client", "-o", "json"], capture_output=True, text=True,
                             timeout=30)
        minor = json.loads(out.stdout)["clientVersion"]["minor"]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None
    digits = "".join(ch for ch in str(minor) if ch.isdigit())
    return int(digits) if digits else None


def _kubectl(components: bool) -> Tool:
    found = shutil.which("kubectl")
    if found is None:
        cached = _cached_binary("kubectl")
        if cached.path is None:
            return cached
        found = str(cached.path)
    path = Path(found)
    minor = kubectl_minor(path)
    if minor is None:
        return Tool("kubectl", None, f"{path} does not report its version")
    if components and minor < KUBECTL_MIN_MINOR_FOR_COMPONENTS:
        return Tool("kubectl", None, f"{path} is 1.{minor}: its kustomize predates components (needs kubectl "
                                     f"1.{KUBECTL_MIN_MINOR_FOR_COMPONENTS}+)")
    return Tool("kubectl", path)


_FINDERS = {
    "kube-apiserver": _kube_apiserver,
    "etcd": lambda: _on_path("etcd", "etcd-server"),
    "redis-server": lambda: _on_path("redis-server", "redis-server"),
    "openssl": lambda: _on_path("openssl", "openssl"),
    "promtool": lambda: _on_path("promtool", "prometheus"),
    "crane": lambda: _cached_binary("crane"),
    "kubectl": lambda: _kubectl(components=False),
    # kubectl that can also `apply -k` the manifests (they use kustomize components)
    "kubectl-kustomize": lambda: _kubectl(components=True),
}


@functools.cache
def find(name: str) -> Tool:
    """The tool called ``name`` (one of ``_FINDERS``), looked up once per session."""
    return _FINDERS[name]()


def require(*names: str) -> list[Path]:
    """The paths of ``names``, or skip the calling test naming the first that is missing and why."""
    return [find(n).require() for n in names]
