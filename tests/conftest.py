"""Session fixtures shared by every test package: real binaries, a real registry, the image catalogue.

Expensive things are built once per session: the registry is Debian's
``docker-registry`` on loopback and the catalogue (``tests/support/images.py``)
is built with umoci from real binaries, cached on disk between sessions, and
pushed with skopeo.  Package conftests may override a fixture by name (the
closest definition wins).
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import images
from tests.support.registry import RunningRegistry, start_registry


def _require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")


@pytest.fixture(scope="session")
def arm64_busybox() -> Path:
    """/bin/busybox from Debian's busybox-static:arm64 (real aarch64 code), fetched once and cached."""
    try:
        return images.arm64_busybox()
    except images.BuildError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """One plain-HTTP docker-registry on 127.0.0.1 for the whole session."""
    _require_tools("docker-registry")
    registry = start_registry(tmp_path_factory.mktemp("catalogue-registry"))
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound for the session, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def catalogue(local_registry: RunningRegistry, arm64_busybox: Path, dead_port: int) -> images.Catalogue:
    """Every catalogue image pushed into ``local_registry`` (the ``corrupt`` one then damaged on disk).

    ``catalogue.ref(name)`` is the reference to put in a manifest; ``catalogue.ref("unreachable")`` names a
    port nothing listens on.
    """
    _require_tools("umoci", "skopeo")
    try:
        return images.publish(local_registry.host, local_registry.blob_path,
                              recipes=images.catalogue_recipes(str(arm64_busybox)),
                              unreachable_port=dead_port)
    except images.BuildError as exc:
        pytest.fail(str(exc))
