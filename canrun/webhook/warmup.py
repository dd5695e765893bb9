"""Warm-up: index the images of the pods already running, so their next admission is answered from memory.

A webhook that just started (a rollout, a rescheduled pod) knows no image; the
first admissions after it would each wait for the registry and likely fail open.
The pods running in the cluster name the images the next admissions will most
likely use, so their views are read in the background, at most
``warm_concurrency`` at a time, with each pod's own pull credentials.

A cluster that can watch pods (``Cluster.watch_pods``) hands over every pod at
start-up and each new one as it is created; anything else is listed every
``warm_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from canrun.config import WebhookSettings
from canrun.errors import CanrunError, ManifestError
from canrun.kube.scheduling import NodePool, platforms_for
from canrun.kube.workloads import workload_from_object
from canrun.registry.auth import Keychain, use_keychain
from canrun.registry.reference import Reference
from canrun.spec import PodSpec, Workload
from canrun.validator import Validator
from canrun.webhook.metrics import Metrics

log = logging.getLogger("canrun.webhook")

PoolSource = Callable[[], NodePool | None]
KeychainSource = Callable[[str, PodSpec], Awaitable[Keychain | None]]
Spawn = Callable[[Coroutine[Any, Any, Any], str], Any]


class WarmUp:
    """Indexes the images of running pods, each image once per process."""

    def __init__(self, validator: Validator, pool: PoolSource, *, settings: WebhookSettings, cluster: Any,
                 metrics: Metrics, keychain: KeychainSource, spawn: Spawn) -> None:
        self.validator = validator
        self.pool = pool
        self.settings = settings
        self.cluster = cluster
        self.metrics = metrics
        self.keychain = keychain
        self.spawn = spawn
        self._warmed: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._pod_watch: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        """Follow the cluster's pods (a watch if it offers one, else a periodic list); once."""
        if self.cluster is None or self.settings.warm_interval <= 0:
            return
        if self._task is not None or self._pod_watch is not None:
            return
        self._loop = asyncio.get_running_loop()
        watch = getattr(self.cluster, "watch_pods", None)
        if callable(watch):
            self._pod_watch = await asyncio.to_thread(watch, self.pods_seen)
        else:
            self._task = asyncio.create_task(self._loop_forever(), name="canrun-warmup")

    async def aclose(self) -> None:
        if self._pod_watch is not None:
            await asyncio.to_thread(self._pod_watch.stop)
            self._pod_watch = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop_forever(self) -> None:
        while True:
            try:
                await self.warm_once()
            except CanrunError as exc:
                log.warning("warm-up: %s", exc)
            except Exception:  # keep the webhook up whatever the warm-up hits
                log.exception("warm-up failed")
            await asyncio.sleep(self.settings.warm_interval)

    async def warm_once(self, *, wait_ready: float = 30.0) -> int:
        """Index the images of the pods running in the cluster (those not seen yet); returns how many were new."""
        if self.cluster is None:
            return 0
        pods = await asyncio.to_thread(self.cluster.list_objects, "v1", "Pod")
        return await self.warm_pods(pods, wait_ready=wait_ready)

    def pods_seen(self, pods: list[dict[str, Any]]) -> None:
        """The pod watch's callback (on its thread): index the images of these pods in the background."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(lambda: self.spawn(self.warm_pods(pods), "canrun-warmup"))
        except RuntimeError:
            pass  # the loop closed between the check and the call: shutting down

    async def warm_pods(self, pods: Sequence[Mapping[str, Any]], *, wait_ready: float = 30.0) -> int:
        """Index the images of ``pods`` not indexed yet, at most ``warm_concurrency`` at a time; how many were new."""
        work: dict[str, tuple[str, Workload]] = {}
        for obj in pods:
            try:
                workload = workload_from_object(dict(obj))
            except ManifestError:
                continue
            if workload is None:
                continue
            for c in workload.pod.containers:
                if c.image not in self._warmed and c.image not in work:
                    work[c.image] = (workload.resource.namespace or "", workload)
        if not work:
            return 0
        self._warmed.update(work)  # claimed now, so a burst of pods with one image warms it once
        waited = 0.0
        while (pool := self.pool()) is None and waited < wait_ready:
            await asyncio.sleep(0.2)
            waited += 0.2
        if pool is None:
            self._warmed.difference_update(work)
            return 0
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(1, self.settings.warm_concurrency))
        slots = self._slots

        async def one(image: str, namespace: str, workload: Workload) -> None:
            async with slots:
                keychain = await self.keychain(namespace, workload.pod)
                outcome = "indexed"
                try:
                    with use_keychain(keychain):
                        ref = Reference.parse(image)
                        for platform in platforms_for(workload.pod, pool).platforms:
                            selection = await self.validator.store.select(ref, platform)
                            if selection.descriptor is not None:
                                await self.validator.store.view(selection)
                except CanrunError as exc:
                    outcome = "failed"
                    log.info("warm-up: %s not indexed: %s", image, exc)
                self.metrics.warmed.labels(outcome).inc()

        await asyncio.gather(*(one(image, ns, wl) for image, (ns, wl) in work.items()))
        log.info("warm-up: indexed %d new image(s) of running pods", len(work))
        return len(work)
