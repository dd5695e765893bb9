"""Run every benchmark in bench/ in turn (each prints its figures next to its yardstick).

``bench/run.py [NAME ...] [-- ARG ...]``: the named benches only (default: all), with ``ARG``s passed to each,
e.g. ``bench/run.py bench_soak -- --seconds 60``.  ``bench_soak`` runs for ten minutes by default
(``CANRUN_BENCH_SCALE`` shortens it with the others); ``make test`` runs no benchmark.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    names = argv or sorted(p.stem for p in HERE.glob("bench_*.py"))
    failed = 0
    for name in names:
        print(f"== {name}", flush=True)
        failed |= subprocess.call([sys.executable, str(HERE / f"{name}.py"), *extra]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
