"""Which cluster canrun talks to, and as whom: an ``ApiClient`` from the pod's ServiceAccount or a kubeconfig."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from canrun import __version__
from canrun.errors import ClusterError

_SA_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s_client.ApiClient:
    """An ``ApiClient`` for the cluster canrun runs in, or the one a kubeconfig names.

    In a pod (``KUBERNETES_SERVICE_HOST`` set, ServiceAccount token mounted) and with
    neither argument given, the in-cluster config is used (its token is re-read as
    the kubelet rotates it).  Otherwise ``kubeconfig``, else ``$KUBECONFIG`` (a
    ``:``-separated list is merged as kubectl does), else ``~/.kube/config``.
    """
    configuration = k8s_client.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST") and _SA_TOKEN.exists():
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ClusterError(f"cannot use the in-cluster Kubernetes config: {exc}") from exc
    else:
        env = os.environ.get("KUBECONFIG")
        path = kubeconfig or env or str(Path.home() / ".kube" / "config")
        files = [p for p in path.split(os.pathsep) if p]
        if not any(Path(os.path.expanduser(p)).is_file() for p in files):
            raise ClusterError(_no_kubeconfig(path, given=kubeconfig is not None, from_env=bool(env)))
        try:
            k8s_config.load_kube_config(config_file=path, context=context, client_configuration=configuration,
                                        persist_config=False)
        except (ConfigException, OSError, ValueError, TypeError) as exc:
            raise ClusterError(f"cannot load kubeconfig {path}: {exc}") from exc
    api_client = k8s_client.ApiClient(configuration)
    api_client.user_agent = f"canrun/{__version__}"
    return api_client


def _no_kubeconfig(path: str, *, given: bool, from_env: bool) -> str:
    """Say which setting named the missing file, so the fix is obvious."""
    what = "does not exist" if os.pathsep not in path else "names no file that exists"
    if given:
        return f"--kubeconfig {path}: the file {what}"
    if from_env:
        return f"KUBECONFIG={path}: the file {what}"
    return (f"no kubeconfig at {path} and not running in a pod: pass --kubeconfig FILE or set KUBECONFIG")
