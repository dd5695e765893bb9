"""NodeWatcher keeps the node pool true through adds, deletes, cut streams, 410s and API restarts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from canrun.kube.client import Cluster, NodeWatcher
from canrun.platform import Platform
from tests.cluster.conftest import eventually
from tests.cluster.test_client import node
from tests.support.kubeapi import KubeAPIStandIn


@pytest.fixture
def watcher(kubeapi: KubeAPIStandIn, cluster: Cluster) -> Iterator[NodeWatcher]:
    kubeapi.add(node("amd-1", "amd64"))
    w = NodeWatcher(cluster, watch_timeout=30, backoff_initial=0.05, backoff_max=0.2)
    yield w.start()
    w.stop()


def names(w: NodeWatcher) -> list[str]:
    return [n.name for n in w.nodes]


def test_first_list_makes_it_ready(watcher: NodeWatcher) -> None:
    assert watcher.wait_ready(10)
    assert names(watcher) == ["amd-1"]
    assert [n.platform for n in watcher.nodes] == [Platform("linux", "amd64")]


def test_nodes_added_and_removed_during_the_watch(kubeapi: KubeAPIStandIn, watcher: NodeWatcher) -> None:
    assert watcher.wait_ready(10) and kubeapi.wait_for_watches(1)
    pool_before = watcher.pool
    kubeapi.add(node("arm-1", "arm64"))
    assert eventually(lambda: names(watcher) == ["amd-1", "arm-1"])
    assert watcher.pool is not pool_before  # swapped whole, never mutated under a reader
    kubeapi.remove("Node", "amd-1")
    assert eventually(lambda: names(watcher) == ["arm-1"])
    assert watcher.resyncs == 0  # all of that came through one watch


def test_relabelled_node_changes_platform(kubeapi: KubeAPIStandIn, watcher: NodeWatcher) -> None:
    assert watcher.wait_ready(10) and kubeapi.wait_for_watches(1)
    kubeapi.add(node("amd-1", "arm64"))
    assert eventually(lambda: [n.platform for n in watcher.nodes] == [Platform("linux", "arm64")])


def test_cut_stream_resyncs(kubeapi: KubeAPIStandIn, watcher: NodeWatcher) -> None:
    assert watcher.wait_ready(10) and kubeapi.wait_for_watches(1)
    kubeapi.drop_watches()
    assert eventually(lambda: watcher.resyncs >= 1)
    kubeapi.add(node("late", "arm64"))
    assert eventually(lambda: "late" in names(watcher))


def test_expired_resource_version_relists(kubeapi: KubeAPIStandIn, watcher: NodeWatcher) -> None:
    assert watcher.wait_ready(10) and kubeapi.wait_for_watches(1)
    kubeapi.add(node("missed", "arm64"))  # lands in history, then history is gone
    kubeapi.compact()
    kubeapi.drop_watches()
    assert eventually(lambda: "missed" in names(watcher))
    assert watcher.resyncs >= 1


def test_api_server_restart(kubeapi: KubeAPIStandIn, watcher: NodeWatcher) -> None:
    assert watcher.wait_ready(10) and kubeapi.wait_for_watches(1)
    kubeapi.stop()
    assert eventually(lambda: watcher.last_error is not None)
    kubeapi.add(node("while-down", "arm64"))
    kubeapi.start()
    assert eventually(lambda: "while-down" in names(watcher))
    assert watcher.ready


def test_stop_ends_the_thread(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    w = NodeWatcher(cluster, watch_timeout=300).start()
    assert w.wait_ready(10) and kubeapi.wait_for_watches(1)
    thread = w._thread
    w.stop(timeout=10)
    assert thread is not None and not thread.is_alive()


def test_listener_sees_each_new_pool(kubeapi: KubeAPIStandIn, cluster: Cluster) -> None:
    seen: list[list[str]] = []
    w = NodeWatcher(cluster, on_change=lambda pool: seen.append([n.name for n in pool.nodes])).start()
    try:
        assert w.wait_ready(10) and kubeapi.wait_for_watches(1)
        kubeapi.add(node("n1", "amd64"))
        assert eventually(lambda: ["n1"] in seen)
        assert seen[0] == []
    finally:
        w.stop()
