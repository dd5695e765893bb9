"""A fresh Kubernetes API stand-in per test, and a ``Cluster`` talking to it through the official client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from canrun.kube.client import Cluster, load_api_client
from tests.support.kubeapi import KubeAPIStandIn


@pytest.fixture
def kubeapi(tmp_path: Path) -> Iterator[KubeAPIStandIn]:
    with KubeAPIStandIn(tmp_path / "kubeapi") as api:
        yield api


@pytest.fixture
def cluster(kubeapi: KubeAPIStandIn) -> Iterator[Cluster]:
    c = Cluster(load_api_client(str(kubeapi.kubeconfig_path)), timeout=5.0)
    yield c
    c.close()


def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll until ``predicate()`` holds; for state that changes on another thread."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
