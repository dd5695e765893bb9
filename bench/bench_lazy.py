"""Lazy layers benchmark: a cold ``canrun check`` of the big image as zstd:chunked and as eStargz.

Targets (issue 11 §1), measured in this one run, each next to the full read of the same image (the
same layers as gzip, read by the streaming indexer):
  * cold check of the ≥ 1.5 GB zstd:chunked image, and of the eStargz image, ≤ 0.5 s;
  * layer bytes on the wire ≤ 1 % of the layers' size, counted at a proxy in front of the registry
    (``tests/support/rangeproxy.py``; the timed runs go to the registry directly).

The zstd:chunked image is what ``skopeo copy --dest-compress-format zstd:chunked`` makes of the
bench image; the eStargz one what ``GGCR_EXPERIMENT_ESTARGZ=1 crane append`` makes of its layers
(crane from scripts/setup.sh; skipped, with the reason, without it).  The gzip original goes to a
registry of its own: skopeo would otherwise reuse its gzip blobs instead of writing zstd:chunked.

Run: ``make bench`` (all benchmarks) or ``.venv/bin/python bench/bench_lazy.py``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bigimage import build, push  # noqa: E402
from bench.bench_engine import timed  # noqa: E402
from tests.support.rangeproxy import RangeProxy  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

ROUNDS = 3
CRANE = Path(os.environ.get("CANRUN_TOOLS_CACHE", Path.home() / ".cache" / "canrun-tools")) / "crane"


def _pod(work: Path, name: str, ref: str) -> Path:
    path = work / f"{name}.yaml"
    path.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: big}\nspec:\n  containers:\n"
                    f"  - name: big\n    image: {ref}\n")
    return path


def _check(work: Path, name: str, ref: str, host: str) -> list[str]:
    python = Path(sys.executable).parent / "python"
    return [str(python), "-m", "canrun", "check", "-f", str(_pod(work, name, ref)), "--platform", "linux/amd64",
            "--insecure-registry", host]


def _layers_size(registry_url: str, repo: str) -> tuple[int, list[str]]:
    import httpx

    doc = httpx.get(f"{registry_url}/v2/{repo}/manifests/1",
                    headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                       "application/vnd.docker.distribution.manifest.v2+json"}).json()
    return sum(layer["size"] for layer in doc["layers"]), [layer["mediaType"] for layer in doc["layers"]]


def _push_estargz(layout: Path, digests: list[str], ref: str, work: Path) -> None:
    env = {**os.environ, "GGCR_EXPERIMENT_ESTARGZ": "1"}
    base: list[str] = []
    for digest in digests:
        tar = work / "layer.tar"
        with gzip.open(layout / "blobs" / "sha256" / digest.split(":")[1]) as src, open(tar, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        subprocess.run([str(CRANE), "append", "--insecure", *base, "-f", str(tar), "-t", ref], env=env, check=True,
                       capture_output=True)
        tar.unlink()
        base = ["-b", ref]


def _cold(cmd: list[str], work: Path, label: str) -> float:
    cache = work / f"cache-{label}"
    seconds, _ = timed(cmd, env={**os.environ, "CANRUN_CACHE_DIR": str(cache)})
    shutil.rmtree(cache, ignore_errors=True)
    return seconds


def _table(rows: list[tuple[str, str, str, str, str, str, bool]]) -> None:
    print(f"{'measure':<26} {'value':>10}   {'yardstick':<34} {'value':>9}  {'ratio':>7}  {'goal':<16} met")
    for name, value, yard_name, yvalue, ratio, goal, met in rows:
        print(f"{name:<26} {value:>10}   {yard_name:<34} {yvalue:>9}  {ratio:>7}  {goal:<16} {'yes' if met else 'NO'}",
              flush=True)


def _measure(work: Path, label: str, ref: str, host: str, url: str, full: list[str]
             ) -> list[tuple[str, str, str, str, str, str, bool]]:
    """Interleaved cold checks (full gzip read, lazy), then one cold check through the counting proxy."""
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    size, types = _layers_size(url, repo)
    cmd = _check(work, label.replace(":", "-"), ref, host)
    yard_runs, cold_runs = [], []
    for round_ in range(ROUNDS):
        yard_runs.append(_cold(full, work, f"full-{round_}"))
        cold_runs.append(_cold(cmd, work, f"{label}-{round_}"))
    with RangeProxy(host) as proxy:
        proxied = ref.replace(host, proxy.host)
        _cold(_check(work, "proxied", proxied, proxy.host), work, "proxied")
        wire, requests = proxy.counters.blob_bytes, proxy.counters.blob_requests
    cold, yard = statistics.median(cold_runs), statistics.median(yard_runs)
    print(f"{label}: {size / 1e6:.0f} MB in {len(types)} layers; rounds (full gzip / lazy, s): "
          + ", ".join(f"{y:.2f} / {c:.2f}" for y, c in zip(yard_runs, cold_runs)), flush=True)
    share = wire / size
    return [(f"cold check, {label}", f"{cold:7.2f} s", "cold check, same image as gzip", f"{yard:7.2f} s",
             f"{cold / yard:.3f}x", "target <= 0.5 s", cold <= 0.5),
            (f"bytes read, {label}", f"{wire / 1e6:6.2f} MB", f"layer bytes ({requests} requests)",
             f"{size / 1e6:6.0f} MB", f"{share * 100:.2f}%", "target <= 1 %", share <= 0.01)]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="canrun-bench-lazy-"))
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "canrun"), quiet=1)
    image = build()
    print(f"image: {image.files} files, {image.unpacked_bytes / 1e9:.2f} GB unpacked, "
          f"{image.compressed_bytes / 1e6:.0f} MB in {len(image.layer_digests)} gzip layers")
    plain = start_registry(work / "plain")
    lazy = start_registry(work / "lazy")
    rows: list[tuple[str, str, str, str, str, str, bool]] = []
    try:
        gzip_ref = push(image, plain.host)
        full = _check(work, "gzip", gzip_ref, plain.host)

        def zstd_chunked(ref: str) -> None:
            subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-compress-format",
                            "zstd:chunked", f"oci:{image.layout}:{image.tag}", f"docker://{ref}"], check=True)

        def estargz(ref: str) -> None:
            _push_estargz(image.layout, image.layer_digests, ref, work)

        formats = [("zstd:chunked", "skopeo", zstd_chunked)]
        if os.access(CRANE, os.X_OK):
            formats.append(("eStargz", "crane", estargz))
        else:
            print(f"eStargz: skipped, no crane at {CRANE} (scripts/setup.sh builds it)")
        # Each format is measured right after it is made: converting 2 GB takes minutes on a loaded machine.
        for label, producer, make in formats:
            ref = f"{lazy.host}/bench/{label.lower().replace(':', '-')}:1"
            t0 = time.perf_counter()
            make(ref)
            print(f"{label} push ({producer}): {time.perf_counter() - t0:.0f} s", flush=True)
            rows += _measure(work, label, ref, lazy.host, lazy.url, full)
            _table(rows[-2:])
    finally:
        plain.stop()
        lazy.stop()
        shutil.rmtree(work, ignore_errors=True)
    _table(rows)
    print(f"(machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
