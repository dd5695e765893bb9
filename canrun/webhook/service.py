"""The admission decision, independent of the HTTP framework.

``AdmissionService.review(body)`` is the whole webhook: read the review, decide
whether there is anything to judge, pick the namespace's mode, judge the pod
spec within the deadline, and shape the answer for the mode.  The FastAPI app
only moves bytes.  Beside it: ``verdicts`` (what is remembered and in flight),
``answers`` (the words, pure functions) and ``warmup`` (running pods' images).

Why it is built this way:

* **Fail open.**  A webhook on the write path of every workload must never be
  the reason a deploy hangs: an image not resolved within the deadline, a
  registry that is down, a node list not yet known or a bug in canrun all
  answer "allowed" with a warning (only ``strict`` turns unreadable images into
  denials in enforce mode).
* **The judgement outlives the request.**  Validation runs as a task of its own;
  when the deadline passes the answer goes out and the task keeps going, so its
  result lands in the caches and the next request for the same image is
  answered from them.
* **Share work.**  Concurrent requests for the same pod spec share one task, and
  below them the ImageStore shares one resolution per image (single-flight), so
  a burst of identical admissions costs one registry round trip.
* **Cheap when nothing changed.**  UPDATEs that change nothing a verdict depends
  on, DELETE/CONNECT, ``status``/``scale`` subresources and ``off`` namespaces
  are answered without looking at an image; a verdict for a pod spec already
  judged is reused for ``verdict_ttl`` seconds.
* **Side effects only off the hot path**: Events are recorded in the background
  and never for dry-run requests (the webhook declares
  ``sideEffects: NoneOnDryRun``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from canrun.config import MODES, WebhookSettings
from canrun.errors import CanrunError, ManifestError
from canrun.image.store import read_deadline
from canrun.kube.admission import (
    BadAdmissionReview,
    Decision,
    Request,
    build_response,
    new_ephemeral_containers,
    parse_review,
    shorten,
    verdict_view,
)
from canrun.kube.objects import pod_template_path
from canrun.kube.pinning import json_patch, owned_and_pinned, plan_pin
from canrun.kube.scheduling import NodePool
from canrun.kube.workloads import workload_from_object
from canrun.registry.auth import Keychain, use_keychain
from canrun.spec import ContainerKind, PodSpec, Resource, Workload
from canrun.validator import Report, Validator
from canrun.verdict import restamp, verdict_key
from canrun.webhook import answers
from canrun.webhook.answers import Outcome, skipped
from canrun.webhook.metrics import Metrics
from canrun.webhook.verdicts import Key, Verdicts
from canrun.webhook.warmup import PoolSource, WarmUp

MODE_LABEL = "canrun.io/mode"
#: Seconds an admission's images may be read for, per second of the answer deadline (5 s: one minute).
READ_BUDGET_PER_DEADLINE = 12
log = logging.getLogger("canrun.webhook")
decisions_log = logging.getLogger("canrun.webhook.admission")

__all__ = ["AdmissionService", "ClusterAPI", "MODE_LABEL", "Outcome", "PoolSource", "static_pool", "watcher_pool"]


class ClusterAPI(Protocol):
    """The part of ``canrun.kube.client.Cluster`` the webhook uses (all sync: called in threads).

    Optional: ``watch_pods(on_pods)`` (a started watcher with ``stop()``) lets the warm-up follow
    new pods as they appear; without it the warm-up lists pods every ``warm_interval`` seconds.
    """

    def namespace_labels(self, name: str) -> dict[str, str]: ...

    def pull_keychain(self, namespace: str, secret_names: Sequence[str], service_account: str | None) -> Keychain: ...

    def record_event(self, involved: dict[str, Any], reason: str, message: str, type: str = "Warning") -> None: ...

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None,
                     label_selector: str | None = None) -> list[dict[str, Any]]: ...


def static_pool(pool: NodePool) -> PoolSource:
    """A fixed set of node platforms (``--platform`` without a cluster): ready at once."""
    return lambda: pool


def watcher_pool(watcher: Any) -> PoolSource:
    """The NodeWatcher's pool once its first list is done (``ready`` may be an Event or a bool)."""
    def current() -> NodePool | None:
        ready = watcher.ready
        ok = ready.is_set() if hasattr(ready, "is_set") else bool(ready)
        return watcher.pool if ok else None
    return current


