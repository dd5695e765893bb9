"""Soak bench: the webhook under a steady 200 requests/s for ten minutes, watching memory and tail latency.

Targets (issue 9, "Make it stay fixed"):

* RSS flat after warm-up: the least-squares slope of the server's RSS over the samples after warm-up is
  at most ``SLOPE_TARGET`` MB/min (the bounded caches fill during warm-up; a leak keeps climbing);
* 0 errors: every request answered 200 with the verdict its review provokes, none timed out;
* p99 within its budget in every minute: warm admissions (verdict cached) ≤ 10 ms, the webhook's
  warm-latency target; cold and failing ones ≤ the 5 s admission deadline (``canrun serve --deadline``).

The mix, per second at the default rate: warm admissions (the same two images as ``bench_webhook.py``,
one finding each time), cold ones (a tag never asked before, pushed for this run, so a resolve and a new
verdict each time) and failing ones (a tag that does not exist: a 404 the webhook must turn into a finding,
not an error).  The server is ``python -m canrun serve`` over TLS on loopback, exactly as a user runs it;
the open-loop load client (latency counted from each request's scheduled time) is its own process, reused
from ``bench_webhook.py``; RSS is read from ``/proc/<pid>/status`` once a second.

Run: ``.venv/bin/python bench/bench_soak.py [--seconds 600] [--rate 200] [--warmup 120]``, or
``bench/run.py bench_soak -- --seconds 60``; ``CANRUN_BENCH_SCALE=0.1`` (as for the other benches) makes it
one minute.  It takes the full ``--seconds`` plus about half a minute of setup, so
``make test`` never runs it.  Run it on a quiet machine (it prints the load average).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_webhook import _Conn, _die_with_parent, _pct, _review, _stop, _wait_ready  # noqa: E402

WARM_P99_MS = 10.0
SLOW_P99_MS = 5000.0  # cold and failing admissions: the admission deadline
SLOPE_TARGET = 1.0  # MB/min after warm-up
COLD_SHARE = 0.02
FAILING_SHARE = 0.02
REQUEST_TIMEOUT = 15.0
MAX_CONNECTIONS = 32
PRIME_SECONDS = 120.0  # how long the warm images may take to get their first verdict before the soak starts
CLASSES = ("warm", "cold", "failing")


# -- the load client (its own process) -------------------------------------------------------------

class _Pool:
    """At most ``MAX_CONNECTIONS`` keep-alive HTTPS connections, opened on demand, as an API server keeps them.

    A request finding none idle and the pool full waits for one: that wait counts in its latency (measured
    from its scheduled time), instead of a stalled server being buried under new TLS handshakes.
    """

    def __init__(self, url: str, ctx: ssl.SSLContext) -> None:
        self.host, port = url.removeprefix("https://").rsplit(":", 1)
        self.port, self.ctx = int(port), ctx
        self.idle: asyncio.Queue[_Conn] = asyncio.Queue()
        self.live = 0
        self.opened = 0

    async def post(self, body: bytes) -> bytes:
        if self.idle.empty() and self.live < MAX_CONNECTIONS:
            self.live += 1
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ctx,
                                                               server_hostname=self.host)
            except BaseException:
                self.live -= 1
                raise
            conn = _Conn(reader, writer)
            self.opened += 1
        else:
            conn = await self.idle.get()
        try:
            answer = await asyncio.wait_for(conn.post(body), REQUEST_TIMEOUT)
        except BaseException:
            self.live -= 1  # a connection in an unknown state is not reused
            conn.writer.close()
            raise
        self.idle.put_nowait(conn)
        return answer


async def _soak(plan: dict[str, Any]) -> dict[str, Any]:
    pool = _Pool(plan["url"], ssl.create_default_context(cafile=plan["ca"]))
    rate, seconds = plan["rate"], plan["seconds"]
    templates = {k: tuple(v.split("__UID__")) for k, v in plan["templates"].items()}
    expects = {k: v.encode() for k, v in plan["expect"].items()}
    cold_tags = list(plan["cold_tags"])
    # prime: the warm review must carry its verdict (not "not verified") before the clock starts
    head, tail = templates["warm"]
    primed_at = time.perf_counter() + PRIME_SECONDS
    while expects["warm"] not in await pool.post(f"{head}{uuid.uuid4().hex}{tail}".encode()):
        if time.perf_counter() > primed_at:
            raise RuntimeError(f"the warm images got no verdict within {PRIME_SECONDS:g} s")
        await asyncio.sleep(0.2)
    # (minute, class) -> latencies; errors per minute with the first few reasons
    latencies: dict[tuple[int, str], list[float]] = {}
    errors: dict[int, int] = {}
    reasons: list[str] = []
    counts = {c: 0 for c in CLASSES}

    def pick(i: int) -> str:
        # a fixed interleaving (no randomness): every 1/share-th request is cold or failing
        if COLD_SHARE and i % round(1 / COLD_SHARE) == 1 and cold_tags:
            return "cold"
        if FAILING_SHARE and i % round(1 / FAILING_SHARE) == round(0.5 / FAILING_SHARE):
            return "failing"
        return "warm"

    async def fire(i: int, due: float, kind: str, body: bytes) -> None:
        minute = int((due - start) // 60)
        try:
            answer = await pool.post(body)
            if expects[kind] not in answer:
                raise RuntimeError(f"{kind}: expected {expects[kind]!r} in {answer[:200]!r}")
        except Exception as exc:  # noqa: BLE001 - any failure is the error this bench counts
            errors[minute] = errors.get(minute, 0) + 1
            if len(reasons) < 5:
                reasons.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            latencies.setdefault((minute, kind), []).append(REQUEST_TIMEOUT)
            return
        latencies.setdefault((minute, kind), []).append(time.perf_counter() - due)

    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        kind = pick(i)
        counts[kind] += 1
        head, tail = templates[kind]
        text = f"{head}{uuid.uuid4().hex}{tail}"
        if kind == "cold":
            text = text.replace("__COLD__", cold_tags.pop())
        elif kind == "failing":
            text = text.replace("__MISSING__", f"missing-{i}")
        task = asyncio.create_task(fire(i, due, kind, text.encode()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    minutes = []
    for minute in range(math.ceil(seconds / 60)):
        row: dict[str, Any] = {"minute": minute, "errors": errors.get(minute, 0)}
        for kind in CLASSES:
            values = sorted(latencies.get((minute, kind), []))
            row[kind] = {"n": len(values), "p99": _pct(values, 0.99) * 1000 if values else None,
                         "p50": _pct(values, 0.50) * 1000 if values else None}
        minutes.append(row)
    return {"minutes": minutes, "counts": counts, "reasons": reasons, "connections": pool.opened}


def _client_main(plan_json: str) -> None:
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.Runner()
    with runner:
        print(json.dumps(runner.run(_soak(json.loads(plan_json)))))


# -- orchestration ------------------------------------------------------------------------------------

def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class _Sampler(threading.Thread):
    """RSS of one process once a second, with the time of each sample."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stop = pid, threading.Event()
        self.samples: list[tuple[float, float]] = []

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.wait(1.0 - (time.monotonic() - t0) % 1.0):
            rss = _rss_mb(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic() - t0, rss))


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS (MB) against time, in MB per minute."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(r for _, r in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return 60 * sum((t - mx) * (r - my) for t, r in points) / var if var else float("nan")


