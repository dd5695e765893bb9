"""Threads that keep a view of the cluster current: list, then watch from the list's resourceVersion.

They are built only on the public list-and-watch pair of a cluster
(``list_snapshot``/``watch``, see ``ListWatchSource``), so a watcher knows what
an event means and nothing of HTTP.  One thread per watched kind reads the stream
and applies each event in order.  kopf's reactor (``_core/reactor/queueing.py``)
also runs one watcher per resource kind, but fans the events out to per-object
queues and workers, which pays off when handling an event is slow; here applying
one is a dict update (and a listener callback that must not block), so it is done
inline on the watch thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, Self

from canrun.errors import ClusterError
from canrun.kube.client.transport import Snapshot, WatchStream
from canrun.kube.scheduling import NodeInfo, NodePool, node_info

log = logging.getLogger("canrun.kube")


class ListWatchSource(Protocol):
    """What a watcher needs of a cluster (``Cluster`` is one)."""

    def list_snapshot(self, api_version: str, kind: str) -> Snapshot: ...

    def watch(self, api_version: str, kind: str, resource_version: str, timeout_seconds: int = 300) -> WatchStream:
        ...


class _Expired(Exception):
    """The watch's resourceVersion is gone (410): list again."""


class ListWatch:
    """List, then watch from the list's resourceVersion; on any error back off and list again.

    Runs in a daemon thread (the client is synchronous).  Subclasses say what a list
    and an event mean (``_listed``, ``_event``).  Errors back off exponentially up to
    ``backoff_max`` seconds; each recovery is a fresh list, so no change is missed.
    """

    api_version = "v1"
    kind = ""
    thread_name = "canrun-watch"

    def __init__(self, cluster: ListWatchSource, *, watch_timeout: int = 300, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0) -> None:
        self.cluster = cluster
        self.watch_timeout = watch_timeout
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: WatchStream | None = None
        self._stream_lock = threading.Lock()
        #: How many times the watch was re-established with a fresh list after an error or 410.
        self.resyncs = 0
        self.last_error: str | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def start(self) -> Self:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._stream_lock:
            stream = self._stream
        if stream is not None:
            stream.close()  # unblocks the reading thread at once
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- what subclasses define

    def _listed(self, items: list[dict[str, Any]]) -> None:
        """The whole state, as one list read it."""
        raise NotImplementedError

    def _event(self, kind: str, obj: Mapping[str, Any]) -> None:
        """Apply one ADDED/MODIFIED/DELETED event."""
        raise NotImplementedError

    # -- internals

    @property
    def _plural(self) -> str:
        return f"{self.kind.lower()}s"

    def _apply(self, event: Mapping[str, Any]) -> str | None:
        """Apply one watch event; returns the resourceVersion to resume from."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired(str(obj.get("message") or "resource version expired"))
            raise ClusterError(f"{self._plural} watch error: {obj.get('message') or obj}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind != "BOOKMARK":
            self._event(str(kind), obj)
        return rv

    def _run(self) -> None:
        backoff = self.backoff_initial
        first = True
        while not self._stop.is_set():
            try:
                if not first:
                    self.resyncs += 1
                first = False
                snapshot = self.cluster.list_snapshot(self.api_version, self.kind)
                self._listed(snapshot.items)
                rv = snapshot.resource_version
                self._ready.set()
                backoff = self.backoff_initial
                while not self._stop.is_set():
                    rv = self._watch_once(rv) or rv
            except _Expired as exc:
                self.last_error = f"watch expired: {exc}"
                log.info("%s watch expired; listing again", self._plural)
            except Exception as exc:  # noqa: BLE001 - any failure means: back off, list again
                if self._stop.is_set():
                    return
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s watch failed (%s); retrying in %.1fs", self._plural, self.last_error, backoff)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.backoff_max)

    def _watch_once(self, rv: str) -> str:
        stream = self.cluster.watch(self.api_version, self.kind, rv, self.watch_timeout)
        with self._stream_lock:
            self._stream = stream
            if self._stop.is_set():  # stop() ran before the stream existed: nothing else will cut it
                stream.close()
        try:
            with stream:
                for event in stream:
                    if self._stop.is_set():
                        break
                    rv = self._apply(event) or rv
        finally:
            with self._stream_lock:
                self._stream = None
        return rv


class NodeWatcher(ListWatch):
    """Keeps ``pool`` equal to the cluster's nodes: list, then watch; on any error list again.

    ``pool`` is swapped whole, so readers on other threads or the event loop never see
    a half-built one.  Until the first list succeeds ``ready`` is False and ``pool`` is
    empty; the webhook decides what that means (it fails open).
    """

    kind = "Node"
    thread_name = "canrun-node-watch"

    def __init__(self, cluster: ListWatchSource, *, on_change: Callable[[NodePool], None] | None = None,
                 watch_timeout: int = 300, backoff_initial: float = 0.5, backoff_max: float = 30.0) -> None:
        super().__init__(cluster, watch_timeout=watch_timeout, backoff_initial=backoff_initial,
                         backoff_max=backoff_max)
        self.on_change = on_change
        self._nodes: dict[str, NodeInfo] = {}
        self._pool = NodePool.from_nodes([])
        #: Bumped on every change of the pool (tests and metrics watch it).
        self.generation = 0

    @property
    def pool(self) -> NodePool:
        return self._pool

    @property
    def nodes(self) -> list[NodeInfo]:
        return sorted(self._nodes.values(), key=lambda n: n.name)

    def _publish(self) -> None:
        self._pool = NodePool.from_nodes(self.nodes)
        self.generation += 1
        if self.on_change is not None:
            try:
                self.on_change(self._pool)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the watch
                log.exception("node pool listener failed")

    def _event(self, kind: str, obj: Mapping[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if kind == "DELETED":
            changed = self._nodes.pop(name, None) is not None
        else:
            info = node_info(obj)
            old = self._nodes.get(name)
            if info is None:
                changed = self._nodes.pop(name, None) is not None
            else:
                self._nodes[name] = info
                changed = old != info
        if changed:
            self._publish()

    def _listed(self, items: list[dict[str, Any]]) -> None:
        self._nodes = {n.name: n for n in (node_info(o) for o in items) if n is not None}
        self._publish()


class PodWatcher(ListWatch):
    """Hands every pod in the cluster to ``on_pods``: all of them at each (re)list, then each one added.

    The webhook's warm-up uses it to index the images of running pods at start-up and
    as pods appear (including pods in namespaces the webhook never sees, like
    kube-system).  Only additions matter: a deleted pod's images stay cached, and
    a pod's images cannot change after creation except through
    ``ephemeralcontainers``, which are rare and judged at admission anyway.
    The callback runs on the watch thread and must not block.
    """

    kind = "Pod"
    thread_name = "canrun-pod-watch"

    def __init__(self, cluster: ListWatchSource, on_pods: Callable[[list[dict[str, Any]]], None], *,
                 watch_timeout: int = 300, backoff_initial: float = 0.5, backoff_max: float = 30.0) -> None:
        super().__init__(cluster, watch_timeout=watch_timeout, backoff_initial=backoff_initial,
                         backoff_max=backoff_max)
        self.on_pods = on_pods

    def _hand_over(self, pods: list[dict[str, Any]]) -> None:
        try:
            self.on_pods(pods)
        except Exception:  # noqa: BLE001 - a listener's bug must not stop the watch
            log.exception("pod listener failed")

    def _listed(self, items: list[dict[str, Any]]) -> None:
        self._hand_over(items)

    def _event(self, kind: str, obj: Mapping[str, Any]) -> None:
        if kind == "ADDED":
            self._hand_over([{"apiVersion": "v1", "kind": "Pod", **obj}])
