"""The webhook's memory: verdicts by pod spec, the judgements in flight, and answers by object as written.

Two levels, one key each, both built once per admission:

* **verdicts** — a ``Report`` per ``key`` (the namespace, ``canrun.verdict.verdict_key``
  of the workload, the node pool), with the task judging it while it is in flight, so
  concurrent requests for the same pod spec share one judgement and a judgement that
  outlives its request's deadline still lands here for the next one.  The namespace is
  in the key because its pull secrets decide what may be read: one tenant's verdict is
  not another's.
* **answers** — the shaped ``Outcome`` for an object seen before, keyed by the object
  as written (``kube/admission.verdict_view``), so a re-applied object skips building a
  ``Workload`` and shaping the same messages again.  An answer lives exactly as long as
  the verdict it was shaped from.

A verdict from an unreadable image (``image-unresolvable``) or with an
``internal-error`` is not remembered: a registry hiccup or a bug is not a verdict.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from canrun.errors import CanrunError
from canrun.kube.scheduling import NodePool
from canrun.spec import Workload
from canrun.validator import Report
from canrun.webhook.answers import Outcome

log = logging.getLogger("canrun.webhook")

Key = tuple[Any, ...]


@dataclass
class Verdict:
    """A remembered report and the workload it was judged for (to restamp it for others)."""

    expires: float
    pool: NodePool
    report: Report
    judged: Workload


@dataclass
class Answer:
    """A shaped answer for an object seen before, reused while its verdict is."""

    expires: float
    pool: NodePool
    outcome: Outcome
    report: Report
    #: The findings counters the first answer incremented, bound once.
    counters: list[Any]


class Verdicts:
    """Verdicts and answers, each an LRU of at most ``size`` entries living ``ttl`` seconds."""

    def __init__(self, *, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._verdicts: OrderedDict[Key, Verdict] = OrderedDict()
        self._answers: OrderedDict[Key, Answer] = OrderedDict()
        self._inflight: dict[Key, tuple[asyncio.Task[Report], Workload]] = {}

    def cached(self, key: Key, pool: NodePool) -> Verdict | None:
        """The remembered verdict for ``key`` on this very pool, if still fresh."""
        hit = self._verdicts.get(key)
        if hit is None or hit.pool is not pool or hit.expires <= time.monotonic():
            return None
        self._verdicts.move_to_end(key)
        return hit

    def inflight(self, key: Key, pool: NodePool, workload: Workload,
                 judge: Callable[[], Coroutine[Any, Any, Report]]) -> tuple[asyncio.Task[Report], Workload, bool]:
        """The task judging ``key`` (started from ``judge()`` unless one runs), the workload it judges, and
        whether it was started now."""
        running = self._inflight.get(key)
        if running is not None:
            return running[0], running[1], False
        task = asyncio.create_task(judge(), name="canrun-validate")
        self._inflight[key] = (task, workload)
        task.add_done_callback(lambda t: self._done(key, pool, workload, t))
        return task, workload, True

    def _done(self, key: Key, pool: NodePool, workload: Workload, task: asyncio.Task[Report]) -> None:
        self._inflight.pop(key, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, CanrunError):
                log.error("validation failed: %s: %s", type(exc).__name__, exc)
            return
        report = task.result()
        if any(f.rule in ("image-unresolvable", "internal-error") for f in report.findings + report.suppressed):
            return  # a registry hiccup (or a bug of ours) is not a verdict worth remembering
        self._verdicts[key] = Verdict(time.monotonic() + self.ttl, pool, report, workload)
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self.size:
            self._verdicts.popitem(last=False)

    def answer(self, key: Key, pool: NodePool) -> Answer | None:
        """The answer shaped before for this object on this pool, while its verdict lives."""
        hit = self._answers.get(key)
        if hit is None or hit.pool is not pool or hit.expires <= time.monotonic():
            return None
        self._answers.move_to_end(key)
        return hit

    def remember_answer(self, key: Key, verdict_key: Key, outcome: Outcome, report: Report,
                        counters: list[Any]) -> None:
        """Keep the shaped answer as long as the verdict it was shaped from (only remembered verdicts)."""
        verdict = self._verdicts.get(verdict_key)
        if verdict is None:  # not a verdict worth remembering (an unreadable image): ask again next time
            return
        self._answers[key] = Answer(verdict.expires, verdict.pool, outcome, report, counters)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)