def _cold_tags(registry_url: str, repo_ref: str, count: int) -> list[str]:
    """Push the image ``repo_ref`` names under ``count`` new tags (a manifest PUT each): never-seen references."""
    import httpx

    host_repo, tag = repo_ref.rsplit(":", 1)
    repo = host_repo.split("/", 1)[1]
    accept = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json"])
    tags = []
    with httpx.Client(base_url=registry_url, timeout=30) as client:
        got = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
        got.raise_for_status()
        body, media_type = got.content, got.headers["content-type"]
        for n in range(count):
            new = f"cold-{n:06d}"
            client.put(f"/v2/{repo}/manifests/{new}", content=body,
                       headers={"Content-Type": media_type}).raise_for_status()
            tags.append(f"{host_repo}:{new}")
    return tags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    scale = float(os.environ.get("CANRUN_BENCH_SCALE", "1"))  # as bench_webhook.py: 0.1 is a one-minute soak
    parser.add_argument("--seconds", type=float, default=600.0 * scale,
                        help="length of the soak (default 600, times CANRUN_BENCH_SCALE)")
    parser.add_argument("--rate", type=float, default=200.0, help="offered requests/s (default 200)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds excluded from the RSS slope (default: a fifth of --seconds, at most 120)")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else min(120.0, args.seconds / 5)

    from tests.support import images
    from tests.support.registry import free_port, start_registry
    from tests.webhook.tlsutil import issue, make_ca

    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f}"
          + ("  (busy: figures will be noisy; rerun when load < 1.5)" if load > 1.5 else ""), flush=True)
    work = Path(tempfile.mkdtemp(prefix="canrun-bench-soak-"))
    registry = start_registry(work / "registry")
    proc: subprocess.Popen[bytes] | None = None
    sampler: _Sampler | None = None
    try:
        recipes = [r for r in images.catalogue_recipes(None) if r.name in ("busybox-amd64", "bash-script")]
        catalogue = images.publish(registry.host, registry.blob_path, recipes=recipes)
        cold_count = math.ceil(args.rate * args.seconds * COLD_SHARE) + 1
        t0 = time.perf_counter()
        cold = _cold_tags(registry.url, catalogue.ref("busybox-amd64"), cold_count)
        print(f"pushed {len(cold)} cold tags in {time.perf_counter() - t0:.1f} s", flush=True)

        ca = make_ca()
        ca_file = ca.write(work / "ca.pem")
        cert, key = work / "tls.crt", work / "tls.key"
        issue(ca, cert, key)
        env = {**os.environ, "KUBECONFIG": str(work / "no-kubeconfig"), "CANRUN_CACHE_DIR": str(work / "cache"),
               "PYTHONDONTWRITEBYTECODE": "1"}
        repo = Path(__file__).resolve().parent.parent
        port = free_port()
        log = work / "canrun.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "canrun", "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--tls-cert", str(cert), "--tls-key", str(key), "--platform", "linux/amd64", "--mode", "warn",
                 "--insecure-registry", registry.host, "--log-level", "warning", "--no-events"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=repo, preexec_fn=_die_with_parent)
        url = f"https://127.0.0.1:{port}"
        _wait_ready(url, ca_file, proc, log)
        sampler = _Sampler(proc.pid)
        sampler.start()

        busybox = catalogue.ref("busybox-amd64")
        missing = busybox.rsplit(":", 1)[0] + ":__MISSING__"
        templates = {
            "warm": json.dumps(_review([("web", busybox), ("entry", catalogue.ref("bash-script"))])),
            "cold": json.dumps(_review([("web", "__COLD__")])),
            "failing": json.dumps(_review([("web", missing)])),
        }
        plan = {"url": url, "ca": str(ca_file), "rate": args.rate, "seconds": args.seconds,
                "templates": templates, "cold_tags": cold,
                # what each answer must carry: warm provokes a finding; a cold tag of busybox is clean (or
                # fails open as "not verified" past the deadline); a missing tag is unresolvable, not an error
                "expect": {"warm": "interpreter-not-found", "cold": '"response"', "failing": "not found"}}
        t_load = time.monotonic()
        out_ = subprocess.run([sys.executable, __file__, "--client", json.dumps(plan)], capture_output=True,
                              text=True, check=False, timeout=args.seconds * 2 + 120, env=env, cwd=repo)
        load_elapsed = time.monotonic() - t_load
        if out_.returncode != 0:
            raise RuntimeError(f"load client failed: {out_.stderr[-3000:]}")
        result = json.loads(out_.stdout)
        sampler.stop.set()
        sampler.join(5)
        alive = proc.poll() is None
    finally:
        if sampler is not None:
            sampler.stop.set()
        if proc is not None:
            _stop(proc)
        registry.stop()
    return _report(result, sampler.samples, warmup, args, load, load_elapsed, alive)


