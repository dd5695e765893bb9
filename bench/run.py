"""Run every benchmark in bench/ in turn (each prints its figures next to its yardstick)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("bench_*.py"))
    failed = 0
    for name in names:
        print(f"== {name}", flush=True)
        failed |= subprocess.call([sys.executable, str(HERE / f"{name}.py")]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
