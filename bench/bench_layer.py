"""Layer indexer and layer cache, measured next to their yardsticks in the same run.

Builds once (cached under ``$CANRUN_BENCH_CACHE/layer``, default
``~/.cache/canrun-bench/layer``) a realistic gzip tar layer from this machine's
``/usr/share`` and ``/usr/lib/python3*`` (a few hundred MB, tens of thousands
of files), then reports, each in a fresh process so peak RSS is its own:

* ``gzip -dc | tar -t`` on the same file: the yardstick (what a pull-free
  checker could do with standard tools), and the ratio index/yardstick;
* ``tarfile`` in stream mode (``r|gz``): what the stdlib would cost;
* ``index_stream``: seconds, entries/s, MB/s, peak RSS;
* two layers through ``index_layer`` concurrently vs one after the other:
  whether the worker threads really use two cores (GIL released by ISA-L);
* the layer cache: encoded size, load time of the index, and a whole fresh
  process that loads it.

Usage: ``python bench/bench_layer.py [--oci LAYOUT]``; with ``--oci`` the
layers of an OCI layout (e.g. the engine benchmark's big image) are also
indexed concurrently.  Speed is never asserted in tests; it is reported here.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CANRUN_BENCH_CACHE", Path.home() / ".cache" / "canrun-bench")) / "layer"
SOURCES = ["/usr/share", *sorted(str(p) for p in Path("/usr/lib").glob("python3*"))]
BUDGET = 700_000_000  # uncompressed bytes of the benchmark layer


def build_layer() -> Path:
    """A gzip tar of real files, built with GNU tar and gzip (not with the code under test)."""
    target = CACHE / "usr.tar.gz"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    listing = CACHE / "files.txt"
    total = 0
    with open(listing, "w") as out:
        for root in SOURCES:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                out.write(dirpath.lstrip("/") + "\n")
                for name in sorted(filenames):
                    path = os.path.join(dirpath, name)
                    try:
                        total += os.lstat(path).st_size
                    except OSError:
                        continue
                    out.write(path.lstrip("/") + "\n")
                if total > BUDGET:
                    break
            if total > BUDGET:
                break
    tmp = target.with_suffix(".tmp")
    print(f"building {target} from {total / 1e6:.0f} MB of files (once)...", flush=True)
    subprocess.run(
        f"tar -C / --no-recursion -T {listing} -cf - 2>/dev/null | gzip -6 > {tmp}", shell=True, check=True
    )
    os.replace(tmp, target)
    return target


# Each measurement runs in its own interpreter so ru_maxrss is that measurement's peak.
CHILD_INDEX = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from canrun.image.layer import index_stream
def chunks(path):
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(65536)
            if not b:
                return
            yield b
t = time.perf_counter()
idx = index_stream(chunks({path!r}), digest="sha256:" + "0" * 64)
dt = time.perf_counter() - t
if {cache_root!r}:
    from canrun.image.cache import Cache, encode_index, decode_index
    blob = encode_index(idx)
    t2 = time.perf_counter(); decode_index(blob); load = time.perf_counter() - t2
    Cache({cache_root!r}).put_layer(idx)
else:
    blob, load = b"", 0.0
print(json.dumps({{"seconds": dt, "entries": len(idx.entries), "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "cache_bytes": len(blob), "cache_load": load}}))
"""

CHILD_TARFILE = r"""
import json, resource, tarfile, time
t = time.perf_counter()
n = 0
with tarfile.open({path!r}, mode="r|gz") as tar:
    for m in tar:
        n += 1
print(json.dumps({{"seconds": time.perf_counter() - t, "entries": n,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""

CHILD_PARALLEL = r"""
import asyncio, json, resource, sys, time
sys.path.insert(0, {root!r})
from canrun.image.layer import index_layer
async def chunks(path):
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(65536)
            if not b:
                return
            yield b
            await asyncio.sleep(0)
async def one(i, p):
    return await index_layer(chunks(p), digest=f"sha256:{{i:064x}}")
