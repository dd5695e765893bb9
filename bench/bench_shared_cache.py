"""Shared-cache benchmark: two ``canrun serve`` replicas and one Redis; the second answers what the first read.

Target (issue "Registry reach and speed", section 3): the second replica answers an image the first has
read with no layer bytes fetched, in ≤ 2× its warm time.

Measured, on loopback, with real processes (``python -m canrun serve``, Debian's ``redis-server``, Debian's
``docker-registry`` behind a byte-counting proxy, ``tests/support/rangeproxy.py``), the large benchmark
image (``bench/_bigimage.py``):

* **A cold**: replica A (its own empty cache directory, ``--cache-url`` to the Redis) admits a pod of the
  image: every layer is streamed and indexed (the yardstick of what sharing saves);
* **A warm** (the yardstick of the target): a fresh replica started on A's cache directory, without Redis,
  admits the image: it reads the tag, manifest, config and merged view from its local disk, which is what
  a warm replica does after its in-memory caches;
* **B shared**: replica B (another empty cache directory, the same Redis) admits the image: tag, manifest,
  config and view come from Redis, and the layer bytes the proxy counted during it must be 0.

Each admission uses a pod spec of its own (no verdict cache hit) and is timed from a kept-alive HTTPS
connection; each figure is the median of ``ROUNDS`` fresh replicas.  Run:
``.venv/bin/python bench/bench_shared_cache.py``; a few minutes, most of it pushing and reading the image
cold once.
"""

from __future__ import annotations

import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_webhook import _die_with_parent, _review, _stop, _unverified, _wait_ready  # noqa: E402

ROUNDS = int(os.environ.get("CANRUN_BENCH_ROUNDS", "3"))
RATIO_TARGET = 2.0


def _serve(work: Path, name: str, port: int, cert: Path, key: Path, registry: str, cache_dir: Path,
           cache_url: str | None) -> tuple[subprocess.Popen[bytes], Path]:
    log = work / f"{name}.log"
    args = [sys.executable, "-m", "canrun", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--tls-cert", str(cert), "--tls-key", str(key), "--platform", "linux/amd64", "--mode", "warn",
            "--insecure-registry", registry, "--log-level", "warning", "--no-events", "--deadline", "30",
            "--cache-dir", str(cache_dir)]
    if cache_url:
        args += ["--cache-url", cache_url]
    env = {**os.environ, "KUBECONFIG": str(work / "no-kubeconfig"), "PYTHONDONTWRITEBYTECODE": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=Path(__file__).resolve().parent.parent, preexec_fn=_die_with_parent)
    return proc, log


def _admit(url: str, ca: Path, image: str) -> tuple[float, dict[str, Any]]:
    import httpx

    body = _review([(f"c{uuid.uuid4().hex[:8]}", image)], kind="Pod", uid=str(uuid.uuid4()))
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(ca)), timeout=60) as client:
        client.get("/readyz")
        start = time.perf_counter()
        answer = client.post("/validate", json=body).json()["response"]
        return time.perf_counter() - start, answer


def _shared_counters(url: str, ca: Path) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{url}/metrics", verify=ssl.create_default_context(cafile=str(ca)), timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("canrun_shared_cache_total{"):
            out[line.split('event="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


def main() -> int:
    from bench._bigimage import build, push
    from tests.support.rangeproxy import RangeProxy
    from tests.support.redis import start_redis
    from tests.support.registry import free_port, start_registry
    from tests.webhook.tlsutil import issue, make_ca

    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f}"
          + ("  (busy: figures will be noisy; rerun when load < 1.5)" if load > 1.5 else ""), flush=True)
    work = Path(tempfile.mkdtemp(prefix="canrun-bench-shared-"))
    registry = start_registry(work / "registry")
    redis = start_redis(work / "redis")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        big = build()
        t0 = time.perf_counter()
        push(big, registry.host)
        print(f"large image: {big.compressed_bytes / 1e6:.0f} MB in {len(big.layer_digests)} gzip layers, "
              f"{big.files} files; pushed in {time.perf_counter() - t0:.1f} s", flush=True)
        ca = make_ca()
        ca_file = ca.write(work / "ca.pem")
        cert, key = work / "tls.crt", work / "tls.key"
        issue(ca, cert, key)
        with RangeProxy(registry.host) as proxy:
            image = f"{proxy.host}/bench/big:latest"

            def replica(name: str, cache_dir: Path, cache_url: str | None) -> str:
                port = free_port()
                proc, log = _serve(work, name, port, cert, key, proxy.host, cache_dir, cache_url)
                procs.append(proc)
                url = f"https://127.0.0.1:{port}"
                _wait_ready(url, ca_file, proc, log)
                return url

            def stop_all() -> None:
                while procs:
                    _stop(procs.pop())

            a_dir = work / "a-cache"
            a_url = replica("a", a_dir, redis.url)
            proxy.counters.reset()
            cold, answer = _admit(a_url, ca_file, image)
            cold_bytes = proxy.counters.blob_bytes
            if _unverified(answer):
                raise RuntimeError(f"replica A did not verify the image within its deadline: {answer}")
            stop_all()  # drains A's queued Redis writes (bounded) on the way out

            warm: list[float] = []
            shared: list[float] = []
            shared_bytes: list[int] = []
            counters: dict[str, float] = {}
            for i in range(ROUNDS):
                url = replica(f"warm{i}", a_dir, None)
                seconds, answer = _admit(url, ca_file, image)
                assert not _unverified(answer), answer
                warm.append(seconds)
                stop_all()

                url = replica(f"b{i}", work / f"b{i}-cache", redis.url)
                proxy.counters.reset()
                seconds, answer = _admit(url, ca_file, image)
                assert not _unverified(answer), answer
                shared.append(seconds)
                shared_bytes.append(proxy.counters.blob_bytes)
                counters = _shared_counters(url, ca_file)
                stop_all()
    finally:
        while procs:
            _stop(procs.pop())
        redis.stop()
        registry.stop()

    warm_s, shared_s = statistics.median(warm), statistics.median(shared)
    ratio = shared_s / warm_s
    print(f"\nA cold (streams and indexes every layer): {cold * 1000:8.1f} ms, {cold_bytes / 1e6:.0f} MB of layers")
    print(f"A warm (its own disk cache, no Redis):    {warm_s * 1000:8.1f} ms  (rounds: "
          + ", ".join(f"{s * 1000:.1f}" for s in warm) + ")")
    print(f"B shared (empty disk, A's Redis):         {shared_s * 1000:8.1f} ms  (rounds: "
          + ", ".join(f"{s * 1000:.1f}" for s in shared) + f"); layer bytes fetched {shared_bytes}")
    print(f"B's shared-cache counters (last round): {counters}")
    ok = ratio <= RATIO_TARGET and not any(shared_bytes)
    print(f"B / A warm = {ratio:.2f} (target ≤ {RATIO_TARGET:g}, no layer bytes): {'PASS' if ok else 'FAIL'}; "
          f"load average now {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
