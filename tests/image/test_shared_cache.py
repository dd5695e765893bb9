"""The cache shared by replicas: two engines with their own cache directories and one real ``redis-server``.

The registry sits behind a counting proxy, so "the second replica fetched no layer" is read on the wire.
Redis is Debian's ``redis-server`` on loopback (``tests/support/redis.py``), stopped and damaged by the tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from canrun.config import CacheSettings, RegistryAccess, Settings, compose, open_engine
from canrun.errors import CanrunError
from canrun.image.cache import Cache
from canrun.image.redis_store import KEY_PREFIX, RedisStore, parse_url
from canrun.kube.scheduling import NodePool
from canrun.kube.workloads import workload_from_object
from canrun.platform import Platform
from tests.audit.proxy import CountingProxy
from tests.support.images import Catalogue
from tests.support.redis import RunningRedis, start_redis

pytestmark = pytest.mark.registry

AMD64 = NodePool.from_platforms([Platform.parse("linux/amd64")])
PASSWORD = "s3cret-cache-pass"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RunningRedis]:
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(local_registry: Any) -> Iterator[CountingProxy]:
    counting = CountingProxy(local_registry.host)
    try:
        yield counting
    finally:
        counting.close()


def _pod(image: str, command: list[str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": image}
    if command:
        container["command"] = command
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"containers": [container]}}


def _via(catalogue: Catalogue, proxy: CountingProxy, local_registry: Any, name: str) -> str:
    return catalogue.ref(name).replace(local_registry.host, proxy.host, 1)


def _settings(proxy: CountingProxy, cache_dir: Path, url: str | None) -> Settings:
    return Settings(registry=RegistryAccess(insecure=(proxy.host,), timeout=5),
                    cache=CacheSettings(dir=cache_dir, url=url))


async def _verdicts(settings: Settings, images: list[tuple[str, list[str] | None]]) -> list[tuple[str, ...]]:
    async with open_engine(settings) as engine:
        out = []
        for image, command in images:
            workload = workload_from_object(_pod(image, command))
            assert workload is not None
            report = await engine.validator.check([workload], AMD64)
            out.append(tuple(sorted(f.rule for f in report.findings)))
        return out


def _blob_gets(proxy: CountingProxy) -> int:
    return sum(n for path, n in proxy.content_fetches().items() if "/blobs/" in path)


def test_second_replica_reads_what_the_first_indexed_without_fetching_a_layer(
        tmp_path: Path, catalogue: Catalogue, local_registry: Any, proxy: CountingProxy,
        redis_server: RunningRedis) -> None:
    images = [(_via(catalogue, proxy, local_registry, "mode644"), ["/app/server"]),
              (_via(catalogue, proxy, local_registry, "busybox"), None)]
    first = asyncio.run(_verdicts(_settings(proxy, tmp_path / "one", redis_server.url), images))
    assert first[0] == ("command-not-executable",), first
    assert first[1] == (), first
    assert _blob_gets(proxy) > 0
    keys = {k.decode() for k in redis.Redis.from_url(redis_server.url).keys(KEY_PREFIX + "*")}
    assert any(k.startswith(KEY_PREFIX + "views/") for k in keys), keys
    assert any(k.startswith(KEY_PREFIX + "layers/") for k in keys), keys
    assert any(k.startswith(KEY_PREFIX + "tags/") for k in keys), keys
    ttls = {k: redis.Redis.from_url(redis_server.url).ttl(k) for k in keys}
    assert all(t > 0 for t in ttls.values()), ttls  # every entry expires
    assert all(t <= 300 for k, t in ttls.items() if "tags/" in k), ttls

    proxy.reset()
    second = asyncio.run(_verdicts(_settings(proxy, tmp_path / "two", redis_server.url), images))
    assert second == first
    asked = {path: n for path, n in proxy.counts().items() if path != "/v2/"}
    assert asked == {}, asked  # not a layer, not a manifest, not even the tag's HEAD: its resolution is shared
    # the Redis hits were written to the second replica's own disk: it answers with Redis gone
    redis_server.stop()
    third = asyncio.run(_verdicts(_settings(proxy, tmp_path / "two", redis_server.url), images))
    assert third == first
    assert proxy.content_fetches() == {}


def test_without_redis_the_local_cache_and_the_registry_answer_within_a_bound(
        tmp_path: Path, catalogue: Catalogue, local_registry: Any, proxy: CountingProxy,
        redis_server: RunningRedis) -> None:
    images = [(_via(catalogue, proxy, local_registry, "mode644"), ["/app/server"])]
    expected = [("command-not-executable",)]
    redis_server.stop()  # a Redis that went away (the port refuses)
    started = time.monotonic()
    assert asyncio.run(_verdicts(_settings(proxy, tmp_path / "one", redis_server.url), images)) == expected
    assert time.monotonic() - started < 10
    assert _blob_gets(proxy) > 0

    # a Redis that does not answer at all (accepts, then silence): each call costs at most the short timeout,
    # then the breaker stops asking
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        store = RedisStore(parse_url(url))
        cache = Cache(tmp_path / "local", shared=store)
        started = time.monotonic()
        for i in range(20):
            assert cache.get_blob("sha256:" + f"{i:064x}") is None
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, elapsed  # three timeouts of 0.1 s, then the breaker is open
        assert store.stats["timeouts"] >= 1 and store.stats["skipped"] >= 10, store.stats
        cache.close()

        proxy.reset()
        started = time.monotonic()
        assert asyncio.run(_verdicts(_settings(proxy, tmp_path / "two", url), images)) == expected
        assert time.monotonic() - started < 10
        assert _blob_gets(proxy) > 0


def test_redis_stopped_mid_run_checks_still_succeed(tmp_path: Path, catalogue: Catalogue, local_registry: Any,
                                                    proxy: CountingProxy, redis_server: RunningRedis) -> None:
    images = [(_via(catalogue, proxy, local_registry, "mode644"), ["/app/server"]),
              (_via(catalogue, proxy, local_registry, "busybox"), None),
              (_via(catalogue, proxy, local_registry, "missing-user"), None)]

    async def run() -> list[tuple[str, ...]]:
        async with open_engine(_settings(proxy, tmp_path / "one", redis_server.url)) as engine:
            out = []
            for i, (image, command) in enumerate(images):
                if i == 1:
                    redis_server.stop()
                workload = workload_from_object(_pod(image, command))
                assert workload is not None
                started = time.monotonic()
                report = await engine.validator.check([workload], AMD64)
                assert time.monotonic() - started < 10
                out.append(tuple(sorted(f.rule for f in report.findings)))
            shared = engine.store.cache.shared
            assert shared.stats["errors"] + shared.stats["timeouts"] + shared.stats["dropped"] > 0, shared.stats
            return out

    got = asyncio.run(run())
    fresh = asyncio.run(_verdicts(_settings(proxy, tmp_path / "fresh", None), images))
    assert got == fresh


def test_a_damaged_entry_in_redis_is_a_miss_not_a_wrong_verdict(
        tmp_path: Path, catalogue: Catalogue, local_registry: Any, proxy: CountingProxy,
        redis_server: RunningRedis) -> None:
    images = [(_via(catalogue, proxy, local_registry, "mode644"), ["/app/server"])]
    first = asyncio.run(_verdicts(_settings(proxy, tmp_path / "one", redis_server.url), images))
    assert first == [("command-not-executable",)]
    client = redis.Redis.from_url(redis_server.url)
    keys = client.keys(KEY_PREFIX + "*")
    assert keys
    for key in keys:
        value = client.get(key)
        assert value is not None
        damaged = bytearray(value)
        for i in range(len(damaged) // 2, min(len(damaged), len(damaged) // 2 + 8)):
            damaged[i] ^= 0xFF
        client.set(key, bytes(damaged), ex=600)

    proxy.reset()
    second = asyncio.run(_verdicts(_settings(proxy, tmp_path / "two", redis_server.url), images))
    assert second == first
    assert _blob_gets(proxy) > 0  # every record was refused, so the registry was read again
    # and the damaged records were replaced by good ones: a third replica reads them without the registry
    proxy.reset()
    assert asyncio.run(_verdicts(_settings(proxy, tmp_path / "three", redis_server.url), images)) == first
    assert _blob_gets(proxy) == 0


def test_password_is_used_and_never_shown(tmp_path: Path, catalogue: Catalogue, local_registry: Any,
                                          proxy: CountingProxy, caplog: pytest.LogCaptureFixture) -> None:
    server = start_redis(tmp_path / "redis", password=PASSWORD)
    try:
        images = [(_via(catalogue, proxy, local_registry, "mode644"), ["/app/server"])]
        secret = tmp_path / "password"
        secret.write_text(PASSWORD + "\n")
        caplog.set_level(logging.DEBUG)
        settings = compose("serve", {"cache.url": server.url, "cache.password_file": secret,
                                     "cache.dir": tmp_path / "one", "registry.insecure": [proxy.host]}, environ={})
        assert asyncio.run(_verdicts(settings, images)) == [("command-not-executable",)]
        assert redis.Redis(port=server.port, password=PASSWORD).keys(KEY_PREFIX + "views/*")

        # a wrong password: a miss (counted), never an error carrying the password
        wrong_url = f"redis://:{PASSWORD}-wrong@127.0.0.1:{server.port}/0"
        store = RedisStore(parse_url(wrong_url))
        assert store.read("blobs/sha256/" + "0" * 64) is None
        assert store.stats["errors"] == 1, store.stats
        assert PASSWORD not in repr(store) and PASSWORD not in str(store.url)
        store.close()

        with pytest.raises(CanrunError) as bad:
            compose("serve", {"cache.url": f"redis://:{PASSWORD}@127.0.0.1:{server.port}/x"}, environ={})
        assert PASSWORD not in str(bad.value), bad.value
        env = compose("serve", {"cache.dir": tmp_path / "two", "registry.insecure": [proxy.host]},
                      environ={"CANRUN_CACHE_URL": server.url, "CANRUN_CACHE_PASSWORD": PASSWORD})
        proxy.reset()
        assert asyncio.run(_verdicts(env, images)) == [("command-not-executable",)]
        assert _blob_gets(proxy) == 0
        assert PASSWORD not in caplog.text
    finally:
        server.stop()


def test_rediss_verifies_the_server_with_the_given_ca(tmp_path: Path) -> None:
    from tests.support.tls import make_ca

    ca = make_ca(tmp_path / "ca")
    leaf = ca.issue(tmp_path / "ca", "redis")
    server = start_redis(tmp_path / "redis", tls=(leaf.cert, leaf.key))
    try:
        import hashlib

        data = b"config bytes"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        trusted = compose("check", {"cache.url": server.url, "cache.ca_file": ca.cert_path,
                                    "cache.dir": tmp_path / "one"}, environ={})
        store = trusted.cache.shared_store()
        Cache(tmp_path / "one", shared=store).put_blob(digest, data)
        assert store.flush() and store.stats["writes"] == 1, store.stats
        assert Cache(tmp_path / "two", shared=store).get_blob(digest) == data
        store.close()

        # without the CA, the server's certificate is refused: a miss and an error, never a plain-text fallback
        untrusted = compose("check", {"cache.url": server.url, "cache.dir": tmp_path / "three"}, environ={})
        other = untrusted.cache.shared_store()
        assert Cache(tmp_path / "three", shared=other).get_blob(digest) is None
        assert other.stats["errors"] == 1 and other.stats["hits"] == 0, other.stats
        other.close()
    finally:
        server.stop()


def test_cache_url_in_the_config_file_and_its_mistakes(tmp_path: Path) -> None:
    from canrun.config_file import load_config

    good = tmp_path / "good.yaml"
    good.write_text("cache_url: redis://cache.internal:6380/2\n")
    settings = compose("check", {}, load_config(good), environ={"CANRUN_CACHE_URL": "redis://from-env:6379/0"})
    assert settings.cache.url == "redis://cache.internal:6380/2"  # the file over the environment
    assert settings.was_given("cache.url")
    flagged = compose("check", {"cache.url": "redis://flag:6379/0"}, load_config(good), environ={})
    assert flagged.cache.url == "redis://flag:6379/0"  # the flag over the file
    assert compose("check", {}, environ={"CANRUN_CACHE_URL": "rediss://env:6379/1"}).cache.url == \
        "rediss://env:6379/1"

    with_password = tmp_path / "secret.yaml"
    with_password.write_text(f"cache_url: redis://:{PASSWORD}@cache:6379/0\n")
    with pytest.raises(CanrunError) as refused:
        load_config(with_password)
    assert "cache_url" in str(refused.value) and PASSWORD not in str(refused.value), refused.value

    for text, needle in (("http://cache:6379/0", "redis://"), ("redis://cache:6379/zero", "database"),
                         ("redis://cache:99999/0", "redis://")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"cache_url: {text}\n")
        with pytest.raises(CanrunError) as error:
            load_config(bad)
        assert str(error.value).startswith(f"{bad}: cache_url: ") and needle in str(error.value), error.value


def test_a_bad_cache_url_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    manifest = tmp_path / "pod.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}]}\n")
    proc = subprocess.run([sys.executable, "-m", "canrun", "check", "-f", str(manifest), "--cache-url",
                           f"memcached://:{PASSWORD}@cache:11211"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 2, proc
    assert len(proc.stderr.strip().splitlines()) == 1 and "--cache-url" in proc.stderr, proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout


def test_values_are_bounded_and_expire(tmp_path: Path, redis_server: RunningRedis) -> None:
    import hashlib

    store = RedisStore(parse_url(redis_server.url), max_value_bytes=1000, content_ttl=3600)
    cache = Cache(tmp_path / "one", shared=store)
    small, large = b"s" * 500, b"l" * 2000
    small_digest = "sha256:" + hashlib.sha256(small).hexdigest()
    large_digest = "sha256:" + hashlib.sha256(large).hexdigest()
    cache.put_blob(small_digest, small)
    cache.put_blob(large_digest, large)
    cache.put_tag("127.0.0.1:5000/app:v1", small_digest, "application/vnd.oci.image.manifest.v1+json")
    assert store.flush()
    assert store.stats["refused"] == 1 and store.stats["writes"] == 2, store.stats
    client = redis.Redis.from_url(redis_server.url)
    assert client.exists(KEY_PREFIX + "blobs/sha256/" + large_digest[7:]) == 0  # the large one stayed local
    assert 3500 < client.ttl(KEY_PREFIX + "blobs/sha256/" + small_digest[7:]) <= 3600
    [tag] = client.keys(KEY_PREFIX + "tags/*")
    assert 0 < client.ttl(tag) <= 300

    # a value over the bound that another writer put there is a miss
    client.set(KEY_PREFIX + "blobs/sha256/" + large_digest[7:], large, ex=60)
    assert Cache(tmp_path / "two", shared=store).get_blob(large_digest) is None
    assert Cache(tmp_path / "three", shared=store).get_blob(small_digest) == small
    store.close()
