"""Everything canrun asks of the Kubernetes API, through the official ``kubernetes`` client.

This is the only package that imports ``kubernetes``; the webhook, ``check
--kubeconfig`` and the audit get a ``Cluster`` handed to them and see plain
dicts and canrun's own types (``NodeInfo``, ``Keychain``).  Why one package:
the client's errors, timeouts and threading rules are handled once, here, and
every failure leaves as a ``ClusterError`` with a one-line message.

The layers, bottom up:

* ``kubeconfig`` — which cluster, with which credentials (an ``ApiClient``).
* ``transport`` — one request as raw JSON, the one pager, a watch stream, and
  the table mapping the client's exceptions to ``ClusterError``.
* ``cluster`` — the operations canrun needs (objects, nodes, namespaces, pull
  credentials, Events, the caBundle, Secrets) and the public list-and-watch pair
  (``Cluster.list_snapshot``/``Cluster.watch``).
* ``watchers`` — list-then-watch threads built only on that public pair.

Objects are read and written as raw JSON (camelCase dicts, exactly as the API
server sends them) via ``ApiClient.param_serialize``/``call_api``, rather than
through the generated model classes: the callers want dicts, and this keeps
custom resources (PolicyReport) on the same path as built-in ones.  The client
is synchronous; async callers use ``asyncio.to_thread``.  The urllib3 pool
behind one ``ApiClient`` is thread-safe, and so are the caches here.
"""

from canrun.kube.client.cluster import (
    DEFAULT_TIMEOUT,
    EVENT_MESSAGE_MAX,
    KEYCHAIN_TTL,
    NAMESPACE_TTL,
    Cluster,
)
from canrun.kube.client.kubeconfig import load_api_client
from canrun.kube.client.transport import KindNotServed, ResourceInfo, Snapshot, WatchStream
from canrun.kube.client.watchers import ListWatch, NodeWatcher, PodWatcher
from canrun.kube.scheduling import node_info

__all__ = [
    "DEFAULT_TIMEOUT", "EVENT_MESSAGE_MAX", "KEYCHAIN_TTL", "NAMESPACE_TTL",
    "Cluster", "KindNotServed", "ListWatch", "NodeWatcher", "PodWatcher", "ResourceInfo", "Snapshot",
    "WatchStream", "load_api_client", "node_info",
]