async def main(paths):
    t = time.perf_counter()
    for i, p in enumerate(paths):
        await one(i, p)
    seq = time.perf_counter() - t
    t = time.perf_counter()
    res = await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
    par = time.perf_counter() - t
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return {{"sequential": seq, "concurrent": par, "entries": sum(len(r.entries) for r in res),
             "rss": cpu.ru_maxrss}}
print(json.dumps(asyncio.run(main({paths!r}))))
"""

CHILD_WARM = r"""
import sys
sys.path.insert(0, {root!r})
from canrun.image.cache import Cache
idx = Cache({cache_root!r}).get_layer("sha256:" + "0" * 64)
assert idx is not None and len(idx.entries) > 0
"""


def child(code: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def timed_shell(command: str, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t)
    return best


def oci_layers(layout: Path) -> list[Path]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    return [layout / "blobs" / "sha256" / layer["digest"].split(":")[1] for layer in manifest["layers"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--oci", type=Path, help="also index the layers of this OCI layout concurrently")
    parser.add_argument("--skip-tarfile", action="store_true", help="skip the (slow) stdlib tarfile run")
    args = parser.parse_args()

    layer = build_layer()
    size = layer.stat().st_size
    print(f"layer: {layer} ({size / 1e6:.0f} MB gzip)   cpus: {os.cpu_count()}")

    yard = timed_shell(f"cat {layer} | gzip -dc | tar -t", repeat=2)
    print(f"yardstick  cat | gzip -dc | tar -t : {yard:6.2f} s")

    cache_root = tempfile.mkdtemp(prefix="canrun-bench-cache-")
    try:
        runs = [child(CHILD_INDEX.format(root=str(ROOT), path=str(layer), cache_root=cache_root if i == 0 else ""))
                for i in range(2)]
        best = min(runs, key=lambda r: r["seconds"])
        entries = best["entries"]
        print(
            f"index_stream                      : {best['seconds']:6.2f} s  = {best['seconds'] / yard:.2f} x yardstick"
            f"   {entries} entries, {entries / best['seconds']:,.0f} entries/s,"
            f" {size / best['seconds'] / 1e6:.0f} MB/s compressed, peak RSS {runs[0]['rss'] / 1024:.0f} MB"
        )
        if not args.skip_tarfile:
            tf = child(CHILD_TARFILE.format(path=str(layer)))
            print(f"tarfile r|gz (stdlib)             : {tf['seconds']:6.2f} s  = {tf['seconds'] / yard:.2f} x yardstick"
                  f"   peak RSS {tf['rss'] / 1024:.0f} MB")
        print(f"cache: {runs[0]['cache_bytes'] / 1e3:.0f} kB for {entries} entries, decode {runs[0]['cache_load'] * 1e3:.0f} ms")
        warm = timed_shell(f"{sys.executable} -c {shlex.quote(CHILD_WARM.format(root=str(ROOT), cache_root=cache_root))}",
                           repeat=3)
        bare = timed_shell(f"{sys.executable} -c pass", repeat=3)
        print(f"cache: fresh process that loads the index: {warm:.3f} s (bare interpreter {bare:.3f} s)")
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)

    pair = [str(layer), str(layer)]
    par = child(CHILD_PARALLEL.format(root=str(ROOT), paths=pair))
    print(f"2 layers via index_layer: sequential {par['sequential']:.2f} s, concurrent {par['concurrent']:.2f} s"
          f" (speed-up {par['sequential'] / par['concurrent']:.2f}x), peak RSS {par['rss'] / 1024:.0f} MB")

    if args.oci:
        paths = [str(p) for p in oci_layers(args.oci)]
        total = sum(Path(p).stat().st_size for p in paths)
        yard_oci = sum(timed_shell(f"cat {p} | gzip -dc | tar -t") for p in paths)
        res = child(CHILD_PARALLEL.format(root=str(ROOT), paths=paths))
        print(f"OCI {args.oci}: {len(paths)} layers, {total / 1e6:.0f} MB gzip, {res['entries']} entries")
        print(f"  yardstick (layers one after the other): {yard_oci:.2f} s")
        print(f"  index_layer concurrent: {res['concurrent']:.2f} s = {res['concurrent'] / yard_oci:.2f} x yardstick;"
              f" sequential {res['sequential']:.2f} s; peak RSS {res['rss'] / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
