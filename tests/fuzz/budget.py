"""The fuzz suite's budget and its one assertion: only ``CanrunError`` escapes, in bounded time and memory.

``make test`` runs a fixed, derandomized budget (the same examples every run, so a failure reproduces
and the whole directory stays well under a minute on two cores).  For a longer local hunt set
``CANRUN_FUZZ_PROFILE``:

* ``ci`` (default): ``CANRUN_FUZZ_EXAMPLES`` examples per property (default 50), derandomized;
* ``long``: 20x the examples, random seeds (Hypothesis keeps what it finds in its example database, so
  a failure found once is replayed first next time); add ``CANRUN_FUZZ_EXAMPLES`` to scale further.

e.g. ``CANRUN_FUZZ_PROFILE=long .venv/bin/python -m pytest -q -p no:cacheprovider tests/fuzz``.

The settings object is applied per test (``@FUZZ``) rather than as a global Hypothesis profile, so the
property tests elsewhere in the suite keep their own budgets.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from hypothesis import HealthCheck, settings

from canrun.errors import CanrunError

PROFILE = os.environ.get("CANRUN_FUZZ_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"CANRUN_FUZZ_PROFILE={PROFILE!r}: expected 'ci' or 'long'")
_EXAMPLES = int(os.environ.get("CANRUN_FUZZ_EXAMPLES", "50"))

#: Per-example ceilings.  Generous on purpose (a loaded CI box must never flake): what they catch is a parser
#: that is quadratic, loops, or allocates in proportion to a number it read instead of the bytes it got.
DEADLINE = timedelta(seconds=5)
PEAK_BYTES = 64 << 20

FUZZ = settings(
    max_examples=_EXAMPLES * (20 if PROFILE == "long" else 1),
    derandomize=PROFILE == "ci",
    deadline=DEADLINE,
    database=None if PROFILE == "ci" else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)

T = TypeVar("T")


def bounded(call: Callable[[], T], *, allowed: tuple[type[BaseException], ...] = (CanrunError,),
            peak: int = PEAK_BYTES) -> T | BaseException:
    """Run ``call`` once: return its result or the allowed exception it raised; fail on anything else.

    Memory is the peak traced by ``tracemalloc`` during the call (Python allocations, which is where a
    parser's buffers live); time is checked both by Hypothesis' deadline and here, so a direct call from a
    regression test is bounded too.
    """
    tracemalloc.start()
    started = time.monotonic()
    outcome: T | BaseException
    try:
        outcome = call()
    except allowed as exc:
        outcome = exc
    finally:
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    assert top <= peak, f"peak memory {top} bytes over the {peak}-byte bound"
    assert elapsed <= DEADLINE.total_seconds(), f"took {elapsed:.1f}s, over the {DEADLINE} bound"
    return outcome