class AdmissionService:
    """Answers AdmissionReviews; owns the verdict memory and the background work (events, warm-up)."""

    def __init__(self, validator: Validator, pool: PoolSource, *, settings: WebhookSettings | None = None,
                 cluster: ClusterAPI | None = None, metrics: Metrics | None = None) -> None:
        self.validator = validator
        self.pool = pool
        self.settings = settings or WebhookSettings()
        self.cluster = cluster
        self.metrics = metrics or Metrics()
        self.verdicts = Verdicts(ttl=self.settings.verdict_ttl, size=self.settings.verdict_cache_size)
        self.warmup = WarmUp(validator, pool, settings=self.settings, cluster=cluster, metrics=self.metrics,
                             keychain=self._keychain, spawn=self.spawn)
        self._metric_children: dict[tuple[Any, ...], Any] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Ready once the node platforms are known (the first node list, or a static set)."""
        return self.pool() is not None

    def use_validator(self, validator: Validator) -> None:
        """Judge with ``validator`` from now on (the settings file changed); the old one's verdicts are dropped."""
        self.validator = validator
        self.warmup.validator = validator
        self.verdicts = Verdicts(ttl=self.settings.verdict_ttl, size=self.settings.verdict_cache_size)

    async def start(self) -> None:
        """Start indexing the images of running pods (needs a cluster): at start-up and as pods appear."""
        await self.warmup.start()

    async def aclose(self) -> None:
        await self.warmup.aclose()
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Run ``coro`` in the background, holding a reference until it ends (and logging its failure)."""
        task = asyncio.create_task(coro, name=name or None)
        self._background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                log.warning("background task %s failed: %s", t.get_name(), exc,
                            extra={"fields": {"error_type": type(exc).__name__}})
        task.add_done_callback(done)
        return task

    async def drain(self) -> None:
        """Wait for the background work started so far (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def warm_once(self, *, wait_ready: float = 30.0) -> int:
        """Index the images of the pods running in the cluster (those not seen yet); how many were new."""
        return await self.warmup.warm_once(wait_ready=wait_ready)

    async def warm_pods(self, pods: Sequence[Mapping[str, Any]], *, wait_ready: float = 30.0) -> int:
        return await self.warmup.warm_pods(pods, wait_ready=wait_ready)

    # -- the request -----------------------------------------------------------------------------

    async def review(self, body: bytes | str | Mapping[str, Any], *, mutate: bool = False) -> dict[str, Any]:
        """Answer one AdmissionReview; ``BadAdmissionReview`` (HTTP 400) for anything that is not one.

        ``mutate`` is the ``/mutate`` endpoint: in pin mode it answers with the
        node affinity patch (``kube/pinning``); in every other mode it allows
        without a patch, because the validating endpoint gives that mode's answer.
        """
        started = time.perf_counter()
        try:
            req = parse_review(body)
        except BadAdmissionReview:
            self.metrics.bad_requests.inc()
            raise
        try:
            outcome = await self._decide(req, started, mutate)
        except Exception as exc:  # never a 500 on the write path of every workload: fail open, loudly
            log.exception("admission %s failed; allowed unverified", req.uid)
            outcome = answers.internal_error(exc)
        elapsed = time.perf_counter() - started
        self._record(req, outcome, elapsed)
        return dict(build_response(req.uid, outcome.decision))

    def _record(self, req: Request, outcome: Outcome, elapsed: float) -> None:
        self._child(self.metrics.requests, req.kind or "-", req.operation, outcome.mode, outcome.verdict).inc()
        self._child(self.metrics.latency, outcome.mode).observe(elapsed)
        fields: dict[str, Any] = {
            "uid": req.uid, "kind": req.kind, "namespace": req.namespace, "name": req.display_name.split("/")[-1],
            "operation": req.operation, "mode": outcome.mode, "verdict": outcome.verdict,
            "findings": outcome.rules, "latency_ms": round(elapsed * 1000, 2),
        }
        if req.sub_resource:
            fields["subresource"] = req.sub_resource
        if req.dry_run:
            fields["dry_run"] = True
        if outcome.reason:
            fields["reason"] = outcome.reason
        if outcome.cached is not None:
            fields["cached"] = outcome.cached
        decisions_log.info("admission %s", outcome.verdict, extra={"fields": fields})

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled metric's child, bound once (``labels()`` locks and builds tuples on every call)."""
        key = (id(metric), *labels)
        child = self._metric_children.get(key)
        if child is None:
            child = self._metric_children[key] = metric.labels(*labels)
        return child

    def _finding_counters(self, report: Report) -> list[Any]:
        return [self._child(self.metrics.findings, f.rule, f.severity.value) for f in answers.shown(report)]

    async def _decide(self, req: Request, started: float, mutate: bool = False) -> Outcome:
        if req.operation not in ("CREATE", "UPDATE"):
            return skipped(f"operation {req.operation}")
        if req.sub_resource and req.sub_resource != "ephemeralcontainers":
            return skipped(f"subresource {req.sub_resource}")
        if req.object is None:
            return skipped("no object")
        mode = await self.mode_for(req.namespace)
        if mode == "off":
            return skipped("mode off", mode)
        if mutate and mode != "pin":
            return skipped(f"mode {mode}: nothing to pin", mode)
        if mutate and (req.sub_resource or owned_and_pinned(req.object)):
            return skipped("a pod of a template canrun pinned" if not req.sub_resource
                           else f"subresource {req.sub_resource}", mode)
        view = verdict_view(req.kind, req.object)  # what a verdict depends on, read once
        if req.operation == "UPDATE" and not req.sub_resource and req.old_object is not None and \
                verdict_view(req.kind, req.old_object) == view:
            return skipped("no relevant change", mode)
        pool = self.pool()
        answer_key = None
        if pool is not None and not req.sub_resource:
            answer_key = _answer_key(req, mode, pool, view, mutate)
            recalled = self._recall(answer_key, pool)
            if recalled is not None:
                outcome, report = recalled
                self._maybe_event(req, outcome, report, mode)
                return outcome
        try:
            workload = workload_from_object(req.object, namespace=req.namespace or None)
        except ManifestError as exc:
            return Outcome(Decision(warnings=[shorten(f"canrun: not verified: cannot read the object: {exc}")]),
                           mode, "unverified", reason="unreadable object")
        if workload is None:
            return skipped(f"kind {req.kind} has no pod spec", mode)
        workload = _with_request_identity(workload, req)
        if req.sub_resource == "ephemeralcontainers":
            added = new_ephemeral_containers(req.old_object, req.object)
            containers = tuple(c for c in workload.pod.containers
                               if c.kind is ContainerKind.EPHEMERAL and c.name in added)
            if not containers:
                return skipped("no new ephemeral container", mode)
            workload = replace(workload, pod=replace(workload.pod, containers=containers))
        if pool is None:
            return Outcome(Decision(warnings=["canrun: not verified: node platforms are not known yet; allowed"]),
                           mode, "unverified", reason="not ready")
        remaining = self.settings.deadline - (time.perf_counter() - started)
        key = (req.namespace, *verdict_key(workload, self.validator.exemptions), id(pool))  # the one key of this admission's verdict
        report, cached = await self._judge(key, workload, pool, req.namespace, remaining)
        if report is None:
            return answers.unverified(workload, mode, deadline=self.settings.deadline, strict=self.settings.strict,
                                      mutate=mutate)
        counters = self._finding_counters(report)
        for counter in counters:
            counter.inc()
        if mutate:
            plan = plan_pin(workload, report.findings, pool)
            outcome = answers.pinned(report, workload, plan,
                                     json_patch(req.object, pod_template_path(req.kind), plan))
        else:  # the validating answer of pin mode judges the object as pinned: what is left, enforce denies
            outcome = answers.shape(report, workload, "enforce" if mode == "pin" else mode)
            outcome.mode = mode
        outcome.cached = cached
        if answer_key is not None:
            self.verdicts.remember_answer(answer_key, key, outcome, report, counters)
        self._maybe_event(req, outcome, report, mode)
        return outcome

    def _maybe_event(self, req: Request, outcome: Outcome, report: Report, mode: str) -> None:
        if outcome.rules and mode in ("warn", "audit") and not req.dry_run and self.cluster is not None \
                and self.settings.events:
            involved = _involved(req)
            if involved is not None:
                self.spawn(self._event(involved, report), name=f"event-{req.uid}")

    def _recall(self, key: Key, pool: NodePool) -> tuple[Outcome, Report] | None:
        hit = self.verdicts.answer(key, pool)
        if hit is None:
            return None
        self._child(self.metrics.cache, "hit").inc()
        for counter in hit.counters:
            counter.inc()
        return replace(hit.outcome, cached=True), hit.report

    async def mode_for(self, namespace: str) -> str:
        """The namespace's ``canrun.io/mode`` label, else the default (also when the API cannot say)."""
        default = self.settings.default_mode
        if self.cluster is None or not namespace:
            return default
        try:
            labels = await asyncio.to_thread(self.cluster.namespace_labels, namespace)
        except CanrunError as exc:
            log.warning("namespace %s labels unavailable (%s); using mode %s", namespace, exc, default)
            return default
        mode = (labels or {}).get(MODE_LABEL)
        if mode is None:
            return default
        if mode not in MODES:
            log.warning("namespace %s has %s=%r (not one of %s); using mode %s", namespace, MODE_LABEL, mode,
                        ", ".join(MODES), default)
            return default
        return mode

    # -- judging ---------------------------------------------------------------------------------

    async def _judge(self, key: Key, workload: Workload, pool: NodePool, namespace: str,
                     remaining: float) -> tuple[Report | None, bool]:
        """The report for a workload within ``remaining`` seconds (None if not in time), and whether it was cached."""
        hit = self.verdicts.cached(key, pool)
        if hit is not None:
            self._child(self.metrics.cache, "hit").inc()
            return restamp(hit.report, hit.judged, workload), True
        self._child(self.metrics.cache, "miss").inc()
        task, judged, started = self.verdicts.inflight(key, pool, workload,
                                                       lambda: self._validate(workload, pool, namespace))
        if started:
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if remaining > 0:
            done, _ = await asyncio.wait({task}, timeout=remaining)
        else:
            done = set()
        if not done:
            self.metrics.deadline.inc()
            return None, False
        return restamp(task.result(), judged, workload), False

    async def _validate(self, workload: Workload, pool: NodePool, namespace: str) -> Report:
        keychain = await self._keychain(namespace, workload.pod)
        # the answer waits `deadline`; the read goes on to warm the cache, but only for a bounded budget, so a
        # dripping registry cannot hold layer slots and connections for the store's whole image deadline
        with use_keychain(keychain), read_deadline(self.settings.deadline * READ_BUDGET_PER_DEADLINE):
            return await self.validator.check([workload], pool)

    async def _keychain(self, namespace: str, pod: PodSpec) -> Keychain | None:
        """The pod's pull credentials (its imagePullSecrets and its ServiceAccount's), never logged."""
        if self.cluster is None or not namespace:
            return None
        try:
            return await asyncio.to_thread(self.cluster.pull_keychain, namespace, list(pod.image_pull_secrets),
                                           pod.service_account)
        except CanrunError as exc:
            log.warning("pull secrets of namespace %s unavailable: %s", namespace, exc)
            return None

    async def _event(self, involved: dict[str, Any], report: Report) -> None:
        assert self.cluster is not None
        reason, message = answers.event_text(report)
        try:
            await asyncio.to_thread(self.cluster.record_event, involved, reason, message, "Warning")
        except CanrunError as exc:
            self.metrics.events.labels("failed").inc()
            log.warning("could not record an event on %s %s/%s: %s", involved.get("kind"),
                        involved.get("namespace"), involved.get("name"), exc)
            return
        self.metrics.events.labels("recorded").inc()


# -- helpers ----------------------------------------------------------------------------------------

def _answer_key(req: Request, mode: str, pool: NodePool, view: Any, mutate: bool) -> Key:
    """What an answer depends on, read straight off the request object.

    A GitOps controller re-applies the same objects all day; turning each into a
    ``Workload`` and shaping the same findings into the same messages again was most
    of a warm admission's cost.  The key is the object's identity (it is named in the
    messages), the mode, the node pool and ``verdict_view`` (the relevant pod spec and
    the exemptions) as written: a reordered but equal object only misses.
    """
    return (req.kind, req.namespace, req.display_name, mode, mutate, id(pool), repr(view))


def _with_request_identity(workload: Workload, req: Request) -> Workload:
    """Objects in a CREATE may lack their namespace (and name, with generateName): take them from the request."""
    res = workload.resource
    namespace = res.namespace or req.namespace or None
    name = res.name or req.display_name.split("/")[-1]
    if namespace == res.namespace and name == res.name:
        return workload
    return replace(workload, resource=Resource(res.kind, name, namespace, res.api_version))


def _involved(req: Request) -> dict[str, Any] | None:
    obj = req.object or {}
    meta = obj.get("metadata") or {}
    name = req.name or meta.get("name")
    if not name:
        return None  # generateName before the name is set: nothing an Event can point at
    api_version = obj.get("apiVersion") or (f"{req.group}/{req.version}" if req.group else req.version)
    involved = {"apiVersion": api_version, "kind": req.kind, "namespace": req.namespace or meta.get("namespace"),
                "name": name}
    if meta.get("uid"):
        involved["uid"] = meta["uid"]
    return involved
