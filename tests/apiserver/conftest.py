"""One real control plane (etcd + kube-apiserver v1.20.2 on loopback) for the whole session.

Tests share it, so each works in namespaces of its own (``namespace`` fixture) and removes the cluster-scoped
objects it creates. The manifests' own namespace is applied once (``installed``) and left for the session.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest

from tests.support import tools
from tests.support.apiserver import ControlPlane, ControlPlaneError, start_control_plane

_counter = itertools.count()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    apiserver, etcd, openssl = tools.require("kube-apiserver", "etcd", "openssl")
    kubectl = tools.find("kubectl").path
    try:
        plane = start_control_plane(tmp_path_factory.mktemp("control-plane"), apiserver=apiserver, etcd=etcd,
                                    openssl=openssl, kubectl=kubectl)
    except ControlPlaneError as exc:
        pytest.fail(str(exc))
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def kubectl(control_plane: ControlPlane) -> ControlPlane:
    """The control plane, for tests that drive it with kubectl (skipped where there is none)."""
    tools.require("kubectl")
    return control_plane


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace, labelled with its name as 1.21+ servers do by themselves (1.20 does not)."""
    name = f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"
    from canrun.kube.client import load_api_client
    from kubernetes import client as k8s

    api = k8s.CoreV1Api(load_api_client(str(control_plane.admin().kubeconfig)))
    api.create_namespace({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
    try:
        yield name
    finally:
        # no namespace controller runs: the namespace stays Terminating, which is harmless for the session
        api.delete_namespace(name)
        api.api_client.close()
