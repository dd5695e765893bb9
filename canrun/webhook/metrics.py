"""Prometheus metrics for the webhook, in a registry of their own per app.

A registry per app (not the process-global default) keeps tests and several
apps in one process independent, and keeps the Python runtime collectors out of
the webhook's exposition unless asked for.

Registry request counts and image-store counters are owned by the engine
(``RegistryClient.stats``, ``ImageStore.stats``); they are read at scrape time by
a small collector rather than mirrored on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Admission latency buckets: the interesting range is 1 ms (warm) to the 5 s deadline.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _EngineCollector(Collector):
    """Reads the engine's own counters when Prometheus scrapes."""

    def __init__(self, registry_stats: Callable[[], Any],
                 store_stats: Callable[[], Mapping[str, int]],
                 shared_cache: Callable[[], Any] | None = None) -> None:
        self._registry_stats = registry_stats
        self._store_stats = store_stats
        self._shared_cache = shared_cache

    def collect(self) -> Iterable[Metric]:
        errors = CounterMetricFamily("canrun_registry_errors", "Registry requests that failed, by host and status",
                                     labels=["host", "status"])
        requests = CounterMetricFamily("canrun_registry_requests", "Registry requests, by host and status",
                                       labels=["host", "status"])
        for (host, status), count in sorted(_host_status(self._registry_stats()).items()):
            requests.add_metric([host, status], count)
            if not status.isdigit() or int(status) >= 400:
                errors.add_metric([host, status], count)
        store = CounterMetricFamily("canrun_image_store", "Image store work: layers fetched or read from cache, "
                                    "merged views read from cache, manifests fetched", labels=["event"])
        for event, count in sorted(self._store_stats().items()):
            store.add_metric([event], count)
        yield requests
        yield errors
        yield store
        shared = self._shared_cache() if self._shared_cache is not None else None
        if shared is not None:
            events = CounterMetricFamily(
                "canrun_shared_cache", "Shared (Redis) cache calls: hits, misses, errors, timeouts, skipped while "
                "the breaker is open, writes, writes refused (too large) or dropped (queue full, Redis down)",
                labels=["event"])
            for event, count in sorted(shared.stats.items()):
                events.add_metric([event], count)
            yield events
            yield GaugeMetricFamily("canrun_shared_cache_breaker_open",
                                    "1 while the shared cache is not called after repeated failures",
                                    value=1 if shared.breaker.open else 0)


def _host_status(stats: Any) -> dict[tuple[str, str], int]:
    """Normalise the client's stats (``RegistryStats`` or a mapping keyed ``(host, status)``) to label pairs."""
    if hasattr(stats, "snapshot"):
        stats = stats.snapshot()
    out: dict[tuple[str, str], int] = {}
    for key, count in stats.items():
        if isinstance(key, tuple) and len(key) == 2:
            host, status = str(key[0]), str(key[1])
        else:
            host, _, status = str(key).rpartition(" ")
        if not isinstance(count, int):
            continue
        out[(host, status)] = out.get((host, status), 0) + count
    return out


class Metrics:
    """The webhook's metrics; one instance per app, each with its own CollectorRegistry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("canrun_admission_requests", "Admission requests answered",
                                ["kind", "operation", "mode", "verdict"], registry=self.registry)
        self.findings = Counter("canrun_admission_findings", "Findings reported in admission answers, by rule",
                                ["rule", "severity"], registry=self.registry)
        self.latency = Histogram("canrun_admission_duration_seconds", "Time to answer an admission request",
                                 ["mode"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.cache = Counter("canrun_verdict_cache", "Admission verdicts answered from the verdict cache (hit) or "
                             "computed (miss)", ["result"], registry=self.registry)
        self.deadline = Counter("canrun_admission_deadline_exceeded", "Admissions answered unverified because "
                                "images were not resolved within the deadline", registry=self.registry)
        self.bad_requests = Counter("canrun_admission_bad_requests", "Bodies refused with HTTP 400",
                                    registry=self.registry)
        self.events = Counter("canrun_events", "Kubernetes Events recorded for findings, by outcome",
                              ["outcome"], registry=self.registry)
        self.warmed = Counter("canrun_warmup_images", "Images of running pods indexed in the background",
                              ["outcome"], registry=self.registry)

    def watch_engine(self, registry_stats: Callable[[], Any],
                     store_stats: Callable[[], Mapping[str, int]],
                     shared_cache: Callable[[], Any] | None = None) -> None:
        """``shared_cache``: the image cache's shared store (``stats`` and ``breaker.open``), or None."""
        self.registry.register(_EngineCollector(registry_stats, store_stats, shared_cache))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