def _report(result: dict[str, Any], samples: list[tuple[float, float]], warmup: float, args: argparse.Namespace,
            load: float, load_elapsed: float, alive: bool) -> int:
    # samples start when the server is ready; the load starts a little later: align on the end of the run
    offset = max(0.0, (samples[-1][0] if samples else 0.0) - load_elapsed)
    after = [(t, r) for t, r in samples if t - offset >= warmup]
    slope = _slope(after)
    counts = result["counts"]
    print(f"\nsoak: {args.seconds:g} s at {args.rate:g} req/s offered ({counts['warm']} warm, {counts['cold']} cold, "
          f"{counts['failing']} failing); {result['connections']} connections opened; load average now "
          f"{os.getloadavg()[0]:.2f} (at start {load:.2f})")
    print(f"{'minute':>6}{'warm p50':>10}{'warm p99':>10}{'cold p99':>10}{'fail p99':>10}{'errors':>8}"
          f"{'RSS MB':>9}")
    worst_warm = worst_slow = 0.0
    errors = 0
    for row in result["minutes"]:
        rss = [r for t, r in samples if int((t - offset) // 60) == row["minute"]]
        def ms(kind: str, key: str = "p99") -> str:
            value = row[kind][key]
            return f"{value:10.1f}" if value is not None else f"{'-':>10}"
        print(f"{row['minute']:>6}{ms('warm', 'p50')}{ms('warm')}{ms('cold')}{ms('failing')}{row['errors']:>8}"
              f"{(max(rss) if rss else float('nan')):>9.1f}")
        errors += row["errors"]
        worst_warm = max(worst_warm, row["warm"]["p99"] or 0.0)
        worst_slow = max(worst_slow, row["cold"]["p99"] or 0.0, row["failing"]["p99"] or 0.0)
    for reason in result["reasons"]:
        print(f"  error: {reason}")
    first_rss = samples[0][1] if samples else float("nan")
    peak_rss = max((r for _, r in samples), default=float("nan"))
    ok_slope = not math.isnan(slope) and slope <= SLOPE_TARGET
    ok_errors = errors == 0 and alive
    ok_warm = worst_warm <= WARM_P99_MS
    ok_slow = worst_slow <= SLOW_P99_MS
    print()
    print(f"{'measure':<40}{'canrun':>14}{'yardstick':>26}  {'target':<22}result")
    print(f"{'RSS slope after ' + format(warmup, 'g') + ' s warm-up':<40}{slope:9.2f}MB/m"
          f"{'RSS ' + format(first_rss, '.0f') + ' -> peak ' + format(peak_rss, '.0f') + ' MB':>26}  "
          f"{'<= ' + format(SLOPE_TARGET, 'g') + ' MB/min (flat)':<22}{'PASS' if ok_slope else 'FAIL'}")
    print(f"{'errors (non-200, wrong verdict, timeout)':<40}{errors:>14}{'':>26}  {'0':<22}"
          f"{'PASS' if ok_errors else 'FAIL'}{'' if alive else ' (server died)'}")
    print(f"{'worst minute p99, warm':<40}{worst_warm:12.2f}ms{'':>26}  {'<= 10 ms':<22}"
          f"{'PASS' if ok_warm else 'FAIL'}")
    print(f"{'worst minute p99, cold and failing':<40}{worst_slow:12.0f}ms{'':>26}  {'<= 5000 ms (deadline)':<22}"
          f"{'PASS' if ok_slow else 'FAIL'}")
    return 0 if ok_slope and ok_errors and ok_warm and ok_slow else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        _client_main(sys.argv[2])
        raise SystemExit(0)
    raise SystemExit(main())
