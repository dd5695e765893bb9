"""The shared cache's health on /metrics: a Redis that refuses is counted, and the breaker shows it."""

from __future__ import annotations

from pathlib import Path

from canrun.image.cache import Cache
from canrun.image.redis_store import RedisStore, parse_url
from canrun.webhook.metrics import Metrics
from tests.support.redis import RunningRedis, start_redis


def _samples(metrics: Metrics) -> dict[str, float]:
    out = {}
    for line in metrics.exposition().decode().splitlines():
        if line.startswith("canrun_shared_cache"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_hits_misses_and_a_refusing_redis_are_counted(tmp_path: Path, dead_port: int) -> None:
    server: RunningRedis = start_redis(tmp_path / "redis")
    try:
        store = RedisStore(parse_url(server.url))
        cache = Cache(tmp_path / "one", shared=store)
        metrics = Metrics()
        metrics.watch_engine(lambda: {}, lambda: {}, lambda: cache.shared)
        data = b'{"a": 1}'
        import hashlib

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        cache.put_blob(digest, data)
        assert store.flush()
        assert Cache(tmp_path / "two", shared=store).get_blob(digest) == data
        assert Cache(tmp_path / "three", shared=store).get_blob("sha256:" + "1" * 64) is None
        seen = _samples(metrics)
        assert seen['canrun_shared_cache_total{event="hits"}'] == 1, seen
        assert seen['canrun_shared_cache_total{event="misses"}'] == 1, seen
        assert seen['canrun_shared_cache_total{event="writes"}'] == 1, seen
        assert seen["canrun_shared_cache_breaker_open"] == 0, seen
        store.close()
    finally:
        server.stop()

    down = Cache(tmp_path / "four", shared=RedisStore(parse_url(f"redis://127.0.0.1:{dead_port}/0")))
    metrics = Metrics()
    metrics.watch_engine(lambda: {}, lambda: {}, lambda: down.shared)
    for i in range(5):
        assert down.get_blob("sha256:" + f"{i:064x}") is None
    seen = _samples(metrics)
    assert seen['canrun_shared_cache_total{event="errors"}'] == 3, seen
    assert seen['canrun_shared_cache_total{event="skipped"}'] == 2, seen
    assert seen["canrun_shared_cache_breaker_open"] == 1, seen
    down.close()


def test_no_shared_cache_no_metric() -> None:
    metrics = Metrics()
    metrics.watch_engine(lambda: {}, lambda: {}, lambda: None)
    assert _samples(metrics) == {}
